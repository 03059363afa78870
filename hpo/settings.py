"""The reference trainer's settings: one pydantic model, every name defined once.

A trial's settings arrive as a JSON dict (the sampler's params merged with the
study's fixed settings). :meth:`TrainConfig.from_settings` validates them
before any tensor is touched, so a bad value fails the trial in milliseconds
with a message that names the field; the server runs the same checks on a
study's ``fixed`` settings and search space when the study is created
(:func:`check_setting`), so a typo never reaches a worker.

The setting names are part of the API (study specs use them): keep them
stable. The dashboard, the trainer and the server import the names from here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from hpo.responsible import (
    DP_CONFLICTS,
    AdversarialTraining,
    ClassBalance,
    DataSettings,
    PrivacySettings,
    RobustnessSettings,
    dp_conflict,
    dp_error,
)

#: The workload name of the built-in reference trainer (the MNIST MLP).
REFERENCE_WORKLOAD = "mnist-mlp"

Optimizer = Literal["gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
LrSchedule = Literal["constant", "step", "exponential", "cosine"]
PruneSchedule = Literal["once", "gradual"]
Quantize = Literal["none", "int8", "fp16", "bf16"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
LR_SCHEDULES: tuple[str, ...] = get_args(LrSchedule)
PRUNE_SCHEDULES: tuple[str, ...] = get_args(PruneSchedule)
QUANTIZE_MODES: tuple[str, ...] = get_args(Quantize)
#: The compression settings (the model is compressed after training, then measured).
COMPRESSION = ("prune_amount", "prune_schedule", "low_rank", "quantize", "finetune_epochs")
#: Measurements of the shipped (compressed) model, usable as objectives.
MODEL_METRICS = (
    "model_bytes",
    "nonzero_params",
    "params",
    "flops",
    "latency_ms_b1",
    "latency_ms_b1024",
)
IN_FEATURES = 28 * 28

#: Names the dashboard groups charts by.
OPTIMIZER, LR, BATCH_NORM = "optimizer", "lr", "batch_norm"
REGULARIZATION = ("weight_decay", "l1", "dropout")

#: Per-epoch metrics the reference trainer reports (``val_accuracy`` is the default objective).
EPOCH_METRICS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "lr",
    "grad_norm",
    "grad_norm_max",
    "grad_norm_min",
    "grad_norm_first",
    "dead_fraction",
    "epoch_time_s",
    "data_time_s",
    "samples_per_s",
    "peak_memory_mb",
)
DEFAULT_OBJECTIVE = "val_accuracy"
#: A completed run's final metrics: the last epoch's, then the model as shipped (compressed;
#: val/test accuracy are the shipped model's) and the same figures before compression.
FINAL_METRICS = (
    *EPOCH_METRICS,
    "test_accuracy",
    "n_params",
    "total_time_s",
    *MODEL_METRICS,
    "sparsity",
    *(f"dense_{name}" for name in (*MODEL_METRICS, "val_accuracy", "test_accuracy")),
)


class SettingsError(ValueError):
    """A setting is unknown or has a bad value; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _number(value: Any) -> Any:
    # JSON numbers only: True must not silently become lr=1, nor "0.1" a float.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, got {value!r}")
    return value


def _boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


Real = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]
Whole = Annotated[int, BeforeValidator(_number)]
Flag = Annotated[bool, BeforeValidator(_boolean)]


class TrainConfig(BaseModel):
    """Everything one training run depends on. Defaults are the seed's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimizer: Optimizer = "sgd"
    lr: Annotated[Real, Field(gt=0)] = 0.01
    momentum: Annotated[Real, Field(ge=0, lt=1)] = 0.9  # momentum, nesterov, rmsprop
    beta1: Annotated[Real, Field(gt=0, lt=1)] = 0.9  # adam, adamw
    beta2: Annotated[Real, Field(gt=0, lt=1)] = 0.999  # adam, adamw
    eps: Annotated[Real, Field(gt=0)] = 1e-8  # adagrad, rmsprop, adam, adamw
    lr_schedule: LrSchedule = "constant"
    warmup_epochs: Annotated[Whole, Field(ge=0, le=1000)] = 0
    step_size: Annotated[Whole, Field(ge=1)] = 3  # epochs between decays (step)
    gamma: Annotated[Real, Field(gt=0, le=1)] = 0.8  # step: per step_size epochs; exp: per epoch
    weight_decay: Annotated[Real, Field(ge=0)] = 0.0  # L2 through the optimizer (adamw: decoupled)
    l1: Annotated[Real, Field(ge=0)] = 0.0  # l1 * sum|w| over the Linear weights, added to the loss
    dropout: Annotated[Real, Field(ge=0, le=0.8)] = 0.0
    batch_norm: Flag = False
    batch_size: Annotated[Whole, Field(ge=1, le=60000)] = 64  # ignored by gd (full batch)
    hidden: Annotated[Whole, Field(ge=1, le=8192)] = 512
    depth: Annotated[Whole, Field(ge=1, le=8)] = 1
    epochs: Annotated[Whole, Field(ge=1, le=1000)] = 10
    train_subset: Annotated[Whole, Field(ge=1, le=60000)] | None = None  # first N train images
    val_size: Annotated[Whole, Field(ge=1, le=30000)] = 5000  # leaves >= 30k images to train on
    seed: Annotated[Whole, Field(ge=0, lt=2**63)] = 0
    compile: Flag | Literal["auto"] = "auto"
    divergence_factor: Annotated[Real, Field(gt=1)] = 10.0
    # Compression (after training; workers.compression): global magnitude pruning ...
    prune_amount: Annotated[Real, Field(ge=0, le=0.95)] = 0.0
    prune_schedule: PruneSchedule = "once"  # once after training, or gradual during it
    # ... truncated-SVD factorization of the hidden layers (None: none) ...
    low_rank: Annotated[Whole, Field(ge=1, le=8192)] | None = None
    # ... fine-tuning after pruning or factorization, then the shipped precision.
    finetune_epochs: Annotated[Whole, Field(ge=0, le=100)] = 0
    quantize: Quantize = "none"
    # Measure the model as shipped (bytes, latency, FLOPs...) after training: "auto" does
    # when a compression setting asks for compression (and workers do for a study whose
    # objectives are model metrics); it costs about a second per trial on a CPU.
    measure_model: Flag | Literal["auto"] = "auto"
    # Checkpoint every N epochs (and the last; 0: never) when the worker gives the trial a
    # checkpoint folder: a re-run continues from the latest one (workers.checkpoint).
    checkpoint_every: Annotated[Whole, Field(ge=0, le=1000)] = 1
    # Privacy, fairness, robustness (hpo.responsible; workers.responsible): nested settings,
    # searchable by dotted name (``privacy.noise_multiplier``).
    privacy: PrivacySettings | None = None
    data: DataSettings = Field(default_factory=DataSettings)
    class_balance: ClassBalance = "none"
    robustness: RobustnessSettings | None = None
    adversarial_training: AdversarialTraining | None = None
    class_metrics: Flag | Literal["auto"] = "auto"

    @classmethod
    def from_settings(cls, settings: dict[str, Any], seed: int = 0) -> TrainConfig:
        """Validate a settings dict (unknown keys, types, ranges) and build a config.

        ``seed`` is the trial seed handed out by the server; a ``seed`` key in
        ``settings`` (e.g. a study's fixed setting) overrides it.
        """
        if not isinstance(settings, dict):
            kind = type(settings).__name__
            raise SettingsError("settings", f"settings must be a dict, got {kind}")
        try:
            config = cls.model_validate({"seed": seed, **nest_dotted(settings)})
        except ValidationError as exc:
            raise _settings_error(exc) from None
        check_combination(config)
        return config

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict (every setting, defaults included)."""
        return self.model_dump(mode="json")


SETTING_NAMES: tuple[str, ...] = tuple(TrainConfig.model_fields)


def compresses(config: TrainConfig) -> bool:
    """Whether the settings ask for any compression after training."""
    return config.prune_amount > 0 or config.low_rank is not None or config.quantize != "none"


def measures_model(config: TrainConfig) -> bool:
    """Whether a completed run is compressed and measured as shipped (``measure_model``)."""
    if config.measure_model == "auto":
        return compresses(config)
    return bool(config.measure_model)


def nest_dotted(settings: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys (``privacy.noise_multiplier``: a searched nested field) merged into
    their nested dicts (``privacy: {...}``), so the schema sees one nested value."""
    out: dict[str, Any] = {k: v for k, v in settings.items() if "." not in k}
    for key in sorted(k for k in settings if "." in k):
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[leaf] = settings[key]
    return out


def is_setting(name: str) -> bool:
    """Whether ``name`` is a setting, or a dotted field of a nested one."""
    model: type[BaseModel] | None = TrainConfig
    for part in name.split("."):
        if model is None or part not in model.model_fields:
            return False
        model = _nested_model(model.model_fields[part].annotation)
    return True


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _check_nested(name: str, value: Any) -> Any:
    """A dotted setting's value, validated as the nested model's field."""
    if not is_setting(name):
        raise SettingsError(name, f"unknown setting {name!r}")
    try:
        config = TrainConfig.model_validate(nest_dotted({name: value}))
    except ValidationError as exc:
        err = _settings_error(exc)
        if err.field == name or not err.field.startswith(name.split(".")[0]):
            raise err from None
        return value  # another field of the nested model is missing (set elsewhere)
    node: Any = config
    for part in name.split("."):
        node = getattr(node, part)
    return node


def check_setting(name: str, value: Any) -> Any:
    """Validate one setting on its own (no combination rules); the coerced value.

    Raises SettingsError naming ``name`` for an unknown name or a bad value.
    """
    if "." in name:
        return _check_nested(name, value)
    if name not in TrainConfig.model_fields:
        raise SettingsError(name, f"unknown setting {name!r}")
    try:
        validated = TrainConfig.__pydantic_validator__.validate_assignment(
            TrainConfig.model_construct(), name, value
        )
    except ValidationError as exc:
        raise _settings_error(exc) from None
    return getattr(validated, name)


def check_combination(config: TrainConfig) -> None:
    """Rules that involve two settings at once."""
    # BatchNorm cannot compute batch statistics from a single sample in train mode.
    if config.batch_norm and config.batch_size < 2 and config.optimizer != "gd":
        raise SettingsError(
            "batch_size", f"batch_size must be >= 2 with batch_norm, got {config.batch_size}"
        )
    if config.optimizer == "nesterov" and config.momentum == 0:
        raise SettingsError("momentum", "momentum must be > 0 with nesterov, got 0")
    if config.privacy is not None:
        for name in DP_CONFLICTS:
            if dp_conflict(name, getattr(config, name)):
                raise SettingsError(name, dp_error(name, name))
    limit = min(config.hidden, IN_FEATURES)
    if config.low_rank is not None and config.low_rank > limit:
        raise SettingsError(
            "low_rank",
            f"low_rank must be <= {limit} (the hidden layer width {config.hidden}), "
            f"got {config.low_rank}",
        )


_BOUND_WORDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _field_path(loc: tuple[int | str, ...]) -> str:
    """The dotted setting an error location points at (union tags and indices dropped)."""
    names: list[str] = []
    model: type[BaseModel] | None = TrainConfig
    for part in loc:
        if not isinstance(part, str) or model is None:
            continue
        if part not in model.model_fields:  # an unknown setting, or a nested model's field
            names.append(part)
            break
        names.append(part)
        model = _nested_model(model.model_fields[part].annotation)
    return ".".join(names) if names else "settings"


def _settings_error(exc: ValidationError) -> SettingsError:
    """The first problem of a validation error, in words that name the setting."""
    err = exc.errors()[0]
    name = _field_path(err["loc"])
    kind, ctx, given = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        return SettingsError(name, f"unknown setting {name!r}")
    if "." in name or (kind == "value_error" and name in ("privacy", "data", "robustness")):
        message = str(err["msg"]).removeprefix("Value error, ")
        return SettingsError(name, f"{name}: {message}, got {given!r}")
    if kind in _BOUND_WORDS:
        key, op = _BOUND_WORDS[kind]
        return SettingsError(name, f"{name} must be {op} {ctx[key]}, got {given!r}")
    if kind == "literal_error":
        choices = ", ".join(get_args(TrainConfig.model_fields[name].annotation))
        return SettingsError(name, f"{name} must be one of {choices}; got {given!r}")
    if kind == "finite_number":
        return SettingsError(name, f"{name} must be finite, got {given!r}")
    if kind == "int_from_float":
        return SettingsError(name, f"{name} must be an integer, got {given!r}")
    if name in ("compile", "measure_model"):
        return SettingsError(name, f"{name} must be true, false or 'auto', got {given!r}")
    message = str(err["msg"]).removeprefix("Value error, ")
    return SettingsError(name, f"{name} {message}")

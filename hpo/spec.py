"""Study specs: the declarative shape of a study (YAML files and API bodies).

A spec is validated fully before anything is stored; every error names the
field (``space.lr.low``, ``sampler.name``...). This module is the schema only
(pydantic, no Optuna): the server adds the checks that need Optuna (sampler and
pruner options) and builds the sampler, pruner and define-by-run sampling from
a validated spec. The JSON Schema of :class:`StudySpec` is served at
``GET /api/v1/spec-schema``, printed by ``hpo study schema`` and kept in
``docs/spec-schema.json``.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hpo.constraints import ConstraintSpec
from hpo.responsible import privacy_conflict
from hpo.schedules import Schedule, check_schedule
from hpo.settings import (
    IN_FEATURES,
    REFERENCE_WORKLOAD,
    SettingsError,
    TrainConfig,
    check_setting,
    is_setting,
)

Scalar = str | int | float | bool | None

#: Sampler names of a spec -> the Optuna class that implements it.
SAMPLERS: dict[str, str] = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "nsga2": "NSGAIISampler",
    "qmc": "QMCSampler",
}
#: Pruner names of a spec -> the Optuna class that implements it.
PRUNERS: dict[str, str] = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive-halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
}
#: Arguments the service sets itself; a spec may not pass them as options.
RESERVED_OPTIONS = frozenset({"seed", "search_space"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_name(value: str, what: str = "name") -> str:
    """Names are shown in the dashboard and used in URLs: no control characters."""
    if not value.strip():
        raise ValueError(f"{what} must not be blank")
    bad = [c for c in value if unicodedata.category(c).startswith("C")]
    if bad:
        raise ValueError(f"{what} must not contain control characters (found {bad[0]!r})")
    if "/" in value:
        raise ValueError(f"{what} must not contain '/'")
    return value


class _ParamBase(_Strict):
    when: dict[str, list[Scalar]] | None = Field(
        default=None, description="sample only when these earlier parameters take these values"
    )
    setting: str | None = Field(
        default=None, description="training setting this parameter sets (default: its name)"
    )

    @field_validator("when")
    @classmethod
    def _when_not_empty(cls, v: dict[str, list[Scalar]] | None) -> Any:
        if v is not None:
            for key, allowed in v.items():
                if not allowed:
                    raise ValueError(f"condition on {key!r} lists no values")
        return v


def _check_range(
    param: FloatParam | IntParam, *, log_floor: tuple[str, bool], stepped: bool
) -> None:
    """The bounds checks a float and an int parameter share: ``low < high``; on a log
    scale, ``low`` above the floor (``log_floor``: how the floor reads, and whether
    ``low`` is above it) and no step (``stepped``: the parameter sets one)."""
    if param.low >= param.high:
        raise ValueError(f"low ({param.low}) must be < high ({param.high})")
    floor, above = log_floor
    if param.log and not above:
        raise ValueError(f"log scale needs {floor}, got low={param.low}")
    if param.log and stepped:
        raise ValueError("log and step cannot be combined")


class FloatParam(_ParamBase):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite")
        _check_range(self, log_floor=("low > 0", self.low > 0), stepped=self.step is not None)
        return self


class IntParam(_ParamBase):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_range(self, log_floor=("low >= 1", self.low >= 1), stepped=self.step != 1)
        return self


class CategoricalParam(_ParamBase):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(max_length=1000)

    @field_validator("choices")
    @classmethod
    def _choices_ok(cls, v: list[Scalar]) -> list[Scalar]:
        if not v:
            raise ValueError("choices must not be empty")
        if len({repr(c) for c in v}) != len(v):
            raise ValueError("choices must be unique")
        return v


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def _known_name(kind: str, name: str, names: dict[str, str]) -> str:
    """``name`` when it is one of ``names`` (a sampler's or pruner's); else the error
    that lists the names of that ``kind``."""
    if name not in names:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(names)}")
    return name


class SamplerSpec(_Strict):
    name: str = "tpe"
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _known_name("sampler", v, SAMPLERS)

    @field_validator("options")
    @classmethod
    def _not_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if key in RESERVED_OPTIONS:
                raise ValueError(f"options.{key} is set by the service (use sampler.seed / space)")
        return v


class PrunerSpec(_Strict):
    name: str = "none"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _known_name("pruner", v, PRUNERS)


class ResourceSpec(_Strict):
    """What one trial needs (a worker must have at least this to lease it)."""

    gpus: int = Field(default=0, ge=0, le=64)
    gpu_memory_gb: float = Field(default=0.0, ge=0.0, le=4096.0, description="per GPU, GiB")


class BudgetSpec(_Strict):
    max_trials: int = Field(default=100, ge=1, le=1_000_000)
    max_concurrent: int | None = Field(default=None, ge=1, le=100_000)
    max_retries: int = Field(default=2, ge=0, le=100)


class RetentionSpec(_Strict):
    """Which checkpoints and models a study keeps (``hpo study gc``, and the reaper, apply it)."""

    keep_checkpoints: int = Field(
        default=2, ge=1, le=1000, description="latest checkpoints a running trial keeps"
    )
    keep_best: int = Field(
        default=3,
        ge=0,
        le=100_000,
        description="finished trials that keep their final checkpoint and model: the best K "
        "(the Pareto front for multi-objective studies); every other finished trial's "
        "checkpoints are deleted",
    )


class StudySpec(_Strict):
    """A study: search space + sampler + pruner + budget (+ fixed training settings)."""

    name: str = Field(min_length=1, max_length=128)
    description: str = Field(default="", max_length=4000)
    workload: str = Field(
        default=REFERENCE_WORKLOAD,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description=f"what workers run: {REFERENCE_WORKLOAD!r} is the built-in trainer",
    )
    direction: Literal["maximize", "minimize"] | None = None
    directions: list[Literal["maximize", "minimize"]] | None = Field(default=None, max_length=8)
    objective: str | None = Field(default=None, max_length=64)
    objectives: list[str] | None = Field(default=None, max_length=8)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Param] = Field(
        default_factory=dict,
        max_length=100,
        description="declared parameters; empty: define-by-run (the objective's suggest "
        "calls sample them on the server; not for the built-in trainer)",
    )
    resources: ResourceSpec = Field(
        default_factory=lambda: ResourceSpec(),
        description="what one trial needs; only workers that have it lease the study's trials",
    )
    constraints: dict[str, ConstraintSpec] = Field(
        default_factory=dict,
        max_length=16,
        description="bounds on final metrics (feasible trials: Optuna's constraints)",
    )
    schedule: Schedule | None = Field(
        default=None,
        description="continue trials from checkpoints: PBT or promotion ASHA (hpo.schedules)",
    )

    _check_name = field_validator("name")(lambda cls, v: check_name(v, "name"))

    @field_validator("space")
    @classmethod
    def _space_ok(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            check_name(name, "parameter name")
        return v

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        _check_directions(self)
        _check_conditions(self.space)
        if not self.space and (self.workload == REFERENCE_WORKLOAD or self.sampler.name == "grid"):
            who = "the grid sampler" if self.sampler.name == "grid" else "the built-in trainer"
            raise ValueError(f"space: must define at least one parameter for {who}")
        if self.workload == REFERENCE_WORKLOAD:
            _check_reference_settings(self)
        if self.is_multi_objective and self.pruner.name != "none":
            raise ValueError("pruner: Optuna cannot prune multi-objective studies; use 'none'")
        if self.sampler.name == "grid":
            grid_search_space(self.space)
        check_schedule(self)
        return self

    @property
    def study_directions(self) -> list[str]:
        return list(self.directions or [self.direction or "maximize"])

    @property
    def objective_names(self) -> list[str]:
        return list(self.objectives or [self.objective or "val_accuracy"])

    @property
    def is_multi_objective(self) -> bool:
        return len(self.study_directions) > 1

    @property
    def define_by_run(self) -> bool:
        """No declared space: the objective's suggest calls sample on the server."""
        return not self.space


def _check_directions(spec: StudySpec) -> None:
    if spec.direction and spec.directions:
        raise ValueError("give either direction or directions, not both")
    if spec.objective and spec.objectives:
        raise ValueError("give either objective or objectives, not both")
    if len(spec.objective_names) != len(spec.study_directions):
        raise ValueError(
            f"objectives: {len(spec.objective_names)} names for "
            f"{len(spec.study_directions)} directions"
        )


def _check_conditions(space: dict[str, Any]) -> None:
    seen: dict[str, Any] = {}
    for name, param in space.items():
        for ref, allowed in (param.when or {}).items():
            if ref not in space:
                raise ValueError(f"space.{name}.when: unknown parameter {ref!r}")
            if ref not in seen:
                raise ValueError(f"space.{name}.when: {ref!r} must be defined before {name!r}")
            ref_param = seen[ref]
            if isinstance(ref_param, CategoricalParam):
                missing = [a for a in allowed if a not in ref_param.choices]
                if missing:
                    raise ValueError(
                        f"space.{name}.when.{ref}: {missing[0]!r} is not one of its choices"
                    )
        seen[name] = param


def _check_reference_settings(spec: StudySpec) -> None:
    """The built-in trainer's schema applied to ``fixed`` and to the space's targets and
    bounds, so that a typo is a 422 at creation, not a failed trial on every worker."""
    for name, value in spec.fixed.items():
        _check_value(f"fixed.{name}", name, value)
    for name, p in spec.space.items():
        target = p.setting or name
        if not is_setting(target):
            where = f"space.{name}.setting" if p.setting else f"space.{name}"
            raise ValueError(f"{where}: unknown setting {target!r}{_OF_TRAINER}")
        if isinstance(p, CategoricalParam):
            for i, choice in enumerate(p.choices):
                _check_value(f"space.{name}.choices[{i}]", target, choice)
        else:
            _check_value(f"space.{name}.low", target, p.low)
            _check_value(f"space.{name}.high", target, p.high)
    _check_rank_fits_width(spec)
    conflict = privacy_conflict(_candidates(spec))
    if conflict is not None:
        raise ValueError(f"{conflict}{_OF_TRAINER}")


def _candidates(spec: StudySpec) -> list[tuple[str, str, Any]]:
    """(where, setting, value) for every fixed value and each value the space may take."""
    out: list[tuple[str, str, Any]] = [(f"fixed.{k}", k, v) for k, v in spec.fixed.items()]
    for name, p in spec.space.items():
        target = p.setting or name
        if isinstance(p, CategoricalParam):
            out += [(f"space.{name}.choices[{i}]", target, c) for i, c in enumerate(p.choices)]
        else:
            out.append((f"space.{name}.high", target, p.high))
    return out


def _extreme(spec: StudySpec, setting: str, largest: bool) -> tuple[str, Any] | None:
    """Where a setting takes its largest (or smallest) value in the spec, and that value."""
    if setting in spec.fixed:
        return f"fixed.{setting}", spec.fixed[setting]
    found = []
    for name, p in spec.space.items():
        if (p.setting or name) != setting:
            continue
        if isinstance(p, CategoricalParam):
            values = [c for c in p.choices if isinstance(c, int | float)]
            if values:
                i = values.index(max(values) if largest else min(values))
                found.append((f"space.{name}.choices[{p.choices.index(values[i])}]", values[i]))
        else:
            found.append(
                (f"space.{name}.{'high' if largest else 'low'}", p.high if largest else p.low)
            )
    if not found:
        return None
    return (max if largest else min)(found, key=lambda item: item[1])


def _check_rank_fits_width(spec: StudySpec) -> None:
    """The largest ``low_rank`` must fit the narrowest hidden layer the spec allows."""
    rank = _extreme(spec, "low_rank", largest=True)
    if rank is None or rank[1] is None:
        return
    width = _extreme(spec, "hidden", largest=False)
    hidden = width[1] if width else TrainConfig.model_fields["hidden"].default
    limit = min(hidden, IN_FEATURES)
    if rank[1] > limit:
        raise ValueError(
            f"{rank[0]}: low_rank {rank[1]} exceeds the hidden layer width {hidden} "
            f"(at most {limit}){_OF_TRAINER}"
        )


_OF_TRAINER = f" (a setting of the built-in {REFERENCE_WORKLOAD!r} trainer)"


def _check_value(where: str, name: str, value: Any) -> None:
    try:
        check_setting(name, value)
    except SettingsError as exc:
        raise ValueError(f"{where}: {exc}{_OF_TRAINER}") from None


def grid_search_space(space: dict[str, Any]) -> dict[str, list[Scalar]]:
    """The finite grid of a space; raises ValueError when a parameter is continuous."""
    grid: dict[str, list[Scalar]] = {}
    for name, p in space.items():
        if isinstance(p, CategoricalParam):
            grid[name] = list(p.choices)
        elif isinstance(p, IntParam) and not p.log:
            grid[name] = list(range(p.low, p.high + 1, p.step))
        elif isinstance(p, FloatParam) and p.step is not None:
            n = int(math.floor((p.high - p.low) / p.step + 1e-9))
            grid[name] = [round(p.low + i * p.step, 12) for i in range(n + 1)]
        else:
            raise ValueError(f"space.{name}: the grid sampler needs choices or a step")
        if len(grid[name]) > 10_000:
            raise ValueError(f"space.{name}: grid too large ({len(grid[name])} points)")
    return grid


def to_settings(spec: StudySpec, params: dict[str, Any]) -> dict[str, Any]:
    """Map sampled parameters to training-setting names (``setting:`` renames)."""
    return {(spec.space[k].setting or k) if k in spec.space else k: v for k, v in params.items()}


def trial_seed(study_seed: int, number: int) -> int:
    """Deterministic per-trial seed from the study seed and the trial number."""
    return (study_seed * 1_000_003 + number * 7_919 + 17) % (2**31 - 1)


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`StudySpec` (served at ``/api/v1/spec-schema``)."""
    schema = StudySpec.model_json_schema()
    schema["$id"] = "https://hpo-service/spec-schema.json"
    return schema

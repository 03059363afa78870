"""Training settings for one trial: a validated, immutable :class:`TrainConfig`.

A trial's settings arrive as a JSON dict (the sampler's params merged with the
study's fixed settings). Everything is checked here, before any tensor is
touched, so a bad study spec fails the trial in milliseconds with a message that
names the field, instead of minutes into training.

The setting names are part of the API (study specs use them); keep them stable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
LR_SCHEDULES = ("constant", "step", "exponential", "cosine")

Optimizer = Literal["gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
LrSchedule = Literal["constant", "step", "exponential", "cosine"]


class SettingsError(ValueError):
    """A setting is unknown or has a bad value; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on. Defaults are the seed's settings."""

    optimizer: Optimizer = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # momentum, nesterov and rmsprop; ignored by the others
    beta1: float = 0.9  # adam, adamw
    beta2: float = 0.999  # adam, adamw
    eps: float = 1e-8  # adagrad, rmsprop, adam, adamw
    lr_schedule: LrSchedule = "constant"
    warmup_epochs: int = 0
    step_size: int = 3  # epochs between decays (step)
    gamma: float = 0.8  # decay factor (step: per step_size epochs; exponential: per epoch)
    weight_decay: float = 0.0  # L2 through the optimizer (adamw: decoupled)
    l1: float = 0.0  # l1 * sum|w| over the Linear weights, added to the loss
    dropout: float = 0.0
    batch_norm: bool = False
    batch_size: int = 64  # ignored by gd (full batch)
    hidden: int = 512
    depth: int = 1
    epochs: int = 10
    train_subset: int | None = None  # only the first N images of the training split
    val_size: int = 5000
    seed: int = 0
    compile: bool | Literal["auto"] = "auto"
    divergence_factor: float = 10.0

    @classmethod
    def from_settings(cls, settings: dict[str, Any], seed: int = 0) -> TrainConfig:
        """Validate a settings dict (unknown keys, types, ranges) and build a config.

        ``seed`` is the trial seed handed out by the server; a ``seed`` key in
        ``settings`` (e.g. a study's fixed setting) overrides it.
        """
        if not isinstance(settings, dict):
            kind = type(settings).__name__
            raise SettingsError("settings", f"settings must be a dict, got {kind}")
        values: dict[str, Any] = {"seed": _CHECKS["seed"]("seed", seed)}
        for name, raw in settings.items():
            check = _CHECKS.get(name) if isinstance(name, str) else None
            if check is None:
                raise SettingsError(str(name), f"unknown setting {name!r}")
            values[name] = check(name, raw)
        config = replace(cls(), **values)
        _check_combination(config)
        return config

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict (every setting, defaults included)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --------------------------------------------------------------------------- checks


def _number(name: str, value: Any, kind: type) -> Any:
    # bool is an int in Python: True must not silently become lr=1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(name, f"{name} must be a number, got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise SettingsError(name, f"{name} must be an integer, got {value!r}")
        return int(value)
    if not math.isfinite(value):
        raise SettingsError(name, f"{name} must be finite, got {value!r}")
    return float(value)


def _ranged(
    kind: type,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        v = _number(name, value, kind)
        for bad, op, bound in (
            (gt is not None and not v > gt, ">", gt),
            (ge is not None and not v >= ge, ">=", ge),
            (lt is not None and not v < lt, "<", lt),
            (le is not None and not v <= le, "<=", le),
        ):
            if bad:
                raise SettingsError(name, f"{name} must be {op} {bound}, got {value!r}")
        return v

    return check


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if value not in options:
            raise SettingsError(name, f"{name} must be one of {', '.join(options)}; got {value!r}")
        return value

    return check


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(name, f"{name} must be true or false, got {value!r}")
    return value


def _compile(name: str, value: Any) -> bool | str:
    if value == "auto" or isinstance(value, bool):
        return value
    raise SettingsError(name, f"{name} must be true, false or 'auto', got {value!r}")


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda name, value: None if value is None else check(name, value)


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "optimizer": _choice(OPTIMIZERS),
    "lr": _ranged(float, gt=0),
    "momentum": _ranged(float, ge=0, lt=1),
    "beta1": _ranged(float, gt=0, lt=1),
    "beta2": _ranged(float, gt=0, lt=1),
    "eps": _ranged(float, gt=0),
    "lr_schedule": _choice(LR_SCHEDULES),
    "warmup_epochs": _ranged(int, ge=0, le=1000),
    "step_size": _ranged(int, ge=1),
    "gamma": _ranged(float, gt=0, le=1),
    "weight_decay": _ranged(float, ge=0),
    "l1": _ranged(float, ge=0),
    "dropout": _ranged(float, ge=0, le=0.8),
    "batch_norm": _bool,
    "batch_size": _ranged(int, ge=1, le=60000),
    "hidden": _ranged(int, ge=1, le=8192),
    "depth": _ranged(int, ge=1, le=8),
    "epochs": _ranged(int, ge=1, le=1000),
    "train_subset": _optional(_ranged(int, ge=1, le=60000)),
    "val_size": _ranged(int, ge=1, le=30000),  # leaves at least 30k images to train on
    "seed": _ranged(int, ge=0, lt=2**63),
    "compile": _compile,
    "divergence_factor": _ranged(float, gt=1),
}

assert set(_CHECKS) == {f.name for f in fields(TrainConfig)}, "every setting needs a check"


def _check_combination(config: TrainConfig) -> None:
    # BatchNorm cannot compute batch statistics from a single sample in train mode.
    if config.batch_norm and config.batch_size < 2 and config.optimizer != "gd":
        raise SettingsError(
            "batch_size", f"batch_size must be >= 2 with batch_norm, got {config.batch_size}"
        )
    if config.optimizer == "nesterov" and config.momentum == 0:
        raise SettingsError("momentum", "momentum must be > 0 with nesterov, got 0")

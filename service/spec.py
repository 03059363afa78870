"""Study specs: the declarative shape of a study (YAML files and API bodies).

A spec is validated fully before anything is stored; every error names the
field (``space.lr.low``, ``sampler.name``...). Samplers, pruners and sampling
itself are Optuna's: this module only builds them from the spec and walks the
search space define-by-run, so that conditional parameters work.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import unicodedata
from typing import Annotated, Any, Literal

import numpy as np
import optuna
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Scalar = str | int | float | bool | None

SAMPLERS: dict[str, str] = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "nsga2": "NSGAIISampler",
    "qmc": "QMCSampler",
}
PRUNERS: dict[str, str] = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive-halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
}
# Arguments the service sets itself; a spec may not pass them as options.
_RESERVED_OPTIONS = {"seed", "search_space"}


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
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self


class IntParam(_ParamBase):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log and self.low < 1:
            raise ValueError(f"log scale needs low >= 1, got low={self.low}")
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be combined")
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


class SamplerSpec(_Strict):
    name: str = "tpe"
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SAMPLERS:
            raise ValueError(f"unknown sampler {v!r}; choose one of {', '.join(SAMPLERS)}")
        return v

    @model_validator(mode="after")
    def _options(self) -> SamplerSpec:
        _check_options(getattr(optuna.samplers, SAMPLERS[self.name]), self.options)
        return self


class PrunerSpec(_Strict):
    name: str = "none"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in PRUNERS:
            raise ValueError(f"unknown pruner {v!r}; choose one of {', '.join(PRUNERS)}")
        return v

    @model_validator(mode="after")
    def _options(self) -> PrunerSpec:
        cls = getattr(optuna.pruners, PRUNERS[self.name])
        _check_options(cls, self.options)
        try:
            cls(**self.options)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad pruner options: {exc}") from exc
        return self


class BudgetSpec(_Strict):
    max_trials: int = Field(default=100, ge=1, le=1_000_000)
    max_concurrent: int | None = Field(default=None, ge=1, le=100_000)
    max_retries: int = Field(default=2, ge=0, le=100)


class StudySpec(_Strict):
    """A study: search space + sampler + pruner + budget (+ fixed training settings)."""

    name: str = Field(min_length=1, max_length=128)
    description: str = Field(default="", max_length=4000)
    direction: Literal["maximize", "minimize"] | None = None
    directions: list[Literal["maximize", "minimize"]] | None = Field(default=None, max_length=8)
    objective: str | None = Field(default=None, max_length=64)
    objectives: list[str] | None = Field(default=None, max_length=8)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Param] = Field(max_length=100)

    _check_name = field_validator("name")(lambda cls, v: check_name(v, "name"))

    @field_validator("space")
    @classmethod
    def _space_ok(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            raise ValueError("space must define at least one parameter")
        for name in v:
            check_name(name, "parameter name")
        return v

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        _check_directions(self)
        _check_conditions(self.space)
        if self.is_multi_objective and self.pruner.name != "none":
            raise ValueError("pruner: Optuna cannot prune multi-objective studies; use 'none'")
        if self.sampler.name == "grid":
            grid_search_space(self.space)
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


def _check_options(cls: type, options: dict[str, Any]) -> None:
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in options:
        if key in _RESERVED_OPTIONS:
            raise ValueError(f"options.{key} is set by the service (use sampler.seed / space)")
        if not accepts_any and key not in params:
            raise ValueError(f"options.{key}: unknown option for {cls.__name__}")


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


def stored_spec(data: dict[str, Any]) -> StudySpec:
    """A spec as stored with its study (validated at creation), parsed once per content.

    Validating a spec builds its sampler and pruner to check their options; done for
    every lease, report and complete it cost more than some of their queries. Specs
    are never changed in place, so equal content gives one shared object.
    """
    return _stored_spec(json.dumps(data))  # key order matters: the space is define-by-run


@functools.lru_cache(maxsize=512)
def _stored_spec(text: str) -> StudySpec:
    return StudySpec.model_validate_json(text)


def make_sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    """Build the spec's Optuna sampler, seeded with the study seed."""
    cls = getattr(optuna.samplers, SAMPLERS[spec.sampler.name])
    options = dict(spec.sampler.options)
    if spec.sampler.name == "grid":
        return cls(grid_search_space(spec.space), seed=seed, **options)
    return cls(seed=seed, **options)


def seed_sampler_for_trial(sampler: optuna.samplers.BaseSampler, seed: int) -> None:
    """Seed every random state of ``sampler`` (and of the samplers it wraps) from ``seed``.

    Called before each trial is sampled, with a seed derived from the study seed and
    the trial number. A sampler's randomness then depends on which trial it samples,
    not on how many it sampled before in this process: a restarted server goes on
    with the same proposals, and several server processes (each with its own copy of
    the sampler, seeded alike) never hand out the same random draws twice.
    Optuna's own ``reseed_rng()`` draws OS entropy, so the states are set here.
    """
    _seed_states(sampler, seed, depth=0)


def _seed_states(obj: object, seed: int, depth: int) -> None:
    for i, value in enumerate(vars(obj).values()):
        state = getattr(value, "rng", value)  # optuna's LazyRandomState wraps a RandomState
        if isinstance(state, np.random.RandomState):
            state.seed((seed + 7_919 * i) % 2**32)
        elif isinstance(value, optuna.samplers.BaseSampler) and depth < 3:
            _seed_states(value, (seed * 31 + i + 1) % 2**32, depth + 1)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """Build the spec's Optuna pruner."""
    return getattr(optuna.pruners, PRUNERS[spec.pruner.name])(**spec.pruner.options)


def _condition_holds(param: Any, values: dict[str, Any]) -> bool:
    return all(
        ref in values and values[ref] in allowed for ref, allowed in (param.when or {}).items()
    )


def suggest_params(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Sample the space define-by-run; returns Optuna's parameter values by name.

    A parameter whose ``when`` condition does not hold (or refers to a parameter
    that was itself skipped) is not sampled at all, so the sampler never sees it.
    """
    values: dict[str, Any] = {}
    for name, p in spec.space.items():
        if not _condition_holds(p, values):
            continue
        if isinstance(p, FloatParam):
            values[name] = trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, IntParam):
            values[name] = trial.suggest_int(name, p.low, p.high, log=p.log, step=p.step)
        else:
            values[name] = trial.suggest_categorical(name, p.choices)  # type: ignore[arg-type]
    return values


def to_settings(spec: StudySpec, params: dict[str, Any]) -> dict[str, Any]:
    """Map sampled parameters to training-setting names (``setting:`` renames)."""
    return {(spec.space[k].setting or k) if k in spec.space else k: v for k, v in params.items()}


def trial_seed(study_seed: int, number: int) -> int:
    """Deterministic per-trial seed from the study seed and the trial number."""
    return (study_seed * 1_000_003 + number * 7_919 + 17) % (2**31 - 1)

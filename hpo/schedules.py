"""Schedules: PBT and promotion ASHA, the spec's ``schedule`` key (pydantic only).

Samplers choose parameters per trial and pruners stop trials; a schedule
*continues* trials from their checkpoints:

* ``{name: pbt, ...}`` (population-based training, Jaderberg et al. 2017): a
  population of ``population_size`` members trains in segments of
  ``perturbation_interval`` epochs. Each segment is its own Optuna trial with
  fixed params; at a segment's end a member in the bottom ``quantile`` copies
  the checkpoint of one in the top ``quantile`` (exploit) and changes its
  parameters (explore: each parameter of ``mutations`` is multiplied by one of
  its ``factors``, or resampled from the study's space with
  ``resample_probability`` or when it says ``resample: true``).
* ``{name: asha, mode: promotion, ...}`` (Li et al. 2020): a trial that reaches a
  rung pauses (checkpoint, lease handed back as paused) and is resumed from
  that checkpoint when it is promoted to the next rung (the top
  ``1/reduction_factor`` of the rung's results); the study stops when the top
  rung (``max_resource``) is filled.

Both continue trials from checkpoints: they are refused for workloads that
cannot checkpoint. :func:`check_schedule` applies the checks that need the rest
of the spec (space, fixed settings, budget); every error names its field.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hpo.settings import REFERENCE_WORKLOAD, TrainConfig

#: Settings of the built-in trainer that a PBT segment may change from its parent's
#: checkpoint (the optimizer's knobs and the regularization; not the architecture).
EXPLORABLE_SETTINGS = ("lr", "momentum", "beta1", "beta2", "eps", "weight_decay", "l1", "dropout")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Mutation(_Strict):
    """How PBT's explore step changes one parameter."""

    factors: list[float] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="multiply by one of these (chosen at random), clipped into the space",
    )
    resample: bool = Field(
        default=False, description="always draw a fresh value from the study's space"
    )

    @field_validator("factors")
    @classmethod
    def _positive(cls, v: list[float] | None) -> list[float] | None:
        for f in v or []:
            if not (math.isfinite(f) and f > 0):
                raise ValueError(f"factors must be finite and > 0, got {f}")
        return v

    @model_validator(mode="after")
    def _one_way(self) -> Mutation:
        if self.factors is None and not self.resample:
            raise ValueError("give factors or resample: true")
        return self


class PbtSchedule(_Strict):
    """Population-based training (see the module docstring)."""

    name: Literal["pbt"]
    population_size: int = Field(default=4, ge=2, le=1024)
    perturbation_interval: int = Field(default=2, ge=1, le=1000, description="epochs")
    quantile: float = Field(default=0.25, gt=0.0, le=0.5)
    resample_probability: float = Field(default=0.25, ge=0.0, le=1.0)
    mutations: dict[str, Mutation] = Field(min_length=1, max_length=100)
    workload_checkpoints: bool = Field(
        default=False,
        description="an own workload's promise that its objective checkpoints in "
        "trial.checkpoint_dir and resumes from it (the built-in trainer does)",
    )


class AshaSchedule(_Strict):
    """Promotion-based asynchronous successive halving (see the module docstring)."""

    name: Literal["asha"]
    mode: Literal["promotion"] = "promotion"
    reduction_factor: int = Field(default=3, ge=2, le=100)
    min_resource: int = Field(default=1, ge=1, le=1_000_000, description="epochs")
    max_resource: int = Field(ge=1, le=1_000_000, description="epochs (the top rung)")
    rungs: list[int] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="the rungs' resources (default: min_resource * reduction_factor**k, "
        "then max_resource)",
    )
    workload_checkpoints: bool = Field(default=False, description="as for pbt")

    @model_validator(mode="after")
    def _check(self) -> AshaSchedule:
        if self.min_resource >= self.max_resource:
            raise ValueError(
                f"min_resource ({self.min_resource}) must be < max_resource ({self.max_resource})"
            )
        if self.rungs is not None:
            if any(b <= a for a, b in zip(self.rungs, self.rungs[1:], strict=False)):
                raise ValueError("rungs: must be strictly increasing")
            if self.rungs[0] < self.min_resource or self.rungs[-1] != self.max_resource:
                raise ValueError(
                    f"rungs: must lie in [min_resource, max_resource] and end at "
                    f"max_resource ({self.max_resource})"
                )
        return self

    @property
    def rung_steps(self) -> list[int]:
        """The rungs' resources, the top one (``max_resource``) last."""
        if self.rungs is not None:
            return list(self.rungs)
        steps, r = [], self.min_resource
        while r < self.max_resource:
            steps.append(r)
            r *= self.reduction_factor
        return [*steps, self.max_resource]

    def top_rung_size(self, max_trials: int) -> int:
        """How many trials reach the top rung when ``max_trials`` start at the bottom."""
        shrink = int(self.reduction_factor ** (len(self.rung_steps) - 1))
        return max(1, max_trials // shrink)


Schedule = Annotated[PbtSchedule | AshaSchedule, Field(discriminator="name")]


def check_schedule(spec: Any) -> None:
    """The checks of ``spec.schedule`` that need the rest of the spec (ValueError naming
    the field)."""
    schedule = spec.schedule
    if schedule is None:
        return
    if spec.is_multi_objective:
        raise ValueError("schedule: PBT and ASHA need a single objective")
    if spec.pruner.name != "none":
        raise ValueError(f"pruner: the {schedule.name} schedule decides; use 'none'")
    _check_checkpoints(spec, schedule)
    if isinstance(schedule, PbtSchedule):
        _check_pbt(spec, schedule)
    else:
        _check_asha(spec, schedule)


def _check_checkpoints(spec: Any, schedule: PbtSchedule | AshaSchedule) -> None:
    """Refuse workloads that cannot checkpoint."""
    if spec.workload != REFERENCE_WORKLOAD:
        if not schedule.workload_checkpoints:
            raise ValueError(
                f"schedule.workload_checkpoints: workload {spec.workload!r} is not known to "
                f"checkpoint; the {schedule.name} schedule continues trials from checkpoints "
                "(set it to true when the objective checkpoints in trial.checkpoint_dir)"
            )
        return
    if "checkpoint_every" in spec.space:
        raise ValueError("space.checkpoint_every: a schedule needs a fixed checkpoint_every")
    if spec.fixed.get("checkpoint_every", 1) != 1:
        raise ValueError(
            f"fixed.checkpoint_every: the {schedule.name} schedule needs a checkpoint at "
            "every epoch (1)"
        )
    if "epochs" in spec.space or any(p.setting == "epochs" for p in spec.space.values()):
        raise ValueError("space.epochs: the schedule owns the epochs (the resource)")


def reference_epochs(spec: Any) -> int:
    """The built-in trainer's epochs for ``spec`` (fixed, or the default)."""
    epochs: int = spec.fixed.get("epochs", TrainConfig.model_fields["epochs"].default)
    return int(epochs)


def _check_pbt(spec: Any, pbt: PbtSchedule) -> None:
    if spec.define_by_run:
        raise ValueError("schedule: PBT needs a declared space (its mutations are parameters)")
    for name, mutation in pbt.mutations.items():
        where = f"schedule.mutations.{name}"
        param = spec.space.get(name)
        if param is None:
            raise ValueError(f"{where}: not a parameter of the space ({', '.join(spec.space)})")
        if mutation.factors is not None and param.type == "categorical":
            raise ValueError(f"{where}.factors: a categorical parameter can only be resampled")
        if spec.workload == REFERENCE_WORKLOAD:
            target = param.setting or name
            if target not in EXPLORABLE_SETTINGS:
                raise ValueError(
                    f"{where}: {target!r} cannot change between segments (explorable: "
                    f"{', '.join(EXPLORABLE_SETTINGS)})"
                )
            if target == "lr" and (
                spec.fixed.get("lr_schedule", "constant") != "constant"
                or spec.fixed.get("warmup_epochs", 0) != 0
                or "lr_schedule" in spec.space
                or "warmup_epochs" in spec.space
            ):
                raise ValueError(
                    f"{where}: PBT makes the lr schedule; fix lr_schedule 'constant' "
                    "and warmup_epochs 0"
                )
    if spec.workload == REFERENCE_WORKLOAD:
        epochs = reference_epochs(spec)
        if pbt.perturbation_interval >= epochs:
            raise ValueError(
                f"schedule.perturbation_interval: {pbt.perturbation_interval} must be < "
                f"epochs ({epochs})"
            )
        segments = pbt.population_size * math.ceil(epochs / pbt.perturbation_interval)
        if spec.budget.max_trials < segments:
            raise ValueError(
                f"budget.max_trials: PBT runs population_size x segments = {segments} trials "
                f"({pbt.population_size} members, {epochs} epochs in segments of "
                f"{pbt.perturbation_interval}); max_trials is {spec.budget.max_trials}"
            )


def _check_asha(spec: Any, asha: AshaSchedule) -> None:
    if spec.workload == REFERENCE_WORKLOAD and asha.max_resource != reference_epochs(spec):
        raise ValueError(
            f"schedule.max_resource: {asha.max_resource} must equal the trials' epochs "
            f"({reference_epochs(spec)}, fixed.epochs)"
        )

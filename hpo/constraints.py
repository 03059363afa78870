"""Constraints: which trials count as feasible, in Optuna's own terms.

Optuna (5.x) reads a trial's constraints from its system attributes
``constraints:<key>``: the trial is feasible when every value is <= 0. Its samplers
(TPE, GP, NSGA-II/III) and ``study.best_trials`` use them. They reach a trial two ways:

* an objective calls ``trial.set_constraint(key, value)`` (as with plain Optuna);
* a study spec declares ``constraints`` on the trial's final metrics, for workloads
  such as the built-in trainer whose code does not call Optuna::

      constraints:
        n_params: {max: 100000}        # value n_params - 100000
        test_accuracy: {min: 0.97}     # value 0.97 - test_accuracy

  A metric the trial did not report makes it infeasible (value 1.0).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Optuna's system-attribute prefix for a trial's constraint values.
CONSTRAINT_PREFIX = "constraints:"
#: The value of a declared constraint whose metric the trial did not report.
MISSING_METRIC_VIOLATION = 1.0


class ConstraintSpec(BaseModel):
    """A bound on one final metric: ``max`` (metric <= max) or ``min`` (metric >= min)."""

    model_config = ConfigDict(extra="forbid")

    max: float | None = Field(default=None, allow_inf_nan=False)
    min: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_bound(self) -> ConstraintSpec:
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of max or min")
        return self

    def value(self, metric: float) -> float:
        """Optuna's constraint value for ``metric`` (<= 0: satisfied)."""
        return metric - self.max if self.max is not None else float(self.min or 0) - metric


def constraint_values(
    constraints: dict[str, ConstraintSpec], metrics: dict[str, Any]
) -> dict[str, float]:
    """The system attributes (``constraints:<metric>``) for a trial's final metrics."""
    out: dict[str, float] = {}
    for name, bound in constraints.items():
        metric = metrics.get(name)
        number = float(metric) if isinstance(metric, int | float) else math.nan
        if isinstance(metric, bool) or not math.isfinite(number):
            number = math.nan
        key = CONSTRAINT_PREFIX + name
        out[key] = MISSING_METRIC_VIOLATION if math.isnan(number) else bound.value(number)
    return out


def as_float(value: Any) -> float:
    """``value`` as a float, or Optuna's TypeError (``report``, ``set_constraint``)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"The `value` argument is of type '{type(value)}' but supposed to be a float."
        ) from None


def check_constraint(key: str, value: Any) -> float:
    """``trial.set_constraint``'s checks, as Optuna makes them: a float, not NaN."""
    number = as_float(value)
    if math.isnan(number):
        raise ValueError(f"Attempted to set a constraint for {key!r}, but NaN is not allowed.")
    return number

"""Optuna's ``FrozenTrial`` from the REST API's trial detail (imports Optuna).

Used by :mod:`hpo.optuna_study`, so that a study driven through ``hpo.Client``
hands callbacks and notebooks the objects Optuna's own ``Study`` would:

* state: the API's ``queued`` (a re-run waiting for a worker) is Optuna's RUNNING;
* distributions: as Optuna stored them (``TrialDetail.distributions``), else the
  declared space's (a server without that field);
* times: the API's aware UTC times as naive *local* times, as Optuna's storage
  hands them out;
* values the API sent as null (non-finite: a plain Optuna client may store them)
  read as NaN.

``system_attrs`` stay empty: the API does not expose them.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    json_to_distribution,
)
from optuna.trial import FrozenTrial, TrialState

from hpo.schemas import ShownState, TrialDetail

#: The API's trial states as Optuna's.
STATES = {
    ShownState.COMPLETE: TrialState.COMPLETE,
    ShownState.PRUNED: TrialState.PRUNED,
    ShownState.FAIL: TrialState.FAIL,
    ShownState.RUNNING: TrialState.RUNNING,
    ShownState.QUEUED: TrialState.RUNNING,
    ShownState.WAITING: TrialState.WAITING,
}


def optuna_state(shown: str) -> TrialState:
    """The Optuna state of a trial shown in ``shown`` (an API state name)."""
    return STATES[ShownState(shown)]


def frozen_trial(detail: TrialDetail, space: dict[str, Any] | None = None) -> FrozenTrial:
    """The trial as Optuna's ``FrozenTrial`` (see the module docstring)."""
    dists = {name: json_to_distribution(text) for name, text in detail.distributions.items()}
    for name in detail.params:
        if name not in dists and space and name in space:
            dists[name] = to_distribution(space[name])
    values = None if detail.values is None else [_number(v) for v in detail.values]
    return FrozenTrial(
        number=detail.number,
        state=optuna_state(detail.state),
        value=None,
        values=values,
        datetime_start=local_time(detail.datetime_start),
        datetime_complete=local_time(detail.datetime_complete),
        params=dict(detail.params),
        distributions=dists,
        user_attrs=dict(detail.user_attrs),
        system_attrs={},
        intermediate_values={iv.step: _number(iv.value) for iv in detail.intermediate_values},
        trial_id=detail.trial_id,
    )


def local_time(value: datetime | None) -> datetime | None:
    """An aware time as a naive local one (Optuna's ``FrozenTrial`` times)."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone().replace(tzinfo=None)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def to_distribution(param: dict[str, Any]) -> BaseDistribution:
    """A spec parameter (``{"type": "float", "low": ...}``) as Optuna's distribution."""
    kind = param.get("type")
    if kind == "categorical":
        return CategoricalDistribution(list(param["choices"]))
    log, step = bool(param.get("log")), param.get("step")
    if kind == "int":
        return IntDistribution(int(param["low"]), int(param["high"]), log=log, step=step or 1)
    return FloatDistribution(float(param["low"]), float(param["high"]), log=log, step=step)


def suggest_distribution(trial: Any, name: str, dist: BaseDistribution) -> Any:
    """``trial.suggest_*`` for an Optuna distribution (``ask(fixed_distributions)``)."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    raise TypeError(f"{name}: unsupported distribution {dist!r}")

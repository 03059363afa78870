"""``trial.study`` on the server: a lease's read-only view of its Optuna study, and
the attributes its trial writes at once (see :mod:`hpo.optuna_view`).

Reads go to Optuna's storage as Optuna reads them (so a view and
``optuna.load_study`` agree); writes go through the trial view, so the study's
sampler sees a constraint as soon as the trial that set it is told.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.distributions import distribution_to_json
from optuna.trial import FrozenTrial

from hpo.optuna_view import (
    WRITABLE_SYSTEM_PREFIXES,
    FrozenTrialBody,
    StudyTrialsBody,
    StudyViewBody,
    TrialAttrsRequest,
)
from service.core.context import AppContext
from service.core.errors import InvalidRequest, LeaseExpired, TrialFinished
from service.trials.rows import LeaseView, check_current, load_lease_without_commit
from service.trials.states import LeaseState, TrialState


def study_view(ctx: AppContext, lease_id: str) -> StudyViewBody:
    """The lease's study: name, directions and attributes (404: no such lease)."""
    view = _lease(ctx, lease_id)
    storage, study_id = ctx.store.storage, view.study.study_id
    trial_id = view.trial.optuna_trial_id
    assert trial_id is not None
    return StudyViewBody(
        study_name=view.study.name,
        study_id=study_id,
        trial_id=trial_id,
        directions=[d.name for d in storage.get_study_directions(study_id)],
        user_attrs=storage.get_study_user_attrs(study_id),
        system_attrs=storage.get_study_system_attrs(study_id),
    )


def study_trials(ctx: AppContext, lease_id: str, states: Sequence[str] | None) -> StudyTrialsBody:
    """The lease's study's trials (only those in ``states``, Optuna's names, if given)."""
    wanted = _states(states) if states else None
    view = _lease(ctx, lease_id)
    frozen = ctx.store.storage.get_all_trials(view.study.study_id, deepcopy=False, states=wanted)
    return StudyTrialsBody(trials=[frozen_body(t) for t in frozen])


def set_attrs(ctx: AppContext, lease_id: str, body: TrialAttrsRequest) -> None:
    """Write the lease's own trial's attributes now (409 once the lease is not live)."""
    for key in body.system_attrs:
        if not key.startswith(WRITABLE_SYSTEM_PREFIXES):
            allowed = ", ".join(WRITABLE_SYSTEM_PREFIXES)
            raise InvalidRequest(
                f"system_attrs.{key}: a trial may set only system attributes starting with "
                f"{allowed} (the others are Optuna's and the service's)",
                f"system_attrs.{key}",
            )
    view = _lease(ctx, lease_id)
    _check_live(view)
    trial_id = view.trial.optuna_trial_id
    assert trial_id is not None
    for key, value in body.user_attrs.items():
        ctx.store.view.set_trial_user_attr(trial_id, key, value)
    for key, value in body.system_attrs.items():
        ctx.store.view.set_trial_system_attr(trial_id, key, value)


def frozen_body(trial: FrozenTrial) -> FrozenTrialBody:
    """A FrozenTrial as it travels (non-finite numbers as None)."""
    return FrozenTrialBody(
        number=trial.number,
        trial_id=trial._trial_id,
        state=trial.state.name,
        values=None if trial.values is None else [_finite(v) for v in trial.values],
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=dict(trial.params),
        distributions={k: distribution_to_json(d) for k, d in trial.distributions.items()},
        user_attrs=dict(trial.user_attrs),
        system_attrs=dict(trial.system_attrs),
        intermediate_values={s: _finite(v) for s, v in trial.intermediate_values.items()},
    )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _states(names: Sequence[str]) -> list[optuna.trial.TrialState]:
    try:
        return [optuna.trial.TrialState[name.upper()] for name in names]
    except KeyError as exc:
        known = ", ".join(s.name for s in optuna.trial.TrialState)
        raise InvalidRequest(
            f"states: unknown state {exc.args[0]!r} (known: {known})", "states"
        ) from None


def _lease(ctx: AppContext, lease_id: str) -> LeaseView:
    with ctx.db.session() as session:
        return load_lease_without_commit(session, lease_id)


def _check_live(view: LeaseView) -> None:
    check_current(view)
    if view.trial.state == TrialState.FINISHED:
        raise TrialFinished(f"{view.label} already finished", "lease_id")
    if view.lease.state != LeaseState.ACTIVE:
        raise LeaseExpired(f"lease {view.lease.lease_id} is {view.lease.state}", "lease_id")

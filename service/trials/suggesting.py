"""Define-by-run: an objective's ``trial.suggest_*`` sampled on the server.

A study created without a ``space`` samples nothing at lease time; each
parameter is sampled when the objective first asks for it, through the
trial's lease, by the study's own Optuna sampler on the same Optuna trial, so
conditional spaces, TPE, CMA-ES and the rest behave as under
``study.optimize``. A re-run after a lost lease asks again and gets the
recorded value (Optuna returns a parameter the trial already has).
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from hpo.protocol import SuggestRequest, SuggestResponse
from hpo.spec import Param, check_name
from service.core.context import AppContext
from service.core.db import utcnow
from service.core.errors import InvalidRequest, LeaseExpired, TrialFinished
from service.trials.rows import (
    LeaseView,
    cached_study,
    check_current,
    load_lease_without_commit,
    study_spec,
)
from service.trials.states import LeaseState, TrialState, move_trial

_PARAM = TypeAdapter(Param)


def suggest(ctx: AppContext, lease_id: str, body: SuggestRequest) -> SuggestResponse:
    """Sample ``body.name`` for the lease's trial (or return its recorded value)."""
    with ctx.db.session() as session:
        view = load_lease_without_commit(session, lease_id)
        _check_suggest(view, body.name)
    param = _distribution(body)
    trial_id = view.trial.optuna_trial_id
    assert trial_id is not None
    try:
        value = cached_study(ctx, view.study).suggest(trial_id, body.name, param)
    except ValueError as exc:  # Optuna: the same name with another distribution
        raise InvalidRequest(f"distribution: {exc}", "distribution") from exc
    _record(ctx, view, body.name, value)
    return SuggestResponse(name=body.name, value=value)


def _check_suggest(view: LeaseView, name: str) -> None:
    check_current(view)
    if view.trial.state == TrialState.FINISHED:
        raise TrialFinished(f"{view.label} already finished", "lease_id")
    if view.lease.state != LeaseState.ACTIVE:
        raise LeaseExpired(f"lease {view.lease.lease_id} is {view.lease.state}", "lease_id")
    spec = study_spec(view.study)
    if spec.space:
        raise InvalidRequest(
            f"name: study {view.study.name!r} declares its space; parameter {name!r} comes "
            "with the lease (suggest is for studies created without a space)",
            "name",
        )


def _distribution(body: SuggestRequest) -> Any:
    try:
        check_name(body.name, "name")
        return _PARAM.validate_python(body.distribution)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"] if p not in ("float", "int", "categorical"))
        field = f"distribution.{where}" if where else "distribution"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise InvalidRequest(f"{field}: {message}", field) from None
    except ValueError as exc:
        raise InvalidRequest(f"name: {exc}", "name") from None


def _record(ctx: AppContext, view: LeaseView, name: str, value: Any) -> None:
    """Keep the trial row's params in step with Optuna's (the dashboard and re-runs read it)."""
    params = {**(view.trial.params or {}), name: value}
    now = utcnow()
    with ctx.db.session() as session:
        leased, lease_id = [TrialState.LEASED], view.lease.lease_id
        values = {"params": params}
        move_trial(
            session,
            view.trial.id,
            leased,
            TrialState.LEASED,
            values,
            now,
            lease_id=lease_id,
            strict=False,
        )

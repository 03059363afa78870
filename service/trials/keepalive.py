"""Keeping a lease alive: heartbeat and report.

Heartbeat and report accept only the trial's current lease. A lease that
expired while its trial was not leased again is *revived* (same attempt) when
the study still has a concurrency slot for it; otherwise it gets 409.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import optuna
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hpo.protocol import Action, ActionResponse
from service import schedules
from service.core.context import AppContext
from service.core.db import utcnow
from service.core.errors import LeaseExpired
from service.fleet import registry
from service.storage.models import TrialMetric
from service.trials.choice import study_counts
from service.trials.rows import (
    LeaseView,
    cached_study,
    check_current,
    is_multi_objective,
    load_lease_without_commit,
    lock_study_without_commit,
    study_budget,
)
from service.trials.states import (
    DONE_LEASE_STATES,
    Changed,
    LeaseState,
    StudyState,
    TrialState,
    move_lease,
    move_trial,
)

_T = TypeVar("_T")


def heartbeat(
    ctx: AppContext, lease_id: str, telemetry: dict[str, float] | None = None
) -> ActionResponse:
    """Extend the lease; ``stop`` when the study was stopped or the trial finished,
    ``prune`` when the study's pruner prunes the trial at its last reported step.

    The prune answer is repeated here (not only on the report) so that a worker
    whose training process did not act on a report's answer (a command that
    ignores it) still learns of it and can end the process.
    """
    answer, view = _with_retry(
        ctx, lambda session: _keep_alive_without_commit(ctx, session, lease_id, telemetry=telemetry)
    )
    step, trial_id = view.trial.last_step, view.trial.optuna_trial_id
    if answer.action != Action.CONTINUE or step is None or trial_id is None:
        return answer
    if _should_prune(ctx, view, trial_id, step):
        message = f"pruned by the study's pruner at step {step}"
        return answer.model_copy(update={"action": Action.PRUNE, "message": message})
    return answer


def report(
    ctx: AppContext, lease_id: str, step: int, value: float, metrics: dict[str, Any]
) -> ActionResponse:
    """Record one intermediate value (Optuna) and its metrics; answer prune/continue/stop."""

    def unit(session: Session) -> tuple[ActionResponse, LeaseView]:
        answer, view = _keep_alive_without_commit(ctx, session, lease_id, last_step=step)
        if answer.action == Action.CONTINUE:
            _record_metrics_without_commit(session, view, step, value, metrics)
        return answer, view

    answer, view = _with_retry(ctx, unit)
    if answer.action != Action.CONTINUE:
        return answer
    trial_id = view.trial.optuna_trial_id
    assert trial_id is not None
    try:
        ctx.store.storage.set_trial_intermediate_value(trial_id, step, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        return ActionResponse(action=Action.STOP, message=f"{view.label} already finished")
    pause = schedules.report_action(ctx, view.study, view.trial, step, value)
    if pause is not None:  # PBT segment end, ASHA rung: checkpoint and hand back
        return answer.model_copy(update={"action": Action.PAUSE, "message": pause})
    if _should_prune(ctx, view, trial_id, step):
        message = f"pruned by the study's pruner at step {step}"
        return answer.model_copy(update={"action": Action.PRUNE, "message": message})
    return answer


def _with_retry(ctx: AppContext, unit: Callable[[Session], _T]) -> _T:
    """Run ``unit`` in one unit of work; once more if it lost a race with the reaper."""
    for _ in range(2):
        try:
            with ctx.db.session() as session:
                return unit(session)
        except Changed:
            continue
    raise LeaseExpired("the lease changed while it was being extended; retry", "lease_id")


# --------------------------------------------------------------------------- keep-alive


def _keep_alive_without_commit(
    ctx: AppContext,
    session: Session,
    lease_id: str,
    last_step: int | None = None,
    telemetry: dict[str, float] | None = None,
) -> tuple[ActionResponse, LeaseView]:
    """Extend (or revive) the lease; a report's ``last_step`` goes into the same
    update of the trial row, a heartbeat's telemetry into the worker's row."""
    view = load_lease_without_commit(session, lease_id)
    lease, trial, study = view.lease, view.trial, view.study
    check_current(view)
    if lease.state in DONE_LEASE_STATES or lease.state == LeaseState.FINISHING:
        raise LeaseExpired(f"lease {lease_id} is already {lease.state}", "lease_id")
    if trial.state == TrialState.FINISHED:
        stop = f"{view.label} already finished ({trial.final_state}): {trial.fail_reason or ''}"
        return ActionResponse(action=Action.STOP, message=stop.rstrip(": ")), view
    if study.state == StudyState.STOPPED:
        stop = f"study {study.name!r} was stopped"
        return ActionResponse(action=Action.STOP, message=stop), view
    now = utcnow()
    expires = now + timedelta(seconds=ctx.settings.lease_ttl_s)
    extra = {} if last_step is None else {"last_step": last_step}
    if lease.state == LeaseState.EXPIRED:
        _revive_without_commit(session, view, expires, now, extra)
    else:
        _extend_without_commit(session, view, expires, now, extra)
    registry.touch_without_commit(
        session,
        lease.worker_id,
        now,
        throttle=ctx.touches if telemetry is None else None,
        telemetry=telemetry,
    )
    return ActionResponse(action=Action.CONTINUE, lease_expires_at=expires), view


def _extend_without_commit(
    session: Session, view: LeaseView, expires: datetime, now: datetime, extra: dict[str, Any]
) -> None:
    # Raises Changed when the reaper expired the lease a moment ago: look again (maybe revive).
    lease_id = view.lease.lease_id
    move_lease(session, lease_id, [LeaseState.ACTIVE], LeaseState.ACTIVE, {"expires_at": expires})
    leased = [TrialState.LEASED]
    values = {"lease_expires_at": expires, **extra}
    move_trial(session, view.trial.id, leased, TrialState.LEASED, values, now, lease_id=lease_id)


def _revive_without_commit(
    session: Session, view: LeaseView, expires: datetime, now: datetime, extra: dict[str, Any]
) -> None:
    """An expired lease whose trial waits in the queue takes it back (same attempt)."""
    lease_id = view.lease.lease_id
    study = lock_study_without_commit(session, view.study.study_id)
    if study is None or view.trial.state != TrialState.QUEUED:
        raise LeaseExpired(f"lease {lease_id} expired", "lease_id")
    limit = study_budget(study).max_concurrent
    if limit is not None and study_counts(session, study.study_id)[1] >= limit:
        raise LeaseExpired(
            f"lease {lease_id} expired and its slot was given away (max_concurrent {limit})",
            "lease_id",
        )
    revived = {"expires_at": expires, "ended_at": None}
    move_lease(session, lease_id, [LeaseState.EXPIRED], LeaseState.ACTIVE, revived)
    values = {"lease_expires_at": expires, **extra}
    queued = [TrialState.QUEUED]
    move_trial(session, view.trial.id, queued, TrialState.LEASED, values, now, lease_id=lease_id)


# --------------------------------------------------------------------------- report


def _record_metrics_without_commit(
    session: Session, view: LeaseView, step: int, value: float, metrics: dict[str, Any]
) -> None:
    """Upsert the (trial, step) metrics row; a re-run overwrites an earlier attempt's step."""
    now = utcnow()
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    row = {
        "study_id": view.study.study_id,
        "optuna_trial_id": view.trial.optuna_trial_id,
        "attempt": view.lease.attempt,
        "step": step,
        "value": value,
        "metrics": metrics,
        "created_at": now,
    }
    stmt = insert(TrialMetric).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["optuna_trial_id", "step"],
        set_={k: row[k] for k in ("attempt", "value", "metrics", "created_at")},
    )
    session.execute(stmt)  # last_step was set by the keep-alive update of the trial row


def _should_prune(ctx: AppContext, view: LeaseView, trial_id: int, step: int) -> bool:
    """``Trial.should_prune()`` without its sampler side effects: the pruner on the
    latest trial, with steps beyond ``step`` (left by an earlier attempt) hidden."""
    spec = view.study.spec or {}
    if is_multi_objective(view.study) or (spec.get("pruner") or {}).get("name", "none") == "none":
        return False
    cached = cached_study(ctx, view.study)
    frozen = ctx.store.storage.get_trial(trial_id)
    if frozen.last_step is not None and frozen.last_step > step:
        frozen = copy.copy(frozen)
        frozen.intermediate_values = {
            k: v for k, v in frozen.intermediate_values.items() if k <= step
        }
    with cached.lock:
        return bool(cached.study.pruner.prune(cached.study, frozen))

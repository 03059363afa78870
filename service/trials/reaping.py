"""Expired leases, orphans and repairs: what the reaper (and every lease) cleans up.

* An overdue active lease becomes ``expired``; its trial goes back to
  ``queued`` (same Optuna trial, same params, next attempt), or is failed when
  ``budget.max_retries`` re-runs were used up or the study was stopped.
* ``creating`` rows older than ``orphan_grace_s`` (a server died while
  sampling) are deleted.
* Leases stuck in ``finishing`` longer than ``orphan_grace_s`` (a server died
  between telling Optuna and recording the answer) are finished from the
  request stored in the lease.
* Optuna trials of our studies left RUNNING without a row (a server died
  between sampling and leasing) are failed; trials whose row is already
  finished as failed but whose Optuna trial is still RUNNING are told FAIL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import optuna
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hpo.protocol import TrialOutcome
from service.core.context import AppContext
from service.core.db import utcnow
from service.fleet import registry
from service.storage.models import LeaseRecord, StudyRecord, TrialRecord
from service.trials.finishing import recover
from service.trials.pool import pooled_trial_ids
from service.trials.rows import (
    cached_study,
    lock_study_without_commit,
    naive_local,
    retries_used,
    study_budget,
    tell_optuna,
)
from service.trials.states import LeaseState, StudyState, TrialState, move_lease, move_trial

log = logging.getLogger("hpo.reaper")
RUNNING = optuna.trial.TrialState.RUNNING


@dataclass
class Settlement:
    """An Optuna trial to fail (after our transaction committed)."""

    study: StudyRecord
    optuna_trial_id: int
    reason: str


@dataclass
class Expiry:
    """What expiring one study's overdue leases did."""

    expired: int = 0
    settlements: list[Settlement] = field(default_factory=list)


def settle(ctx: AppContext, item: Settlement) -> bool:
    """Fail the Optuna trial with ``reason`` unless it already finished; True if told."""
    cached = cached_study(ctx, item.study)
    storage = ctx.store.storage
    try:
        frozen = storage.get_trial(item.optuna_trial_id)
        if frozen.state != RUNNING:
            return False
        storage.set_trial_user_attr(item.optuna_trial_id, "fail_reason", item.reason)
        tell_optuna(cached, frozen.number, optuna.trial.TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    if storage.get_trial(item.optuna_trial_id).state != optuna.trial.TrialState.FAIL:
        return False
    ctx.metrics.trials_finished.labels(TrialOutcome.FAIL).inc()
    return True


def apply_expiry(ctx: AppContext, expiry: Expiry) -> None:
    """After the expiring transaction committed: count, and fail what must fail."""
    if expiry.expired:
        ctx.metrics.leases_expired.inc(expiry.expired)
    for item in expiry.settlements:
        settle(ctx, item)


def expire_study_without_commit(
    ctx: AppContext, session: Session, study: StudyRecord, now: datetime
) -> Expiry:
    """Expire the study's overdue leases (caller holds the study lock)."""
    expiry = Expiry()
    overdue = session.execute(
        select(TrialRecord, LeaseRecord)
        .join(LeaseRecord, LeaseRecord.lease_id == TrialRecord.lease_id)
        .where(
            TrialRecord.study_id == study.study_id,
            TrialRecord.state == TrialState.LEASED,
            TrialRecord.lease_expires_at < now,
            LeaseRecord.state == LeaseState.ACTIVE,
        )
    ).all()
    max_retries = study_budget(study).max_retries
    for trial, lease in overdue:
        if not _cas_lease_expired(session, lease.lease_id, now):
            continue  # extended or finished meanwhile
        expiry.expired += 1
        registry.clear_current_without_commit(session, lease.worker_id, trial.optuna_trial_id)
        reason = None
        if study.state == StudyState.STOPPED:
            reason = f"study stopped; lease of attempt {trial.attempts} expired"
        elif retries_used(trial) >= max_retries:
            n = _count_expired(session, trial.id)
            reason = f"lease expired {n} times (worker lost); max_retries={max_retries} used up"
        _release_trial(session, trial, lease.lease_id, reason, now)
        if reason is not None and trial.optuna_trial_id is not None:
            expiry.settlements.append(Settlement(study, trial.optuna_trial_id, reason))
    if study.state == StudyState.STOPPED:
        expiry.settlements += _fail_queued_of_stopped(session, study, now)
    return expiry


def _cas_lease_expired(session: Session, lease_id: str, now: datetime) -> bool:
    active, ended = [LeaseState.ACTIVE], {"ended_at": now}
    return move_lease(
        session, lease_id, active, LeaseState.EXPIRED, ended, expired_before=now, strict=False
    )


def _count_expired(session: Session, trial_row_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(LeaseRecord)
            .where(
                LeaseRecord.trial_row_id == trial_row_id, LeaseRecord.state == LeaseState.EXPIRED
            )
        )
        or 0
    )


def _release_trial(
    session: Session, trial: TrialRecord, lease_id: str, fail_reason: str | None, now: datetime
) -> None:
    """Trial back to ``queued``, or ``finished`` as failed when a reason is given."""
    values: dict[str, object] = {"lease_expires_at": None}
    target = TrialState.QUEUED
    if fail_reason is not None:
        target = TrialState.FINISHED
        values.update(final_state=TrialOutcome.FAIL, fail_reason=fail_reason, finished_at=now)
    leased = [TrialState.LEASED]
    move_trial(session, trial.id, leased, target, values, now, lease_id=lease_id, strict=False)


def _fail_queued_of_stopped(
    session: Session, study: StudyRecord, now: datetime
) -> list[Settlement]:
    """A stopped study never re-runs its queued trials: fail them."""
    queued = session.scalars(
        select(TrialRecord).where(
            TrialRecord.study_id == study.study_id, TrialRecord.state == TrialState.QUEUED
        )
    ).all()
    out = []
    reason = "study stopped before the trial could run again"
    failed = {"final_state": TrialOutcome.FAIL, "fail_reason": reason, "finished_at": now}
    for trial in queued:
        queued_state = [TrialState.QUEUED]
        moved = move_trial(
            session, trial.id, queued_state, TrialState.FINISHED, failed, now, strict=False
        )
        if moved and trial.optuna_trial_id is not None:
            out.append(Settlement(study, trial.optuna_trial_id, reason))
    return out


# --------------------------------------------------------------------------- reap_all


def reap_all(ctx: AppContext) -> int:
    """One reaper pass over every study; returns how many things it cleaned up."""
    now = utcnow()
    count = 0
    for study_id in _studies_needing_expiry(ctx, now):
        with ctx.db.session() as session:
            study = lock_study_without_commit(session, study_id)
            expiry = expire_study_without_commit(ctx, session, study, now) if study else Expiry()
        apply_expiry(ctx, expiry)
        count += expiry.expired + len(expiry.settlements)
    count += _drop_stale_creating(ctx, now)
    count += _forget_gone_workers(ctx, now)
    count += _recover_finishing(ctx, now)
    count += _reconcile_optuna(ctx, now)
    return count


def _studies_needing_expiry(ctx: AppContext, now: datetime) -> list[int]:
    with ctx.db.session() as session:
        overdue = select(TrialRecord.study_id).where(
            TrialRecord.state == TrialState.LEASED, TrialRecord.lease_expires_at < now
        )
        stopped = (
            select(TrialRecord.study_id)
            .join(StudyRecord, StudyRecord.study_id == TrialRecord.study_id)
            .where(TrialRecord.state == TrialState.QUEUED, StudyRecord.state == StudyState.STOPPED)
        )
        return sorted(set(session.scalars(overdue.union(stopped))))


def _grace_cutoff(ctx: AppContext, now: datetime) -> datetime:
    return now - timedelta(seconds=ctx.settings.orphan_grace_s)


def _drop_stale_creating(ctx: AppContext, now: datetime) -> int:
    with ctx.db.session() as session:
        result = session.execute(
            delete(TrialRecord).where(
                TrialRecord.state == TrialState.CREATING,
                TrialRecord.created_at < _grace_cutoff(ctx, now),
            )
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _forget_gone_workers(ctx: AppContext, now: datetime) -> int:
    """Registry rows of workers gone for ``worker_forget_s`` (restarts leave new rows)."""
    with ctx.db.session() as session:
        cutoff = now - timedelta(seconds=ctx.settings.worker_forget_s)
        return registry.forget_gone_without_commit(session, cutoff)


def _recover_finishing(ctx: AppContext, now: datetime) -> int:
    with ctx.db.session() as session:
        stuck = session.scalars(
            select(LeaseRecord.lease_id)
            .join(TrialRecord, TrialRecord.lease_id == LeaseRecord.lease_id)
            .where(
                TrialRecord.state == TrialState.LEASED,
                LeaseRecord.state == LeaseState.FINISHING,
                LeaseRecord.ended_at < _grace_cutoff(ctx, now),
            )
        ).all()
    done = 0
    for lease_id in stuck:
        try:
            recover(ctx, lease_id)
            done += 1
        except Exception:  # one bad lease must not stop the pass
            log.exception("could not finish stuck lease %s", lease_id)
    return done


def _reconcile_optuna(ctx: AppContext, now: datetime) -> int:
    """Fail RUNNING Optuna trials that have no row (after the grace) or a failed row."""
    with ctx.db.session() as session:
        studies = session.scalars(select(StudyRecord)).all()
    cutoff = naive_local(_grace_cutoff(ctx, now))
    fixed = 0
    for study in studies:
        try:
            fixed += _reconcile_study(ctx, study, cutoff)
        except Exception:  # e.g. deleted meanwhile; the next pass retries
            log.warning("could not reconcile study %r", study.name, exc_info=True)
    return fixed


def _reconcile_study(ctx: AppContext, study: StudyRecord, cutoff: datetime) -> int:
    running = ctx.store.storage.get_all_trials(study.study_id, deepcopy=False, states=(RUNNING,))
    if not running:
        return 0
    rows = _rows_by_optuna_id(ctx, [t._trial_id for t in running])
    with ctx.db.session() as session:  # proposals drawn ahead have no row on purpose
        pooled = pooled_trial_ids(
            session, [t._trial_id for t in running if t._trial_id not in rows]
        )
    fixed = 0
    for frozen in running:
        if frozen._trial_id in pooled:
            continue
        reason = _repair_reason(rows.get(frozen._trial_id), frozen, cutoff)
        if reason and settle(ctx, Settlement(study, frozen._trial_id, reason)):
            fixed += 1
    return fixed


def _rows_by_optuna_id(ctx: AppContext, ids: list[int]) -> dict[int, TrialRecord]:
    with ctx.db.session() as session:
        rows = session.scalars(select(TrialRecord).where(TrialRecord.optuna_trial_id.in_(ids)))
        return {row.optuna_trial_id: row for row in rows if row.optuna_trial_id is not None}


def _repair_reason(
    row: TrialRecord | None, frozen: optuna.trial.FrozenTrial, cutoff: datetime
) -> str | None:
    if row is None:
        started = frozen.datetime_start
        if started is not None and started < cutoff:
            return "orphaned: sampled by a server that stopped before leasing it"
        return None
    if row.state == TrialState.FINISHED and row.final_state == TrialOutcome.FAIL:
        return row.fail_reason or "failed"
    return None

"""Handing out trials: study choice, then reserve / sample / lease (docs/architecture.md).

1. **Reserve** (one transaction, under the study lock ``lease_seq``): expire
   overdue leases of the study, then lease a queued re-run at once, or check
   the budget and concurrency and insert a ``creating`` row.
2. **Sample** (no transaction of ours): ``study.ask()`` (an enqueued WAITING trial
   first, as Optuna's) + define-by-run suggestions.
3. **Lease** (one transaction): fill the ``creating`` row and insert the lease.

A read-only pre-check first skips studies that clearly have no work, so that
idle long-polling workers do not take write locks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from hpo.protocol import LeaseResponse, NoWork, NoWorkCode, TrialOutcome, TrialSpec
from service import schedules
from service.core.context import AppContext
from service.core.db import utcnow
from service.core.errors import WorkerNotFound
from service.fleet import registry
from service.storage.models import StudyRecord, TrialRecord, WorkerRecord
from service.storage.optuna_store import CachedStudy
from service.storage.samplers import suggest_params
from service.trials.choice import candidates, study_counts
from service.trials.granting import (
    Sampled,
    grant_queued_without_commit,
    grant_sampled_without_commit,
)
from service.trials.pool import take_without_commit
from service.trials.reaping import (
    Expiry,
    Settlement,
    apply_expiry,
    expire_study_without_commit,
    settle,
)
from service.trials.rows import (
    add_creating_row_without_commit,
    blocker,
    cached_study,
    lock_study_without_commit,
    study_spec,
)
from service.trials.states import TrialState, move_trial

log = logging.getLogger("hpo.leases")

POLL_INTERVAL_S = 0.25
RETRY_SOON_S = 1.0  # concurrency full: a slot frees up soon
RETRY_LATER_S = 5.0  # paused, budget used, no study


@dataclass
class _Reserved:
    study: StudyRecord
    row_id: int | None = None  # a new ``creating`` row to sample for
    spec: TrialSpec | None = None  # a re-run, already leased
    expiry: Expiry = field(default_factory=Expiry)


# --------------------------------------------------------------------------- entry points


def lease(
    ctx: AppContext, worker_id: str, studies: list[str] | None = None, max_trials: int = 1
) -> LeaseResponse:
    """One attempt to lease up to ``max_trials`` trials for ``worker_id``; the answer says
    why when there is none."""
    return _try_studies(ctx, worker_id, studies, touch=True, limit=max_trials)


async def long_poll(
    ctx: AppContext,
    worker_id: str,
    studies: list[str] | None,
    wait_s: float,
    max_trials: int = 1,
) -> LeaseResponse:
    """Lease, re-checking every 0.25 s for up to ``wait_s`` seconds (bounded at 30 s).

    Database work runs in the threadpool; the wait itself holds no thread. The answer
    comes as soon as at least one trial is leased.
    """
    deadline = time.monotonic() + min(max(wait_s, 0.0), 30.0)
    answer = await run_in_threadpool(lease, ctx, worker_id, studies, max_trials)
    while answer.trial is None and time.monotonic() + POLL_INTERVAL_S <= deadline:
        await asyncio.sleep(POLL_INTERVAL_S)
        answer = await run_in_threadpool(
            functools.partial(_try_studies, ctx, worker_id, studies, limit=max_trials)
        )
    return answer


def _try_studies(
    ctx: AppContext,
    worker_id: str,
    studies: list[str] | None,
    *,
    touch: bool = False,
    limit: int = 1,
) -> LeaseResponse:
    """Try the candidate studies in order until ``limit`` trials are leased.

    A batch is ``limit`` ordinary leases: each trial is reserved under its study's
    lock, so budget, ``max_concurrent`` and pause/stop hold for every one of them,
    across server processes; each keeps its own lease.

    With ``touch`` the worker's ``last_seen_at`` is updated in the same transaction
    as the read-only pre-check (an unknown worker raises WorkerNotFound).
    """
    with ctx.db.session() as session:
        if touch:
            registry.touch_without_commit(session, worker_id, utcnow(), must_exist=True)
        worker = session.get(WorkerRecord, worker_id)
        if worker is None:
            raise WorkerNotFound(f"worker {worker_id!r} is not registered", "worker_id")
        ready, reasons = candidates(session, studies, registry.capabilities(worker))
    granted: list[TrialSpec] = []
    for cand in ready:
        schedules.prepare(ctx, cand.study)  # PBT: population, decided segments
        while len(granted) < limit:
            spec = _lease_from(ctx, cand.study.study_id, worker_id)
            if not isinstance(spec, TrialSpec):
                reasons.append(spec)
                break
            granted.append(spec)
        if len(granted) >= limit:
            break
    if granted:
        return LeaseResponse(trial=granted[0], trials=granted)
    return _no_work(reasons)


def _no_work(reasons: list[NoWork]) -> LeaseResponse:
    if not reasons:
        reasons = [NoWork(code=NoWorkCode.NO_STUDY, message="no running study")]
    soon = any(r.code.retry_soon for r in reasons)
    return LeaseResponse(
        trial=None,
        retry_after_s=RETRY_SOON_S if soon else RETRY_LATER_S,
        reason="; ".join(r.message for r in reasons),
        reasons=reasons,
    )


# --------------------------------------------------------------------------- three phases


def _lease_from(ctx: AppContext, study_id: int, worker_id: str) -> TrialSpec | NoWork:
    """Reserve / sample / lease for one study; the trial, or why there is none."""
    reserved = _reserve(ctx, study_id, worker_id)
    if isinstance(reserved, NoWork):
        return reserved
    apply_expiry(ctx, reserved.expiry)
    if reserved.spec is not None:
        ctx.metrics.leases_granted.inc()
        return reserved.spec
    assert reserved.row_id is not None
    return _sample_and_grant(ctx, reserved.study, reserved.row_id, worker_id)


def _reserve(ctx: AppContext, study_id: int, worker_id: str) -> _Reserved | NoWork:
    """Phase 1 under the study lock; why there is no work when the study has none."""
    now = utcnow()
    with ctx.db.session() as session:
        study = lock_study_without_commit(session, study_id)
        if study is None:
            return NoWork(code=NoWorkCode.DELETED, message=f"study {study_id} was deleted")
        expiry = expire_study_without_commit(ctx, session, study, now)
        reserved = _Reserved(study=study, expiry=expiry)
        reason = _reserve_locked(ctx, session, reserved, worker_id, now)
    if reason is not None:
        apply_expiry(ctx, expiry)
        return reason
    return reserved


def _reserve_locked(
    ctx: AppContext, session: Session, reserved: _Reserved, worker_id: str, now: datetime
) -> NoWork | None:
    """Under the lock: lease a queued re-run, or insert a ``creating`` row to sample for."""
    study = reserved.study
    total, active = study_counts(session, study.study_id)
    queued = session.scalars(
        select(TrialRecord)
        .where(TrialRecord.study_id == study.study_id, TrialRecord.state == TrialState.QUEUED)
        .order_by(TrialRecord.id)
        .limit(1)
    ).first()
    reason = blocker(study, total, active, int(queued is not None))
    if reason is None and queued is None:
        reason = schedules.reserve_blocker(session, study)  # PBT leases only its segments
    if reason is not None:
        return reason
    if queued is not None:
        reserved.spec = grant_queued_without_commit(ctx, session, study, queued, worker_id, now)
        if reserved.spec is None:
            return _busy(study, "another request took the re-run")
        return None
    pooled = take_without_commit(ctx, session, study, worker_id, now, active)
    if pooled is not None:  # a proposal drawn ahead (service.trials.pool)
        reserved.spec = pooled
        return None
    row = add_creating_row_without_commit(session, study.study_id, worker_id, now)
    reserved.row_id = row.id
    return None


def _busy(study: StudyRecord, why: str) -> NoWork:
    return NoWork(code=NoWorkCode.BUSY, study=study.name, message=f"study {study.name!r}: {why}")


def _sample_and_grant(
    ctx: AppContext, study: StudyRecord, row_id: int, worker_id: str
) -> TrialSpec | NoWork:
    """Phases 2 and 3 for a reserved ``creating`` row.

    The Optuna trial is created outside the sampler lock (one insert); only the
    sampler's work (and Optuna's writes of the sampled values) runs under it.
    """
    cached = cached_study(ctx, study)
    try:
        trial_id = _enqueued_or_new(cached)
    except Exception as exc:  # no Optuna trial exists: drop the slot
        log.exception("study %r: creating a trial failed", study.name)
        _drop_creating(ctx, row_id)
        return _sampling_failed(study, exc)
    sampled = _sample(ctx, study, row_id, trial_id)
    if not isinstance(sampled, Sampled):
        return sampled
    with ctx.db.session() as session:
        spec = grant_sampled_without_commit(ctx, session, study, sampled, worker_id, utcnow())
    if spec is None:  # the reaper removed our row (slower than orphan_grace_s)
        _fail_sampled(ctx, study, None, trial_id, sampled.number, "lease slot reaped")
        return _busy(study, "sampling took too long")
    ctx.metrics.leases_granted.inc()
    return spec


def _enqueued_or_new(cached: CachedStudy) -> int:
    """An enqueued WAITING trial first (``POST /studies/{study}/enqueue``: its fixed
    params are then what the sampling step suggests), else a new Optuna trial."""
    popped = cached.view.pop_waiting(cached.study._study_id) if cached.view else None
    return popped if popped is not None else cached.new_trial()


def _sample(ctx: AppContext, study: StudyRecord, row_id: int, trial_id: int) -> Sampled | NoWork:
    """Define-by-run suggestions over the spec on Optuna trial ``trial_id``."""
    cached, number = cached_study(ctx, study), -1
    try:
        with cached.sampling(trial_id) as trial:
            number = trial.number
            params = suggest_params(trial, study_spec(study))
    except Exception as exc:  # never leave a RUNNING trial without a row
        if number < 0:
            number = ctx.store.storage.get_trial(trial_id).number
        log.exception("study %r: sampling trial %d failed", study.name, number)
        reason = f"sampling failed: {type(exc).__name__}: {exc}"
        _fail_sampled(ctx, study, row_id, trial_id, number, reason)
        return _sampling_failed(study, exc)
    return Sampled(row_id, trial_id, number, params)


def _sampling_failed(study: StudyRecord, exc: Exception) -> NoWork:
    message = f"study {study.name!r}: sampling failed: {type(exc).__name__}: {exc}"
    return NoWork(code=NoWorkCode.SAMPLING_FAILED, study=study.name, message=message)


# --------------------------------------------------------------------------- failures


def _drop_creating(ctx: AppContext, row_id: int) -> None:
    with ctx.db.session() as session:
        session.execute(
            delete(TrialRecord).where(
                TrialRecord.id == row_id, TrialRecord.state == TrialState.CREATING
            )
        )


def _fail_sampled(
    ctx: AppContext,
    study: StudyRecord,
    row_id: int | None,
    optuna_id: int,
    number: int,
    reason: str,
) -> None:
    """Sampling failed after ask(): the trial is failed in Optuna, the slot recorded as
    a failed trial (so a study whose sampling always fails runs out of budget)."""
    now = utcnow()
    if row_id is not None:
        values = {
            "optuna_trial_id": optuna_id,
            "number": number,
            "final_state": TrialOutcome.FAIL,
            "fail_reason": reason,
            "finished_at": now,
        }
        with ctx.db.session() as session:
            creating = [TrialState.CREATING]
            move_trial(session, row_id, creating, TrialState.FINISHED, values, now, strict=False)
    settle(ctx, Settlement(study=study, optuna_trial_id=optuna_id, reason=reason))

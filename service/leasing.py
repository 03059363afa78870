"""Handing out trials: study choice, then reserve / sample / lease (docs/architecture.md).

1. **Reserve** (one transaction, under the study lock ``lease_seq``): expire
   overdue leases of the study, then lease a queued re-run at once, or check
   the budget and concurrency and insert a ``creating`` row.
2. **Sample** (no transaction of ours): ``study.ask()`` + define-by-run suggestions.
3. **Lease** (one transaction): fill the ``creating`` row and insert the lease.

A read-only pre-check first skips studies that clearly have no work, so that
idle long-polling workers do not take write locks.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service import workers_registry
from service.context import AppContext
from service.db import utcnow
from service.lease_choice import candidates, study_counts
from service.lease_rows import (
    cached_study,
    concurrency_reason,
    lock_study_without_commit,
    study_budget,
    study_spec,
)
from service.models import LeaseRecord, StudyRecord, TrialRecord
from service.reaping import (
    Expiry,
    Settlement,
    apply_expiry,
    expire_study_without_commit,
    settle,
)
from service.spec import suggest_params, to_settings, trial_seed
from workers.protocol import LeaseResponse, TrialSpec

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


def lease(ctx: AppContext, worker_id: str, studies: list[str] | None = None) -> LeaseResponse:
    """One attempt to lease a trial for ``worker_id``; the answer says why when there is none."""
    return _try_studies(ctx, worker_id, studies, touch=True)


async def long_poll(
    ctx: AppContext, worker_id: str, studies: list[str] | None, wait_s: float
) -> LeaseResponse:
    """Lease, re-checking every 0.25 s for up to ``wait_s`` seconds (bounded at 30 s).

    Database work runs in the threadpool; the wait itself holds no thread.
    """
    deadline = time.monotonic() + min(max(wait_s, 0.0), 30.0)
    answer = await run_in_threadpool(lease, ctx, worker_id, studies)
    while answer.trial is None and time.monotonic() + POLL_INTERVAL_S <= deadline:
        await asyncio.sleep(POLL_INTERVAL_S)
        answer = await run_in_threadpool(_try_studies, ctx, worker_id, studies)
    return answer


def _try_studies(
    ctx: AppContext, worker_id: str, studies: list[str] | None, *, touch: bool = False
) -> LeaseResponse:
    """Try the candidate studies in order; the first trial leased wins.

    With ``touch`` the worker's ``last_seen_at`` is updated in the same transaction
    as the read-only pre-check (an unknown worker raises WorkerNotFound).
    """
    with ctx.db.session() as session:
        if touch:
            workers_registry.touch_without_commit(session, worker_id, utcnow(), must_exist=True)
        ready, reasons = candidates(session, studies)
    for cand in ready:
        spec, reason = _lease_from(ctx, cand.study.study_id, worker_id)
        if spec is not None:
            return LeaseResponse(trial=spec)
        if reason:
            reasons.append(reason)
    return _no_work(reasons)


def _no_work(reasons: list[str]) -> LeaseResponse:
    soon = any("max_concurrent" in r or "sampling" in r for r in reasons)
    return LeaseResponse(
        trial=None,
        retry_after_s=RETRY_SOON_S if soon else RETRY_LATER_S,
        reason="; ".join(reasons) or "no running study",
    )


# --------------------------------------------------------------------------- three phases


def _lease_from(ctx: AppContext, study_id: int, worker_id: str) -> tuple[TrialSpec | None, str]:
    """Reserve / sample / lease for one study; (spec, "") or (None, reason)."""
    reserved = _reserve(ctx, study_id, worker_id)
    if isinstance(reserved, str):
        return None, reserved
    apply_expiry(ctx, reserved.expiry)
    if reserved.spec is not None:
        ctx.metrics.leases_granted.inc()
        return reserved.spec, ""
    assert reserved.row_id is not None
    return _sample_and_grant(ctx, reserved.study, reserved.row_id, worker_id)


def _reserve(ctx: AppContext, study_id: int, worker_id: str) -> _Reserved | str:
    """Phase 1 under the study lock; a reason string when the study has no work."""
    now = utcnow()
    with ctx.db.session() as session:
        study = lock_study_without_commit(session, study_id)
        if study is None:
            return f"study {study_id} was deleted"
        expiry = expire_study_without_commit(ctx, session, study, now)
        reserved = _Reserved(study=study, expiry=expiry)
        reason = _reserve_locked(ctx, session, reserved, worker_id, now)
    if reason:
        apply_expiry(ctx, expiry)
        return reason
    return reserved


def _reserve_locked(
    ctx: AppContext, session: Session, reserved: _Reserved, worker_id: str, now: datetime
) -> str:
    study = reserved.study
    if study.state != "running":
        return f"study {study.name!r} is {study.state}"
    budget = study_budget(study)
    total, active = study_counts(session, study.study_id)
    if budget.max_concurrent is not None and active >= budget.max_concurrent:
        return concurrency_reason(study.name, active, budget.max_concurrent)
    queued = session.scalars(
        select(TrialRecord)
        .where(TrialRecord.study_id == study.study_id, TrialRecord.state == "queued")
        .order_by(TrialRecord.id)
        .limit(1)
    ).first()
    if queued is not None:
        reserved.spec = _grant_without_commit(ctx, session, study, queued, worker_id, now)
        return "" if reserved.spec is not None else f"study {study.name!r}: re-run taken"
    if total >= budget.max_trials:
        return f"study {study.name!r}: budget used ({total}/{budget.max_trials} trials)"
    row = TrialRecord(
        study_id=study.study_id,
        state="creating",
        attempts=0,
        worker_id=worker_id,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    reserved.row_id = row.id
    return ""


def _sample_and_grant(
    ctx: AppContext, study: StudyRecord, row_id: int, worker_id: str
) -> tuple[TrialSpec | None, str]:
    """Phases 2 and 3 for a reserved ``creating`` row.

    The Optuna trial is created outside the sampler lock (one insert); only the
    sampler's work (and Optuna's writes of the sampled values) runs under it.
    """
    spec = study_spec(study)
    cached = cached_study(ctx, study)
    try:
        trial_id = cached.new_trial()
    except Exception as exc:  # noqa: BLE001 - no Optuna trial exists: drop the slot
        log.exception("study %r: creating a trial failed", study.name)
        _drop_creating(ctx, row_id)
        return None, f"study {study.name!r}: sampling failed ({type(exc).__name__}: {exc})"
    number = -1
    try:
        with cached.sampling(trial_id) as trial:
            number = trial.number
            params = suggest_params(trial, spec)
    except Exception as exc:  # noqa: BLE001 - never leave a RUNNING trial without a row
        if number < 0:
            number = ctx.store.storage.get_trial(trial_id).number
        log.exception("study %r: sampling trial %d failed", study.name, number)
        reason = f"sampling failed: {type(exc).__name__}: {exc}"
        _fail_sampled(ctx, study, row_id, trial_id, number, reason)
        return None, f"study {study.name!r}: {reason}"
    now = utcnow()
    with ctx.db.session() as session:
        spec_out = _grant_creating_without_commit(
            ctx, session, study, row_id, trial_id, number, params, worker_id, now
        )
    if spec_out is None:  # the reaper removed our row (slower than orphan_grace_s)
        _fail_sampled(ctx, study, None, trial_id, number, "lease slot reaped")
        return None, f"study {study.name!r}: sampling took too long"
    ctx.metrics.leases_granted.inc()
    return spec_out, ""


def _grant_creating_without_commit(
    ctx: AppContext,
    session: Session,
    study: StudyRecord,
    row_id: int,
    optuna_id: int,
    number: int,
    params: dict,
    worker_id: str,
    now: datetime,
) -> TrialSpec | None:
    """Our ``creating`` row -> ``leased`` in one compare-and-set, plus the lease row."""
    lease_id = str(uuid.uuid4())
    expires = now + timedelta(seconds=ctx.settings.lease_ttl_s)
    result = session.execute(
        update(TrialRecord)
        .where(TrialRecord.id == row_id, TrialRecord.state == "creating")
        .values(
            optuna_trial_id=optuna_id,
            number=number,
            params=params,
            state="leased",
            lease_id=lease_id,
            worker_id=worker_id,
            attempts=1,
            lease_expires_at=expires,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    lease = LeaseRecord(lease_id=lease_id, trial_row_id=row_id, attempt=1, expires_at=expires)
    _add_lease_without_commit(session, study, lease, optuna_id, worker_id, now)
    return _spec_of(ctx, study, optuna_id, number, params, lease_id, 1, expires)


def _grant_without_commit(
    ctx: AppContext,
    session: Session,
    study: StudyRecord,
    trial: TrialRecord,
    worker_id: str,
    now: datetime,
) -> TrialSpec | None:
    """Lease a ``queued`` trial row to ``worker_id`` (compare-and-set on the row)."""
    lease_id = str(uuid.uuid4())
    expires = now + timedelta(seconds=ctx.settings.lease_ttl_s)
    attempt = trial.attempts + 1
    taken = {"lease_id": lease_id, "worker_id": worker_id, "attempts": attempt}
    if not _cas_queued_to_leased(session, trial, {**taken, "lease_expires_at": expires}, now):
        return None
    lease = LeaseRecord(
        lease_id=lease_id, trial_row_id=trial.id, attempt=attempt, expires_at=expires
    )
    _add_lease_without_commit(session, study, lease, trial.optuna_trial_id, worker_id, now)
    return _trial_spec(ctx, study, trial, lease_id, attempt, expires)


def _add_lease_without_commit(
    session: Session,
    study: StudyRecord,
    lease: LeaseRecord,
    optuna_id: int | None,
    worker_id: str,
    now: datetime,
) -> None:
    """Store ``lease`` as the active lease of ``worker_id``, who now runs the trial."""
    lease.worker_id, lease.state, lease.created_at = worker_id, "active", now
    session.add(lease)
    workers_registry.set_current_without_commit(session, worker_id, optuna_id, study.name, now)


def _cas_queued_to_leased(
    session: Session, trial: TrialRecord, values: dict[str, object], now: datetime
) -> bool:
    """queued -> leased, only if nobody took the row since it was read."""
    result = session.execute(
        update(TrialRecord)
        .where(
            TrialRecord.id == trial.id,
            TrialRecord.state == "queued",
            _same_lease(trial.lease_id),
        )
        .values(state="leased", updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def _same_lease(lease_id: str | None):  # type: ignore[no-untyped-def]
    if lease_id is None:
        return TrialRecord.lease_id.is_(None)
    return TrialRecord.lease_id == lease_id


def _trial_spec(
    ctx: AppContext,
    study: StudyRecord,
    trial: TrialRecord,
    lease_id: str,
    attempt: int,
    expires: datetime,
) -> TrialSpec:
    assert trial.optuna_trial_id is not None and trial.number is not None
    return _spec_of(
        ctx,
        study,
        trial.optuna_trial_id,
        trial.number,
        trial.params or {},
        lease_id,
        attempt,
        expires,
    )


def _spec_of(
    ctx: AppContext,
    study: StudyRecord,
    trial_id: int,
    number: int,
    params: dict,
    lease_id: str,
    attempt: int,
    expires: datetime,
) -> TrialSpec:
    spec = study_spec(study)
    return TrialSpec(
        lease_id=lease_id,
        trial_id=trial_id,
        trial_number=number,
        study_name=study.name,
        attempt=attempt,
        params=to_settings(spec, params),
        fixed=dict(spec.fixed),
        objective=spec.objective_names[0],
        direction=spec.study_directions[0],
        seed=trial_seed(study.seed, number),
        lease_expires_at=expires,
        heartbeat_interval_s=ctx.settings.heartbeat_interval_s,
    )


# --------------------------------------------------------------------------- failures


def _drop_creating(ctx: AppContext, row_id: int) -> None:
    with ctx.db.session() as session:
        session.execute(
            delete(TrialRecord).where(TrialRecord.id == row_id, TrialRecord.state == "creating")
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
    with ctx.db.session() as session:
        if row_id is not None:
            session.execute(
                update(TrialRecord)
                .where(TrialRecord.id == row_id, TrialRecord.state == "creating")
                .values(
                    optuna_trial_id=optuna_id,
                    number=number,
                    state="finished",
                    final_state="fail",
                    fail_reason=reason,
                    updated_at=now,
                    finished_at=now,
                )
                .execution_options(synchronize_session=False)
            )
    settle(ctx, Settlement(study=study, optuna_trial_id=optuna_id, reason=reason))

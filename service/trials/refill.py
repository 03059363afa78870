"""The proposal pool, refill side: one background task per server process.

Every ``pool_refill_interval_s`` the task reads, without locks, which running
pooled studies have fewer than ``proposal_pool`` pending proposals, and tops each
up a few at a time (so that several server processes or replicas draw in
parallel, each on its own core):

1. **Reserve** (one transaction under the study lock, as a lease): count the
   study's trial rows and pending proposals, and insert ``drawing`` rows for what
   the pool depth and the budget allow (pending proposals count against the
   budget, so a study never draws past ``max_trials``).
2. **Draw** (no transaction of ours): a new Optuna trial per row, sampled over
   the spec by the study's own sampler, as the lease path does. The rows of one
   pass are one sampler batch: TPE fits its densities once for them
   (:mod:`service.storage.batch_tpe`); other samplers draw each on its own.
3. **Ready** (compare-and-set ``drawing`` -> ``ready``): the params are stored.

Then the sweep: stale proposals, those of stopped studies and ``drawing`` rows
older than ``orphan_grace_s`` (a server died mid-draw) are deleted and their
Optuna trials failed with the reason. Old lease-request answers are dropped too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import optuna
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from hpo.schemas import StudyState
from service.core.context import AppContext
from service.core.db import utcnow
from service.storage.models import StudyRecord
from service.storage.pool_models import ProposalRecord
from service.storage.samplers import suggest_params
from service.trials.choice import study_counts
from service.trials.pool import (
    PENDING,
    ProposalState,
    finished_count,
    mark_stale_without_commit,
    poolable,
)
from service.trials.rows import cached_study, lock_study_without_commit, study_budget, study_spec

log = logging.getLogger("hpo.pool")

#: proposals one refill pass reserves per study: one TPE fit for all of them (a
#: bigger batch fits less often; a smaller one lets replicas interleave)
CHUNK = 16
#: seconds between sweeps (stale, stopped, orphaned drawing rows)
SWEEP_EVERY_S = 1.0


@dataclass
class RefillState:
    """What one process's refill remembers between passes."""

    idle_until: dict[int, float] = field(default_factory=dict)  # study -> monotonic time
    last_sweep: float = 0.0


async def refill_loop(ctx: AppContext) -> None:
    """Top up the pools for ever (started in the app lifespan when the pool is on)."""
    state = RefillState()
    while True:
        try:
            drawn = await run_in_threadpool(refill_pass, ctx, state)
        except Exception:  # the refill must survive a database outage
            log.warning("proposal refill failed; will retry", exc_info=True)
            drawn = 0
        if not drawn:
            await asyncio.sleep(ctx.settings.pool_refill_interval_s)


def refill_pass(ctx: AppContext, state: RefillState) -> int:
    """One pass over the studies; how many proposals were drawn."""
    now = time.monotonic()
    if now - state.last_sweep >= SWEEP_EVERY_S:
        state.last_sweep = now
        sweep(ctx)
    drawn = 0
    for study_id in short_studies(ctx):
        if state.idle_until.get(study_id, 0.0) > now:
            continue
        made = refill_study(ctx, study_id)
        if made == 0:  # budget used or the study changed: look again later
            state.idle_until[study_id] = now + SWEEP_EVERY_S
        drawn += made
    return drawn


def short_studies(ctx: AppContext) -> list[int]:
    """Running pooled studies with fewer than ``proposal_pool`` pending proposals (a
    read-only hint; the counts are checked again under the study lock)."""
    depth = ctx.settings.proposal_pool
    pending = (
        select(ProposalRecord.study_id.label("sid"), func.count(ProposalRecord.id).label("n"))
        .where(ProposalRecord.state.in_(PENDING))
        .group_by(ProposalRecord.study_id)
        .subquery()
    )
    query = (
        select(StudyRecord, pending.c.n)
        .outerjoin(pending, pending.c.sid == StudyRecord.study_id)
        .where(StudyRecord.state == StudyState.RUNNING)
    )
    with ctx.db.session() as session:
        rows = session.execute(query).all()
    return [
        study.study_id for study, n in rows if int(n or 0) < depth and poolable(study_spec(study))
    ]


def refill_study(ctx: AppContext, study_id: int) -> int:
    """Reserve, draw and store up to :data:`CHUNK` proposals for one study."""
    reserved = reserve(ctx, study_id)
    if reserved is None:
        return 0
    study, ids = reserved
    with cached_study(ctx, study).batch(len(ids)):
        return sum(draw(ctx, study, pid) for pid in ids)


def reserve(ctx: AppContext, study_id: int) -> tuple[StudyRecord, list[int]] | None:
    """Under the study lock: ``drawing`` rows for what depth and budget allow."""
    now = utcnow()
    with ctx.db.session() as session:
        study = lock_study_without_commit(session, study_id)
        if study is None or study.state != StudyState.RUNNING:
            return None
        total, active = study_counts(session, study_id)
        mark_stale_without_commit(ctx, session, study_id, active)
        pending = int(
            session.scalar(
                select(func.count(ProposalRecord.id)).where(
                    ProposalRecord.study_id == study_id, ProposalRecord.state.in_(PENDING)
                )
            )
            or 0
        )
        room = min(
            ctx.settings.proposal_pool - pending,
            study_budget(study).max_trials - total - pending,
            CHUNK,
        )
        if room <= 0:
            return None
        tells = finished_count(session, study_id)
        rows = [
            ProposalRecord(
                study_id=study_id, state=ProposalState.DRAWING, drawn_tells=tells, created_at=now
            )
            for _ in range(room)
        ]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
        session.expunge(study)
    return study, ids


def draw(ctx: AppContext, study: StudyRecord, proposal_id: int) -> int:
    """Sample one reserved proposal; 1 when it became ready."""
    cached = cached_study(ctx, study)
    started = time.perf_counter()
    try:
        trial_id = cached.new_trial()
    except Exception:
        log.exception("study %r: creating a proposal's trial failed", study.name)
        _drop(ctx, proposal_id)
        return 0
    number = -1
    try:
        with cached.sampling(trial_id) as trial:
            number = trial.number
            params = suggest_params(trial, study_spec(study))
    except Exception as exc:
        log.exception("study %r: drawing a proposal failed", study.name)
        _drop(ctx, proposal_id)
        _fail_trial(ctx, study, trial_id, number, f"drawing a proposal failed: {exc}")
        return 0
    took = time.perf_counter() - started
    with ctx.db.session() as session:
        stored = session.execute(
            update(ProposalRecord)
            .where(ProposalRecord.id == proposal_id, ProposalRecord.state == ProposalState.DRAWING)
            .values(
                state=ProposalState.READY,
                optuna_trial_id=trial_id,
                number=number,
                params=params,
                sample_s=took,
                ready_at=utcnow(),
            )
        )
    if stored.rowcount != 1:  # type: ignore[attr-defined]  # swept meanwhile
        _fail_trial(ctx, study, trial_id, number, "proposal dropped while drawn")
        return 0
    ctx.metrics.proposal_sample.observe(took)
    return 1


# --------------------------------------------------------------------------- sweeping


def sweep(ctx: AppContext) -> int:
    """Discard stale proposals, those of studies no longer running and orphaned
    ``drawing`` rows: rows deleted, Optuna trials failed with the reason."""
    now = utcnow()
    discarded = 0
    for study_id in _studies_with_rows(ctx):
        with ctx.db.session() as session:
            study = session.get(StudyRecord, study_id)
            if study is None:
                continue
            if study.state == StudyState.RUNNING:
                mark_stale_without_commit(
                    ctx, session, study_id, study_counts(session, study_id)[1]
                )
            victims = _victims(session, study, now - timedelta(seconds=ctx.settings.orphan_grace_s))
            session.expunge(study)
        for proposal_id, trial_id, number, reason in victims:
            if _drop(ctx, proposal_id, ProposalState(reason[0])) and trial_id is not None:
                _fail_trial(ctx, study, trial_id, number, reason[1])
                discarded += 1
    return discarded


def _studies_with_rows(ctx: AppContext) -> list[int]:
    with ctx.db.session() as session:
        return list(session.scalars(select(ProposalRecord.study_id).distinct()))


def _victims(
    session: Session, study: StudyRecord, orphan_before: datetime
) -> list[tuple[int, int | None, int, tuple[str, str]]]:
    """(proposal id, Optuna trial id, number, (state it must still be in, reason))."""
    rows = session.scalars(
        select(ProposalRecord).where(ProposalRecord.study_id == study.study_id)
    ).all()
    out = []
    for row in rows:
        if row.state == ProposalState.STALE:
            why = f"stale proposal: drawn at {row.drawn_tells} tells, re-drawn"
        elif row.state == ProposalState.READY and study.state == StudyState.STOPPED:
            why = f"proposal discarded: study {study.name!r} stopped"
        elif row.state == ProposalState.DRAWING and row.created_at < orphan_before:
            why = "proposal discarded: its server stopped while drawing it"
        else:
            continue
        out.append((row.id, row.optuna_trial_id, row.number or -1, (row.state, why)))
    return out


def _drop(ctx: AppContext, proposal_id: int, state: ProposalState | None = None) -> bool:
    """Delete a proposal row (only while in ``state``, when given); True if deleted."""
    query = delete(ProposalRecord).where(ProposalRecord.id == proposal_id)
    if state is not None:
        query = query.where(ProposalRecord.state == state)
    with ctx.db.session() as session:
        return bool(session.execute(query).rowcount)  # type: ignore[attr-defined]


def _fail_trial(
    ctx: AppContext, study: StudyRecord, trial_id: int, number: int, reason: str
) -> None:
    """Fail a discarded proposal's Optuna trial (it was never leased)."""
    storage = ctx.store.storage
    try:
        if number < 0:
            number = storage.get_trial(trial_id).number
        storage.set_trial_system_attr(trial_id, "hpo:discarded_proposal", True)
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        cached_study(ctx, study).tell(number, optuna.trial.TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
    except Exception:
        log.warning(
            "study %r: failing discarded proposal %d failed", study.name, trial_id, exc_info=True
        )

"""The proposal pool, lease side: a lease takes a proposal drawn ahead of time.

A proposal is an Optuna trial sampled by :mod:`service.trials.refill` before any
worker asked for it: RUNNING in Optuna (so TPE's constant liar counts it as a
running trial, and the pool does not cluster), its params stored in
``hpo_proposals``. A lease takes the oldest fresh one under the study lock, in the
lease's own transaction: the proposal row is deleted with a compare-and-set
(``DELETE ... WHERE state = 'ready'``, rowcount checked; on PostgreSQL the row is
first selected ``FOR UPDATE SKIP LOCKED``), and the trial row and its lease are
inserted. Two server replicas therefore never hand out one proposal twice; a
restart loses none (they are rows). A proposal drawn more than
:func:`stale_limit` tells ago is marked ``stale`` instead (the refill fails its
Optuna trial and draws a new one): it is never handed out.

Not pooled, sampled on the request path as before: studies without a declared
space (define-by-run), grid and QMC samplers (their order is exact), studies with
a schedule (PBT, promotion ASHA), and any lease while the study has enqueued
(WAITING) trials, which go first. When the pool is empty, a lease samples on the
request path too (it never waits for the refill).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from optuna.storages._rdb import models as optuna_models
from optuna.trial import TrialState as OptunaState
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from hpo.protocol import TrialSpec
from hpo.schemas import StudyState
from hpo.spec import StudySpec
from service.core.context import AppContext
from service.storage.models import StudyRecord, TrialRecord
from service.storage.pool_models import ProposalRecord
from service.trials.granting import Sampled, grant_sampled_without_commit
from service.trials.rows import add_creating_row_without_commit, study_spec
from service.trials.states import TrialState

#: Samplers whose proposals must come in their exact order: never pooled.
UNPOOLED_SAMPLERS = frozenset({"grid", "qmc"})


class ProposalState(StrEnum):
    """State of a row of ``hpo_proposals`` (a taken proposal's row is deleted)."""

    DRAWING = "drawing"  # slot reserved by a refill; the sampler is drawing it
    READY = "ready"  # may be leased
    STALE = "stale"  # too many tells since drawn: to be failed in Optuna and re-drawn


#: Rows that count against the pool depth (and the budget).
PENDING = (ProposalState.DRAWING, ProposalState.READY)


def poolable(spec: StudySpec) -> bool:
    """Whether proposals of a study with ``spec`` may be drawn ahead (not with a
    schedule: PBT and promotion ASHA decide which trials run next)."""
    if getattr(spec, "schedule", None) is not None:
        return False
    return bool(spec.space) and spec.sampler.name not in UNPOOLED_SAMPLERS


def stale_limit(ctx: AppContext, active: int) -> int:
    """Tells after which a proposal is stale: the setting, or twice the larger of the
    pool depth and the study's running trials (a proposal taken in FIFO order waits
    about one pool depth of tells; W running trials finish W tells apart)."""
    configured = ctx.settings.proposal_stale_tells
    return configured if configured > 0 else 2 * max(ctx.settings.proposal_pool, active, 1)


def finished_count(session: Session, study_id: int) -> int:
    """Tells so far: the study's finished trial rows."""
    query = select(func.count(TrialRecord.id)).where(
        TrialRecord.study_id == study_id, TrialRecord.state == TrialState.FINISHED
    )
    return int(session.scalar(query) or 0)


def has_waiting(session: Session, study_id: int) -> bool:
    """Whether Optuna has an enqueued (WAITING) trial for the study (they go first)."""
    t = optuna_models.TrialModel
    query = select(t.trial_id).where(t.study_id == study_id, t.state == OptunaState.WAITING)
    return session.scalar(query.limit(1)) is not None


def take_without_commit(
    ctx: AppContext,
    session: Session,
    study: StudyRecord,
    worker_id: str,
    now: datetime,
    active: int,
) -> TrialSpec | None:
    """Under the study lock: lease the oldest fresh proposal; None when the pool has
    none (or the study is not pooled), and the caller samples on the request path."""
    if ctx.settings.proposal_pool <= 0 or not poolable(study_spec(study)):
        return None
    if has_waiting(session, study.study_id):
        return None
    mark_stale_without_commit(ctx, session, study.study_id, active)
    proposal = _oldest_ready(ctx, session, study.study_id)
    if proposal is None:
        return None
    taken = session.execute(
        delete(ProposalRecord).where(
            ProposalRecord.id == proposal.id, ProposalRecord.state == ProposalState.READY
        )
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return None  # another replica took it first
    assert proposal.optuna_trial_id is not None and proposal.number is not None
    row = add_creating_row_without_commit(session, study.study_id, worker_id, now)
    sampled = Sampled(row.id, proposal.optuna_trial_id, proposal.number, proposal.params or {})
    spec = grant_sampled_without_commit(ctx, session, study, sampled, worker_id, now)
    if spec is not None and proposal.ready_at is not None:
        ctx.metrics.proposal_age.observe(max(0.0, (now - proposal.ready_at).total_seconds()))
    return spec


def _oldest_ready(ctx: AppContext, session: Session, study_id: int) -> ProposalRecord | None:
    query = (
        select(ProposalRecord)
        .where(ProposalRecord.study_id == study_id, ProposalRecord.state == ProposalState.READY)
        .order_by(ProposalRecord.id)
        .limit(1)
    )
    if not ctx.db.is_sqlite:
        query = query.with_for_update(skip_locked=True)
    return session.scalars(query).first()


def mark_stale_without_commit(ctx: AppContext, session: Session, study_id: int, active: int) -> int:
    """Mark the study's ready proposals drawn more than :func:`stale_limit` tells ago
    as stale (the refill fails and re-draws them); how many."""
    tells = finished_count(session, study_id)
    oldest_fresh = tells - stale_limit(ctx, active)
    result = session.execute(
        update(ProposalRecord)
        .where(
            ProposalRecord.study_id == study_id,
            ProposalRecord.state == ProposalState.READY,
            ProposalRecord.drawn_tells < oldest_fresh,
        )
        .values(state=ProposalState.STALE)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def pooled_trial_ids(session: Session, ids: list[int]) -> set[int]:
    """Which of these Optuna trial ids are proposals of a pool (RUNNING without a trial
    row, on purpose: the reaper must not fail them as orphans)."""
    if not ids:
        return set()
    query = select(ProposalRecord.optuna_trial_id).where(ProposalRecord.optuna_trial_id.in_(ids))
    return {int(i) for i in session.scalars(query) if i is not None}


def pool_families(session: Session) -> list[Metric]:
    """``hpo_proposal_pool_depth{study,state}`` of running studies, for one scrape."""
    depth = GaugeMetricFamily(
        "hpo_proposal_pool_depth",
        "Proposals drawn ahead per study (ready: may be leased; drawing; stale)",
        labels=["study", "state"],
    )
    rows = session.execute(
        select(StudyRecord.name, ProposalRecord.state, func.count(ProposalRecord.id))
        .join(StudyRecord, StudyRecord.study_id == ProposalRecord.study_id)
        .where(StudyRecord.state == StudyState.RUNNING)
        .group_by(StudyRecord.name, ProposalRecord.state)
    )
    for name, state, count in rows:
        depth.add_metric([name, str(state)], int(count))
    return [depth]

"""Schedules on the service: PBT (:mod:`~service.schedules.pbt`) and promotion ASHA
(:mod:`~service.schedules.asha`), hooked into the trial state machine.

The hooks, each called from one place of :mod:`service.trials`:

* :func:`prepare` (lease, before the study lock): PBT's first population, decisions
  left undone by a crashed server, WAITING trials for decided segments;
* :func:`reserve_blocker` (lease, under the lock): a PBT study leases only its
  segments;
* :func:`granted_resume` / :func:`requeued_resume` (grant): where a segment starts;
* :func:`report_action` (report): ``pause`` at a PBT segment's end or an ASHA rung;
* :func:`hand_back_without_commit` (abandon): a paused hand-back keeps the trial
  paused (ASHA) or completes the segment (PBT);
* :func:`after_finish` (complete / fail): PBT's exploit/explore, ASHA's stop when
  the top rung is filled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import optuna
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hpo.protocol import Checkpoint, FinishResponse, NoWork, NoWorkCode, TrialOutcome, TrialSpec
from hpo.schedules import AshaSchedule, PbtSchedule, reference_epochs
from hpo.spec import StudySpec
from service.core.context import AppContext
from service.core.db import utcnow
from service.schedules import asha, pbt, pbt_repair
from service.storage.models import StudyRecord, TrialMetric, TrialRecord
from service.storage.schedule_models import SegmentRecord

log = logging.getLogger("hpo.schedules")


def _spec(study: StudyRecord) -> StudySpec | None:
    if not (study.spec or {}).get("schedule"):
        return None
    from service.trials.rows import study_spec

    return study_spec(study)


def prepare(ctx: AppContext, study: StudyRecord) -> None:
    """Before leasing from ``study`` (no transaction open): see the module docstring."""
    spec = _spec(study)
    if spec is None or not isinstance(spec.schedule, PbtSchedule):
        return
    from service.trials.rows import lock_study_without_commit

    with ctx.db.session() as session:
        if not session.scalar(
            select(func.count(SegmentRecord.id)).where(SegmentRecord.study_id == study.study_id)
        ):
            locked = lock_study_without_commit(session, study.study_id)
            if locked is not None:
                pbt.seed_population_without_commit(session, locked, spec.schedule, utcnow())
    _repair(ctx, study)
    pbt.materialize(ctx, study)


def _repair(ctx: AppContext, study: StudyRecord) -> None:
    """Segments whose trial finished without a decision, and segments left ``creating``
    (a server died in between: :mod:`~service.schedules.pbt_repair`)."""
    from service.trials.states import TrialState

    pbt_repair.repair_creating(ctx, study)

    with ctx.db.session() as session:
        rows = session.execute(
            select(SegmentRecord.optuna_trial_id, TrialRecord.final_state)
            .join(TrialRecord, TrialRecord.optuna_trial_id == SegmentRecord.optuna_trial_id)
            .where(
                SegmentRecord.study_id == study.study_id,
                SegmentRecord.state == pbt.LEASED,
                TrialRecord.state == TrialState.FINISHED,
            )
        ).all()
    for trial_id, final in rows:
        assert trial_id is not None
        _decide(ctx, study, trial_id, TrialOutcome(final or TrialOutcome.FAIL))


def reserve_blocker(session: Session, study: StudyRecord) -> NoWork | None:
    """Under the study lock: a PBT study hands out only decided segments (never a fresh
    trial), one lease per WAITING segment."""
    spec = _spec(study)
    if spec is None or not isinstance(spec.schedule, PbtSchedule):
        return None
    from service.trials.states import TrialState

    creating = session.scalar(
        select(func.count(TrialRecord.id)).where(
            TrialRecord.study_id == study.study_id, TrialRecord.state == TrialState.CREATING
        )
    )
    if pbt.ready_segments(session, study.study_id) > int(creating or 0):
        return None
    message = f"study {study.name!r}: every PBT member's next segment runs or waits for a peer"
    return NoWork(code=NoWorkCode.BUSY, study=study.name, message=message)


def granted_resume(session: Session, optuna_id: int, params: dict[str, Any]) -> Checkpoint | None:
    """A fresh lease of a segment: its start (the parent's checkpoint) or None."""
    row = pbt.segment_of(session, optuna_id)
    return None if row is None else pbt.granted_without_commit(session, row, params)


def requeued_resume(session: Session, optuna_id: int) -> Checkpoint | None:
    """A re-run of a segment that has no checkpoint of its own yet: its parent's."""
    row = pbt.segment_of(session, optuna_id)
    return None if row is None else pbt.inherited_checkpoint(session, row)


def with_pause(session: Session, study: StudyRecord, spec: TrialSpec) -> TrialSpec:
    """The leased attempt's ``pause_at``: its segment's end (PBT) or next rung (ASHA)."""
    schedule = _spec(study)
    if schedule is None:
        return spec
    at: int | None = None
    if isinstance(schedule.schedule, AshaSchedule):
        at = asha.next_rung_step(session, schedule.schedule, spec.trial_id)
    else:
        row = pbt.segment_of(session, spec.trial_id)
        if row is not None and row.end_step < _total_steps(schedule):
            at = row.end_step
    return spec.model_copy(update={"pause_at": at})


def kept_checkpoints(session: Session, study: StudyRecord) -> set[str]:
    """Artifact ids retention must keep: the parents' checkpoints of PBT segments to come."""
    if not (study.spec or {}).get("schedule"):
        return set()
    return pbt.live_resume_artifacts(session, study.study_id)


def report_action(
    ctx: AppContext, study: StudyRecord, trial: TrialRecord, step: int, value: float
) -> str | None:
    """After a report: why the trial pauses now (None: it goes on)."""
    spec = _spec(study)
    if spec is None or trial.optuna_trial_id is None:
        return None
    with ctx.db.session() as session:
        if isinstance(spec.schedule, AshaSchedule):
            rung = asha.rung_to_pause(session, spec.schedule, trial.optuna_trial_id, step)
            if rung is None:
                return None
            asha.record_rung_without_commit(session, study.study_id, trial, rung, step, value)
            return f"paused at ASHA rung {rung} (step {step}) until promoted"
        row = pbt.segment_of(session, trial.optuna_trial_id)
        if row is None or step < row.end_step or row.end_step >= _total_steps(spec):
            return None
        return f"PBT segment {row.segment} of member {row.member} ends at step {row.end_step}"


def _total_steps(spec: StudySpec) -> int:
    return reference_epochs(spec)


@dataclass
class HandBack:
    """What a schedule makes of a handed-back attempt."""

    paused: FinishResponse | None = None  # ASHA: the trial is paused (answer this)
    complete_value: float | None = None  # PBT: complete the segment with this value


def hand_back_without_commit(
    session: Session, study: StudyRecord, trial: TrialRecord, lease_id: str, worker_id: str
) -> HandBack | None:
    """A worker handed the attempt back (abandon): a schedule's pause, or None."""
    spec = _spec(study)
    if spec is None or trial.optuna_trial_id is None:
        return None
    if isinstance(spec.schedule, PbtSchedule):
        row = pbt.segment_of(session, trial.optuna_trial_id)
        if row is None or (trial.last_step or 0) < row.end_step:
            return None
        value = session.scalar(
            select(TrialMetric.value).where(
                TrialMetric.optuna_trial_id == trial.optuna_trial_id,
                TrialMetric.step == row.end_step,
            )
        )
        return None if value is None else HandBack(complete_value=float(value))
    assert isinstance(spec.schedule, AshaSchedule)
    if asha.paused_rung(session, trial) is None:
        return None
    return HandBack(paused=_pause_without_commit(session, study, spec, trial, lease_id, worker_id))


def _pause_without_commit(
    session: Session,
    study: StudyRecord,
    spec: StudySpec,
    trial: TrialRecord,
    lease_id: str,
    worker_id: str,
) -> FinishResponse:
    from service.fleet import registry
    from service.trials.rows import lock_study_without_commit
    from service.trials.states import LeaseState, TrialState, move_lease, move_trial

    assert trial.optuna_trial_id is not None and trial.number is not None
    locked = lock_study_without_commit(session, study.study_id) or study
    now = utcnow()
    answer = FinishResponse(
        trial_id=trial.optuna_trial_id, trial_number=trial.number, state=TrialOutcome.PAUSED
    )
    result = {"reason": "paused by the schedule", "answer": answer.model_dump(mode="json")}
    move_lease(
        session,
        lease_id,
        [LeaseState.ACTIVE, LeaseState.EXPIRED],
        LeaseState.ABANDONED,
        {"result": result, "ended_at": now},
    )
    unfinished = [TrialState.LEASED, TrialState.QUEUED]
    move_trial(
        session,
        trial.id,
        unfinished,
        TrialState.PAUSED,
        {"lease_expires_at": None},
        now,
        lease_id=lease_id,
    )
    registry.clear_current_without_commit(session, worker_id, trial.optuna_trial_id)
    session.flush()
    assert isinstance(spec.schedule, AshaSchedule)
    maximize = spec.study_directions[0] == "maximize"
    asha.promote_without_commit(session, locked, spec.schedule, maximize, now)
    return answer


def after_finish(
    ctx: AppContext, study: StudyRecord, optuna_id: int | None, state: TrialOutcome
) -> None:
    """A trial of a schedule study finished: decide what follows (never raises)."""
    spec = _spec(study)
    if spec is None or optuna_id is None:
        return
    try:
        if isinstance(spec.schedule, PbtSchedule):
            _decide(ctx, study, optuna_id, state)
            pbt.materialize(ctx, study)
        else:
            _asha_after(ctx, study, spec)
    except Exception:  # the lease path repairs a missed decision
        log.exception("study %r: schedule step after trial %d failed", study.name, optuna_id)


def end_paused(ctx: AppContext, study_id: int) -> int:
    """A stopped study's paused trials (promotion ASHA) end as pruned at their rung's
    value (rows first, then Optuna); how many there were."""
    from service.trials.rows import cached_study, lock_study_without_commit, tell_optuna

    with ctx.db.session() as session:
        study = lock_study_without_commit(session, study_id)
        if study is None:
            return 0
        ended = asha.stop_without_commit(session, study, utcnow())
    if ended:
        cached = cached_study(ctx, study)
        for trial_id in ended:
            number = ctx.store.storage.get_trial(trial_id).number
            tell_optuna(cached, number, optuna.trial.TrialState.PRUNED)
    return len(ended)


def _decide(ctx: AppContext, study: StudyRecord, optuna_id: int, state: TrialOutcome) -> None:
    from service.trials.rows import lock_study_without_commit, study_spec

    with ctx.db.session() as session:
        locked = lock_study_without_commit(session, study.study_id)
        row = pbt.segment_of(session, optuna_id)
        trial = session.scalars(
            select(TrialRecord).where(TrialRecord.optuna_trial_id == optuna_id)
        ).first()
        if locked is None or row is None or trial is None:
            return
        spec = study_spec(locked)
        reached = state == TrialOutcome.COMPLETE and (trial.last_step or 0) >= row.end_step
        pbt.decide_without_commit(
            session, locked, spec, row, reached, trial.value, _total_steps(spec)
        )


def _asha_after(ctx: AppContext, study: StudyRecord, spec: StudySpec) -> None:
    """Promote what a finished trial made promotable; stop when the top rung is full."""
    from service.trials.rows import cached_study, lock_study_without_commit, tell_optuna

    assert isinstance(spec.schedule, AshaSchedule)
    ended: list[int] = []
    with ctx.db.session() as session:
        locked = lock_study_without_commit(session, study.study_id)
        if locked is None:
            return
        now = utcnow()
        if asha.top_rung_filled(session, locked, spec.schedule):
            ended = asha.stop_without_commit(session, locked, now)
        else:
            maximize = spec.study_directions[0] == "maximize"
            asha.promote_without_commit(session, locked, spec.schedule, maximize, now)
    cached = cached_study(ctx, study)
    for trial_id in ended:  # their last intermediate value (the rung's) is their value
        number = ctx.store.storage.get_trial(trial_id).number
        tell_optuna(cached, number, optuna.trial.TrialState.PRUNED)
        log.info("ASHA: trial %d ends pruned at its rung", number)

"""Promotion ASHA on the service (Li et al. 2020, "A System for Massively Parallel
Hyperparameter Tuning"), with pauses instead of kills.

* A report at or past the trial's next rung records the trial's value there
  (``hpo_schedule_rungs``) and answers ``pause``: the worker checkpoints and
  hands the lease back; the hand-back makes the trial ``paused`` (not running,
  no concurrency slot, shown as paused).
* Promotion (under the study lock, in the same transaction as the hand-back or
  a completion): a paused trial among the top ``1/reduction_factor`` of its
  rung's results is promoted, ``paused -> queued``, and the next lease resumes it
  from its latest checkpoint (the rung's) up to the next rung. When no new trial
  can start and nothing runs, the best paused trial of the highest rung is
  promoted, so a study always ends.
* The study stops when the top rung is filled: ``max_trials //
  reduction_factor**(rungs - 1)`` trials completed at ``max_resource``; trials
  still paused then end as pruned (their last value is the rung's).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hpo.protocol import TrialOutcome
from hpo.schedules import AshaSchedule
from hpo.schemas import StudyState
from service.core.db import utcnow
from service.storage.models import StudyRecord, TrialRecord
from service.storage.schedule_models import RungRecord

log = logging.getLogger("hpo.schedules")


def next_rung_step(session: Session, asha: AshaSchedule, trial_id: int) -> int | None:
    """The step of the rung the trial heads for (None: the top one, trained to the end)."""
    promoted = session.scalar(
        select(func.count(RungRecord.id)).where(
            RungRecord.optuna_trial_id == trial_id, RungRecord.promoted.is_(True)
        )
    )
    steps, rung = asha.rung_steps, int(promoted or 0)
    return None if rung >= len(steps) - 1 else steps[rung]


def rung_to_pause(session: Session, asha: AshaSchedule, trial_id: int, step: int) -> int | None:
    """The rung a report at ``step`` reaches (None: go on): the rung the trial heads
    for, unless that is the top one (trained to the end)."""
    promoted = session.scalar(
        select(func.count(RungRecord.id)).where(
            RungRecord.optuna_trial_id == trial_id, RungRecord.promoted.is_(True)
        )
    )
    rung = int(promoted or 0)
    steps = asha.rung_steps
    if rung >= len(steps) - 1 or step < steps[rung]:
        return None
    return rung


def record_rung_without_commit(
    session: Session, study_id: int, trial: TrialRecord, rung: int, step: int, value: float
) -> None:
    """The trial's value at ``rung`` (a repeated report of it changes nothing)."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    assert trial.optuna_trial_id is not None and trial.number is not None
    row = {
        "study_id": study_id,
        "optuna_trial_id": trial.optuna_trial_id,
        "number": trial.number,
        "rung": rung,
        "step": step,
        "value": value,
        "promoted": False,
        "created_at": utcnow(),
    }
    session.execute(insert(RungRecord).values(**row).on_conflict_do_nothing())


def paused_rung(session: Session, trial: TrialRecord) -> RungRecord | None:
    """The rung a handed-back trial stopped at (None: it did not reach one)."""
    row = session.scalars(
        select(RungRecord)
        .where(RungRecord.optuna_trial_id == trial.optuna_trial_id, RungRecord.promoted.is_(False))
        .order_by(RungRecord.rung.desc())
        .limit(1)
    ).first()
    if row is None or (trial.last_step or 0) < row.step:
        return None
    return row


def promote_without_commit(
    session: Session, study: StudyRecord, asha: AshaSchedule, maximize: bool, now: datetime
) -> list[int]:
    """Promote every paused trial in the top 1/eta of its rung (``paused -> queued``);
    the Optuna trial ids promoted. Call under the study lock."""
    rows = session.scalars(select(RungRecord).where(RungRecord.study_id == study.study_id)).all()
    paused = _paused_ids(session, study.study_id)
    promoted: list[int] = []
    for rung in range(len(asha.rung_steps) - 1):
        at = sorted((r for r in rows if r.rung == rung), key=lambda r: r.value, reverse=maximize)
        for row in at[: len(at) // asha.reduction_factor]:
            if not row.promoted and row.optuna_trial_id in paused:
                promoted.append(_promote(session, row, now))
    if not promoted and paused and _nothing_else_to_run(session, study):
        waiting = [r for r in rows if not r.promoted and r.optuna_trial_id in paused]
        top = max(r.rung for r in waiting)
        best = sorted(
            (r for r in waiting if r.rung == top), key=lambda r: r.value, reverse=maximize
        )
        promoted.append(_promote(session, best[0], now))
    return promoted


def _promote(session: Session, row: RungRecord, now: datetime) -> int:
    from service.trials.states import TrialState

    row.promoted = True
    session.execute(
        update(TrialRecord)
        .where(
            TrialRecord.optuna_trial_id == row.optuna_trial_id,
            TrialRecord.state == TrialState.PAUSED,
        )
        .values(state=TrialState.QUEUED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    log.info("ASHA: trial %d promoted from rung %d (value %.4g)", row.number, row.rung, row.value)
    return row.optuna_trial_id


def _paused_ids(session: Session, study_id: int) -> set[int]:
    from service.trials.states import TrialState

    rows = session.scalars(
        select(TrialRecord.optuna_trial_id).where(
            TrialRecord.study_id == study_id, TrialRecord.state == TrialState.PAUSED
        )
    )
    return {r for r in rows if r is not None}


def _nothing_else_to_run(session: Session, study: StudyRecord) -> bool:
    """No new trial can start (budget used) and none runs or waits for a re-run."""
    from service.trials.rows import study_budget
    from service.trials.states import TrialState

    live = (TrialState.CREATING, TrialState.LEASED, TrialState.QUEUED)  # paused: not yet
    total = session.scalar(
        select(func.count(TrialRecord.id)).where(TrialRecord.study_id == study.study_id)
    )
    running = session.scalar(
        select(func.count(TrialRecord.id)).where(
            TrialRecord.study_id == study.study_id, TrialRecord.state.in_(live)
        )
    )
    return int(total or 0) >= study_budget(study).max_trials and not running


def top_rung_filled(session: Session, study: StudyRecord, asha: AshaSchedule) -> bool:
    """True when enough trials completed at ``max_resource`` (see the module docstring)."""
    from service.trials.rows import study_budget
    from service.trials.states import TrialState

    done = session.scalar(
        select(func.count(TrialRecord.id)).where(
            TrialRecord.study_id == study.study_id,
            TrialRecord.state == TrialState.FINISHED,
            TrialRecord.final_state == TrialOutcome.COMPLETE,
        )
    )
    return int(done or 0) >= asha.top_rung_size(study_budget(study).max_trials)


def stop_without_commit(session: Session, study: StudyRecord, now: datetime) -> list[int]:
    """Stop the study (its top rung is filled, or an admin stopped it); its paused trials
    end (rows finished as pruned here, Optuna told by the caller after the commit); their
    Optuna ids."""
    from service.trials.states import TrialState

    session.execute(
        update(StudyRecord)
        .where(StudyRecord.study_id == study.study_id)
        .values(state=StudyState.STOPPED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    paused = sorted(_paused_ids(session, study.study_id))
    session.execute(
        update(TrialRecord)
        .where(TrialRecord.study_id == study.study_id, TrialRecord.state == TrialState.PAUSED)
        .values(
            state=TrialState.FINISHED,
            final_state=TrialOutcome.PRUNED,
            finished_at=now,
            updated_at=now,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    log.info("ASHA: study %r stops; %d paused trials end pruned", study.name, len(paused))
    return paused

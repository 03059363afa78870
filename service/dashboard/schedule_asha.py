"""A promotion-ASHA study as the schedule page shows it (issue 24): rung occupancy and
promotions.

Read from the rung rows (``hpo_schedule_rungs``: a trial's value at each rung it
reached, and whether it was promoted from there), the service's trial rows (paused,
finished) and the leases (when a promoted trial was resumed). Per rung: how many
trials reached it, how many are paused there, how many were promoted from it and how
many ended there. The top rung (``max_resource``) has no rung rows: the trials that
reached it are the completed ones. Promotions are listed in the order the promoted
trials resumed (their next lease); promoted trials not resumed yet come last, as
``queued``. A promotion's ``next_value`` is the trial's value at the rung it was
promoted to (at the top rung: its completed value), None until it gets there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpo.protocol import TrialOutcome
from hpo.schedules import AshaSchedule
from service.dashboard.frame import StudyMeta
from service.dashboard.queries import grouped
from service.storage.models import LeaseRecord, TrialRecord
from service.storage.schedule_models import RungRecord
from service.trials.states import TrialState


def _trial_states(session: Session, study_id: int) -> dict[int, tuple[str, str | None]]:
    stmt = select(TrialRecord.optuna_trial_id, TrialRecord.state, TrialRecord.final_state).where(
        TrialRecord.study_id == study_id
    )
    return {tid: (state, final) for tid, state, final in session.execute(stmt) if tid is not None}


def _lease_starts(session: Session, study_id: int) -> dict[int, list[datetime]]:
    """When each trial's attempts began, oldest first."""
    stmt = (
        select(TrialRecord.optuna_trial_id, LeaseRecord.created_at)
        .join(TrialRecord, TrialRecord.id == LeaseRecord.trial_row_id)
        .where(TrialRecord.study_id == study_id, TrialRecord.optuna_trial_id.is_not(None))
        .order_by(LeaseRecord.created_at)
    )
    return grouped(session.execute(stmt))


def rungs(
    asha: AshaSchedule, rows: list[RungRecord], states: dict[int, tuple[str, str | None]]
) -> list[dict[str, Any]]:
    """Per rung: its step, trials reached, paused there, promoted from it, ended there."""
    steps = asha.rung_steps
    out = []
    for rung, step in enumerate(steps[:-1]):
        at = [r for r in rows if r.rung == rung]
        paused = sum(
            not r.promoted and states.get(r.optuna_trial_id, ("",))[0] == TrialState.PAUSED
            for r in at
        )
        promoted = sum(r.promoted for r in at)
        out.append(
            {
                "rung": rung,
                "step": step,
                "reached": len(at),
                "paused": paused,
                "promoted": promoted,
                "ended": len(at) - paused - promoted,
            }
        )
    done = sum(
        state == TrialState.FINISHED and final == TrialOutcome.COMPLETE
        for state, final in states.values()
    )
    top = {"rung": len(steps) - 1, "step": steps[-1], "reached": done}
    out.append(top | {"paused": 0, "promoted": 0, "ended": done})
    return out


def _completed_values(session: Session, study_id: int) -> dict[int, float]:
    """The value of each trial that completed (at the top rung)."""
    stmt = select(TrialRecord.optuna_trial_id, TrialRecord.value).where(
        TrialRecord.study_id == study_id,
        TrialRecord.state == TrialState.FINISHED,
        TrialRecord.final_state == TrialOutcome.COMPLETE,
    )
    return {t: v for t, v in session.execute(stmt) if t is not None and v is not None}


def promotions(
    rows: list[RungRecord], starts: dict[int, list[datetime]], done: dict[int, float]
) -> list[dict[str, Any]]:
    """Each promotion (trial, from rung, to rung, value there), in the order the promoted
    trials resumed; not resumed yet: last, ``resumed_at`` None."""
    nxt = {(r.optuna_trial_id, r.rung): r for r in rows}
    out: list[tuple[tuple[bool, datetime, int], dict[str, Any]]] = []
    for r in rows:
        if not r.promoted:
            continue
        resumed = next((t for t in starts.get(r.optuna_trial_id, []) if t > r.created_at), None)
        reached = nxt.get((r.optuna_trial_id, r.rung + 1))
        order = (resumed is None, resumed or r.created_at, r.number)
        out.append(
            (
                order,
                {
                    "number": r.number,
                    "from_rung": r.rung,
                    "to_rung": r.rung + 1,
                    "step": r.step,
                    "value": r.value,
                    "reached_at": r.created_at.isoformat(),
                    "resumed_at": resumed.isoformat() if resumed else None,
                    "next_value": reached.value if reached else done.get(r.optuna_trial_id),
                },
            )
        )
    return [p for _, p in sorted(out, key=lambda o: o[0])]


def view(session: Session, meta: StudyMeta) -> dict[str, Any]:
    """The ASHA part of the schedule page (the JSON API's answer)."""
    assert meta.spec is not None and isinstance(meta.spec.schedule, AshaSchedule)
    asha = meta.spec.schedule
    rows = list(
        session.scalars(
            select(RungRecord)
            .where(RungRecord.study_id == meta.study_id)
            .order_by(RungRecord.rung, RungRecord.id)
        )
    )
    states = _trial_states(session, meta.study_id)
    return {
        "study_id": meta.study_id,
        "name": meta.name,
        "objective": meta.objective_name,
        "direction": meta.direction,
        "schedule": asha.model_dump(mode="json"),
        "rung_steps": asha.rung_steps,
        "rungs": rungs(asha, rows, states),
        "promotions": promotions(
            rows,
            _lease_starts(session, meta.study_id),
            _completed_values(session, meta.study_id),
        ),
        "paused": sorted(
            r.number
            for r in rows
            if not r.promoted and states.get(r.optuna_trial_id, ("",))[0] == TrialState.PAUSED
        ),
    }

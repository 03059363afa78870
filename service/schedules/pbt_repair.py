"""PBT segments left ``creating`` by a server that died inside
:func:`~service.schedules.pbt.materialize` (which claims a row ``pending ->
creating``, creates its WAITING Optuna trial, then records it ``creating ->
waiting``). Left alone, such a row would never be leased: its member would be lost
and the study would never end.

* Died after the trial's creation: Optuna has a WAITING trial with the row's
  ``pbt_member`` and ``pbt_segment`` that no row holds; the row is linked to it
  (at once: a live creator that then records the same trial finds it done).
* Died before it: after ``grace`` with no trial, the row goes back to ``pending``
  and ``materialize`` creates its trial. Should the first server still be alive,
  its late trial finds the row taken and fails unused
  (:func:`~service.schedules.pbt.create_claimed`).

Each move is a compare-and-set on the row's state and claim time, so a claim
renewed meanwhile is never taken.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from optuna.trial import TrialState as OptunaState
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.core.context import AppContext
from service.core.db import utcnow
from service.schedules.pbt import CREATING, PENDING, WAITING
from service.storage.models import StudyRecord
from service.storage.schedule_models import SegmentRecord

log = logging.getLogger("hpo.schedules")

#: How long a claim without a trial is taken for a live server's (a trial's creation
#: is one insert: milliseconds).
GRACE = timedelta(seconds=60)


def repair_creating(ctx: AppContext, study: StudyRecord, grace: timedelta = GRACE) -> int:
    """Repair the study's segments left ``creating`` (see the module docstring); how
    many were repaired."""
    with ctx.db.session() as session:
        stuck = [
            (r.id, r.member, r.segment, r.updated_at)
            for r in session.scalars(
                select(SegmentRecord).where(
                    SegmentRecord.study_id == study.study_id, SegmentRecord.state == CREATING
                )
            )
        ]
    if not stuck:
        return 0
    made = created_segments(ctx, study.study_id)
    old = utcnow() - grace
    repaired = 0
    with ctx.db.session() as session:
        for row_id, member, segment, claimed_at in stuck:
            trial_id = made.get((member, segment))
            if trial_id is not None:
                moved = _move(session, row_id, claimed_at, WAITING, optuna_trial_id=trial_id)
            elif claimed_at < old:
                moved = _move(session, row_id, claimed_at, PENDING)
            else:
                continue
            if moved:
                repaired += 1
                to = "linked to its trial" if trial_id is not None else "pending again"
                log.warning(
                    "PBT %r: member %d segment %d was left creating: %s",
                    study.name,
                    member,
                    segment,
                    to,
                )
    return repaired


def _move(session: Session, row_id: int, claimed_at: datetime, to: str, **values: Any) -> bool:
    done = session.execute(
        update(SegmentRecord)
        .where(
            SegmentRecord.id == row_id,
            SegmentRecord.state == CREATING,
            SegmentRecord.updated_at == claimed_at,
        )
        .values(state=to, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def created_segments(ctx: AppContext, study_id: int) -> dict[tuple[int, int], int]:
    """(member, segment) -> the oldest WAITING Optuna trial made for that segment that
    no segment row holds."""
    with ctx.db.session() as session:
        linked = set(
            session.scalars(
                select(SegmentRecord.optuna_trial_id).where(
                    SegmentRecord.study_id == study_id,
                    SegmentRecord.optuna_trial_id.is_not(None),
                )
            )
        )
    out: dict[tuple[int, int], int] = {}
    waiting = ctx.store.storage.get_all_trials(
        study_id, deepcopy=False, states=(OptunaState.WAITING,)
    )
    for t in waiting:
        member, segment = t.user_attrs.get("pbt_member"), t.user_attrs.get("pbt_segment")
        if t._trial_id in linked or member is None or segment is None:
            continue
        out.setdefault((int(member), int(segment)), t._trial_id)
    return out

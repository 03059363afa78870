"""Which study to lease from: a read-only pre-check over every study's trial counts.

Studies that clearly have no work (paused, stopped, budget used, concurrency
full) are skipped with a reason, so idle long-polling workers take no write
locks; the authoritative checks run again under the study lock in
:mod:`service.trials.leasing`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from hpo.protocol import NoWork, NoWorkCode, Resources
from service.core.db import utcnow
from service.storage.models import StudyRecord, TrialRecord
from service.trials.rows import blocker as study_blocker
from service.trials.rows import study_spec
from service.trials.states import ACTIVE_TRIAL_STATES, TrialState


@dataclass
class Candidate:
    """A study with its trial counts, read without locks (a hint, re-checked under the lock)."""

    study: StudyRecord
    total: int
    active: int
    queued: int
    overdue: int

    def blocker(self) -> NoWork | None:
        """Why this study has no work (optimistic: overdue leases may free slots)."""
        queued = self.queued + self.overdue
        return study_blocker(self.study, self.total, self.active - self.overdue, queued)


def candidates(
    session: Session, names: list[str] | None, worker: tuple[list[str], Resources]
) -> tuple[list[Candidate], list[NoWork]]:
    """Studies that may have work, best first, and the reasons the others have none.

    Order: queued re-runs first, then the fewest running trials, then the least
    progressed (fewest trials so far), ties broken at random so that several
    studies share the workers.
    """
    now = utcnow()
    counts = (
        select(
            TrialRecord.study_id.label("sid"),
            func.count(TrialRecord.id).label("total"),
            _count_if(TrialRecord.state.in_(ACTIVE_TRIAL_STATES)).label("active"),
            _count_if(TrialRecord.state == TrialState.QUEUED).label("queued"),
            _count_if(
                (TrialRecord.state == TrialState.LEASED) & (TrialRecord.lease_expires_at < now)
            ).label("overdue"),
        )
        .group_by(TrialRecord.study_id)
        .subquery()
    )
    query = select(StudyRecord, counts.c.total, counts.c.active, counts.c.queued, counts.c.overdue)
    query = query.outerjoin(counts, counts.c.sid == StudyRecord.study_id)
    if names is not None:
        query = query.where(StudyRecord.name.in_(names))
    rows = session.execute(query).all()
    reasons = _unknown_names(names, {row[0].name for row in rows})
    found = [Candidate(row[0], *(int(v or 0) for v in row[1:])) for row in rows]
    if not found and not reasons:
        reasons.append(NoWork(code=NoWorkCode.NO_STUDY, message="no study"))
    ready = []
    for cand in found:
        blocker = mismatch(cand.study, *worker) or cand.blocker()
        if blocker:
            reasons.append(blocker)
        else:
            ready.append(cand)
    random.shuffle(ready)
    ready.sort(key=lambda c: (c.queued + c.overdue == 0, c.active, c.total))
    return ready, reasons


def mismatch(study: StudyRecord, workloads: list[str], resources: Resources) -> NoWork | None:
    """Why a worker with ``workloads`` and ``resources`` may not run ``study``'s trials."""
    spec, name = study_spec(study), study.name
    if spec.workload not in workloads:
        message = (
            f"study {name!r} runs workload {spec.workload!r}; this worker runs "
            f"{', '.join(workloads)}"
        )
        return NoWork(code=NoWorkCode.NOT_MATCHED, study=name, message=message)
    need = Resources.model_validate(spec.resources.model_dump())
    if not resources.covers(need):
        message = (
            f"study {name!r} needs {need.gpus} GPU(s) with {need.gpu_memory_gb:g} GiB each; "
            f"this worker has {resources.gpus} with {resources.gpu_memory_gb:g} GiB"
        )
        return NoWork(code=NoWorkCode.NOT_MATCHED, study=name, message=message)
    return None


def _count_if(condition):  # type: ignore[no-untyped-def]
    return func.sum(case((condition, 1), else_=0))


def _unknown_names(names: list[str] | None, found: set[str]) -> list[NoWork]:
    if names is None:
        return []
    return [
        NoWork(code=NoWorkCode.NO_STUDY, study=n, message=f"no study named {n!r}")
        for n in dict.fromkeys(names)
        if n not in found
    ]


def study_counts(session: Session, study_id: int) -> tuple[int, int]:
    """(every trial row, rows in creating/leased) of one study."""
    row = session.execute(
        select(
            func.count(TrialRecord.id),
            _count_if(TrialRecord.state.in_(ACTIVE_TRIAL_STATES)),
        ).where(TrialRecord.study_id == study_id)
    ).one()
    return int(row[0] or 0), int(row[1] or 0)

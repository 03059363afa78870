"""The schedule page's entry points: which schedule a study has, its data (PBT or
promotion ASHA) and a cheap version of it (the cache key of its answers)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from hpo.schedules import AshaSchedule, PbtSchedule
from service.core.errors import Conflict
from service.dashboard import queries, schedule_asha, schedule_pbt
from service.dashboard.frame import StudyMeta
from service.storage.schedule_models import RungRecord, SegmentRecord

KINDS = ("pbt", "asha")


def kind_of(meta: StudyMeta) -> str | None:
    """``pbt``, ``asha`` or None (no schedule, or a study created outside the service)."""
    schedule = meta.spec.schedule if meta.spec else None
    if isinstance(schedule, PbtSchedule):
        return "pbt"
    if isinstance(schedule, AshaSchedule):
        return "asha"
    return None


def require(meta: StudyMeta, kind: str | None = None) -> str:
    """The study's schedule kind; a 409 naming ``schedule`` when it has none (or not
    ``kind``)."""
    have = kind_of(meta)
    if have is None or (kind is not None and have != kind):
        wanted = f"{kind} schedule" if kind else "schedule (pbt or asha)"
        shown = f"its schedule is {have}" if have else "it has none"
        raise Conflict(f"schedule: study {meta.name!r} has no {wanted} ({shown})", "schedule")
    return have


def version(session: Session, study_id: int) -> str:
    """Changes when a segment or rung row changes, a trial row changes or a step is
    reported."""
    segs = session.execute(
        select(func.count(), func.max(SegmentRecord.updated_at)).where(
            SegmentRecord.study_id == study_id
        )
    ).one()
    rungs = session.execute(
        select(func.count(), func.sum(case((RungRecord.promoted.is_(True), 1), else_=0))).where(
            RungRecord.study_id == study_id
        )
    ).one()
    service = queries.service_version(session, study_id)
    metrics = queries.metrics_cursor(session, study_id)
    return f"{segs[0]}:{segs[1] or ''}|{rungs[0]}:{rungs[1] or 0}|{service}|{metrics}"


def data(session: Session, meta: StudyMeta, kind: str) -> dict[str, Any]:
    """The JSON answer for the study's schedule (``kind`` checked by :func:`require`)."""
    require(meta, kind)
    if kind == "pbt":
        return schedule_pbt.view(session, meta)
    return schedule_asha.view(session, meta)

"""A PBT study as the schedule page shows it (issue 24): segments with their metric per
step, the exploit jumps, and the best trial's lineage and hyperparameter schedule.

Read from the service's segment rows (``hpo_schedule_segments``: member, segment,
parent trial, start and end step, params, what changed), the reported metrics
(``hpo_trial_metrics``) and Optuna's trial numbers. A segment that copied another
member (exploit) starts from its parent's end point: that is a *jump*. The best trial
is the best completed segment (as Optuna's best trial); walking its parents back to
a first segment gives the params the winning weights were trained with, step by step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpo.schedules import PbtSchedule, reference_epochs
from service.dashboard.frame import StudyMeta
from service.storage.models import TrialMetric, TrialRecord
from service.storage.optuna_rows import trials
from service.storage.schedule_models import SegmentRecord


@dataclass
class Segment:
    """One segment of a member (an Optuna trial), as the page shows it."""

    member: int
    segment: int
    number: int | None  # Optuna's trial number (None: its trial is not created yet)
    parent_number: int | None
    parent_member: int | None
    start_step: int
    end_step: int
    state: str  # the segment's: pending, creating, waiting, leased, done
    value: float | None  # at end_step (None: not reached)
    params: dict[str, Any]
    changed: dict[str, Any]
    exploited_member: int | None  # the member it copied (exploit), None: its own line
    points: list[list[float]] = field(default_factory=list)  # [step, value] reported


def _segments(session: Session, study_id: int) -> tuple[list[SegmentRecord], dict[int, Any]]:
    rows = list(
        session.scalars(
            select(SegmentRecord)
            .where(SegmentRecord.study_id == study_id)
            .order_by(SegmentRecord.member, SegmentRecord.segment)
        )
    )
    numbers = {
        tid: number
        for tid, number in session.execute(
            select(trials.c.trial_id, trials.c.number).where(trials.c.study_id == study_id)
        )
    }
    return rows, numbers


def _points(session: Session, study_id: int) -> dict[int, list[list[float]]]:
    """The reported objective per step of every trial of the study (finite values)."""
    m = TrialMetric
    out: dict[int, list[list[float]]] = {}
    stmt = (
        select(m.optuna_trial_id, m.step, m.value)
        .where(m.study_id == study_id, m.value.is_not(None))
        .order_by(m.optuna_trial_id, m.step)
    )
    for tid, step, value in session.execute(stmt):
        if value is not None and math.isfinite(value):
            out.setdefault(tid, []).append([step, value])
    return out


def _trial_params(session: Session, study_id: int) -> dict[int, dict[str, Any]]:
    """The service's record of each trial's params (for segments leased before their
    row recorded them)."""
    stmt = select(TrialRecord.optuna_trial_id, TrialRecord.params).where(
        TrialRecord.study_id == study_id
    )
    return {tid: dict(p) for tid, p in session.execute(stmt) if tid is not None and p}


def segments(session: Session, study_id: int) -> list[Segment]:
    """Every segment of the study, by member and segment."""
    rows, numbers = _segments(session, study_id)
    member_of = {r.optuna_trial_id: r.member for r in rows if r.optuna_trial_id is not None}
    points = _points(session, study_id)
    recorded = _trial_params(session, study_id)
    out = []
    for r in rows:
        tid, parent = r.optuna_trial_id, r.parent_trial_id
        changed = dict(r.changed or {})
        donor = changed.get("exploited_member")
        params = dict(r.params or (recorded.get(tid, {}) if tid is not None else {}))
        out.append(
            Segment(
                member=r.member,
                segment=r.segment,
                number=numbers.get(tid) if tid is not None else None,
                parent_number=numbers.get(parent) if parent is not None else None,
                parent_member=member_of.get(parent) if parent is not None else None,
                start_step=r.start_step,
                end_step=r.end_step,
                state=r.state,
                value=r.value,
                params=params,
                changed={k: v for k, v in changed.items() if k != "exploited_member"},
                exploited_member=donor if isinstance(donor, int) else None,
                points=points.get(tid, []) if tid is not None else [],
            )
        )
    return out


def parent_end(parent: Segment, step: int) -> list[float] | None:
    """The point a child segment starts from: its parent's report at ``step`` (else the
    parent's value at its end)."""
    for s, v in parent.points:
        if s == step:
            return [s, v]
    if parent.value is not None and parent.end_step == step:
        return [step, parent.value]
    return None


def jumps(segs: list[Segment]) -> list[dict[str, Any]]:
    """The exploit jumps: from the copied parent's end point to the child's first point."""
    by_number = {s.number: s for s in segs if s.number is not None}
    out = []
    for s in segs:
        parent = by_number.get(s.parent_number) if s.parent_number is not None else None
        if parent is None or parent.member == s.member or not s.points:
            continue
        start = parent_end(parent, s.start_step)
        if start is None:
            continue
        out.append(
            {
                "member": s.member,
                "from_member": parent.member,
                "from_number": parent.number,
                "to_number": s.number,
                "step": s.start_step,
                "start": start,
                "end": s.points[0],
            }
        )
    return out


def best(segs: list[Segment], maximize: bool) -> Segment | None:
    """The best segment that ended with a value (later segments first on a tie)."""
    scored = [s for s in segs if s.value is not None and math.isfinite(s.value)]
    if not scored:
        return None
    sign = 1.0 if maximize else -1.0
    return max(scored, key=lambda s: (sign * (s.value or 0.0), s.end_step, -(s.number or 0)))


def lineage(segs: list[Segment], last: Segment) -> list[Segment]:
    """``last`` and its parents back to a first segment, the first segment first."""
    by_number = {s.number: s for s in segs if s.number is not None}
    chain, seen = [last], {last.number}
    while chain[-1].parent_number is not None and chain[-1].parent_number not in seen:
        parent = by_number.get(chain[-1].parent_number)
        if parent is None:
            break
        chain.append(parent)
        seen.add(parent.number)
    return chain[::-1]


def param_schedule(chain: list[Segment], names: list[str]) -> dict[str, list[list[Any]]]:
    """Each param over steps along a lineage: ``[step, value]`` where a segment starts,
    then the last segment's end (a step function)."""
    out: dict[str, list[list[Any]]] = {}
    for name in names:
        steps = [[s.start_step, s.params.get(name)] for s in chain]
        if chain:
            steps.append([chain[-1].end_step, chain[-1].params.get(name)])
        out[name] = steps
    return out


def param_names(meta: StudyMeta, segs: list[Segment]) -> list[str]:
    """The params to show: the mutated ones first, then the rest of the space."""
    schedule = meta.spec.schedule if meta.spec else None
    mutated = list(schedule.mutations) if isinstance(schedule, PbtSchedule) else []
    others = sorted({k for s in segs for k in s.params} - set(mutated))
    return mutated + others


def view(session: Session, meta: StudyMeta) -> dict[str, Any]:
    """The PBT page's data (the JSON API's answer)."""
    assert meta.spec is not None and isinstance(meta.spec.schedule, PbtSchedule)
    segs = segments(session, meta.study_id)
    names = param_names(meta, segs)
    top = best(segs, meta.maximize)
    shown: dict[str, Any] | None = None
    if top is not None:
        chain = lineage(segs, top)
        shown = {
            "number": top.number,
            "member": top.member,
            "value": top.value,
            "lineage": [s.number for s in chain],
            "schedule": param_schedule(chain, names),
        }
    return {
        "study_id": meta.study_id,
        "name": meta.name,
        "objective": meta.objective_name,
        "direction": meta.direction,
        "schedule": meta.spec.schedule.model_dump(mode="json"),
        "total_steps": reference_epochs(meta.spec),
        "members": sorted({s.member for s in segs}),
        "params": names,
        "log_params": [n for n, p in meta.spec.space.items() if getattr(p, "log", False)],
        "segments": [asdict(s) for s in segs],
        "jumps": jumps(segs),
        "best": shown,
    }

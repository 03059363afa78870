"""Read-only SQL that only the dashboard needs (the rest of its reads are the API's:
:mod:`service.studies.records`, :mod:`service.studies.trials`,
:mod:`service.storage.optuna_rows`, :mod:`service.fleet.registry`).

- every Optuna study, also those created outside the service (the API lists
  only the service's own);
- cheap fingerprints (versions) that say when a study's trials, metrics or
  service rows changed;
- learning-curve metric rows after a cursor, and per-worker aggregates.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from service.storage.models import StudyRecord, TrialMetric, TrialRecord
from service.storage.optuna_rows import studies, study_directions, trials
from service.trials.states import TrialState

FINISHED = ("COMPLETE", "PRUNED", "FAIL")


@dataclass(frozen=True)
class StudyRow:
    """One Optuna study, with the service's spec and run state when it has them."""

    study_id: int
    name: str
    directions: list[str]
    spec: dict[str, Any] | None
    run_state: str | None


def optuna_studies(session: Session, study_id: int | None = None) -> list[StudyRow]:
    """Every Optuna study (or one), with directions and ``hpo_studies`` spec/state."""
    s, d = studies.c, study_directions.c
    stmt = select(s.study_id, s.study_name, StudyRecord.spec, StudyRecord.state)
    stmt = stmt.outerjoin(StudyRecord, StudyRecord.study_id == s.study_id)
    dir_stmt = select(d.study_id, d.direction).order_by(d.study_id, d.objective)
    if study_id is not None:
        stmt = stmt.where(s.study_id == study_id)
        dir_stmt = dir_stmt.where(d.study_id == study_id)
    rows = session.execute(stmt.order_by(s.study_id)).all()
    directions: dict[int, list[str]] = {}
    for sid, direction in session.execute(dir_stmt):
        directions.setdefault(sid, []).append(str(getattr(direction, "name", direction)).lower())
    return [
        StudyRow(sid, name, directions.get(sid, ["maximize"]), spec, run_state)
        for sid, name, spec, run_state in rows
    ]


def trials_version(session: Session, study_id: int) -> tuple[Any, ...]:
    """A cheap fingerprint of a study's trials: changes whenever a trial is added or ends."""
    t = trials.c
    stmt = select(
        func.count(),
        func.max(t.trial_id),
        func.sum(case((t.state.in_(FINISHED), 1), else_=0)),
        func.sum(case((t.state == "RUNNING", 1), else_=0)),
        func.max(t.datetime_complete),
    ).where(t.study_id == study_id)
    count, max_id, finished, running, last = session.execute(stmt).one()
    return (count, max_id or 0, finished or 0, running or 0, str(last or ""))


def metrics_cursor(session: Session, study_id: int) -> int:
    """The id of the study's newest metric row (0 when none)."""
    stmt = select(func.max(TrialMetric.id)).where(TrialMetric.study_id == study_id)
    return int(session.scalar(stmt) or 0)


def service_version(session: Session, study_id: int) -> str:
    """Changes when the service's trial rows change (worker, diagnosis, retries)."""
    stmt = select(func.count(), func.max(TrialRecord.updated_at)).where(
        TrialRecord.study_id == study_id
    )
    count, last = session.execute(stmt).one()
    return f"{count}:{last or ''}"


def active_workers(session: Session) -> dict[int, list[str]]:
    """Workers holding a lease, by study id."""
    stmt = (
        select(TrialRecord.study_id, TrialRecord.worker_id)
        .where(TrialRecord.state == TrialState.LEASED, TrialRecord.worker_id.is_not(None))
        .distinct()
        .order_by(TrialRecord.worker_id)
    )
    return grouped(session.execute(stmt))


def epochs_done(session: Session, trial_ids: list[int]) -> dict[int, int]:
    """Highest reported step per trial."""
    if not trial_ids:
        return {}
    m = TrialMetric
    stmt = (
        select(m.optuna_trial_id, func.max(m.step))
        .where(m.optuna_trial_id.in_(trial_ids))
        .group_by(m.optuna_trial_id)
    )
    return {k: v for k, v in session.execute(stmt)}


def metric_rows(
    session: Session,
    study_id: int,
    *,
    trial_ids: list[int] | None = None,
    since: int = 0,
    limit: int | None = None,
) -> list[tuple[int, int, int, float | None, dict[str, Any]]]:
    """(id, optuna_trial_id, step, value, metrics) ordered by id (at most ``limit``)."""
    m = TrialMetric
    stmt = select(m.id, m.optuna_trial_id, m.step, m.value, m.metrics).where(
        m.study_id == study_id, m.id > since
    )
    if trial_ids is not None:
        stmt = stmt.where(m.optuna_trial_id.in_(trial_ids))
    rows = session.execute(stmt.order_by(m.id).limit(limit)).all()
    return [(i, t, s, v, _as_dict(x)) for i, t, s, v, x in rows]


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- workers


def recent_worker_metrics(
    session: Session, per_worker: int = 5
) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    """Metric rows of each worker's ``per_worker`` most recent trials: worker -> [(trial, m)]."""
    ranked = select(
        TrialRecord.optuna_trial_id.label("trial_id"),
        TrialRecord.worker_id.label("worker_id"),
        func.row_number()
        .over(partition_by=TrialRecord.worker_id, order_by=TrialRecord.id.desc())
        .label("rank"),
    ).where(TrialRecord.worker_id.is_not(None), TrialRecord.optuna_trial_id.is_not(None))
    recent = ranked.subquery()
    stmt = (
        select(recent.c.worker_id, TrialMetric.optuna_trial_id, TrialMetric.metrics)
        .join(TrialMetric, TrialMetric.optuna_trial_id == recent.c.trial_id)
        .where(recent.c.rank <= per_worker)
    )
    out: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for worker, trial_id, metrics in session.execute(stmt):
        out.setdefault(worker, []).append((trial_id, _as_dict(metrics)))
    return out


def trial_places(session: Session, trial_ids: list[int]) -> dict[int, tuple[int, int, str]]:
    """trial id -> (study id, trial number, study name)."""
    if not trial_ids:
        return {}
    t, s = trials.c, studies.c
    stmt = (
        select(t.trial_id, t.study_id, t.number, s.study_name)
        .join(studies, s.study_id == t.study_id)
        .where(t.trial_id.in_(trial_ids))
    )
    return {tid: (sid, num, name) for tid, sid, num, name in session.execute(stmt)}


def leases_by_worker(session: Session) -> dict[str, list[int]]:
    """worker id -> the Optuna trial ids it holds leases on, by trial id (a worker
    training a fused pack holds several, one otherwise)."""
    stmt = (
        select(TrialRecord.worker_id, TrialRecord.optuna_trial_id)
        .where(
            TrialRecord.state == TrialState.LEASED,
            TrialRecord.worker_id.is_not(None),
            TrialRecord.optuna_trial_id.is_not(None),
        )
        .order_by(TrialRecord.optuna_trial_id)
    )
    return grouped(session.execute(stmt))


def grouped(rows: Iterable[Sequence[Any]]) -> dict[Any, list[Any]]:
    """Query rows of ``(key, value)`` as key -> its values, in the rows' order."""
    out: dict[Any, list[Any]] = {}
    for key, value in rows:
        out.setdefault(key, []).append(value)
    return out

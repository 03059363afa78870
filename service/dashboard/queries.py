"""Read-only SQL for the dashboard: Optuna's tables and the service's ``hpo_`` tables.

Nothing here builds Optuna ``Study`` or ``FrozenTrial`` objects from the
database: trials come back in one joined query (trials + objective value +
params), counts and versions come from aggregates, so a page over a study of
10,000 trials costs a handful of indexed queries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from optuna.storages._rdb import models as om
from sqlalchemy import Row, and_, case, func, select
from sqlalchemy.orm import Session

from service.storage.models import LeaseRecord, StudyRecord, TrialMetric, TrialRecord, WorkerRecord

studies_t = om.StudyModel.__table__
directions_t = om.StudyDirectionModel.__table__
study_attrs_t = om.StudyUserAttributeModel.__table__
trials_t = om.TrialModel.__table__
values_t = om.TrialValueModel.__table__
params_t = om.TrialParamModel.__table__

FINISHED = ("COMPLETE", "PRUNED", "FAIL")


@dataclass(frozen=True)
class StudyRow:
    """One Optuna study, with the service's spec and run state when it has them."""

    study_id: int
    name: str
    directions: list[str]
    spec: dict[str, Any] | None
    run_state: str | None


def _state_name(state: Any) -> str:
    return str(getattr(state, "name", state))


def list_studies(session: Session, study_id: int | None = None) -> list[StudyRow]:
    """Every Optuna study (or one), with directions and ``hpo_studies`` spec/state."""
    stmt = select(studies_t.c.study_id, studies_t.c.study_name, StudyRecord.spec, StudyRecord.state)
    stmt = stmt.outerjoin(StudyRecord, StudyRecord.study_id == studies_t.c.study_id)
    if study_id is not None:
        stmt = stmt.where(studies_t.c.study_id == study_id)
    rows = session.execute(stmt.order_by(studies_t.c.study_id)).all()
    dir_stmt = select(directions_t.c.study_id, directions_t.c.direction).order_by(
        directions_t.c.study_id, directions_t.c.objective
    )
    if study_id is not None:
        dir_stmt = dir_stmt.where(directions_t.c.study_id == study_id)
    directions: dict[int, list[str]] = {}
    for sid, direction in session.execute(dir_stmt):
        directions.setdefault(sid, []).append(_state_name(direction).lower())
    return [
        StudyRow(sid, name, directions.get(sid, ["maximize"]), spec, run_state)
        for sid, name, spec, run_state in rows
    ]


def trials_version(session: Session, study_id: int) -> tuple[Any, ...]:
    """A cheap fingerprint of a study's trials: changes whenever a trial is added or ends."""
    t = trials_t.c
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


def trial_rows(session: Session, study_id: int, from_trial_id: int = 0) -> list[Row[Any]]:
    """Trials with id >= ``from_trial_id`` and their first objective value.

    Columns: trial_id, number, state, datetime_start, datetime_complete, value, value_type.
    """
    t, v = trials_t.c, values_t.c
    stmt = (
        select(
            t.trial_id,
            t.number,
            t.state,
            t.datetime_start,
            t.datetime_complete,
            v.value,
            v.value_type,
        )  # fmt: skip
        .select_from(trials_t)
        .outerjoin(values_t, and_(v.trial_id == t.trial_id, v.objective == 0))
        .where(t.study_id == study_id, t.trial_id >= from_trial_id)
        .order_by(t.trial_id)
    )
    return list(session.execute(stmt).all())


def param_rows(
    session: Session, study_id: int, from_trial_id: int = 0
) -> list[tuple[int, str, float, str]]:
    """(trial_id, param_name, param_value, distribution_json) of the same trials."""
    p = params_t.c
    stmt = (
        select(p.trial_id, p.param_name, p.param_value, p.distribution_json)
        .join(trials_t, trials_t.c.trial_id == p.trial_id)
        .where(trials_t.c.study_id == study_id, p.trial_id >= from_trial_id)
        .order_by(p.trial_id, p.param_id)
    )
    return [tuple(r) for r in session.execute(stmt)]  # type: ignore[misc]


def other_objectives(
    session: Session, study_id: int, from_trial_id: int = 0
) -> list[tuple[int, int, float | None, Any]]:
    """Objective values beyond the first (multi-objective studies only)."""
    v = values_t.c
    stmt = (
        select(v.trial_id, v.objective, v.value, v.value_type)
        .join(trials_t, trials_t.c.trial_id == v.trial_id)
        .where(trials_t.c.study_id == study_id, v.objective > 0, v.trial_id >= from_trial_id)
        .order_by(v.trial_id, v.objective)
    )
    return [tuple(r) for r in session.execute(stmt)]  # type: ignore[misc]


def state_counts(session: Session, study_id: int | None = None) -> dict[int, dict[str, int]]:
    """Trials per Optuna state for every study (or one), in one GROUP BY."""
    t = trials_t.c
    stmt = select(t.study_id, t.state, func.count()).group_by(t.study_id, t.state)
    if study_id is not None:
        stmt = stmt.where(t.study_id == study_id)
    out: dict[int, dict[str, int]] = {}
    for sid, state, n in session.execute(stmt):
        out.setdefault(sid, {})[_state_name(state)] = n
    return out


def best_trial_ids(session: Session, directions: dict[int, str]) -> dict[int, int]:
    """For each study, the id of its best COMPLETE trial (objective 0)."""
    t, v = trials_t.c, values_t.c
    out: dict[int, int] = {}
    for sid, direction in directions.items():
        order = v.value.desc() if direction == "maximize" else v.value.asc()
        stmt = (
            select(t.trial_id)
            .join(values_t, and_(v.trial_id == t.trial_id, v.objective == 0))
            .where(t.study_id == sid, t.state == "COMPLETE", v.value.is_not(None))
            .order_by(order, t.trial_id)
            .limit(1)
        )
        best = session.scalar(stmt)
        if best is not None:
            out[sid] = best
    return out


def params_of(session: Session, trial_ids: list[int]) -> list[Row[Any]]:
    """(trial_id, param_name, param_value, distribution_json) for a few trials."""
    p = params_t.c
    stmt = select(p.trial_id, p.param_name, p.param_value, p.distribution_json)
    return list(session.execute(stmt.where(p.trial_id.in_(trial_ids)).order_by(p.param_id)))


def values_of(session: Session, trial_ids: list[int]) -> dict[int, float | None]:
    v = values_t.c
    stmt = select(v.trial_id, v.value).where(v.trial_id.in_(trial_ids), v.objective == 0)
    return {k: v for k, v in session.execute(stmt)}


def active_workers(session: Session) -> dict[int, list[str]]:
    """Workers holding a lease, by study id."""
    stmt = (
        select(TrialRecord.study_id, TrialRecord.worker_id)
        .where(TrialRecord.state == "leased", TrialRecord.worker_id.is_not(None))
        .distinct()
        .order_by(TrialRecord.worker_id)
    )
    out: dict[int, list[str]] = {}
    for sid, worker in session.execute(stmt):
        out.setdefault(sid, []).append(worker)
    return out


# --------------------------------------------------------------------------- trials


def service_trials(session: Session, trial_ids: list[int]) -> dict[int, TrialRecord]:
    """The service's rows (worker, attempts, diagnosis) of some Optuna trials."""
    if not trial_ids:
        return {}
    stmt = select(TrialRecord).where(TrialRecord.optuna_trial_id.in_(trial_ids))
    return {r.optuna_trial_id: r for r in session.scalars(stmt) if r.optuna_trial_id is not None}


def trial_leases(session: Session, row_id: int) -> list[LeaseRecord]:
    stmt = select(LeaseRecord).where(LeaseRecord.trial_row_id == row_id)
    return list(session.scalars(stmt.order_by(LeaseRecord.attempt)))


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


def trial_by_number(session: Session, study_id: int, number: int) -> Row[Any] | None:
    t = trials_t.c
    stmt = select(t.trial_id, t.number, t.state, t.datetime_start, t.datetime_complete).where(
        t.study_id == study_id, t.number == number
    )
    return session.execute(stmt).first()


# --------------------------------------------------------------------------- workers


def workers(session: Session) -> list[WorkerRecord]:
    return list(session.scalars(select(WorkerRecord).order_by(WorkerRecord.worker_id)))


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


def trial_numbers(session: Session, trial_ids: list[int]) -> dict[int, tuple[int, int]]:
    """trial id -> (study id, number)."""
    if not trial_ids:
        return {}
    t = trials_t.c
    stmt = select(t.trial_id, t.study_id, t.number).where(t.trial_id.in_(trial_ids))
    return {tid: (sid, num) for tid, sid, num in session.execute(stmt)}


def leased_trials(session: Session) -> dict[str, int]:
    """worker id -> the Optuna trial id it holds a lease on."""
    stmt = select(TrialRecord.worker_id, TrialRecord.optuna_trial_id).where(
        TrialRecord.state == "leased", TrialRecord.worker_id.is_not(None)
    )
    return {w: t for w, t in session.execute(stmt) if t is not None}

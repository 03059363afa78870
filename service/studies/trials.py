"""Trials of a study as the API and dashboard show them.

Each trial is Optuna's row (number, state, values, params, datetimes) LEFT
JOINed with the service's ``hpo_trials`` row (attempts, worker, failure
reason, diagnosis). Trials created outside the service (a plain Optuna client
on the same database) have no such row and show 0 or 1 attempts. A page costs
a fixed number of queries, whatever the number of trials in the study.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.trial import TrialState as OptunaState
from sqlalchemy import Select, and_, asc, case, desc, func, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from hpo.schemas import (
    IntermediateValue,
    LeaseInfo,
    ShownState,
    StepMetrics,
    TrialDetail,
    TrialItem,
    TrialOrder,
    TrialPage,
)
from service.core.errors import TrialNotFound
from service.storage.models import LeaseRecord, StudyRecord, TrialMetric, TrialRecord
from service.storage.optuna_rows import (
    ValueType,
    as_utc,
    intermediate_values,
    param_distributions,
    params_by_trial,
    trial_values,
    trials,
    user_attrs_by_trial,
    values_by_trial,
)
from service.studies.records import check_page, get_study_record, shown_state
from service.trials.states import TrialState

#: User attributes that stand in for hpo_trials columns on trials run outside the service.
REASON_KEYS = ("fail_reason", "diagnosis")


def base_query(study_id: int) -> Select[Any]:
    """Optuna's trials of a study joined with their hpo_trials rows (when any)."""
    return (
        select(
            trials.c.trial_id,
            trials.c.number,
            trials.c.state,
            trials.c.datetime_start,
            trials.c.datetime_complete,
            TrialRecord.state.label("hpo_state"),
            TrialRecord.attempts,
            TrialRecord.worker_id,
            TrialRecord.fail_reason,
            TrialRecord.diagnosis,
            TrialRecord.preemptions,
        )
        .outerjoin(TrialRecord, TrialRecord.optuna_trial_id == trials.c.trial_id)
        .where(trials.c.study_id == study_id)
    )


def filter_state(stmt: Select[Any], state: str | None) -> Select[Any]:
    """Keep trials shown in ``state`` (``queued``, ``paused`` and ``running`` split Optuna's
    RUNNING)."""
    if state is None:
        return stmt
    running = trials.c.state == OptunaState.RUNNING
    queued = TrialRecord.state == TrialState.QUEUED
    paused = TrialRecord.state == TrialState.PAUSED  # promotion ASHA
    if state == ShownState.QUEUED:
        return stmt.where(running, queued)
    if state == ShownState.PAUSED:
        return stmt.where(running, paused)
    if state == ShownState.RUNNING:
        return stmt.where(running, or_(TrialRecord.state.is_(None), ~(queued | paused)))
    return stmt.where(trials.c.state == OptunaState[state.upper()])


def order_trials(stmt: Select[Any], order: TrialOrder) -> Select[Any]:
    """Sort by number or by the (first) objective value; trials without a value go last."""
    by = desc if order.startswith("-") else asc
    if order.lstrip("-") == "number":
        return stmt.order_by(by(trials.c.number))
    tv = trial_values.c
    stmt = stmt.outerjoin(trial_values, and_(tv.trial_id == trials.c.trial_id, tv.objective == 0))
    missing = case((tv.trial_id.is_(None), 1), else_=0)
    rank = case(
        (tv.value_type == ValueType.INF_NEG, -1), (tv.value_type == ValueType.INF_POS, 1), else_=0
    )
    return stmt.order_by(missing, by(rank), by(tv.value), trials.c.number)


def list_trials(
    session: Session,
    ref: str,
    *,
    state: str | None = None,
    limit: int = 50,
    offset: int = 0,
    order: TrialOrder = "number",
) -> TrialPage:
    """One page of a study's trials, optionally of one state."""
    check_page(limit, offset)
    record = get_study_record(session, ref)
    filtered = filter_state(base_query(record.study_id), state)
    total = session.scalar(select(func.count()).select_from(filtered.subquery())) or 0
    rows = session.execute(order_trials(filtered, order).limit(limit).offset(offset)).all()
    return TrialPage(items=trial_items(session, rows), total=total, limit=limit, offset=offset)


def trial_items(session: Session, rows: Sequence[Row[Any]]) -> list[TrialItem]:
    """Build items for rows of :func:`base_query` (three batched queries)."""
    ids = [row.trial_id for row in rows]
    values = values_by_trial(session, ids)
    params = params_by_trial(session, ids)
    reasons = user_attrs_by_trial(session, ids, REASON_KEYS)
    return [
        make_item(row, values.get(row.trial_id, []), params.get(row.trial_id, {}), reasons)
        for row in rows
    ]


def items_by_id(session: Session, study_id: int, trial_ids: Sequence[int]) -> dict[int, TrialItem]:
    """Some trials of a study as items, by trial id (the dashboard's table page)."""
    if not trial_ids:
        return {}
    rows = session.execute(base_query(study_id).where(trials.c.trial_id.in_(trial_ids))).all()
    return {item.trial_id: item for item in trial_items(session, rows)}


def make_item(
    row: Row[Any],
    values: list[float | None],
    params: dict[str, Any],
    reasons: dict[int, dict[str, Any]],
) -> TrialItem:
    """One trial item from its joined row, values, params and reason attributes."""
    start, complete = as_utc(row.datetime_start), as_utc(row.datetime_complete)
    attrs = reasons.get(row.trial_id, {})
    if row.hpo_state is not None:
        attempts = row.attempts
    else:
        attempts = 0 if row.state == OptunaState.WAITING else 1
    return TrialItem(
        number=row.number,
        trial_id=row.trial_id,
        state=shown_state(row.state, row.hpo_state),  # type: ignore[arg-type]
        value=values[0] if len(values) == 1 else None,
        values=values or None,
        params=params,
        attempts=attempts,
        preemptions=row.preemptions or 0,
        worker_id=row.worker_id,
        datetime_start=start,
        datetime_complete=complete,
        duration_s=(complete - start).total_seconds() if start and complete else None,
        fail_reason=row.fail_reason or _text(attrs.get("fail_reason")),
        diagnosis=row.diagnosis or _text(attrs.get("diagnosis")),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def get_trial(session: Session, ref: str, number: int) -> TrialDetail:
    """One trial by number within its study, with curve, metrics, attributes, leases."""
    record = get_study_record(session, ref)
    return trial_detail(session, record, number)


def trial_detail(session: Session, record: StudyRecord, number: int) -> TrialDetail:
    """One trial of a service study by number (TrialNotFound when it has none)."""
    return study_trial_detail(session, record.study_id, number, record.name)


def study_trial_detail(session: Session, study_id: int, number: int, name: str) -> TrialDetail:
    """One trial by number of any Optuna study, also one created outside the service
    (the dashboard shows those too); ``name`` is only for the error message."""
    row = session.execute(base_query(study_id).where(trials.c.number == number)).first()
    if row is None:
        raise TrialNotFound(f"trial {number} of study {name!r} not found", "number")
    item = trial_items(session, [row])[0]
    trial_id = row.trial_id
    return TrialDetail(
        **item.model_dump(),
        intermediate_values=[
            IntermediateValue(step=step, value=value)
            for step, value in intermediate_values(session, trial_id)
        ],
        metrics=step_metrics(session, trial_id),
        user_attrs=user_attrs_by_trial(session, [trial_id]).get(trial_id, {}),
        distributions=param_distributions(session, trial_id),
        leases=lease_history(session, trial_id),
        **_diagnostics(session, trial_id),
    )


def _diagnostics(session: Session, trial_id: int) -> dict[str, Any]:
    """The findings and telemetry stored with the trial's row (none for outside trials)."""
    row = session.execute(
        select(TrialRecord.findings, TrialRecord.telemetry).where(
            TrialRecord.optuna_trial_id == trial_id
        )
    ).first()
    if row is None:
        return {}
    return {"findings": list(row.findings or []), "telemetry": row.telemetry}


def step_metrics(session: Session, trial_id: int) -> list[StepMetrics]:
    """Per-step metrics workers reported for the trial (hpo_trial_metrics)."""
    rows = session.scalars(
        select(TrialMetric)
        .where(TrialMetric.optuna_trial_id == trial_id)
        .order_by(TrialMetric.step, TrialMetric.attempt)
    )
    return [
        StepMetrics(
            step=m.step,
            attempt=m.attempt,
            value=m.value,
            metrics=dict(m.metrics or {}),
            created_at=m.created_at,
        )
        for m in rows
    ]


def lease_history(session: Session, trial_id: int) -> list[LeaseInfo]:
    """Every attempt at the trial, oldest first."""
    rows = session.scalars(
        select(LeaseRecord)
        .join(TrialRecord, TrialRecord.id == LeaseRecord.trial_row_id)
        .where(TrialRecord.optuna_trial_id == trial_id)
        .order_by(LeaseRecord.attempt, LeaseRecord.created_at)
    )
    return [LeaseInfo.model_validate(lease, from_attributes=True) for lease in rows]

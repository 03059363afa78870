"""Study domain: create, look up, list, summarize, pause/resume/stop and delete.

A study is a genuine Optuna study (created through ``ctx.store``) plus one
``hpo_studies`` row holding its validated spec, seed and run state. The run
state is a small state machine: ``running <-> paused``; any state ->
``stopped``, which is final. Summaries are computed with SQL aggregates over
Optuna's ``trials`` table joined with ``hpo_trials``, never by loading trials.

Optuna writes through its own connection, so no transaction of ours is open
while Optuna writes (SQLite has one writer at a time).
"""

from __future__ import annotations

import contextlib
import secrets

import numpy as np
import optuna
from optuna.trial import TrialState as OptunaState
from sqlalchemy import and_, asc, case, delete, desc, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import hpo
from hpo.schemas import (
    BestTrial,
    ParetoFront,
    ShownState,
    StudyItem,
    StudyPage,
    StudyState,
    StudySummary,
    TrialCounts,
)
from hpo.spec import StudySpec
from service.core.context import AppContext
from service.core.db import utcnow
from service.core.errors import Conflict, InvalidRequest, InvalidSpec, StudyExists, StudyNotFound
from service.storage.models import LeaseRecord, StudyRecord, TrialMetric, TrialRecord
from service.storage.optuna_rows import (
    ValueType,
    decode_value,
    params_by_trial,
    trial_values,
    trials,
)
from service.studies import status
from service.studies.specs import check_with_optuna, stored_spec
from service.trials.states import STUDY_TRANSITIONS, TrialState

MAX_PAGE = 500
_MAX_ID = 2**31 - 1


# --------------------------------------------------------------------------- create


def create_study(ctx: AppContext, spec: StudySpec) -> StudyRecord:
    """Create the Optuna study and its ``hpo_studies`` row, or neither.

    Raises StudyExists (409) when the name is taken, InvalidSpec (422) for an
    all-digit name (the API reads those as study ids) or for sampler/pruner
    options Optuna would refuse.
    """
    if spec.name.isdigit():
        raise InvalidSpec("name: must not be only digits (the API reads those as ids)", "name")
    check_with_optuna(spec)
    with ctx.db.session() as session:
        if session.scalar(select(StudyRecord.study_id).where(StudyRecord.name == spec.name)):
            raise StudyExists(f"a study named {spec.name!r} already exists", "name")
    seed = spec.sampler.seed if spec.sampler.seed is not None else secrets.randbits(31)
    try:
        study = ctx.store.create(spec, seed)
    except optuna.exceptions.DuplicatedStudyError as exc:
        raise StudyExists(f"a study named {spec.name!r} already exists", "name") from exc
    try:
        study.set_user_attr("hpo_spec", spec.model_dump(mode="json"))
        study.set_user_attr("hpo_version", hpo.__version__)
        study.set_user_attr("hpo_seed", seed)
        study_id = ctx.store.storage.get_study_id_from_name(spec.name)
        return _insert_record(ctx, study_id, spec, seed)
    except BaseException:
        # No half-created studies: the Optuna study goes when our row cannot be written.
        with contextlib.suppress(Exception):
            ctx.store.delete(spec.name)
        raise


def _insert_record(ctx: AppContext, study_id: int, spec: StudySpec, seed: int) -> StudyRecord:
    now = utcnow()
    record = StudyRecord(
        study_id=study_id,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        state=StudyState.RUNNING,
        seed=seed,
        lease_seq=0,
        created_at=now,
        updated_at=now,
    )
    try:
        with ctx.db.session() as session:
            session.add(record)
    except IntegrityError as exc:
        raise StudyExists(f"a study named {spec.name!r} already exists", "name") from exc
    return record


# --------------------------------------------------------------------------- look up, list


def get_study_record(session: Session, ref: str, *, for_update: bool = False) -> StudyRecord:
    """The study named ``ref``, or with id ``ref`` when it is all digits; else StudyNotFound."""
    stmt = select(StudyRecord)
    if ref.isascii() and ref.isdigit():
        study_id = int(ref)
        if study_id > _MAX_ID:
            raise StudyNotFound(f"study {ref} not found", "study")
        stmt = stmt.where(StudyRecord.study_id == study_id)
    else:
        stmt = stmt.where(StudyRecord.name == ref)
    record = session.scalar(stmt.with_for_update() if for_update else stmt)
    if record is None:
        raise StudyNotFound(f"study {ref!r} not found", "study")
    return record


def check_page(limit: int, offset: int) -> None:
    """Pagination bounds (the API checks them too; this guards other callers)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit: must be between 1 and {MAX_PAGE}, got {limit}", "limit")
    if offset < 0:
        raise InvalidRequest(f"offset: must be >= 0, got {offset}", "offset")


def list_studies(
    session: Session, limit: int = 50, offset: int = 0, worker_timeout_s: float | None = None
) -> StudyPage:
    """Studies in creation order, one page, with trial counts (two queries per page) and
    labels (with ``worker_timeout_s``: one more query, for the live fleet)."""
    check_page(limit, offset)
    total = session.scalar(select(func.count()).select_from(StudyRecord)) or 0
    records = list(
        session.scalars(
            select(StudyRecord).order_by(StudyRecord.study_id).limit(limit).offset(offset)
        )
    )
    counts = trial_counts(session, [r.study_id for r in records])
    fleet = None if worker_timeout_s is None else status.live_fleet(session, worker_timeout_s)
    items = []
    for record in records:
        spec, record_counts = load_spec(record), counts[record.study_id]
        item = study_item(record, spec, record_counts)
        label = status.study_status(record.state, record_counts, spec, fleet)
        item.status, item.waiting_on = label.status, label.waiting_on
        items.append(item)
    return StudyPage(items=items, total=total, limit=limit, offset=offset)


def load_spec(record: StudyRecord) -> StudySpec:
    """The stored spec of a study (validated when it was created)."""
    return stored_spec(record.spec)


def study_item(record: StudyRecord, spec: StudySpec, counts: TrialCounts) -> StudyItem:
    return StudyItem(
        study_id=record.study_id,
        name=record.name,
        state=StudyState(record.state),
        directions=spec.study_directions,
        objectives=spec.objective_names,
        sampler=spec.sampler.name,
        pruner=spec.pruner.name,
        max_trials=spec.budget.max_trials,
        counts=counts,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


# --------------------------------------------------------------------------- summary


def shown_state(optuna_state: OptunaState, hpo_state: str | None) -> ShownState:
    """The state a trial is shown in: Optuna's, or ``queued`` while it waits for a re-run."""
    if optuna_state == OptunaState.RUNNING and hpo_state == TrialState.QUEUED:
        return ShownState.QUEUED
    if optuna_state == OptunaState.RUNNING and hpo_state == TrialState.PAUSED:
        return ShownState.PAUSED
    return ShownState(optuna_state.name.lower())


def trial_counts(session: Session, study_ids: list[int]) -> dict[int, TrialCounts]:
    """Trials per state of each study: one GROUP BY over Optuna's trials and hpo_trials."""
    out = {study_id: TrialCounts() for study_id in study_ids}
    if not study_ids:
        return out
    stmt = (
        select(trials.c.study_id, trials.c.state, TrialRecord.state, func.count())
        .outerjoin(TrialRecord, TrialRecord.optuna_trial_id == trials.c.trial_id)
        .where(trials.c.study_id.in_(study_ids))
        .group_by(trials.c.study_id, trials.c.state, TrialRecord.state)
    )
    for study_id, optuna_state, hpo_state, n in session.execute(stmt):
        counts = out[study_id]
        name = shown_state(optuna_state, hpo_state)
        setattr(counts, name, getattr(counts, name) + n)
        counts.total += n
        if hpo_state == TrialState.LEASED and optuna_state == OptunaState.RUNNING:
            counts.leased += n
    return out


def study_summary(
    session: Session, record: StudyRecord, worker_timeout_s: float | None = None
) -> StudySummary:
    """Counts, spec and best trial (single objective) or Pareto front (multi-objective).

    With ``worker_timeout_s`` a running study that has work but no live worker able
    to run it (its workload, its resources) says so in ``waiting_reason``. ``status``
    is its label (:mod:`service.studies.status`).
    """
    spec = load_spec(record)
    counts = trial_counts(session, [record.study_id])[record.study_id]
    item = study_item(record, spec, counts)
    summary = StudySummary(
        **item.model_dump(),
        description=spec.description,
        seed=record.seed,
        spec=record.spec,
    )
    fleet = None if worker_timeout_s is None else status.live_fleet(session, worker_timeout_s)
    label = status.study_status(record.state, counts, spec, fleet)
    summary.status, summary.waiting_on = label.status, label.waiting_on
    summary.waiting_reason = label.reason
    if spec.is_multi_objective:
        summary.best_trials = pareto_front(session, record.study_id, spec.study_directions)
    else:
        summary.best_trial = best_trial(session, record.study_id, spec.study_directions[0])
    return summary


def pareto(session: Session, record: StudyRecord) -> ParetoFront:
    """The study's Pareto front (its best trial when it has one objective)."""
    spec = load_spec(record)
    directions = spec.study_directions
    if spec.is_multi_objective:
        front = pareto_front(session, record.study_id, directions)
    else:
        best = best_trial(session, record.study_id, directions[0])
        front = [best] if best is not None else []
    return ParetoFront(
        study=record.name, objectives=spec.objective_names, directions=directions, trials=front
    )


def best_trial(session: Session, study_id: int, direction: str) -> BestTrial | None:
    """The best complete trial of a single-objective study (ORDER BY ... LIMIT 1)."""
    kind = trial_values.c.value_type
    rank = case((kind == ValueType.INF_NEG, -1), (kind == ValueType.INF_POS, 1), else_=0)
    by = desc if direction == "maximize" else asc
    row = session.execute(
        select(trials.c.trial_id, trials.c.number, trial_values.c.value, kind)
        .join(
            trial_values,
            and_(trial_values.c.trial_id == trials.c.trial_id, trial_values.c.objective == 0),
        )
        .where(trials.c.study_id == study_id, trials.c.state == OptunaState.COMPLETE)
        .order_by(by(rank), by(trial_values.c.value), trials.c.number)
        .limit(1)
    ).first()
    if row is None:
        return None
    value = decode_value(row[2], row[3])
    params = params_by_trial(session, [row[0]])[row[0]]
    return BestTrial(number=row[1], trial_id=row[0], value=value, values=[value], params=params)


def pareto_front(session: Session, study_id: int, directions: list[str]) -> list[BestTrial]:
    """Non-dominated complete trials of a multi-objective study, by number."""
    rows = session.execute(
        select(trials.c.trial_id, trials.c.number, trial_values.c.value, trial_values.c.value_type)
        .join(trial_values, trial_values.c.trial_id == trials.c.trial_id)
        .where(trials.c.study_id == study_id, trials.c.state == OptunaState.COMPLETE)
        .order_by(trials.c.number, trial_values.c.objective)
    )
    values: dict[tuple[int, int], list[float]] = {}
    for trial_id, number, value, kind in rows:
        values.setdefault((trial_id, number), []).append(decode_value(value, kind) or 0.0)
    keys = [k for k, v in values.items() if len(v) == len(directions)]
    if not keys:
        return []
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    mask = _non_dominated(np.array([values[k] for k in keys]) * signs)
    front = [k for k, keep in zip(keys, mask, strict=True) if keep]
    params = params_by_trial(session, [trial_id for trial_id, _ in front])
    return [
        BestTrial(number=n, trial_id=t, values=values[(t, n)], params=params.get(t, {}))
        for t, n in front
    ]


def _non_dominated(losses: np.ndarray) -> np.ndarray:
    """Mask of the rows no other row dominates (all objectives minimized)."""
    keep = np.ones(len(losses), dtype=bool)
    for i in range(len(losses)):
        if not keep[i]:
            continue
        dominated = np.all(losses[i] <= losses, axis=1) & np.any(losses[i] < losses, axis=1)
        keep[dominated] = False
    return keep


# --------------------------------------------------------------------------- run state


def change_state_without_commit(session: Session, ref: str, action: str) -> StudyRecord:
    """Apply ``pause``, ``resume`` or ``stop``; repeating one is a no-op.

    Raises Conflict (409) for a transition out of ``stopped``, which is final.
    """
    record = get_study_record(session, ref, for_update=True)
    target = STUDY_TRANSITIONS[action].get(StudyState(record.state))
    if target is None:
        raise Conflict(
            f"study {record.name!r} is stopped and cannot be {action}d: stopping is final "
            "(create a new study to continue the search)",
            "state",
        )
    if target != record.state:
        record.state = target
        record.updated_at = utcnow()
        session.flush()
    return record


# --------------------------------------------------------------------------- delete


def active_lease_count(session: Session, study_id: int) -> int:
    """Trials of the study a worker holds an unexpired lease on."""
    stmt = (
        select(func.count())
        .select_from(TrialRecord)
        .where(
            TrialRecord.study_id == study_id,
            TrialRecord.state == TrialState.LEASED,
            TrialRecord.lease_expires_at > utcnow(),
        )
    )
    return session.scalar(stmt) or 0


def delete_study(ctx: AppContext, ref: str, *, force: bool = False) -> None:
    """Delete the Optuna study and every ``hpo_`` row of it.

    Refuses with Conflict (409) while leases are active, unless ``force``.
    Safe to retry: an Optuna study that is already gone is not an error.
    """
    with ctx.db.session() as session:
        record = get_study_record(session, ref)
        active = active_lease_count(session, record.study_id)
    if active and not force:
        raise Conflict(
            f"study {record.name!r} has {active} active lease(s); stop it and let the "
            "workers finish, or delete with force=true",
            "force",
        )
    with contextlib.suppress(KeyError):
        ctx.store.delete(record.name)
    with ctx.db.session() as session:
        _delete_rows_without_commit(session, record.study_id)
    ctx.store.forget(record.study_id)


def _delete_rows_without_commit(session: Session, study_id: int) -> None:
    rows = select(TrialRecord.id).where(TrialRecord.study_id == study_id)
    session.execute(delete(LeaseRecord).where(LeaseRecord.trial_row_id.in_(rows)))
    session.execute(delete(TrialMetric).where(TrialMetric.study_id == study_id))
    session.execute(delete(TrialRecord).where(TrialRecord.study_id == study_id))
    session.execute(delete(StudyRecord).where(StudyRecord.study_id == study_id))

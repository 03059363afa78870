"""Read Optuna's tables with SQL, in bulk, without building a Study per trial.

The API, the dashboard and the export must stay fast at 10k trials, so they
never call ``study.trials`` (which loads every trial object). Instead they
query Optuna's own tables through the table objects of Optuna's RDB models (so
column types and enums are decoded exactly as Optuna does), a page of trials
at a time, or a whole study from a trial id on, with one query per kind of row.

This module is the one place that decodes what Optuna stores:

- objective and intermediate values: :func:`decode_value` (``inf``/``nan`` kinds);
- parameters: :func:`external_param` (categorical index -> choice);
- times: Optuna 5 stores naive UTC in its tables but hands out naive *local*
  times in ``FrozenTrial`` objects, while the service's own tables store aware
  UTC. :func:`as_utc` makes a column value aware; :func:`as_frozen_time` is
  the way back for ``FrozenTrial`` objects built from rows (the dashboard's).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.storages._rdb import models as _m
from sqlalchemy import Row, Table, and_, select
from sqlalchemy.orm import Session

studies: Table = _m.StudyModel.__table__
study_directions: Table = _m.StudyDirectionModel.__table__
trials: Table = _m.TrialModel.__table__
trial_values: Table = _m.TrialValueModel.__table__
trial_params: Table = _m.TrialParamModel.__table__
trial_user_attrs: Table = _m.TrialUserAttributeModel.__table__
trial_intermediate: Table = _m.TrialIntermediateValueModel.__table__
trial_system_attrs: Table = _m.TrialSystemAttributeModel.__table__

ValueType = _m.TrialValueModel.TrialValueType


def decode_value(value: float | None, kind: Any) -> float | None:
    """A stored objective / intermediate value as a float (``inf``, ``nan`` included)."""
    name = getattr(kind, "name", "FINITE")
    if name == "INF_POS":
        return math.inf
    if name == "INF_NEG":
        return -math.inf
    if name == "NAN":
        return math.nan
    return value


def as_utc(value: datetime | None) -> datetime | None:
    """A datetime read from Optuna's ``trials`` table as an aware UTC datetime.

    Optuna (>= 5, as pinned) stores naive *UTC* in ``datetime_start`` and
    ``datetime_complete``; only its ORM properties, and so the ``FrozenTrial``
    objects of its storage API, turn them into naive *local* time. SQL reads
    (this module) get the column itself, so the value only needs its zone.
    """
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def as_frozen_time(value: datetime | None) -> datetime | None:
    """An aware datetime as Optuna's ``FrozenTrial`` carries it: naive local time."""
    return None if value is None else value.astimezone().replace(tzinfo=None)


@lru_cache(maxsize=4096)
def distribution(distribution_json: str) -> BaseDistribution:
    """The distribution of a parameter row (parsed once per distinct JSON)."""
    return json_to_distribution(distribution_json)


def external_param(internal: float, distribution_json: str) -> Any:
    """A parameter's value as the user sees it (categorical index -> choice)."""
    return distribution(distribution_json).to_external_repr(internal)


def _chunks(ids: Sequence[int], size: int = 900) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def values_by_trial(session: Session, ids: Sequence[int]) -> dict[int, list[float | None]]:
    """Objective values of each trial, ordered by objective index."""
    out: dict[int, list[float | None]] = defaultdict(list)
    for chunk in _chunks(ids):
        rows = session.execute(
            select(trial_values.c.trial_id, trial_values.c.value, trial_values.c.value_type)
            .where(trial_values.c.trial_id.in_(chunk))
            .order_by(trial_values.c.trial_id, trial_values.c.objective)
        )
        for trial_id, value, kind in rows:
            out[trial_id].append(decode_value(value, kind))
    return out


def params_by_trial(session: Session, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Parameters of each trial in the order they were suggested."""
    out: dict[int, dict[str, Any]] = defaultdict(dict)
    c = trial_params.c
    for chunk in _chunks(ids):
        rows = session.execute(
            select(c.trial_id, c.param_name, c.param_value, c.distribution_json)
            .where(c.trial_id.in_(chunk))
            .order_by(c.trial_id, c.param_id)
        )
        for trial_id, name, internal, dist_json in rows:
            out[trial_id][name] = external_param(internal, dist_json)
    return out


def param_distributions(session: Session, trial_id: int) -> dict[str, str]:
    """Each parameter's distribution as Optuna stores it (``distribution_to_json``)."""
    c = trial_params.c
    rows = session.execute(
        select(c.param_name, c.distribution_json).where(c.trial_id == trial_id).order_by(c.param_id)
    )
    return {name: dist_json for name, dist_json in rows}


def user_attrs_by_trial(
    session: Session, ids: Sequence[int], keys: Sequence[str] | None = None
) -> dict[int, dict[str, Any]]:
    """User attributes of each trial (optionally only ``keys``), JSON-decoded."""
    out: dict[int, dict[str, Any]] = defaultdict(dict)
    c = trial_user_attrs.c
    for chunk in _chunks(ids):
        stmt = select(c.trial_id, c.key, c.value_json).where(c.trial_id.in_(chunk))
        if keys is not None:
            stmt = stmt.where(c.key.in_(keys))
        for trial_id, key, value_json in session.execute(stmt.order_by(c.trial_user_attribute_id)):
            out[trial_id][key] = _loads(value_json)
    return out


def intermediate_values(session: Session, trial_id: int) -> list[tuple[int, float | None]]:
    """The learning curve Optuna's pruners see: (step, value) by step."""
    c = trial_intermediate.c
    rows = session.execute(
        select(c.step, c.intermediate_value, c.intermediate_value_type)
        .where(c.trial_id == trial_id)
        .order_by(c.step)
    )
    return [(step, decode_value(value, kind)) for step, value, kind in rows]


def param_names(session: Session, study_id: int) -> list[str]:
    """Every parameter name used by any trial of the study."""
    return _distinct_names(session, study_id, trial_params, "param_name")


def user_attr_keys(session: Session, study_id: int) -> list[str]:
    """Every user-attribute key set on any trial of the study."""
    return _distinct_names(session, study_id, trial_user_attrs, "key")


def _distinct_names(session: Session, study_id: int, table: Table, column: str) -> list[str]:
    """The sorted distinct values of ``table.column`` over the study's trials' rows."""
    stmt = (
        select(table.c[column])
        .join(trials, trials.c.trial_id == table.c.trial_id)
        .where(trials.c.study_id == study_id)
        .distinct()
    )
    return sorted(session.scalars(stmt))


def _loads(value_json: str | None) -> Any:
    if value_json is None:
        return None
    try:
        return json.loads(value_json)
    except ValueError:
        return value_json


# --------------------------------------------------------------------------- whole studies


def study_trial_rows(session: Session, study_id: int, from_trial_id: int = 0) -> list[Row[Any]]:
    """The study's trials with id >= ``from_trial_id`` and their first objective value.

    Columns: trial_id, number, state, datetime_start, datetime_complete, value,
    value_type (decode with :func:`as_utc` and :func:`decode_value`).
    """
    t, v = trials.c, trial_values.c
    stmt = (
        select(
            t.trial_id,
            t.number,
            t.state,
            t.datetime_start,
            t.datetime_complete,
            v.value,
            v.value_type,
        )
        .select_from(trials)
        .outerjoin(trial_values, and_(v.trial_id == t.trial_id, v.objective == 0))
        .where(t.study_id == study_id, t.trial_id >= from_trial_id)
        .order_by(t.trial_id)
    )
    return list(session.execute(stmt).all())


def study_param_rows(
    session: Session, study_id: int, from_trial_id: int = 0
) -> list[tuple[int, str, float, str]]:
    """(trial_id, param_name, internal value, distribution_json) of the same trials."""
    p = trial_params.c
    stmt = (
        select(p.trial_id, p.param_name, p.param_value, p.distribution_json)
        .join(trials, trials.c.trial_id == p.trial_id)
        .where(trials.c.study_id == study_id, p.trial_id >= from_trial_id)
        .order_by(p.trial_id, p.param_id)
    )
    return [tuple(r) for r in session.execute(stmt)]  # type: ignore[misc]


def study_other_values(
    session: Session, study_id: int, from_trial_id: int = 0
) -> dict[int, list[float | None]]:
    """Objective values beyond the first, decoded, by trial (multi-objective studies)."""
    v = trial_values.c
    stmt = (
        select(v.trial_id, v.value, v.value_type)
        .join(trials, trials.c.trial_id == v.trial_id)
        .where(trials.c.study_id == study_id, v.objective > 0, v.trial_id >= from_trial_id)
        .order_by(v.trial_id, v.objective)
    )
    out: dict[int, list[float | None]] = defaultdict(list)
    for trial_id, value, kind in session.execute(stmt):
        out[trial_id].append(decode_value(value, kind))
    return out


def delete_trial_system_attr(session: Session, trial_id: int, key: str) -> None:
    """Remove one system attribute of a trial (Optuna's API can only set them): the
    ``artifacts:<id>`` metadata of an artifact whose file was deleted."""
    session.execute(
        trial_system_attrs.delete().where(
            and_(trial_system_attrs.c.trial_id == trial_id, trial_system_attrs.c.key == key)
        )
    )


def artifact_meta(session: Session, key: str) -> dict[str, Any] | None:
    """The Optuna artifact metadata stored under ``key`` on any trial (None: none)."""
    row = session.execute(
        select(trial_system_attrs.c.value_json).where(trial_system_attrs.c.key == key).limit(1)
    ).first()
    if row is None:
        return None
    value = _loads(row[0])
    if isinstance(value, str):  # optuna.artifacts stores the metadata as a JSON string
        value = _loads(value)
    return value if isinstance(value, dict) else None

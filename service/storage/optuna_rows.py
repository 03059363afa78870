"""Read Optuna's tables with SQL, in bulk, without building a Study per trial.

The dashboard and the export must stay fast at 10k trials, so they never call
``study.trials`` (which loads every trial object). Instead they query Optuna's
own tables through the table objects of Optuna's RDB models (so the column
types, enums and naive-UTC datetimes are decoded exactly as Optuna does), a
page of trials at a time, with one query per kind of row.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from optuna.distributions import json_to_distribution
from optuna.storages._rdb import models as _m
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

trials: Table = _m.TrialModel.__table__
trial_values: Table = _m.TrialValueModel.__table__
trial_params: Table = _m.TrialParamModel.__table__
trial_user_attrs: Table = _m.TrialUserAttributeModel.__table__
trial_intermediate: Table = _m.TrialIntermediateValueModel.__table__

ValueType = _m.TrialValueModel.TrialValueType
IntermediateType = _m.TrialIntermediateValueModel.TrialIntermediateValueType


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
    """Optuna stores naive UTC datetimes; make them timezone-aware."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@lru_cache(maxsize=4096)
def _distribution(distribution_json: str) -> Any:
    return json_to_distribution(distribution_json)


def external_param(internal: float, distribution_json: str) -> Any:
    """A parameter's value as the user sees it (categorical index -> choice)."""
    return _distribution(distribution_json).to_external_repr(internal)


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
    stmt = (
        select(trial_params.c.param_name)
        .join(trials, trials.c.trial_id == trial_params.c.trial_id)
        .where(trials.c.study_id == study_id)
        .distinct()
    )
    return sorted(session.scalars(stmt))


def user_attr_keys(session: Session, study_id: int) -> list[str]:
    """Every user-attribute key set on any trial of the study."""
    stmt = (
        select(trial_user_attrs.c.key)
        .join(trials, trials.c.trial_id == trial_user_attrs.c.trial_id)
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

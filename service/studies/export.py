"""Export all trials of a study as CSV or JSON, streamed in batches.

One flat row per trial: number, state, value(s), every parameter as a
``params_<name>`` column, attempts, worker, datetimes, duration, failure
reason, diagnosis, the final metrics a worker sent with ``complete`` (stored
in the ``final_metrics`` user attribute; one column per metric, such as
``test_accuracy``) and the trial's other user attributes. Rows are built
from SQL, a batch of trials at a time, each batch in its own short unit of
work, so a 10k-trial study streams without loading Study objects or holding
a transaction open.

CSV cells holding text that starts with ``= + - @`` (or a tab / carriage
return) get a leading single quote, so a spreadsheet never runs them as a
formula. Numbers are written as numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpo.schemas import TrialItem
from service.core.context import AppContext
from service.storage.optuna_rows import (
    param_names,
    trial_user_attrs,
    trials,
    user_attr_keys,
    user_attrs_by_trial,
)
from service.studies.records import get_study_record, load_spec
from service.studies.trials import REASON_KEYS, base_query, trial_items

BATCH = 500
FINAL_METRICS = "final_metrics"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_BASE = ["number", "trial_id", "state"]
_TAIL = [
    "attempts",
    "worker_id",
    "datetime_start",
    "datetime_complete",
    "duration_s",
    "fail_reason",
    "diagnosis",
]


@dataclass(frozen=True)
class ExportPlan:
    """Which study and which columns an export writes (decided before streaming)."""

    study_id: int
    name: str
    value_columns: list[str]
    params: list[str]
    finals: dict[str, str]  # final metric name -> column name
    extras: dict[str, str]  # other user attribute key -> column name

    @property
    def columns(self) -> list[str]:
        params = [f"params_{p}" for p in self.params]
        finals, extras = self.finals.values(), self.extras.values()
        return [*_BASE, *self.value_columns, *params, *_TAIL, *finals, *extras]


def plan_export(session: Session, ref: str) -> ExportPlan:
    """Resolve the study (StudyNotFound before any byte is sent) and fix the columns."""
    record = get_study_record(session, ref)
    spec = load_spec(record)
    names = spec.objective_names
    if len(names) == 1:
        value_columns = ["value"]
    elif len(set(names)) == len(names):
        value_columns = [f"value_{n}" for n in names]
    else:
        value_columns = [f"values_{i}" for i in range(len(names))]
    params = list(spec.space)
    params += [p for p in param_names(session, record.study_id) if p not in spec.space]
    taken = set(_BASE) | set(_TAIL) | set(value_columns) | {f"params_{p}" for p in params}
    finals = _columns(final_metric_keys(session, record.study_id), taken, "final_")
    attr_keys = user_attr_keys(session, record.study_id)
    others = [k for k in attr_keys if k not in REASON_KEYS and k != FINAL_METRICS]
    extras = _columns(others, taken | set(finals.values()), "user_attrs_")
    return ExportPlan(record.study_id, record.name, value_columns, params, finals, extras)


def _columns(keys: list[str], taken: set[str], prefix: str) -> dict[str, str]:
    """Column names for ``keys``: the key itself unless taken (then ``prefix`` + key)."""
    return {key: prefix + key if key in taken or key.startswith("params_") else key for key in keys}


def final_metric_keys(session: Session, study_id: int) -> list[str]:
    """Every metric name in the study's ``final_metrics`` user attributes."""
    c = trial_user_attrs.c
    stmt = (
        select(c.value_json)
        .join(trials, trials.c.trial_id == c.trial_id)
        .where(trials.c.study_id == study_id, c.key == FINAL_METRICS)
        .distinct()
    )
    keys: set[str] = set()
    for value_json in session.scalars(stmt):
        try:
            value = json.loads(value_json)
        except (TypeError, ValueError):
            continue
        if isinstance(value, dict):
            keys.update(str(k) for k in value)
    return sorted(keys)


def iter_rows(ctx: AppContext, plan: ExportPlan) -> Iterator[dict[str, Any]]:
    """Flat rows of every trial by number, read a batch per short unit of work."""
    last = -1
    while True:
        with ctx.db.session() as session:
            query = base_query(plan.study_id).where(trials.c.number > last)
            rows = session.execute(query.order_by(trials.c.number).limit(BATCH)).all()
            items = trial_items(session, rows)
            keys = [*plan.extras, FINAL_METRICS]
            attrs = user_attrs_by_trial(session, [r.trial_id for r in rows], keys)
        for item in items:
            yield flat_row(plan, item, attrs.get(item.trial_id, {}))
        if len(rows) < BATCH:
            return
        last = rows[-1].number


def flat_row(plan: ExportPlan, item: TrialItem, attrs: dict[str, Any]) -> dict[str, Any]:
    """One trial as an export row keyed by :attr:`ExportPlan.columns`."""
    values = item.values or []
    row: dict[str, Any] = {"number": item.number, "trial_id": item.trial_id, "state": item.state}
    for i, column in enumerate(plan.value_columns):
        row[column] = values[i] if i < len(values) else None
    for name in plan.params:
        row[f"params_{name}"] = item.params.get(name)
    for column in _TAIL:
        row[column] = getattr(item, column)
    finals = attrs.get(FINAL_METRICS)
    finals = finals if isinstance(finals, dict) else {}
    for key, column in plan.finals.items():
        row[column] = finals.get(key)
    for key, column in plan.extras.items():
        row[column] = attrs.get(key)
    return row


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell, defused against spreadsheet formula injection."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return "'" + text if text.startswith(_FORMULA_START) else text


def stream_csv(ctx: AppContext, plan: ExportPlan) -> Iterator[str]:
    """The CSV export: a header line, then one line per trial, a batch per chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([csv_cell(c) for c in plan.columns])
    for i, row in enumerate(iter_rows(ctx, plan), start=1):
        writer.writerow([csv_cell(row[c]) for c in plan.columns])
        if i % BATCH == 0:
            yield _drain(buffer)
    yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def json_value(value: Any) -> Any:
    """JSON-safe value: non-finite floats become null, datetimes ISO 8601."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def stream_json(ctx: AppContext, plan: ExportPlan) -> Iterator[str]:
    """The JSON export: ``{"study", "study_id", "columns", "trials": [row, ...]}``."""
    head = {"study": plan.name, "study_id": plan.study_id, "columns": plan.columns}
    yield json.dumps(head)[:-1] + ', "trials": ['
    sep = "\n"
    for row in iter_rows(ctx, plan):
        yield sep + json.dumps({k: json_value(v) for k, v in row.items()}, default=str)
        sep = ",\n"
    yield "\n]}\n"


def content_disposition(name: str, extension: str) -> str:
    """``attachment`` with an ASCII-safe filename and the exact UTF-8 one (RFC 6266)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"
    exact = quote(f"{name}.{extension}", safe="")
    return f"attachment; filename=\"{safe}.{extension}\"; filename*=UTF-8''{exact}"

"""The trials table: filtered, sorted and paginated on the server, from the cached frame.

Only the page being shown is read again, as the API's trial items
(:func:`service.studies.trials.items_by_id`: state, worker, attempts, preemptions,
failure reason and diagnosis), plus the epochs each trial reported: a few queries
over at most ``MAX_LIMIT`` trial ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from hpo.settings import OPTIMIZER
from service.core.errors import InvalidRequest
from service.dashboard import queries
from service.dashboard.frame import StudyFrame, TrialRow
from service.dashboard.trial_view import describe
from service.studies.trials import items_by_id

MAX_LIMIT = 200
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
BASE_SORTS = ("number", "value", "state", "duration")


@dataclass(frozen=True)
class TableQuery:
    """What the trials table asks for: filters, sort and page."""

    state: str | None = None
    optimizer: str | None = None
    sort: str = "number"
    descending: bool = False
    offset: int = 0
    limit: int = 25

    def check(self, frame: StudyFrame) -> None:
        if self.state and self.state not in STATES:
            raise InvalidRequest(f"state must be one of {', '.join(STATES)}", "state")
        allowed = set(BASE_SORTS) | set(frame.axes)
        if self.sort not in allowed:
            raise InvalidRequest(f"cannot sort by {self.sort!r}", "sort")
        if not 1 <= self.limit <= MAX_LIMIT or self.offset < 0:
            raise InvalidRequest(f"limit must be 1..{MAX_LIMIT} and offset >= 0", "limit")


def _sort_key(sort: str) -> Any:
    def key(r: TrialRow) -> tuple[int, Any]:
        if sort == "number":
            return (0, r.number)
        if sort == "state":
            return (0, r.state)
        value = {"value": r.value, "duration": r.duration_s}.get(sort, r.settings.get(sort))
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0)  # missing values sort last either way
        return (0, value if isinstance(value, int | float) else str(value))

    return key


def select_rows(frame: StudyFrame, q: TableQuery) -> list[TrialRow]:
    """The frame's rows filtered and sorted (missing sort values last)."""
    rows = frame.rows
    if q.state:
        rows = [r for r in rows if r.state == q.state]
    if q.optimizer:
        rows = [r for r in rows if str(r.settings.get(OPTIMIZER)) == q.optimizer]
    key = _sort_key(q.sort)
    present = [r for r in rows if key(r)[0] == 0]
    missing = [r for r in rows if key(r)[0] == 1]
    present.sort(key=key, reverse=q.descending)
    return present + missing


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def page(session: Session, frame: StudyFrame, q: TableQuery) -> dict[str, Any]:
    """One page of the table as JSON-ready data (strings are raw: the client uses textContent)."""
    q.check(frame)
    rows = select_rows(frame, q)
    shown = rows[q.offset : q.offset + q.limit]
    ids = [r.trial_id for r in shown]
    items = items_by_id(session, frame.meta.study_id, ids)
    epochs = queries.epochs_done(session, ids)
    columns = list(frame.axes)
    out = []
    for r in shown:
        item = items.get(r.trial_id)
        state = item.state if item is not None else r.state.lower()
        out.append(
            {
                "number": r.number,
                "state": state,
                "value": _jsonable(r.value),
                "settings": {c: _jsonable(r.settings.get(c)) for c in columns},
                "duration_s": r.duration_s,
                "epochs": epochs.get(r.trial_id),
                "worker": item.worker_id if item else None,
                "attempts": item.attempts if item else None,
                "preemptions": item.preemptions if item else 0,
                "diagnosis": describe(
                    state,
                    item.diagnosis if item else None,
                    item.fail_reason if item else None,
                    epochs.get(r.trial_id),
                ),
            }
        )
    return {
        "total": len(rows),
        "offset": q.offset,
        "limit": q.limit,
        "columns": columns,
        "rows": out,
    }

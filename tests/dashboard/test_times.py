"""Times read from Optuna's tables are the true moment, in UTC, whatever the server's zone.

Optuna takes ``datetime.now()`` (naive local time) and, since version 5, stores
it as naive UTC in ``trials.datetime_start`` / ``datetime_complete``; its
``FrozenTrial`` objects carry naive local time again. The service's own tables
store aware UTC. Here the process runs in Asia/Tokyo (UTC+9, no daylight saving
time): reading a column as local time, or a FrozenTrial's time as UTC, is off
by 9 hours.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import optuna
import pytest

from bench.synthetic import demo, seeding
from hpo.settings import OPTIMIZER

SLACK = timedelta(seconds=2)


@pytest.fixture
def tokyo() -> Iterator[None]:
    """The process's local time zone is Asia/Tokyo for the test."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        assert time.timezone == -9 * 3600, "the Asia/Tokyo zone is not installed (tzdata)"
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def _moment(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0), text
    return value


def _within(value: datetime | None, before: datetime, after: datetime) -> bool:
    return value is not None and before - SLACK <= value <= after + SLACK


def test_trial_times_are_the_true_moment_in_utc(tokyo, viewer, app, ctx) -> None:
    sid = seeding.create_study(ctx, demo.demo_spec("tz"))
    study = optuna.load_study(study_name="tz", storage=ctx.store.storage)
    before = datetime.now(UTC)
    trial = study.ask()
    trial.suggest_categorical(OPTIMIZER, demo.OPTIMIZERS)
    study.tell(trial, 0.5)
    after = datetime.now(UTC)

    detail = viewer.get(f"/api/v1/studies/{sid}/trials/{trial.number}").json()
    assert _within(_moment(detail["datetime_start"]), before, after), (detail, before)
    assert _within(_moment(detail["datetime_complete"]), before, after), (detail, before)
    listed = viewer.get(f"/api/v1/studies/{sid}/trials").json()["items"][0]
    assert _within(_moment(listed["datetime_start"]), before, after), (listed, before)
    frozen = study.trials[0].datetime_start  # Optuna's own view: naive local time
    assert frozen == _moment(detail["datetime_start"]).astimezone().replace(tzinfo=None)

    row = app.state.dashboard.frame(sid).rows[0]  # what the dashboard's charts and table read
    assert _within(row.start, before, after) and _within(row.complete, before, after), row
    page = viewer.get(f"/dashboard/studies/{sid}/trials/{trial.number}").text
    shown = _moment(detail["datetime_start"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert shown in page

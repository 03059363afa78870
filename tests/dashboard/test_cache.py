"""The dashboard's one cache (versioned, LRU, one build per key, stale-while-revalidate),
what frames keep across versions, and that the dashboard shows what the API answers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import optuna
import pytest

from bench.synthetic import demo
from hpo.settings import OPTIMIZER
from service.core.db import utcnow
from service.dashboard.cache import VersionedCache
from service.dashboard.charts_base import settings_text
from service.dashboard.frame_study import frame_study
from service.storage.models import WorkerRecord

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_values_are_built_once_per_key_and_version() -> None:
    cache: VersionedCache[str] = VersionedCache(8)
    builds: list[str | None] = []

    def build(previous: str | None) -> tuple[int, str]:
        builds.append(previous)
        time.sleep(0.05)  # long enough for the other threads to arrive meanwhile
        return 1, "v1"

    threads = [threading.Thread(target=cache.get, args=((1, "x"), 1, build)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds == [None] and cache.get((1, "x"), 1, build) == "v1"
    assert cache.get((1, "x"), 2, lambda old: (2, f"{old}+")) == "v1+"  # gets the old value


def test_least_recently_used_entries_go_first_and_forget_drops_a_study() -> None:
    cache: VersionedCache[str] = VersionedCache(2)
    cache.get((1, "a"), 0, lambda _: (0, "a"))
    cache.get((2, "b"), 0, lambda _: (0, "b"))
    cache.get((1, "a"), 0, lambda _: (0, "never built"))  # a is now the most recent
    cache.get((3, "c"), 0, lambda _: (0, "c"))
    assert cache.peek((2, "b")) is None and cache.peek((1, "a")) == "a"
    cache.forget(1)
    assert cache.peek((1, "a")) is None and cache.peek((3, "c")) == "c"


def test_stale_values_are_answered_while_one_rebuild_runs() -> None:
    cache: VersionedCache[str] = VersionedCache(8)
    cache.get((1,), 1, lambda _: (1, "old"))
    release = threading.Event()
    builds = []

    def slow(previous: str | None) -> tuple[int, str]:
        builds.append(previous)
        release.wait(10)
        return 2, "new"

    assert cache.get((1,), 2, slow, stale_ok=True) == "old"
    assert cache.get((1,), 2, slow, stale_ok=True) == "old"  # no second rebuild queued
    release.set()
    assert cache.idle(timeout_s=10)
    assert cache.get((1,), 2, slow, stale_ok=True) == "new" and builds == ["old"]


@sqlite_only
def test_a_new_frame_keeps_what_charts_derived_from_unchanged_trials(app, ctx, study_id) -> None:
    dash = app.state.dashboard
    frame = dash.frame(study_id)
    frozen = {t._trial_id: t for t in frame_study(frame).trials}
    hover = settings_text(frame.rows[0], frame)
    study = optuna.load_study(study_name="mnist-demo", storage=ctx.store.storage)
    trial = study.ask()
    trial.suggest_categorical(OPTIMIZER, demo.OPTIMIZERS)
    study.tell(trial, 0.5)
    newer = dash.frame(study_id)
    assert newer is not frame and len(newer.rows) == len(frame.rows) + 1
    again = {t._trial_id: t for t in frame_study(newer).trials}
    assert all(again[tid] is frozen[tid] for tid in frozen)  # reused, not rebuilt
    assert again[trial._trial_id].value == 0.5
    assert settings_text(newer.rows[0], newer) is hover


@sqlite_only
def test_the_trials_table_shows_the_apis_trials(viewer, study_id) -> None:
    rows = viewer.get(f"/api/v1/dashboard/studies/{study_id}/trials", params={"limit": 50}).json()
    for row in rows["rows"][:10]:
        api = viewer.get(f"/api/v1/studies/{study_id}/trials/{row['number']}").json()
        assert row["state"] == api["state"] and row["worker"] == api["worker_id"]
        assert row["attempts"] == api["attempts"]
        assert row["value"] == pytest.approx(api["value"])
        assert row["duration_s"] == pytest.approx(api["duration_s"])


@sqlite_only
def test_workers_are_alive_by_the_apis_rule(viewer, ctx, workers) -> None:
    timeout = ctx.settings.worker_timeout_s
    with ctx.db.session() as session:
        gone = session.get(WorkerRecord, workers[0])
        gone.last_seen_at = utcnow() - timedelta(seconds=timeout + 5)
    api = {w["worker_id"]: w["alive"] for w in viewer.get("/api/v1/workers").json()}
    shown = {w["worker_id"]: w["alive"] for w in viewer.get("/api/v1/dashboard/workers").json()}
    assert shown == api and shown[workers[0]] is False and sum(shown.values()) == 3

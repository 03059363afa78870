"""Leasing under contention: budget and concurrency hold, no trial is leased twice.

1. 16 threads hammer lease/complete against one app (SQLite and PostgreSQL).
2. Two real server processes (``hpo server``) share one PostgreSQL database, with
   leasers on both: the study row lock, not a Python lock, keeps the budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from sqlalchemy import select

from service.storage.models import LeaseRecord, TrialRecord
from tests.conftest import Tokens, make_settings, mint_tokens
from tests.service.lease_helpers import API, Tracker, Worker, create_study, optuna_trials, spec
from tests.support import ServerProcess

MAX_TRIALS = 40
MAX_CONCURRENT = 4
BUDGET = {"max_trials": MAX_TRIALS, "max_concurrent": MAX_CONCURRENT, "max_retries": 0}


def run_worker(worker: Worker, tracker: Tracker, server: str, deadline: float) -> None:
    """Lease, report once, complete; until the budget is used up."""
    while time.monotonic() < deadline:
        answer = worker.lease(wait_s=2.0)  # long-poll, as the daemon does
        trial = answer["trial"]
        if trial is None:
            if "budget used" in (answer["reason"] or ""):
                return
            continue
        tracker.start(trial["trial_id"], server)
        lid = trial["lease_id"]
        report = worker.ok(lid, "report", {"step": 0, "value": 0.5})
        if report["action"] != "continue":
            tracker.errors.append(f"report answered {report}")
        tracker.stop(trial["trial_id"])
        done = worker.ok(lid, "complete", {"value": trial["trial_number"] / 100})
        with tracker.lock:
            tracker.completed[done["trial_id"]] += 1
        if done["state"] != "complete":
            tracker.errors.append(f"complete answered {done}")
    tracker.errors.append("deadline reached")


def run_threads(targets: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def guard(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]


def check_outcome(tracker: Tracker, ctx_or_url: Any, name: str) -> None:
    assert not tracker.errors, tracker.errors[:5]
    assert tracker.peak <= MAX_CONCURRENT, tracker.peak
    assert len(tracker.leased) == MAX_TRIALS
    assert set(tracker.leased.values()) == {1}, "a trial was leased twice"
    assert set(tracker.completed.values()) == {1}
    storage = _storage(ctx_or_url)
    trials = storage.get_all_trials(storage.get_study_id_from_name(name))
    assert len(trials) == MAX_TRIALS
    assert sorted(t.number for t in trials) == list(range(MAX_TRIALS))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(t.value == t.number / 100 for t in trials)


def _storage(ctx_or_url: Any) -> Any:
    if isinstance(ctx_or_url, str):
        return optuna.storages.RDBStorage(ctx_or_url)
    return ctx_or_url.store.storage


# --------------------------------------------------------------------------- one app


def test_budget_holds_under_16_concurrent_leasers(client, tokens: Tokens, ctx) -> None:
    create_study(client, tokens, name="hot", budget=BUDGET)
    tracker = Tracker()
    workers = [Worker(client, tokens.worker) for _ in range(16)]
    deadline = time.monotonic() + 60
    run_threads([lambda w=w: run_worker(w, tracker, "one", deadline) for w in workers])
    check_outcome(tracker, ctx, "hot")
    with ctx.db.session() as session:
        rows = session.scalars(select(TrialRecord)).all()
        lease_count = len(session.scalars(select(LeaseRecord)).all())
    assert len(rows) == MAX_TRIALS and lease_count == MAX_TRIALS
    assert {(r.state, r.attempts) for r in rows} == {("finished", 1)}
    assert len(optuna_trials(ctx, "hot")) == MAX_TRIALS


# --------------------------------------------------------------------------- two servers


@pytest.fixture
def two_servers(pg_url: str, tmp_path: Path) -> Iterator[tuple[list[str], Tokens]]:
    """Two server processes on one PostgreSQL database; the schema, a study and
    tokens are prepared here first."""
    from hpo.spec import StudySpec
    from service.app import create_app
    from service.studies.records import create_study as create_study_domain

    app = create_app(make_settings(pg_url, tmp_path))
    ctx = app.state.ctx
    tokens = mint_tokens(ctx)
    create_study_domain(ctx, StudySpec.model_validate(spec("shared", budget=BUDGET)))
    ctx.close()
    settings = {"HPO_DATABASE_URL": pg_url, "HPO_DB_POOL_SIZE": "12"}
    servers = [ServerProcess(tmp_path / f"s{i}", settings, log_level="warning") for i in range(2)]
    try:
        for server in servers:
            server.launch()
        yield [server.ready(30).url for server in servers], tokens
    finally:
        for server in servers:
            server.stop(timeout=10)


@pytest.mark.postgres
def test_two_server_processes_share_one_budget(two_servers, pg_url: str) -> None:
    urls, tokens = two_servers
    tracker = Tracker()
    clients = [httpx.Client(base_url=url, timeout=30) for url in urls for _ in range(6)]
    try:
        workers = [(Worker(c, tokens.worker), str(c.base_url)) for c in clients]
        deadline = time.monotonic() + 60
        run_threads([lambda w=w, s=s: run_worker(w, tracker, s, deadline) for w, s in workers])
    finally:
        for c in clients:
            c.close()
    check_outcome(tracker, pg_url, "shared")
    assert len(tracker.by_server) == 2, f"both servers must have leased: {tracker.by_server}"
    with httpx.Client(base_url=urls[0]) as c:
        answer = c.post(
            f"{API}/trials/lease",
            json={"worker_id": "x"},
            headers=Tokens.header(tokens.worker),
        )
    assert answer.status_code == 404  # unknown worker, even on a shared database

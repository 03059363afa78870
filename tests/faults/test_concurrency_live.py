"""Item 4: 32 concurrent leasers, ``max_concurrent=8``, a budget of 100, over real HTTP.

Leasers are threads with their own HTTP connection (lease with a short
long-poll, report once, complete). Two views of "running" are checked:
the client's (from the lease answer until just before the complete request)
and the database's (a sampler thread counts ``creating``/``leased`` rows every
few milliseconds). Neither may exceed 8; exactly 100 trials, each leased once.
Run against one server process and against two server processes on one
PostgreSQL database (leasing is serialized by a row lock, not a Python lock).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.faults.harness import (
    assert_invariants,
    check_invariants,
    spec,
    start_server,
)
from tests.service.lease_helpers import Tracker
from tests.support import API

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.timeout(240)]

LEASERS, MAX_CONCURRENT, BUDGET = 32, 8, 100
# Small pools: the shared PostgreSQL has max_connections=100 and other tests use it too.
SERVER = {"HPO_LEASE_TTL_S": "30", "HPO_DB_POOL_SIZE": "6", "HPO_DB_MAX_OVERFLOW": "6"}


@dataclass
class Tally(Tracker):
    """The client-side view of tests/service (a trial is live from its lease answer to
    just before its complete), plus the 503s this run retried."""

    retried_503: int = 0


def _post(http: httpx.Client, path: str, body: dict, tally: Tally) -> httpx.Response:
    """POST, retrying a 503 (database briefly out of connections) as the worker client does."""
    for attempt in range(20):
        resp = http.post(path, json=body)
        if resp.status_code != 503:
            return resp
        with tally.lock:
            tally.retried_503 += 1
        time.sleep(min(0.05 * 2**attempt, 1.0))
    return resp


def _leaser(url: str, token: str, tally: Tally, deadline: float) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url + API, headers=headers, timeout=30) as http:
        leaser = {"hostname": "leaser", "workloads": ["fake"]}
        wid = _post(http, "/workers/register", leaser, tally).json()["worker_id"]
        while time.monotonic() < deadline:
            answer = _post(http, "/trials/lease", {"worker_id": wid, "wait_s": 1.0}, tally)
            if answer.status_code != 200:
                tally.errors.append(f"lease {answer.status_code}: {answer.text[:200]}")
                return
            trial = answer.json()["trial"]
            if trial is None:
                if "budget used" in (answer.json()["reason"] or ""):
                    return
                continue
            _run_one(http, trial, url, tally)
    tally.errors.append("deadline reached")


def _run_one(http: httpx.Client, trial: dict, url: str, tally: Tally) -> None:
    tid, lid = trial["trial_id"], trial["lease_id"]
    tally.start(tid, url)
    time.sleep(0.02)
    rep = _post(http, f"/leases/{lid}/report", {"step": 1, "value": 0.5}, tally)
    tally.stop(tid)
    done = _post(http, f"/leases/{lid}/complete", {"value": trial["trial_number"] / 1000}, tally)
    with tally.lock:
        if rep.status_code != 200 or done.status_code != 200:
            tally.errors.append(f"report {rep.status_code} complete {done.status_code}")
        else:
            tally.completed[tid] += 1


class DbSampler(threading.Thread):
    """The database's count of running trials (creating + leased), sampled until stopped."""

    def __init__(self, db_url: str) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(db_url)
        self.stop = threading.Event()
        self.peak = 0
        self.samples = 0

    def run(self) -> None:
        query = text("SELECT count(*) FROM hpo_trials WHERE state IN ('creating', 'leased')")
        with self.engine.connect() as conn:
            while not self.stop.wait(0.005) and self.samples < 100_000:
                self.peak = max(self.peak, conn.execute(query).scalar_one())
                conn.rollback()
                self.samples += 1
        self.engine.dispose()


def _hammer(urls: list[str], token: str, db_url: str) -> tuple[Tally, DbSampler]:
    tally, sampler = Tally(), DbSampler(db_url)
    sampler.start()
    deadline = time.monotonic() + 150
    threads = [
        threading.Thread(target=_leaser, args=(urls[i % len(urls)], token, tally, deadline))
        for i in range(LEASERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=170)
    sampler.stop.set()
    sampler.join(timeout=10)
    return tally, sampler


def _check(tally: Tally, sampler: DbSampler, db_url: str, label: str, figures) -> None:
    f = check_invariants(db_url, "hot", BUDGET)
    summary = (
        f"peak client={tally.peak} db={sampler.peak} ({sampler.samples} samples) "
        f"leased-twice={sum(1 for n in tally.leased.values() if n > 1)} "
        f"503-retried={tally.retried_503} {f.line()}"
    )
    print(f"\n{label}: {summary} by server={dict(tally.by_server)}")
    figures[label] = summary
    assert not tally.errors, tally.errors[:5]
    assert tally.peak <= MAX_CONCURRENT and sampler.peak <= MAX_CONCURRENT, summary
    assert sampler.peak >= 2, "the leasers never ran concurrently"
    assert len(tally.leased) == BUDGET and set(tally.leased.values()) == {1}, summary
    assert set(tally.completed.values()) == {1}, summary
    assert_invariants(f, BUDGET)
    assert f.leases == BUDGET and f.complete == BUDGET, summary


def _study(server) -> None:  # type: ignore[no-untyped-def]
    with server.client() as api:
        body = spec("hot", BUDGET, max_concurrent=MAX_CONCURRENT, max_retries=0)
        resp = api.post("/studies", json=body)
        assert resp.status_code == 201, resp.text


def test_32_leasers_one_server(pg_url: str, tmp_path: Path, figures) -> None:
    server = start_server(tmp_path, pg_url, **SERVER)
    try:
        _study(server)
        tally, sampler = _hammer([server.url], server.tokens()["worker"], pg_url)
        _check(tally, sampler, pg_url, "32 leasers, 1 server (PG)", figures)
    finally:
        server.kill()


def test_32_leasers_two_servers_one_database(pg_url: str, tmp_path: Path, figures) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_server(tmp_path / "a", pg_url, **SERVER)
    second = None
    try:
        token_file = str(first.token_file)
        second = start_server(tmp_path / "b", pg_url, **SERVER, HPO_TOKEN_FILE=token_file)
        _study(first)
        tally, sampler = _hammer([first.url, second.url], first.tokens()["worker"], pg_url)
        _check(tally, sampler, pg_url, "32 leasers, 2 servers (PG)", figures)
        assert len(tally.by_server) == 2 and min(tally.by_server.values()) > 0, tally.by_server
    finally:
        first.kill()
        if second is not None:
            second.kill()

"""Idempotent leases and the pool across replicas (issue 23), over real HTTP.

* A lease request with a ``request_id``, sent again, gets the same trials back;
  ``hpo.Client`` sends a fresh id per call and the same one on its retries (here:
  the first answer is lost on the way back, after the server answered).
* Two replicas (two apps, each with its own engine, Optuna cache and refill task)
  on one PostgreSQL database, the pool on: no proposal is handed out twice, and a
  retry sent to the other replica gets the first replica's answer.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest

from hpo.client import Client
from hpo.protocol import LeaseRequest
from service.core.db import utcnow
from service.trials.requests import forget_old_requests, stored_ids
from tests.service.lease_helpers import API, Worker, spec
from tests.support import live_app


def lease(worker: Worker, request_id: str, **body: Any) -> dict[str, Any]:
    return worker.lease(request_id=request_id, **body)


def lease_ids(answer: dict[str, Any]) -> list[str]:
    return [t["lease_id"] for t in answer["trials"]]


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with live_app(tmp_path) as live:
        with live.client() as admin:
            response = admin.post("/studies", json=spec("s"))
            assert response.status_code == 201, response.text
        yield live


def test_a_retried_request_gets_the_same_trials(server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        worker = Worker(http, server.tokens.worker)
        first = lease(worker, "r-1", max_trials=3)
        again = lease(worker, "r-1", max_trials=3)
        other = lease(worker, "r-2")
        assert len(first["trials"]) == 3 and lease_ids(again) == lease_ids(first)
        assert not set(lease_ids(other)) & set(lease_ids(first))
        # the same id from another worker is refused, naming the field
        thief = Worker(http, server.tokens.worker)
        refused = thief.lease_raw(request_id="r-1")
        assert refused.status_code == 422, refused.text
        assert "request_id" in refused.text
        bad = worker.lease_raw(request_id="no spaces")
        assert bad.status_code == 422 and "request_id" in bad.text
    rows = server.ctx.store.storage.get_all_trials(
        server.ctx.store.storage.get_study_id_from_name("s")
    )
    assert len(rows) == 4  # 3 + 1: the retry leased nothing new
    assert sorted(stored_ids(server.ctx)) == ["r-1", "r-2"]
    assert forget_old_requests(server.ctx, utcnow() + timedelta(seconds=1)) == 2
    assert stored_ids(server.ctx) == []


class LoseFirstAnswer(httpx.HTTPTransport):
    """Real HTTP; the first lease answer is dropped after the server sent it."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith("/trials/lease"):
            self.bodies.append(request.read())
            if len(self.bodies) == 1:
                response.read()
                raise httpx.ReadTimeout("answer lost", request=request)
        return response


def test_the_client_retries_with_the_same_request_id(server) -> None:
    transport = LoseFirstAnswer()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        worker_id = Worker(http, server.tokens.worker).worker_id
    with Client(server.url, server.tokens.worker, transport=transport, sleep=lambda _: None) as c:
        answer = c.lease(LeaseRequest(worker_id=worker_id, max_trials=2))
        fresh = c.lease(LeaseRequest(worker_id=worker_id))
    assert len(transport.bodies) == 3 and transport.bodies[0] == transport.bodies[1]
    assert transport.bodies[2] != transport.bodies[0]
    assert len(answer.trials) == 2 and fresh.trial is not None
    storage = server.ctx.store.storage
    trials = storage.get_all_trials(storage.get_study_id_from_name("s"))
    assert len(trials) == 3  # the lost answer's two trials, then one: never a second pair


# --------------------------------------------------------------------------- two replicas

MAX_TRIALS = 12
POOL = {"proposal_pool": 4, "pool_refill_interval_s": 0.05, "db_pool_size": 12}


@pytest.mark.postgres
def test_two_replicas_share_one_pool_without_double_handing(pg_url: str, tmp_path: Path) -> None:
    budget = {"max_trials": MAX_TRIALS, "max_retries": 0}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with (
        live_app(tmp_path / "a", pg_url, **POOL) as a,
        live_app(tmp_path / "b", pg_url, **POOL) as b,
    ):
        with a.client() as admin:
            response = admin.post("/studies", json=spec("shared", budget=budget))
            assert response.status_code == 201, response.text
        _wait_for_pool(a.ctx)
        leased: Counter[int] = Counter()
        errors: list[str] = []
        lock = threading.Lock()
        clients = [httpx.Client(base_url=r.url, timeout=30) for r in (a, b) for _ in range(2)]
        workers = [Worker(c, a.tokens.worker) for c in clients]
        leased.update(_retry_on_the_other_replica(workers[0], workers[-1]))
        threads = [threading.Thread(target=_work, args=(w, leased, errors, lock)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        for c in clients:
            c.close()
        taken = a.ctx.metrics.proposal_age.collect()[0].samples
        taken_b = b.ctx.metrics.proposal_age.collect()[0].samples
    assert not errors, errors[:5]
    assert set(leased.values()) == {1}, "a trial was handed out twice"
    storage = optuna.storages.RDBStorage(pg_url)
    trials = storage.get_all_trials(storage.get_study_id_from_name("shared"))
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == MAX_TRIALS == len(leased)
    from_pool = sum(s.value for s in taken + taken_b if s.name.endswith("_count"))
    assert from_pool > 0, "no lease took a pooled proposal"


def _wait_for_pool(ctx: Any, timeout: float = 30.0) -> None:
    from tests.service.test_proposal_pool import proposals

    deadline = time.monotonic() + timeout
    while len(proposals(ctx)) < POOL["proposal_pool"]:
        assert time.monotonic() < deadline, "the refill drew nothing"
        time.sleep(0.05)


def _retry_on_the_other_replica(one: Worker, other: Worker) -> list[int]:
    """The same request id on replica A, then replica B: one set of trials."""
    request_id = uuid.uuid4().hex
    first = one.lease(request_id=request_id, max_trials=2)
    body = {"worker_id": one.worker_id, "request_id": request_id, "max_trials": 2}
    again = other.client.post(f"{API}/trials/lease", json=body, headers=one.headers)
    assert again.status_code == 200, again.text
    assert lease_ids(again.json()) == lease_ids(first) and len(first["trials"]) == 2
    for trial in first["trials"]:
        one.ok(trial["lease_id"], "complete", {"value": 0.0})
    return [t["trial_id"] for t in first["trials"]]


def _work(worker: Worker, leased: Counter[int], errors: list[str], lock: threading.Lock) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        answer = worker.lease(wait_s=1.0, request_id=uuid.uuid4().hex)
        if answer["trial"] is None:
            if "budget used" in (answer["reason"] or ""):
                return
            continue
        trial = answer["trial"]
        with lock:
            leased[trial["trial_id"]] += 1
        done = worker.ok(trial["lease_id"], "complete", {"value": trial["trial_number"] / 100})
        if done["state"] != "complete":
            errors.append(f"complete answered {done}")
    errors.append("deadline reached")

"""Batch leases (fused packs): up to K trials in one request, each with its own lease,
within the study's budget, max_concurrent and run state; distinct proposals."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.service.lease_helpers import API, Worker, create_study


def _batch(worker: Worker, k: int, **body: Any) -> list[dict[str, Any]]:
    answer = worker.lease(max_trials=k, **body)
    if answer["trials"]:
        assert answer["trial"] == answer["trials"][0]
    return answer["trials"]


def test_a_batch_holds_distinct_trials_each_with_its_own_lease(client, tokens, worker) -> None:
    create_study(client, tokens, sampler={"name": "tpe", "seed": 3}, budget={"max_trials": 20})
    batch = _batch(worker, 8)
    assert len(batch) == 8
    assert len({t["lease_id"] for t in batch}) == 8 and len({t["trial_id"] for t in batch}) == 8
    params = [tuple(sorted(t["params"].items())) for t in batch]
    assert len(set(params)) == 8  # distinct proposals (TPE with the constant liar)
    for t in batch[1:]:  # each lease lives on its own
        worker.ok(t["lease_id"], "heartbeat", {})
    worker.ok(batch[0]["lease_id"], "complete", {"value": 0.5})
    worker.ok(batch[1]["lease_id"], "fail", {"reason": "bad luck"})
    assert worker.ok(batch[2]["lease_id"], "heartbeat", {})["action"] == "continue"


def test_budget_concurrency_and_pause_bound_a_batch(client, tokens, worker) -> None:
    create_study(client, tokens, name="capped", budget={"max_trials": 5, "max_concurrent": 3})
    assert len(_batch(worker, 8)) == 3  # max_concurrent
    create_study(client, tokens, name="small", budget={"max_trials": 2})
    assert len(_batch(worker, 8, studies=["small"])) == 2  # budget
    create_study(client, tokens, name="held")
    client.post(f"{API}/studies/held/pause", headers=tokens.header(tokens.admin))
    answer = worker.lease(max_trials=4, studies=["held"])
    assert answer["trials"] == [] and answer["reasons"][0]["code"] == "paused"


def test_max_trials_is_bounded(worker) -> None:
    assert worker.lease_raw(max_trials=65).status_code == 422
    assert worker.lease_raw(max_trials=0).status_code == 422


@pytest.mark.postgres
def test_concurrent_batches_never_exceed_max_concurrent(pg_url, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.conftest import make_settings, mint_tokens

    apps = [create_app(make_settings(pg_url, tmp_path / str(i))) for i in range(2)]
    tokens = mint_tokens(apps[0].state.ctx)
    clients = [TestClient(app) for app in apps]
    create_study(clients[0], tokens, name="shared", budget={"max_trials": 40, "max_concurrent": 10})
    got: list[dict[str, Any]] = []
    lock = threading.Lock()

    def lease(client: TestClient) -> None:
        w = Worker(client, tokens.worker)
        for _ in range(3):
            batch = _batch(w, 8)
            with lock:
                got.extend(batch)

    threads = [threading.Thread(target=lease, args=(c,)) for c in clients for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for app in apps:
        app.state.ctx.close()
    assert len(got) == 10 and len({t["trial_id"] for t in got}) == 10

"""The whole system over real HTTP: a real server, real worker processes, real training.

Small trials (a 2,000 image subset of MNIST, a few epochs) keep each test
within tens of seconds on a 2-core CPU. Lease TTL is 3 s and heartbeats come
every second unless a test says otherwise.
"""

from __future__ import annotations

import re
import signal
import time
from typing import Any

from tests.e2e.conftest import Stack
from tests.support import study_spec, wait_for

SPACE = {
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
}


#: For tests that need trial 0 to train through its epochs: no lr that diverges at once
#: (adam near 0.1 can), whatever the seeded sampler draws.
STEADY = {**SPACE, "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}


def fleet_spec(
    name: str, max_trials: int, max_concurrent: int, space: dict | None = None, **fixed: Any
) -> dict[str, Any]:
    """A quick real-training study: one epoch on 2,000 images unless ``fixed`` says otherwise."""
    return study_spec(
        name,
        sampler={"name": "random", "seed": 1},
        pruner={"name": "none"},
        budget={"max_trials": max_trials, "max_concurrent": max_concurrent, "max_retries": 2},
        fixed={"epochs": 1, "train_subset": 2000, **fixed},
        space=space or SPACE,
    )


#: A trial that runs for a few seconds (~0.3 s per epoch here), so it can be interrupted.
SLOW = {"epochs": 10, "train_subset": 2000}


def test_two_workers_complete_a_study(stack: Stack) -> None:
    server = stack.server()
    api = server.api()
    token = server.tokens()["worker"]
    workers = [stack.worker(server.url, token) for _ in range(2)]
    for w in workers:  # both registered and asking before there is work
        wait_for(lambda w=w: "registered as worker" in w.log(), 90, "worker registration")
    api.create_study(fleet_spec("e2e", max_trials=4, max_concurrent=2, epochs=2))

    items = wait_for(lambda: api.finished("e2e", 4), 120, "4 finished trials")
    assert sorted(t["number"] for t in items) == [0, 1, 2, 3]
    for trial in items:
        assert trial["state"] == "complete", trial
        assert 0.1 < trial["value"] <= 1.0 and trial["attempts"] == 1
        assert trial["params"]["optimizer"] in ("sgd", "adam")
        assert 1e-4 <= trial["params"]["lr"] <= 1e-1
    assert len({t["params"]["lr"] for t in items}) == 4  # the sampler really searched
    # One report per epoch, steps are epoch numbers. (A trial whose lr made it diverge
    # inside epoch 1 ends with a diagnosis and no epoch reported: skip those.)
    details = [api.trial("e2e", n) for n in range(4)]
    trained = [d for d in details if not d.get("diagnosis")]
    assert trained, [d.get("diagnosis") for d in details]
    detail = trained[0]
    assert [v["step"] for v in detail["intermediate_values"]] == [1, 2]
    assert detail["intermediate_values"][-1]["value"] == detail["value"]
    ran = [len(re.findall(r"leased e2e#", w.log())) for w in workers]
    assert sum(ran) == 4 and all(n >= 1 for n in ran), ran  # both workers trained

    for w in workers:
        w.signal(signal.SIGTERM)
    assert [w.wait(30) for w in workers] == [0, 0]


def test_sigkilled_worker_trial_resumes_from_its_checkpoint_elsewhere(stack: Stack) -> None:
    server = stack.server()
    api = server.api()
    token = server.tokens()["worker"]
    spec = fleet_spec("killed", max_trials=1, max_concurrent=1, space=STEADY, seed=5, **SLOW)
    api.create_study(spec)
    first = stack.worker(server.url, token)
    wait_for(lambda: _reported(api, "killed", 2), 90, "trial 0 two epochs into training")
    first.signal(signal.SIGKILL)
    first.wait(10)

    second = stack.worker(server.url, token)
    items = wait_for(lambda: api.finished("killed", 1), 120, "the trial to finish elsewhere")
    assert len(items) == 1  # re-run, not a new trial
    [trial] = items
    assert trial["state"] == "complete" and trial["attempts"] == 2
    assert "leased killed#0 attempt 2" in second.log()
    detail = api.trial("killed", 0)
    assert len(detail["leases"]) == 2
    assert [v["step"] for v in detail["intermediate_values"]] == list(range(1, 11))
    # Resumed, not restarted: attempt 2 reports only the epochs after its checkpoint.
    # (two epochs reported; the second's checkpoint may still have been uploading)
    resumed = detail["user_attrs"]["resumed_from_step"]
    assert resumed >= 1
    assert "killed#0 resumes from its checkpoint of step" in second.log()
    steps = [m["step"] for m in detail["metrics"] if m["attempt"] == 2]
    assert steps == list(range(resumed + 1, 11))
    listed = api.http.get(f"/trials/{trial['trial_id']}/artifacts").json()
    kinds = {a["kind"] for a in listed}
    assert {"checkpoint", "model"} <= kinds

    # The same trial never interrupted (same seed, same sampler draw): the same curve.
    api.create_study({**spec, "name": "twin"})
    [twin] = wait_for(lambda: api.finished("twin", 1), 120, "the uninterrupted twin")
    assert twin["params"] == trial["params"] and twin["value"] == trial["value"]
    assert _curve(api.trial("twin", 0)) == _curve(detail)


def _reported(api: Any, study: str, epochs: int) -> bool:
    detail = api.running_with_reports(study)
    return bool(detail) and len(detail["intermediate_values"]) >= epochs


def _curve(detail: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Each epoch's training figures (not its timings), as the trial last reported them (a
    SIGKILL between a report and its checkpoint's upload has that epoch trained twice)."""
    keys = ("val_accuracy", "val_loss", "train_loss", "grad_norm", "lr")
    last = {m["step"]: tuple(m["metrics"][k] for k in keys) for m in detail["metrics"]}
    return sorted(last.items())


def test_sigterm_preempts_the_trial_for_an_immediate_rerun(stack: Stack) -> None:
    # A long lease TTL: the re-run cannot come from lease expiry, only from the hand-back.
    server = stack.server(HPO_LEASE_TTL_S="120")
    api = server.api()
    token = server.tokens()["worker"]
    api.create_study(fleet_spec("termed", max_trials=1, max_concurrent=1, space=STEADY, **SLOW))
    first = stack.worker(server.url, token)
    wait_for(lambda: api.running_with_reports("termed"), 90, "trial 0 training on worker 1")

    stopped_at = time.monotonic()
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert "termed#0 abandoned: worker preempted (SIGTERM)" in first.log()
    queued = api.trials("termed")
    assert [t["state"] for t in queued] == ["queued"]
    assert queued[0]["preemptions"] == 1  # shown as preempted, not as a failed attempt

    second = stack.worker(server.url, token)
    [trial] = wait_for(lambda: api.finished("termed", 1), 100, "the abandoned trial to re-run")
    assert trial["state"] == "complete" and trial["attempts"] == 2
    assert time.monotonic() - stopped_at < 100  # well before the 120 s TTL would expire
    assert "leased termed#0 attempt 2" in second.log()
    # The preemption saved where the epoch stopped: attempt 2 continues, reporting once per epoch.
    detail = api.trial("termed", 0)
    assert detail["user_attrs"]["resumed_from_step"] >= 1
    assert [v["step"] for v in detail["intermediate_values"]] == list(range(1, 11))
    assert detail["preemptions"] == 1


def test_server_outage_loses_no_completion(stack: Stack) -> None:
    # Leases outlive the outage (TTL 60 s): nothing is re-run, every result arrives.
    server = stack.server(HPO_LEASE_TTL_S="60")
    api = server.api()
    token = server.tokens()["worker"]
    api.create_study(fleet_spec("outage", max_trials=2, max_concurrent=1, space=STEADY, epochs=6))
    server.stop()

    worker = stack.worker(server.url, token)  # the server is down: the worker waits
    wait_for(lambda: "waiting for server at " + server.url in worker.log(), 90, "waiting log")
    server.start()
    wait_for(lambda: api.running_with_reports("outage"), 90, "trial 0 training")

    server.kill()  # crash while trial 0 trains: its completion must wait for the server
    completion_retry = re.compile(r"leases/[^/]+/complete failed")
    wait_for(lambda: completion_retry.search(worker.log()), 60, "a failed completion attempt")
    time.sleep(2)
    server.start()  # same port, same database

    items = wait_for(lambda: api.finished("outage", 2), 120, "both trials to finish")
    summary = sorted((t["number"], t["state"], t["attempts"]) for t in items)
    assert summary == [(0, "complete", 1), (1, "complete", 1)]
    assert all(t["value"] is not None for t in items)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0

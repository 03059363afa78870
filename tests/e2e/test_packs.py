"""``hpo worker --pack K`` end to end: a real server, real worker processes, real MNIST.

A fused pack's members are still trials: each reports every epoch, is pruned
alone, and ends with its own result, equal to the same trial trained alone;
killing the pack's worker re-runs every member elsewhere from its own checkpoint,
each finished once.
"""

from __future__ import annotations

from typing import Any

import pytest

from hpo.settings import TrainConfig
from tests.e2e.conftest import Stack
from tests.support import study_spec, wait_for
from workers.data import load_mnist
from workers.trainer import train

SPACE = {
    "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "adam", "rmsprop"]},
    "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
}


def packed_spec(name: str, trials: int, epochs: int = 2, **extra: Any) -> dict[str, Any]:
    return study_spec(
        name,
        space=SPACE,
        sampler={"name": "random", "seed": 5},
        budget={"max_trials": trials, "max_retries": 3},
        fixed={"epochs": epochs, "train_subset": 1000, "hidden": 64},
        **extra,
    )


def test_a_pack_trains_each_member_as_it_would_train_alone(stack: Stack) -> None:
    server = stack.server()
    api = server.api()
    pruner = {"name": "median", "options": {"n_startup_trials": 3, "n_warmup_steps": 1}}
    api.create_study(packed_spec("packed", 8, epochs=3, pruner=pruner))
    worker = stack.worker(server.url, server.tokens()["worker"], "--pack", "4", "--max-trials", "8")
    trials = wait_for(lambda: api.finished("packed", 8), 180, "8 finished trials")
    assert worker.wait(60) == 0
    assert "training a pack of 4" in worker.log()
    assert {t["state"] for t in trials} <= {"complete", "pruned"} and all(
        t["attempts"] == 1 for t in trials
    )
    mnist = load_mnist(stack.data_dir)
    for t in trials:  # the same trial alone: same seed, same settings, same curve
        detail = api.trial("packed", t["number"])
        lease = detail["leases"][0]
        settings = {"epochs": 3, "train_subset": 1000, "hidden": 64, **t["params"]}
        solo = train(TrainConfig.from_settings(settings, seed=_seed(api, t["number"])), mnist)
        packed = [v["value"] for v in detail["intermediate_values"]]
        alone = [h["val_accuracy"] for h in solo.history][: len(packed)]
        assert packed == pytest.approx(alone, abs=2e-3), (t["number"], lease["worker_id"])


def _seed(api: Any, number: int) -> int:
    from hpo.spec import trial_seed

    study = api.http.get("/studies/packed").json()
    return trial_seed(study["seed"], number)


def test_killing_the_pack_worker_resumes_every_member_once(stack: Stack) -> None:
    server = stack.server()
    api = server.api()
    api.create_study(packed_spec("killed", 4, epochs=30))
    token = server.tokens()["worker"]
    packer = stack.worker(server.url, token, "--pack", "4")
    wait_for(lambda: api.running_with_reports("killed", 0), 120, "the pack training")
    assert len([t for t in api.trials("killed") if t["state"] == "running"]) == 4
    packer.kill()  # SIGKILL: every member's lease expires
    stack.worker(server.url, token, "--max-trials", "4")  # a solo worker picks them up
    trials = wait_for(lambda: api.finished("killed", 4), 300, "the 4 re-runs")
    assert sorted(t["number"] for t in trials) == [0, 1, 2, 3]  # nothing lost, nothing added
    assert all(t["attempts"] == 2 and t["state"] == "complete" for t in trials), trials
    for t in trials:  # each member went on from its own checkpoint, on a solo worker
        detail = api.trial("killed", t["number"])
        resumed = detail["user_attrs"]["resumed_from_step"]
        assert resumed >= 1, t["number"]
        assert [m["step"] for m in detail["metrics"] if m["attempt"] == 2] == list(
            range(resumed + 1, 31)
        )
        assert [v["step"] for v in detail["intermediate_values"]] == list(range(1, 31))

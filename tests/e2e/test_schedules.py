"""Schedules end to end: promotion ASHA and PBT with real workers, real HTTP, real MNIST.

Small trials (500 training and 500 validation images, 3-4 epochs) keep each test at
seconds of training.
"""

from __future__ import annotations

import signal
from typing import Any

from tests.e2e.conftest import Stack
from tests.support import study_spec, wait_for

LR = {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}
FIXED = {"optimizer": "sgd", "train_subset": 500, "val_size": 500}


def pbt_spec(
    name: str, seed: int, population: int, interval: int, fixed: dict[str, Any]
) -> dict[str, Any]:
    """A PBT study over LR: two segments per member, lr explored by x0.5 or x2."""
    return study_spec(
        name,
        sampler={"name": "random", "seed": seed},
        budget={"max_trials": 2 * population, "max_concurrent": population},
        fixed=fixed,
        space=LR,
        schedule={
            "name": "pbt",
            "population_size": population,
            "perturbation_interval": interval,
            "quantile": 0.5,
            "mutations": {"lr": {"factors": [0.5, 2.0]}},
        },
    )


def test_promotion_resumes_from_the_rungs_checkpoint(stack: Stack) -> None:
    server = stack.server()
    api = server.api()
    spec = study_spec(
        "asha",
        sampler={"name": "random", "seed": 3},
        budget={"max_trials": 3, "max_concurrent": 1},
        fixed={**FIXED, "epochs": 3},
        space=LR,
        schedule={"name": "asha", "mode": "promotion", "reduction_factor": 3, "max_resource": 3},
    )
    api.create_study(spec)
    worker = stack.worker(server.url, server.tokens()["worker"])
    paused = wait_for(lambda: _in_state(api, "asha", "paused"), 90, "a paused trial")
    assert paused["state"] == "paused"
    listed = api.http.get("/studies/asha/trials", params={"state": "paused"}).json()
    listed = listed["items"] if isinstance(listed, dict) else listed
    assert listed and all(t["state"] == "paused" for t in listed)
    summary = api.http.get("/studies/asha").json()
    assert summary["counts"]["paused"] >= 1  # shown as paused, not as running

    items = wait_for(lambda: api.finished("asha", 3), 120, "the top rung filled")
    by_state = sorted(t["state"] for t in items)
    assert by_state == ["complete", "pruned", "pruned"], items
    [top] = [t for t in items if t["state"] == "complete"]
    detail = api.trial("asha", top["number"])
    # It paused at rung 0 (step 1), was promoted, and resumed from that checkpoint.
    assert detail["user_attrs"]["resumed_from_step"] == 1
    assert [m["step"] for m in detail["metrics"] if m["attempt"] == 1] == [1]
    assert [m["step"] for m in detail["metrics"] if m["attempt"] > 1] == [2, 3]
    assert [v["step"] for v in detail["intermediate_values"]] == [1, 2, 3]
    # The promoted trial was the best of the rung; the others ended there.
    rung0 = {
        t["number"]: api.trial("asha", t["number"])["intermediate_values"][0]["value"]
        for t in items
    }
    assert rung0[top["number"]] == max(rung0.values())
    for t in items:
        if t["state"] == "pruned":
            assert [v["step"] for v in api.trial("asha", t["number"])["intermediate_values"]] == [1]
    assert api.http.get("/studies/asha").json()["state"] == "stopped"
    assert "resumes from its checkpoint of step 1" in worker.log()


def test_sigkill_during_pbt_loses_no_member(stack: Stack) -> None:
    server = stack.server()
    api = server.api()
    token = server.tokens()["worker"]
    api.create_study(pbt_spec("pbt", 4, population=2, interval=2, fixed={**FIXED, "epochs": 4}))
    workers = [stack.worker(server.url, token), stack.worker(server.url, token)]
    training = wait_for(
        lambda: _in_state(api, "pbt", "running", reported=True), 90, "a segment training"
    )
    # Kill the worker that holds it (the other one may be between segments, holding none).
    [holder] = [w for w in workers if f"registered as worker {training['worker_id']}" in w.log()]
    holder.signal(signal.SIGKILL)
    holder.wait(10)
    stack.worker(server.url, token)

    items = wait_for(lambda: api.finished("pbt", 4), 180, "4 segments finished")
    assert len(items) == 4 and all(t["state"] == "complete" for t in items), items
    details = [api.trial("pbt", t["number"]) for t in items]
    lineage = sorted(
        (d["user_attrs"]["pbt_member"], d["user_attrs"]["pbt_segment"]) for d in details
    )
    assert lineage == [(0, 0), (0, 1), (1, 0), (1, 1)]  # no member lost, none doubled
    assert max(t["attempts"] for t in items) >= 2  # the killed segment ran again
    numbers = {d["number"] for d in details}
    for d in details:
        attrs, steps = d["user_attrs"], [v["step"] for v in d["intermediate_values"]]
        if attrs["pbt_segment"] == 0:
            assert attrs["pbt_parent"] is None and steps == [1, 2]
        else:  # continues from a segment-0 checkpoint at step 2: its own or a copied one
            assert attrs["pbt_start_step"] == 2 and attrs["pbt_parent"] in numbers
            assert attrs["resumed_from_step"] == 2 and steps == [3, 4]
            parent = api.trial("pbt", attrs["pbt_parent"])
            assert parent["user_attrs"]["pbt_segment"] == 0
            changed = attrs["pbt_changed"]
            if parent["user_attrs"]["pbt_member"] != attrs["pbt_member"]:  # exploit + explore
                assert changed["exploited_member"] == parent["user_attrs"]["pbt_member"]
                assert (
                    d["params"]["lr"]
                    in (
                        parent["params"]["lr"] * 0.5,
                        parent["params"]["lr"] * 2.0,
                        1e-3,
                        1e-1,
                    )
                    or "lr" not in changed
                )
            else:
                assert changed == {} and d["params"] == parent["params"]


def test_a_pack_runs_its_population_through_pbt_inside_the_pack(stack: Stack) -> None:
    """A population of 3 through one --pack 2 worker: at a segment's end a successor
    whose parent just left the pack continues the parent's state from the pack (its
    file not fetched), the others from the parent's checkpoint file; every segment's
    curve is the solo run of the same decisions (the parent's checkpoint adopted)."""
    server = stack.server()
    api = server.api()
    fixed = {**FIXED, "optimizer": "momentum", "train_subset": 300, "val_size": 300}
    api.create_study(
        pbt_spec("packed-pbt", 6, population=3, interval=1, fixed={**fixed, "epochs": 2})
    )
    worker = stack.worker(server.url, server.tokens()["worker"], "--pack", "2")
    items = wait_for(lambda: api.finished("packed-pbt", 6), 120, "6 segments finished")
    assert all(t["state"] == "complete" and t["attempts"] == 1 for t in items), items
    log = worker.log()
    assert log.count("training a pack of 2") == 1, log  # one pack, refilled, never rebuilt
    details = {d["number"]: d for d in (api.trial("packed-pbt", t["number"]) for t in items)}
    lineage = [
        (d["user_attrs"]["pbt_member"], d["user_attrs"]["pbt_segment"]) for d in details.values()
    ]
    assert sorted(lineage) == [(m, s) for m in range(3) for s in range(2)]
    in_pack = 0
    for number, d in details.items():
        if d["user_attrs"]["pbt_segment"] == 0:
            continue
        assert d["user_attrs"]["resumed_from_step"] == 1
        from_pack = f"packed-pbt#{number} continues its parent's state in this pack at step 1"
        from_file = f"packed-pbt#{number} resumes from its checkpoint of step 1"
        assert (from_pack in log) != (from_file in log), (number, log)
        in_pack += from_pack in log
    assert in_pack >= 1 and log.count("inside the pack at epoch 1") == in_pack, log
    _replay_solo(stack, api, details, {**fixed, "epochs": 2})


def _replay_solo(stack: Stack, api: Any, details: dict[int, Any], fixed: dict[str, Any]) -> None:
    """Each segment solo with the server's decisions: its curve equals the pack's."""
    import shutil
    import tempfile
    from pathlib import Path

    import pytest

    from hpo.settings import TrainConfig
    from hpo.spec import trial_seed
    from workers.data import load_mnist
    from workers.inherit import adopt
    from workers.trainer import train

    class Pause:
        def __init__(self, end: int) -> None:
            self.end = end

        def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
            return epoch < self.end or self.end >= 2

        def should_stop(self) -> bool:
            return False

    mnist, seed = load_mnist(stack.data_dir), api.http.get("/studies/packed-pbt").json()["seed"]
    folder = Path(tempfile.mkdtemp(prefix="pbt-replay-"))
    try:
        for number in sorted(details, key=lambda n: details[n]["user_attrs"]["pbt_segment"]):
            d, path = details[number], folder / f"{number}.pt"
            config = TrainConfig.from_settings({**fixed, **d["params"]}, trial_seed(seed, number))
            if (parent := d["user_attrs"]["pbt_parent"]) is not None:
                shutil.copy(folder / f"{parent}.pt", path)
                adopt(path, config)
            end = d["user_attrs"]["pbt_segment"] + 1
            solo = train(config, mnist, hooks=Pause(end), checkpoint=path)
            reported = [v["value"] for v in d["intermediate_values"]]
            assert reported == pytest.approx([solo.history[-1]["val_accuracy"]], abs=1e-5)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _in_state(api: Any, study: str, state: str, reported: bool = False) -> dict[str, Any] | None:
    for t in api.trials(study):
        if t["state"] == state:
            if not reported:
                return t
            if api.trial(study, t["number"]).get("intermediate_values"):
                return t
    return None

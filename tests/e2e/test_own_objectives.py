"""Tune your own model: Optuna objectives and training commands on a real server and real
worker processes over real HTTP (``hpo worker --objective`` / ``--command``).

The objectives are in ``tests/e2e/objectives.py`` and the command in
``tests/e2e/command_child.py``; both are plain user code. Lease TTL is 3 s.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tests.e2e.conftest import Server, Stack
from tests.support import study_spec, wait_for

OBJECTIVES = "tests.e2e.objectives"
COMMAND = f"{sys.executable} tests/e2e/command_child.py"
X = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def toy(name: str, workload: str = "toy", **overrides: Any) -> dict[str, Any]:
    """A study of one of the test objectives (no MNIST involved)."""
    base = {"sampler": {"name": "random", "seed": 3}, "objective": "value", "space": {}}
    return study_spec(name, workload=workload, **{**base, **overrides})


def objective_worker(stack: Stack, server: Server, func: str, *args: str) -> Any:
    token = server.tokens()["worker"]
    return stack.worker(server.url, token, "--objective", f"{OBJECTIVES}:{func}", *args)


def finished(server: Server, name: str, count: int) -> list[dict[str, Any]]:
    return wait_for(lambda: server.api().finished(name, count), 120, f"{count} trials of {name}")


def optuna_trials(server: Server, name: str) -> list[optuna.trial.FrozenTrial]:
    url = server.env["HPO_DATABASE_URL"]
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


# --------------------------------------------------------------------------- --objective


def test_define_by_run_objective_samples_on_the_server(stack: Stack) -> None:
    server = stack.server()
    server.api().create_study(
        toy("dbr", sampler={"name": "tpe", "seed": 5}, budget={"max_trials": 10})
    )
    objective_worker(stack, server, "conditional", "--workload", "toy", "--max-trials", "10")
    items = finished(server, "dbr", 10)
    kinds = set()
    for t in items:
        assert t["state"] == "complete", t
        kinds.add(t["params"]["kind"])
        if t["params"]["kind"] == "smooth":
            assert set(t["params"]) == {"kind", "x"} and 1e-3 <= t["params"]["x"] <= 10
        else:  # the conditional branch, with its stepped distributions
            assert set(t["params"]) == {"kind", "n", "y"}
            assert t["params"]["n"] in range(2, 21, 3) and t["params"]["y"] in (
                0,
                0.25,
                0.5,
                0.75,
                1,
            )
    assert kinds == {"smooth", "grid"}
    # Recorded as study.optimize would: Optuna's own distributions and params.
    by_number = {t.number: t for t in optuna_trials(server, "dbr")}
    for t in items:
        frozen = by_number[t["number"]]
        assert frozen.params == t["params"] and frozen.value == t["value"]
        if "x" in frozen.params:
            assert frozen.distributions["x"].log is True
        if "n" in frozen.params:
            assert frozen.distributions["n"].step == 3


def test_declared_space_pruning_and_multi_objective(stack: Stack) -> None:
    server = stack.server()
    api = server.api()
    pruner = {"name": "median", "options": {"n_startup_trials": 2, "n_warmup_steps": 1}}
    space = {"quality": {"type": "float", "low": 0.0, "high": 1.0}}
    api.create_study(toy("prune", pruner=pruner, space=space, budget={"max_trials": 10}))
    two = {
        "space": {"width": {"type": "int", "low": 1, "high": 100}},
        "sampler": {"name": "nsga2", "seed": 2},
        "directions": ["maximize", "minimize"],
        "objectives": ["accuracy", "size"],
        "objective": None,
        "direction": None,
        "budget": {"max_trials": 6},
    }
    api.create_study(toy("multi", workload="toy2", **two))
    objective_worker(stack, server, "pruning", "--workload", "toy", "--max-trials", "10")
    objective_worker(stack, server, "two_objectives", "--workload", "toy2", "--max-trials", "6")
    pruned = finished(server, "prune", 10)
    states = {t["state"] for t in pruned}
    assert states == {"complete", "pruned"}, pruned  # should_prune() stopped the weak ones
    for t in pruned:
        steps = len(api.trial("prune", t["number"])["intermediate_values"])
        assert steps == 5 if t["state"] == "complete" else steps < 5
    for t in finished(server, "multi", 6):
        width = t["params"]["width"]
        assert t["state"] == "complete" and t["values"] == [1 - 1 / width, float(width)]


def test_objective_failures_name_their_cause(stack: Stack) -> None:
    server = stack.server()
    api = server.api()
    for name in ("raises", "disagrees", "non_numeric"):
        api.create_study(
            toy(name, workload=name.replace("_", "-"), space=X, budget={"max_trials": 1})
        )
        workload = name.replace("_", "-")
        objective_worker(stack, server, name, "--workload", workload, "--max-trials", "1")
    reasons = {n: finished(server, n, 1)[0] for n in ("raises", "disagrees", "non_numeric")}
    assert all(t["state"] == "fail" for t in reasons.values()), reasons
    assert "ValueError: the objective broke on purpose (42)" in reasons["raises"]["fail_reason"]
    disagree = reasons["disagrees"]["fail_reason"]
    assert "parameter 'x'" in disagree and "high=2.0" in disagree and "high=1.0" in disagree
    assert "returned str 'not a number'" in reasons["non_numeric"]["fail_reason"]


def test_bad_objective_or_command_exits_at_start(stack: Stack) -> None:
    server = stack.server()
    token = server.tokens()["worker"]
    broken = stack.worker(
        server.url,
        token,
        "--objective",
        "tests.e2e.broken_objective:objective",
        "--workload",
        "toy",
    )
    missing = stack.worker(
        server.url, token, "--command", "no-such-program --flag", "--workload", "toy"
    )
    assert broken.wait(60) == 2 and missing.wait(60) == 2
    assert "importing 'tests.e2e.broken_objective' failed: ImportError" in broken.log()
    assert "'no-such-program' not found on PATH" in missing.log()


# --------------------------------------------------------------------------- --command


def command_worker(stack: Stack, server: Server, *args: str) -> Any:
    token = server.tokens()["worker"]
    return stack.worker(server.url, token, "--command", COMMAND, "--workload", "cmd", *args)


def modes(*names: str) -> dict[str, Any]:
    return {"mode": {"type": "categorical", "choices": list(names)}, **X}


def test_command_reports_each_epoch_and_completes(stack: Stack) -> None:
    server = stack.server()
    api = server.api()
    api.create_study(
        toy("cmd-report", workload="cmd", space=modes("report"), budget={"max_trials": 2})
    )
    command_worker(stack, server, "--max-trials", "2")
    for t in finished(server, "cmd-report", 2):
        assert t["state"] == "complete" and t["value"] == round(3 * t["params"]["x"], 4)
        detail = api.trial("cmd-report", t["number"])
        assert [v["step"] for v in detail["intermediate_values"]] == [1, 2, 3]
        assert [m["metrics"]["loss"] for m in detail["metrics"]] == [1.0, 0.5, 0.333]


def test_a_pruned_command_loses_its_whole_process_group(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = stack.server()
    pruner = {"name": "threshold", "options": {"lower": 0.3}}
    spec = toy(
        "cmd-prune",
        workload="cmd",
        space=modes("stubborn"),
        pruner=pruner,
        budget={"max_trials": 1},
    )
    server.api().create_study(spec)
    pids = tmp_path / "pids"
    monkeypatch.setenv("PIDS", str(pids))  # the worker passes it on to the command
    command_worker(stack, server, "--prune-grace", "1", "--max-trials", "1")
    [trial] = finished(server, "cmd-prune", 1)
    assert trial["state"] == "pruned", trial
    child, grandchild = (int(p) for p in pids.read_text().split())
    wait_for(
        lambda: not _running(child) and not _running(grandchild), 20, "the process group to end"
    )


def test_a_crashing_command_fails_with_its_stderr(stack: Stack) -> None:
    server = stack.server()
    server.api().create_study(
        toy("cmd-crash", workload="cmd", space=modes("crash"), budget={"max_trials": 1})
    )
    command_worker(stack, server, "--max-trials", "1")
    [trial] = finished(server, "cmd-crash", 1)
    assert trial["state"] == "fail"
    assert "exited with code 3" in trial["fail_reason"] and "out of cheese" in trial["fail_reason"]


def test_sigkill_of_the_worker_reruns_the_command_trial_once(stack: Stack) -> None:
    server = stack.server()
    spec = toy(
        "cmd-kill", workload="cmd", space=modes("slow"), budget={"max_trials": 1, "max_retries": 2}
    )
    server.api().create_study(spec)
    first = command_worker(stack, server)
    wait_for(lambda: "started" in first.log(), 60, "the first worker to start the command")
    params = server.api().trials("cmd-kill")[0]["params"]
    first.kill()  # SIGKILL: no goodbye; the child dies with it (PR_SET_PDEATHSIG)
    second = command_worker(stack, server, "--max-trials", "1")
    [trial] = finished(server, "cmd-kill", 1)
    assert trial["state"] == "complete" and trial["value"] == 0.75
    assert trial["attempts"] == 2 and trial["params"] == params
    assert "attempt 2" in second.log()


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


# --------------------------------------------------------------------------- matching


def test_workers_only_lease_what_they_run_and_waiting_studies_say_why(stack: Stack) -> None:
    server = stack.server()
    api = server.api()
    api.create_study(toy("mine", space=X, budget={"max_trials": 3}))
    api.create_study(toy("theirs", workload="other", space=X, budget={"max_trials": 3}))
    needs_gpu = toy("gpu-only", space=X, resources={"gpus": 2, "gpu_memory_gb": 40})
    api.create_study(needs_gpu)
    worker = objective_worker(
        stack, server, "conditional", "--workload", "toy", "--max-trials", "3"
    )
    assert worker.wait(120) == 0
    assert len(api.trials("mine")) == 3
    assert api.trials("theirs") == [] and api.trials("gpu-only") == []
    objective_worker(stack, server, "conditional", "--workload", "toy")  # stays alive, idle
    wait_for(lambda: "no work" in stack.procs[-1].log(), 60, "the idle worker")
    theirs = api.http.get("/studies/theirs").json()["waiting_reason"]
    gpu = api.http.get("/studies/gpu-only").json()["waiting_reason"]
    assert "no live worker runs workload 'other'" in theirs
    assert "need 2 GPU(s) with 40 GiB" in gpu and "has 0" in gpu
    assert api.http.get("/studies/mine").json()["waiting_reason"] is None  # budget used


# --------------------------------------------------------------------------- examples/


def _example(path: str, **budget: int) -> dict[str, Any]:
    spec = yaml.safe_load(Path(path).read_text())
    spec["budget"] = {**spec.get("budget", {}), **budget}
    return spec


def test_the_examples_run_on_the_fleet(stack: Stack) -> None:
    server = stack.server()
    api = server.api()
    api.create_study(_example("examples/sklearn_objective/study.yaml", max_trials=4))
    api.create_study(_example("examples/pytorch_command/study.yaml", max_trials=2))
    token = server.tokens()["worker"]
    sklearn = "examples.sklearn_objective.objective:objective"
    script = f"{sys.executable} examples/pytorch_command/train.py"
    stack.worker(
        server.url,
        token,
        "--objective",
        sklearn,
        "--workload",
        "sklearn-digits",
        "--max-trials",
        "4",
    )
    stack.worker(
        server.url,
        token,
        "--command",
        script,
        "--workload",
        "mnist-script",
        "--no-param-args",
        "--max-trials",
        "2",
    )
    for t in finished(server, "sklearn-digits", 4):
        assert t["state"] == "complete" and 0.0 < t["value"] <= 1.0
        assert t["params"]["classifier"] in ("svc", "random_forest")
    for t in finished(server, "mnist-script", 2):
        assert t["state"] in ("complete", "pruned") and t["value"] > 0.5, t
        assert api.trial("mnist-script", t["number"])["intermediate_values"]  # per-epoch reports


# --------------------------------------------------------------------------- compression


def test_compression_study_front_equals_optunas_best_trials(stack: Stack) -> None:
    """A real multi-objective study: server, worker, NSGA-II, the built-in trainer with
    pruning, low rank and quantization; accuracy against bytes."""
    spec = yaml.safe_load(Path("studies/mnist-compression-cpu.yaml").read_text())
    spec["budget"] = {"max_trials": 6, "max_concurrent": 1}
    spec["fixed"] = {**spec["fixed"], "epochs": 1, "train_subset": 1000}
    spec["sampler"]["options"] = {"population_size": 4}
    server = stack.server()
    api = server.api()
    api.create_study(spec)
    stack.worker(server.url, server.tokens()["worker"], "--max-trials", "6")
    trials = finished(server, spec["name"], 6)
    assert all(t["state"] == "complete" for t in trials), trials
    for t in trials:
        assert len(t["values"]) == 2 and t["values"][1] > 1000  # bytes, measured
    front = api.http.get(f"/studies/{spec['name']}/pareto").json()
    assert front["objectives"] == ["val_accuracy", "model_bytes"] and front["trials"]
    best = optuna.load_study(study_name=spec["name"], storage=server.env["HPO_DATABASE_URL"])
    expected = {t.number: t.values for t in best.best_trials}
    assert {t["number"]: t["values"] for t in front["trials"]} == expected

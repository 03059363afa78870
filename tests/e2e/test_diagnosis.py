"""Diagnosis end to end: real trials of the built-in trainer on a real server, a study
with a deliberately bad region (sgd with learning rates up to 10), and the
proposal that narrows it; per-trial findings with their evidence on the trial."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from hpo.cli.study import study_app
from tests.e2e.conftest import Stack
from tests.support import study_spec, wait_for

TRIALS = 30


def test_a_bad_region_is_found_and_narrowed(stack: Stack) -> None:
    server = stack.server()
    api = server.api()
    space = {"lr": {"type": "float", "low": 1e-3, "high": 10.0, "log": True}}
    spec = study_spec(
        "diverging",
        space=space,
        sampler={"name": "random", "seed": 4},
        budget={"max_trials": TRIALS, "max_concurrent": 2},
        fixed={"optimizer": "sgd", "epochs": 1, "train_subset": 500},
    )
    api.create_study(spec)
    token = server.tokens()["worker"]
    for _ in range(2):
        stack.worker(server.url, token, "--studies", "diverging", "--idle-exit", "5")
    trials = wait_for(lambda: api.finished("diverging", TRIALS), 300, "30 finished trials")
    diverged = [t for t in trials if t["diagnosis"] == "diverged"]
    assert len(diverged) >= 5, [t["params"]["lr"] for t in trials]
    # Each diverged trial carries the finding with its evidence (the epoch, the loss, the lr).
    detail = api.trial("diverging", diverged[0]["number"])
    [finding] = [f for f in detail["findings"] if f["kind"] == "diverged"]
    assert finding["epoch"] == 1 and "lr" in finding["evidence"] and finding["message"]
    healthy = [t for t in trials if t["diagnosis"] is None and t["params"]["lr"] < 0.1]
    calm = api.trial("diverging", healthy[0]["number"])
    assert not calm["findings"]  # a healthy trial gets no finding
    # The worker's telemetry of the trial, with throughput from its reports.
    assert calm["telemetry"]["util_mean_pct"] > 0 and calm["telemetry"]["samples_per_s"] > 0
    assert 0 <= calm["telemetry"]["data_wait_share"] < 1

    found = api.http.get("/studies/diverging/diagnosis").json()
    assert found["trials"] == TRIALS and found["findings"]["diverged"] == len(diverged)
    [proposal] = [p for p in found["proposals"] if p["outcome"] == "diverged"]
    assert proposal["edit"]["path"] == "space.lr.high" and proposal["edit"]["old"] == 10.0
    lowest_diverged = min(t["params"]["lr"] for t in diverged)
    assert proposal["edit"]["new"] <= lowest_diverged  # every diverged trial is cut away
    assert f"{proposal['bad']} of {proposal['total']}" in proposal["message"]

    env = {"HPO_SERVER": server.url, "HPO_TOKEN": server.tokens()["admin"], "COLUMNS": "200"}
    printed = CliRunner().invoke(study_app, ["diagnose", "diverging"], env=env)
    assert printed.exit_code == 0 and "space.lr.high" in printed.stdout
    as_json = CliRunner().invoke(study_app, ["diagnose", "diverging", "-f", "json"], env=env)
    assert json.loads(as_json.stdout)["proposals"][0]["edit"]["path"] == "space.lr.high"

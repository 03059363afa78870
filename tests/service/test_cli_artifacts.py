"""``hpo study best-model`` and ``hpo study gc`` against a real server (uvicorn in a
thread, SQLite, auth on). The artifacts are made through the real API: a worker
leases a trial, uploads checkpoints and a model through its lease and completes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.lease_helpers import Worker, upload_artifact
from tests.service.test_cli_studies import CLI_SPACE, hpo
from tests.support import LiveApp, live_app, study_spec


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    with live_app(tmp_path_factory.mktemp("cli-artifacts")) as server:
        yield server


@pytest.fixture
def worker(live: LiveApp) -> Iterator[Worker]:
    with httpx.Client(base_url=live.url, timeout=10) as http:
        yield Worker(http, live.tokens.worker)


def create(live: LiveApp, name: str, **changes: Any) -> None:
    body = study_spec(name, space=CLI_SPACE, budget={"max_trials": 20}, **changes)
    with live.client("admin") as admin:
        answer = admin.post("/studies", json=body)
    assert answer.status_code == 201, answer.text


def run_trial(
    worker: Worker,
    study: str,
    result: dict[str, Any],
    model: bytes | None = None,
    checkpoints: tuple[int, ...] = (),
) -> int:
    """Lease a trial of ``study``, upload its checkpoints (100 bytes a step) and model,
    complete it with ``result``; its number."""
    trial = worker.trial(studies=[study])
    for step in checkpoints:
        upload_artifact(
            worker,
            trial["lease_id"],
            b"c" * 100 * step,
            kind="checkpoint",
            step=step,
            filename="ckpt.tar",
        )
    if model is not None:
        upload_artifact(worker, trial["lease_id"], model, kind="model", filename="model.pt")
    worker.ok(trial["lease_id"], "complete", result)
    return int(trial["trial_number"])


def test_best_model_downloads_the_best_trials_model(
    live: LiveApp, worker: Worker, tmp_path: Path
) -> None:
    create(live, "cli-best")
    out = tmp_path / "out"
    empty = hpo(live, "best-model", "cli-best", "-o", str(out))
    assert empty.exit_code == 1
    assert "has no model artifact yet" in empty.output and not out.exists()

    run_trial(worker, "cli-best", {"value": 0.95})  # the best, but it kept no model
    nothing = hpo(live, "best-model", "cli-best", "-o", str(out))
    assert nothing.exit_code == 1 and "has no model artifact yet" in nothing.output
    assert not out.exists()  # no empty trial folder either

    create(live, "cli-models")
    numbers = [
        run_trial(worker, "cli-models", {"value": v}, model=f"weights {v}".encode() * 500)
        for v in (0.5, 0.9, 0.7)
    ]
    got = hpo(live, "best-model", "cli-models", "-o", str(out), token="viewer")
    assert got.exit_code == 0, got.output
    best = out / f"trial-{numbers[1]}" / "model.pt"
    assert best.read_bytes() == b"weights 0.9" * 500
    assert sorted(out.rglob("*")) == [best.parent, best]  # the best trial's folder only
    assert f"wrote {best} (5.5 kB)" in got.output
    assert "1 file from 1 trial of study 'cli-models'" in got.output

    missing = hpo(live, "best-model", "no-such-study", "-o", str(out))
    assert missing.exit_code == 1
    assert missing.output.strip() == "error: 404 study 'no-such-study' not found"
    usage = hpo(live, "best-model", "cli-models")
    assert usage.exit_code == 2 and "--output" in usage.output


def test_best_model_of_a_multi_objective_study_takes_every_pareto_trial(
    live: LiveApp, worker: Worker, tmp_path: Path
) -> None:
    create(
        live,
        "cli-pareto",
        directions=["maximize", "minimize"],
        objectives=["val_accuracy", "seconds"],
    )
    results = [[0.9, 10.0], [0.8, 5.0], [0.7, 20.0]]  # the third is dominated by both
    numbers = [
        run_trial(worker, "cli-pareto", {"values": r}, model=f"m{i}".encode())
        for i, r in enumerate(results)
    ]
    got = hpo(live, "best-model", "cli-pareto", "--output", str(tmp_path))
    assert got.exit_code == 0, got.output
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == sorted(f"trial-{n}" for n in numbers[:2])
    for i, n in enumerate(numbers[:2]):
        assert (tmp_path / f"trial-{n}" / "model.pt").read_bytes() == f"m{i}".encode()
    assert "2 files from 2 trials of study 'cli-pareto'" in got.output


def test_gc_deletes_finished_checkpoints_and_says_what_it_freed(
    live: LiveApp, worker: Worker
) -> None:
    create(live, "cli-gc", retention={"keep_checkpoints": 2, "keep_best": 1})
    for value in (0.5, 0.9, 0.7):
        run_trial(worker, "cli-gc", {"value": value}, model=b"model", checkpoints=(1, 2))
    refused = hpo(live, "gc", "cli-gc", token="viewer")
    assert refused.exit_code == 1 and "403" in refused.output

    got = hpo(live, "gc", "cli-gc")
    assert got.exit_code == 0, got.output
    # Two trials lose both checkpoints (100 + 200 bytes each), the best keeps its final.
    assert got.output.strip() == (
        "study 'cli-gc': deleted 5 checkpoints, freed 700 bytes; "
        "kept the final checkpoint of the best trial"
    )
    with live.client("viewer") as viewer:
        held = viewer.get("/studies/cli-gc/artifacts").json()["bytes"]
    assert held["checkpoint"] == 200 and held["model"] == 3 * len(b"model")

    again = hpo(live, "gc", "cli-gc")
    assert again.exit_code == 0 and "deleted 0 checkpoints, freed 0 bytes" in again.output
    missing = hpo(live, "gc", "no-such-study")
    assert missing.exit_code == 1 and "404 study 'no-such-study' not found" in missing.output

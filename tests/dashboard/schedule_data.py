"""Schedule studies for the dashboard tests, made through the trial protocol (a worker
spoken over HTTP by the test, no training: a few seconds): a PBT population with
exploits, and a promotion-ASHA study with a promotion and paused trials."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.conftest import Tokens
from tests.service.lease_helpers import Worker, create_study, optuna_trial, upload_artifact

LR = {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}
MOMENTUM = {"momentum": {"type": "float", "low": 0.0, "high": 0.9}}
FIXED = {"optimizer": "momentum"}
PAUSED = {"reason": "paused by the study's schedule", "retry": True, "preempted": True}

#: Two members, three segments of two epochs (6 epochs). The values each member reports
#: per segment (one per epoch): member 1 trails, copies member 0 at step 2, then leads,
#: and member 0 copies it at step 4.
PBT_VALUES = {
    (0, 0): [0.5, 0.8],
    (1, 0): [0.3, 0.4],
    (1, 1): [0.85, 0.95],
    (0, 1): [0.82, 0.84],
    (0, 2): [0.96, 0.97],
    (1, 2): [0.955, 0.96],
}
#: The order segments end in (a member's segment can end only after its previous one).
PBT_ORDER = [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (1, 2)]


@dataclass
class Made:
    """A schedule study made for a test: its id and name, and per trial number what the
    test did with it."""

    study_id: int
    name: str
    trials: dict[int, dict[str, Any]]
    promoted: dict[str, Any] | None = None  # ASHA: the promoted trial's lease
    worker: Worker | None = None


def _study_and_worker(
    client: Any,
    tokens: Tokens,
    name: str,
    schedule: dict[str, Any],
    max_trials: int,
    space: dict[str, Any],
    fixed: dict[str, Any],
) -> tuple[int, Worker]:
    """A study with ``schedule`` and a budget of ``max_trials`` trials (its id), and the
    worker the test runs its trials as."""
    made = create_study(
        client,
        tokens,
        name=name,
        schedule=schedule,
        budget={"max_trials": max_trials},
        space=space,
        fixed=fixed,
    )
    return int(made["study_id"]), Worker(client, tokens.worker)


def pbt_study(client: Any, tokens: Tokens, ctx: Any, name: str = "pbt") -> Made:
    """A PBT study of 2 members x 3 segments, every segment ended (see PBT_VALUES)."""
    schedule = {
        "name": "pbt",
        "population_size": 2,
        "perturbation_interval": 2,
        "quantile": 0.5,
        "resample_probability": 0.0,
        "mutations": {"lr": {"factors": [2.0]}, "momentum": {"factors": [0.5]}},
    }
    study_id, worker = _study_and_worker(
        client, tokens, name, schedule, 6, LR | MOMENTUM, {**FIXED, "epochs": 6}
    )
    held: dict[tuple[int, int], dict[str, Any]] = {}
    trials: dict[int, dict[str, Any]] = {}
    for key in PBT_ORDER:
        while key not in held:  # lease what is ready; the segments come as decided
            trial = worker.trial()
            attrs = optuna_trial(ctx, trial["trial_id"]).user_attrs
            held[(attrs["pbt_member"], attrs["pbt_segment"])] = trial
        trial = held[key]
        _run_segment(worker, trial, PBT_VALUES[key])
        trials[trial["trial_number"]] = {"member": key[0], "segment": key[1], **trial}
    return Made(study_id, name, trials)


def _run_segment(worker: Worker, trial: dict[str, Any], values: list[float]) -> None:
    """Report each epoch from the segment's start; at its end checkpoint, report and hand
    back (the server pauses it), or complete the last segment."""
    lease = trial["lease_id"]
    start = trial["resume"]["step"] if trial["resume"] else 0
    for i, value in enumerate(values):
        step = start + i + 1
        last = i == len(values) - 1
        if last and trial["pause_at"] is not None:
            upload_artifact(
                worker, lease, b"weights %d" % trial["trial_id"], kind="checkpoint", step=step
            )
            assert worker.ok(lease, "report", {"step": step, "value": value})["action"] == "pause"
            assert worker.ok(lease, "fail", PAUSED)["state"] == "complete"
        else:
            worker.ok(lease, "report", {"step": step, "value": value})
    if trial["pause_at"] is None:
        assert worker.ok(lease, "complete", {"value": values[-1]})["state"] == "complete"


#: Promotion ASHA over rungs at epochs 1 and 3 (reduction factor 3): three trials pause at
#: rung 0 with these values; the best (the second) is promoted.
ASHA_VALUES = [0.5, 0.7, 0.6]


def asha_study(client: Any, tokens: Tokens, name: str = "asha") -> Made:
    """A promotion-ASHA study: 3 trials paused at rung 0 (step 1), the best of them
    promoted and leased again (``Made.promoted``), the others paused."""
    asha = {"name": "asha", "mode": "promotion", "reduction_factor": 3, "max_resource": 3}
    study_id, worker = _study_and_worker(
        client, tokens, name, asha, 3, LR, {"epochs": 3, "optimizer": "sgd"}
    )
    trials: dict[int, dict[str, Any]] = {}
    for value in ASHA_VALUES:
        trial = worker.trial()
        lease = trial["lease_id"]
        upload_artifact(worker, lease, b"rung 0 %d" % trial["trial_id"], kind="checkpoint", step=1)
        assert worker.ok(lease, "report", {"step": 1, "value": value})["action"] == "pause"
        assert worker.ok(lease, "fail", PAUSED)["state"] == "paused"
        trials[trial["trial_number"]] = {"rung0": value, **trial}
    promoted = worker.trial()  # the best of rung 0, resumed
    assert trials[promoted["trial_number"]]["rung0"] == max(ASHA_VALUES)
    return Made(study_id, name, trials, promoted, worker)


def finish_promoted(made: Made, value: float = 0.9) -> None:
    """The promoted trial trains to the top rung and completes (that fills the top rung:
    the study stops and the paused trials end pruned)."""
    assert made.promoted is not None and made.worker is not None
    lease = made.promoted["lease_id"]
    for step in (2, 3):
        made.worker.ok(lease, "report", {"step": step, "value": value})
    assert made.worker.ok(lease, "complete", {"value": value})["state"] == "complete"

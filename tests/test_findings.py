"""hpo.findings on hand-built histories: edge cases the real runs do not reach.

The real-run side (each condition provoked by the trainer, and healthy runs
with no finding) is tests/workers/test_findings_runs.py.
"""

from __future__ import annotations

import ast
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from hpo.findings import (
    DEAD_FRACTION,
    EXPLODING_NORM,
    PLATEAU_EPOCHS,
    Finding,
    FindingKind,
    Severity,
    check_trial,
)

REPO = Path(__file__).resolve().parents[1]


def epochs(**series: list[Any]) -> list[dict[str, Any]]:
    """Records from per-metric lists: epochs(train_loss=[...], val_loss=[...])."""
    n = max(len(v) for v in series.values())
    return [{"epoch": i + 1} | {k: v[i] for k, v in series.items() if i < len(v)} for i in range(n)]


def kinds(history: list[dict[str, Any]], **kw: Any) -> set[FindingKind]:
    return {f.kind for f in check_trial(history, **kw)}


def healthy(n: int = 5) -> list[dict[str, Any]]:
    train = [0.8 * 0.6**i for i in range(n)]
    val = [0.5 * 0.9**i for i in range(n)]
    return epochs(
        train_loss=train,
        val_loss=val,
        val_accuracy=[0.85 + 0.01 * i for i in range(n)],
        grad_norm=[2.0] * n,
        grad_norm_max=[4.0] * n,
        grad_norm_min=[1.0] * n,
        grad_norm_first=[1.0] * n,
        dead_fraction=[0.05] * n,
    )


# --------------------------------------------------------------------------- partial histories


def test_healthy_and_empty_histories_get_nothing() -> None:
    assert check_trial([]) == []
    assert check_trial(healthy()) == []
    assert check_trial(healthy(), status="completed", diagnosis=None) == []


def test_checks_skip_metrics_an_own_objective_does_not_report() -> None:
    assert check_trial(epochs(val_accuracy=[0.1, 0.1, 0.1, 0.1, 0.1, 0.1])) == []
    assert check_trial(epochs(loss=[2.3, 2.3, 2.3])) == []  # unknown names are ignored
    # Only a training loss, flat: underfitting is judged, nothing else can be.
    assert kinds(epochs(train_loss=[2.3, 2.3, 2.29])) == {FindingKind.UNDERFITTING}
    # A single epoch cannot show "barely moving"... unless the loss before training is known.
    assert check_trial(epochs(train_loss=[2.3])) == []
    (one,) = check_trial([{"epoch": 1, "train_loss": 2.25, "initial_loss": 2.30}])
    assert one.kind == FindingKind.UNDERFITTING and one.evidence["start_loss"] == 2.30


def test_missing_epoch_numbers_fall_back_to_positions() -> None:
    history = [{"train_loss": v} for v in (2.3, 2.3, 2.3)]
    (finding,) = check_trial(history)
    assert finding.epoch == 1 and finding.evidence["epochs"] == 3


# --------------------------------------------------------------------------- divergence


def test_guard_message_is_parsed_into_evidence() -> None:
    history = epochs(train_loss=[2.25], val_loss=[203.0], lr=[10.0])
    diagnosis = "diverged at epoch 1 batch 2: loss 221.3 > 10 x first loss 2.256"
    (finding,) = check_trial(history, status="diverged", diagnosis=diagnosis)
    assert finding.kind == FindingKind.DIVERGED and finding.severity == Severity.ERROR
    assert finding.evidence == {
        "lr": 10.0,
        "epoch": 1,
        "batch": 2,
        "loss": 221.3,
        "factor": 10,
        "first_loss": 2.256,
    }
    assert finding.message == f"Training {diagnosis}, at lr 10."


@pytest.mark.parametrize("bad", [math.nan, math.inf, "NaN", "Infinity"])
def test_nonfinite_loss_is_divergence_even_without_a_status(bad: Any) -> None:
    history = epochs(train_loss=[1.0, bad], val_loss=[0.9, 0.8])
    (finding,) = check_trial(history)
    assert finding.kind == FindingKind.DIVERGED and finding.epoch == 2
    assert finding.evidence["epoch"] == 2 and finding.evidence["loss"] in ("nan", "inf")
    assert "train loss" in finding.message


def test_end_of_epoch_divergence_message_and_bare_status() -> None:
    history = epochs(train_loss=[1.0, 0.9, 0.8])
    (finding,) = check_trial(history, diagnosis="diverged in epoch 2: loss nan")
    assert finding.epoch == 2 and finding.evidence["loss"] == "nan"
    (bare,) = check_trial(history, status="diverged")
    assert bare.epoch == 3 and bare.message == "Training diverged in epoch 3."


def test_a_diverged_curve_is_not_also_judged_for_fitting() -> None:
    flat = epochs(train_loss=[2.3, 2.3, 2.3, 2.3, 2.3, 2.3])
    assert kinds(flat) == {FindingKind.UNDERFITTING}
    assert kinds(flat, status="diverged") == {FindingKind.DIVERGED}


# --------------------------------------------------------------------------- gradients, units


def test_exploding_gradient_norms() -> None:
    history = healthy()
    history[2]["grad_norm_max"] = 5e4
    (finding,) = check_trial(history)
    assert finding.kind == FindingKind.EXPLODING_GRADIENTS and finding.epoch == 3
    assert finding.severity == Severity.WARNING and finding.evidence["grad_norm_max"] == 5e4
    history[3]["grad_norm_max"] = math.inf
    (worse,) = check_trial(history)
    assert worse.severity == Severity.ERROR and worse.evidence["grad_norm_max"] == "inf"
    # Without grad_norm_max the mean is read; an own objective may pass its own scale.
    means = epochs(grad_norm=[3.0, 2e3])
    assert kinds(means) == {FindingKind.EXPLODING_GRADIENTS}
    assert check_trial(means, exploding_norm=1e4) == []
    assert check_trial(epochs(grad_norm_max=[EXPLODING_NORM])) == []


def test_vanishing_gradients_need_a_loss_that_does_not_move() -> None:
    stuck = epochs(train_loss=[2.30, 2.30, 2.30], grad_norm=[0.13] * 3)
    for record in stuck:
        record["grad_norm_first"] = 0.003
    assert kinds(stuck) == {FindingKind.VANISHING_GRADIENTS, FindingKind.UNDERFITTING}
    (vanishing,) = [f for f in check_trial(stuck) if f.kind == FindingKind.VANISHING_GRADIENTS]
    assert vanishing.evidence["ratio"] == pytest.approx(0.003 / 0.13) and vanishing.epoch == 1
    for record in stuck:  # too-low lr: the loss is flat but the gradient reaches the input
        record["grad_norm_first"] = 0.04  # 31% of the norm, like healthy nets (14-76%)
    assert kinds(stuck) == {FindingKind.UNDERFITTING}
    learning = healthy()
    for record in learning:
        record["grad_norm_first"] = 0.01  # a small share, but the loss falls: fine
    assert check_trial(learning) == []


def test_dead_units_are_judged_at_the_last_measurement() -> None:
    history = healthy()
    for record, dead in zip(history, [0.2, 0.55, 0.7, 0.6, 0.65], strict=True):
        record["dead_fraction"] = dead
    (finding,) = check_trial(history)
    assert finding.kind == FindingKind.DEAD_UNITS and finding.epoch == 2
    assert (
        finding.evidence["dead_fraction"] == 0.65 and finding.evidence["max_dead_fraction"] == 0.7
    )
    assert finding.severity == Severity.WARNING
    history[-1]["dead_fraction"] = DEAD_FRACTION - 0.01  # recovered by the end
    assert check_trial(history) == []
    history[-1]["dead_fraction"] = 0.95
    assert check_trial(history)[0].severity == Severity.ERROR


# --------------------------------------------------------------------------- fitting


def test_overfitting_needs_a_sustained_rise() -> None:
    train = [1.0, 0.5, 0.3, 0.2, 0.1, 0.05]
    spike = epochs(train_loss=train, val_loss=[0.8, 0.5, 0.45, 0.46, 0.47, 0.6])
    assert check_trial(spike) == []  # one bad last epoch is noise
    rising = epochs(train_loss=train, val_loss=[0.8, 0.5, 0.45, 0.5, 0.55, 0.6])
    (finding,) = check_trial(rising)
    assert finding.kind == FindingKind.OVERFITTING and finding.epoch == 4
    assert finding.evidence["best_epoch"] == 3 and finding.evidence["rise"] == pytest.approx(1 / 3)
    # Validation loss up but training loss up as well: not overfitting.
    both = epochs(
        train_loss=[1.0, 0.5, 0.3, 0.4, 0.5, 0.6], val_loss=[0.8, 0.5, 0.45, 0.5, 0.55, 0.6]
    )
    assert FindingKind.OVERFITTING not in kinds(both)


# Measured on full MNIST (55k images, 10 epochs, batch 64, workers.trainer + probes):
# the seed's healthy settings. Validation loss creeps up after its best epoch while
# accuracy holds at 0.98: mild, and no finding.
FULL_MNIST_ADAM = epochs(
    train_loss=[0.211, 0.0845, 0.0564, 0.0409, 0.0332, 0.0246, 0.0235, 0.0207, 0.0176, 0.0153],
    val_loss=[0.1221, 0.0964, 0.1024, 0.1181, 0.0927, 0.0951, 0.1219, 0.1165, 0.1219, 0.1144],
    val_accuracy=[0.964, 0.971, 0.9744, 0.9706, 0.9782, 0.9772, 0.9724, 0.9762, 0.977, 0.9788],
    lr=[0.001] * 10,
    grad_norm=[1.25, 0.82, 0.75, 0.60, 0.64, 0.48, 0.45, 0.43, 0.46, 0.39],
    grad_norm_max=[4.37, 1.57, 2.13, 1.40, 1.89, 1.97, 1.48, 1.45, 1.75, 1.59],
    grad_norm_first=[0.62, 0.42, 0.38, 0.31, 0.34, 0.25, 0.23, 0.22, 0.24, 0.21],
)
FULL_MNIST_MOMENTUM = epochs(
    train_loss=[0.2104, 0.0889, 0.0597, 0.0414, 0.0317, 0.0244, 0.0196, 0.0152, 0.0114, 0.0102],
    val_loss=[0.1552, 0.1046, 0.1294, 0.1255, 0.1406, 0.1205, 0.1194, 0.1621, 0.1244, 0.1393],
    val_accuracy=[0.9506, 0.9742, 0.97, 0.9708, 0.9702, 0.976, 0.977, 0.9744, 0.9786, 0.9766],
)


@pytest.mark.parametrize(
    "history", [FULL_MNIST_ADAM, FULL_MNIST_MOMENTUM], ids=["adam", "momentum"]
)
def test_healthy_full_mnist_runs_are_not_overfitting(history: list[dict[str, Any]]) -> None:
    assert check_trial(history) == []
    # The same curve shape on a loss scale where the rise is large is overfitting.
    scaled = [
        r | {"val_loss": r["val_loss"] * 5, "train_loss": r["train_loss"] * 5} for r in history
    ]
    assert kinds(scaled) == {FindingKind.OVERFITTING}


def test_a_bouncing_loss_is_unstable_not_overfitting() -> None:
    # Measured: full-batch gd at lr 1 on full MNIST (train loss is the pre-step loss).
    history = epochs(
        train_loss=[2.3475, 1.5546, 5.1245, 4.4947, 2.669, 1.9467, 1.9148, 3.8616, 2.0572, 2.1699],
        val_loss=[1.5841, 5.1246, 4.6203, 2.6403, 1.9523, 1.954, 3.7501, 2.0769, 2.2107, 2.2223],
        lr=[1.0] * 10,
    )
    (finding,) = check_trial(history)
    assert finding.kind == FindingKind.UNDERFITTING and finding.evidence["rising_epochs"] == 2
    assert "unstable, the lr may be too high" in finding.message
    flat = epochs(train_loss=[2.3, 2.3, 2.29])
    assert "lr too low" in check_trial(flat)[0].message


def test_plateau_only_while_the_loss_is_still_high() -> None:
    n = PLATEAU_EPOCHS + 3
    stuck = epochs(
        train_loss=[2.0, 1.6] + [1.57] * (n - 2), val_loss=[1.7, 1.62] + [1.61] * (n - 2)
    )
    (finding,) = check_trial(stuck)
    assert finding.kind == FindingKind.PLATEAU and finding.severity == Severity.INFO
    # Converged (the loss came most of the way down): flat is fine.
    low = epochs(train_loss=[1.0, 0.2] + [0.1] * (n - 2), val_loss=[0.5, 0.3] + [0.28] * (n - 2))
    assert check_trial(low) == []
    # Training loss flat but validation still improving: not stuck.
    improving = epochs(
        train_loss=[2.0, 1.6] + [1.57] * (n - 2), val_loss=[1.7 - 0.05 * i for i in range(n)]
    )
    assert check_trial(improving) == []


# --------------------------------------------------------------------------- contract


def test_findings_round_trip_through_json() -> None:
    history = epochs(train_loss=[2.3, 2.3, 2.3], lr=[1e-7] * 3, val_accuracy=[0.1] * 3)
    (finding,) = check_trial(history)
    assert Finding.model_validate_json(finding.model_dump_json()) == finding
    dumped = finding.model_dump(mode="json")
    assert dumped["kind"] == "underfitting" and dumped["severity"] == "warning"


@pytest.mark.parametrize(
    "module",
    [
        "hpo/findings.py",
        "hpo/findings_responsible.py",
        "hpo/responsible.py",
        "service/studies/proposals.py",
        "service/studies/splits.py",
    ],
)
def test_contract_modules_import_only_stdlib_and_pydantic(module: str) -> None:
    tree = ast.parse((REPO / module).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    allowed = {"pydantic", "hpo.findings", "hpo.protocol", "hpo.schemas", "service.studies.splits"}
    allowed |= {"hpo.findings_responsible", "hpo.responsible"}  # pydantic only, too
    foreign = {n for n in names if n.split(".")[0] not in sys.stdlib_module_names} - allowed
    assert foreign == set(), f"{module} imports {foreign}"

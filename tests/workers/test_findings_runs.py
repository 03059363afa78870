"""Per-trial findings (hpo.findings) on REAL short trainer runs that provoke each condition.

The trainer does not report the probe metrics yet (grad_norm_max/min/first,
dead_fraction), so ``probed_train`` adds them the way the trainer will: a
GradNormStats sampling every GRAD_NORM_EVERY-th optimizer step, read once per
epoch, and the dead-unit fraction of the model on the validation split after
each epoch. Everything else is ``workers.trainer.train`` unchanged.

Measured on this machine (2k-image subsets unless said; values in the asserts
carry margin): see each test's comment.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
import torch

from hpo.findings import (
    DEAD_FRACTION,
    EXPLODING_NORM,
    Finding,
    FindingKind,
    Severity,
    check_trial,
)
from tests.workers.conftest import quick
from tests.workers.probe_oracle import dead_unit_fraction
from workers import trainer
from workers.data import MnistData
from workers.outcome import NullHooks, TrainResult
from workers.probes import GradNormStats

PROBE_KEYS = ("grad_norm", "grad_norm_max", "grad_norm_min", "grad_norm_first")


@dataclass
class Probed:
    """A trainer result plus the history with the probe metrics merged in."""

    result: TrainResult
    history: list[dict[str, float]]

    def findings(self) -> list[Finding]:
        return check_trial(self.history, self.result.status, self.result.diagnosis)

    def kinds(self) -> set[FindingKind]:
        return {f.kind for f in self.findings()}

    def only(self, kind: FindingKind) -> Finding:
        matches = [f for f in self.findings() if f.kind == kind]
        assert len(matches) == 1, self.findings()
        return matches[0]


class _ProbeHooks(NullHooks):
    """Reads the probes at each epoch end (where the trainer will add them to its metrics)."""

    def __init__(self, val_x: torch.Tensor) -> None:
        self.val_x = val_x
        self.stats: GradNormStats | None = None
        self.model: torch.nn.Module | None = None
        self.extra: dict[int, dict[str, float]] = {}

    def read(self, epoch: int) -> None:
        assert self.stats is not None and self.model is not None
        extra = self.stats.read()
        dead = dead_unit_fraction(self.model, self.val_x)
        self.extra[epoch] = extra | ({"dead_fraction": dead} if dead is not None else {})

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        self.read(epoch)
        return True


@contextmanager
def _probed(hooks: _ProbeHooks, init_scale: float | None) -> Iterator[None]:
    real_build, real_optimizer = trainer.build_model, trainer.make_optimizer

    def build(config: Any) -> torch.nn.Module:
        model = real_build(config)
        if init_scale is not None:  # "a very large init": every weight and bias scaled
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(init_scale)
        return model

    def make_optimizer(config: Any, model: torch.nn.Module, device: Any = "cpu") -> Any:
        optimizer = real_optimizer(config, model, device)
        hooks.stats, hooks.model = GradNormStats(model), model
        hooks.stats.attach(optimizer, every=trainer.GRAD_NORM_EVERY)
        return optimizer

    with (
        mock.patch.object(trainer, "build_model", build),
        mock.patch.object(trainer, "make_optimizer", make_optimizer),
    ):
        yield


def probed_train(data: MnistData, init_scale: float | None = None, **settings: Any) -> Probed:
    """``trainer.train(quick(**settings))`` with the probe metrics in each epoch's record."""
    config = quick(**settings)
    hooks = _ProbeHooks(data.split(config.val_size)[1].x)
    with _probed(hooks, init_scale):
        result = trainer.train(config, data, hooks=hooks)
    if result.history and len(hooks.extra) < len(result.history):
        hooks.read(int(result.history[-1]["epoch"]))  # a diverged epoch skips on_epoch
    history = []
    for record in result.history:
        extra = hooks.extra.get(int(record["epoch"]), {})
        history.append({k: v for k, v in record.items() if k not in PROBE_KEYS} | extra)
    return Probed(result, history)


# --------------------------------------------------------------------------- provoked conditions


def test_sgd_lr_10_diverges(mnist: MnistData) -> None:
    # Measured: the guard fires at epoch 1 batch 2, loss 221.3 > 10 x first loss 2.256.
    run = probed_train(mnist, optimizer="sgd", lr=10.0, epochs=2)
    assert run.result.status == "diverged"
    finding = run.only(FindingKind.DIVERGED)
    assert finding.severity == Severity.ERROR and finding.epoch == 1
    e = finding.evidence
    assert e["epoch"] == 1 and e["batch"] == 2 and e["factor"] == 10 and e["lr"] == 10.0
    assert isinstance(e["loss"], float) and isinstance(e["first_loss"], float)
    assert e["loss"] > 10 * e["first_loss"]
    assert "diverged at epoch 1 batch 2" in finding.message and "lr 10" in finding.message
    # The curve stops at the blow-up: no under/overfitting or plateau judged from it.
    assert run.kinds() <= {FindingKind.DIVERGED, FindingKind.EXPLODING_GRADIENTS}


def test_lr_1e_7_underfits(mnist: MnistData) -> None:
    # Measured: train loss 2.348 -> 2.348 over 3 epochs (0.0% lower), accuracy 0.095.
    run = probed_train(mnist, optimizer="sgd", lr=1e-7, epochs=3)
    assert run.result.status == "completed"
    assert run.kinds() == {FindingKind.UNDERFITTING}
    finding = run.only(FindingKind.UNDERFITTING)
    assert finding.epoch == 1 and finding.severity == Severity.WARNING
    e = finding.evidence
    assert abs(e["loss_drop"]) < 0.01 and e["start_loss"] > 2.0 and e["epochs"] == 3
    assert e["lr"] == pytest.approx(1e-7) and e["val_accuracy"] < 0.2
    assert "lr 1e-07" in finding.message and "underfitting" in finding.message


def test_max_dropout_with_tiny_lr_underfits_but_max_dropout_alone_does_not(
    mnist: MnistData,
) -> None:
    # Measured: dropout 0.8 + adam 1e-5, 2 epochs: train loss 2.422 -> 2.324 (4.1% lower).
    run = probed_train(mnist, optimizer="adam", lr=1e-5, dropout=0.8, epochs=2)
    assert run.kinds() == {FindingKind.UNDERFITTING}
    assert run.only(FindingKind.UNDERFITTING).evidence["loss_drop"] < 0.06
    # The same dropout at a working lr learns (measured 0.859 after 3 epochs): no finding.
    fine = probed_train(mnist, optimizer="adam", lr=1e-3, dropout=0.8, epochs=3)
    assert fine.findings() == [] and fine.result.objective > 0.8


def test_tiny_train_subset_with_many_epochs_overfits(mnist: MnistData) -> None:
    # Measured: 200 images, adam 0.01: val loss best 0.760 at epoch 4, 0.990 at epoch 20,
    # while the training loss fell 0.372 -> 0.0004.
    run = probed_train(mnist, optimizer="adam", lr=0.01, train_subset=200, epochs=20)
    assert run.kinds() == {FindingKind.OVERFITTING}
    finding = run.only(FindingKind.OVERFITTING)
    e = finding.evidence
    assert 2 <= e["best_epoch"] <= 8 and finding.epoch == e["best_epoch"] + 1
    assert e["rise"] > 0.2 and e["val_loss"] > e["best_val_loss"] * 1.2
    assert e["train_loss"] < 0.01 < e["train_loss_at_best"]
    assert f"(epoch {e['best_epoch']})" in finding.message


def test_very_large_init_explodes_gradients(mnist: MnistData) -> None:
    # Every weight x20 in a 3-layer MLP, tiny lr so the loss cannot blow up: measured a
    # sampled global gradient norm of 7878 in epoch 1 (healthy runs peak at 2-60).
    run = probed_train(mnist, init_scale=20.0, optimizer="sgd", lr=1e-5, depth=3, epochs=2)
    assert run.result.status == "completed"
    assert run.kinds() == {FindingKind.EXPLODING_GRADIENTS}
    finding = run.only(FindingKind.EXPLODING_GRADIENTS)
    assert finding.epoch == 1 and finding.evidence["peak_epoch"] == 1
    assert finding.evidence["grad_norm_max"] > 3 * EXPLODING_NORM


def test_large_adam_lr_kills_most_relu_units(mnist: MnistData) -> None:
    # adam lr 0.02 trains (accuracy 0.88) but silences 66% of the 512 hidden units
    # (adam 1e-3: 5%); the divergence guard stays at its default.
    run = probed_train(mnist, optimizer="adam", lr=0.02, epochs=3)
    assert run.result.status == "completed" and run.result.objective > 0.8
    assert run.kinds() == {FindingKind.DEAD_UNITS}
    finding = run.only(FindingKind.DEAD_UNITS)
    assert 0.6 < finding.evidence["dead_fraction"] < 0.9 and finding.severity == Severity.WARNING
    assert finding.epoch == 1  # already past half after the first epoch
    # The probe's figure is the model's: recount on the returned model.
    recount = dead_unit_fraction(run.result.model, mnist.split(5000)[1].x)
    assert recount == pytest.approx(finding.evidence["dead_fraction"])
    assert recount > DEAD_FRACTION


def test_deep_narrow_sgd_net_has_vanishing_gradients(mnist: MnistData) -> None:
    # 8 hidden layers of 64, default init, sgd 0.01: the first layer gets 2.7% of the
    # gradient norm (healthy 1-4 layer nets: 14-76%) and the loss does not move.
    run = probed_train(mnist, optimizer="sgd", lr=0.01, depth=8, hidden=64, epochs=3)
    assert run.kinds() == {FindingKind.VANISHING_GRADIENTS, FindingKind.UNDERFITTING}
    finding = run.only(FindingKind.VANISHING_GRADIENTS)
    assert finding.epoch == 1 and finding.evidence["ratio"] < 0.04
    assert finding.evidence["loss_drop"] < 0.01


def test_lr_decayed_to_nothing_plateaus(mnist: MnistData) -> None:
    # Step decay x0.1 every epoch: loss 1.996 -> 1.606 -> 1.572, then 1.568 for 4 epochs.
    run = probed_train(
        mnist, optimizer="sgd", lr=0.01, lr_schedule="step", step_size=1, gamma=0.1, epochs=7
    )
    assert run.kinds() == {FindingKind.PLATEAU}
    finding = run.only(FindingKind.PLATEAU)
    assert finding.epoch == 3 and finding.severity == Severity.INFO
    assert 1.5 < finding.evidence["best_train_loss"] < 1.7


# --------------------------------------------------------------------------- false alarms


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer": "adam", "lr": 1e-3},
        {"optimizer": "sgd", "lr": 0.1},
        {"optimizer": "momentum", "lr": 0.05},
        {"optimizer": "rmsprop", "lr": 1e-3},
    ],
    ids=lambda s: s["optimizer"],
)
def test_healthy_run_gets_no_finding(mnist: MnistData, settings: dict[str, Any]) -> None:
    run = probed_train(mnist, epochs=3, **settings)
    assert run.result.status == "completed" and run.result.objective > 0.75
    # Every check had its metrics, so "no finding" means every check ran and passed.
    wanted = {"train_loss", "val_loss", "grad_norm_max", "grad_norm_first", "dead_fraction"}
    assert all(wanted <= record.keys() for record in run.history)
    assert run.findings() == []

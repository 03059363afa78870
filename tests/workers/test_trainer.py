"""workers.trainer on real MNIST (2k-image subsets, 1 epoch unless a test needs more).

Thresholds were measured with margin: after one epoch on 2k images each tuned
optimizer reaches 0.81-0.88 validation accuracy (chance is 0.10).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from hpo.settings import EPOCH_METRICS, FINAL_METRICS, TrainConfig
from tests.workers.conftest import REPO_ROOT, quick
from workers import trainer as trainer_module
from workers.data import MnistData
from workers.model import build_model, count_params
from workers.outcome import NullHooks, TrainResult
from workers.trainer import train

METRIC_KEYS = set(EPOCH_METRICS)
TIMING_KEYS = {"epoch_time_s", "data_time_s", "samples_per_s", "peak_memory_mb"}
CHANCE_LOSS = math.log(10)  # cross-entropy of a uniform guess over 10 classes


def _deterministic(result: TrainResult) -> list[dict[str, float]]:
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in result.history]


# --------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer": "sgd", "lr": 0.1},
        {"optimizer": "momentum", "lr": 0.05},
        {"optimizer": "nesterov", "lr": 0.05},
        {"optimizer": "adagrad", "lr": 0.01},
        {"optimizer": "rmsprop", "lr": 1e-3},
        {"optimizer": "adam", "lr": 1e-3},
        {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01},
    ],
    ids=lambda s: s["optimizer"],
)
def test_each_minibatch_optimizer_learns(mnist: MnistData, settings: dict[str, object]) -> None:
    result = train(quick(**settings), mnist)
    assert result.status == "completed" and result.epochs_run == 1
    assert result.objective is not None and result.objective > 0.65
    assert result.optimizer_steps == math.ceil(2000 / 64)
    assert result.history[0]["val_loss"] < CHANCE_LOSS


def test_gd_takes_one_full_batch_step_and_improves(mnist: MnistData) -> None:
    steps: list[int] = []
    handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: steps.append(1))
    try:
        result = train(quick(optimizer="gd", lr=0.5, epochs=2), mnist)
    finally:
        handle.remove()
    assert result.status == "completed"
    assert len(steps) == 2 and result.optimizer_steps == 2  # exactly one step per epoch
    # One step per epoch is little progress, but a real one (measured: ~0.5 after one step).
    assert result.history[0]["val_loss"] < CHANCE_LOSS - 0.4
    assert result.objective is not None and result.objective > 0.3


def test_gd_step_is_the_exact_full_batch_gradient(
    mnist: MnistData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer_module, "GD_CHUNK", 300)  # force several chunks
    config = quick(optimizer="gd", lr=0.5, train_subset=1000)
    result = train(config, mnist)

    torch.manual_seed(config.seed)
    reference = build_model(config)
    x, y = mnist.split(config.val_size)[0].x[:1000], mnist.split(config.val_size)[0].y[:1000]
    F.cross_entropy(reference(x), y).backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= config.lr * p.grad
    assert result.model is not None
    for ours, ref in zip(result.model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    ("settings", "lrs"),
    [
        ({"lr_schedule": "constant"}, [0.1, 0.1, 0.1]),
        ({"lr_schedule": "step", "step_size": 2, "gamma": 0.5}, [0.1, 0.1, 0.05]),
        ({"lr_schedule": "exponential", "gamma": 0.5}, [0.1, 0.05, 0.025]),
        ({"lr_schedule": "cosine"}, [0.1, 0.075, 0.025]),
        ({"lr_schedule": "constant", "warmup_epochs": 2}, [0.1 / 3, 0.2 / 3, 0.1]),
        ({"lr_schedule": "cosine", "warmup_epochs": 1}, [0.05, 0.1, 0.05]),
    ],
    ids=["constant", "step", "exponential", "cosine", "warmup", "warmup-cosine"],
)
def test_schedules_set_the_per_epoch_lr_and_learn(
    mnist: MnistData, settings: dict[str, object], lrs: list[float]
) -> None:
    result = train(quick(optimizer="sgd", lr=0.1, epochs=3, train_subset=1000, **settings), mnist)
    assert result.status == "completed"
    assert [h["lr"] for h in result.history] == pytest.approx(lrs)
    assert result.objective is not None and result.objective > 0.65


# --------------------------------------------------------------------------- regularization


def test_l1_drives_first_layer_weights_toward_zero(mnist: MnistData) -> None:
    plain = train(quick(lr=0.1), mnist).model
    sparse = train(quick(lr=0.1, l1=3e-3), mnist).model
    assert plain is not None and sparse is not None
    w0, w1 = plain[0].weight, sparse[0].weight
    # measured: mean |w| 0.018 -> 0.010; fraction below 1e-3: 3% -> 29%
    assert w1.abs().mean() < 0.75 * w0.abs().mean()
    assert (w1.abs() < 1e-3).float().mean() > 3 * (w0.abs() < 1e-3).float().mean()


def test_l2_shrinks_the_weight_norm(mnist: MnistData) -> None:
    def norm(model: nn.Module | None) -> float:
        assert model is not None
        return torch.cat([p.detach().flatten() for p in model.parameters()]).norm().item()

    plain = train(quick(lr=0.1), mnist)
    decayed = train(quick(lr=0.1, weight_decay=0.1), mnist)
    assert norm(decayed.model) < 0.9 * norm(plain.model)  # measured: 13.4 -> 9.8


def test_dropout_randomises_train_mode_only(mnist: MnistData) -> None:
    model = build_model(TrainConfig.from_settings({"dropout": 0.5}))
    x = mnist.val.x[:32]
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    assert any(isinstance(m, nn.Dropout) for m in model)
    with_dropout = train(quick(lr=0.1, dropout=0.5), mnist)
    without = train(quick(lr=0.1), mnist)
    assert with_dropout.history[0]["train_loss"] != without.history[0]["train_loss"]
    assert with_dropout.objective is not None and with_dropout.objective > 0.65


def test_batch_norm_adds_layers_changes_params_and_trains(mnist: MnistData) -> None:
    plain = build_model(TrainConfig.from_settings({"depth": 2}))
    normed = build_model(TrainConfig.from_settings({"depth": 2, "batch_norm": True}))
    assert sum(isinstance(m, nn.BatchNorm1d) for m in normed) == 2
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain)
    assert count_params(normed) != count_params(plain)
    # batch 2000 % 64 = 16 leaves a short last batch; 2001 would leave one sample (skipped)
    result = train(quick(lr=0.1, batch_norm=True, train_subset=2001), mnist)
    assert result.status == "completed" and result.objective is not None
    assert result.objective > 0.65


def test_default_model_is_the_seed_mlp() -> None:
    model = build_model(TrainConfig())
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear]
    assert count_params(model) == 784 * 512 + 512 + 512 * 10 + 10


def test_width_and_depth(mnist: MnistData) -> None:
    config = quick(lr=0.1, hidden=64, depth=3)
    linears = [m for m in build_model(config) if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 64),
        (64, 64),
        (64, 64),
        (64, 10),
    ]
    result = train(config, mnist)
    assert result.final["n_params"] == sum(m.weight.numel() + m.bias.numel() for m in linears)


# --------------------------------------------------------------------------- guard, results


@pytest.mark.parametrize("lr", [1e4, 1e30])
def test_divergence_guard_stops_absurd_lr(mnist: MnistData, lr: float) -> None:
    result = train(quick(optimizer="sgd", lr=lr, epochs=3), mnist)
    assert result.status == "diverged"
    assert result.diagnosis is not None and "diverged at epoch 1 batch" in result.diagnosis
    assert result.epochs_run == 1 and result.optimizer_steps < 5
    # The objective is the accuracy measured at divergence: near chance.
    assert result.objective is not None and result.objective < 0.3
    assert "test_accuracy" in result.final


def test_metrics_have_exactly_the_documented_keys(mnist: MnistData) -> None:
    result = train(quick(lr=0.1, epochs=2), mnist)
    assert [h["epoch"] for h in result.history] == [1, 2]
    for metrics in result.history:
        assert set(metrics) == METRIC_KEYS
        assert all(math.isfinite(v) for v in metrics.values())
        assert 0 <= metrics["val_accuracy"] <= 1 and metrics["peak_memory_mb"] > 0
    assert set(result.final) == METRIC_KEYS | {"test_accuracy", "n_params", "total_time_s"}
    shipped = train(quick(lr=0.1, epochs=1, measure_model=True), mnist)  # measured as shipped
    assert set(shipped.final) == set(FINAL_METRICS)
    assert shipped.final["model_bytes"] > 1e5 and shipped.final["latency_ms_b1024"] > 0
    assert result.final["val_accuracy"] == result.objective
    assert 0.5 < result.final["test_accuracy"] <= 1


def test_same_seed_same_history_different_seed_different(mnist: MnistData) -> None:
    config = quick(lr=0.1, epochs=2, dropout=0.2, train_subset=1000)
    first, again = train(config, mnist), train(config, mnist)
    other = train(TrainConfig.from_settings({**config.to_dict(), "seed": 1}), mnist)
    assert _deterministic(first) == _deterministic(again)
    assert first.final["test_accuracy"] == again.final["test_accuracy"]
    assert _deterministic(first) != _deterministic(other)


# --------------------------------------------------------------------------- hooks


class _PruneAfter(NullHooks):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.seen: list[tuple[int, dict[str, float]]] = []

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        self.seen.append((epoch, metrics))
        return epoch < self.epochs


class _StopAfter(NullHooks):
    def __init__(self, polls: int) -> None:
        self.polls = polls
        self.calls = 0

    def should_stop(self) -> bool:
        self.calls += 1
        return self.calls > self.polls


def test_on_epoch_false_prunes_after_that_epoch(mnist: MnistData) -> None:
    hooks = _PruneAfter(epochs=1)
    result = train(quick(lr=0.1, epochs=3), mnist, hooks=hooks)
    assert result.status == "pruned" and result.epochs_run == 1
    assert [epoch for epoch, _ in hooks.seen] == [1]
    assert hooks.seen[0][1] == result.history[0]
    assert result.objective == result.history[0]["val_accuracy"]


def test_should_stop_ends_at_a_batch_boundary(mnist: MnistData) -> None:
    hooks = _StopAfter(polls=5)
    result = train(quick(lr=0.1, epochs=2), mnist, hooks=hooks)
    assert result.status == "stopped"
    assert result.optimizer_steps == 5  # polled before every batch: 5 ran, the 6th did not
    assert result.history == [] and result.objective is None and result.epochs_run == 0
    assert "test_accuracy" not in result.final


def test_should_stop_in_gd_stops_between_chunks(mnist: MnistData) -> None:
    result = train(quick(optimizer="gd", lr=0.5, epochs=2), mnist, hooks=_StopAfter(polls=1))
    assert result.status == "stopped" and result.epochs_run == 1
    assert result.optimizer_steps == 1


# --------------------------------------------------------------------------- the seed


@pytest.mark.slow
def test_matches_the_seed_loop_after_one_epoch(mnist: MnistData, mnist_root: Path) -> None:
    """SGD lr 0.01, batch 64, one epoch on full MNIST: as accurate as the seed's loop.

    Like for like, our test accuracy is within 1 point of the seed's (91.35 % with
    seed 0). Our validation images (held out of the training set) are measurably
    harder than the test set (about 1-1.5 points at this stage, the same gap the
    trainer shows at every epoch), so validation accuracy is held to 2 points.
    """
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from seed_loop import run_seed_loop

    seed = run_seed_loop(mnist_root, epochs=1, device="cpu", seed=0)
    ours = train(TrainConfig.from_settings({"epochs": 1}), mnist)
    assert seed.test_accuracy > 0.89
    assert abs(ours.final["test_accuracy"] - seed.test_accuracy) < 0.01
    assert ours.objective is not None and abs(ours.objective - seed.test_accuracy) < 0.02

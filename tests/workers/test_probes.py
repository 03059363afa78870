"""workers.probes against hand-computed values on small models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.workers.probe_oracle import dead_unit_fraction
from workers.probes import DeadUnitProbe, GradNormStats


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 2))


def _backward(model: nn.Module, scale: float = 1.0) -> float:
    """One backward pass; returns the global gradient norm it left (computed by hand)."""
    model.zero_grad()
    x = torch.randn(8, 4)
    (model(x).sum() * scale).backward()
    return math.sqrt(sum(float((p.grad**2).sum()) for p in model.parameters()))


def test_grad_norm_stats_mean_max_min_and_first_layer() -> None:
    model = _model()
    stats = GradNormStats(model)
    assert stats.read() == {}  # nothing observed: no figures, not zeros
    norms, firsts = [], []
    for scale in (1.0, 10.0, 0.1):
        norms.append(_backward(model, scale))
        first = model[0]
        firsts.append(math.sqrt(float((first.weight.grad**2).sum() + (first.bias.grad**2).sum())))
        stats.observe()
    got = stats.read()
    assert got["grad_norm"] == pytest.approx(sum(norms) / 3, rel=1e-5)
    assert got["grad_norm_max"] == pytest.approx(max(norms), rel=1e-5)
    assert got["grad_norm_min"] == pytest.approx(min(norms), rel=1e-5)
    assert got["grad_norm_first"] == pytest.approx(sum(firsts) / 3, rel=1e-5)
    assert stats.read() == {}  # read starts a new epoch


def test_grad_norm_stats_attach_samples_every_nth_step() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay put
    stats = GradNormStats(model)
    handle = stats.attach(optimizer, every=3)
    seen = []
    for step in range(7):
        norm = _backward(model, scale=float(step + 1))
        if step % 3 == 0:
            seen.append(norm)
        optimizer.step()
    handle.remove()
    assert stats.count == 3  # steps 0, 3, 6
    assert stats.read()["grad_norm_max"] == pytest.approx(max(seen), rel=1e-5)


def test_nonfinite_gradients_show_in_the_max() -> None:
    model = _model()
    stats = GradNormStats(model)
    _backward(model)
    model[0].weight.grad[0, 0] = math.inf
    stats.observe()
    assert stats.read()["grad_norm_max"] == math.inf


def test_dead_unit_fraction_counts_units_silent_on_every_input() -> None:
    model = _model()
    with torch.no_grad():
        model[0].bias[:2] = -1e3  # 2 of the 6 first-layer units can never fire
        model[2].bias[:1] = -1e3  # 1 of the 3 second-layer units neither
    model.train()
    x = torch.randn(64, 4)
    assert dead_unit_fraction(model, x, chunk=10) == pytest.approx(3 / 9)
    assert model.training  # mode restored
    with DeadUnitProbe(model) as probe:
        model.eval()
        model(x[:32])
        model(x[32:])
    assert probe.per_layer() == pytest.approx([2 / 6, 1 / 3])
    assert probe.fraction() == pytest.approx(3 / 9)
    model(x)  # hooks are gone after the with-block: nothing more is recorded
    assert probe.fraction() == pytest.approx(3 / 9)


def test_dead_unit_fraction_without_relu_is_none() -> None:
    assert dead_unit_fraction(nn.Sequential(nn.Linear(4, 2)), torch.randn(5, 4)) is None


def test_dead_unit_probe_around_the_trainers_evaluate() -> None:
    # The documented wiring: the probe records during the trainer's own validation pass
    # (inference mode, chunked), so the trainer needs no extra forward pass.
    from workers.data import Split
    from workers.outcome import evaluate

    model = _model()
    with torch.no_grad():
        model[0].bias[:3] = -1e3
    x, y = torch.randn(50, 4), torch.randint(0, 2, (50,))
    with DeadUnitProbe(model) as probe:
        evaluate(model, Split(x, y))
    assert probe.fraction() == pytest.approx(dead_unit_fraction(model, x))
    assert probe.per_layer()[0] == pytest.approx(3 / 6)

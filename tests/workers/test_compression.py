"""workers.compression: pruning, low rank, quantization and the measured metrics.

Tiny or untrained models where only the mechanics matter; a reference MLP
(784 -> 512 -> 10) trained for one epoch on 10k real MNIST images (~92 %
validation accuracy) where outputs and accuracy matter. Thresholds were set
from measured values with margin; the measured values are in the comments.
"""

from __future__ import annotations

import copy
import statistics
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.nn.utils import prune

from workers.compression import (
    CompressionSettings,
    CompressionSettingsError,
    PruneSchedule,
    compress,
    decode,
    encode,
    flops,
    fold_batchnorm,
    low_rank,
    make_permanent,
    measure_latency,
    model_bytes,
    nonzero_params,
    prune_global,
    quantize,
    sparsity,
)
from workers.data import MnistData, Split
from workers.model import build_model

HIDDEN = 512


def mlp(hidden: int = HIDDEN, depth: int = 1, batch_norm: bool = False, seed: int = 0) -> nn.Module:
    """The reference trainer's model (workers.model.build_model) with the given shape."""
    torch.manual_seed(seed)
    shape = SimpleNamespace(hidden=hidden, depth=depth, batch_norm=batch_norm, dropout=0.1)
    return build_model(shape)  # type: ignore[arg-type]


def fit(model: nn.Module, data: Split, epochs: int = 1, n: int = 10_000) -> None:
    """Adam 1e-3, batch 64, over the first ``n`` images: also the fine-tune callback."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=order).split(64):
            loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


@torch.inference_mode()
def accuracy(model: nn.Module, split: Split) -> float:
    model.eval()
    return (model(split.x).argmax(dim=1) == split.y).float().mean().item()


@pytest.fixture(scope="module")
def splits(mnist: MnistData) -> tuple[Split, Split]:
    return mnist.split(5000)


@pytest.fixture(scope="module")
def trained(splits: tuple[Split, Split]) -> nn.Module:
    """The reference MLP after one epoch on 10k images (measured: 0.914 validation accuracy)."""
    model = mlp()
    fit(model, splits[0])
    return model.eval()


def linear_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for m in model.modules() if isinstance(m, nn.Linear)]


def zeros(model: nn.Module) -> int:
    return sum(int((w == 0).sum()) for w in linear_weights(model))


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prune_amount", 1.0),
        ("prune_amount", -0.1),
        ("prune_amount", float("nan")),
        ("prune_amount", "0.5"),
        ("prune_schedule", "sometimes"),
        ("low_rank", 0),
        ("low_rank", 2.5),
        ("low_rank", True),
        ("quantize", "int4"),
        ("finetune_epochs", 101),
        ("finetune_epochs", -1),
    ],
)
def test_bad_setting_raises_a_value_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(CompressionSettingsError, match=field) as caught:
        CompressionSettings.from_settings({"lr": 0.1, field: value})
    assert isinstance(caught.value, ValueError)
    assert caught.value.field == field


def test_settings_accept_the_documented_ranges_and_ignore_other_keys() -> None:
    s = CompressionSettings.from_settings(
        {
            "lr": 0.1,
            "prune_amount": 0.95,
            "low_rank": 16.0,
            "quantize": "bf16",
            "finetune_epochs": 100,
        }
    )
    assert (s.prune_amount, s.low_rank, s.quantize, s.finetune_epochs) == (0.95, 16, "bf16", 100)
    assert isinstance(s.low_rank, int)
    assert not CompressionSettings().changes_weights


def test_low_rank_above_the_width_raises_naming_low_rank() -> None:
    with pytest.raises(CompressionSettingsError, match="low_rank") as caught:
        CompressionSettings(low_rank=513).check_width(hidden=HIDDEN)
    assert caught.value.field == "low_rank"
    CompressionSettings(low_rank=512).check_width(hidden=HIDDEN)  # the width itself is fine
    model = mlp(hidden=64)
    with pytest.raises(ValueError, match="low_rank"):
        low_rank(model, 65)
    with pytest.raises(ValueError, match="low_rank"):
        compress(model, {"low_rank": 65})


def test_library_functions_reject_bad_values_naming_the_field() -> None:
    model = mlp(hidden=32)
    with pytest.raises(ValueError, match="prune_amount"):
        prune_global(model, 1.0)
    with pytest.raises(ValueError, match="quantize"):
        quantize(model, "int4")
    with pytest.raises(ValueError, match="quantize"):
        compress(model, {"quantize": "int4"})
    assert zeros(model) == 0  # nothing was pruned on the way to the error


# --------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("amount", [0.1, 0.5, 0.73, 0.95])
def test_pruning_leaves_exactly_the_requested_fraction_of_zeros(amount: float) -> None:
    model = mlp(hidden=100, depth=2)
    total = sum(w.numel() for w in linear_weights(model))
    biases = [m.bias.clone() for m in model.modules() if isinstance(m, nn.Linear)]
    assert prune_global(model, amount) == pytest.approx(round(amount * total) / total)
    assert zeros(model) == round(amount * total)  # global count over all Linear weights
    after = [m.bias for m in model.modules() if isinstance(m, nn.Linear)]
    assert all(torch.equal(a, b) for a, b in zip(after, biases, strict=True))  # biases kept
    # Global, not per layer: the 784-input layer's smaller init weights lose more.
    first, *_, last = linear_weights(model)
    assert (first == 0).float().mean() > (last == 0).float().mean()


def test_repeated_pruning_tops_up_to_the_total_target_and_keeps_old_zeros() -> None:
    model = mlp(hidden=64)
    total = sum(w.numel() for w in linear_weights(model))
    prune_global(model, 0.3)
    first_zeros = [w == 0 for w in linear_weights(model)]
    prune_global(model, 0.6)
    assert zeros(model) == round(0.6 * total)
    for before, w in zip(first_zeros, linear_weights(model), strict=True):
        assert bool((w[before] == 0).all())
    prune_global(model, 0.2)  # below what is pruned: masks never shrink
    assert zeros(model) == round(0.6 * total)


def test_masks_keep_pruned_weights_at_zero_while_fine_tuning() -> None:
    model = mlp(hidden=64)
    prune_global(model, 0.5)
    pruned = [w == 0 for w in linear_weights(model)]
    before = [w.clone() for w in linear_weights(model)]
    # Momentum and weight decay touch every entry of weight_orig; the mask must still win.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    x, y = torch.randn(256, 784), torch.randint(0, 10, (256,))
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    after = linear_weights(model)
    for mask, w, w0 in zip(pruned, after, before, strict=True):
        assert bool((w[mask] == 0).all())
        assert not torch.equal(w[~mask], w0[~mask])  # the surviving weights did train
    make_permanent(model)
    assert not any(prune.is_pruned(m) for m in model.modules())
    assert all(isinstance(m.weight, nn.Parameter) for m in model if isinstance(m, nn.Linear))
    for mask, w in zip(pruned, linear_weights(model), strict=True):
        assert torch.equal(w == 0, mask)


def test_prune_schedules_give_the_target_sparsity_per_epoch() -> None:
    gradual = PruneSchedule(0.8, epochs=5, schedule="gradual")
    targets = [gradual.target(e) for e in range(1, 6)]
    assert targets[-1] == 0.8
    steps = [b - a for a, b in zip([0.0, *targets], targets, strict=False)]
    assert all(s > 0 for s in steps) and steps == sorted(steps, reverse=True)  # cubic: fast first
    assert targets[0] == pytest.approx(0.8 * (1 - (1 - 1 / 5) ** 3))
    once = PruneSchedule(0.8, epochs=5, schedule="once")
    assert [once.target(e) for e in range(1, 6)] == [0, 0, 0, 0, 0.8]
    late = PruneSchedule(0.5, epochs=4, begin=2)
    assert [late.target(e) for e in range(1, 5)] == pytest.approx([0, 0, 0.4375, 0.5])
    with pytest.raises(ValueError, match="prune_schedule"):
        PruneSchedule(0.5, epochs=3, schedule="sometimes")
    with pytest.raises(ValueError, match="prune_amount"):
        PruneSchedule(1.0, epochs=3)


def test_gradual_schedule_prunes_a_model_during_training() -> None:
    model = mlp(hidden=64)
    total = sum(w.numel() for w in linear_weights(model))
    schedule = PruneSchedule(0.9, epochs=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # built before any pruning
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    for epoch in range(1, 5):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        schedule.step(model, epoch)
        assert zeros(model) == round(schedule.target(epoch) * total)
    assert sparsity(model) == pytest.approx(0.9, abs=1 / total)
    # compress() after in-training pruning tops up nothing and ships those very zeros.
    settings = {"prune_amount": 0.9, "prune_schedule": "gradual"}
    shipped, report = compress(model, settings, latency_repeats=2)
    assert report.sparsity == sparsity(model)
    for trained_w, shipped_w in zip(linear_weights(model), linear_weights(shipped), strict=True):
        assert torch.equal(trained_w == 0, shipped_w == 0)


# --------------------------------------------------------------------------- low rank


def test_low_rank_error_falls_as_rank_grows_and_is_the_truncated_svd(trained: nn.Module) -> None:
    weight = trained[0].weight.detach()
    singular = torch.linalg.svdvals(weight)
    errors = []
    for rank in (1, 4, 16, 64, 256, 512):
        model = low_rank(copy.deepcopy(trained), rank)
        v, us = model[0], model[1]
        assert (v.weight.shape, us.weight.shape) == ((rank, 784), (HIDDEN, rank))
        error = torch.linalg.matrix_norm(weight - us.weight @ v.weight) / weight.norm()
        # Eckart-Young: the error of the best rank-r approximation is the dropped spectrum.
        expected = singular[rank:].square().sum().sqrt() / weight.norm()
        assert error.item() == pytest.approx(expected.item(), abs=1e-4)
        errors.append(error.item())
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-4  # full rank reproduces the layer


def test_low_rank_factorizes_every_hidden_layer_but_not_the_output() -> None:
    model = mlp(hidden=48, depth=2).eval()
    x = torch.randn(8, 784)
    expected = model(x)
    low_rank(model, 48)  # full rank: same function
    shapes = [tuple(m.weight.shape) for m in model if isinstance(m, nn.Linear)]
    assert shapes == [(48, 784), (48, 48), (48, 48), (48, 48), (10, 48)]
    assert torch.allclose(model(x), expected, atol=1e-5)


# --------------------------------------------------------------------------- quantization


def test_int8_outputs_stay_close_to_float32_on_mnist(
    trained: nn.Module, splits: tuple[Split, Split]
) -> None:
    x = splits[1].x[:2000]
    with torch.inference_mode():
        reference = trained(x)
        shipped = quantize(trained, "int8")
        out = shipped(x)
    assert out.dtype == torch.float32
    int8_layers = [m for m in shipped.modules() if isinstance(m, nnqd.Linear)]
    assert len(int8_layers) == 2 and not any(isinstance(m, nn.Linear) for m in shipped.modules())
    # Measured: max |logit diff| 0.12 with logits up to 15.8; argmax agreement 99.85 %.
    assert (out - reference).abs().max().item() < 0.3
    agreement = (out.argmax(1) == reference.argmax(1)).float().mean().item()
    assert agreement > 0.99
    assert not torch.equal(out, reference)  # it really is a different (quantized) model


@pytest.mark.parametrize("mode", ["fp16", "bf16"])
def test_half_precision_runs_in_that_dtype(
    mode: str, trained: nn.Module, splits: tuple[Split, Split]
) -> None:
    x = splits[1].x[:2000]
    shipped = quantize(trained, mode)
    dtypes = {p.dtype for p in shipped.parameters()}
    assert dtypes == {torch.float16 if mode == "fp16" else torch.bfloat16}
    with torch.inference_mode():
        out, reference = shipped(x), trained(x)
    assert out.dtype == torch.float32
    assert (out.argmax(1) == reference.argmax(1)).float().mean().item() > 0.99


def test_batchnorm_is_folded_into_the_linear_before_it() -> None:
    model = mlp(hidden=32, depth=2, batch_norm=True)
    model.train()
    for _ in range(3):  # give the running statistics non-trivial values
        model(torch.randn(64, 784) * 2 + 0.5)
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm1d | nn.Dropout) for m in folded.modules())
    x = torch.randn(16, 784)
    assert torch.allclose(folded(x), model(x), atol=1e-5)


# --------------------------------------------------------------------------- bytes, flops


def test_model_bytes_fall_with_prune_amount_and_rank_and_precision() -> None:
    base = mlp().eval()
    dense = model_bytes(quantize(base, "none"))
    n_params = nonzero_params(quantize(base, "none"))[1]
    assert 4 * n_params < dense < 4 * n_params + 16_000  # the weights plus container overhead
    by_amount = [model_bytes(quantize(pruned(base, a), "none")) for a in (0, 0.25, 0.5, 0.75, 0.95)]
    assert by_amount[0] == dense
    assert all(a > b for a, b in zip(by_amount, by_amount[1:], strict=False)), by_amount
    int8_by_amount = [model_bytes(quantize(pruned(base, a), "int8")) for a in (0, 0.5, 0.95)]
    assert all(a > b for a, b in zip(int8_by_amount, int8_by_amount[1:], strict=False))
    by_rank = [
        model_bytes(quantize(low_rank(copy.deepcopy(base), r), "none")) for r in (256, 64, 8)
    ]
    assert all(a > b for a, b in zip(by_rank, by_rank[1:], strict=False)), by_rank
    half = {m: model_bytes(quantize(base, m)) for m in ("fp16", "bf16", "int8")}
    assert half["int8"] < half["fp16"] == half["bf16"] < dense
    assert half["fp16"] == pytest.approx(dense / 2, rel=0.02)
    assert half["int8"] == pytest.approx(dense / 4, rel=0.03)


def pruned(model: nn.Module, amount: float) -> nn.Module:
    clone = copy.deepcopy(model)
    prune_global(clone, amount)
    return make_permanent(clone)


@pytest.mark.parametrize(("amount", "fmt"), [(0.0, "dense"), (0.5, "bitmask"), (0.95, "csr")])
@pytest.mark.parametrize("mode", ["none", "int8", "bf16"])
def test_encoding_round_trips_the_shipped_weights(amount: float, fmt: str, mode: str) -> None:
    shipped = quantize(pruned(mlp(hidden=64), amount), mode)
    state = encode(shipped)
    if mode == "none":  # int8 values (1 byte) make the bitmask pay only at higher sparsity
        assert state["linear0"]["weight"]["format"] == fmt
    linears = [m for m in shipped.modules() if isinstance(m, nn.Linear | nnqd.Linear)]
    for (weight, bias), layer in zip(decode(state), linears, strict=True):
        if mode == "int8":
            expected, expected_bias = layer.weight().dequantize(), layer.bias()
        else:
            expected, expected_bias = layer.weight.detach(), layer.bias.detach()
        assert torch.allclose(weight.float(), expected.float(), atol=1e-6)
        assert torch.equal(bias, expected_bias)


def test_flops_and_nonzero_params_count_the_stored_weights() -> None:
    hidden = 64
    base = mlp(hidden=hidden).eval()
    dense_macs = 784 * hidden + hidden * 10
    assert flops(base) == 2 * dense_macs
    assert nonzero_params(base) == (dense_macs + hidden + 10,) * 2
    sparse = pruned(base, 0.75)
    assert flops(sparse) == 2 * (dense_macs - round(0.75 * dense_macs))
    assert nonzero_params(sparse)[0] == dense_macs - round(0.75 * dense_macs) + hidden + 10
    factored = low_rank(copy.deepcopy(base), 8)
    assert flops(factored) == 2 * (8 * 784 + hidden * 8 + hidden * 10)


# --------------------------------------------------------------------------- latency


def test_latency_is_measured_by_running_the_model() -> None:
    model = quantize(mlp(hidden=128), "none")
    calls: list[tuple[int, ...]] = []
    model.register_forward_hook(lambda m, args, out: calls.append(tuple(args[0].shape)))
    one = measure_latency(model, batch=1, repeats=15, warmup=4)
    big = measure_latency(model, batch=1024, repeats=15, warmup=4)
    assert calls == [(1, 784)] * 19 + [(1024, 784)] * 19  # warm-up + timed, at those batches
    for latency in (one, big):
        assert len(latency.samples_ms) == 15 and min(latency.samples_ms) > 0
        assert len(set(latency.samples_ms)) > 1  # real clocks never give 15 equal readings
        assert latency.median_ms == statistics.median(latency.samples_ms)
    assert big.median_ms > one.median_ms  # 1024 rows cost more than one
    assert one.device == "cpu"


def test_int8_latency_runs_the_quantized_model_on_the_cpu() -> None:
    shipped = quantize(mlp(hidden=64), "int8")
    calls = []
    shipped.inner.register_forward_hook(lambda m, args, out: calls.append(args[0].dtype))
    latency = measure_latency(shipped, batch=4, repeats=5, warmup=1)
    assert calls == [torch.float32] * 6 and latency.device == "cpu"


# --------------------------------------------------------------------------- end to end


def test_prune_finetune_int8_keeps_accuracy_on_mnist(
    trained: nn.Module, splits: tuple[Split, Split], mnist: MnistData
) -> None:
    train_split, val_split = splits
    calls: list[int] = []

    def finetune(model: nn.Module, epochs: int) -> None:
        calls.append(epochs)
        fit(model, train_split, epochs)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {
            "val_accuracy": accuracy(model, val_split),
            "test_accuracy": accuracy(model, mnist.test),
        }

    original = [w.clone() for w in linear_weights(trained)]
    settings = {"prune_amount": 0.9, "finetune_epochs": 1, "quantize": "int8"}
    shipped, report = compress(trained, settings, finetune, evaluate, latency_repeats=10)
    assert calls == [1]
    assert all(map(torch.equal, linear_weights(trained), original))  # input untouched
    assert report.sparsity == pytest.approx(0.9, abs=1e-5)
    before, after = report.before, report.after
    # Measured: 0.914 -> 0.926 validation accuracy (fine-tuning continues training),
    # 1,630,429 -> 99,589 bytes, 16.4x smaller; ~40k non-zero weights of 407k.
    assert report.accuracy_after["val_accuracy"] > report.accuracy_before["val_accuracy"] - 0.03
    assert report.accuracy_after["test_accuracy"] > report.accuracy_before["test_accuracy"] - 0.03
    assert after.model_bytes < before.model_bytes / 10
    assert after.nonzero_params < 0.11 * before.nonzero_params
    assert after.flops < 0.11 * before.flops
    assert after.latency_ms_b1 > 0 and after.latency_ms_b1024 > 0
    assert after.latency_device == "cpu"
    assert accuracy(shipped, val_split) == report.accuracy_after["val_accuracy"]
    flat = report.metrics()
    assert (
        flat["model_bytes"] == after.model_bytes and flat["dense_model_bytes"] == before.model_bytes
    )


def test_compress_with_nothing_to_do_ships_the_dense_model(trained: nn.Module) -> None:
    shipped, report = compress(trained, CompressionSettings(finetune_epochs=3), latency_repeats=3)
    assert report.finetune_epochs_run == 0  # nothing changed, nothing to recover
    assert report.after.model_bytes == report.before.model_bytes
    assert report.after.nonzero_params == report.before.nonzero_params
    with pytest.raises(TypeError, match="finetune"):
        compress(trained, {"prune_amount": 0.5, "finetune_epochs": 1})

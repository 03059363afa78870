"""Measured metrics of a model as shipped: non-zeros, bytes, FLOPs and latency.

Nothing here is estimated from settings: every number is read off the shipped
model itself (its stored tensors, its serialization, its timed forward passes).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from workers.compression.encoding import model_bytes
from workers.compression.quantize import (
    linear_layers,
    model_device,
    stored_bias,
    stored_weight,
)

LATENCY_BATCHES = (1, 1024)


@dataclass(frozen=True)
class Latency:
    """Timed forward passes at one batch size: every sample and their median, in ms."""

    batch: int
    device: str
    samples_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)


@dataclass(frozen=True)
class ModelMetrics:
    """What the shipped model costs. See :func:`measure` for what each field means."""

    nonzero_params: int
    params: int
    model_bytes: int
    flops: int
    latency_ms_b1: float
    latency_ms_b1024: float
    latency_device: str

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def nonzero_params(model: nn.Module) -> tuple[int, int]:
    """(non-zero, total) stored parameter entries: Linear weights (int8 codes for int8
    layers) and biases, plus any other parameter. Exact zeros, not near-zeros."""
    tensors = _stored_tensors(model)
    return sum(int((t != 0).sum()) for t in tensors), sum(t.numel() for t in tensors)


def _stored_tensors(model: nn.Module) -> list[torch.Tensor]:
    linears = linear_layers(model)
    tensors = [stored_weight(m) for m in linears]
    tensors += [b for b in map(stored_bias, linears) if b is not None]
    seen = {id(t) for m in linears for t in m.parameters()}
    return tensors + [p.detach() for p in model.parameters() if id(p) not in seen]


def flops(model: nn.Module) -> int:
    """FLOPs per example of the Linear layers: 2 x (multiply-adds) = 2 x non-zero weights.

    A dense layer of in x out weights costs 2 * in * out; a pruned one only its
    non-zeros (what a sparse kernel would do; the latencies show what the dense
    kernels actually do); a factorized layer the sum of its two factors. Bias
    additions and activations (< 0.3 % here) are not counted.
    """
    return sum(2 * int((stored_weight(m) != 0).sum()) for m in linear_layers(model))


def input_features(model: nn.Module) -> int:
    """Width of the model's input: the first Linear's in_features."""
    features = linear_layers(model)[0].in_features
    assert isinstance(features, int)
    return features


@torch.inference_mode()
def measure_latency(model: nn.Module, batch: int, repeats: int = 20, warmup: int = 3) -> Latency:
    """Time ``repeats`` forward passes of a random float32 batch after ``warmup`` untimed ones.

    Runs where the model lives (an int8 model: the CPU), in eval mode and
    inference mode, with the process's torch thread count (the caller's choice);
    on CUDA each pass is bracketed by synchronize, so the time is the kernels'
    and not just their launch.
    """
    model.eval()
    device = model_device(model)
    x = torch.randn(batch, input_features(model), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):  # first calls pay for allocator growth, kernel selection, caches
        model(x)
    samples = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        model(x)
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return Latency(batch, str(device), tuple(samples))


def measure(model: nn.Module, repeats: int = 20, warmup: int = 3) -> ModelMetrics:
    """All metrics of a shipped model (see ``quantize``), measured on the device it lives on.

    nonzero_params / params: stored parameter entries that are non-zero / all of them.
    model_bytes: ``torch.save`` length of the compact encoding (``encoding.model_bytes``).
    flops: per example, see :func:`flops`.
    latency_ms_b1 / _b1024: median ms of ``repeats`` timed forward passes at batch 1 / 1024.
    """
    nonzero, total = nonzero_params(model)
    b1, b1024 = (measure_latency(model, b, repeats, warmup) for b in LATENCY_BATCHES)
    return ModelMetrics(
        nonzero_params=nonzero,
        params=total,
        model_bytes=model_bytes(model),
        flops=flops(model),
        latency_ms_b1=b1.median_ms,
        latency_ms_b1024=b1024.median_ms,
        latency_device=b1.device,
    )

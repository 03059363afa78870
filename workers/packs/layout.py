"""How a solo model's parameters map to a pack row.

A row holds every parameter of one member, Linear weights first (L1 acts on a
prefix), then biases and batch-norm scales and shifts, in the order of the
solo nn.Sequential. The layout is read off the model workers.model.build_model
returns, so a pack follows that function instead of restating the architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from workers.model import Dropout, linear_weights

ALIGN = 16  # floats: 64 bytes


@dataclass(frozen=True)
class Segment:
    """Where one solo parameter (by its name in the nn.Sequential) sits in a row."""

    name: str
    shape: tuple[int, ...]
    start: int

    @property
    def stop(self) -> int:
        return self.start + _numel(self.shape)


@dataclass(frozen=True)
class Layer:
    """One Linear (+ BatchNorm1d) (+ ReLU) (+ Dropout) block, by segment and module names."""

    weight: Segment
    bias: Segment | None
    bn: str | None = None  # name of the BatchNorm1d module (its running stats)
    bn_weight: Segment | None = None
    bn_bias: Segment | None = None
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    relu: bool = True  # hidden layers; the output layer has neither ReLU nor dropout


@dataclass(frozen=True)
class Layout:
    """How a solo model's parameters map to a row, read off the model itself."""

    segments: tuple[Segment, ...]  # row order: Linear weights first
    solo_order: tuple[int, ...]  # segment indices in the model's parameters() order
    layers: tuple[Layer, ...]  # hidden layers, then the output layer (relu False)
    n_weights: int  # the Linear weights: row[:n_weights] (padding between them is 0)
    size: int  # P, a multiple of ALIGN

    @classmethod
    def of(cls, model: nn.Sequential) -> Layout:
        """The layout of ``model`` (as built by workers.model.build_model)."""
        named = list(model.named_parameters())
        weights = {id(w) for w in linear_weights(model)}
        ordered = [n for n, p in named if id(p) in weights] + [
            n for n, p in named if id(p) not in weights
        ]
        shapes = dict((n, tuple(p.shape)) for n, p in named)
        segments, start = [], 0
        for name in ordered:
            segments.append(Segment(name, shapes[name], start))
            start = _aligned(segments[-1].stop)
        by_name = {s.name: s for s in segments}
        solo_order = tuple(ordered.index(n) for n, _ in named)
        n_weights = segments[len(weights) - 1].stop  # the weights' segments (and their padding)
        return cls(tuple(segments), solo_order, _layers(model, by_name), n_weights, start)

    def row(self, model: nn.Module) -> Tensor:
        """The model's parameters as one row (a copy; the padding between them is 0)."""
        params = dict(model.named_parameters())
        first = next(iter(params.values()))
        row = torch.zeros(self.size, dtype=first.dtype, device=first.device)
        for s in self.segments:
            row[s.start : s.stop] = params[s.name].detach().reshape(-1)
        return row

    @torch.no_grad()
    def load(
        self, model: nn.Module, row: Tensor, running: Sequence[Tensor], batches_tracked: int
    ) -> None:
        """Copy a row (and the batch-norm state) into the solo-shaped ``model``."""
        params = dict(model.named_parameters())
        for s in self.segments:
            params[s.name].copy_(row[s.start : s.stop].view(s.shape))
        modules = dict(model.named_modules())
        bns = [layer.bn for layer in self.layers if layer.bn is not None]
        for i, name in enumerate(bns):
            modules[name].running_mean.copy_(running[2 * i])  # type: ignore[operator]
            modules[name].running_var.copy_(running[2 * i + 1])  # type: ignore[operator]
            modules[name].num_batches_tracked.fill_(batches_tracked)  # type: ignore[operator]

    def running(self, model: nn.Module) -> list[Tensor]:
        """The model's batch-norm running (mean, var) per layer, flattened into one list."""
        modules = dict(model.named_modules())
        out: list[Tensor] = []
        for layer in self.layers:
            if layer.bn is not None:
                bn = modules[layer.bn]
                out += [bn.running_mean.detach().clone(), bn.running_var.detach().clone()]  # type: ignore[union-attr]
        return out


def _layers(model: nn.Sequential, seg: dict[str, Segment]) -> tuple[Layer, ...]:
    # Walk the Sequential: each Linear opens a block; BN, ReLU and Dropout attach to it.
    blocks: list[dict] = []
    for name, m in model.named_children():
        if isinstance(m, nn.Linear):
            bias = seg.get(f"{name}.bias")
            blocks.append({"weight": seg[f"{name}.weight"], "bias": bias, "relu": False})
        elif isinstance(m, nn.BatchNorm1d):
            blocks[-1].update(
                bn=name,
                bn_weight=seg[f"{name}.weight"],
                bn_bias=seg[f"{name}.bias"],
                bn_eps=m.eps,
                bn_momentum=m.momentum,
            )
        elif isinstance(m, nn.ReLU):
            blocks[-1]["relu"] = True
        elif isinstance(m, Dropout | nn.Dropout):
            pass  # a pack draws every member's masks itself (members' rates differ)
        else:
            raise TypeError(f"packs cannot stack a {type(m).__name__} layer")
    return tuple(Layer(**b) for b in blocks)


def _aligned(offset: int) -> int:
    # Every segment starts on a 64-byte boundary (rows too: the size is rounded up), so a
    # parameter's gradient view is aligned like a fresh tensor. Measured: with two threads,
    # MKL's matrix product writing into a view that is only 4-byte aligned takes another
    # path and rounds differently from the solo trainer's product.
    return -(-offset // ALIGN) * ALIGN


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n

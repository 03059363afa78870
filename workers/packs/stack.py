"""K copies of the reference MLP as one stacked model.

Every parameter of member k lives in row k of one [K, P] tensor (``flat``, laid
out by workers.packs.layout), its gradient in row k of ``grad``, so the
optimizer updates a block of members in a handful of whole-row operations
instead of a few per parameter tensor. A Linear layer is a batched matrix
product over members (workers.packs.linear), which gives each member the bits
of its solo F.linear, forward and backward, on the CPU; batch norm runs as one
F.batch_norm over [B, K*H] (every member's channels side by side), which is per
member and per channel exactly what the solo BatchNorm1d computes.

Rows in the stack are grouped by update rule (see keys.KINDS), so each rule's
members are one contiguous block (a view) for the optimizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from workers.packs.layout import Layer, Layout, Segment
from workers.packs.linear import Sinks, StackedLinear
from workers.packs.optim import STATE, Group

# (hidden layer index, shape) -> the [K, *shape] dropout noise after that layer's ReLU, or None
NoiseFn = Callable[[int, tuple[int, ...]], Tensor | None]


@dataclass
class Rows:
    """One member's slice of every stacked tensor: views into a stack, or its own copies."""

    params: Tensor  # [P]
    running: list[Tensor]  # batch-norm running (mean, var) per layer
    state: dict[str, Tensor] = field(default_factory=dict)  # optimizer state; missing: zeros
    steps: float = 0.0  # optimizer steps taken
    grad: Tensor | None = None  # its gradient so far (gd accumulates over an epoch's chunks)

    def to(self, device: torch.device | str) -> Rows:
        """Copies on ``device`` (a checkpoint, or a parked member's state)."""
        return Rows(
            self.params.detach().to(device, copy=True),
            [r.to(device, copy=True) for r in self.running],
            {k: v.to(device, copy=True) for k, v in self.state.items()},
            self.steps,
            None,  # a checkpoint is taken at an epoch boundary: no gradient in flight
        )


class Stack:
    """The stacked parameters, gradients, batch-norm statistics and optimizer state of K members.

    Immutable in membership: a member joining or leaving builds a new Stack from
    the rows of the members that stay (:meth:`rows`), one copy of each tensor.
    ``rows`` must be ordered by update rule (each rule one block). ``flat`` and
    ``grad`` are [K, P]; ``scratch`` is the optimizer's temporary, allocated once
    (fresh multi-megabyte tensors every step cost page faults on the CPU).
    """

    def __init__(
        self,
        layout: Layout,
        rows: Sequence[Rows],
        kinds: Sequence[str],
        device: torch.device,
        grad_fresh: bool = True,
    ) -> None:
        self.layout, self.kinds = layout, list(kinds)
        self.flat = torch.stack([r.params.detach().to(device) for r in rows])
        grads = [r.grad for r in rows]
        if not grad_fresh and all(g is not None for g in grads):  # mid-gd-epoch: keep it
            self.grad = torch.stack([g.to(device) for g in grads])  # type: ignore[union-attr]
        else:
            self.grad, grad_fresh = torch.zeros_like(self.flat), True
        self.grad_fresh = grad_fresh  # the next backward overwrites the gradient
        self.scratch = torch.empty_like(self.flat)
        n_running = len(rows[0].running)
        self.running = [
            torch.stack([r.running[i].to(device) for r in rows]) for i in range(n_running)
        ]
        self.groups = _groups(rows, self.kinds, layout.size, device)
        self._trigger = torch.zeros((), device=device, requires_grad=True)
        self._leaves: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return self.flat.shape[0]

    def rows(self, k: int) -> Rows:
        """Member k's rows (views: valid until this stack is replaced)."""
        group = next(g for g in self.groups if g.start <= k < g.stop)
        i = k - group.start
        return Rows(
            self.flat[k],
            [r[k] for r in self.running],
            {name: t[i] for name, t in group.state.items()},
            float(group.steps[i].item()),
            self.grad[k],
        )

    def _view(self, t: Tensor, s: Segment) -> Tensor:
        return t[:, s.start : s.stop].view(len(self), *s.shape)

    def forward(self, x: Tensor, noise: NoiseFn) -> Tensor:
        """Logits [K, B, 10] in train mode from inputs [K, B, 784] (an expanded view is fine)."""
        h, bn = x, 0
        for index, layer in enumerate(self.layout.layers):
            bias = None if layer.bias is None else self._view(self.flat, layer.bias)
            sinks = Sinks(
                self,
                self._view(self.grad, layer.weight),
                None if layer.bias is None else self._view(self.grad, layer.bias),
            )
            weight = self._view(self.flat, layer.weight)
            h = StackedLinear.apply(h, weight, bias, sinks, self._trigger)
            if layer.bn is not None:
                gamma, beta = self._leaf(layer.bn_weight), self._leaf(layer.bn_bias)
                h = self._batch_norm(h, layer, gamma, beta, self.running[bn], self.running[bn + 1])
                bn += 2
            if layer.relu:
                h = torch.relu(h)
                if (mask := noise(index, tuple(h.shape))) is not None:
                    h = h * mask
        return h

    def _leaf(self, segment: Segment | None) -> Tensor:
        # Batch-norm scale and shift go through autograd (F.batch_norm computes their
        # gradients): leaves that are views of flat; backward() folds their gradients in.
        assert segment is not None
        leaf = self._view(self.flat, segment).detach().requires_grad_()
        self._leaves[segment.name] = leaf
        return leaf

    def backward(self, loss: Tensor) -> None:
        """Gradient of ``loss`` (a sum over members) into ``grad``; accumulates after the first."""
        loss.backward()
        segments = {s.name: s for s in self.layout.segments}
        for name, leaf in self._leaves.items():
            if leaf.grad is None:
                continue
            sink = self._view(self.grad, segments[name])
            if self.grad_fresh:
                sink.copy_(leaf.grad)
            else:
                sink.add_(leaf.grad)
        self._leaves.clear()
        self.grad_fresh = False

    def zero_grad(self) -> None:
        """The next backward starts a new gradient (overwrites instead of adding)."""
        self.grad_fresh = True

    @staticmethod
    def _batch_norm(
        h: Tensor, layer: Layer, gamma: Tensor, beta: Tensor, mean: Tensor, var: Tensor
    ) -> Tensor:
        # [K, B, H] -> [B, K*H]: each member's channels are channels of one batch norm, so its
        # statistics are over that member's batch only, and the running stats update in place.
        k, b, hidden = h.shape
        flat = h.transpose(0, 1).reshape(b, k * hidden)
        out = F.batch_norm(
            flat,
            mean.view(-1),
            var.view(-1),
            gamma.reshape(-1),
            beta.reshape(-1),
            training=True,
            momentum=layer.bn_momentum,
            eps=layer.bn_eps,
        )
        return out.view(b, k, hidden).transpose(0, 1)

    @torch.no_grad()
    def add_l1(self, l1: Tensor) -> None:
        """Add d(l1 * sum|W|)/dW = l1 * sign(W) to the gradient ([K, 1] l1 per member)."""
        n = self.layout.n_weights
        sign = torch.sign(self.flat[:, :n], out=self.scratch[:, :n])
        # One rounding of grad + l1*sign, like the solo trainer's (loss + l1 penalty).backward().
        self.grad[:, :n].addcmul_(l1, sign)

    @torch.no_grad()
    def grad_norms(self) -> tuple[Tensor, Tensor]:
        """Per member: the global L2 norm of the gradient and that of the first layer's.

        Each is the norm of the per-parameter norms (torch's get_total_norm), the
        first layer being the first module with parameters (workers.probes).
        """
        segments = [self.layout.segments[i] for i in self.layout.solo_order]
        norms = [torch.linalg.vector_norm(self.grad[:, s.start : s.stop], dim=1) for s in segments]
        first = self.layout.layers[0]
        in_first = [i for i, s in enumerate(segments) if s in (first.weight, first.bias)]
        total = torch.linalg.vector_norm(torch.stack(norms, dim=1), dim=1)
        first_total = torch.linalg.vector_norm(torch.stack([norms[i] for i in in_first], 1), dim=1)
        return total, first_total

    @torch.no_grad()
    def step(self) -> None:
        """One optimizer step for every member, block by block (the gradient is used up)."""
        for g in self.groups:
            rows = slice(g.start, g.stop)
            g.step(self.flat[rows], self.grad[rows], self.scratch[rows])


def _groups(
    rows: Sequence[Rows], kinds: Sequence[str], size: int, device: torch.device
) -> list[Group]:
    groups: list[Group] = []
    start = 0
    while start < len(kinds):
        stop = start
        while stop < len(kinds) and kinds[stop] == kinds[start]:
            stop += 1
        block = rows[start:stop]
        state = {
            name: torch.stack([_state_row(r, name, size, device) for r in block])
            for name in STATE[kinds[start]]
        }
        steps = torch.tensor([[r.steps] for r in block], dtype=torch.float64, device=device)
        groups.append(Group(kinds[start], start, stop, state, steps))
        start = stop
    return groups


def _state_row(rows: Rows, name: str, size: int, device: torch.device) -> Tensor:
    row = rows.state.get(name)
    return torch.zeros(size, device=device) if row is None else row.to(device)

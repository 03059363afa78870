"""torch.optim's update rules, vectorised over pack members with per-member hyperparameters.

Each function updates a block of rows ``p`` [n, P] (one row per member, every
parameter of a member in one row) from its gradient ``g`` in place. The
hyperparameters are [n, 1] tensors that broadcast over a row.

The operations mirror torch.optim's multi-tensor (foreach) code path, which the
solo trainer uses on the CPU, op for op: ``add(x, alpha=a)`` there is
``addcmul(x, a, y)`` here (both one fused multiply-add), ``addcdiv(value=v)``
is ``addcdiv(v * y, z)``, and scalars torch computes in Python double (bias
corrections, ``1 - lr * weight_decay``) are computed in float64 here and then
rounded to float32, as torch rounds a Python scalar. Measured on the CPU: every
update is bit-identical to torch.optim's on the same inputs (tests/workers/test_packs.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hpo.settings import TrainConfig

RMSPROP_ALPHA = 0.99  # torch.optim.RMSprop's default, which the solo trainer keeps

# Optimizer state rows each update rule keeps (zeros at a member's first step).
STATE: dict[str, tuple[str, ...]] = {
    "sgd": (),
    "momentum": ("momentum_buffer",),
    "nesterov": ("momentum_buffer",),
    "adagrad": ("sum",),
    "rmsprop": ("square_avg",),
    "rmsprop_momentum": ("square_avg", "momentum_buffer"),
    "adam": ("exp_avg", "exp_avg_sq"),
    "adamw": ("exp_avg", "exp_avg_sq"),
}


@dataclass
class Hypers:
    """One block's per-member hyperparameters as [n, 1] tensors (None: zero for every member)."""

    neg_lr: Tensor  # -lr, float32
    lr64: Tensor  # lr, float64 (adam's step size is computed in double, as torch does)
    weight_decay: Tensor | None
    momentum: Tensor
    eps: Tensor
    beta1: Tensor  # float64
    beta2: Tensor  # float64
    decay: Tensor | None = None  # adamw: 1 - lr * weight_decay


@dataclass
class Group:
    """Members with one update rule: rows [start, stop) of the stack, and their state."""

    kind: str
    start: int
    stop: int
    state: dict[str, Tensor]  # name -> [n, P]
    steps: Tensor  # [n, 1] float64: optimizer steps taken per member
    hypers: Hypers | None = field(default=None, repr=False)

    def set_hypers(self, configs: Sequence[TrainConfig], lrs: Sequence[float]) -> None:
        """This epoch's hyperparameters (the lr follows each member's schedule)."""
        device = self.steps.device

        def col(values: Sequence[float], dtype: torch.dtype = torch.float32) -> Tensor:
            # Python double -> dtype: the same rounding torch applies to a Python scalar.
            return torch.tensor(values, dtype=torch.float64).to(device, dtype).view(-1, 1)

        wd = [c.weight_decay for c in configs]
        decay = [1 - lr * w for lr, w in zip(lrs, wd, strict=True)]
        self.hypers = Hypers(
            neg_lr=col([-lr for lr in lrs]),
            lr64=col(lrs, torch.float64),
            weight_decay=col(wd) if any(wd) else None,
            momentum=col([c.momentum for c in configs]),
            eps=col([c.eps for c in configs]),
            beta1=col([c.beta1 for c in configs], torch.float64),
            beta2=col([c.beta2 for c in configs], torch.float64),
            decay=col(decay) if any(wd) else None,
        )

    @torch.no_grad()
    def step(self, p: Tensor, g: Tensor) -> None:
        """Update rows ``p`` in place from gradient rows ``g`` (both [n, P])."""
        assert self.hypers is not None, "set_hypers() before step()"
        h, s = self.hypers, self.state
        self.steps += 1
        match self.kind:
            case "sgd" | "momentum" | "nesterov":
                _sgd(p, g, h, s.get("momentum_buffer"), nesterov=self.kind == "nesterov")
            case "adagrad":
                _adagrad(p, g, h, s["sum"])
            case "rmsprop" | "rmsprop_momentum":
                _rmsprop(p, g, h, s["square_avg"], s.get("momentum_buffer"))
            case "adam" | "adamw":
                _adam(p, g, h, s, self.steps, decoupled=self.kind == "adamw")


def _l2(p: Tensor, g: Tensor, h: Hypers) -> Tensor:
    # torch: grads = grads + weight_decay * params (a new tensor: p.grad is left alone)
    return g if h.weight_decay is None else torch.addcmul(g, h.weight_decay, p)


def _sgd(p: Tensor, g: Tensor, h: Hypers, buf: Tensor | None, nesterov: bool) -> None:
    g = _l2(p, g, h)
    if buf is not None:
        # torch's first step sets buf = g; a zero buffer gives the same: 0 * m + g == g.
        buf.mul_(h.momentum).add_(g)
        g = torch.addcmul(g, h.momentum, buf) if nesterov else buf
    p.addcmul_(h.neg_lr, g)


def _adagrad(p: Tensor, g: Tensor, h: Hypers, total: Tensor) -> None:
    g = _l2(p, g, h)
    total.addcmul_(g, g)
    std = total.sqrt().add_(h.eps)
    p.addcdiv_(g * h.neg_lr, std)  # torch: numerator = g * -clr (lr_decay 0: clr = lr)


def _rmsprop(p: Tensor, g: Tensor, h: Hypers, square_avg: Tensor, buf: Tensor | None) -> None:
    g = _l2(p, g, h)
    square_avg.mul_(RMSPROP_ALPHA).addcmul_(g, g, value=1 - RMSPROP_ALPHA)
    avg = square_avg.sqrt().add_(h.eps)
    if buf is None:
        p.addcdiv_(g * h.neg_lr, avg)
    else:
        buf.mul_(h.momentum).addcdiv_(g, avg)
        p.addcmul_(h.neg_lr, buf)


def _adam(
    p: Tensor, g: Tensor, h: Hypers, state: dict[str, Tensor], steps: Tensor, decoupled: bool
) -> None:
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    if decoupled:
        if h.decay is not None:
            p.mul_(h.decay)
    else:
        g = _l2(p, g, h)
    exp_avg.lerp_(g, (1 - h.beta1).float())
    exp_avg_sq.mul_(h.beta2.float()).addcmul_(g * (1 - h.beta2).float(), g)
    # Bias corrections in double, per member, from its own step count (as torch: Python floats).
    step_size = (-(h.lr64 / (1 - h.beta1**steps))).float()
    bias_correction2_sqrt = (1 - h.beta2**steps).sqrt().float()
    denom = exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(h.eps)
    p.addcdiv_(exp_avg * step_size, denom)

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
    def step(self, p: Tensor, g: Tensor, tmp: Tensor) -> None:
        """Update rows ``p`` in place from gradient rows ``g``, both [n, P].

        ``g`` is used up (overwritten, as torch overwrites intermediates), and ``tmp``
        is scratch of the same shape: no [n, P] tensor is allocated per step.
        """
        assert self.hypers is not None, "set_hypers() before step()"
        h, s = self.hypers, self.state
        self.steps += 1
        if h.weight_decay is not None and self.kind != "adamw":
            g.addcmul_(h.weight_decay, p)  # torch: grads + weight_decay * params (one FMA)
        match self.kind:
            case "sgd" | "momentum" | "nesterov":
                _sgd(p, g, h, s.get("momentum_buffer"), nesterov=self.kind == "nesterov")
            case "adagrad":
                _adagrad(p, g, h, s["sum"], tmp)
            case "rmsprop" | "rmsprop_momentum":
                _rmsprop(p, g, h, s["square_avg"], s.get("momentum_buffer"), tmp)
            case "adam" | "adamw":
                _adam(p, g, h, s, self.steps, tmp, decoupled=self.kind == "adamw")


def _sgd(p: Tensor, g: Tensor, h: Hypers, buf: Tensor | None, nesterov: bool) -> None:
    if buf is not None:
        # torch's first step sets buf = g; a zero buffer gives the same: 0 * m + g == g.
        buf.mul_(h.momentum).add_(g)
        g = g.addcmul_(h.momentum, buf) if nesterov else buf
    p.addcmul_(h.neg_lr, g)


def _adagrad(p: Tensor, g: Tensor, h: Hypers, total: Tensor, tmp: Tensor) -> None:
    total.addcmul_(g, g)
    std = torch.sqrt(total, out=tmp).add_(h.eps)
    p.addcdiv_(g.mul_(h.neg_lr), std)  # torch: numerator = g * -clr (lr_decay 0: clr = lr)


def _rmsprop(
    p: Tensor, g: Tensor, h: Hypers, square_avg: Tensor, buf: Tensor | None, tmp: Tensor
) -> None:
    square_avg.mul_(RMSPROP_ALPHA).addcmul_(g, g, value=1 - RMSPROP_ALPHA)
    avg = torch.sqrt(square_avg, out=tmp).add_(h.eps)
    if buf is None:
        p.addcdiv_(g.mul_(h.neg_lr), avg)  # torch: addcdiv(value=-lr) = p + (-lr * g) / avg
    else:
        buf.mul_(h.momentum).addcdiv_(g, avg)
        p.addcmul_(h.neg_lr, buf)


def _adam(
    p: Tensor,
    g: Tensor,
    h: Hypers,
    state: dict[str, Tensor],
    steps: Tensor,
    tmp: Tensor,
    decoupled: bool,
) -> None:
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    if decoupled and h.decay is not None:
        p.mul_(h.decay)
    exp_avg.lerp_(g, (1 - h.beta1).float())
    scaled = torch.mul(g, (1 - h.beta2).float(), out=tmp)
    exp_avg_sq.mul_(h.beta2.float()).addcmul_(scaled, g)
    # Bias corrections in double, per member, from its own step count (as torch: Python floats).
    step_size = (-(h.lr64 / (1 - h.beta1**steps))).float()
    bias_correction2_sqrt = (1 - h.beta2**steps).sqrt().float()
    denom = torch.sqrt(exp_avg_sq, out=tmp).div_(bias_correction2_sqrt).add_(h.eps)
    p.addcdiv_(torch.mul(exp_avg, step_size, out=g), denom)

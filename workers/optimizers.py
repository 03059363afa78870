"""The optimizer and the learning-rate schedule a trial's settings name.

Shared by the solo trainer (workers.trainer) and the fused packs (workers.packs,
which replays the schedule per member on a stand-in optimizer).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hpo.settings import TrainConfig


def make_optimizer(
    config: TrainConfig, model: nn.Module, device: torch.device | str = "cpu"
) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` with its own knobs; L2 via weight_decay."""
    c, params = config, [p for p in model.parameters() if p.requires_grad]
    # Fused kernels (one launch for all parameters) on CUDA; multi-tensor foreach elsewhere.
    fast: dict[str, Any] = (
        {"fused": True} if torch.device(device).type == "cuda" else {"foreach": True}
    )
    common: dict[str, Any] = {"lr": c.lr, "weight_decay": c.weight_decay}
    match c.optimizer:
        case "gd" | "sgd":
            return torch.optim.SGD(params, momentum=0.0, **common, **fast)
        case "momentum" | "nesterov":
            nesterov = c.optimizer == "nesterov"
            return torch.optim.SGD(params, momentum=c.momentum, nesterov=nesterov, **common, **fast)
        case "adagrad":  # Adagrad's fused kernel is CPU-only: foreach everywhere
            return torch.optim.Adagrad(params, eps=c.eps, foreach=True, **common)
        case "rmsprop":  # no fused RMSprop in torch
            return torch.optim.RMSprop(
                params, momentum=c.momentum, eps=c.eps, foreach=True, **common
            )
        case "adam" | "adamw":
            cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
            return cls(params, betas=(c.beta1, c.beta2), eps=c.eps, **common, **fast)
    raise ValueError(f"unknown optimizer {c.optimizer!r}")


def make_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule, after an optional linear warmup over ``warmup_epochs``."""
    sched = torch.optim.lr_scheduler
    warmup = config.warmup_epochs
    main: sched.LRScheduler
    match config.lr_schedule:
        case "step":
            main = sched.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
        case "exponential":
            main = sched.ExponentialLR(optimizer, gamma=config.gamma)
        case "cosine":
            main = sched.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs - warmup))
        case _:
            main = sched.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    # Epoch e < warmup runs at lr * (e + 1) / (warmup + 1); the main schedule starts after.
    ramp = sched.LinearLR(optimizer, start_factor=1 / (warmup + 1), total_iters=warmup)
    return sched.SequentialLR(optimizer, [ramp, main], milestones=[warmup])

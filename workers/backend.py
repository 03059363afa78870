"""The device side of a training run: backend switches, device copies, peak memory.

Shared by the solo trainer and the fused packs.
"""

from __future__ import annotations

import torch
from torch import nn

from hpo.settings import TrainConfig
from workers.data import Split


def configure_backend(device: torch.device) -> None:
    if device.type == "cuda":
        # TF32 matmuls: ~free accuracy-wise for this MLP, several times the fp32 throughput.
        torch.backends.cuda.matmul.fp32_precision = "tf32"


def maybe_compile(model: nn.Module, config: TrainConfig) -> nn.Module:
    # "auto" means off for now: compiling costs tens of seconds per trial, and for this small
    # MLP that has not been measured to pay off on either CPU or GPU. True forces it on.
    if config.compile is True:
        return torch.compile(model)  # type: ignore[return-value]
    return model


def on_device(split: Split, device: torch.device) -> Split:
    if split.x.device == device:
        return split
    return Split(split.x.to(device), split.y.to(device))


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import psutil  # the worker extra; only its CPU memory metric needs it

    return psutil.Process().memory_info().rss / 2**20  # current RSS at epoch end

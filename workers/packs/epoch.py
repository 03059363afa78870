"""A pack epoch's per-member running sums, and each member's epoch metrics from them.

The sums stay on the device ([K] tensors, one entry per member) and are read
once at the end of the epoch (or when a member diverges mid-epoch). The metrics
are built by the solo trainer's own workers.outcome.epoch_metrics: the loss, the
validation figures of the member's solo-shaped model, the gradient-norm
statistics of workers.probes.GradNormStats (over the steps the solo trainer
samples: every GRAD_NORM_EVERY-th of the epoch) and the dead-unit fraction of
workers.probes.DeadUnitProbe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from workers.outcome import EpochRun

ROWS = ("loss", "grad", "grad_max", "grad_min", "grad_first")  # the order of read()


@dataclass
class EpochSums:
    """The pack epoch in progress. Counters are shared: members step in lockstep."""

    t0: float
    loss: Tensor  # [K] sum over samples of each member's cross-entropy (no L1 term)
    grad: Tensor  # [K] sum of the sampled global gradient norms
    grad_max: Tensor
    grad_min: Tensor
    grad_first: Tensor  # [K] sum of the sampled first-layer gradient norms
    order: Tensor | None = None  # [K, n] each member's batch order (mini-batch epochs)
    samples: int = 0
    steps: int = 0
    grad_norms: int = 0  # how many norms were sampled
    data_time: float = 0.0  # host seconds gathering batches (shared: one gather for all)

    @classmethod
    def start(cls, k: int, device: torch.device) -> EpochSums:
        zeros = torch.zeros(k, device=device)
        inf = torch.full((k,), float("inf"), device=device)
        return cls(time.perf_counter(), zeros, zeros.clone(), -inf, inf, zeros.clone())

    def keep(self, index: Tensor) -> None:
        """Only the members at ``index`` go on (the others left the pack)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                setattr(self, f.name, value[index])

    def observe(self, norms: Tensor, first: Tensor) -> None:
        """Add one sampled step's per-member global and first-layer gradient norms."""
        self.grad += norms
        self.grad_max = torch.maximum(self.grad_max, norms)
        self.grad_min = torch.minimum(self.grad_min, norms)
        self.grad_first += first
        self.grad_norms += 1

    def read(self) -> list[dict[str, float]]:
        """Per member, the sums as Python floats: the epoch's one host read."""
        table = torch.stack([getattr(self, name) for name in ROWS]).cpu().tolist()
        return [dict(zip(ROWS, column, strict=True)) for column in zip(*table, strict=True)]


def member_probes(sums: EpochSums, row: dict[str, float], dead: float | None) -> dict[str, float]:
    """One member's gradient-norm and dead-unit figures, as the solo trainer's probes read."""
    probes: dict[str, float] = {}
    if sums.grad_norms:  # like GradNormStats.read(): no sampled step, no gradient figures
        probes["grad_norm"] = row["grad"] / sums.grad_norms
        probes["grad_norm_max"] = row["grad_max"]
        probes["grad_norm_min"] = row["grad_min"]
        probes["grad_norm_first"] = row["grad_first"] / sums.grad_norms
    probes["dead_fraction"] = dead or 0.0
    return probes


def epoch_run(sums: EpochSums, row: dict[str, float], train_time: float) -> EpochRun:
    """One member's training pass, for workers.outcome.epoch_metrics."""
    return EpochRun(row["loss"], sums.samples, sums.data_time, sums.t0, train_time)

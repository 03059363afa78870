"""What a training run of the reference model reports, for the solo trainer and the packs.

One module, so that a trial reports the same epoch metrics and the same result
whether it trained alone (workers.trainer) or fused with others
(workers.packs): the hooks that steer it, the divergence guard, the epoch's
metrics, the evaluation pass and the :class:`TrainResult` it ends with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from hpo.settings import TrainConfig, measures_model
from workers.backend import peak_memory_mb
from workers.data import Split
from workers.model import count_params
from workers.results import TrainStatus

EVAL_CHUNK = 10000  # evaluation batch: large, since inference needs no activations kept

Ship = Callable[[], tuple[dict[str, float], nn.Module]]  # compress + measure: metrics, model


class TrainHooks(Protocol):
    """How the daemon steers a running trial."""

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Called after each epoch; return False to prune (stop now)."""
        ...

    def should_stop(self) -> bool:
        """Polled at every batch boundary; True ends training at once."""
        ...


def catch_up(hooks: TrainHooks, history: list[dict[str, float]]) -> bool:
    """A resumed run's epochs so far, to hooks that want them (``on_resume``: a trial
    reports the ones its last attempt did not get to report); False: prune now."""
    on_resume = getattr(hooks, "on_resume", None)
    return True if on_resume is None or not history else bool(on_resume(history))


class NullHooks:
    """Never prunes, never stops."""

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        return True

    def should_stop(self) -> bool:
        return False


@dataclass
class TrainResult:
    """How a trial ended.

    objective: validation accuracy of the last evaluated epoch; for diverged the
    accuracy measured at the moment of divergence (near chance, so the sampler
    learns the region is bad); None only when stopped before any epoch ended.
    Metric values can be NaN/Inf after a divergence: JSON needs them mapped.
    """

    status: TrainStatus
    objective: float | None
    epochs_run: int
    history: list[dict[str, float]]
    final: dict[str, float]
    diagnosis: str | None = None
    optimizer_steps: int = 0
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    shipped: nn.Module | None = field(default=None, repr=False, compare=False)  # compressed


@dataclass
class Guard:
    """Divergence guard: NaN/Inf loss, or loss > factor x the first batch's loss."""

    factor: float
    every: int  # check every N batches (1 on CPU, where reading a loss is free)
    reference: float | None = None

    def check(self, loss: torch.Tensor, epoch: int, batch: int, always: bool = False) -> str | None:
        if self.reference is not None and batch % self.every and not always:
            return None
        value = loss.item()
        where = f"diverged at epoch {epoch} batch {batch}: loss {value:.4g}"
        if not math.isfinite(value):
            return where
        if self.reference is None:
            self.reference = value
        elif value > self.factor * self.reference:
            return f"{where} > {self.factor:g} x first loss {self.reference:.4g}"
        return None


def nonfinite_loss(metrics: dict[str, float]) -> str | None:
    """A diagnosis when the epoch's mean training loss is NaN/Inf (else None)."""
    # On CUDA the guard samples every N batches; the epoch's loss sum saw every batch.
    loss = metrics["train_loss"]
    return None if math.isfinite(loss) else f"diverged in epoch {metrics['epoch']}: loss {loss}"


@dataclass(frozen=True)
class EpochRun:
    """What one epoch's training pass measured, read off the device once."""

    loss_sum: float  # sum over samples of the cross-entropy (no L1 term)
    samples: int
    data_time: float  # host seconds spent gathering batches
    t0: float  # perf_counter at the epoch's start
    train_time: float  # seconds of training, without validation


def epoch_metrics(
    epoch: int,
    run: EpochRun,
    val: tuple[float, float],
    lr: float,
    device: torch.device,
    probes: dict[str, float],
) -> dict[str, float]:
    """One epoch's metrics (hpo.settings.EPOCH_METRICS), solo or in a pack, key for key."""
    return {
        "epoch": epoch,
        "train_loss": run.loss_sum / max(run.samples, 1),
        "val_loss": val[0],
        "val_accuracy": val[1],
        "lr": lr,
        **probes,  # grad_norm (+ _max, _min, _first), dead_fraction: what the diagnosis reads
        "epoch_time_s": time.perf_counter() - run.t0,  # training + validation
        "data_time_s": run.data_time,  # waiting on data: the telemetry's data-wait share
        "samples_per_s": run.samples / max(run.train_time, 1e-9),  # training only
        "peak_memory_mb": peak_memory_mb(device),
    }


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on ``split``."""
    model.eval()
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    for start in range(0, len(split), EVAL_CHUNK):
        x, y = split.x[start : start + EVAL_CHUNK], split.y[start : start + EVAL_CHUNK]
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(dim=1) == y).sum()
    return loss_sum.item() / len(split), correct.item() / len(split)


@dataclass
class RunEnd:
    """How the epoch loop of one trial ended (solo or pack member)."""

    status: TrainStatus
    history: list[dict[str, float]]
    diagnosis: str | None
    started: float  # perf_counter at the start (shifted back by a resumed run's elapsed time)
    steps: int  # optimizer steps taken


def build_result(
    end: RunEnd, config: TrainConfig, model: nn.Module, test_set: Split | None, ship: Ship
) -> TrainResult:
    """The run's result: a completed model is compressed and measured as shipped when its
    settings ask for it (its validation accuracy is then the objective); any other
    completed, pruned or diverged one gets its test accuracy; a stopped one neither."""
    final = dict(end.history[-1]) if end.history else {}
    objective = end.history[-1]["val_accuracy"] if end.history else None
    shipped = None
    if end.status == TrainStatus.COMPLETED and test_set is not None and measures_model(config):
        metrics, shipped = ship()
        final.update(metrics)
        objective = final["val_accuracy"]
    elif end.status != TrainStatus.STOPPED and test_set is not None:  # reported, never optimized
        final["test_accuracy"] = evaluate(model, test_set)[1]
    final["n_params"] = count_params(model)
    final["total_time_s"] = time.perf_counter() - end.started
    history, steps = end.history, end.steps
    args = (end.status, objective, len(history), history, final, end.diagnosis, steps)
    return TrainResult(*args, model=model, shipped=shipped)

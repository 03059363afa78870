"""The reference trainer's checkpoint: one file that lets a run continue bit for bit.

A checkpoint holds what the next step of training depends on: the model (with
its pruning masks), the optimizer, the schedule, the random streams (batch
order, dropout masks, torch's global generator), the divergence guard, the
optimizer steps taken, the metrics so far and the time spent. Written at an
epoch end it resumes at the next epoch; written when the trainer is told to
stop in the middle of an epoch (a preemption) it also holds the data-order
position: that epoch's batch order, how many batches are done and the epoch's
partial sums, so the resumed run takes exactly the batches that were left.

On a CPU with the same seed a resumed run gives the same per-epoch metrics and
final accuracy as an uninterrupted one (tests/workers/test_trainer_checkpoint.py).
On CUDA the same holds as far as the kernels are deterministic: torch's default
matmul and index kernels are, the ``fused`` optimizers are, but atomics-based
reductions (``index_add``, some backward passes) may differ in the last bits.

The file is written to ``<name>.tmp`` and renamed, so a reader never sees half
of one (the worker's checkpoint folder ignores ``*.tmp`` files). Tensors only
(``torch.load(weights_only=True)``): loading a checkpoint runs no code.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from hpo.settings import TrainConfig

FILENAME = "trainer.pt"
FORMAT = "hpo-trainer/1"
#: A fused pack's member (workers.packs.member): its stacked rows, not a module's state.
PACK_FORMAT = "hpo-pack-member/1"
#: The settings that do not change what training computes: a checkpoint written under
#: other values of these still fits the run.
NEUTRAL_SETTINGS = ("checkpoint_every", "compile", "measure_model")


class CheckpointUnreadable(Exception):
    """The checkpoint file is corrupt, of another format, or of another trial's settings."""


@dataclass
class Position:
    """Where a stopped epoch was: its batch order, batches done and partial sums."""

    epoch: int
    batches_done: int
    order: torch.Tensor
    loss_sum: torch.Tensor
    samples: int
    steps: int
    grads: dict[str, Any]


@dataclass
class TrainerState:
    """Everything :func:`workers.trainer.train` needs to continue a run."""

    epochs_done: int
    history: list[dict[str, float]]
    steps: int
    elapsed_s: float
    guard_reference: float | None
    position: Position | None = None  # set for a mid-epoch checkpoint
    tensors: dict[str, Any] = field(default_factory=dict)  # model, optimizer, RNG states


def fingerprint(config: TrainConfig) -> dict[str, Any]:
    """The settings a checkpoint must match to be resumed."""
    settings = config.to_dict()
    for name in NEUTRAL_SETTINGS:
        settings.pop(name, None)
    return settings


def save(path: Path, config: TrainConfig, state: TrainerState, parts: dict[str, Any]) -> None:
    """Write ``state`` and the live objects in ``parts`` (model, optimizer, scheduler,
    shuffle, dropout) to ``path`` atomically."""
    position = None
    if state.position is not None:
        position = {**state.position.__dict__}
    payload = {
        "format": FORMAT,
        "settings": fingerprint(config),
        "epochs_done": state.epochs_done,
        "history": state.history,
        "steps": state.steps,
        "elapsed_s": state.elapsed_s,
        "guard_reference": state.guard_reference,
        "position": position,
        "model": parts["model"].state_dict(),
        "optimizer": parts["optimizer"].state_dict(),
        "scheduler": parts["scheduler"].state_dict(),
        "shuffle": parts["shuffle"].get_state(),
        "dropout": None if parts.get("dropout") is None else parts["dropout"].get_state(),
        "global_rng": torch.get_rng_state(),
    }
    write(path, payload)


def write(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to ``<path>.tmp``, then rename: readers see the old file or the new."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read(path: Path, config: TrainConfig, fmt: str) -> dict[str, Any]:
    """A checkpoint's payload, checked to be of ``fmt`` and ``config``'s settings."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise CheckpointUnreadable(f"{path.name}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise CheckpointUnreadable(f"{path.name}: not a {fmt} checkpoint")
    if payload.get("settings") != fingerprint(config):
        raise CheckpointUnreadable(f"{path.name}: written for other settings")
    return payload


def format_of(path: Path) -> str | None:
    """The format a checkpoint file says it has (None: no file, or not one of ours)."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torch.load raises many kinds for a damaged file
        return None
    return payload.get("format") if isinstance(payload, dict) else None


def load(path: Path, config: TrainConfig) -> TrainerState:
    """Read a checkpoint for a run of ``config`` (CheckpointUnreadable when it cannot be)."""
    payload = read(path, config, FORMAT)
    try:
        position = payload["position"]
        return TrainerState(
            epochs_done=int(payload["epochs_done"]),
            history=list(payload["history"]),
            steps=int(payload["steps"]),
            elapsed_s=float(payload["elapsed_s"]),
            guard_reference=payload["guard_reference"],
            position=None if position is None else Position(**position),
            tensors={k: payload[k] for k in _TENSOR_PARTS},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointUnreadable(f"{path.name}: incomplete: {exc}") from exc


_TENSOR_PARTS = ("model", "optimizer", "scheduler", "shuffle", "dropout", "global_rng")


def restore(state: TrainerState, parts: dict[str, Any], device: torch.device) -> None:
    """Load ``state``'s tensors into freshly built ``parts`` (CheckpointUnreadable if they
    do not fit)."""
    t = state.tensors
    try:
        model: nn.Module = parts["model"]
        reapply_masks(model, t["model"])
        model.load_state_dict(t["model"])
        parts["optimizer"].load_state_dict(t["optimizer"])
        parts["scheduler"].load_state_dict(t["scheduler"])
        parts["shuffle"].set_state(t["shuffle"])
        if parts.get("dropout") is not None and t["dropout"] is not None:
            parts["dropout"].set_state(t["dropout"].to("cpu"))
        torch.set_rng_state(t["global_rng"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointUnreadable(f"does not fit the model: {exc}") from exc
    if state.position is not None:
        state.position.order = state.position.order.to(device)
        state.position.loss_sum = state.position.loss_sum.to(device)


def reapply_masks(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Give a fresh model the pruning re-parametrisation a saved one had (gradual pruning),
    so its ``weight_orig`` / ``weight_mask`` entries load."""
    for name, module in model.named_modules():
        for param in ("weight", "bias"):
            key = f"{name}.{param}_mask" if name else f"{param}_mask"
            if key in state_dict and not prune.is_pruned(module):
                prune.custom_from_mask(module, param, mask=state_dict[key])


@dataclass
class RunCheckpoint:
    """A run's checkpoint file (workers.trainer.train): resumed from at the start, written
    at epoch ends and when the run is told to stop. No file: does nothing."""

    path: Path | None
    config: TrainConfig
    loop: Any  # workers.trainer.Loop
    parts: dict[str, Any]  # model, optimizer, scheduler, shuffle, dropout

    def resume(
        self, state: TrainerState | None, device: torch.device
    ) -> tuple[list[dict[str, float]], Position | None]:
        """Load ``state`` into the run; (the metrics so far, a stopped epoch's position)."""
        if state is None:
            return [], None
        restore(state, self.parts, device)
        self.loop.steps, self.loop.guard.reference = state.steps, state.guard_reference
        if state.position is not None:
            self.loop.grads.load_state(state.position.grads)
        return list(state.history), state.position

    def save_epoch(self, epoch: int, history: list[dict[str, float]], started: float) -> None:
        """At an epoch end: write every ``checkpoint_every`` epochs, and at the last."""
        every = self.config.checkpoint_every
        if self.path is None or every == 0:
            return
        if epoch % every == 0 or epoch == self.config.epochs:
            self._write(TrainerState(epoch, history, *self._live(started)))

    def save_stopped(
        self, epoch: int, out: Any, history: list[dict[str, float]], started: float
    ) -> None:
        """Told to stop mid-epoch (``out`` is the epoch so far): write where it stopped."""
        if self.path is None or self.config.checkpoint_every == 0 or out.order is None:
            return  # gd stops mid-gradient: its last epoch-end checkpoint stands
        grads = self.loop.grads.state()
        where = Position(
            epoch,
            out.batches_done,
            out.order.cpu(),
            out.loss_sum.cpu(),
            out.samples,
            out.steps,
            grads,
        )
        self._write(TrainerState(epoch - 1, history, *self._live(started), position=where))

    def _live(self, started: float) -> tuple[int, float, float | None]:
        return self.loop.steps, time.perf_counter() - started, self.loop.guard.reference

    def _write(self, state: TrainerState) -> None:
        assert self.path is not None
        save(self.path, self.config, state, self.parts)


def started_at(state: TrainerState | None) -> float:
    """The run's start on this process's clock, counting the time spent before a resume."""
    return time.perf_counter() - (state.elapsed_s if state else 0.0)

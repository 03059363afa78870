"""One trial inside a pack: its settings, hooks, random streams, schedule and history.

A member carries everything that makes it the same trial as when it trains
alone: the initial weights (``torch.manual_seed(seed); build_model(config)``),
its batch order (a CPU generator seeded with its seed, as the solo trainer),
its dropout masks (its own generator, workers.model.dropout_generator), its
learning-rate schedule (a real torch scheduler on a stand-in optimizer) and its
divergence guard. The pack holds its tensors while it trains.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from hpo.settings import TrainConfig
from workers import checkpoint as ckpt
from workers.data import Split
from workers.model import build_model, dropout_generator, set_dropout_generator
from workers.optimizers import make_scheduler
from workers.outcome import Guard, NullHooks, RunEnd, TrainHooks, TrainResult, build_result
from workers.packs.keys import optimizer_kind
from workers.packs.layout import Layout
from workers.packs.stack import Rows
from workers.results import TrainStatus


class Splits(NamedTuple):
    """The data a pack trains, validates and tests on, on its device."""

    train: Split
    val: Split
    test: Split


@dataclass
class Checkpoint:
    """A member as it was at its last epoch boundary (to re-run an epoch after a CUDA OOM)."""

    rows: Rows  # on the host
    shuffle: torch.Tensor
    dropout: torch.Tensor | None
    epoch: int
    n_history: int
    steps: int
    batches_tracked: int
    guard_reference: float | None


class Member:
    """A trial to train in a pack: ``Member(trial_id, config, hooks)``.

    ``hooks`` has the solo trainer's shape (workers.outcome.TrainHooks):
    ``on_epoch(epoch, metrics) -> bool`` after each of this member's epochs
    (False prunes it), ``should_stop()`` polled at every batch boundary.
    ``checkpoint``: the member's own checkpoint file (format ``PACK_FORMAT`` of
    workers.checkpoint), continued from when it exists, written at its epoch
    ends every ``checkpoint_every`` epochs before ``on_epoch`` is called.
    PBT (workers.packs.lineage): ``lineage`` names the member's run (a segment's
    trial) for successors to continue; ``parent``, the run this one continues: when
    the pack still holds it, its state is taken from the pack, else from ``checkpoint``.
    """

    def __init__(
        self,
        id: Hashable,
        config: TrainConfig,
        hooks: TrainHooks | None = None,
        checkpoint: Path | None = None,
        *,
        lineage: Hashable | None = None,
        parent: Hashable | None = None,
    ) -> None:
        self.id, self.config, self.checkpoint_path = id, config, checkpoint
        self.lineage, self.parent = lineage, parent
        self.hooks: TrainHooks = hooks or NullHooks()
        self.kind = optimizer_kind(config)
        self.epoch = 0  # the epoch being trained (1-based), or the last one ended
        self.history: list[dict[str, float]] = []
        self.steps = 0  # optimizer steps taken
        self.batches_tracked = 0  # batch-norm forward passes in train mode
        self.rows: Rows | None = None  # own tensors while not stacked (new, or parked)
        self.checkpoint: Checkpoint | None = None
        self.resumed = False  # continued from its checkpoint file (until it joins a pack)
        self.module: nn.Sequential | None = None  # solo-shaped copy: init, evaluation, result
        self._started = time.perf_counter()

    def __repr__(self) -> str:
        return f"Member({self.id!r}, {self.config.optimizer}, epoch {self.epoch})"

    @property
    def prepared(self) -> bool:
        return self.module is not None

    def prepare(self, device: torch.device, guard_every: int, resume: bool = True) -> None:
        """Build the initial weights and random streams on ``device`` (once); continue
        from the checkpoint file when there is one (unless ``resume`` is False)."""
        if self.prepared:
            return
        c = self.config
        # The solo trainer's torch.manual_seed(seed) before build_model, without touching
        # the process's global RNG for anyone else.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            module = build_model(c)
        self.module = module.to(device)
        self.shuffle = torch.Generator().manual_seed(c.seed)  # batch order, as solo: CPU
        self.dropout = dropout_generator(c.seed, device) if c.dropout > 0 else None
        set_dropout_generator(self.module, self.dropout)
        self.guard = Guard(c.divergence_factor, guard_every)
        self._schedule()
        self.layout = Layout.of(self.module)
        self.rows = Rows(self.layout.row(self.module), self.layout.running(self.module))
        self._started = time.perf_counter()
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            self._resume(self.checkpoint_path)

    def adopt(self, parent: Member, rows: Rows, elapsed_s: float) -> None:
        """PBT inside a pack: continue ``parent``'s run as it was at its last epoch end.

        ``rows``: the parent's parameters, batch-norm statistics and optimizer state
        (views into the stack it left, copied into this member's slot when it joins);
        its batch order, dropout stream, epoch, metrics, step counts, guard and time so
        far too. The hyperparameters stay this member's own (explore): the pack takes
        them from ``config``. What workers.inherit.adopt does to a solo checkpoint.
        """
        assert self.prepared, "prepare() before adopt()"
        self.rows = Rows(rows.params, list(rows.running), dict(rows.state), rows.steps)
        self.shuffle.set_state(parent.shuffle.get_state())
        if self.dropout is not None and parent.dropout is not None:
            self.dropout.set_state(parent.dropout.get_state())
        self.epoch, self.steps = parent.epoch, parent.steps
        self.batches_tracked = parent.batches_tracked
        self.history = [dict(metrics) for metrics in parent.history]
        self.guard.reference = parent.guard.reference
        self._schedule(epochs_done=parent.epoch)
        self._started = time.perf_counter() - elapsed_s
        self.resumed = True  # like a resume from a file: the trial's hooks catch up

    def elapsed_s(self) -> float:
        """Seconds this member's run has taken so far (a resumed run counts its past)."""
        return time.perf_counter() - self._started

    def _schedule(self, epochs_done: int = 0) -> None:
        # A real torch scheduler on a stand-in optimizer: the solo trainer's per-epoch lr values,
        # bit for bit, whatever make_scheduler does. Replayed after a rollback.
        stand_in = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=self.config.lr)
        self._lr_optimizer, self._scheduler = stand_in, make_scheduler(self.config, stand_in)
        for _ in range(epochs_done):
            self.schedule_step()

    @property
    def lr(self) -> float:
        """The learning rate of the current epoch."""
        return self._lr_optimizer.param_groups[0]["lr"]

    def schedule_step(self) -> None:
        """End of an epoch: advance the schedule (the solo trainer's scheduler.step())."""
        self._lr_optimizer.step()  # no gradient: a no-op that keeps torch from warning
        self._scheduler.step()

    @property
    def finished_epochs(self) -> bool:
        return self.epoch >= self.config.epochs

    def dropout_rate(self) -> float:
        return self.config.dropout if self.dropout is not None else 0.0

    # ----------------------------------------------------------------------- results

    def result(
        self, status: TrainStatus, diagnosis: str | None, splits: Splits | None
    ) -> TrainResult:
        """The solo trainer's TrainResult for this member (weights must be loaded into module),
        built by the same workers.outcome.build_result."""
        assert self.module is not None
        end = RunEnd(status, self.history, diagnosis, self._started, self.steps)
        test_set = None if splits is None else splits.test
        return build_result(end, self.config, self.module, test_set, partial(self._ship, splits))

    def _ship(self, splits: Splits | None) -> tuple[dict[str, float], nn.Module]:
        # The solo trainer's own compression step (workers.trainer.ship_model), on this
        # member's model, config and batch-order generator: fine-tuning, if the settings ask
        # for it, runs the solo loop from where the pack left the member.
        from workers.optimizers import make_optimizer
        from workers.trainer import Loop, ship_model

        assert self.module is not None and splits is not None
        optimizer = make_optimizer(self.config, self.module, splits.train.x.device)
        loop = Loop.create(self.config, self.module, optimizer, splits.train, NullHooks())
        device = splits.train.x.device
        # Measuring the shipped model draws random inputs: not from the caller's global RNG.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return ship_model(loop, self.shuffle, splits.val, splits.test)

    # ----------------------------------------------------------------------- checkpoints

    def write_checkpoint(self, rows: Rows) -> None:
        """At this member's epoch end (schedule stepped): its state to its checkpoint file,
        every ``checkpoint_every`` epochs and at the last."""
        every = self.config.checkpoint_every
        if self.checkpoint_path is None or every == 0:
            return
        if self.epoch % every and not self.finished_epochs:
            return
        self.save(rows)
        cp = self.checkpoint
        assert cp is not None
        ckpt.write(
            self.checkpoint_path,
            {
                "format": ckpt.PACK_FORMAT,
                "settings": ckpt.fingerprint(self.config),
                "params": cp.rows.params,
                "running": cp.rows.running,
                "state": cp.rows.state,
                "opt_steps": cp.rows.steps,
                "shuffle": cp.shuffle,
                "dropout": cp.dropout,
                "epoch": cp.epoch,
                "history": self.history,
                "steps": cp.steps,
                "batches_tracked": cp.batches_tracked,
                "guard_reference": cp.guard_reference,
                "elapsed_s": time.perf_counter() - self._started,
            },
        )

    def _resume(self, path: Path) -> None:
        """Continue from a checkpoint file (CheckpointUnreadable when it cannot be)."""
        p = ckpt.read(path, self.config, ckpt.PACK_FORMAT)
        try:
            rows = Rows(p["params"], list(p["running"]), dict(p["state"]), float(p["opt_steps"]))
            if rows.params.shape != self.rows.params.shape:  # type: ignore[union-attr]
                raise ValueError(f"{tuple(rows.params.shape)} parameters, not the model's")
            self.history = list(p["history"])
            self.checkpoint = Checkpoint(
                rows,
                p["shuffle"],
                p["dropout"],
                int(p["epoch"]),
                len(self.history),
                int(p["steps"]),
                int(p["batches_tracked"]),
                p["guard_reference"],
            )
            self.restore()
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ckpt.CheckpointUnreadable(f"{path.name}: does not fit: {exc}") from exc
        self._started = time.perf_counter() - float(p["elapsed_s"])
        self.resumed = True

    # ----------------------------------------------------------------------- rollback

    def save(self, rows: Rows) -> None:
        """Remember this member as it is now (its rows copied to the host)."""
        self.checkpoint = Checkpoint(
            rows.to("cpu"),
            self.shuffle.get_state(),
            None if self.dropout is None else self.dropout.get_state(),
            self.epoch,
            len(self.history),
            self.steps,
            self.batches_tracked,
            self.guard.reference,
        )

    def restore(self) -> None:
        """Back to the last :meth:`save`: the epoch in progress is forgotten, to be re-run."""
        cp = self.checkpoint
        assert cp is not None, "restore() without a checkpoint"
        self.rows = cp.rows.to("cpu")
        self.shuffle.set_state(cp.shuffle)
        if self.dropout is not None and cp.dropout is not None:
            self.dropout.set_state(cp.dropout)
        self.epoch, self.steps, self.batches_tracked = cp.epoch, cp.steps, cp.batches_tracked
        del self.history[cp.n_history :]
        self.guard.reference = cp.guard_reference
        self._schedule(epochs_done=cp.epoch)

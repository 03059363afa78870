"""Train K trials as one stacked model: read ``PackTrainer.run_epoch`` top to bottom.

Members step in lockstep: batch b of a pack epoch is batch b of every member's
own epoch (same training split, same batch size), but each member has its own
epoch number, batch order, dropout masks, optimizer, schedule and guard. So a
member can join at any pack epoch boundary (it starts its epoch 1 while the
others go on) and leave at any batch boundary (stopped, diverged) or epoch
boundary (pruned, done). Leaving shrinks the stacked tensors at once.

Per step the only host work is Python; losses are summed on the device and read
once per epoch, and on CUDA the divergence guard reads the losses every
CUDA_GUARD_EVERY batches, like the solo trainer. Evaluation runs per member on
its solo-shaped module (workers.trainer.evaluate), so the reported validation
and test figures are computed exactly as the solo trainer computes them.
"""

from __future__ import annotations

import time
from collections.abc import Hashable

import torch
import torch.nn.functional as F
from torch import Tensor

from hpo.settings import TrainConfig
from workers.backend import configure_backend, on_device, reset_peak_memory
from workers.data import MnistData
from workers.model import N_CLASSES, dropout_noise
from workers.outcome import TrainResult, catch_up, epoch_metrics, evaluate, nonfinite_loss
from workers.packs.epoch import EpochSums, epoch_run, member_probes
from workers.packs.keys import KINDS, PackKey, pack_key, packable
from workers.packs.layout import Layout
from workers.packs.lineage import Parking
from workers.packs.member import Member, Splits
from workers.packs.stack import Rows, Stack
from workers.probes import DeadUnitProbe
from workers.results import TrainStatus
from workers.trainer import CUDA_GUARD_EVERY, GD_CHUNK, GRAD_NORM_EVERY

Finished = list[tuple[Member, TrainResult]]


class PackTrainer:
    """A pack of compatible trials (same :func:`pack_key`) on one device.

    Drive it epoch by epoch: ``add()`` members (they join at the next epoch
    boundary), ``run_epoch()`` trains one pass and returns the members that
    ended, with the solo trainer's TrainResult each. ``capacity`` only sizes
    ``free_slots`` for whoever refills the pack. ``snapshots`` (default: on
    CUDA) keeps each member's state at its last epoch boundary on the host, so
    after a CUDA out-of-memory error :meth:`rollback` can hand every member
    back to be re-run from there (see workers.packs.memory.train_pack).
    """

    def __init__(
        self,
        data: MnistData,
        device: torch.device | str = "cpu",
        *,
        capacity: int | None = None,
        snapshots: bool | None = None,
    ) -> None:
        self.data, self.device = data, torch.device(device)
        configure_backend(self.device)
        self.capacity = capacity
        self.snapshots = self.device.type == "cuda" if snapshots is None else snapshots
        self.guard_every = 1 if self.device.type == "cpu" else CUDA_GUARD_EVERY
        self.key: PackKey | None = None
        self.members: list[Member] = []  # in the stack's row order
        self.joining: list[Member] = []
        self.stack: Stack | None = None
        self.finished: Finished = []
        self.parking = Parking()  # PBT: members that left at the last epoch end, for successors
        self._epoch: EpochSums | None = None
        self._l1: Tensor | None = None  # [K, 1] per-member L1 strength, None when all are 0
        self._dropout_any = False

    def __len__(self) -> int:
        return len(self.members) + len(self.joining)

    @property
    def free_slots(self) -> int:
        """How many more members fit (``capacity`` minus members); large when unbounded."""
        return (self.capacity or 1 << 30) - len(self)

    def accepts(self, config: TrainConfig) -> bool:
        """Whether a trial with ``config`` can join (an empty pack takes any packable one)."""
        return packable(config) and (self.key is None or pack_key(config) == self.key)

    def add(self, member: Member) -> None:
        """Queue ``member`` to join at the next epoch boundary (its epoch 1, or where it left)."""
        if not self.accepts(member.config):
            raise ValueError(f"{member!r} does not fit this pack: {pack_key(member.config)}")
        if self.key is None:
            self._open(pack_key(member.config))
        inherits = not member.prepared and member.parent in self.parking
        member.prepare(self.device, self.guard_every, resume=not inherits)
        if inherits:  # PBT: its parent's state from the pack, not from a file
            self.parking.hand_over(member)
        if self.snapshots and member.checkpoint is None:
            assert member.rows is not None
            member.save(member.rows)
        self.joining.append(member)

    def remove(self, member_id: Hashable) -> TrainResult | None:
        """Take a member out between epochs: its result, status "stopped" (None if unknown).

        Call it from the thread that runs the pack. To end a member from elsewhere
        (a heartbeat thread that lost the lease), make its should_stop() return True:
        it leaves at the next batch boundary.
        """
        for m in self.joining:
            if m.id == member_id:
                self.joining.remove(m)
                return m.result(TrainStatus.STOPPED, None, None)
        for i, m in enumerate(self.members):
            if m.id == member_id:
                self._finish(i, TrainStatus.STOPPED, None)
                self._drop([i])
                return self.finished.pop()[1]
        return None

    def admit(self) -> None:
        """Stack the joining members now, with their hyperparameters (run_epoch does it)."""
        self._admit()
        if self.stack is not None:
            self._refresh()

    def drain(self) -> Finished:
        """The members that ended since the last call, with their results."""
        out, self.finished = self.finished, []
        return out

    def run(self) -> dict[Hashable, TrainResult]:
        """Train until every member has ended; results by member id."""
        results: dict[Hashable, TrainResult] = {}
        while len(self):
            results.update((m.id, r) for m, r in self.run_epoch())
        return results

    # ----------------------------------------------------------------------- one epoch

    def run_epoch(self) -> Finished:
        """Admit the joining members, train one epoch of every member, report, shrink."""
        self._admit()
        self.parking.clear()  # successors have taken their parents' rows by now
        if not self.members:
            self.key = None
            return self.drain()
        assert self.key is not None and self.stack is not None
        reset_peak_memory(self.device)
        for m in self.members:
            m.epoch += 1
        self._refresh()
        self._epoch = ep = EpochSums.start(len(self.members), self.device)
        if self.key.batch == "gd":
            self._full_batch_epoch(ep)
        else:
            self._minibatch_epoch(ep, int(self.key.batch))
        if self.members:
            self._end_epoch(ep)
        self._epoch = None
        if not len(self) and not self.parking:
            self.key = None  # empty: the next member may open a pack of another shape
        return self.drain()

    def _minibatch_epoch(self, ep: EpochSums, size: int) -> None:
        """One shuffled pass in mini-batches, every member in its own order (the solo loop)."""
        data = self.splits.train
        n = len(data)
        orders = [torch.randperm(n, generator=m.shuffle) for m in self.members]
        ep.order = torch.stack(orders).to(self.device)
        for batch, start in enumerate(range(0, n, size), start=1):
            if not self._poll_stops():
                return
            idx = ep.order[:, start : start + size]
            if self.key_batch_norm and idx.shape[1] < 2:
                continue  # BatchNorm cannot normalise a single sample (the solo trainer skips it)
            gathering, flat = time.perf_counter(), idx.reshape(-1)
            x = data.x.index_select(0, flat).view(*idx.shape, -1)
            y = data.y.index_select(0, flat).view(idx.shape)
            ep.data_time += time.perf_counter() - gathering
            losses = self._losses(x, y).mean(1)
            diverged = self._check_guards(losses, batch)
            self._finish_diverged(diverged)  # evaluated before this step, like solo
            self.stack.zero_grad()
            self.stack.backward(losses.sum())  # members are independent: each its own gradient
            self._step(ep)
            ep.loss += losses.detach() * idx.shape[1]
            ep.samples += idx.shape[1]
            self._drop([i for i, _ in diverged])

    def _full_batch_epoch(self, ep: EpochSums) -> None:
        """gd: the exact full-batch gradient in chunks (shared inputs), then ONE step."""
        data = self.splits.train
        n = len(data)
        self.stack.zero_grad()
        for start in range(0, n, GD_CHUNK):
            if not self._poll_stops():  # the chunk boundaries are gd's batch boundaries
                return
            x, y = data.x[start : start + GD_CHUNK], data.y[start : start + GD_CHUNK]
            k = len(self.members)
            # Every member sees the same chunk: an expanded view, no copy per member.
            losses = self._losses(x.expand(k, *x.shape), y.expand(k, -1)).sum(1) / n
            self.stack.backward(losses.sum())
            ep.loss += losses.detach() * n
        ep.samples = n
        host = (ep.loss / n).cpu()
        checks = [
            m.guard.check(host[i], m.epoch, 1, always=True) for i, m in enumerate(self.members)
        ]
        diverged = [(i, d) for i, d in enumerate(checks) if d is not None]
        self._finish_diverged(diverged)
        self._step(ep)
        self._drop([i for i, _ in diverged])

    def _losses(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-sample cross-entropy [K, B] of every member on its own inputs x [K, B, 784]."""
        assert self.stack is not None
        logits = self.stack.forward(x, self._noise)
        if self.key_batch_norm:
            for m in self.members:
                m.batches_tracked += 1
        flat = F.cross_entropy(logits.reshape(-1, N_CLASSES), y.reshape(-1), reduction="none")
        return flat.view(y.shape)

    def _noise(self, layer: int, shape: tuple[int, ...]) -> Tensor | None:
        # Each member's mask from its own generator with the solo Dropout's call; 1 for members
        # without dropout. Drawn layer by layer, the order the solo forward draws them in.
        if not self._dropout_any:
            return None
        noise = torch.ones(shape, device=self.device)
        for k, m in enumerate(self.members):
            if (p := m.dropout_rate()) > 0:
                assert m.dropout is not None
                dropout_noise(noise[k], p, m.dropout)
        return noise

    def _step(self, ep: EpochSums) -> None:
        """L1 gradient, the sampled gradient norm, then every member's optimizer step."""
        assert self.stack is not None
        if self._l1 is not None:
            self.stack.add_l1(self._l1)
        if ep.steps % GRAD_NORM_EVERY == 0:  # the solo trainer's sampling of the norms
            ep.observe(*self.stack.grad_norms())
        self.stack.step()
        ep.steps += 1
        for m in self.members:
            m.steps += 1

    def _check_guards(self, losses: Tensor, batch: int) -> list[tuple[int, str]]:
        """Each member's solo divergence guard; reads the losses only when some guard looks."""
        if batch % self.guard_every and all(m.guard.reference is not None for m in self.members):
            return []  # CUDA between checks: no host sync
        host = losses.detach().cpu()
        checks = [m.guard.check(host[i], m.epoch, batch) for i, m in enumerate(self.members)]
        return [(i, d) for i, d in enumerate(checks) if d is not None]

    # ----------------------------------------------------------------------- epoch ends

    def _end_epoch(self, ep: EpochSums) -> None:
        """Per member: metrics, then diverged / schedule / on_epoch hook / done, like solo."""
        rows, train_time = ep.read(), time.perf_counter() - ep.t0
        leaving = []
        for i, m in enumerate(self.members):
            metrics = self._record(i, rows[i], train_time)
            if (diagnosis := nonfinite_loss(metrics)) is not None:
                self._finish(i, TrainStatus.DIVERGED, diagnosis)
            else:
                m.schedule_step()
                m.write_checkpoint(self._rows(i))  # before the report that commits it
                if not m.hooks.on_epoch(m.epoch, metrics):
                    self.parking.park(m, self._rows(i))  # PBT: a segment's end (pause)
                    self._finish(i, TrainStatus.PRUNED, None)
                elif m.finished_epochs:
                    self._finish(i, TrainStatus.COMPLETED, None)
                else:
                    if self.snapshots:  # reported: a later OOM must not re-run this epoch
                        m.save(self._rows(i))
                    continue
            leaving.append(i)
        self._drop(leaving)

    def _record(self, i: int, row: dict[str, float], train_time: float) -> dict[str, float]:
        """Member i's epoch metrics (validation on its solo-shaped module), added to its history."""
        ep, m = self._epoch, self.members[i]
        assert ep is not None and m.module is not None
        self._load(i)
        with DeadUnitProbe(m.module) as dead:  # records during the validation pass, like solo
            val = evaluate(m.module, self.splits.val)
        run, probes = epoch_run(ep, row, train_time), member_probes(ep, row, dead.fraction())
        metrics = epoch_metrics(m.epoch, run, val, m.lr, self.device, probes)
        m.history.append(metrics)
        return metrics

    def _finish_diverged(self, diverged: list[tuple[int, str]]) -> None:
        if not diverged:
            return
        ep = self._epoch
        assert ep is not None
        rows = ep.read()
        for i, diagnosis in diverged:
            self._record(i, rows[i], time.perf_counter() - ep.t0)
            self._finish(i, TrainStatus.DIVERGED, diagnosis)

    def _finish(self, i: int, status: TrainStatus, diagnosis: str | None) -> None:
        """Member i ends: its TrainResult (test accuracy on its module) joins ``finished``."""
        self._load(i)
        m = self.members[i]
        self.finished.append((m, m.result(status, diagnosis, self.splits)))

    def _poll_stops(self) -> bool:
        """Ask every member's should_stop() at a batch boundary; False when none is left."""
        stopped = [i for i, m in enumerate(self.members) if m.hooks.should_stop()]
        for i in stopped:
            self._finish(i, TrainStatus.STOPPED, None)
        self._drop(stopped)
        return bool(self.members)

    # ----------------------------------------------------------------------- membership

    def _open(self, key: PackKey) -> None:
        self.key, self.key_batch_norm = key, key.batch_norm
        train, val = (on_device(s, self.device) for s in self.data.split(key.val_size))
        self.splits = Splits(
            train.head(key.train_subset), val, on_device(self.data.test, self.device)
        )
        self.layout: Layout | None = None

    def _admit(self) -> None:
        """Stack the joining members with the others, each update rule in one block of rows."""
        if not self.joining:
            return
        old = [(m, self._rows(i)) for i, m in enumerate(self.members)]
        new = []
        for m in self.joining:
            assert m.rows is not None
            new.append((m, m.rows))
        pairs = sorted(old + new, key=lambda p: KINDS.index(p[0].kind))  # stable
        if self.layout is None:
            self.layout = pairs[0][0].layout
        self._rebuild([m for m, _ in pairs], [r for _, r in pairs])
        resumed = {id(m) for m in self.joining if m.resumed}
        for m in self.joining:
            m.rows, m.resumed = None, False  # the stack holds them now
        self.joining = []
        self._settle_resumed(resumed)

    def _settle_resumed(self, resumed: set[int]) -> None:
        """Members that joined from a checkpoint file: report what their last attempt did
        not (catch_up); one pruned by it, or whose file is at its last epoch, ends now."""
        ending = []
        for i, m in enumerate(self.members):
            if id(m) in resumed and not catch_up(m.hooks, m.history):
                ending.append((i, TrainStatus.PRUNED))
            elif m.finished_epochs:
                ending.append((i, TrainStatus.COMPLETED))
        for i, status in ending:
            self._finish(i, status, None)
        self._drop([i for i, _ in ending])

    def _drop(self, leaving: list[int]) -> None:
        """Remove members (by row) from the stack at once; the others keep their state."""
        if not leaving:
            return
        keep = [i for i in range(len(self.members)) if i not in set(leaving)]
        members = [self.members[i] for i in keep]
        assert self.stack is not None
        fresh = self.stack.grad_fresh  # mid-gd-epoch the others keep their partial gradient
        self._rebuild(members, [self._rows(i) for i in keep], fresh)
        if self._epoch is not None and keep:
            self._epoch.keep(torch.tensor(keep, device=self.device))
        if self.stack is not None and self._epoch is not None:
            self._refresh()

    def _rebuild(self, members: list[Member], rows: list[Rows], grad_fresh: bool = True) -> None:
        self.members = members
        if not members:
            self.stack = None
            return
        assert self.layout is not None
        kinds = [m.kind for m in members]
        self.stack = Stack(self.layout, rows, kinds, self.device, grad_fresh)

    def _refresh(self) -> None:
        """Per-member hyperparameters as tensors for the current members and their epoch's lr."""
        assert self.stack is not None
        for g in self.stack.groups:
            block = self.members[g.start : g.stop]
            g.set_hypers([m.config for m in block], [m.lr for m in block])
        l1 = [m.config.l1 for m in self.members]
        self._l1 = torch.tensor(l1, device=self.device).view(-1, 1) if any(l1) else None
        self._dropout_any = any(m.dropout_rate() > 0 for m in self.members)

    def _rows(self, i: int) -> Rows:
        assert self.stack is not None
        return self.stack.rows(i)

    def _load(self, i: int) -> None:
        """Copy member i's rows into its solo-shaped module (evaluation, result)."""
        m, rows = self.members[i], self._rows(i)
        assert m.module is not None
        m.layout.load(m.module, rows.params, rows.running, m.batches_tracked)

    # ----------------------------------------------------------------------- OOM

    def rollback(self) -> list[Member]:
        """After an error mid-epoch: every member still here back to its last checkpoint.

        Returns them unstacked (the pack is empty); the caller adds them again, to
        this pack or another. Members that ended before the error keep their results
        in ``finished``. Needs ``snapshots``.
        """
        if not self.snapshots:
            raise RuntimeError("rollback() needs a pack created with snapshots=True")
        members = self.members + self.joining
        self.members, self.joining, self.stack, self._epoch = [], [], None, None
        for m in members:
            m.restore()
        if not members:
            self.key = None
        return members

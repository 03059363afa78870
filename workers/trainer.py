"""Train the reference MLP on MNIST for one trial: read ``train`` top to bottom.

Fast path (bench/trainer.py measures it against the seed's DataLoader loop): the
data already lives on the device as normalised tensors (workers.data), so an
epoch is one ``randperm`` plus index selects; no DataLoader, no per-sample
transforms, no per-batch host copies. What is left on a CPU is the two 64x784x512
matrix products per step and the optimizer's pass over the weights. Losses and
gradient norms are summed on the device and read once per epoch, so on CUDA the
loop does not synchronise on every batch.

CPU threads are the process's business (torch.set_num_threads), not the
trainer's: several CPU trainers on one machine should split the cores between
them, since OpenMP threads that outnumber free cores slow an epoch ten-fold.

Epochs are numbered from 1 (what pruners see as the report step); batches too.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hpo.settings import TrainConfig
from workers import checkpoint as ckpt
from workers import responsible
from workers.backend import (
    configure_backend,
    maybe_compile,
    on_device,
    reset_peak_memory,
)
from workers.compression import CompressionSettings, PruneSchedule, compress
from workers.data import MnistData, Split
from workers.model import (
    build_model,
    dropout_generator,
    linear_weights,
    set_dropout_generator,
)
from workers.optimizers import make_optimizer, make_scheduler
from workers.outcome import (
    EpochRun,
    Guard,
    NullHooks,
    RunEnd,
    TrainHooks,
    TrainResult,
    build_result,
    catch_up,
    epoch_metrics,
    evaluate,
    nonfinite_loss,
)
from workers.probes import DeadUnitProbe, GradNormStats
from workers.results import TrainStatus

GD_CHUNK = 8192  # full-batch gd accumulates its gradient in chunks to bound activation memory
CUDA_GUARD_EVERY = 25  # on CUDA read the loss (a device sync) only every N batches
GRAD_NORM_EVERY = 10  # measure the gradient norm on every Nth step (a full pass over the grads)
LATENCY_REPEATS = 10  # timed forward passes per batch size when the shipped model is measured


@dataclass
class _EpochOutcome:
    """What one pass over the training split produced (sums stay on the device)."""

    loss_sum: torch.Tensor  # sum over samples of the cross-entropy (no L1 term)
    samples: int = 0
    data_time: float = 0.0  # host seconds spent gathering batches (CUDA: launch time only)
    steps: int = 0
    stopped: bool = False
    diagnosis: str | None = None  # set when the divergence guard fired
    order: torch.Tensor | None = None  # the epoch's batch order (mini-batch epochs)
    batches_done: int = 0  # where a stopped epoch stopped: its checkpoint resumes there


def train(
    config: TrainConfig,
    data: MnistData,
    device: torch.device | str = "cpu",
    hooks: TrainHooks | None = None,
    checkpoint: Path | None = None,
) -> TrainResult:
    """Train one trial; ``data`` should be loaded on ``device`` (else it is copied).

    ``checkpoint`` (workers.checkpoint): a file to continue from when it exists, and
    to write every ``checkpoint_every`` epochs and when told to stop; a file that
    cannot be resumed raises CheckpointUnreadable before any training.
    """
    device = torch.device(device)
    resume = ckpt.load(checkpoint, config) if checkpoint and checkpoint.exists() else None
    configure_backend(device)
    torch.manual_seed(config.seed)  # weight init
    shuffle = torch.Generator().manual_seed(config.seed)  # batch order: CPU generator everywhere
    train_set, val_set = (on_device(s, device) for s in data.split(config.val_size))
    model = build_model(config).to(device)
    # Dropout masks from the trial's own generator, not the global RNG: a pack draws them too.
    dropout = dropout_generator(config.seed, device)
    set_dropout_generator(model, dropout)
    optimizer = make_optimizer(config, model, device)
    scheduler = make_scheduler(config, optimizer)
    subset = train_set.head(config.train_subset)
    extras = responsible.plan(config, model, optimizer, subset)  # privacy, fairness, robustness
    loop = Loop.create(config, model, optimizer, subset, hooks, extras)
    pruning = gradual_pruning(config)
    saver = ckpt.RunCheckpoint(
        checkpoint,
        config,
        loop,
        dict(
            model=model, optimizer=optimizer, scheduler=scheduler, shuffle=shuffle, dropout=dropout
        ),
    )
    history, position = saver.resume(resume, device)
    started = ckpt.started_at(resume)

    status, diagnosis = TrainStatus.COMPLETED, None
    if not catch_up(loop.hooks, history):
        status, position = TrainStatus.PRUNED, None
    for epoch in range(len(history) + 1, config.epochs + 1):
        if status == TrainStatus.PRUNED:
            break
        t0 = time.perf_counter()
        reset_peak_memory(device)
        lr = optimizer.param_groups[0]["lr"]  # the rate used during this epoch
        out = loop.run_epoch(epoch, shuffle, position)
        position = None  # only the first epoch of a resumed run continues a stopped one
        if out.stopped:  # told to stop (preempted, dropped): save where we are, leave at once
            saver.save_stopped(epoch, out, history, started)
            status = TrainStatus.STOPPED
            break
        run = EpochRun(
            out.loss_sum.item(), out.samples, out.data_time, t0, time.perf_counter() - t0
        )
        with DeadUnitProbe(model) as dead:  # records during the validation pass
            val = evaluate(model, val_set)
        probes = {**loop.grads.read(), "dead_fraction": dead.fraction() or 0.0}
        metrics = epoch_metrics(epoch, run, val, lr, device, probes)
        if extras is not None:
            metrics.update(extras.epoch_metrics(loop.steps))  # DP-SGD: epsilon so far
        history.append(metrics)
        diagnosis = out.diagnosis or nonfinite_loss(metrics)
        if diagnosis is not None:
            status = TrainStatus.DIVERGED
            break
        scheduler.step()
        if pruning is not None:  # prune_schedule: gradual (masks keep pruned weights at 0)
            pruning.step(model, epoch)
        saver.save_epoch(epoch, history, started)  # before the report that commits it
        if not loop.hooks.on_epoch(epoch, metrics):
            status = TrainStatus.PRUNED
            break
    test_set = on_device(data.test, device)
    end = RunEnd(status, history, diagnosis, started, loop.steps)
    ship = partial(ship_model, loop, shuffle, val_set, test_set)
    result = build_result(end, config, model, test_set, ship)
    if extras is not None and status != TrainStatus.STOPPED:
        result.final.update(extras.final_metrics(model, val_set, test_set, loop.steps))
    return result


def ship_model(
    loop: Loop, shuffle: torch.Generator, val_set: Split, test_set: Split
) -> tuple[dict[str, float], nn.Module]:
    """Compress the trained model (workers.compression) and measure it as shipped; the
    metrics and the shipped model."""

    def finetune(model: nn.Module, epochs: int) -> None:
        tuning = Loop.create(
            loop.config,
            model,
            make_optimizer(loop.config, model, loop.train_set.x.device),
            loop.train_set,
            NullHooks(),
        )
        for epoch in range(1, epochs + 1):
            tuning.run_epoch(epoch, shuffle)

    def scores(model: nn.Module) -> dict[str, float]:
        return {
            "val_accuracy": evaluate(model, val_set)[1],
            "test_accuracy": evaluate(model, test_set)[1],
        }

    settings = CompressionSettings.from_settings(loop.config.to_dict())
    repeats = LATENCY_REPEATS
    shipped, report = compress(loop.model, settings, finetune, scores, latency_repeats=repeats)
    return report.metrics(), shipped


# --------------------------------------------------------------------------- epochs


@dataclass
class Loop:
    """What every training step needs, bundled once per trial."""

    config: TrainConfig
    model: nn.Module
    forward: nn.Module  # the model, or its compiled wrapper
    optimizer: torch.optim.Optimizer
    train_set: Split
    hooks: TrainHooks
    guard: Guard
    steps: int = 0  # optimizer steps taken so far (gd: one per epoch)
    plan: responsible.Plan | None = None  # privacy, fairness, robustness (workers.responsible)

    @classmethod
    def create(
        cls,
        config: TrainConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_set: Split,
        hooks: TrainHooks | None,
        plan: responsible.Plan | None = None,
    ) -> Loop:
        device = train_set.x.device
        guard = Guard(config.divergence_factor, 1 if device.type == "cpu" else CUDA_GUARD_EVERY)
        forward = maybe_compile(model, config)
        if plan is not None:  # its split (skewed), optimizer and module (DP-SGD) instead
            train_set, optimizer, forward = plan.train_set, plan.optimizer, plan.forward or forward
        hooks = hooks or NullHooks()
        return cls(config, model, forward, optimizer, train_set, hooks, guard, plan=plan)

    def __post_init__(self) -> None:
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.grads = GradNormStats(self.model)  # grad_norm, _max, _min, _first per epoch
        # L1 acts on the Linear weight matrices only: shrinking biases or BN scales is not sparsity.
        self.l1_weights = linear_weights(self.model) if self.config.l1 > 0 else []

    def run_epoch(
        self, epoch: int, shuffle: torch.Generator, resume: ckpt.Position | None = None
    ) -> _EpochOutcome:
        """One epoch; ``resume``: continue the stopped epoch a checkpoint holds."""
        self.model.train()
        if self.config.optimizer == "gd":
            return self.full_batch_epoch(epoch)
        if resume is not None:
            return self.minibatch_epoch(epoch, resume.order, resume)
        order = self.plan.order(shuffle) if self.plan is not None else None
        if order is None:
            order = torch.randperm(len(self.train_set), generator=shuffle)
        return self.minibatch_epoch(epoch, order.to(self.train_set.x.device))

    def minibatch_epoch(
        self, epoch: int, order: torch.Tensor, resume: ckpt.Position | None = None
    ) -> _EpochOutcome:
        """One shuffled pass in mini-batches; the last, smaller batch is kept (like the seed)."""
        out, size, data = _new_outcome(order.device, resume), self.config.batch_size, self.train_set
        out.order, skip = order, out.batches_done
        if self.plan is not None:  # DP-SGD: Poisson-sampled batches
            batches = self.plan.batches(order, size, skip, epoch)
        else:
            batches = (
                order[start : start + size] for start in range(skip * size, len(order), size)
            )
        for batch, idx in enumerate(batches, start=skip + 1):
            if self.hooks.should_stop():
                out.stopped, out.batches_done = True, batch - 1
                return out
            if len(idx) < (2 if self.config.batch_norm else 1):
                continue  # BatchNorm cannot normalise a single sample in train mode
            # index_select, not x[idx]: the generic advanced-indexing path costs ~10x more here.
            gathering = time.perf_counter()
            x, y = data.x.index_select(0, idx), data.y.index_select(0, idx)
            out.data_time += time.perf_counter() - gathering
            if self.plan is not None:  # adversarial examples, reweighted loss
                x = self.plan.inputs(self.model, x, y)
                loss = self.plan.loss(self.forward(x), y)
            else:
                loss = F.cross_entropy(self.forward(x), y)
            out.diagnosis = self.guard.check(loss, epoch, batch)
            if out.diagnosis is not None:
                return out  # no step: the loss is already unusable
            self.optimizer.zero_grad(set_to_none=True)
            (loss + self.l1_penalty()).backward()
            self.step(out)
            out.loss_sum += loss.detach() * len(idx)
            out.samples += len(idx)
        out.batches_done = math.ceil(len(order) / size)
        if self.plan is not None and self.plan.private is not None:
            out.batches_done = self.plan.private.steps_per_epoch
        return out

    def full_batch_epoch(self, epoch: int) -> _EpochOutcome:
        """True gradient descent: the exact full-batch gradient, then ONE optimizer step.

        The mean loss is split into per-chunk sums / N, so the accumulated gradient
        equals the full-batch one. (With batch_norm, statistics are per chunk.)
        """
        data, n = self.train_set, len(self.train_set)
        out = _new_outcome(data.x.device)
        self.optimizer.zero_grad(set_to_none=True)
        for start in range(0, n, GD_CHUNK):
            if self.hooks.should_stop():  # the chunk boundaries are gd's batch boundaries
                out.stopped = True
                return out
            x, y = data.x[start : start + GD_CHUNK], data.y[start : start + GD_CHUNK]
            loss = F.cross_entropy(self.forward(x), y, reduction="sum") / n
            loss.backward()
            out.loss_sum += loss.detach() * n
        out.samples = n
        if self.l1_weights:
            self.l1_penalty().backward()
        out.diagnosis = self.guard.check(out.loss_sum / n, epoch, 1, always=True)
        if out.diagnosis is None:
            self.step(out)
        return out

    def step(self, out: _EpochOutcome) -> None:
        # grad_norm = mean global L2 norm over every GRAD_NORM_EVERY-th step of the epoch (the
        # first included; gd: its one step). Every step would cost ~20% of a CPU epoch: the
        # norm is one more pass over 1.6 MB of gradients. Summed on the device: no sync. It is
        # the norm of the gradient the step actually used (L1 term included).
        if out.steps % GRAD_NORM_EVERY == 0:
            self.grads.observe()
        self.optimizer.step()
        out.steps += 1
        self.steps += 1

    def l1_penalty(self) -> torch.Tensor | float:
        if not self.l1_weights:
            return 0.0
        return self.config.l1 * torch.stack([w.abs().sum() for w in self.l1_weights]).sum()


def _new_outcome(device: torch.device, resume: ckpt.Position | None = None) -> _EpochOutcome:
    if resume is None:
        return _EpochOutcome(loss_sum=torch.zeros((), device=device))
    return _EpochOutcome(
        resume.loss_sum.clone(),
        resume.samples,
        steps=resume.steps,
        batches_done=resume.batches_done,
    )


# --------------------------------------------------------------------------- setup


def gradual_pruning(config: TrainConfig) -> PruneSchedule | None:
    """``prune_schedule: gradual``: prune a little more after each epoch (else None)."""
    if config.prune_schedule != "gradual" or config.prune_amount <= 0:
        return None
    return PruneSchedule(config.prune_amount, config.epochs, "gradual")

"""workers.packs on real MNIST: a packed trial gives the solo trainer's result.

Every test trains each member alone with workers.trainer.train (same seed) and
compares. Measured on the 2-core build machine (torch 2.14 CPU): the packed
weights are bit-identical to the solo ones for every optimizer, schedule,
warmup, L1/L2, dropout, batch norm and gd, at one thread (as these tests run)
and at two (bench/packs.py, full-size epochs); validation loss and accuracy,
test accuracy, gradient norms and learning rates are equal; train_loss differs
by at most 3e-7 relative (each member's mean cross-entropy is summed in another
order than F.cross_entropy's). The tolerances below leave room for another
CPU's rounding, and no more.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import pytest
import torch

from hpo.settings import TrainConfig
from workers import trainer as trainer_module
from workers.data import MnistData
from workers.model import build_model
from workers.outcome import NullHooks, TrainResult
from workers.packs import (
    Member,
    PackTrainer,
    auto_pack_size,
    estimate_member_bytes,
    optimizer_kind,
    pack_key,
    packable,
    probe_member_bytes,
    train_pack,
)
from workers.packs import stack as stack_module
from workers.packs import trainer as pack_trainer_module
from workers.packs.optim import STATE, Group
from workers.trainer import make_optimizer, train

VAL_SIZE = 1000  # a smaller validation split keeps the file fast; accuracy steps are 1/1000
LOSS_TOL = {"rel": 1e-5, "abs": 1e-6}  # measured: <= 3e-7 relative (train_loss), 0 elsewhere
ACCURACY_TOL = 2 / VAL_SIZE  # measured: 0; two images of slack for another CPU's rounding
WEIGHT_TOL = {"rtol": 1e-4, "atol": 1e-6}  # measured: bit-identical
TIMING_KEYS = {"epoch_time_s", "data_time_s", "samples_per_s", "peak_memory_mb", "total_time_s"}


def config(seed: int, **settings: Any) -> TrainConfig:
    """A small run: 640 images (10 batches of 64), 2 epochs, unless overridden."""
    base = {"train_subset": 640, "epochs": 2, "val_size": VAL_SIZE}
    return TrainConfig.from_settings({**base, **settings}, seed=seed)


def assert_same_as_solo(packed: TrainResult, solo: TrainResult) -> None:
    """The packed member's TrainResult is the solo one, within the stated tolerances."""
    assert (packed.status, packed.diagnosis) == (solo.status, solo.diagnosis)
    assert (packed.epochs_run, packed.optimizer_steps) == (solo.epochs_run, solo.optimizer_steps)
    assert packed.objective == pytest.approx(solo.objective, abs=ACCURACY_TOL)
    assert len(packed.history) == len(solo.history)
    for ours, theirs in zip(packed.history, solo.history, strict=True):
        assert_same_metrics(ours, theirs)
    assert_same_metrics(packed.final, solo.final)
    assert packed.model is not None and solo.model is not None
    if solo.status != "diverged":  # a diverged model may hold inf/NaN
        ours_state, theirs_state = packed.model.state_dict(), solo.model.state_dict()
        for ours, theirs in zip(ours_state.values(), theirs_state.values(), strict=True):
            torch.testing.assert_close(ours, theirs, **WEIGHT_TOL)


def assert_same_metrics(ours: dict[str, float], theirs: dict[str, float]) -> None:
    """Same keys; equal values (accuracies within ACCURACY_TOL, the rest within LOSS_TOL)."""
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        if key in TIMING_KEYS or "latency" in key:
            continue
        if key.endswith("accuracy"):
            assert abs(ours[key] - value) <= ACCURACY_TOL, key
        else:
            assert ours[key] == pytest.approx(value, nan_ok=True, **LOSS_TOL), key


def run_pack(
    data: MnistData, configs: list[TrainConfig], hooks: dict[int, Any] | None = None
) -> dict[Hashable, TrainResult]:
    pack = PackTrainer(data)
    for i, c in enumerate(configs):
        pack.add(Member(i, c, (hooks or {}).get(i)))
    return pack.run()


def check_pack(data: MnistData, configs: list[TrainConfig]) -> dict[Hashable, TrainResult]:
    packed = run_pack(data, configs)
    for i, c in enumerate(configs):
        assert_same_as_solo(packed[i], train(c, data))
    return packed


# --------------------------------------------------------------------------- update rules


@pytest.mark.parametrize(
    "settings",
    [
        [{"optimizer": "sgd", "lr": 0.1}, {"optimizer": "gd", "lr": 0.5, "weight_decay": 0.01}],
        [{"optimizer": "momentum", "momentum": 0.9}, {"optimizer": "momentum", "momentum": 0.5}],
        [{"optimizer": "nesterov", "weight_decay": 1e-3}, {"optimizer": "nesterov", "lr": 0.2}],
        [{"optimizer": "adagrad", "eps": 1e-6}, {"optimizer": "adagrad", "weight_decay": 0.1}],
        [{"optimizer": "rmsprop", "momentum": 0}, {"optimizer": "rmsprop", "momentum": 0}],
        [{"optimizer": "rmsprop", "weight_decay": 0.1}, {"optimizer": "rmsprop", "eps": 1e-3}],
        [{"optimizer": "adam", "beta1": 0.8}, {"optimizer": "adam", "weight_decay": 0.1}],
        [{"optimizer": "adamw", "weight_decay": 0.1}, {"optimizer": "adamw", "beta2": 0.9}],
    ],
    ids=lambda s: s[0]["optimizer"] + ("-m0" if s[0].get("momentum") == 0 else ""),
)
def test_update_rules_are_torch_optim_bit_for_bit(settings: list[dict[str, Any]]) -> None:
    """Five steps of Group.step over two members against the solo trainer's torch optimizer."""
    configs = [TrainConfig.from_settings({"lr": 0.01, **s}) for s in settings]
    (rule,) = {optimizer_kind(c) for c in configs}  # both members follow one update rule
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(2, 1000, generator=gen)
    grads = [torch.randn(2, 1000, generator=gen) for _ in range(5)]
    solo = []
    for k, c in enumerate(configs):
        param = torch.nn.Parameter(start[k].clone())
        optimizer = make_optimizer(c, torch.nn.ParameterList([param]))
        for g in grads:
            param.grad = g[k].clone()
            optimizer.step()
        solo.append(param.detach())
    rows = start.clone()
    state = {name: torch.zeros_like(rows) for name in STATE[rule]}
    group = Group(rule, 0, 2, state, torch.zeros(2, 1, dtype=torch.float64))
    group.set_hypers(configs, [c.lr for c in configs])
    for g in grads:
        group.step(rows, g.clone(), torch.empty_like(rows))
    for k in range(2):
        assert torch.equal(rows[k], solo[k]), (
            f"member {k}: max diff {(rows[k] - solo[k]).abs().max()}"
        )


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("n_in", "n_out", "bias"), [(784, 512, True), (512, 10, True), (64, 64, False)]
)
def test_stacked_linear_is_the_solo_linear_bit_for_bit(
    threads: int, n_in: int, n_out: int, bias: bool
) -> None:
    """Forward, input, weight and bias gradients of StackedLinear against F.linear's autograd
    (two backward passes that accumulate, as gd's chunks do), with one thread and with two
    (where torch's single product sometimes rounds differently from the batched one)."""
    from types import SimpleNamespace

    from workers.packs.layout import ALIGN
    from workers.packs.linear import Sinks, StackedLinear

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(threads)
        k, batch = 3, 64
        h = torch.randn(k, batch, n_in, generator=gen, requires_grad=True)
        w = torch.randn(k, n_out, n_in, generator=gen) / n_in**0.5
        b = torch.randn(k, n_out, generator=gen) if bias else None
        grad_out = torch.randn(k, batch, n_out, generator=gen)
        row = -(-(n_out * n_in + n_out) // ALIGN) * ALIGN  # aligned rows, like a stack's
        buffer = torch.zeros(k, row)
        sinks = Sinks(
            SimpleNamespace(grad_fresh=True),
            buffer[:, : n_out * n_in].view(k, n_out, n_in),
            buffer[:, n_out * n_in : n_out * n_in + n_out] if bias else None,
        )
        trigger = torch.zeros((), requires_grad=True)
        out = StackedLinear.apply(h, w, b, sinks, trigger)
        out.backward(grad_out)  # into the buffer
        sinks.stack.grad_fresh = False
        StackedLinear.apply(h, w, b, sinks, trigger).backward(grad_out)  # adds (gd's chunks)
        for i in range(k):
            hi = h[i].detach().clone().requires_grad_()
            wi = w[i].clone().requires_grad_()
            bi = None if b is None else b[i].clone().requires_grad_()
            solo = torch.nn.functional.linear(hi, wi, bi)
            solo.backward(grad_out[i])
            torch.nn.functional.linear(hi, wi, bi).backward(grad_out[i])
            assert torch.equal(out[i], solo)
            assert h.grad is not None and torch.equal(h.grad[i], hi.grad)
            assert torch.equal(sinks.weight[i], wi.grad)
            if bi is not None:
                assert sinks.bias is not None and torch.equal(sinks.bias[i], bi.grad)
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- exactness


def test_minibatch_optimizers_schedules_and_regularization_match_solo(mnist: MnistData) -> None:
    """One mixed pack: every mini-batch optimizer, every schedule, warmup, L1, L2, dropout."""
    check_pack(
        mnist,
        [
            config(0, optimizer="sgd", lr=0.1, epochs=3, lr_schedule="step", step_size=1),
            config(1, optimizer="momentum", lr=0.05, weight_decay=1e-3, dropout=0.3),
            config(2, optimizer="nesterov", lr=0.05, lr_schedule="cosine", epochs=3),
            config(3, optimizer="adagrad", lr=0.02, l1=1e-4, warmup_epochs=1),
            config(4, optimizer="rmsprop", lr=1e-3, lr_schedule="exponential", gamma=0.5),
            config(5, optimizer="rmsprop", lr=1e-3, momentum=0.5, dropout=0.2, l1=3e-5),
            config(6, optimizer="adam", lr=2e-3, weight_decay=1e-2, warmup_epochs=2, epochs=3),
            config(7, optimizer="adamw", lr=2e-3, weight_decay=0.1, lr_schedule="cosine"),
            config(8, optimizer="sgd", lr=0.05, momentum=0.0, epochs=1),  # leaves after epoch 1
        ],
    )


def test_batch_norm_deep_and_a_skipped_single_sample_batch_match_solo(mnist: MnistData) -> None:
    """Depth 2 with batch norm; 641 images leave a last batch of one, which solo skips."""
    shape = {"batch_norm": True, "depth": 2, "hidden": 64, "train_subset": 641}
    check_pack(
        mnist,
        [
            config(0, optimizer="sgd", lr=0.1, **shape),
            config(1, optimizer="adam", lr=1e-3, dropout=0.25, **shape),
            config(2, optimizer="momentum", lr=0.05, l1=1e-4, weight_decay=1e-3, **shape),
            config(3, optimizer="adagrad", lr=0.02, lr_schedule="exponential", **shape),
        ],
    )


def test_gd_pack_matches_solo_including_a_divergence(
    mnist: MnistData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gd packs with gd only: full-batch gradient in several chunks, with and without batch norm."""
    monkeypatch.setattr(trainer_module, "GD_CHUNK", 300)
    monkeypatch.setattr(pack_trainer_module, "GD_CHUNK", 300)
    for shape in ({}, {"batch_norm": True}):
        packed = check_pack(
            mnist,
            [
                config(0, optimizer="gd", lr=0.5, epochs=3, **shape),
                config(1, optimizer="gd", lr=1.0, weight_decay=1e-3, dropout=0.2, **shape),
                config(2, optimizer="gd", lr=0.3, l1=1e-4, lr_schedule="cosine", **shape),
                config(3, optimizer="gd", lr=50.0, epochs=3, **shape),  # explodes
            ],
        )
        assert packed[3].status == "diverged" and packed[0].status == "completed"


def test_diverging_member_leaves_at_once_and_the_others_stay_exact(mnist: MnistData) -> None:
    sizes: list[int] = []
    real_step = stack_module.Stack.step

    def step(self: stack_module.Stack) -> None:
        sizes.append(len(self))
        real_step(self)

    configs = [
        config(0, optimizer="sgd", lr=0.1),
        config(1, optimizer="sgd", lr=1e4),  # NaN/explosion within a few batches
        config(2, optimizer="adam", lr=1e-3),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stack_module.Stack, "step", step)
        packed = run_pack(mnist, configs)
    solo = [train(c, mnist) for c in configs]
    for i in range(3):
        assert_same_as_solo(packed[i], solo[i])
    assert packed[1].status == "diverged" and "diverged at epoch 1 batch" in str(
        packed[1].diagnosis
    )
    # Three members until the divergence (that batch's step included), two after it.
    diverged_after = packed[1].optimizer_steps + 1
    assert sizes[:diverged_after] == [3] * diverged_after
    assert set(sizes[diverged_after:]) == {2}


# --------------------------------------------------------------------------- hooks


class Recorder(NullHooks):
    """Records on_epoch calls; prunes after ``prune_after`` epochs; stops after ``polls``."""

    def __init__(self, prune_after: int | None = None, polls: int | None = None) -> None:
        self.prune_after, self.polls = prune_after, polls
        self.epochs: list[int] = []
        self.calls = 0

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        self.epochs.append(epoch)
        return self.prune_after is None or epoch < self.prune_after

    def should_stop(self) -> bool:
        self.calls += 1
        return self.polls is not None and self.calls > self.polls


def test_pruned_and_stopped_members_leave_and_the_others_stay_exact(mnist: MnistData) -> None:
    configs = [
        config(i, optimizer=o, lr=lr, epochs=3)
        for i, (o, lr) in enumerate(
            [("sgd", 0.1), ("adam", 1e-3), ("momentum", 0.05), ("rmsprop", 1e-3)]
        )
    ]
    hooks = {1: Recorder(prune_after=1), 2: Recorder(polls=13)}  # stops in epoch 2, batch 4
    packed = run_pack(mnist, configs, hooks)
    solo_hooks = {1: Recorder(prune_after=1), 2: Recorder(polls=13)}
    for i, c in enumerate(configs):
        assert_same_as_solo(packed[i], train(c, mnist, hooks=solo_hooks.get(i)))
    assert packed[1].status == "pruned" and hooks[1].epochs == [1]
    assert packed[2].status == "stopped" and packed[2].optimizer_steps == 13
    assert "test_accuracy" not in packed[2].final
    assert packed[0].status == packed[3].status == "completed"


def test_member_joining_at_an_epoch_boundary_trains_like_solo(mnist: MnistData) -> None:
    first = [config(0, optimizer="sgd", lr=0.1, epochs=3), config(1, optimizer="adam", lr=1e-3)]
    late = config(2, optimizer="adam", lr=2e-3, dropout=0.2, epochs=2)
    pack = PackTrainer(mnist)
    for i, c in enumerate(first):
        pack.add(Member(i, c))
    results: dict[Hashable, TrainResult] = {}
    results.update((m.id, r) for m, r in pack.run_epoch())
    pack.add(Member(2, late))  # starts its epoch 1 while the others train their epoch 2
    assert len(pack) == 3 and not results
    epochs = []
    while len(pack):
        epochs.append([m.epoch + 1 for m in pack.members + pack.joining])
        results.update((m.id, r) for m, r in pack.run_epoch())
    assert epochs[0] == [2, 2, 1]  # the late member is on its own epoch 1
    for i, c in enumerate([*first, late]):
        assert_same_as_solo(results[i], train(c, mnist))


def test_remove_takes_a_member_out_between_epochs(mnist: MnistData) -> None:
    pack = PackTrainer(mnist)
    for i in range(3):
        pack.add(Member(i, config(i, epochs=3)))
    pack.run_epoch()
    pack.add(Member(3, config(3)))
    queued = pack.remove(3)  # never trained
    assert queued is not None and queued.status == "stopped" and queued.history == []
    gone = pack.remove(1)  # lease lost after its epoch 1
    assert gone is not None and gone.status == "stopped" and gone.epochs_run == 1
    assert pack.remove(1) is None and [m.id for m in pack.members] == [0, 2]
    assert pack.stack is not None and len(pack.stack) == 2
    results = pack.run()
    assert_same_as_solo(results[2], train(config(2, epochs=3), mnist))


# --------------------------------------------------------------------------- driving


def test_train_pack_refills_freed_slots(mnist: MnistData) -> None:
    """Continuous batching: capacity 2, members arrive through refill as slots free up."""
    queue = [config(i, optimizer="sgd", lr=0.05 * (i + 1), epochs=1 + i % 2) for i in range(5)]
    asked: list[tuple[int, int]] = []  # (free slots, members still queued)
    ended: list[Hashable] = []
    all_configs = list(queue)

    def refill(free: int, key: Any) -> list[Member]:
        assert key is None or key == pack_key(all_configs[0])
        asked.append((free, len(queue)))
        return [Member(5 - len(queue), queue.pop(0)) for _ in range(min(free, len(queue)))]

    results = train_pack(
        [], mnist, capacity=2, refill=refill, on_result=lambda m, r: ended.append(m.id)
    )
    assert sorted(ended) == list(range(5)) and asked[0] == (2, 5)
    assert all(free <= 2 for free, _ in asked)
    assert ended[0] == 0  # one epoch: the first to leave, its slot refilled by member 2
    for i, c in enumerate(all_configs):
        assert_same_as_solo(results[i], train(c, mnist))


def test_cuda_out_of_memory_halves_the_pack_and_no_trial_fails(mnist: MnistData) -> None:
    """Only the GPU condition is mocked: Stack.forward raises torch.cuda.OutOfMemoryError
    whenever more than two members are stacked, from the 15th forward on (epoch 2,
    batch 5, after epoch 1 was reported). Everything else is the real CPU run, with
    the snapshots a CUDA pack keeps switched on."""
    real_forward = stack_module.Stack.forward
    calls, sizes = [0], []

    def forward(self: stack_module.Stack, x: torch.Tensor, noise: Any) -> torch.Tensor:
        calls[0] += 1
        sizes.append(len(self))
        if len(self) > 2 and calls[0] >= 15:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_forward(self, x, noise)

    configs = [
        config(i, optimizer=o, lr=lr, epochs=3)
        for i, (o, lr) in enumerate(
            [("sgd", 0.1), ("adam", 1e-3), ("nesterov", 0.05), ("rmsprop", 1e-3), ("adamw", 1e-3)]
        )
    ]
    hooks = {i: Recorder() for i in range(5)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stack_module.Stack, "forward", forward)
        members = [Member(i, c, hooks[i]) for i, c in enumerate(configs)]
        results = train_pack(members, mnist, capacity=5, snapshots=True)
    assert sizes[:15] == [5] * 15 and max(sizes[15:]) == 2  # 5 members, then 2 at a time
    for i, c in enumerate(configs):
        assert hooks[i].epochs == [1, 2, 3]  # every epoch reported once: none re-run after a report
        assert_same_as_solo(results[i], train(c, mnist))


def test_a_single_member_that_does_not_fit_still_fails(mnist: MnistData) -> None:
    def forward(self: stack_module.Stack, x: torch.Tensor, noise: Any) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stack_module.Stack, "forward", forward)
        with pytest.raises(torch.cuda.OutOfMemoryError):
            train_pack([Member(0, config(0))], mnist, capacity=4, snapshots=True)


# --------------------------------------------------------------------------- keys, memory


def test_pack_key_groups_by_shape_and_full_batch_only() -> None:
    a = config(0, optimizer="sgd", lr=0.1)
    same = [
        config(1, optimizer="adam", lr=1e-3, dropout=0.5, l1=1e-3, epochs=7),
        config(2, optimizer="rmsprop", weight_decay=0.1, lr_schedule="cosine", warmup_epochs=1),
    ]
    other = [
        config(0, optimizer="gd", lr=0.1),  # full batch: never with mini-batch members
        config(0, optimizer="sgd", batch_size=32),
        config(0, optimizer="sgd", hidden=256),
        config(0, optimizer="sgd", batch_norm=True),
        config(0, optimizer="sgd", train_subset=1000),
    ]
    assert all(pack_key(c) == pack_key(a) for c in same)
    assert all(pack_key(c) != pack_key(a) for c in other)
    assert pack_key(config(0, optimizer="gd", batch_size=32)) == pack_key(other[0])
    gradual = config(0, prune_amount=0.5, prune_schedule="gradual")  # masks during training
    assert packable(a) and packable(config(0, prune_amount=0.5)) and not packable(gradual)


def test_add_refuses_an_incompatible_member(mnist: MnistData) -> None:
    pack = PackTrainer(mnist)
    pack.add(Member(0, config(0)))
    assert pack.accepts(config(1, optimizer="adam")) and not pack.accepts(config(1, hidden=32))
    assert not pack.accepts(config(1, prune_amount=0.5, prune_schedule="gradual"))
    with pytest.raises(ValueError, match="does not fit"):
        pack.add(Member(1, config(1, optimizer="gd")))


def test_member_bytes_grow_with_the_model_and_the_optimizer_state(mnist: MnistData) -> None:
    small, big = config(0, hidden=128), config(0, hidden=1024)
    assert estimate_member_bytes(big) > 4 * estimate_member_bytes(small)
    adam, sgd = config(0, optimizer="adam"), config(0, optimizer="sgd")
    n_params = sum(p.numel() for p in build_model(sgd).parameters())
    assert estimate_member_bytes(adam) - estimate_member_bytes(sgd) == 2 * 4 * n_params
    assert probe_member_bytes(sgd, mnist, "cpu") == (0, estimate_member_bytes(sgd))
    k = auto_pack_size(sgd, mnist, "cpu", limit=64)
    assert 1 <= k <= 64


def test_a_pack_changes_neither_the_global_rng_nor_the_thread_count(mnist: MnistData) -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    run_pack(mnist, [config(0, epochs=1, dropout=0.5), config(1, epochs=1)])
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads

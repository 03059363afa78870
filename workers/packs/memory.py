"""Driving a pack: continuous batching, CUDA out-of-memory halving, pack size from memory.

:func:`train_pack` is the loop a daemon runs (or the bench): keep up to
``capacity`` members training, refill freed slots at each epoch boundary (first
with members that were waiting, then from ``refill``: newly leased trials), and
when CUDA runs out of memory put every member back to its last epoch boundary,
halve the capacity and go on: half of the members train now, the others wait
and join as slots free up. No trial fails for an out-of-memory error unless a
single member does not fit.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence

import torch

from hpo.settings import TrainConfig
from workers.data import MnistData
from workers.model import IN_FEATURES, N_CLASSES, build_model, count_params
from workers.outcome import EVAL_CHUNK, NullHooks, TrainResult
from workers.packs.keys import PackKey, optimizer_kind
from workers.packs.member import Member
from workers.packs.optim import STATE
from workers.packs.trainer import PackTrainer
from workers.trainer import GD_CHUNK

log = logging.getLogger(__name__)

# (free slots, the pack's key or None when empty) -> up to that many new compatible members
Refill = Callable[[int, PackKey | None], Sequence[Member]]
OnResult = Callable[[Member, TrainResult], None]

MEMORY_HEADROOM = 0.85  # of the free device memory a --pack auto size may plan to use


def train_pack(
    members: Iterable[Member],
    data: MnistData,
    device: torch.device | str = "cpu",
    *,
    capacity: int,
    refill: Refill | None = None,
    on_result: OnResult | None = None,
    snapshots: bool | None = None,
    pack: PackTrainer | None = None,
) -> dict[Hashable, TrainResult]:
    """Train ``members`` (all with one pack_key) ``capacity`` at a time; results by member id.

    ``on_result(member, result)`` is called as each member ends (report it then);
    ``refill(free_slots, key)`` is asked for more members whenever slots are free
    and nobody is waiting. ``snapshots`` defaults to on for CUDA (needed to halve).
    ``pack``: an empty PackTrainer to drive (the caller may look into it, e.g. at its
    parked members in ``refill``), instead of a new one.
    """
    if pack is None:
        pack = PackTrainer(data, device, snapshots=snapshots)
    pack.capacity = max(1, capacity)
    waiting: deque[Member] = deque(members)
    results: dict[Hashable, TrainResult] = {}
    while True:
        _fill(pack, waiting, refill)
        if not len(pack):
            return results
        try:
            finished = pack.run_epoch()
        except torch.cuda.OutOfMemoryError:
            if len(pack) <= 1 or not pack.snapshots:
                raise  # nothing left to halve: the trial does not fit alone either
            finished = None  # handled below, outside the except: its traceback holds tensors
        if finished is None:
            finished = pack.drain()  # members that ended before the error keep their results
            _halve(pack, waiting)
        for member, result in finished:
            results[member.id] = result
            if on_result is not None:
                on_result(member, result)


def _fill(pack: PackTrainer, waiting: deque[Member], refill: Refill | None) -> None:
    while waiting and pack.free_slots > 0:
        pack.add(waiting.popleft())
    if refill is not None and not waiting and pack.free_slots > 0:
        for member in refill(pack.free_slots, pack.key):
            pack.add(member)


def _halve(pack: PackTrainer, waiting: deque[Member]) -> None:
    """Every member back to its last epoch boundary; half train on, half wait (first in line)."""
    members = pack.rollback()
    half = max(1, len(members) // 2)
    log.warning("CUDA out of memory with %d members: pack halved to %d", len(members), half)
    pack.capacity = half
    waiting.extendleft(reversed(members[half:]))
    for member in members[:half]:
        pack.add(member)
    if pack.device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- pack size


def estimate_member_bytes(config: TrainConfig) -> int:
    """Device bytes one more member of a pack of ``config`` needs, from the model's size.

    Per parameter: the stacked weight, its gradient, the optimizer's scratch, the
    solo-shaped module (evaluation), the optimizer's state, and one more for the
    stack being rebuilt when members join or leave. Per sample of a batch: the
    gathered input and about six [batch, hidden] tensors per hidden layer
    (pre-activation, normalised, ReLU, dropout mask and output, plus their
    gradients). An estimate: :func:`probe_member_bytes` measures.
    """
    with torch.device("meta"):
        n_params = count_params(build_model(config))
    n_state = len(STATE[optimizer_kind(config)])
    rows = GD_CHUNK if config.optimizer == "gd" else config.batch_size
    per_sample = IN_FEATURES + 6 * config.hidden * config.depth + 3 * N_CLASSES
    return 4 * (n_params * (5 + n_state) + 2 * rows * per_sample)


def probe_member_bytes(
    config: TrainConfig, data: MnistData, device: torch.device | str, batches: int = 3
) -> tuple[int, int]:
    """(base, per member) device bytes a pack needs beyond what is already allocated (CUDA).

    Measured: the peaks of packs of 1 and 2 members, each trained ``batches``
    steps of ``config`` (seeds 0 and 1); base adds what one evaluation needs.
    Elsewhere there is no allocator to ask: (0, estimate_member_bytes(config)).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return 0, estimate_member_bytes(config)
    before = torch.cuda.memory_allocated(device)  # the data set and whatever else is resident
    peaks = []
    for k in (1, 2):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        pack = PackTrainer(data, device, snapshots=False)
        for seed in range(k):
            pack.add(Member(seed, _reseeded(config, seed), _StopAfter(batches)))
        pack.run_epoch()
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device))
    per_member = max(peaks[1] - peaks[0], estimate_member_bytes(config) // 4)
    # Evaluation (one member at a time, after the probe's last batch) needs its activations too.
    evaluation = 4 * EVAL_CHUNK * (IN_FEATURES + 3 * config.hidden)
    return max(peaks[0] - per_member - before, 0) + evaluation, per_member


def auto_pack_size(
    config: TrainConfig, data: MnistData, device: torch.device | str, limit: int = 256
) -> int:
    """``--pack auto``: the largest K whose members fit the device's free memory (<= ``limit``)."""
    device = torch.device(device)
    base, per_member = probe_member_bytes(config, data, device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    else:
        import psutil  # the worker extra

        free = psutil.virtual_memory().available
    k = int((free * MEMORY_HEADROOM - base) // per_member)
    return max(1, min(limit, k))


def _reseeded(config: TrainConfig, seed: int) -> TrainConfig:
    settings = {k: v for k, v in config.to_dict().items() if k != "seed"}
    return type(config).from_settings(settings, seed=seed)


class _StopAfter(NullHooks):
    """Stops a probe member after ``polls`` batch boundaries."""

    def __init__(self, polls: int) -> None:
        self.polls = polls

    def should_stop(self) -> bool:
        self.polls -= 1
        return self.polls < 0

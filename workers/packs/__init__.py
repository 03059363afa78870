"""Fused trial packs: K trials of the reference MLP trained as one stacked model.

A packed trial gives the result of the same trial trained alone by
workers.trainer.train (same seed): same initial weights, batch order, dropout
masks, optimizer arithmetic and schedule, per-epoch metrics and TrainResult.
Members report, prune and finish one by one; freed slots are refilled at epoch
boundaries (continuous batching). See docs in each module:

    keys      pack_key(config): which trials can share a pack
    member    Member(id, config, hooks): one trial in a pack
    layout    where each solo parameter sits in a member's row
    stack     the stacked parameters and their batched forward pass
    optim     torch.optim's update rules with per-member hyperparameters
    trainer   PackTrainer: add / remove / run_epoch
    memory    train_pack (refill, CUDA OOM halving), pack size from memory
    lineage   PBT: a segment's successor continues its parent's rows (exploit between slots)

How a daemon drives it (one pack per device; K from --pack, or auto_pack_size)::

    def refill(free, key):
        # Lease up to `free` trials; when `key` is set they must have pack_key(config) == key
        # (group a batch lease with group_by_key; trials that fit no pack run solo).
        return [Member(t.id, t.config, TrialHooks(t)) for t in lease(free, key)]

    train_pack([], data, device, capacity=K, refill=refill, on_result=report_result)

Each member's hooks are the solo trainer's: on_epoch reports the epoch and may
prune (the member leaves at that epoch boundary), should_stop is polled at every
batch boundary (a lost lease: the member leaves at once, status "stopped"). Freed
slots are refilled at the next epoch boundary; a joining trial starts its own
epoch 1 while the others go on. On CUDA out of memory the pack halves itself and
no trial fails. For finer control drive a PackTrainer directly: add(), then
run_epoch() in a loop, each returning the members that ended with their results.
"""

from workers.packs.keys import PackKey, group_by_key, optimizer_kind, pack_key, packable
from workers.packs.member import Member
from workers.packs.memory import (
    auto_pack_size,
    estimate_member_bytes,
    probe_member_bytes,
    train_pack,
)
from workers.packs.trainer import PackTrainer

__all__ = [
    "Member",
    "PackKey",
    "PackTrainer",
    "auto_pack_size",
    "estimate_member_bytes",
    "group_by_key",
    "optimizer_kind",
    "pack_key",
    "packable",
    "probe_member_bytes",
    "train_pack",
]

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

How a daemon drives it (one pack per device, K = --pack or auto_pack_size)::

    def refill(free, key):  # lease up to `free` trials that fit `key` (any when None)
        return [Member(t.id, t.config, hooks_for(t)) for t in lease(free, key)]

    train_pack([], data, device, capacity=K, refill=refill, on_result=report)
"""

from workers.packs.keys import PackKey, group_by_key, optimizer_kind, pack_key
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
    "probe_member_bytes",
    "train_pack",
]

"""Which trials can share a pack, and which update rule each member's optimizer is.

A pack trains its members in lockstep: batch b of every member's epoch is one
step of the stacked model. So members must agree on everything that shapes the
computation or the number of batches (architecture, batch size, the training
split); everything else (optimizer and its knobs, regularization, schedule,
seed, number of epochs) is per member.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple, TypeVar

from hpo.responsible import solo_reason
from hpo.settings import TrainConfig

T = TypeVar("T")

# Update rules, in the order members are stacked: a pack keeps each rule's members in one
# contiguous block of rows, so the optimizer updates a block in place (a view, no gather).
KINDS = (
    "sgd",  # gd, sgd, and momentum 0: p -= lr * g
    "momentum",
    "nesterov",
    "adagrad",
    "rmsprop",
    "rmsprop_momentum",
    "adam",
    "adamw",
)


class PackKey(NamedTuple):
    """What members of one pack share. ``batch`` is the batch size, or "gd" (full batch)."""

    hidden: int
    depth: int
    batch_norm: bool
    batch: int | str
    train_subset: int | None
    val_size: int


def pack_key(config: TrainConfig) -> PackKey:
    """The pack a trial can join: configs with equal keys train together.

    gd members only pack with gd members: a full-batch epoch is one step, a
    mini-batch epoch hundreds, and members step in lockstep.
    """
    batch: int | str = "gd" if config.optimizer == "gd" else config.batch_size
    return PackKey(
        config.hidden,
        config.depth,
        config.batch_norm,
        batch,
        config.train_subset,
        config.val_size,
    )


def packable(config: TrainConfig) -> bool:
    """Whether the trial can train in a pack at all (if not, it runs solo).

    Gradual pruning masks weights between epochs inside the solo loop, which the
    stacked model does not reproduce. Compression after training is fine: a
    packed member that completes is compressed by the solo trainer's own step.
    Privacy (DP-SGD), a skewed or rebalanced split and adversarial training run solo
    (hpo.responsible.solo_reason): the stacked model has none of them.
    """
    if solo_reason(config) is not None:
        return False
    return not (config.prune_schedule == "gradual" and config.prune_amount > 0)


def optimizer_kind(config: TrainConfig) -> str:
    """The update rule torch.optim applies for this config (one of :data:`KINDS`).

    Momentum 0 changes the rule, not just a coefficient: torch's SGD keeps no
    buffer and RMSprop divides in one addcdiv, so those are kinds of their own.
    """
    match config.optimizer:
        case "gd" | "sgd":
            return "sgd"
        case "momentum":
            return "momentum" if config.momentum > 0 else "sgd"
        case "rmsprop":
            return "rmsprop_momentum" if config.momentum > 0 else "rmsprop"
        case "nesterov" | "adagrad" | "adam" | "adamw":
            return config.optimizer
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def group_by_key(items: Iterable[tuple[T, TrainConfig]]) -> dict[PackKey | None, list[T]]:
    """Group (item, config) pairs by :func:`pack_key`, keeping their order within a group.

    Items that are not :func:`packable` go under None: train those solo.
    """
    groups: dict[PackKey | None, list[T]] = defaultdict(list)
    for item, config in items:
        groups[pack_key(config) if packable(config) else None].append(item)
    return dict(groups)

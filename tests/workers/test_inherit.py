"""A PBT segment adopts its parent's checkpoint with its own hyperparameters
(workers.inherit): weights, optimizer state and random streams stay the parent's,
the learning rate (and the other explorable knobs) become the segment's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from workers import checkpoint as ckpt
from workers.data import MnistData
from workers.inherit import adopt
from workers.trainer import train

from .conftest import quick

SMALL = {"train_subset": 640, "val_size": 1000, "hidden": 48, "epochs": 3, "optimizer": "momentum"}


class StopAfterFirst:
    """Hooks that end the run after epoch 1 (its checkpoint is written before)."""

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        return epoch < 1

    def should_stop(self) -> bool:
        return False


def test_a_segment_continues_the_parents_run_with_its_own_lr(
    mnist: MnistData, tmp_path: Path
) -> None:
    parent_cfg = quick(**SMALL, lr=0.05, seed=1)
    parent_path = tmp_path / "parent.pt"
    parent = train(parent_cfg, mnist, hooks=StopAfterFirst(), checkpoint=parent_path)
    assert len(parent.history) == 1

    child_cfg = quick(**SMALL, lr=0.01, weight_decay=1e-4, seed=2)  # its own trial seed
    child_path = tmp_path / "child.pt"
    shutil.copy(parent_path, child_path)
    changed = adopt(child_path, child_cfg)
    assert changed == {"lr": (0.05, 0.01), "weight_decay": (0.0, 1e-4)}
    child = train(child_cfg, mnist, checkpoint=child_path)
    assert child.history[0] == parent.history[0]  # the parent's epoch, not trained again
    assert [m["lr"] for m in child.history[1:]] == [0.01, 0.01]

    # Continuing the parent unchanged gives another curve: the new lr was really used.
    same = tmp_path / "same.pt"
    shutil.copy(parent_path, same)
    adopt(same, parent_cfg.model_copy(update={"seed": 2}))
    unchanged = train(parent_cfg.model_copy(update={"seed": 2}), mnist, checkpoint=same)
    assert unchanged.history[0] == parent.history[0]
    assert unchanged.history[1]["lr"] == 0.05
    assert unchanged.history[1]["train_loss"] != child.history[1]["train_loss"]


def test_other_differences_make_the_checkpoint_unusable(mnist: MnistData, tmp_path: Path) -> None:
    path = tmp_path / "parent.pt"
    train(quick(**SMALL, lr=0.05), mnist, hooks=StopAfterFirst(), checkpoint=path)
    with pytest.raises(ckpt.CheckpointUnreadable, match="hidden"):
        adopt(path, quick(**{**SMALL, "hidden": 32}, lr=0.05))

"""PBT inside a pack (workers.packs.lineage): a segment's successor continues its parent's
state from the pack's own rows (exploit: a copy between member slots) with its own
hyperparameters (explore), and a population run packed gives the curves of the same
population run solo with the same decisions (workers.trainer + workers.inherit)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from hpo.settings import TrainConfig
from workers.data import MnistData
from workers.inherit import adopt
from workers.packs import Member, PackTrainer
from workers.trainer import train

from .conftest import quick

SMALL = {"train_subset": 256, "val_size": 256, "hidden": 32, "epochs": 3, "checkpoint_every": 1}
TOL = 1e-5
CURVE = ("train_loss", "val_loss", "val_accuracy", "lr")


class PauseAt:
    """A segment's hooks: hand back (stop) after epoch ``end`` unless it is the last."""

    def __init__(self, end: int, epochs: int) -> None:
        self.end, self.epochs = end, epochs

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        return epoch < self.end or self.end >= self.epochs

    def should_stop(self) -> bool:
        return False


def cfg(seed: int, **settings: object) -> TrainConfig:
    return quick(**{**SMALL, "optimizer": "adam", **settings}, seed=seed)


def test_exploit_copies_rows_and_optimizer_state_explore_sets_one_slots_hypers(
    mnist: MnistData,
) -> None:
    pack = PackTrainer(mnist)
    pack.add(Member("a0", cfg(1, lr=1e-3), PauseAt(1, 3), lineage="a0"))
    pack.add(Member("b0", cfg(2, lr=3e-3), PauseAt(1, 3), lineage="b0"))
    ended = pack.run_epoch()
    assert [m.id for m, _ in ended] == ["a0", "b0"] and not len(pack)
    parked_a, parked_b = pack.parking.get("a0"), pack.parking.get("b0")
    assert parked_a is not None and parked_b is not None
    b_rows = parked_b.rows.to("cpu")
    assert b_rows.steps > 0 and set(b_rows.state) == {"exp_avg", "exp_avg_sq"}

    # a1 copies b0 (exploit) with a new lr (explore); b1 continues b0 unchanged.
    pack.add(Member("a1", cfg(3, lr=6e-3), PauseAt(2, 3), lineage="a1", parent="b0"))
    pack.add(Member("b1", cfg(4, lr=3e-3), PauseAt(2, 3), lineage="b1", parent="b0"))
    pack.admit()
    assert pack.stack is not None and [m.id for m in pack.members] == ["a1", "b1"]
    [group] = pack.stack.groups
    for slot in (0, 1):
        assert torch.equal(pack.stack.flat[slot], b_rows.params)
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(group.state[name][slot], b_rows.state[name])
        assert group.steps[slot].item() == b_rows.steps
    assert not torch.equal(pack.stack.flat[0], parked_a.rows.params)  # a0's weights are gone
    assert group.hypers is not None
    assert group.hypers.neg_lr.flatten().tolist() == pytest.approx([-6e-3, -3e-3])
    a1, b1 = pack.members
    assert a1.epoch == b1.epoch == 1 and a1.history == parked_b.member.history
    assert torch.equal(a1.shuffle.get_state(), parked_b.member.shuffle.get_state())

    # The copies train apart from here: same state, different lr, different curves.
    pack.run_epoch()
    assert pack.parking.get("b0") is None  # freed when the next epoch started
    a_done, b_done = pack.parking.get("a1"), pack.parking.get("b1")
    assert a_done is not None and b_done is not None
    assert a_done.member.history[-1]["train_loss"] != b_done.member.history[-1]["train_loss"]


# (member, parent member in the previous segment, settings) per segment: the recorded
# decisions of a 3-member population, 3 segments of 1 epoch (exploits and explores).
DECISIONS: list[list[tuple[int, int | None, dict[str, object]]]] = [
    [(0, None, {"lr": 1e-3}), (1, None, {"lr": 3e-3}), (2, None, {"lr": 1e-2})],
    [(0, 2, {"lr": 5e-3}), (1, 1, {"lr": 3e-3}), (2, 2, {"lr": 1e-2})],
    [(0, 0, {"lr": 5e-3}), (1, 0, {"lr": 5e-3, "weight_decay": 1e-4}), (2, 2, {"lr": 5e-3})],
]


def segment_config(segment: int, member: int, settings: dict[str, object]) -> TrainConfig:
    return cfg(100 + 10 * segment + member, **settings)  # each segment its own trial seed


def test_a_packed_population_gives_the_solo_populations_curves(
    mnist: MnistData, tmp_path: Path
) -> None:
    solo = _run_solo(mnist, tmp_path / "solo")
    packed = _run_packed(mnist)
    from_files = _run_packed(mnist, tmp_path / "files")  # successors in fresh packs: no parking
    for curves in (packed, from_files):
        assert curves.keys() == solo.keys()
        for key, curve in solo.items():
            for name in CURVE:
                assert curves[key][name] == pytest.approx(curve[name], abs=TOL), (key, name)
    # The decisions mattered: an exploited member's curve left its own line.
    assert solo[(0, 1)]["val_loss"] != pytest.approx(solo[(0, 0)]["val_loss"])


def _run_solo(mnist: MnistData, folder: Path) -> dict[tuple[int, int], dict[str, float]]:
    """Each segment solo: its parent's checkpoint copied and adopted, as a solo worker does."""
    folder.mkdir()
    curves = {}
    for segment, decisions in enumerate(DECISIONS):
        for member, parent, settings in decisions:
            config, path = segment_config(segment, member, settings), folder / f"{member}-{segment}"
            if parent is not None:
                shutil.copy(folder / f"{parent}-{segment - 1}", path)
                adopt(path, config)
            result = train(config, mnist, hooks=PauseAt(segment + 1, 3), checkpoint=path)
            curves[(member, segment)] = result.history[-1]
    return curves


def _run_packed(
    mnist: MnistData, files: Path | None = None
) -> dict[tuple[int, int], dict[str, float]]:
    """The population as one pack (``files``: a fresh pack per segment, each successor
    from its parent's checkpoint file, adopted)."""
    pack, curves = PackTrainer(mnist), {}
    for segment, decisions in enumerate(DECISIONS):
        if files is not None:
            files.mkdir(exist_ok=True)
            pack = PackTrainer(mnist)
        for member, parent, settings in decisions:
            config, path = segment_config(segment, member, settings), None
            if files is not None:
                path = files / f"{member}-{segment}"
                if parent is not None:
                    shutil.copy(files / f"{parent}-{segment - 1}", path)
                    adopt(path, config)
            lineage, parent_key = (member, segment), (parent, segment - 1)
            hooks = PauseAt(segment + 1, 3)
            pack.add(Member(lineage, config, hooks, path, lineage=lineage, parent=parent_key))
        ended = pack.run_epoch()
        assert len(ended) == len(decisions)
        curves.update({m.id: result.history[-1] for m, result in ended})
    return curves

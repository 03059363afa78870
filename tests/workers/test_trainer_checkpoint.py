"""The reference trainer resumes from its checkpoint bit for bit (CPU, same seed).

Each case trains a trial uninterrupted, then trains its twin that is cut off
(told to stop in the middle of an epoch, as a preemption does, or killed by an
exception after an epoch's checkpoint, as a SIGKILL leaves it) and resumed in a
fresh ``train`` call from the checkpoint file. Per-epoch metrics, the final
accuracy and the weights must be equal, exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpo.settings import OPTIMIZERS, TrainConfig
from workers import checkpoint as ckpt
from workers.data import MnistData
from workers.outcome import NullHooks
from workers.packs import Member, PackTrainer
from workers.results import TrainStatus
from workers.trainer import train

from .conftest import quick

#: Metrics that measure the machine (time, memory), not the training.
TIMING = {"epoch_time_s", "data_time_s", "samples_per_s", "peak_memory_mb", "total_time_s"}
SCHEDULES = ("constant", "step", "exponential", "cosine")
LR = {"gd": 0.5, "adagrad": 0.01, "rmsprop": 0.001, "adam": 0.003, "adamw": 0.003}
SMALL = {"train_subset": 640, "val_size": 1000, "hidden": 48, "epochs": 3, "step_size": 1}


class StopAt:
    """Hooks that stop the run at one batch of one epoch (a preemption's stop)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.target, self.epoch, self.batch = (epoch, batch), 1, 0

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        self.epoch, self.batch = epoch + 1, 0
        return True

    def should_stop(self) -> bool:
        self.batch += 1
        return (self.epoch, self.batch) == self.target


class Killed(Exception):
    """Stands for a SIGKILL: the process is gone, only the checkpoint file is left."""


class KillIn(StopAt):
    """Hooks that die in the middle of an epoch, without a chance to save."""

    def should_stop(self) -> bool:
        if super().should_stop():
            raise Killed
        return False


def config(**settings: object) -> TrainConfig:
    return quick(**{**SMALL, **settings})


def deterministic(result) -> tuple[list[dict[str, float]], dict[str, float], list]:
    history = [{k: v for k, v in h.items() if k not in TIMING} for h in result.history]
    final = {k: v for k, v in result.final.items() if k not in TIMING and "latency" not in k}
    weights = [t.detach().clone() for t in result.model.state_dict().values()]
    return history, final, weights


def assert_same(resumed, twin) -> None:
    (h1, f1, w1), (h2, f2, w2) = deterministic(resumed), deterministic(twin)
    assert h1 == h2
    assert f1 == f2
    assert len(w1) == len(w2) and all(torch.equal(a, b) for a, b in zip(w1, w2, strict=True))
    assert resumed.epochs_run == twin.epochs_run and resumed.optimizer_steps == twin.optimizer_steps


def preempted_and_resumed(cfg: TrainConfig, mnist: MnistData, path: Path, at=(2, 4)):
    first = train(cfg, mnist, hooks=StopAt(*at), checkpoint=path)
    assert first.status == TrainStatus.STOPPED and path.exists()
    return train(cfg, mnist, hooks=NullHooks(), checkpoint=path)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_preempted_mid_epoch_resumes_bit_for_bit(
    mnist: MnistData, tmp_path: Path, optimizer: str, schedule: str
) -> None:
    cfg = config(optimizer=optimizer, lr_schedule=schedule, lr=LR.get(optimizer, 0.05))
    twin = train(cfg, mnist)
    at = (2, 1) if optimizer == "gd" else (2, 4)  # gd: one chunk, one stop check an epoch
    resumed = preempted_and_resumed(cfg, mnist, tmp_path / ckpt.FILENAME, at)
    assert resumed.status == TrainStatus.COMPLETED
    assert_same(resumed, twin)


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer": "adam", "lr": 0.003, "dropout": 0.3, "batch_norm": True},
        {"optimizer": "momentum", "l1": 1e-4, "weight_decay": 1e-3, "warmup_epochs": 1},
        {"optimizer": "sgd", "lr": 0.1, "prune_amount": 0.5, "prune_schedule": "gradual"},
        {"optimizer": "rmsprop", "lr": 0.001, "depth": 2, "lr_schedule": "cosine"},
    ],
    ids=["dropout-bn", "l1-l2-warmup", "gradual-pruning", "deep-rmsprop"],
)
def test_killed_after_an_epoch_resumes_bit_for_bit(
    mnist: MnistData, tmp_path: Path, settings: dict[str, object]
) -> None:
    cfg = config(**settings)
    twin = train(cfg, mnist)
    path = tmp_path / ckpt.FILENAME
    with pytest.raises(Killed):
        train(cfg, mnist, hooks=KillIn(3, 5), checkpoint=path)  # epoch 2's checkpoint is left
    assert torch.load(path, weights_only=True)["epochs_done"] == 2
    resumed = train(cfg, mnist, checkpoint=path)
    assert_same(resumed, twin)
    # ... and a mid-epoch stop of the same settings
    path.unlink()
    assert_same(preempted_and_resumed(cfg, mnist, path, at=(1, 3)), twin)


def test_checkpoint_every_and_off(mnist: MnistData, tmp_path: Path) -> None:
    path = tmp_path / ckpt.FILENAME
    seen: list[int] = []

    class Watch(NullHooks):
        def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
            seen.append(torch.load(path, weights_only=True)["epochs_done"] if path.exists() else 0)
            return True

    train(config(epochs=3, checkpoint_every=2), mnist, hooks=Watch(), checkpoint=path)
    assert seen == [0, 2, 3]  # epoch 2, then the last epoch
    path.unlink()
    seen.clear()
    train(config(checkpoint_every=0), mnist, hooks=Watch(), checkpoint=path)
    assert seen == [0, 0, 0] and not path.exists()


def test_a_checkpoint_of_other_settings_or_damaged_is_unreadable(
    mnist: MnistData, tmp_path: Path
) -> None:
    path = tmp_path / ckpt.FILENAME
    train(config(epochs=1), mnist, checkpoint=path)
    with pytest.raises(ckpt.CheckpointUnreadable, match="other settings"):
        train(config(epochs=1, lr=0.5), mnist, checkpoint=path)
    # settings that do not change what is computed do not matter
    train(config(epochs=1, checkpoint_every=3), mnist, checkpoint=path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ckpt.CheckpointUnreadable, match=ckpt.FILENAME):
        train(config(epochs=1), mnist, checkpoint=path)


def test_a_finished_run_resumed_trains_nothing_more(mnist: MnistData, tmp_path: Path) -> None:
    path = tmp_path / ckpt.FILENAME
    cfg = config(epochs=2)
    done = train(cfg, mnist, checkpoint=path)
    again = train(cfg, mnist, checkpoint=path)
    assert again.status == TrainStatus.COMPLETED and again.optimizer_steps == done.optimizer_steps
    assert_same(again, done)


# --------------------------------------------------------------------------- pack members

PACKED = [
    {"optimizer": "adam", "lr": 0.003, "dropout": 0.2},
    {"optimizer": "momentum", "lr": 0.05, "lr_schedule": "step"},
    {"optimizer": "adam", "lr": 0.001, "weight_decay": 1e-3, "seed": 7},
]


def pack_of(mnist: MnistData, members: dict[int, dict], folder: Path, hooks=None) -> dict:
    """Train the members as one pack, member i with its checkpoint file ``member-i.pt``."""
    pack = PackTrainer(mnist, "cpu")
    for i, settings in members.items():
        folder.mkdir(exist_ok=True)
        path = folder / f"member-{i}.pt"
        pack.add(Member(i, config(**settings), (hooks or {}).get(i), checkpoint=path))
    return pack.run()


def test_pack_members_killed_and_resumed_bit_for_bit(mnist: MnistData, tmp_path: Path) -> None:
    members = dict(enumerate(PACKED))
    # The twin is the same pack uninterrupted: a pack's train_loss may differ from a solo
    # run's in the last bits (tests/workers/test_packs.py); its resume must not differ at all.
    twins = pack_of(mnist, members, tmp_path / "twin")
    with pytest.raises(Killed):  # the whole pack dies in epoch 3: epoch 2's files are left
        pack_of(mnist, members, tmp_path, hooks={1: KillIn(3, 2)})
    assert all(torch.load(tmp_path / f"member-{i}.pt")["epoch"] == 2 for i in members)
    resumed = pack_of(mnist, members, tmp_path)
    for i, twin in twins.items():
        assert resumed[i].status == TrainStatus.COMPLETED
        assert_same(resumed[i], twin)


def test_a_member_resumes_in_another_pack_and_a_finished_one_trains_no_more(
    mnist: MnistData, tmp_path: Path
) -> None:
    twin = pack_of(mnist, {1: PACKED[1]}, tmp_path / "twin")[1]
    with pytest.raises(Killed):  # dies in epoch 2: epoch 1's files are left
        pack_of(mnist, {0: PACKED[0], 1: PACKED[1]}, tmp_path, hooks={0: KillIn(2, 3)})
    # member 1 goes on beside a new trial (a pack of another composition)
    resumed = pack_of(mnist, {1: PACKED[1], 2: PACKED[2]}, tmp_path)
    assert_same(resumed[1], twin)
    done = torch.load(tmp_path / "member-1.pt")
    again = pack_of(mnist, {1: PACKED[1]}, tmp_path)  # its file is at the last epoch
    assert again[1].status == TrainStatus.COMPLETED and again[1].optimizer_steps == done["steps"]
    assert_same(again[1], twin)


def test_a_solo_checkpoint_does_not_load_as_a_pack_member(mnist: MnistData, tmp_path: Path) -> None:
    path = tmp_path / ckpt.FILENAME
    train(config(epochs=1), mnist, checkpoint=path)
    assert ckpt.format_of(path) == ckpt.FORMAT
    with pytest.raises(ckpt.CheckpointUnreadable, match=ckpt.PACK_FORMAT):
        PackTrainer(mnist, "cpu").add(Member(0, config(epochs=1), checkpoint=path))


def test_the_kept_model_loads_into_a_fresh_build(mnist: MnistData) -> None:
    from workers.model import build_model
    from workers.reference import plain_state_dict

    cfg = config(epochs=2, prune_amount=0.5, prune_schedule="gradual", dropout=0.2)
    result = train(cfg, mnist)
    rebuilt = build_model(TrainConfig.from_settings(cfg.to_dict()))
    rebuilt.load_state_dict(plain_state_dict(result.model))  # strict: the same names
    x = mnist.test.x[:100]
    assert torch.equal(rebuilt.eval()(x), result.model.eval()(x))


def test_a_resumed_run_hands_its_epochs_so_far_to_on_resume(
    mnist: MnistData, tmp_path: Path
) -> None:
    # A trial stopped between writing an epoch's checkpoint and reporting it reports that
    # epoch on resume (workers.reference.TrialHooks.on_resume); pruning there stops the run.
    path, seen = tmp_path / ckpt.FILENAME, []

    class Resuming(NullHooks):
        def __init__(self, prune: bool) -> None:
            self.prune = prune

        def on_resume(self, history: list[dict[str, float]]) -> bool:
            seen.append([int(h["epoch"]) for h in history])
            return not self.prune

    cfg = config()
    train(cfg, mnist, hooks=StopAt(3, 2), checkpoint=path)
    pruned = train(cfg, mnist, hooks=Resuming(prune=True), checkpoint=path)
    assert pruned.status == TrainStatus.PRUNED and pruned.epochs_run == 2
    done = train(cfg, mnist, hooks=Resuming(prune=False), checkpoint=path)
    assert done.status == TrainStatus.COMPLETED and seen == [[1, 2], [1, 2]]

"""Fixtures for the trainer tests: the MNIST folder and one loaded copy per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from hpo.settings import TrainConfig
from workers.data import MnistData, MnistNotFound, load_mnist

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """``HPO_DATA_DIR``, else the shared data folder beside the repository."""
    return Path(os.environ.get("HPO_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def one_torch_thread() -> Iterator[None]:
    """Train on one intra-op thread while these tests run.

    On a shared 2-core machine (other test processes, CPU workers) two OpenMP
    threads wait on each other at every parallel region: measured here, an epoch
    went from ~3 s to 30-120 s under load, while one thread stays ~3 s.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist(mnist_root: Path, one_torch_thread: None) -> MnistData:
    """MNIST on the CPU, loaded once for the whole session."""
    try:
        return load_mnist(mnist_root)
    except MnistNotFound as exc:
        pytest.skip(f"MNIST unavailable: {exc}")


def quick(**settings: object) -> TrainConfig:
    """A fast config: 2k training images, 1 epoch, unless overridden."""
    return TrainConfig.from_settings({"train_subset": 2000, "epochs": 1, **settings})

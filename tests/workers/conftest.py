"""Fixtures for the trainer tests: the MNIST folder and one loaded copy per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.data import MnistData, MnistNotFound, load_mnist
from workers.settings import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """``HPO_DATA_DIR``, else the shared data folder beside the repository."""
    return Path(os.environ.get("HPO_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def mnist(mnist_root: Path) -> MnistData:
    """MNIST on the CPU, loaded once for the whole session."""
    try:
        return load_mnist(mnist_root)
    except MnistNotFound as exc:
        pytest.skip(f"MNIST unavailable: {exc}")


def quick(**settings: object) -> TrainConfig:
    """A fast config: 2k training images, 1 epoch, unless overridden."""
    return TrainConfig.from_settings({"train_subset": 2000, "epochs": 1, **settings})

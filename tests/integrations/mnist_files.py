"""``keras.datasets.mnist.load_data()`` from the MNIST files in ``HPO_DATA_DIR``.

The same arrays (uint8 images 28x28, uint8 labels, train then test) without a
download: machines here are offline, and the IDX files are already on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    raw = Path(os.environ["HPO_DATA_DIR"]) / "MNIST" / "raw"
    train = (_idx(raw / "train-images-idx3-ubyte"), _idx(raw / "train-labels-idx1-ubyte"))
    test = (_idx(raw / "t10k-images-idx3-ubyte"), _idx(raw / "t10k-labels-idx1-ubyte"))
    return train, test

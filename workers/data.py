"""MNIST as device-resident tensors, loaded once per process.

The seed loop spent most of its time in the DataLoader: PIL images, ToTensor
and Normalize per sample, every epoch. Here the 70k images are converted once
to normalised float32 tensors (784 features) that live on the training device;
the trainer then slices mini-batches by index, with no per-sample work at all.

Honest evaluation: the validation split is held out of the 60k training images
with a fixed generator seed (not the trial seed), so every trial of every study
is scored on the same images; the 10k test set is only ever reported.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MEAN, STD = 0.1307, 0.3081  # the seed's Normalize((0.1307,), (0.3081,))
SPLIT_SEED = 20240601  # fixed: the train/validation split must not depend on the trial
DEFAULT_VAL_SIZE = 5000

_cache: dict[tuple[str, str], MnistData] = {}
_cache_lock = threading.Lock()


class MnistNotFound(RuntimeError):
    """The MNIST files are not where we were told to look (and no download)."""


@dataclass(frozen=True)
class Split:
    """Images (N x 784, normalised float32) and labels (N, int64) on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.y.shape[0]

    def head(self, n: int | None) -> Split:
        """The first ``n`` examples (a view, no copy); all of them for None."""
        return self if n is None else Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class MnistData:
    """Normalised MNIST on one device.

    ``pool`` holds the 60k training images in a fixed shuffled order
    (``pool_index[i]`` is the original MNIST index of row i); the first
    ``val_size`` rows are the validation split, the rest the training split.
    Both are views of the pool, so any ``val_size`` costs no copy.
    """

    pool: Split
    pool_index: torch.Tensor
    test: Split
    root: Path
    device: torch.device

    def split(self, val_size: int = DEFAULT_VAL_SIZE) -> tuple[Split, Split]:
        """(train, validation) with ``val_size`` validation images."""
        if not 0 < val_size < len(self.pool):
            raise ValueError(f"val_size must be in 1..{len(self.pool) - 1}, got {val_size}")
        x, y = self.pool.x, self.pool.y
        return Split(x[val_size:], y[val_size:]), Split(x[:val_size], y[:val_size])

    @property
    def train(self) -> Split:
        return self.split()[0]

    @property
    def val(self) -> Split:
        return self.split()[1]


def resolve_root(root: str | Path | None) -> Path:
    """The data root: the argument, else $HPO_DATA_DIR, else ./data."""
    if root is None or str(root) == "":
        root = os.environ.get("HPO_DATA_DIR") or "./data"
    return Path(root).expanduser().resolve()


def load_mnist(
    root: str | Path | None = None,
    device: torch.device | str = "cpu",
    download: bool = False,
) -> MnistData:
    """Load MNIST from ``root`` (torchvision layout: ``<root>/MNIST/raw/...``) onto ``device``.

    Cached per process by (resolved root, device): every trial a worker runs
    reuses the same tensors. Downloads only when ``download`` is true.
    """
    path = resolve_root(root)
    dev = _canonical(torch.device(device))
    key = (str(path), str(dev))
    with _cache_lock:  # a second thread waits instead of loading a second copy
        if key not in _cache:
            _cache[key] = _load(path, dev, download)
        return _cache[key]


def clear_cache() -> None:
    """Forget every loaded copy (tests; freeing device memory)."""
    with _cache_lock:
        _cache.clear()


def _canonical(device: torch.device) -> torch.device:
    # "cuda" and "cuda:0" must share one cache entry.
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _load(root: Path, device: torch.device, download: bool) -> MnistData:
    # Imported here: torchvision's import costs ~1 s and only loading needs it.
    from torchvision.datasets import MNIST

    if not download:
        _check_files(root)
    try:
        train = MNIST(str(root), train=True, download=download)
        test = MNIST(str(root), train=False, download=download)
    except (RuntimeError, OSError) as exc:  # e.g. download=True while offline
        raise MnistNotFound(_missing_message(root, f"loading failed: {exc}")) from exc
    order = torch.randperm(len(train.targets), generator=torch.Generator().manual_seed(SPLIT_SEED))
    pool = _to_split(train.data[order], train.targets[order], device)
    return MnistData(pool, order, _to_split(test.data, test.targets, device), root, device)


def _to_split(images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> Split:
    # Same arithmetic as ToTensor + Normalize, done once for the whole split.
    x = images.to(device).reshape(len(images), -1).float().div_(255).sub_(MEAN).div_(STD)
    return Split(x.contiguous(), labels.to(device=device, dtype=torch.long))


def _check_files(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    missing = [name for name in MNIST_FILES if not (raw / name).is_file()]
    if missing:
        raise MnistNotFound(_missing_message(root, f"missing: {', '.join(missing)}"))


def _missing_message(root: Path, detail: str) -> str:
    raw = root / "MNIST" / "raw"
    return (
        f"MNIST not found in {raw} ({detail}). Expected the four uncompressed files "
        f"{', '.join(MNIST_FILES)} in that folder. Point the worker at the folder that "
        "contains MNIST/raw with --data-dir DIR or the HPO_DATA_DIR environment variable, "
        "or let the worker download it there with --download (HPO_DOWNLOAD=1; needs network "
        "access)."
    )

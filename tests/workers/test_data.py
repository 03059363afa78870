"""workers.data: one normalised copy per process, a fixed validation split, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workers.data import MNIST_FILES, MnistData, MnistNotFound, load_mnist, resolve_root


def test_load_twice_returns_the_cached_object(mnist: MnistData, mnist_root: Path) -> None:
    assert load_mnist(mnist_root) is mnist
    assert load_mnist(str(mnist_root), device=torch.device("cpu")) is mnist


def test_root_comes_from_the_environment(
    mnist: MnistData, mnist_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPO_DATA_DIR", str(mnist_root))
    assert resolve_root(None) == mnist_root.resolve()
    assert load_mnist(None) is mnist


def test_tensors_are_flat_normalised_and_complete(mnist: MnistData) -> None:
    assert mnist.pool.x.shape == (60000, 784) and mnist.pool.x.dtype == torch.float32
    assert mnist.test.x.shape == (10000, 784) and len(mnist.test) == 10000
    assert mnist.pool.y.dtype == torch.long
    assert set(mnist.pool.y.unique().tolist()) == set(range(10))
    # (x/255 - 0.1307) / 0.3081 over the training images: mean ~0, std ~1
    assert abs(mnist.pool.x.mean().item()) < 0.01
    assert abs(mnist.pool.x.std().item() - 1.0) < 0.01


def test_validation_split_is_5000_fixed_and_disjoint_from_train(mnist: MnistData) -> None:
    train, val = mnist.split()
    assert len(val) == 5000 and len(train) == 55000
    val_ids = set(mnist.pool_index[:5000].tolist())
    train_ids = set(mnist.pool_index[5000:].tolist())
    assert not val_ids & train_ids and len(val_ids | train_ids) == 60000
    # The split does not depend on any trial: the same images every time, across val_size too.
    assert torch.equal(mnist.val.x, val.x)
    assert torch.equal(mnist.split(1000)[1].x, val.x[:1000])
    # Views of the pool, no copies.
    assert val.x.data_ptr() == mnist.pool.x.data_ptr()


def test_missing_folder_names_the_folder_and_the_four_files(tmp_path: Path) -> None:
    with pytest.raises(MnistNotFound) as info:
        load_mnist(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    for name in MNIST_FILES:
        assert name in message
    assert "HPO_DATA_DIR" in message and "--data-dir" in message
    assert isinstance(info.value, RuntimeError)


def test_partial_folder_lists_what_is_missing(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(MnistNotFound, match="missing: train-labels-idx1-ubyte"):
        load_mnist(tmp_path)

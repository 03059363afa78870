"""The seed's training loop, reproduced faithfully as the baseline to beat.

torchvision MNIST with ToTensor + Normalize per sample, a shuffling DataLoader
(batch 64, no workers), the 784 -> 512 (ReLU) -> 10 MLP, SGD lr 0.01,
CrossEntropyLoss. Used by bench/trainer.py and by the slow equivalence test.
Deliberately unoptimised: this is what the fast trainer is measured against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn, optim
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


class SeedNet(nn.Module):
    """The seed's MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(28 * 28, 512)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


@dataclass
class SeedResult:
    epoch_times_s: list[float] = field(default_factory=list)  # the training loop only
    epoch_cpu_s: list[float] = field(default_factory=list)  # process CPU time of the same
    test_accuracy: float = 0.0  # after the last epoch, on the 10k test set
    test_time_s: float = 0.0


def run_seed_loop(
    root: str | Path, epochs: int = 1, device: str = "cpu", seed: int = 0
) -> SeedResult:
    """Train the seed's way for ``epochs`` and return per-epoch times and test accuracy."""
    torch.manual_seed(seed)
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    train_set = datasets.MNIST(str(root), train=True, download=False, transform=transform)
    test_set = datasets.MNIST(str(root), train=False, download=False, transform=transform)
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=1000)

    model = SeedNet().to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    result = SeedResult()
    for _ in range(epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        model.train()
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
        _sync(device)
        result.epoch_times_s.append(time.perf_counter() - t0)
        result.epoch_cpu_s.append(time.process_time() - c0)

    t0 = time.perf_counter()
    result.test_accuracy = _accuracy(model, test_loader, device)
    result.test_time_s = time.perf_counter() - t0
    return result


def _accuracy(model: nn.Module, loader: DataLoader, device: str) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            correct += (model(images).argmax(dim=1) == labels).sum().item()
            total += labels.numel()
    return correct / total


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()

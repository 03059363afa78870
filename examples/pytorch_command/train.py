"""A PyTorch training script run by ``hpo worker --command``, one process per trial.

It trains a small MLP on a subset of MNIST, reports the validation accuracy
after every epoch and stops early when the study's pruner says so::

    hpo study create examples/pytorch_command/study.yaml
    hpo worker --command "python examples/pytorch_command/train.py" \\
               --workload mnist-script --no-param-args

``hpo.run(objective)`` runs ``objective`` on the trial the worker leased (it
comes through the environment) and finishes the trial with the returned value.
MNIST is read from ``HPO_DATA_DIR`` (the folder that holds ``MNIST/raw``).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.datasets import MNIST

import hpo

TRAIN, VALIDATION = 4000, 1000  # images: a CPU-sized run


def _load(root: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = MNIST(root, train=True, download=False)
    x = data.data[: TRAIN + VALIDATION].reshape(-1, 784).float().div(255).sub(0.1307).div(0.3081)
    return x, data.targets[: TRAIN + VALIDATION]


def objective(trial: hpo.Trial) -> float:
    """Validation accuracy of an MLP trained with the trial's settings."""
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    hidden = trial.suggest_int("hidden", 32, 256, log=True)
    epochs = trial.suggest_int("epochs", 2, 6)
    torch.manual_seed(trial.seed)
    x, y = _load(os.environ.get("HPO_DATA_DIR", "data"))
    model = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    accuracy = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in torch.randperm(TRAIN).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x[TRAIN:]).argmax(1) == y[TRAIN:]).float().mean().item()
        trial.report(accuracy, epoch)
        if trial.should_prune():
            raise hpo.TrialPruned()
    return accuracy


if __name__ == "__main__":
    hpo.run(objective)

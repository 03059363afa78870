"""Global magnitude pruning of the Linear weights, once or on a gradual schedule.

All of it is ``torch.nn.utils.prune``: ``global_unstructured`` with
``L1Unstructured`` ranks every Linear weight of the model together (so a layer
with many small weights loses more of them than one with few), and its forward
pre-hooks multiply the weights by their masks on every call. That is what keeps
pruned weights at zero while the model is fine-tuned: the optimizer updates
``weight_orig``, the mask zeroes its pruned entries again in each forward, and
their gradients are zero. ``make_permanent`` bakes the masks in (``prune.remove``).

Biases are not pruned: they are ~0.1 % of the parameters and pruning them saves
nothing worth the accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from workers.compression.settings import CompressionSettings, CompressionSettingsError


def pruned_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, "weight") pairs that global pruning ranks: every float Linear."""
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear)]


def _tensor(module: nn.Module, name: str) -> torch.Tensor:
    """A tensor attribute of a module (``weight``, or the ``weight_mask`` pruning adds)."""
    value = getattr(module, name)
    assert isinstance(value, torch.Tensor), f"{type(module).__name__}.{name} is not a tensor"
    return value


def sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros among the Linear weights (as the forward pass sees them)."""
    weights = [_tensor(m, "weight") for m, _ in pruned_weights(model)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / total if total else 0.0


def prune_global(model: nn.Module, amount: float) -> float:
    """Prune ``model`` in place until ``amount`` of all its Linear weights are masked.

    ``amount`` is the total target, not an increment: on a model pruned before
    (gradual pruning) only the missing number of weights is added, chosen by
    magnitude among the ones still alive; a target below what is already pruned
    changes nothing (masks only ever grow). Exactly ``round(amount * n)`` weights
    end up masked. Returns the fraction masked afterwards.
    """
    CompressionSettings(prune_amount=amount)  # the one place the range is checked
    params = pruned_weights(model)
    total = sum(_tensor(m, "weight").numel() for m, _ in params)
    masked = sum(
        int((_tensor(m, "weight_mask") == 0).sum()) for m, _ in params if prune.is_pruned(m)
    )
    missing = round(amount * total) - masked
    if missing > 0:
        # An int amount is an absolute count of the still-unpruned entries to remove:
        # torch's PruningContainer applies the new method to those entries only.
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=missing)
        masked += missing
    return masked / total if total else 0.0


def make_permanent(model: nn.Module) -> nn.Module:
    """Bake the masks into the weights and drop the pruning hooks (in place).

    Afterwards ``weight`` is a plain Parameter again (same object as ``weight_orig``
    was, so an optimizer holding it keeps working), with the zeros stored in it.
    """
    for module, name in pruned_weights(model):
        if prune.is_pruned(module):
            prune.remove(module, name)
    return model


@dataclass(frozen=True)
class PruneSchedule:
    """Target sparsity after each training epoch, for a trainer to apply at epoch ends.

    ``once``: nothing until the last epoch, then ``amount`` (prune after training).
    ``gradual``: the cubic schedule of Zhu & Gupta 2017 ("To prune, or not to
    prune"), s(e) = amount * (1 - (1 - (e - begin) / (epochs - begin))**3) for
    epochs begin < e <= epochs: prunes fast while many redundant weights remain,
    slowly near the end so the network can recover. ``begin`` epochs train dense.

    Usage in a training loop: ``schedule.step(model, epoch)`` after each epoch.
    The optimizer can be built before the first step: pruning re-registers the
    same Parameter object as ``weight_orig``.
    """

    amount: float
    epochs: int
    schedule: str = "gradual"
    begin: int = 0

    def __post_init__(self) -> None:
        CompressionSettings(prune_amount=self.amount, prune_schedule=self.schedule)  # type: ignore[arg-type]
        if self.epochs < 1:
            raise CompressionSettingsError("epochs", f"epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.begin < self.epochs:
            raise CompressionSettingsError(
                "begin", f"begin must be in 0 .. {self.epochs - 1}, got {self.begin}"
            )

    def target(self, epoch: int) -> float:
        """The sparsity the model should have after ``epoch`` (epochs count from 1)."""
        if epoch >= self.epochs:
            return self.amount
        if self.schedule == "once" or epoch <= self.begin:
            return 0.0
        progress = (epoch - self.begin) / (self.epochs - self.begin)
        return self.amount * (1.0 - (1.0 - progress) ** 3)

    def step(self, model: nn.Module, epoch: int) -> float:
        """Prune ``model`` up to :meth:`target` (``epoch``); returns the sparsity now."""
        target = self.target(epoch)
        if target <= 0.0:
            return sparsity(model)
        with torch.no_grad():
            return prune_global(model, target)  # <= amount, which the settings bound

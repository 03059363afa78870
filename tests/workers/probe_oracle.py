"""Dead-unit fraction of a finished model, computed apart from training: the tests'
reference for what :class:`workers.probes.DeadUnitProbe` records during an epoch."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from workers.probes import DeadUnitProbe


@torch.no_grad()
def dead_unit_fraction(model: nn.Module, x: torch.Tensor, chunk: int = 10000) -> float | None:
    """Fraction of hidden ReLU units never active on the batch ``x`` (model in eval mode).

    For a finished model (e.g. ``TrainResult.model``) and a validation batch; the
    model's train/eval mode is restored afterwards. None when it has no ReLU.
    """
    was_training = model.training
    model.eval()
    try:
        with DeadUnitProbe(model) as probe:
            for batch in _chunks(x, chunk):
                model(batch)
        return probe.fraction()
    finally:
        model.train(was_training)


def _chunks(x: torch.Tensor, size: int) -> Iterable[torch.Tensor]:
    return (x[start : start + size] for start in range(0, len(x), size))

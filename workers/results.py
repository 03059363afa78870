"""How a training run of the built-in trainer ended (torch-free: the daemon reads it too)."""

from __future__ import annotations

from enum import StrEnum


class TrainStatus(StrEnum):
    """How a training run ended."""

    COMPLETED = "completed"  # every epoch ran
    PRUNED = "pruned"  # the hooks said stop after an epoch (the study's pruner)
    STOPPED = "stopped"  # told to stop mid-epoch (shutdown, lost lease): no result
    DIVERGED = "diverged"  # the loss blew up (NaN/Inf or divergence_factor x the first)

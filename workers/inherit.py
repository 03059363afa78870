"""A PBT segment starts from its parent's checkpoint, with its own hyperparameters.

PBT's exploit copies a better member's checkpoint; explore changes some of the
optimizer's knobs or the regularization (hpo.schedules.EXPLORABLE_SETTINGS).
:func:`adopt` rewrites the parent's checkpoint file for the segment's settings
before the trainer resumes from it: the weights, the optimizer's state
(momentum buffers, Adam moments), the random streams and the metrics so far stay
the parent's; the optimizer's hyperparameters (learning rate, weight decay,
momentum, betas, eps) become the segment's, and so do dropout and L1, which the
trainer takes from the settings. Any other difference (architecture, batch
size...) makes the checkpoint unusable (CheckpointUnreadable), as for a re-run.

A fused pack member's checkpoint (``PACK_FORMAT``) holds no hyperparameters (a
pack takes them from each member's settings), so adopting one only re-labels it
with the segment's settings. Inside a pack that holds the parent, the segment
takes the parent's state from the pack itself (workers.packs.lineage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hpo.schedules import EXPLORABLE_SETTINGS
from hpo.settings import TrainConfig
from workers import checkpoint as ckpt
from workers.model import build_model
from workers.optimizers import make_optimizer, make_scheduler

#: Settings that may differ between a parent's checkpoint and its child segment.
MAY_DIFFER = frozenset({*EXPLORABLE_SETTINGS, "seed"})


def adopt(path: Path, config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Rewrite the checkpoint at ``path`` (a solo run's or a pack member's) for ``config``;
    the settings it changed, as {name: (parent's, segment's)}."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise ckpt.CheckpointUnreadable(f"{path.name}: {type(exc).__name__}: {exc}") from exc
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt not in (ckpt.FORMAT, ckpt.PACK_FORMAT):
        raise ckpt.CheckpointUnreadable(f"{path.name}: not a checkpoint of the built-in trainer")
    changed = changes(payload.get("settings") or {}, config, path.name)
    if fmt == ckpt.FORMAT:
        _retune(payload, config, lr_changed="lr" in changed)
    payload["settings"] = ckpt.fingerprint(config)
    ckpt.write(path, payload)
    return changed


def changes(parent: dict[str, Any], config: TrainConfig, name: str) -> dict[str, tuple[Any, Any]]:
    """The explorable settings in which ``config`` differs from a parent's fingerprint,
    as {name: (parent's, segment's)}; CheckpointUnreadable when any other one differs."""
    new = ckpt.fingerprint(config)
    names = set(parent) | set(new)
    changed = {k: (parent.get(k), new.get(k)) for k in names if parent.get(k) != new.get(k)}
    foreign = sorted(set(changed) - MAY_DIFFER)
    if foreign:
        raise ckpt.CheckpointUnreadable(
            f"{name}: the parent's settings differ in {', '.join(foreign)} "
            f"(a segment may change only {', '.join(EXPLORABLE_SETTINGS)})"
        )
    return {k: v for k, v in changed.items() if k != "seed"}


def _retune(payload: dict[str, Any], config: TrainConfig, lr_changed: bool) -> None:
    """The optimizer's (and, when the learning rate changed, the schedule's)
    hyperparameters of ``config`` in the saved states."""
    model = build_model(config)
    optimizer = make_optimizer(config, model)
    scheduler = make_scheduler(config, optimizer)
    fresh = optimizer.state_dict()["param_groups"]
    keep = () if lr_changed else ("lr", "initial_lr")
    for group, new in zip(payload["optimizer"]["param_groups"], fresh, strict=True):
        for key, value in new.items():
            if key != "params" and key not in keep:
                group[key] = value
    if lr_changed:  # a constant schedule (hpo.schedules checks it): its base is the new lr
        state = scheduler.state_dict()
        for key in ("last_epoch", "_step_count"):
            if key in payload["scheduler"]:
                state[key] = payload["scheduler"][key]
        payload["scheduler"] = state

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
    """Rewrite the solo checkpoint at ``path`` for ``config``; the settings it changed,
    as {name: (parent's, segment's)}. A pack member's checkpoint is left as it is."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise ckpt.CheckpointUnreadable(f"{path.name}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != ckpt.FORMAT:
        raise ckpt.CheckpointUnreadable(f"{path.name}: a PBT segment resumes solo checkpoints")
    old, new = payload.get("settings") or {}, ckpt.fingerprint(config)
    changed = {k: (old.get(k), new.get(k)) for k in set(old) | set(new) if old.get(k) != new.get(k)}
    foreign = sorted(set(changed) - MAY_DIFFER)
    if foreign:
        raise ckpt.CheckpointUnreadable(
            f"{path.name}: the parent's settings differ in {', '.join(foreign)} "
            f"(a segment may change only {', '.join(EXPLORABLE_SETTINGS)})"
        )
    _retune(payload, config, lr_changed="lr" in changed)
    payload["settings"] = new
    ckpt.write(path, payload)
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

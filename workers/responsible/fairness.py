"""Fairness for the reference trainer: a seeded skew, its mitigations, per-class metrics.

* :func:`skew` keeps ``keep_fraction`` of the training images of some classes, chosen by
  the imbalance's own seed (not the trial's): every trial of a study sees the same
  skewed subset, so the bias can be reproduced.
* ``class_balance: reweight`` weighs each example's loss by the inverse frequency of
  its class (normalised so the mean weight over the training split is 1);
  ``oversample`` draws each epoch's order with replacement, each class equally likely.
* :func:`class_metrics` reports accuracy per class, the worst class and the largest gap
  between classes with fairlearn's ``MetricFrame`` (the class as the group), in the
  documented group shape of :func:`hpo.responsible.group_metrics`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hpo.responsible import NUM_CLASSES, Imbalance, group_metrics
from workers.data import Split

EVAL_CHUNK = 10000


def skew(split: Split, imbalance: Imbalance) -> Split:
    """``split`` with only ``keep_fraction`` of the examples of ``imbalance.classes``."""
    generator = torch.Generator().manual_seed(imbalance.seed)
    labels = split.y.cpu()
    keep = torch.ones(len(labels), dtype=torch.bool)
    for cls in sorted(set(imbalance.classes)):
        members = (labels == cls).nonzero().squeeze(1)
        chosen = members[torch.randperm(len(members), generator=generator)]
        kept = max(1, round(len(members) * imbalance.keep_fraction)) if len(members) else 0
        keep[chosen[kept:]] = False
    index = keep.nonzero().squeeze(1).to(split.y.device)
    return Split(split.x.index_select(0, index), split.y.index_select(0, index))


def class_counts(y: torch.Tensor) -> torch.Tensor:
    """Examples per class (length NUM_CLASSES, float)."""
    return torch.bincount(y, minlength=NUM_CLASSES).float()


def class_weights(y: torch.Tensor) -> torch.Tensor:
    """Per-class loss weights for ``reweight``: inverse frequency, mean 1 over ``y``."""
    counts = class_counts(y)
    weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    return weights / (weights[y].mean())


def weighted_loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of per-example weighted cross-entropy (a mean over examples, as DP-SGD needs)."""
    return (F.cross_entropy(logits, y, reduction="none") * weights[y]).mean()


def oversampled_order(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One epoch's order for ``oversample``: N draws with replacement, classes equally
    likely (each example with probability 1 / (classes present x its class count))."""
    counts = class_counts(y.cpu())
    per_example = (1.0 / counts.clamp(min=1))[y.cpu()]
    order = torch.multinomial(per_example, len(y), replacement=True, generator=generator)
    return order.to(y.device)


@torch.inference_mode()
def predictions(model: nn.Module, split: Split) -> torch.Tensor:
    """The model's predicted class for every example of ``split`` (eval mode)."""
    model.eval()
    chunks = [
        model(split.x[start : start + EVAL_CHUNK]).argmax(dim=1)
        for start in range(0, len(split), EVAL_CHUNK)
    ]
    return torch.cat(chunks)


def per_class_accuracy(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Accuracy per class with fairlearn's MetricFrame (the true class is the group)."""
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score

    frame = MetricFrame(
        metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=y_true
    )
    return {str(int(group)): float(value) for group, value in frame.by_group.items()}


def class_metrics(model: nn.Module, val_set: Split, test_set: Split) -> dict[str, float]:
    """``test_accuracy[c]`` per class, ``test_accuracy_worst``/``_gap`` and the
    validation split's ``val_accuracy_worst``/``_gap`` (hpo.responsible.CLASS_METRICS)."""
    out: dict[str, float] = {}
    for family, split in (("val_accuracy", val_set), ("test_accuracy", test_set)):
        y_pred = predictions(model, split).cpu().numpy()
        metrics = group_metrics(family, per_class_accuracy(split.y.cpu().numpy(), y_pred))
        if family == "val_accuracy":  # the per-class values of the test split only
            metrics = {k: v for k, v in metrics.items() if not k.endswith("]")}
        out.update(metrics)
    return out

"""The composition: factorize and/or prune, fine-tune, quantize, measure before and after.

Order, and why:

1. low_rank first: the SVD of a dense trained weight is the best rank-r
   approximation; factorizing a pruned matrix would give dense factors and
   throw the sparsity away.
2. prune (global magnitude, over every Linear, factors included) to the exact
   target; with ``prune_schedule: gradual`` the trainer has already pruned on
   the PruneSchedule during training, and this only tops up (usually nothing).
3. fine-tune ``finetune_epochs`` through the trainer's callback; the pruning
   masks keep pruned weights at zero meanwhile.
4. make the masks permanent, fold BatchNorm, quantize: the shipped model.
5. measure the dense (folded, float32) model before and the shipped one after.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from workers.compression.lowrank import low_rank
from workers.compression.metrics import ModelMetrics, measure
from workers.compression.pruning import make_permanent, prune_global, sparsity
from workers.compression.quantize import quantize
from workers.compression.settings import CompressionSettings

# finetune(model, epochs): train ``model`` in place for ``epochs`` epochs. The trainer
# builds its optimizer over model.parameters() (pruned layers hold ``weight_orig``).
Finetune = Callable[[nn.Module, int], None]
# evaluate(model) -> metrics such as {"val_accuracy": ..., "test_accuracy": ...}
Evaluate = Callable[[nn.Module], Mapping[str, float]]


@dataclass
class CompressionReport:
    """What was done to the model and what it cost, before and after."""

    settings: CompressionSettings
    before: ModelMetrics  # the uncompressed model (BN folded, float32)
    after: ModelMetrics  # the model as shipped
    sparsity: float  # fraction of zeros among the Linear weights after fine-tuning
    finetune_epochs_run: int
    accuracy_before: dict[str, float] = field(default_factory=dict)
    accuracy_after: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for a trial's final metrics: the shipped model's, and dense_* before."""
        after = {k: v for k, v in self.after.to_dict().items() if not isinstance(v, str)}
        before = {k: v for k, v in self.before.to_dict().items() if not isinstance(v, str)}
        flat: dict[str, float] = {**after, **{f"dense_{k}": v for k, v in before.items()}}
        flat["sparsity"] = self.sparsity
        flat.update(self.accuracy_after)
        flat.update({f"dense_{k}": v for k, v in self.accuracy_before.items()})
        return flat

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compress(
    model: nn.Sequential,
    settings: CompressionSettings | Mapping[str, Any],
    finetune: Finetune | None = None,
    evaluate: Evaluate | None = None,
    latency_repeats: int = 20,
) -> tuple[nn.Module, CompressionReport]:
    """Compress a trained reference MLP; returns (shipped model, report).

    ``model`` is not modified (the work happens on a copy). ``finetune`` is
    required when ``finetune_epochs`` > 0 and pruning or factorization changed the
    weights; with nothing changed there is nothing to recover and it is not called.
    ``evaluate``, when given, scores the dense and the shipped model.
    """
    if not isinstance(settings, CompressionSettings):
        settings = CompressionSettings.from_settings(settings)
    if settings.finetune_epochs and settings.changes_weights and finetune is None:
        raise TypeError("compress: finetune_epochs > 0 needs a finetune callback")
    dense = quantize(model, "none")
    before = measure(dense, latency_repeats)
    work = copy.deepcopy(model)
    if settings.low_rank is not None:
        low_rank(work, settings.low_rank)
    if settings.prune_amount > 0:
        prune_global(work, settings.prune_amount)
    epochs = settings.finetune_epochs if settings.changes_weights else 0
    if epochs and finetune is not None:
        finetune(work, epochs)
    make_permanent(work)
    shipped = quantize(work, settings.quantize)
    report = CompressionReport(
        settings, before, measure(shipped, latency_repeats), sparsity(work), epochs
    )
    if evaluate is not None:
        report.accuracy_before = dict(evaluate(dense))
        report.accuracy_after = dict(evaluate(shipped))
    return shipped, report

"""Torch probes behind the per-trial findings (hpo.findings): gradient-norm
statistics per epoch, and the fraction of dead ReLU units.

Both are cheap and stay on the device until the one host read per epoch, so on
CUDA they add no synchronisation to the training step. The metric names they
produce are the ones ``hpo.findings`` reads:

    grad_norm        mean of the sampled global gradient L2 norms of the epoch
    grad_norm_max    largest sampled global norm of the epoch
    grad_norm_min    smallest sampled global norm of the epoch
    grad_norm_first  mean norm of the first layer's gradient (the layer farthest
                     from the loss: where vanishing gradients show)
    dead_fraction    fraction of hidden ReLU units that output 0 for every
                     validation image

How the reference trainer (workers/trainer.py) calls them::

    grads = GradNormStats(model)               # once per trial, after build_model
    # in Loop.step, on the steps it already samples (every GRAD_NORM_EVERY-th),
    # after backward() and before optimizer.step():
    grads.observe()                            # replaces grad_norm_sum / grad_norms
    # in the epoch's metrics (workers.outcome.epoch_metrics), beside the loss read:
    metrics.update(grads.read())               # one host read; starts the next epoch
    # around the per-epoch validation pass (no extra forward pass):
    with DeadUnitProbe(model) as dead:
        val = evaluate(model, val_set)
    metrics["dead_fraction"] = dead.fraction()

Anything that owns its optimizer can instead sample every N-th step with
``grads.attach(optimizer, every=N)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class GradNormStats:
    """Mean / max / min of sampled global gradient norms over one epoch, on the device.

    ``observe`` adds the norm of the current gradients (one fused pass over them,
    no host sync); ``read`` returns the epoch's figures with a single host read and
    starts a new epoch. An epoch in which nothing was observed reads as ``{}``, so
    the checks skip it instead of seeing a zero norm.
    """

    def __init__(self, model: nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.first = _first_layer_params(model)
        self.device = self.params[0].device if self.params else torch.device("cpu")
        self._reset()

    def _reset(self) -> None:
        zero = torch.zeros((), device=self.device)
        self._sum, self._first_sum = zero, zero.clone()
        self._max = torch.full((), float("-inf"), device=self.device)
        self._min = torch.full((), float("inf"), device=self.device)
        self.count = 0

    def observe(self) -> None:
        """Record the global norm of the gradients as they are now (after backward)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads, foreach=True).to(self.device)
        self._sum = self._sum + norm
        self._max = torch.maximum(self._max, norm)
        self._min = torch.minimum(self._min, norm)
        first = [p.grad for p in self.first if p.grad is not None]
        if first:
            self._first_sum = self._first_sum + torch.nn.utils.get_total_norm(first).to(norm)
        self.count += 1

    def state(self) -> dict[str, Any]:
        """The epoch's running sums (a mid-epoch checkpoint)."""
        sums = {"sum": self._sum, "first_sum": self._first_sum, "max": self._max, "min": self._min}
        return {**{k: v.detach().cpu() for k, v in sums.items()}, "count": self.count}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue an epoch from :meth:`state`."""
        self._sum, self._first_sum = (
            state["sum"].to(self.device),
            state["first_sum"].to(self.device),
        )
        self._max, self._min = state["max"].to(self.device), state["min"].to(self.device)
        self.count = int(state["count"])

    def read(self) -> dict[str, float]:
        """The epoch's grad_norm, grad_norm_max, grad_norm_min, grad_norm_first; then reset."""
        if self.count == 0:
            return {}
        total, first, high, low = torch.stack(
            [self._sum, self._first_sum, self._max, self._min]
        ).tolist()
        count = self.count
        self._reset()
        return {
            "grad_norm": total / count,
            "grad_norm_max": high,
            "grad_norm_min": low,
            "grad_norm_first": first / count,
        }

    def attach(self, optimizer: torch.optim.Optimizer, every: int = 1) -> RemovableHandle:
        """Observe before every ``every``-th ``optimizer.step()`` (the first included)."""
        steps = [0]

        def before_step(opt: Any, args: Any, kwargs: Any) -> None:
            if steps[0] % every == 0:
                self.observe()
            steps[0] += 1

        return optimizer.register_step_pre_hook(before_step)


def _first_layer_params(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the first module (in registration order) that owns any directly."""
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            return own
    return []


class DeadUnitProbe:
    """Which ReLU units fire at least once while the model runs inside ``with``.

    Forward hooks on every ``nn.ReLU`` of the model OR together, per unit, "was
    this output > 0 for any sample" (on the device, across any number of
    batches). Use it around an evaluation pass: in eval mode dropout is off, so
    a unit counts as dead only when its pre-activation is <= 0 for every image.
    Features of a unit are all dimensions after the batch dimension.
    """

    def __init__(self, model: nn.Module) -> None:
        self.relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        self.active: list[torch.Tensor | None] = [None] * len(self.relus)
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> DeadUnitProbe:
        for i, relu in enumerate(self.relus):
            self._handles.append(relu.register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, index: int) -> Any:
        def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            fired = (output.detach() > 0).flatten(1).any(dim=0)
            seen = self.active[index]
            self.active[index] = fired if seen is None else seen | fired

        return record

    def fraction(self) -> float | None:
        """Dead units / hidden units over every ReLU layer; None if nothing ran."""
        seen = [a for a in self.active if a is not None]
        if not seen:
            return None
        fired = torch.cat(seen)
        return 1.0 - fired.float().mean().item()  # the one host read

    def per_layer(self) -> list[float]:
        """Dead fraction of each ReLU layer that ran, in forward order."""
        seen = [a for a in self.active if a is not None]
        if not seen:
            return []
        return (1.0 - torch.stack([a.float().mean() for a in seen])).tolist()

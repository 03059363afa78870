"""DP-SGD for the reference trainer, on Opacus (``privacy`` settings, hpo.responsible).

Opacus does the privacy work: its per-sample gradient modules clip each sample's gradient
to ``max_grad_norm`` (``grad_sample_mode: ghost``, the default, is Opacus's ghost clipping:
exact per-sample norms without materialising per-sample gradients, two backward passes
per step; ``hooks`` materialises them), its DP optimizers add Gaussian noise of
``noise_multiplier`` x that norm, and its accountants (RDP by default,
PRV on request) turn (noise, sample rate, steps) into epsilon at ``delta``. This module
only draws the Poisson-sampled batches (each training example joins each step with
probability q = 1 / steps per epoch, as Opacus's DPDataLoader does) on the trial's own
generator, and asks the accountant after every epoch.

The epoch count of a run is ``steps_per_epoch = ceil(N / batch_size)`` steps, each with
expected batch ``batch_size``. ``target_epsilon`` asks Opacus's ``get_noise_multiplier``
for the noise that spends that budget over ``epochs``. A resumed run recomputes epsilon
from the steps it has taken (the noise and rate never change within a run), so the value
does not depend on where it was interrupted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hpo.responsible import PrivacySettings


@dataclass
class PrivateTraining:
    """One trial's DP-SGD: the wrapped model and optimizer and the accountant's inputs."""

    settings: PrivacySettings
    noise_multiplier: float
    sample_rate: float
    steps_per_epoch: int
    forward: nn.Module  # the per-sample gradient module around the model
    optimizer: torch.optim.Optimizer  # the DP optimizer around the trial's optimizer
    criterion: Any  # the loss: ghost clipping's wrapper (its backward runs both passes)
    seed: int = 0

    def epsilon(self, steps: int) -> float:
        """The accountant's epsilon after ``steps`` DP-SGD steps (at the settings' delta)."""
        return epsilon_after(self.settings, self.noise_multiplier, self.sample_rate, steps)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None) -> Any:
        """The batch's loss as DP-SGD needs it (a mean over the batch's samples)."""
        if self.criterion is None:  # hooks: any mean over samples
            per_sample = F.cross_entropy(logits, y, reduction="none")
            return (per_sample * weights[y] if weights is not None else per_sample).mean()
        self.criterion.criterion.weight = weights  # ghost: the per-sample loss, weighted
        return self.criterion(logits, y)

    def batches(self, n: int, epoch: int, device: torch.device) -> Iterator[torch.Tensor]:
        """Epoch ``epoch``'s Poisson-sampled batches: index tensors of varying length, each
        example in each with probability ``sample_rate`` (a generator per trial and epoch)."""
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        for _ in range(self.steps_per_epoch):
            keep = torch.rand(n, generator=generator) < self.sample_rate
            yield keep.nonzero().squeeze(1).to(device)


def sample_rate_of(n: int, batch_size: int) -> tuple[float, int]:
    """(q, steps per epoch) for ``n`` training examples and an expected ``batch_size``."""
    steps = max(1, math.ceil(n / batch_size))
    return 1.0 / steps, steps


def epsilon_after(settings: PrivacySettings, noise: float, sample_rate: float, steps: int) -> float:
    """Epsilon of ``steps`` Poisson-subsampled Gaussian steps, from Opacus's accountant."""
    from opacus.accountants import create_accountant

    if steps == 0:
        return 0.0
    if noise == 0:
        return math.inf
    accountant = create_accountant(settings.accountant)
    accountant.history = [(noise, sample_rate, steps)]
    return float(accountant.get_epsilon(delta=settings.delta))


def noise_for(settings: PrivacySettings, sample_rate: float, epochs: int) -> float:
    """The noise multiplier: the settings' own, or Opacus's for ``target_epsilon``."""
    if settings.noise_multiplier is not None:
        return settings.noise_multiplier
    from opacus.accountants.utils import get_noise_multiplier

    assert settings.target_epsilon is not None  # the schema allows exactly one of the two
    return float(
        get_noise_multiplier(
            target_epsilon=settings.target_epsilon,
            target_delta=settings.delta,
            sample_rate=sample_rate,
            epochs=epochs,
            accountant=settings.accountant,
        )
    )


def make_private(
    settings: PrivacySettings,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    n: int,
    batch_size: int,
    epochs: int,
    seed: int,
) -> PrivateTraining:
    """Wrap ``model`` and ``optimizer`` for DP-SGD over ``n`` training examples."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:  # hpo.settings refuses batch_norm already; this is Opacus's own word on it
        raise ValueError(f"the model cannot train under DP-SGD: {errors[0]}")
    sample_rate, steps = sample_rate_of(n, batch_size)
    noise = noise_for(settings, sample_rate, epochs)
    device = next(model.parameters()).device
    noise_generator = torch.Generator(device=device).manual_seed(seed)
    dp = dict(
        noise_multiplier=noise,
        max_grad_norm=settings.max_grad_norm,
        expected_batch_size=batch_size,
        loss_reduction="mean",
        generator=noise_generator,
    )
    if settings.grad_sample_mode == "hooks":
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        forward = GradSampleModule(model, loss_reduction="mean")
        private, criterion = DPOptimizer(optimizer, **dp), None
    else:
        from opacus.grad_sample import GradSampleModuleFastGradientClipping
        from opacus.optimizers import DPOptimizerFastGradientClipping
        from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

        forward = GradSampleModuleFastGradientClipping(
            model, max_grad_norm=settings.max_grad_norm, use_ghost_clipping=True
        )
        private = DPOptimizerFastGradientClipping(optimizer, **dp)
        criterion = DPLossFastGradientClipping(forward, private, nn.CrossEntropyLoss(), "mean")
    return PrivateTraining(settings, noise, sample_rate, steps, forward, private, criterion, seed)

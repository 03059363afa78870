"""Privacy, fairness and robustness in the reference trainer (settings: hpo.responsible).

:func:`plan` reads a trial's settings once and returns what the training loop must do
differently, or None when the settings ask for none of it (then the trainer runs
exactly as before). The loop asks the plan for its training split (skewed), its batches
(Poisson-sampled under DP-SGD, oversampled), its loss (reweighted), its inputs
(adversarial training), and after each epoch and at the end for extra metrics
(``epsilon``; per-class accuracy; ``adv_accuracy``). Opacus, fairlearn and ART are
imported only by trials that use them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hpo.responsible import ADV_ACCURACY, EPSILON, VAL_ADV_ACCURACY, solo_reason
from hpo.settings import TrainConfig
from workers.data import Split
from workers.responsible import fairness
from workers.responsible.privacy import PrivateTraining, make_private
from workers.responsible.robustness import Adversary, adversarial_accuracy

log = logging.getLogger("workers.responsible")


def wants_class_metrics(config: TrainConfig) -> bool:
    """``class_metrics``: auto computes them for a skewed or rebalanced training split."""
    if config.class_metrics != "auto":
        return bool(config.class_metrics)
    return config.data.imbalance is not None or config.class_balance != "none"


def is_plain(config: TrainConfig) -> bool:
    """Whether the settings ask for none of privacy, fairness or robustness."""
    return (
        config.privacy is None
        and config.data.imbalance is None
        and config.class_balance == "none"
        and config.robustness is None
        and config.adversarial_training is None
        and not wants_class_metrics(config)
    )


@dataclass
class Plan:
    """What one trial's training loop does differently (see the module's docstring)."""

    config: TrainConfig
    train_set: Split
    optimizer: torch.optim.Optimizer
    private: PrivateTraining | None = None
    weights: torch.Tensor | None = None  # reweight: per-class loss weights
    adversary: Adversary | None = None

    @property
    def forward(self) -> nn.Module | None:
        """The module the loop calls in training (DP: the per-sample-gradient wrapper)."""
        return self.private.forward if self.private is not None else None

    def batches(
        self, order: torch.Tensor, size: int, skip: int, epoch: int
    ) -> Iterator[torch.Tensor]:
        """The epoch's batches after the first ``skip``: DP-SGD's Poisson-sampled ones
        (drawn from the trial's seed and the epoch: a resumed epoch draws the same), or
        consecutive slices of ``order``."""
        if self.private is not None:
            batches = self.private.batches(len(self.train_set), epoch, order.device)
            for number, idx in enumerate(batches):
                if number >= skip:
                    yield idx
            return
        for start in range(skip * size, len(order), size):
            yield order[start : start + size]

    def order(self, shuffle: torch.Generator) -> torch.Tensor | None:
        """The epoch's order when it is not a plain permutation (oversample), else None."""
        if self.config.class_balance == "oversample":
            return fairness.oversampled_order(self.train_set.y, shuffle)
        return None

    def inputs(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch the model trains on (adversarial training: partly attacked)."""
        return self.adversary.perturb(model, x, y) if self.adversary is not None else x

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch's training loss (reweight: per-class weights; DP-SGD: Opacus's)."""
        if self.private is not None:
            return self.private.loss(logits, y, self.weights)  # type: ignore[no-any-return]
        if self.weights is not None:
            return fairness.weighted_loss(logits, y, self.weights)
        return F.cross_entropy(logits, y)

    def epoch_metrics(self, steps: int) -> dict[str, float]:
        """Extra per-epoch metrics: DP-SGD's epsilon so far."""
        return {EPSILON: self.private.epsilon(steps)} if self.private is not None else {}

    def final_metrics(
        self, model: nn.Module, val_set: Split, test_set: Split, steps: int
    ) -> dict[str, float]:
        """Extra final metrics: epsilon, per-class accuracy, adversarial accuracy."""
        out = self.epoch_metrics(steps)
        if self.private is not None:
            out["noise_multiplier"] = self.private.noise_multiplier
        if wants_class_metrics(self.config):
            out.update(fairness.class_metrics(model, val_set, test_set))
        if self.config.robustness is not None:
            attack = self.config.robustness.eval
            out[VAL_ADV_ACCURACY] = adversarial_accuracy(model, val_set, attack)
            out[ADV_ACCURACY] = adversarial_accuracy(model, test_set, attack)
        return out


def plan(
    config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, train_set: Split
) -> Plan | None:
    """The trial's plan, or None when its settings ask for nothing of this package."""
    if is_plain(config):
        return None
    if config.data.imbalance is not None:
        train_set = fairness.skew(train_set, config.data.imbalance)
    out = Plan(config, train_set, optimizer)
    if config.class_balance == "reweight":
        out.weights = fairness.class_weights(train_set.y)
    if config.privacy is not None:
        out.private = make_private(
            config.privacy,
            model,
            optimizer,
            len(train_set),
            config.batch_size,
            config.epochs,
            config.seed,
        )
        out.optimizer = out.private.optimizer
        log.info(
            "DP-SGD: noise_multiplier %.4g, max_grad_norm %g, sample rate %.4g, %d steps per "
            "epoch; %s",
            out.private.noise_multiplier,
            config.privacy.max_grad_norm,
            out.private.sample_rate,
            out.private.steps_per_epoch,
            solo_reason(config),
        )
    if config.adversarial_training is not None:
        out.adversary = Adversary.create(model, config.adversarial_training, config.seed)
    return out

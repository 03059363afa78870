"""Robustness for the reference trainer: FGSM/PGD attacks from the Adversarial
Robustness Toolbox (ART, ``adversarial-robustness-toolbox``; MIT licence, an LF AI & Data
project with regular releases), for evaluation and for adversarial training.

Why ART and not torchattacks: torchattacks 3.5.1 (its latest, 2023) pins ``requests~=2.25``
and would downgrade the service's HTTP stack; ART installs beside it. ART works on
NumPy arrays, so a batch crosses to the host and back once per attack; on the
reference MLP that is cheap next to the attack's forward/backward passes.

Epsilons are in pixel units (images in [0, 1]), as the literature states them: the
trainer's inputs are normalised, so the attack sees the images unnormalised, with
ART's ``preprocessing=(MEAN, STD)`` doing the normalisation inside the classifier and
``clip_values=(0, 1)`` keeping the adversarial images valid. PGD takes ``steps`` steps of
2.5 x epsilon / steps from a random start (Madry et al.'s recipe); FGSM is one step of
epsilon. ART draws PGD's random start from NumPy's global generator, which the
trainer seeds with the trial's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from hpo.responsible import AdversarialTraining, AttackSettings
from workers.data import MEAN, STD, Split

ATTACK_BATCH = 2000  # examples per ART call when evaluating


def classifier(model: nn.Module) -> Any:
    """ART's view of ``model``: inputs in [0, 1], normalised inside."""
    from art.estimators.classification import PyTorchClassifier

    device = next(model.parameters()).device
    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(28 * 28,),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        preprocessing=(MEAN, STD),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


def attack_of(estimator: Any, settings: AttackSettings, batch_size: int = ATTACK_BATCH) -> Any:
    """ART's FGSM or PGD (L-infinity) at ``settings.epsilon``."""
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

    if settings.attack == "fgsm":
        return FastGradientMethod(
            estimator, norm=np.inf, eps=settings.epsilon, batch_size=batch_size
        )
    return ProjectedGradientDescent(
        estimator,
        norm=np.inf,
        eps=settings.epsilon,
        eps_step=2.5 * settings.epsilon / settings.steps,
        max_iter=settings.steps,
        num_random_init=1,
        batch_size=batch_size,
        verbose=False,
    )


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """Normalised inputs -> images in [0, 1] (float32 NumPy)."""
    return (x.detach() * STD + MEAN).clamp(0, 1).cpu().numpy().astype(np.float32)


def from_pixels(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """Images in [0, 1] -> the trainer's normalised inputs on ``device``."""
    return ((torch.from_numpy(images) - MEAN) / STD).to(device)


@torch.inference_mode()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Plain accuracy of ``model`` (eval mode) on normalised inputs."""
    model.eval()
    return float((model(x).argmax(dim=1) == y).float().mean().item())


def adversarial_accuracy(model: nn.Module, split: Split, settings: AttackSettings) -> float:
    """Accuracy of ``model`` on ``split`` attacked with ``settings`` (eval mode)."""
    model.eval()
    attack = attack_of(classifier(model), settings)
    y = split.y.cpu().numpy()
    adversarial = attack.generate(x=to_pixels(split.x), y=np.eye(10, dtype=np.float32)[y])
    return accuracy(model, from_pixels(adversarial, split.x.device), split.y)


@dataclass
class Adversary:
    """Adversarial training: replace ``ratio`` of each batch with attacked examples."""

    settings: AdversarialTraining
    attack: Any

    @classmethod
    def create(cls, model: nn.Module, settings: AdversarialTraining, seed: int) -> Adversary:
        np.random.seed(seed % 2**32)  # ART's random start (PGD) draws from NumPy's generator
        attack = attack_of(
            classifier(model),
            AttackSettings(
                attack="fgsm" if settings.steps == 1 else "pgd",
                epsilon=settings.epsilon,
                steps=settings.steps,
            ),
            batch_size=4096,
        )
        return cls(settings, attack)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch with its first ``ratio`` share attacked (the model is left in train
        mode; the attack itself runs in eval mode, as ART does)."""
        count = round(len(y) * self.settings.ratio)
        if count == 0:
            return x
        labels = np.eye(10, dtype=np.float32)[y[:count].cpu().numpy()]
        attacked = self.attack.generate(x=to_pixels(x[:count]), y=labels)
        model.train()
        return torch.cat([from_pixels(attacked, x.device), x[count:]])

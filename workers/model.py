"""The reference model: the seed's MLP 784 -> 512 (ReLU) -> 10, generalised.

``hidden`` and ``depth`` set the width and number of hidden layers (model
selection); ``batch_norm`` and ``dropout`` add the usual layers. With the
defaults the parameters, their order and their initialisation (PyTorch's
default for nn.Linear) are the seed's, so the same seed gives the same start.

Dropout masks come from a per-trial generator (:func:`dropout_generator`), not
from torch's global RNG: a fused pack (workers.packs) trains many trials in one
process and must draw each trial's masks exactly as that trial alone would.
"""

from __future__ import annotations

import torch
from torch import nn

from hpo.settings import TrainConfig

IN_FEATURES = 28 * 28
N_CLASSES = 10
DROPOUT_SEED_OFFSET = 0x5EED_D809  # dropout's stream must differ from the batch order's (same seed)


def build_model(config: TrainConfig) -> nn.Sequential:
    """Linear -> [BatchNorm1d] -> ReLU -> [Dropout], ``depth`` times, then Linear to 10.

    Inputs are already flattened (N x 784), so there is no Flatten layer.
    """
    layers: list[nn.Module] = []
    width = IN_FEATURES
    for _ in range(config.depth):
        # No bias before BatchNorm: its shift would be cancelled by the mean subtraction.
        layers.append(nn.Linear(width, config.hidden, bias=not config.batch_norm))
        if config.batch_norm:
            layers.append(nn.BatchNorm1d(config.hidden))
        layers.append(nn.ReLU())
        if config.dropout > 0:
            layers.append(Dropout(config.dropout))
        width = config.hidden
    layers.append(nn.Linear(width, N_CLASSES))
    return nn.Sequential(*layers)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def linear_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight matrices of the Linear layers: what the L1 penalty acts on."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


class Dropout(nn.Dropout):
    """nn.Dropout that draws its masks from ``generator`` when one is set.

    Same expected behaviour as F.dropout (keep with probability 1 - p, scale the
    kept values by 1 / (1 - p), identity in eval mode); without a generator it
    is exactly nn.Dropout (global RNG).
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__(p)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.generator is None or not self.training or self.p == 0:
            return super().forward(x)
        return x * dropout_noise(torch.empty_like(x), self.p, self.generator)


def dropout_noise(out: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Fill ``out`` with F.dropout's scaled mask, bernoulli(1 - p) / (1 - p), from ``generator``.

    The one call both the solo trainer and a pack use, so the same generator state
    gives the same mask bit for bit.
    """
    if p >= 1:  # F.dropout's p=1: everything dropped (and no division by zero)
        return out.zero_()
    return out.bernoulli_(1 - p, generator=generator).div_(1 - p)


def dropout_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The trial's dropout-mask generator, on the device the masks are drawn on."""
    return torch.Generator(device=device).manual_seed((seed + DROPOUT_SEED_OFFSET) % 2**64)


def set_dropout_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Make every :class:`Dropout` of ``model`` draw from ``generator``."""
    for module in model.modules():
        if isinstance(module, Dropout):
            module.generator = generator

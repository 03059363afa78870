"""The reference model: the seed's MLP 784 -> 512 (ReLU) -> 10, generalised.

``hidden`` and ``depth`` set the width and number of hidden layers (model
selection); ``batch_norm`` and ``dropout`` add the usual layers. With the
defaults the parameters, their order and their initialisation (PyTorch's
default for nn.Linear) are the seed's, so the same seed gives the same start.
"""

from __future__ import annotations

from torch import nn

from workers.settings import TrainConfig

IN_FEATURES = 28 * 28
N_CLASSES = 10


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
            layers.append(nn.Dropout(config.dropout))
        width = config.hidden
    layers.append(nn.Linear(width, N_CLASSES))
    return nn.Sequential(*layers)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def linear_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight matrices of the Linear layers: what the L1 penalty acts on."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]

"""Low-rank factorization of the hidden layers by truncated SVD.

A hidden Linear with weight W (out x in) becomes two Linears: V = the top
``rank`` right singular vectors (rank x in, no bias), then U * S (out x rank,
with the original bias). By Eckart-Young that product is the best rank-r
approximation of W in the Frobenius norm, and the layer costs
rank * (in + out) weights instead of in * out.

Which layers: every Linear that produces a hidden layer (the 784 -> hidden
input layer and any hidden -> hidden ones), i.e. all but the output layer. The
output layer (hidden -> 10) stays dense: its rank is at most 10 already and it
holds ~1 % of the weights, so factorizing it would cap every rank at 10 for
nothing. With the reference depth 1 the input layer is the only hidden layer,
and it holds 99 % of the weights, so it is the one worth factorizing.

The two factors are inserted into the model's nn.Sequential side by side (not
nested), so a BatchNorm after the layer still directly follows a Linear and can
be folded into U * S later.
"""

from __future__ import annotations

import torch
from torch import nn

from workers.compression.settings import CompressionSettings, CompressionSettingsError


def hidden_linears(model: nn.Sequential) -> list[int]:
    """Indices in ``model`` of the Linears that produce hidden layers (all but the last)."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"low_rank needs the reference nn.Sequential MLP, got {type(model)}")
    linears = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    return linears[:-1]


def max_rank(model: nn.Sequential) -> int:
    """The largest rank ``low_rank`` accepts: the smallest dimension of a hidden layer."""
    hidden = [_linear(model, i) for i in hidden_linears(model)]
    dims = [min(layer.in_features, layer.out_features) for layer in hidden]
    return min(dims) if dims else 0


def _linear(model: nn.Sequential, index: int) -> nn.Linear:
    layer = model[index]
    assert isinstance(layer, nn.Linear), f"layer {index} is {type(layer).__name__}, not Linear"
    return layer


def factorize(linear: nn.Linear, rank: int) -> tuple[nn.Linear, nn.Linear]:
    """(V, U*S): two Linears whose composition is the rank-``rank`` truncation of ``linear``.

    Reads ``linear.weight`` as the forward pass sees it (masked, if pruned).
    """
    weight = linear.weight.detach()
    # float32 SVD even for a half-precision weight: its accuracy is what sets the error.
    u, s, vh = torch.linalg.svd(weight.float(), full_matrices=False)
    kind = {"device": weight.device, "dtype": weight.dtype}
    first = nn.Linear(linear.in_features, rank, bias=False, **kind)
    second = nn.Linear(rank, linear.out_features, bias=linear.bias is not None, **kind)
    with torch.no_grad():
        first.weight.copy_(vh[:rank])
        second.weight.copy_(u[:, :rank] * s[:rank])
        if linear.bias is not None:
            second.bias.copy_(linear.bias.detach())
    return first, second


def low_rank(model: nn.Sequential, rank: int) -> nn.Sequential:
    """Replace each hidden Linear of ``model`` by its rank-``rank`` factorization, in place.

    Raises CompressionSettingsError (a ValueError) naming ``low_rank`` when the rank
    exceeds a hidden layer's smallest dimension (no such truncation exists). A rank
    at or above in*out/(in+out) is allowed but makes the layer larger, not smaller:
    the measured bytes say so.
    """
    CompressionSettings(low_rank=rank)
    limit = max_rank(model)
    if rank > limit:
        raise CompressionSettingsError(
            "low_rank",
            f"low_rank must be <= {limit} (the smallest hidden layer dimension), got {rank}",
        )
    layers: list[nn.Module] = []
    targets = set(hidden_linears(model))
    for i, module in enumerate(model):
        layers.extend(factorize(_linear(model, i), rank) if i in targets else (module,))
    # Rebuild in place so callers holding ``model`` see the factorized layers.
    for name in list(model._modules):
        del model._modules[name]
    for i, module in enumerate(layers):
        model.add_module(str(i), module)
    return model

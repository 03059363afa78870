"""BatchNorm folding and the last step before shipping: int8, fp16 or bf16 weights.

BatchNorm is folded into the Linear before it (``fuse_linear_bn_eval``: in eval
mode BN is an affine map per unit, so W' = W * gamma / sqrt(var + eps) row by
row, with the shift moved into the bias). The shipped model then has no BN to
store or run, and row scaling keeps every pruned zero a zero, so folding after
pruning loses no sparsity. Dropout (the identity at inference) is dropped too.

int8 is torch's dynamic quantization (``torch.ao.quantization.quantize_dynamic``):
weights stored as int8 with one scale per output row (symmetric, so a zero
weight stays exactly 0 and sparsity survives), activations quantized on the fly
per batch. Per row rather than per tensor because folded BatchNorm rescales each
row differently; on the reference MLP the two measured the same (max logit
error ~0.12 either way) and per row costs 5 bytes a row. Its kernels (fbgemm /
qnnpack) run on the CPU only, so an int8 model always lives on the CPU (a model
trained on a GPU is shipped, timed and evaluated there). torch 2.14 marks torch.ao.quantization as
deprecated in favour of the separate torchao package (``quantize_`` with
``Int8DynamicActivationInt8WeightConfig``); it still works and needs no extra
dependency, so it is used here with the deprecation warnings silenced locally.

fp16 / bf16: the weights are cast and the forward pass runs in that dtype; the
:class:`Shipped` wrapper casts the float32 inputs in and the logits back out.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, cast

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.nn.utils.fusion import fuse_linear_bn_eval

from workers.compression.settings import CompressionSettings

HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Shipped(nn.Module):
    """A compressed model plus the dtype and device its inputs must have.

    Takes float32 inputs on any device, returns float32 logits on the input's
    device, so the trainer's evaluation code needs no change. The casts are
    no-ops when the input already matches (as in the latency measurement).
    Do not ``.to()`` a Shipped model: ``device`` would not follow; quantize again.
    """

    def __init__(self, inner: nn.Module, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype
        self.device = torch.device(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x.to(self.device, self.dtype))
        return out.to(x.device, torch.float32)


def fold_batchnorm(model: nn.Sequential) -> nn.Sequential:
    """A copy of ``model`` in eval mode with each BatchNorm1d folded into the Linear before it.

    The Linears must carry no pruning hooks (``make_permanent`` first): the fold
    writes new weights. Dropout layers are left out of the copy.
    """
    model = copy.deepcopy(model).eval()
    layers: list[nn.Module] = []
    for module in model:
        if isinstance(module, nn.BatchNorm1d):
            previous = layers[-1] if layers else None
            if not isinstance(previous, nn.Linear):
                raise TypeError("fold_batchnorm: a BatchNorm1d must directly follow a Linear")
            layers[-1] = fuse_linear_bn_eval(previous, module)
        elif not isinstance(module, nn.Dropout):
            layers.append(module)
    return nn.Sequential(*layers).eval()


def quantize(model: nn.Sequential, mode: str) -> nn.Module:
    """The shipped form of ``model`` (BN folded, eval mode); ``model`` is not changed.

    none: the folded float32 model. int8: dynamic int8 Linears on the CPU, wrapped
    in :class:`Shipped`. fp16 / bf16: weights cast, wrapped in :class:`Shipped`.
    """
    CompressionSettings(quantize=mode)  # type: ignore[arg-type]
    folded = fold_batchnorm(model)
    device = model_device(folded)
    if mode == "none":
        return folded
    if mode == "int8":
        return Shipped(_dynamic_int8(folded.cpu()), torch.float32, torch.device("cpu")).eval()
    return Shipped(folded.to(HALF_DTYPES[mode]), HALF_DTYPES[mode], device).eval()


def _dynamic_int8(model: nn.Module) -> nn.Module:
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        # Deprecation notices for torch.ao.quantization and quantize_per_tensor (see above).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear: qconfig}, inplace=False)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` runs: a Shipped model's device, else its first parameter's."""
    if isinstance(model, Shipped):
        return model.device
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def linear_layers(model: nn.Module) -> list[nn.Module]:
    """The Linear layers of ``model``, float or dynamically quantized, in order."""
    return [m for m in model.modules() if isinstance(m, nn.Linear | nnqd.Linear)]


def quantized_weight(layer: nn.Module) -> torch.Tensor:
    """A dynamically quantized Linear's weight (a method there; torch's stubs say a Tensor)."""
    weight: torch.Tensor = cast(Any, layer).weight()
    return weight


def stored_weight(layer: nn.Module) -> torch.Tensor:
    """The weight values as stored: int8 codes for a quantized Linear, else the weight."""
    if isinstance(layer, nnqd.Linear):
        return quantized_weight(layer).int_repr()
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    return weight.detach()


def stored_bias(layer: nn.Module) -> torch.Tensor | None:
    """The bias as stored (a quantized Linear keeps it in float32)."""
    if isinstance(layer, nnqd.Linear):
        return cast(Any, layer).bias()  # a method on a quantized Linear (torch's stubs: a Tensor)
    bias = layer.bias
    assert bias is None or isinstance(bias, torch.Tensor)
    return None if bias is None else bias.detach()

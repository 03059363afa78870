"""The shipped model's weights in a compact, honest on-disk form, and its size in bytes.

``encode`` turns a shipped model into a flat dict of tensors, the way a sparse-
and quantization-aware exporter would store it; ``model_bytes`` is the length
of ``torch.save`` of that dict into memory: a real serialization, container
overhead included, not a formula. ``decode`` rebuilds every weight from the
dict, which proves nothing needed for inference was left out of the count.

Each weight matrix is stored in whichever of three formats is smallest for it:

- dense: the values in their stored dtype (float32, float16/bfloat16, int8);
- bitmask: one bit per entry (non-zero or not, packed 8 per byte) + the non-zero
  values: wins at moderate sparsity (at 4-byte values, from ~3 % zeros);
- CSR: row pointers + column indices (int16 when the width allows, else int32)
  + the non-zero values: wins at high sparsity (float32: above ~94 % zeros).

int8 weights keep their per-row scales (float32) and zero points (int8);
biases are stored dense in their dtype. Shapes ride along as small int tuples.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

from workers.compression.quantize import (
    linear_layers,
    quantized_weight,
    stored_bias,
    stored_weight,
)

BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8 bytes, 8 entries per byte (little-endian bit order)."""
    flat = mask.flatten().to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % 8)])
    return (flat.view(-1, 8) * BIT_WEIGHTS).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``numel`` bits as a flat bool tensor."""
    return ((packed.unsqueeze(1) & BIT_WEIGHTS) != 0).flatten()[:numel]


def _index_dtype(limit: int) -> torch.dtype:
    # Indices up to ``limit`` inclusive: int16 covers the reference model's widths.
    return torch.int16 if limit <= torch.iinfo(torch.int16).max else torch.int32


def encode_matrix(weight: torch.Tensor) -> dict[str, Any]:
    """The smallest of the dense, bitmask and CSR encodings of a 2-D ``weight``."""
    weight = weight.detach().cpu()
    # clone(): torch.save writes a view's whole storage, which would overstate the size.
    candidates = [{"format": "dense", "values": weight.clone()}]
    nonzero = weight != 0
    if not bool(nonzero.all()):
        values = weight[nonzero].clone()
        shape = tuple(weight.shape)
        mask = pack_bits(nonzero)
        candidates.append({"format": "bitmask", "shape": shape, "mask": mask, "values": values})
        # CSR by hand (torch's sparse CSR layout is still beta): row pointers are the
        # running count of non-zeros per row; nonzero() lists columns row-major like values.
        counts = nonzero.sum(dim=1).cumsum(0)
        rows = torch.cat([counts.new_zeros(1), counts]).to(_index_dtype(weight.numel()))
        cols = nonzero.nonzero()[:, 1].to(_index_dtype(weight.shape[1]))
        candidates.append(
            {"format": "csr", "shape": shape, "rows": rows, "cols": cols, "values": values}
        )
    return min(candidates, key=_payload_bytes)


def _payload_bytes(entry: dict[str, Any]) -> int:
    return sum(v.numel() * v.element_size() for v in entry.values() if torch.is_tensor(v))


def decode_matrix(entry: dict[str, Any]) -> torch.Tensor:
    """The dense matrix an :func:`encode_matrix` entry stands for."""
    if entry["format"] == "dense":
        return entry["values"]
    rows, cols = entry["shape"]
    values = entry["values"]
    if entry["format"] == "bitmask":
        dense = values.new_zeros(rows * cols)
        dense[unpack_bits(entry["mask"], rows * cols)] = values
        return dense.view(rows, cols)
    row_of = torch.repeat_interleave(torch.arange(rows), entry["rows"].long().diff())
    dense = values.new_zeros(rows, cols)
    dense[row_of, entry["cols"].long()] = values
    return dense


def encode(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Every layer's stored tensors, per layer in forward order.

    Expects a shipped model (BN folded, see ``quantize``): only Linear layers
    carry parameters there. Any other parameter or buffer is stored dense, so
    an unfolded model is still counted in full rather than undercounted.
    """
    state: dict[str, dict[str, Any]] = {}
    linears = linear_layers(model)
    for i, layer in enumerate(linears):
        entry: dict[str, Any] = {"weight": encode_matrix(stored_weight(layer))}
        bias = stored_bias(layer)
        if bias is not None:
            entry["bias"] = bias.detach().cpu().clone()
        if not isinstance(layer, nn.Linear):  # dynamically quantized: keep its quantizer
            entry.update(_int8_quantizer(quantized_weight(layer)))
        state[f"linear{i}"] = entry
    seen = {id(t) for layer in linears for t in (*layer.parameters(), *layer.buffers())}
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if id(tensor) not in seen:
            state[name] = {"values": tensor.detach().cpu().clone()}
    return state


def _int8_quantizer(qweight: torch.Tensor) -> dict[str, torch.Tensor]:
    # float32 scales: what the fbgemm kernels compute with; zero points fit int8.
    if qweight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scales = qweight.q_per_channel_scales()
        zero_points = qweight.q_per_channel_zero_points()
    else:
        scales = torch.tensor([qweight.q_scale()])
        zero_points = torch.tensor([qweight.q_zero_point()])
    return {"scale": scales.to(torch.float32), "zero_point": zero_points.to(torch.int8)}


def decode(state: dict[str, dict[str, Any]]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(weight, bias) per Linear, rebuilt from :func:`encode`; int8 weights dequantized."""
    layers = []
    for name in sorted((k for k in state if k.startswith("linear")), key=lambda k: int(k[6:])):
        entry = state[name]
        weight = decode_matrix(entry["weight"])
        if "scale" in entry:
            # One scale per output row (a single one broadcasts the same way).
            zero_point = entry["zero_point"].view(-1, 1).float()
            weight = (weight.float() - zero_point) * entry["scale"].view(-1, 1)
        layers.append((weight, entry.get("bias")))
    return layers


def serialized_bytes(obj: Any) -> int:
    """Length of ``torch.save(obj)`` written to memory."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def model_bytes(model: nn.Module) -> int:
    """Bytes of the serialized, encoded shipped model (:func:`encode` then ``torch.save``)."""
    return serialized_bytes(encode(model))

"""The pack's Linear layer: every member's F.linear as batched matrix products.

Each product (forward, weight gradient, input gradient, bias gradient) is the
one the solo F.linear (addmm) and its backward compute, in the same orientation
(the weight gradient as grad.T @ h, as addmm's backward does; bmm's own backward
would compute h.T @ grad, which rounds differently). On the CPU a batched
product usually gives each member the same bits as the single product, but not
always: with more than one thread torch splits some single products across
threads (measured here: the 10 x H weight gradient of the output layer), and
then the solo result itself depends on the thread count. (MKL's result can also
depend on the output's alignment: see layout.ALIGN.) So on the CPU each
product is checked once per shape and thread count on random data
(:func:`batched_is_solo`); where the batched product differs, the pack makes the
solo call member by member. On CUDA the products are always batched (one launch
for all members; within float tolerance of solo).

The backward writes the weight and bias gradients straight into the stack's
gradient buffer (``Sinks``), overwriting or accumulating (gd's chunks): no
[K, P] gradient is allocated or concatenated per step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor


class GradState(Protocol):
    grad_fresh: bool  # True: the next backward overwrites the gradient buffer, else adds to it


@dataclass
class Sinks:
    """Where a Linear layer's gradients go: views into the stack's gradient buffer."""

    stack: GradState
    weight: Tensor  # [K, out, in]
    bias: Tensor | None  # [K, out]


class StackedLinear(torch.autograd.Function):
    """out[k] = h[k] @ w[k].T + b[k] for every member k; gradients into ``sinks``.

    ``trigger`` is a leaf that requires grad, so the backward runs even for the
    first layer, whose inputs need no gradient and whose weights are not leaves.
    """

    @staticmethod
    def forward(
        ctx: Any, h: Tensor, w: Tensor, b: Tensor | None, sinks: Sinks, trigger: Tensor
    ) -> Tensor:
        if h.stride(0) != 0:  # a shared input (gd) stays an expanded view
            h = h.contiguous()  # the solo layer's input is contiguous: same memory order
        ctx.save_for_backward(h, w)
        ctx.sinks = sinks
        return _product("forward", h, w, None, b)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        h, w = ctx.saved_tensors
        sinks: Sinks = ctx.sinks
        grad = grad.contiguous()
        if sinks.stack.grad_fresh:
            _product("weight_grad", h, w, grad, None, out=sinks.weight)
            if sinks.bias is not None:
                _product("bias_grad", h, w, grad, None, out=sinks.bias)
        else:  # accumulate like the solo AccumulateGrad: old + new
            sinks.weight.add_(_product("weight_grad", h, w, grad, None))
            if sinks.bias is not None:
                sinks.bias.add_(_product("bias_grad", h, w, grad, None))
        grad_h = _product("input_grad", h, w, grad, None) if ctx.needs_input_grad[0] else None
        return grad_h, None, None, None, None


def _product(
    name: str,
    h: Tensor,
    w: Tensor,
    grad: Tensor | None,
    b: Tensor | None,
    out: Tensor | None = None,
) -> Tensor:
    """One of the layer's products for all members: batched, or the solo call per member."""
    k, batch, n_in = h.shape
    n_out, threads = w.shape[1], torch.get_num_threads()
    # The probe needs no more members than it takes to show how the batch is split over
    # threads: fewer members than threads as they are, else a representative 2 x threads.
    probe_k = k if k < threads else 2 * threads
    row = None if out is None else out.stride(0)  # writing into the gradient buffer's rows
    key = (name, probe_k, batch, n_in, n_out, b is not None, h.stride(0) == 0, row, threads)
    if h.device.type != "cpu" or batched_is_solo(*key):
        return _batched(name, h, w, grad, b, out)
    return _per_member(name, h, w, grad, b, out)


def _batched(
    name: str, h: Tensor, w: Tensor, grad: Tensor | None, b: Tensor | None, out: Tensor | None
) -> Tensor:
    match name:
        case "forward" if b is None:
            return torch.bmm(h, w.transpose(1, 2), out=out)
        case "forward":
            assert b is not None
            return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2), out=out)
        case "weight_grad":
            assert grad is not None
            return torch.bmm(grad.transpose(1, 2), h, out=out)
        case "input_grad":
            assert grad is not None
            return torch.bmm(grad, w, out=out)
        case "bias_grad":
            assert grad is not None
            return torch.sum(grad, 1, out=out)
    raise ValueError(name)


def _per_member(
    name: str, h: Tensor, w: Tensor, grad: Tensor | None, b: Tensor | None, out: Tensor | None
) -> Tensor:
    # The calls the solo F.linear and addmm's backward make, one member at a time, each into a
    # fresh tensor as there (MKL's result can depend on where the output lies), then copied.
    results = []
    for i in range(h.shape[0]):
        match name:
            case "forward" if b is None:
                results.append(torch.mm(h[i], w[i].t()))
            case "forward":
                assert b is not None
                results.append(torch.addmm(b[i], h[i], w[i].t()))
            case "weight_grad":
                assert grad is not None
                results.append(grad[i].t().mm(h[i]))
            case "input_grad":
                assert grad is not None
                results.append(grad[i].mm(w[i]))
            case "bias_grad":
                assert grad is not None
                results.append(grad[i].sum(0))
    if out is None:
        return torch.stack(results)
    for i, result in enumerate(results):
        out[i].copy_(result)
    return out


@functools.cache
def batched_is_solo(
    name: str,
    k: int,
    batch: int,
    n_in: int,
    n_out: int,
    bias: bool,
    shared: bool,
    row: int | None,
    threads: int,
) -> bool:
    """Whether the batched product gives every member the single product's bits (CPU).

    Checked once per shape, output layout (``row``: the row stride of the gradient
    buffer it writes into; None: a fresh tensor) and thread count, on random data,
    with torch on ``threads`` threads as in training. A kernel that rounds
    differently shows on any random input; equal bits mean the same kernel path.
    """
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(1 if shared else k, batch, n_in, generator=gen).expand(k, -1, -1)
    w = torch.randn(k, n_out, n_in, generator=gen) / n_in**0.5
    grad = torch.randn(k, batch, n_out, generator=gen)
    b = torch.randn(k, n_out, generator=gen) if bias else None
    out = None
    if row is not None:  # the same strides (and 64-byte aligned rows) as the real buffer
        shape = (n_out, n_in) if name == "weight_grad" else (n_out,)
        out = torch.zeros(k, row)[:, : n_out * (n_in if name == "weight_grad" else 1)]
        out = out.view(k, *shape)
    batched = _batched(name, h if shared else h.contiguous(), w, grad, b, out)
    return torch.equal(batched, _per_member(name, h, w, grad, b, None))

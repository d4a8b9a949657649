"""Small differentiable operators shared by the codecs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient still flows where it would move x back above the bound."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        pass_through = (x >= ctx.bound) | (grad_output < 0)
        return grad_output * pass_through.to(grad_output.dtype), None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    if not torch.is_grad_enabled() or not x.requires_grad:
        return x.clamp_min(bound)
    return _LowerBound.apply(x, bound)


def round_straight_through(x: torch.Tensor) -> torch.Tensor:
    """round(x) (half to even) forward, identity gradient."""
    if not torch.is_grad_enabled() or not x.requires_grad:
        return torch.round(x)
    return x + (torch.round(x) - x).detach()


# -- linear layers through oneDNN ---------------------------------------------------------------------
# Below this many rows, or this many multiply-adds, a product is too small for oneDNN's set-up (a
# primitive built and JIT-compiled per new shape) to pay off: the tiny test models ran their DLF
# tests 25 % slower through it.
ONEDNN_LINEAR_MIN_ROWS = 64
ONEDNN_LINEAR_MIN_MACS = 1 << 22


def _onednn_matmul_t(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b.T (+ bias) for contiguous a (N, K) and b (M, K), as oneDNN's 1x1 convolution over a
    channels_last view of a (no copy in or out). The op is called directly: F.conv2d would hand a
    1x1 convolution to the same sgemm as F.linear when torch runs one thread."""
    rows, inner = a.shape
    image = a.view(1, rows, 1, inner).permute(0, 3, 1, 2)  # (1, K, N, 1), channels_last
    y = torch.ops.aten.mkldnn_convolution(image, b.view(b.shape[0], inner, 1, 1), bias, [0, 0], [1, 1], [1, 1], 1)
    return y.permute(0, 2, 3, 1).reshape(rows, b.shape[0])


class _OneDNNLinearFunction(torch.autograd.Function):
    """F.linear with the forward product and both backward products through :func:`_onednn_matmul_t`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        weight = weight.contiguous()
        ctx.save_for_backward(rows, weight)
        ctx.input_shape, ctx.has_bias = x.shape, bias is not None
        return _onednn_matmul_t(rows, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        rows, weight = ctx.saved_tensors
        grad = grad_output.reshape(-1, grad_output.shape[-1]).contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_matmul_t(grad, weight.t().contiguous()).view(ctx.input_shape)
        if ctx.needs_input_grad[1]:
            grad_w = _onednn_matmul_t(grad.t().contiguous(), rows.t().contiguous())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias), computed as a 1x1 convolution over a channels_last view on CPU,
    in inference and (through a custom autograd function) in training.

    torch runs float32 nn.Linear through MKL's sgemm, which on AMD CPUs does not use AVX-512: on
    this project's 2-core EPYC, ViT-L-sized products ran at 120-170 GFLOP/s against 250-370 for
    oneDNN's 1x1 convolution over the same memory, and 160-210 with oneDNN held to AVX2
    (``benchmarks/bench_linear.py``, ``docs/results/speed_linear_*.json``); a training step's
    forward and backward products of DLF's shapes took 0.65-0.75x the time on one thread. The rows
    of x, viewed as a (1, C, N, 1) channels_last image, need no copy, nor does the output. Float
    results differ from F.linear by summation order only, as between any two BLAS builds; callers
    use it for float paths only, never where an entropy-coding parameter is decided.
    """
    rows = x.numel() // max(x.shape[-1], 1)
    if (x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or (bias is not None and bias.dtype != torch.float32) or rows < ONEDNN_LINEAR_MIN_ROWS
            or rows * x.shape[-1] * weight.shape[0] < ONEDNN_LINEAR_MIN_MACS
            or not torch.backends.mkldnn.is_available()):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _OneDNNLinearFunction.apply(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1]).contiguous()
    return _onednn_matmul_t(flat, weight.contiguous(), bias).view(*x.shape[:-1], weight.shape[0])


class OneDNNLinear(nn.Linear):
    """nn.Linear (same parameters and state-dict keys) that runs :func:`onednn_linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn_linear(x, self.weight, self.bias)


def use_onednn_linears(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every plain nn.Linear inside ``module`` to :class:`OneDNNLinear` (or back), in place.
    Only the class changes, so weights, hooks and strict loading are untouched."""
    source, target = (nn.Linear, OneDNNLinear) if enabled else (OneDNNLinear, nn.Linear)
    for child in module.modules():
        if type(child) is source:
            child.__class__ = target
    return module

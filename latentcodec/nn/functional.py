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
# Below this many rows a product is too small for the convolution's set-up to pay off.
ONEDNN_LINEAR_MIN_ROWS = 64


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias), computed as a 1x1 convolution over a channels_last view on CPU.

    torch runs float32 nn.Linear through MKL's sgemm, which on AMD CPUs does not use AVX-512: on
    this project's 2-core EPYC, ViT-L-sized products ran at 120-170 GFLOP/s against 250-370 for
    oneDNN's 1x1 convolution over the same memory, and 160-210 with oneDNN held to AVX2
    (``benchmarks/bench_linear.py``, ``docs/results/speed_linear_*.json``). The rows
    of x, viewed as a (1, C, N, 1) channels_last image, need no copy, nor does the output. Float
    results differ from F.linear by summation order only, as between any two BLAS builds; callers
    use it for float paths only, never where an entropy-coding parameter is decided.
    """
    rows = x.numel() // max(x.shape[-1], 1)
    if (x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or rows < ONEDNN_LINEAR_MIN_ROWS or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            or not torch.backends.mkldnn.is_available()):
        return F.linear(x, weight, bias)
    features, outputs = x.shape[-1], weight.shape[0]
    image = x.reshape(1, rows, 1, features).permute(0, 3, 1, 2)  # (1, C, N, 1), channels_last
    y = F.conv2d(image, weight.view(outputs, features, 1, 1), bias)
    return y.permute(0, 2, 3, 1).reshape(*x.shape[:-1], outputs)


class OneDNNLinear(nn.Linear):
    """nn.Linear (same parameters and state-dict keys) whose inference runs :func:`onednn_linear`."""

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

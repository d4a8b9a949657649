"""Small differentiable operators shared by the codecs."""

from __future__ import annotations

import torch


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

"""Differentiable rate estimate of Gaussian residuals, exactly as GLC/DCVC compute it (SYSTEMS.md 1.2).

Every reported GLC rate is this estimate, not a real bitstream. It clamps sigma at 1e-5 while the
real coder's table floors sigma at 0.11 (and rounds it down to a table entry), so estimated and
coded sizes differ; the real size comes from :class:`~latentcodec.entropy.EntropyEncoder`.
"""

from __future__ import annotations

import math

import torch

_LOG2 = math.log(2.0)


def _normal_cdf(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    # Same expression as torch.distributions.Normal(0, scales).cdf(values).
    return 0.5 * (1 + torch.erf(values * scales.reciprocal() / math.sqrt(2)))


def gaussian_residual_bits(symbols: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Bits of each integer residual under N(0, sigma) integrated over [r - 1/2, r + 1/2].

    bits = max(0, -log2(Phi((r + 1/2) / sigma') - Phi((r - 1/2) / sigma') + 1e-5)) with
    sigma' = clamp(scales, 1e-5, 1e10). Broadcasts like torch; float32 unless an input is float64.
    Gradients flow to both ``symbols`` (e.g. through a straight-through rounding) and ``scales``.
    """
    dtype = torch.promote_types(
        torch.float32,
        torch.promote_types(
            symbols.dtype if symbols.is_floating_point() else torch.float32,
            scales.dtype if scales.is_floating_point() else torch.float32,
        ),
    )
    values = symbols.to(dtype)
    sigma = scales.to(dtype).clamp(1e-5, 1e10)
    likelihood = _normal_cdf(values + 0.5, sigma) - _normal_cdf(values - 0.5, sigma)
    return torch.clamp_min(-torch.log(likelihood + 1e-5) / _LOG2, 0)

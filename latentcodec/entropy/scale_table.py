"""Log-spaced table of Gaussian scales and the deterministic map from a predicted sigma to an index.

The table follows DCVC (SYSTEMS.md 1.3): ``levels`` scales log-spaced over [min_scale, max_scale],
and index(sigma) = clamp(floor((ln sigma - ln min_scale) / step), 0, levels - 1).

Determinism (SYSTEMS.md 8.2): the index must come out identical on the encoder's and the decoder's
machine for identical sigma. Evaluating ``log`` can differ by an ULP between CPUs, GPUs and SIMD
paths, so :meth:`ScaleTable.index` never calls it: it counts how many float32 thresholds
``values()[1:]`` the float32 sigma reaches (``torch.searchsorted``). Comparisons are exact on every
device, and the thresholds are computed once with correctly rounded decimal arithmetic. This equals
the floor-of-log formula except for sigmas within a float32 ULP of a threshold, where both sides
still agree with each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from latentcodec.entropy._exact_math import log_spaced_values

MAX_LEVELS = 65536


@dataclass(frozen=True)
class ScaleTable:
    """``levels`` Gaussian scales, log-spaced from ``min_scale`` to ``max_scale`` (both included)."""

    min_scale: float = 0.11
    max_scale: float = 64.0
    levels: int = 256

    def __post_init__(self) -> None:
        if not (isinstance(self.levels, int) and 2 <= self.levels <= MAX_LEVELS):
            raise ValueError(f"ScaleTable.levels must be an int in [2, {MAX_LEVELS}], got {self.levels!r}")
        low, high = float(self.min_scale), float(self.max_scale)
        if not (math.isfinite(low) and math.isfinite(high) and 0.0 < low < high):
            raise ValueError(f"ScaleTable needs finite 0 < min_scale < max_scale, got {low!r}, {high!r}")

    def values(self) -> np.ndarray:
        """The table's scales, float64, shape (levels,), increasing."""
        return _table_values(self).copy()

    def index(self, scales: torch.Tensor) -> torch.Tensor:
        """int64 table indices, same shape and device as ``scales``; never raises on float input.

        sigma <= 0, NaN and tiny sigma give 0; sigma >= max_scale (incl. inf) gives levels - 1.
        """
        scales = torch.as_tensor(scales).detach()
        sigma = scales.to(torch.float32).reshape(-1)
        thresholds = _index_thresholds(self).to(sigma.device)
        indices = torch.searchsorted(thresholds, sigma, right=True)
        indices = torch.where(torch.isnan(sigma), torch.zeros_like(indices), indices)
        return indices.to(torch.int64).reshape(scales.shape)

    def index_fixed(self, scales_fixed: torch.Tensor, fraction_bits: int) -> torch.Tensor:
        """int64 table indices of fixed-point sigmas (integer-valued, ``fraction_bits`` fractional bits).

        The portable path: integer comparisons against ceil(values[j] * 2**bits), so that
        index >= j exactly when sigma >= values[j], on every device.
        """
        sigma = scales_fixed.detach().reshape(-1)
        thresholds = _fixed_thresholds(self, fraction_bits).to(sigma.device, sigma.dtype)
        return torch.searchsorted(thresholds, sigma, right=True).to(torch.int64).reshape(scales_fixed.shape)


DEFAULT_SCALE_TABLE = ScaleTable()


@lru_cache(maxsize=16)
def _table_values(table: ScaleTable) -> np.ndarray:
    values = log_spaced_values(float(table.min_scale), float(table.max_scale), table.levels)
    values.setflags(write=False)
    return values


@lru_cache(maxsize=16)
def _index_thresholds(table: ScaleTable) -> torch.Tensor:
    # index >= j  <=>  sigma >= values[j]; float32 because index() compares float32 sigmas.
    return torch.from_numpy(_table_values(table)[1:].astype(np.float32))


@lru_cache(maxsize=16)
def _fixed_thresholds(table: ScaleTable, fraction_bits: int) -> torch.Tensor:
    # values * 2**bits is exact in float64 (a power-of-two scaling), so ceil is exact too.
    return torch.from_numpy(np.ceil(np.ldexp(_table_values(table)[1:], fraction_bits)).astype(np.int64))

"""Adaptive-step Gaussian conditional with a masked multi-step context (SYSTEMS.md 1.2).

Shared by GLC-image (four "quadtree" steps), GLC-video (two "dual" steps) and DLF. A prior tensor
P with 3C channels gives (step, scale, mean); the latent is normalised by the step, and coded in
K masked steps where step k >= 1 takes its (scale, mean) from a context network on the symbols
decoded so far.

Quantisation, encoding and decoding all run through one loop (:func:`run_masked_steps`), so the
encoder's reconstruction and the decoder's are produced by the same arithmetic on the same values,
which is what makes ``decompress`` reproduce the encoder-side latent bit for bit.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from latentcodec.errors import LatentCodecError
from latentcodec.nn import integer
from latentcodec.nn.functional import lower_bound, round_straight_through

MIN_QUANT_STEP = 0.5
# Far beyond anything a trained model produces, and safely inside int64 after float rounding.
MAX_CODABLE_SYMBOL = 2.0**52

# (step k >= 1, y_hat so far in the step-normalised domain) -> (scales, means)
ContextFn = Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class SplitPrior(NamedTuple):
    quant_step: torch.Tensor
    scales: torch.Tensor
    means: torch.Tensor


class MaskedStepsResult(NamedTuple):
    y_hat: torch.Tensor  # reconstruction, step * sum_k (r_k + mu_k) * M_k
    symbols: torch.Tensor  # integer residuals r (float dtype), all steps merged
    scales: torch.Tensor  # raw sigma that codes each element (merged over steps)
    means: torch.Tensor  # mu of each element (merged over steps)
    quant_step: torch.Tensor


def split_prior(prior: torch.Tensor) -> SplitPrior:
    quant_step, scales, means = prior.chunk(3, 1)
    return SplitPrior(lower_bound(quant_step, MIN_QUANT_STEP), scales, means)


def quadtree_masks(channels: int, height: int, width: int, device=None) -> torch.Tensor:
    """(4, channels, H, W) bool; step k codes 2x2 phase (g XOR [0,3,2,1][k]) of channel group g.

    Phases are p = 2*(h % 2) + (w % 2), anchored at (0, 0); groups are contiguous quarters.
    """
    if channels % 4:
        raise ValueError(f"quadtree masks need a channel count divisible by 4, got {channels}")
    group = torch.arange(channels, device=device) // (channels // 4)
    phase = 2 * (torch.arange(height, device=device) % 2)[:, None] + (torch.arange(width, device=device) % 2)[None, :]
    step_xor = torch.tensor([0, 3, 2, 1], device=device)
    wanted = group[None, :] ^ step_xor[:, None]  # (4, C)
    return wanted[:, :, None, None] == phase[None, None]


def quadtree_context_fn(reduction, adaptors, spatial_prior, prior: torch.Tensor) -> "ContextFn":
    """The step k >= 1 context of the quadtree steps (SYSTEMS.md 1.2; GLC-image and DLF): the prior
    reduced once, then ``spatial_prior(adaptors[k - 1](cat(y_hat so far, reduced prior)))`` split into
    (scales, means). The same for float networks and their integer twins."""
    common = reduction(prior)

    def context(step: int, y_hat_so_far: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scales, means = spatial_prior(adaptors[step - 1](torch.cat((y_hat_so_far, common), dim=1))).chunk(2, 1)
        return scales, means

    return context


def dual_masks(channels: int, height: int, width: int, device=None) -> torch.Tensor:
    """(2, channels, H, W) bool; step 0 codes the first channel half on checkerboard (h+w) even and
    the second half on (h+w) odd; step 1 codes the complement."""
    if channels % 2:
        raise ValueError(f"dual masks need an even channel count, got {channels}")
    parity = (torch.arange(height, device=device)[:, None] + torch.arange(width, device=device)[None, :]) % 2
    half = (torch.arange(channels, device=device) >= channels // 2).long()
    step0 = half[:, None, None] == parity[None]
    return torch.stack([step0, ~step0])


SymbolSource = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# (step k, mask (B,C,H,W) bool, scales_k, residual_k or None) -> integer symbols (B,C,H,W), zero off-mask


def run_masked_steps(
    prior: SplitPrior,
    masks: torch.Tensor,
    context: ContextFn,
    symbol_source: SymbolSource,
    normalised_y: torch.Tensor | None,
    skip_below: float | None = None,
) -> MaskedStepsResult:
    """The shared K-step loop. ``symbol_source`` quantises (encoder) or entropy-decodes (decoder).

    ``skip_below`` (DLF: 0.12) forces the residual of every element whose predicted sigma is below
    it (including sigma <= 0) to 0 and leaves it uncoded: the decoder reconstructs it as its mean.
    Its scale is recorded as 0. ``symbol_source`` then sees only the coded elements in its mask.
    """
    step0_scales, step0_means = prior.scales, prior.means
    batch = prior.scales.shape[0]
    y_hat_so_far = torch.zeros_like(prior.means)
    symbols = torch.zeros_like(prior.means)
    scales_hat = torch.zeros_like(prior.scales)
    means_hat = torch.zeros_like(prior.means)
    for k in range(masks.shape[0]):
        mask = masks[k].unsqueeze(0).expand(batch, -1, -1, -1)
        mask_f = mask.to(prior.means.dtype)
        if k == 0:
            scales, means = step0_scales, step0_means
        else:
            scales, means = context(k, y_hat_so_far)
        scales_k = scales * mask_f
        means_k = means * mask_f
        coded, coded_f = mask, mask_f
        if skip_below is not None:
            coded = mask & (scales_k >= skip_below)
            coded_f = coded.to(prior.means.dtype)
            scales_k = scales_k * coded_f
        residual = None if normalised_y is None else (normalised_y - means_k) * coded_f
        symbols_k = symbol_source(k, coded, scales_k, residual)
        y_hat_so_far = y_hat_so_far + (symbols_k + means_k) * mask_f
        symbols = symbols + symbols_k
        scales_hat = scales_hat + scales_k
        means_hat = means_hat + means_k
    return MaskedStepsResult(y_hat_so_far * prior.quant_step, symbols, scales_hat, means_hat, prior.quant_step)


def quantize_masked(y: torch.Tensor, prior: SplitPrior, masks: torch.Tensor, context: ContextFn,
                    skip_below: float | None = None, divide: bool = False) -> MaskedStepsResult:
    """Training/estimation path: straight-through rounding of every step's residual.

    GLC multiplies by the reciprocal step, DLF divides (``divide``): each matches its reference bit
    for bit, which keeps the exact-symbol reference tests free of spurious rounding flips."""

    def round_residual(k, mask, scales_k, residual):
        return round_straight_through(residual)

    normalised = y / prior.quant_step if divide else y * (1.0 / prior.quant_step)
    return run_masked_steps(prior, masks, context, round_residual, normalised, skip_below)


def encode_masked(
    y: torch.Tensor, prior: SplitPrior, masks: torch.Tensor, context: ContextFn, encoder, table,
    skip_below: float | None = None, divide: bool = False,
) -> MaskedStepsResult:
    """Quantise and entropy-code every step, in step order, into ``encoder`` (an EntropyEncoder)."""

    def round_and_code(k, mask, scales_k, residual):
        symbols_k = torch.round(residual)
        coded = symbols_k[mask]
        if coded.numel() and not (torch.isfinite(coded).all() and coded.abs().max() < MAX_CODABLE_SYMBOL):
            raise LatentCodecError(
                f"cannot code step {k}: the model produced non-finite or astronomically large latent symbols "
                f"(max |r| = {coded.abs().max().item():.3g}); the weights do not form a working codec for this input"
            )
        encoder.encode_gaussian(coded, table.index(scales_k[mask]))
        return symbols_k

    normalised = y / prior.quant_step if divide else y * (1.0 / prior.quant_step)
    return run_masked_steps(prior, masks, context, round_and_code, normalised, skip_below)


def decode_masked(prior: SplitPrior, masks: torch.Tensor, context: ContextFn, decoder, table,
                  skip_below: float | None = None) -> MaskedStepsResult:
    """Inverse of :func:`encode_masked`: reads every step's symbols from ``decoder``."""

    def read_symbols(k, mask, scales_k, residual):
        symbols_k = torch.zeros_like(scales_k)
        decoded = decoder.decode_gaussian(table.index(scales_k[mask]))
        symbols_k[mask] = decoded.to(symbols_k.dtype)
        return symbols_k

    return run_masked_steps(prior, masks, context, read_symbols, None, skip_below)


# -- the portable path: the same K-step loop on exact fixed-point parameters ------------------------
# Symbols beyond this are clipped where they re-enter the context (both sides alike); they are still
# coded in full. No working model produces them.
SYMBOL_CONTEXT_LIMIT = 1 << 14


class FixedPrior(NamedTuple):
    """(step, scale, mean) in fixed point (latentcodec.nn.integer: integer-valued float64)."""

    quant_step: torch.Tensor
    scales: torch.Tensor
    means: torch.Tensor


class FixedStepsResult(NamedTuple):
    y_hat_fixed: torch.Tensor  # fixed point: step * sum_k (r_k + mu_k) * M_k, exact everywhere
    symbols: torch.Tensor  # integer residuals (float dtype), all steps merged
    scales: torch.Tensor  # sigma that coded each element, as float (for estimates and tests)
    means: torch.Tensor
    quant_step: torch.Tensor

    @property
    def y_hat(self) -> torch.Tensor:
        return integer.from_fixed(self.y_hat_fixed)


# (step k >= 1, fixed-point y_hat so far in the step-normalised domain) -> fixed (scales, means)
FixedContextFn = Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# (step k, mask, scale indices of the masked elements, fixed means of the masked elements) -> int64 symbols
FixedSymbolSource = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def split_prior_fixed(prior_fixed: torch.Tensor) -> FixedPrior:
    quant_step, scales, means = prior_fixed.chunk(3, 1)
    return FixedPrior(quant_step.clamp_min(int(MIN_QUANT_STEP * integer.ONE)), scales, means)


def fixed_skip_threshold(skip_below: float | None) -> int | None:
    """sigma < skip_below  <=>  fixed sigma < this integer (fixed values are exact multiples of 2**-12)."""
    return None if skip_below is None else math.ceil(skip_below * integer.ONE)


def run_masked_steps_fixed(prior: FixedPrior, masks: torch.Tensor, context: FixedContextFn,
                           symbol_source: FixedSymbolSource, table, skip_below: float | None = None) -> FixedStepsResult:
    """The K-step loop of :func:`run_masked_steps` in integers: scale indices by integer comparison,
    reconstructions as exact fixed-point sums, so encoder and decoder agree on any machine.
    ``skip_below`` as in :func:`run_masked_steps`, decided by an integer comparison."""
    skip_fixed = fixed_skip_threshold(skip_below)
    batch = prior.scales.shape[0]
    # The per-element records are kept in the float32 they are returned in (each element converted as
    # it is filled, the same conversion as a whole-map one at the end), so that no full-size fixed-point
    # copy and its conversion temporaries are alive at the end: at 16 MP the official preset's latent
    # maps are 128 MB apiece in float64, and this loop set the peak of compression.
    y_norm = torch.zeros_like(prior.means)
    symbols = torch.zeros(prior.means.shape, dtype=torch.float32, device=prior.means.device)
    scales_used = torch.zeros(prior.scales.shape, dtype=torch.float32, device=prior.scales.device)
    means_used = torch.zeros_like(scales_used)
    for k in range(masks.shape[0]):
        mask = masks[k].unsqueeze(0).expand(batch, -1, -1, -1)
        scales, means = (prior.scales, prior.means) if k == 0 else context(k, y_norm)
        scales_k, means_k = scales[mask], means[mask]
        del scales, means  # the step's full-size parameter maps: only the masked elements are used
        if skip_fixed is None:
            symbols_k = symbol_source(k, mask, table.index_fixed(scales_k, integer.FRACTION_BITS), means_k)
        else:
            keep = scales_k >= skip_fixed
            coded = mask.clone()
            coded[mask] = keep
            symbols_k = torch.zeros(scales_k.shape, dtype=torch.int64, device=scales_k.device)
            symbols_k[keep] = symbol_source(k, coded, table.index_fixed(scales_k[keep], integer.FRACTION_BITS),
                                            means_k[keep])
            scales_k = torch.where(keep, scales_k, torch.zeros_like(scales_k))
        clipped = symbols_k.clamp(-SYMBOL_CONTEXT_LIMIT, SYMBOL_CONTEXT_LIMIT)
        y_norm[mask] = integer.saturate(clipped.to(integer.FIXED_DTYPE) * integer.ONE + means_k)
        symbols[mask] = symbols_k.to(torch.float32)
        scales_used[mask] = integer.from_fixed(scales_k)
        means_used[mask] = integer.from_fixed(means_k)
    y_hat_fixed = integer.fixed_multiply(y_norm, prior.quant_step, inplace=True)
    return FixedStepsResult(y_hat_fixed, symbols, scales_used, means_used, integer.from_fixed(prior.quant_step))


def encode_masked_fixed(y: torch.Tensor, prior: FixedPrior, masks: torch.Tensor, context: FixedContextFn,
                        encoder, table, skip_below: float | None = None) -> FixedStepsResult:
    """Quantise y (float; only the encoder sees it) against the exact prior and code every step."""
    normalised = y.detach().to(torch.float64) / integer.from_fixed(prior.quant_step, torch.float64)

    def round_and_code(k, mask, scale_index, means_k):
        residual = normalised[mask] - integer.from_fixed(means_k, torch.float64)
        if residual.numel() and not (torch.isfinite(residual).all() and residual.abs().max() < MAX_CODABLE_SYMBOL):
            raise LatentCodecError(
                f"cannot code step {k}: the model produced non-finite or astronomically large latent symbols; "
                "the weights do not form a working codec for this input"
            )
        symbols_k = torch.round(residual).to(torch.int64)
        encoder.encode_gaussian(symbols_k, scale_index)
        return symbols_k

    return run_masked_steps_fixed(prior, masks, context, round_and_code, table, skip_below)


def decode_masked_fixed(prior: FixedPrior, masks: torch.Tensor, context: FixedContextFn, decoder,
                        table, skip_below: float | None = None) -> FixedStepsResult:
    """Inverse of :func:`encode_masked_fixed`."""

    def read_symbols(k, mask, scale_index, means_k):
        return decoder.decode_gaussian(scale_index).to(torch.int64)

    return run_masked_steps_fixed(prior, masks, context, read_symbols, table, skip_below)

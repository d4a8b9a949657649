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

from typing import Callable, NamedTuple

import torch

from latentcodec.errors import LatentCodecError
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
) -> MaskedStepsResult:
    """The shared K-step loop. ``symbol_source`` quantises (encoder) or entropy-decodes (decoder)."""
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
        residual = None if normalised_y is None else (normalised_y - means_k) * mask_f
        symbols_k = symbol_source(k, mask, scales_k, residual)
        y_hat_so_far = y_hat_so_far + (symbols_k + means_k) * mask_f
        symbols = symbols + symbols_k
        scales_hat = scales_hat + scales_k
        means_hat = means_hat + means_k
    return MaskedStepsResult(y_hat_so_far * prior.quant_step, symbols, scales_hat, means_hat, prior.quant_step)


def quantize_masked(y: torch.Tensor, prior: SplitPrior, masks: torch.Tensor, context: ContextFn) -> MaskedStepsResult:
    """Training/estimation path: straight-through rounding of every step's residual."""

    def round_residual(k, mask, scales_k, residual):
        return round_straight_through(residual)

    # Multiplying by the reciprocal (not dividing) matches the reference arithmetic bit for bit.
    return run_masked_steps(prior, masks, context, round_residual, y * (1.0 / prior.quant_step))


def encode_masked(
    y: torch.Tensor, prior: SplitPrior, masks: torch.Tensor, context: ContextFn, encoder, table
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

    return run_masked_steps(prior, masks, context, round_and_code, y * (1.0 / prior.quant_step))


def decode_masked(prior: SplitPrior, masks: torch.Tensor, context: ContextFn, decoder, table) -> MaskedStepsResult:
    """Inverse of :func:`encode_masked`: reads every step's symbols from ``decoder``."""

    def read_symbols(k, mask, scales_k, residual):
        symbols_k = torch.zeros_like(scales_k)
        decoded = decoder.decode_gaussian(table.index(scales_k[mask]))
        symbols_k[mask] = decoded.to(symbols_k.dtype)
        return symbols_k

    return run_masked_steps(prior, masks, context, read_symbols, None)

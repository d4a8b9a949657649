"""DLF's semantic tokens under a learned prior instead of a fixed 12 bits each.

Each 256x256 window's 32 tokens are coded by a :class:`~latentcodec.entropy.token_prior.MaskedTokenPrior`
conditioned on the window's decoded detail latent (64 x 8 x 8 vectors, exact on the decoder side)
and on the tokens of its left and top neighbours. Windows go in anti-diagonal waves: every window
of a wave has both neighbours in earlier waves, so a wave is one batched pass of the prior.
"""

from __future__ import annotations

import math

import torch

from latentcodec.entropy.token_prior import IntegerTokenPrior, MaskedTokenPrior, TokenPriorInputs
from latentcodec.nn import integer


def detail_windows(y_hat: torch.Tensor, window_positions: int) -> torch.Tensor:
    """(1, C, h, w) detail latent -> (nH*nW, window_positions², C): each window's vectors, raster order."""
    _, c, h, w = y_hat.shape
    g = window_positions
    x = y_hat.view(c, h // g, g, w // g, g).permute(1, 3, 2, 4, 0)
    return x.reshape((h // g) * (w // g), g * g, c)


def neighbour_tokens(tokens: torch.Tensor, windows_h: int, windows_w: int) -> torch.Tensor:
    """(nH*nW, T) tokens -> (nH*nW, 2, T): each window's left and top neighbours' tokens, -1 if absent."""
    grid = tokens.view(windows_h, windows_w, -1)
    absent = torch.full_like(grid, -1)
    left = torch.cat([absent[:, :1], grid[:, :-1]], dim=1)
    top = torch.cat([absent[:1], grid[:-1]], dim=0)
    return torch.stack([left, top], dim=2).view(windows_h * windows_w, 2, -1)


def waves(windows_h: int, windows_w: int) -> list[torch.Tensor]:
    """Window indices grouped by anti-diagonal i + j, in coding order."""
    rows, cols = torch.meshgrid(torch.arange(windows_h), torch.arange(windows_w), indexing="ij")
    diagonal = (rows + cols).flatten()
    return [(diagonal == d).nonzero().flatten() for d in range(windows_h + windows_w - 1)]


def prior_inputs(y_hat: torch.Tensor, tokens: torch.Tensor, windows_h: int, windows_w: int,
                 window_positions: int) -> TokenPriorInputs:
    """Teacher-forced inputs of every window at once (training and estimates)."""
    return TokenPriorInputs(detail_windows(y_hat, window_positions), neighbour_tokens(tokens, windows_h, windows_w))


def code_tokens(prior: IntegerTokenPrior, y_hat_fixed: torch.Tensor, windows_h: int, windows_w: int,
                window_positions: int, coder, tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Encode (``tokens`` given) or decode (None) all windows' tokens through ``coder``, wave by wave."""
    condition = detail_windows(y_hat_fixed, window_positions)
    positions = prior.config.num_positions
    decoded = torch.full((windows_h * windows_w, positions), -1, dtype=torch.int64, device=y_hat_fixed.device)
    for wave in waves(windows_h, windows_w):
        wave = wave.to(y_hat_fixed.device)
        context = neighbour_tokens(decoded, windows_h, windows_w)[wave]
        values = None if tokens is None else tokens[wave]
        decoded[wave] = prior.code(condition[wave], context, values, coder, decode=tokens is None)
    return decoded


@torch.no_grad()
def exact_token_bits(prior: IntegerTokenPrior, y_hat_fixed: torch.Tensor, tokens: torch.Tensor, windows_h: int,
                     windows_w: int, window_positions: int) -> float:
    """The information content of ``tokens`` under the exact PMFs the coder uses (before its own rounding)."""
    condition = detail_windows(y_hat_fixed, window_positions)
    context = neighbour_tokens(tokens, windows_h, windows_w)
    group = prior.config.group_of().to(tokens.device)
    bits = 0.0
    for g in range(prior.config.passes):
        visible = torch.where(group[None] >= g, torch.full_like(tokens, prior.mask_index), tokens)
        frequencies = prior.frequencies(condition, context, visible, g)
        picked = frequencies.gather(-1, tokens[..., None])[..., 0]
        share = (picked / frequencies.sum(-1)).clamp_min(2.0**-24)
        bits -= (torch.log2(share) * (group == g)).sum().item()
    return bits


def float_token_bits(prior: MaskedTokenPrior, y_hat: torch.Tensor, tokens: torch.Tensor, windows_h: int,
                     windows_w: int, window_positions: int) -> torch.Tensor:
    """(nH*nW,) differentiable-free float estimate per window (model selection, training logs)."""
    return prior.bits(prior_inputs(y_hat, tokens, windows_h, windows_w, window_positions), tokens)


def fixed_length_bits(count: int, vocab_size: int) -> int:
    return count * max(1, math.ceil(math.log2(vocab_size)))


def to_condition_fixed(y_hat: torch.Tensor) -> torch.Tensor:
    """The float detail latent in fixed point (the float arithmetic path conditions on this)."""
    return integer.to_fixed(y_hat)

"""DLF's semantic tokens under a learned prior instead of a fixed 12 bits each.

Each 256x256 window's 32 tokens are coded by a :class:`~latentcodec.entropy.token_prior.MaskedTokenPrior`
conditioned on the window's decoded detail latent (64 x 8 x 8 vectors, exact on the decoder side)
and on the tokens of its left and top neighbours. Windows go in anti-diagonal waves: every window
of a wave has both neighbours in earlier waves, so a wave is one batched pass of the prior.
"""

from __future__ import annotations

import torch

from latentcodec.entropy.token_prior import IntegerTokenPrior
from latentcodec.nn.transformer import window_groups


def detail_windows(y_hat: torch.Tensor, window_positions: int) -> torch.Tensor:
    """(1, C, h, w) detail latent -> (nH*nW, window_positions², C): each window's vectors, raster order."""
    _, c, h, w = y_hat.shape
    g = window_positions
    x = y_hat.view(c, h // g, g, w // g, g).permute(1, 3, 2, 4, 0)
    return x.reshape((h // g) * (w // g), g * g, c)


def latent_from_windows(windows: torch.Tensor, windows_h: int, windows_w: int) -> torch.Tensor:
    """Inverse of :func:`detail_windows`: (nH*nW, g², C) -> (1, C, nH*g, nW*g)."""
    _, positions, c = windows.shape
    g = int(round(positions**0.5))
    latent = windows.view(windows_h, windows_w, g, g, c).permute(4, 0, 2, 1, 3)
    return latent.reshape(1, c, windows_h * g, windows_w * g)


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


def exact_token_bits(prior: IntegerTokenPrior, y_hat_fixed: torch.Tensor, tokens: torch.Tensor, windows_h: int,
                     windows_w: int, window_positions: int) -> float:
    """The information content of all windows' ``tokens`` (N, T) under the exact PMFs the coder uses,
    summed over groups of windows (all at once would hold every window's float64 activations)."""
    condition = detail_windows(y_hat_fixed, window_positions)
    context = neighbour_tokens(tokens, windows_h, windows_w)
    config = prior.config
    sequence = config.num_condition_tokens + (config.context_units + 1) * config.num_positions
    # The integer twin's float64 maps and its interpolated GELU's temporaries weigh about four float32
    # sequences of the same length.
    return sum(prior.exact_bits(condition[group], context[group], tokens[group])
               for group in window_groups(tokens.shape[0], 4 * sequence))

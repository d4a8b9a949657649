"""Window-attention (Swin) and ConvNeXt blocks of DLF's detail branch and latent adaptor (SYSTEMS.md 5.4).

Layout and names follow the DLF checkpoints (``norm_attn``, ``attention_block.to_qkv``, ``mlp_block.net``,
``upper_lower_mask`` ...), so official weights load without renaming. Swin blocks work on channels-last
maps (B, H, W, C) whose sides are multiples of the window; a stack (:func:`swin_stack`) alternates
plain and shifted blocks, and only its first block uses the relative position bias: every later block
learns a full (window², window²) bias table, as the reference does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.nn.tiling import inference_slices

HEAD_DIM = 64
# Fused scaled-dot-product attention; False computes softmax(q k^T / sqrt(d) + bias) v explicitly,
# as the reference implementation does (benchmarks/bench_dlf.py's in-process baseline).
FUSED_ATTENTION = True


# Inference runs the position- and window-wise parts of these blocks over bands of rows, so that
# their temporaries (the 4x-wide MLP layer, q/k/v) do not grow with the image: the largest band
# holds about this many positions. The bands depend on the map's size alone, never on a memory budget.
POSITIONS_PER_BAND = 2**14


def row_bands(height: int, width: int, multiple: int = 1) -> list[slice]:
    """Bands of rows (``multiple`` rows at least, and a multiple of it) covering ``height``; one band
    while training."""
    return inference_slices(height, max(multiple, POSITIONS_PER_BAND // max(1, width) // multiple * multiple))


def in_row_bands(function, x: torch.Tensor, multiple: int = 1, in_place: bool = False) -> torch.Tensor:
    """``function(x[:, rows], rows)`` for each band of rows of a channels-last map (B, H, W, C),
    written into one output map (``x`` itself if ``in_place``: each band's result depends on that
    band alone); ``function`` keeps the band's shape."""
    bands = row_bands(x.shape[1], x.shape[2], multiple)
    if len(bands) == 1:
        return function(x, bands[0])
    out = x if in_place else torch.empty_like(x)
    for rows in bands:
        out[:, rows] = function(x[:, rows], rows)
    return out


def heads_for(dim: int) -> int:
    """The reference's head count (64-wide heads); narrow test models get one head."""
    return max(1, dim // HEAD_DIM)


def shifted_window_masks(window: int, displacement: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The additive masks of a cyclically shifted window row/column: (upper_lower, left_right).

    After rolling the map by -displacement, the last row (column) of windows holds pixels from both
    edges of the map; a query may only attend to keys from its own side. Entries are 0 or -inf,
    indexed [query, key] in window-raster order.
    """
    size = window * window
    cut = displacement * window
    upper_lower = torch.zeros(size, size)
    upper_lower[-cut:, :-cut] = float("-inf")
    upper_lower[:-cut, -cut:] = float("-inf")
    left_right = torch.zeros(window, window, window, window)  # (query row, query col, key row, key col)
    left_right[:, -displacement:, :, :-displacement] = float("-inf")
    left_right[:, :-displacement, :, -displacement:] = float("-inf")
    return upper_lower, left_right.reshape(size, size)


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window², 2): (Δrow, Δcol) + window - 1, with Δ = key position - query position."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()], dim=-1)
    return coords[None, :, :] - coords[:, None, :] + window - 1


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows, optionally on a shifted grid."""

    def __init__(self, dim: int, window: int, shifted: bool, relative_bias: bool):
        super().__init__()
        self.heads = heads_for(dim)
        self.head_dim = dim // self.heads
        self.window = window
        self.shifted = shifted
        self.displacement = window // 2
        self.relative_bias = relative_bias
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Linear(dim, dim)
        if relative_bias:
            self.pos_embedding = nn.Parameter(torch.randn(2 * window - 1, 2 * window - 1) * 0.02)
            self.register_buffer("relative_index", relative_position_index(window), persistent=False)
        else:
            self.pos_embedding = nn.Parameter(torch.randn(window * window, window * window) * 0.02)
        if shifted:
            upper_lower, left_right = shifted_window_masks(window, self.displacement)
            # Parameters (never trained) rather than buffers because the checkpoints store them so.
            self.upper_lower_mask = nn.Parameter(upper_lower, requires_grad=False)
            self.left_right_mask = nn.Parameter(left_right, requires_grad=False)

    def position_bias(self) -> torch.Tensor:
        if self.relative_bias:
            index = self.relative_index
            return self.pos_embedding[index[..., 0], index[..., 1]]
        return self.pos_embedding

    def attention_bias(self, windows_h: int, windows_w: int) -> torch.Tensor:
        """(windows, 1, window², window²) additive bias: position bias plus the shift masks."""
        bias = self.position_bias().expand(windows_h * windows_w, 1, -1, -1)
        if not self.shifted:
            return bias
        bias = bias.clone()
        bias = bias.view(windows_h, windows_w, *bias.shape[1:])
        bias[-1] += self.upper_lower_mask  # last row of windows
        bias[:, -1] += self.left_right_mask  # last column of windows
        return bias.view(windows_h * windows_w, *bias.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.over_bands(lambda band, rows, attend: attend(band, rows), x)

    def over_bands(self, function, x: torch.Tensor) -> torch.Tensor:
        """``function(band, rows, attend)`` over bands of whole window rows of the map rolled onto the
        (shifted) window grid, rolled back: ``attend(band, rows)`` is this attention on such a band.
        Position-wise work (norms, MLP, residuals) commutes with the roll, so a block can run all of
        itself on the bands. A shifted map's bands overwrite its rolled copy, which nothing else holds."""
        height, width = x.shape[1:3]
        w = self.window
        if height % w or width % w:
            raise ValueError(f"window attention needs sides divisible by {w}, got {height}x{width}")
        if self.shifted:
            x = torch.roll(x, shifts=(-self.displacement, -self.displacement), dims=(1, 2))
        bias = self.attention_bias(height // w, width // w).to(x.dtype)
        bias_rows = bias.view(height // w, width // w, *bias.shape[1:])  # indexed by window row

        def attend(band: torch.Tensor, rows: slice) -> torch.Tensor:
            return self._attend(band, bias_rows[rows.start // w: rows.stop // w].flatten(0, 1))

        out = in_row_bands(lambda band, rows: function(band, rows, attend), x, w, in_place=self.shifted)
        if self.shifted:
            out = torch.roll(out, shifts=(self.displacement, self.displacement), dims=(1, 2))
        return out

    def _attend(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Attention inside the windows of a (B, H, W, C) map (rows and columns whole windows), with
        their (windows, 1, window², window²) bias."""
        b, height, width, dim = x.shape
        w = self.window
        nh, nw = height // w, width // w
        qkv = self.to_qkv(x).view(b, nh, w, nw, w, 3, self.heads, self.head_dim)
        # -> (3, b, windows, heads, window², head_dim)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, b * nh * nw, self.heads, w * w, self.head_dim)
        bias = bias.repeat(b, 1, 1, 1)
        if FUSED_ATTENTION:
            out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
        else:
            scores = qkv[0] @ qkv[1].transpose(-1, -2) * self.head_dim**-0.5 + bias
            out = scores.softmax(dim=-1) @ qkv[2]
        out = out.view(b, nh, nw, self.heads, w, w, self.head_dim).permute(0, 1, 4, 2, 5, 3, 6)
        return self.to_out(out.reshape(b, height, width, dim))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SwinBlock(nn.Module):
    """Pre-LN window attention and MLP (4x), each with a residual; channels-last input."""

    def __init__(self, dim: int, window: int, shifted: bool, relative_bias: bool, mlp_ratio: int = 4):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attention_block = WindowAttention(dim, window, shifted, relative_bias)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp_block = FeedForward(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            x = x + self.attention_block(self.norm_attn(x))
            return x + self.mlp_block(self.norm_mlp(x))
        # Inference: the whole block band by band of window rows, so that only the input, its rolled
        # copy and the output are map-sized (the norms, attention and residual sums are per band).
        return self.attention_block.over_bands(self._band, x)

    def _band(self, band: torch.Tensor, rows: slice, attend) -> torch.Tensor:
        band = band + attend(self.norm_attn(band), rows)
        return band + self.mlp_block(self.norm_mlp(band))


def swin_blocks(dim: int, depth: int, window: int) -> list[SwinBlock]:
    """Block i is shifted iff i is odd; only block 0 has the relative position bias."""
    return [SwinBlock(dim, window, shifted=i % 2 == 1, relative_bias=i == 0) for i in range(depth)]


class ChannelsLast(nn.Module):
    """(B, C, H, W) -> (B, H, W, C). Parameter-free, but it holds a Sequential index in the checkpoints."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class ChannelsFirst(nn.Module):
    """(B, H, W, C) -> (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


def swin_stack(dim: int, depth: int, window: int) -> nn.Sequential:
    """A channels-first stack: [to channels-last, Swin x depth, back] (checkpoint indices 1..depth)."""
    return nn.Sequential(ChannelsLast(), *swin_blocks(dim, depth, window), ChannelsFirst())


class ConvNeXtBlock(nn.Module):
    """DLF's ConvNeXt variant: the *input* is scaled per channel, then depthwise 5x5, LN, MLP (ratio 2),
    GELU; the residual adds the unscaled input and there is no output gain."""

    def __init__(self, dim: int, kernel: int = 5, mlp_ratio: int = 2):
        super().__init__()
        self.layer_scale = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.conv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x * self.layer_scale).permute(0, 2, 3, 1)
        h = in_row_bands(lambda band, rows: self.mlp(self.norm(band)), h)
        return h.permute(0, 3, 1, 2) + x

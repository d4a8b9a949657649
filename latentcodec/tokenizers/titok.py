"""The 1-D TiTok tokenizer (Yu et al. 2024) as DLF uses it: one independent sequence per 256x256 window.

Encoder: [CLS] + patch tokens + learned latent tokens -> ViT -> the latent tokens -> 1x1 conv to a
low-dimensional code, vector-quantised on the unit sphere. Decoder: [CLS] + mask tokens + the embedded
codes -> ViT -> features at the patch positions. Both expose their layer loop (``layers``) so that
DLF can interleave its Interactive Transform after chosen layers; names follow the TiTok checkpoints.

Sequences are (length, windows, width). Token maps are cut into windows in (B, nH, nW) raster order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from latentcodec.nn.transformer import ResidualAttentionBlock


@dataclass(frozen=True)
class TiTokConfig:
    width: int = 1024
    layers: int = 24
    heads: int = 16
    patch_size: int = 16
    grid: int = 16  # patches per window side: a window is grid * patch_size pixels
    num_tokens: int = 32
    token_dim: int = 12
    codebook_size: int = 4096

    @property
    def window_pixels(self) -> int:
        return self.grid * self.patch_size

    @property
    def sequence_length(self) -> int:
        return 1 + self.grid * self.grid + self.num_tokens


def map_to_windows(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, H, W) with H, W multiples of grid -> (B*nH*nW, grid*grid, C), windows in raster order."""
    b, c, h, w = x.shape
    nh, nw = h // grid, w // grid
    x = x.view(b, c, nh, grid, nw, grid).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b * nh * nw, grid * grid, c)


def windows_to_map(x: torch.Tensor, batch: int, windows_h: int, windows_w: int) -> torch.Tensor:
    """Inverse of :func:`map_to_windows`: (B*nH*nW, grid*grid, C) -> (B, C, nH*grid, nW*grid)."""
    n, length, c = x.shape
    grid = int(round(length**0.5))
    x = x.view(batch, windows_h, windows_w, grid, grid, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(batch, c, windows_h * grid, windows_w * grid)


def _scaled_randn(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * shape[-1] ** -0.5)


class TiTokEncoder(nn.Module):
    def __init__(self, config: TiTokConfig):
        super().__init__()
        self.config = config
        c = config.width
        self.patch_embed = nn.Conv2d(3, c, config.patch_size, stride=config.patch_size)
        self.class_embedding = _scaled_randn(1, c)
        self.positional_embedding = _scaled_randn(config.grid * config.grid + 1, c)
        self.latent_token_positional_embedding = _scaled_randn(config.num_tokens, c)
        self.ln_pre = nn.LayerNorm(c)
        self.transformer = nn.ModuleList(ResidualAttentionBlock(c, config.heads) for _ in range(config.layers))
        self.ln_post = nn.LayerNorm(c)
        self.conv_out = nn.Conv2d(c, config.token_dim, 1)

    def embed(self, patch_windows: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        """(N, grid², width) patch tokens and the (num_tokens, width) learned latent tokens -> (L, N, width)."""
        n = patch_windows.shape[0]
        cls = self.class_embedding.expand(n, 1, -1)
        x = torch.cat([cls, patch_windows], dim=1) + self.positional_embedding
        latents = (latent_tokens + self.latent_token_positional_embedding).expand(n, -1, -1)
        return self.ln_pre(torch.cat([x, latents], dim=1)).transpose(0, 1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(L, N, width) after the last layer -> (N, token_dim, 1, num_tokens) continuous tokens."""
        cfg = self.config
        latents = self.ln_post(x[1 + cfg.grid * cfg.grid:].transpose(0, 1))  # (N, T, width)
        # TiTok reinterprets the (N, T, width) memory as (N, width, T, 1) (no transpose); kept for the
        # pretrained weights, which learned conv_out on exactly this scrambled view.
        latents = latents.reshape(latents.shape[0], cfg.width, cfg.num_tokens, 1)
        return self.conv_out(latents).reshape(latents.shape[0], cfg.token_dim, 1, cfg.num_tokens)


class TiTokDecoder(nn.Module):
    def __init__(self, config: TiTokConfig):
        super().__init__()
        self.config = config
        c = config.width
        self.decoder_embed = nn.Linear(config.token_dim, c)
        self.class_embedding = _scaled_randn(1, c)
        self.positional_embedding = _scaled_randn(config.grid * config.grid + 1, c)
        self.mask_token = _scaled_randn(1, 1, c)
        self.latent_token_positional_embedding = _scaled_randn(config.num_tokens, c)
        self.ln_pre = nn.LayerNorm(c)
        self.transformer = nn.ModuleList(ResidualAttentionBlock(c, config.heads) for _ in range(config.layers))
        self.ln_post = nn.LayerNorm(c)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, token_dim, 1, num_tokens) codewords -> (L, N, width): [CLS, grid² masks, tokens]."""
        cfg = self.config
        n = codes.shape[0]
        tokens = self.decoder_embed(codes.reshape(n, cfg.token_dim, cfg.num_tokens).transpose(1, 2))
        tokens = tokens + self.latent_token_positional_embedding
        masks = self.mask_token.expand(n, cfg.grid * cfg.grid, -1)
        prefix = torch.cat([self.class_embedding.expand(n, 1, -1), masks], dim=1) + self.positional_embedding
        return self.ln_pre(torch.cat([prefix, tokens], dim=1)).transpose(0, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(L, N, width) after the last layer -> (N, grid², width) features at the patch positions."""
        grid = self.config.grid
        return self.ln_post(x[1:1 + grid * grid].transpose(0, 1))

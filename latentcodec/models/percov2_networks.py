"""PerCoV2's own networks (SYSTEMS.md 6.6.2-6.6.3): the hyper-encoder that turns the SD3 latent into a
coarse map, the cosine VQ that makes it a token map, the adapter that injects the decoded map into the
MMDiT, and the hierarchical order in which fixed-length token maps are written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.entropy.token_schedules import coding_order, hierarchical
from latentcodec.errors import ConfigError
from latentcodec.nn.vq import CosineVectorQuantizer

# The paper's token grids, in tokens per side of a 512x512 image (a 64x64 SD3 latent), and codebook sizes.
GRIDS = (8, 16, 32)
CODEBOOK_SIZES = (256, 1024)
REFERENCE_LATENT_SIDE = 64  # the SD3 latent side of a 512-pixel image: g = 64 / latent pixels per token


@dataclass(frozen=True)
class HyperConfig:
    """Hyper-encoder and VQ. ``grid`` is g, tokens per side at 512x512; each token covers 64/g latent
    positions per side, through log2(64/g) stride-2 blocks."""

    grid: int = 8
    codebook_size: int = 256
    latent_channels: int = 16
    width: int = 192
    residual_blocks: int = 9
    # Widths of the stride-2 blocks (the first log2(64/g) are used); capped at 512 as SYSTEMS.md 6.6.2
    # suggests, ~8 M smaller than PerCo(SD)'s doubling to 1536 at g = 8.
    down_widths: tuple[int, ...] = (384, 512, 512)
    hyper_channels: int = 320
    code_dim: int = 32
    commitment: float = 0.25
    adapter_channels: int = 64  # the injected channels beside the 16 of the noisy latent

    def __post_init__(self) -> None:
        if self.grid not in GRIDS:
            raise ConfigError(f"grid must be one of {GRIDS} (tokens per side at 512x512), got {self.grid}")
        if self.codebook_size not in CODEBOOK_SIZES:
            raise ConfigError(f"codebook_size must be one of {CODEBOOK_SIZES}, got {self.codebook_size}")
        if len(self.down_widths) < self.down_steps:
            raise ConfigError(f"grid {self.grid} needs {self.down_steps} down_widths, got {len(self.down_widths)}")

    @property
    def down_steps(self) -> int:
        return int(math.log2(REFERENCE_LATENT_SIDE // self.grid))

    @property
    def latent_stride(self) -> int:
        """Latent positions per token side."""
        return 2**self.down_steps

    @property
    def token_bits(self) -> int:
        return int(math.log2(self.codebook_size))


class ChannelNorm(nn.Module):
    """Normalisation over the channels of each position (HiFiC's ChannelNorm): independent of the batch
    and of the image size, so a crop and a whole image see the same statistics."""

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), ChannelNorm(channels), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), ChannelNorm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class HyperEncoder(nn.Module):
    """Normalised SD3 latent (B, 16, h, w) -> (B, hyper_channels, h/s, w/s), s = 64/g (PerCo's design,
    SYSTEMS.md 6.3, for 16 input channels)."""

    def __init__(self, config: HyperConfig):
        super().__init__()
        layers: list[nn.Module] = [ChannelNorm(config.latent_channels),
                                   nn.Conv2d(config.latent_channels, config.width, 3, padding=1)]
        layers += [ResidualBlock(config.width) for _ in range(config.residual_blocks)]
        channels = config.width
        for out in config.down_widths[: config.down_steps]:
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), ChannelNorm(out), nn.ReLU()]
            channels = out
        layers.append(nn.Conv2d(channels, config.hyper_channels, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.layers(latent)


class TokenOutput(NamedTuple):
    indices: torch.Tensor  # (B, gh, gw) int64
    hyper_latent: torch.Tensor  # (B, hyper_channels, gh, gw): the decoder's z_l (straight-through in training)
    loss: torch.Tensor  # VQ commitment + codebook terms (0 at inference)


class TokenQuantizer(nn.Module):
    """Cosine VQ in a low-dimensional code space (SYSTEMS.md 6.6.2): project to code_dim, quantise on the
    unit sphere, project back. The decoder rebuilds z_l from the indices alone."""

    def __init__(self, config: HyperConfig):
        super().__init__()
        self.down = nn.Conv2d(config.hyper_channels, config.code_dim, 1)
        self.vq = CosineVectorQuantizer(config.codebook_size, config.code_dim, beta=config.commitment)
        self.up = nn.Conv2d(config.code_dim, config.hyper_channels, 1)

    def forward(self, hyper: torch.Tensor) -> TokenOutput:
        vq = self.vq(self.down(hyper))
        return TokenOutput(vq.indices, self.up(vq.quantized), vq.loss)

    def dequantize(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, gh, gw) indices -> z_l (B, hyper_channels, gh, gw)."""
        return self.up(self.vq.lookup(indices))


class ConditionAdapter(nn.Module):
    """z_l -> the channels concatenated with the noisy latent: nearest upsampling to the latent grid, then
    a 1x1 conv (SYSTEMS.md 6.6.3 A)."""

    def __init__(self, config: HyperConfig):
        super().__init__()
        self.stride = config.latent_stride
        self.proj = nn.Conv2d(config.hyper_channels, config.adapter_channels, 1)

    def forward(self, hyper_latent: torch.Tensor) -> torch.Tensor:
        return self.proj(F.interpolate(hyper_latent, scale_factor=self.stride, mode="nearest"))


class LatentProbe(nn.Module):
    """Training only: z_l -> the normalised latent each token covers (a per-token MLP, then pixel shuffle to
    the latent grid). Its MSE to the true latent (``losses.latent_probe``) makes the tokens describe the
    latent from the first step: trained on the flow loss alone, the small preset's tokens used ~28 of 256
    codes after 3500 steps and the MMDiT ignored them (its one-step estimate at t = 1 was no better than
    the latent's mean), since neither side gives the other a gradient before the other is useful."""

    def __init__(self, config: HyperConfig, hidden: int = 256):
        super().__init__()
        stride = config.latent_stride
        self.layers = nn.Sequential(nn.Conv2d(config.hyper_channels, hidden, 1), nn.SiLU(),
                                    nn.Conv2d(hidden, config.latent_channels * stride * stride, 1),
                                    nn.PixelShuffle(stride))

    def forward(self, hyper_latent: torch.Tensor) -> torch.Tensor:
        return self.layers(hyper_latent)


def hierarchical_groups(rows: int, cols: int) -> torch.Tensor:
    """(rows, cols) group index of every token under the implicit hierarchical schedule (SYSTEMS.md 6.6.5;
    :func:`latentcodec.entropy.token_schedules.hierarchical`): 1, 3, 12, 48 tokens on an 8x8 map."""
    return hierarchical(rows, cols)


def hierarchical_order(rows: int, cols: int) -> torch.Tensor:
    """(rows * cols,) raster indices in coding order: group by group, raster order within a group."""
    return coding_order(hierarchical(rows, cols))

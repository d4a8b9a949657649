"""The f16 VQGAN of DLF in taming-transformers' module layout (SYSTEMS.md 5.6).

The blocks are GLC's (:mod:`latentcodec.tokenizers.vqgan`); only the module tree differs, so that
checkpoints written by taming (``decoder.up.3.block.0.nin_shortcut`` ...) load without renaming.
Attention is global over the latent map, as DLF runs it (GLC windows it at inference).
"""

from __future__ import annotations

import torch
from torch import nn

from latentcodec.nn.precision import run_in_precision
from latentcodec.nn.tiling import run_blocks
from latentcodec.nn.vq import VectorQuantizer
from latentcodec.tokenizers.vqgan import AttnBlock, Downsample, ResBlock, Swish, Upsample, VQGANConfig, group_norm


class TamingResBlock(ResBlock):
    shortcut_name = "nin_shortcut"


def dlf_vqgan_config(base_channels: int = 128, codebook_size: int = 256, latent_channels: int = 256,
                     channel_multipliers: tuple[int, ...] = (1, 1, 2, 2, 4)) -> VQGANConfig:
    return VQGANConfig(base_channels=base_channels, channel_multipliers=channel_multipliers,
                       encoder_res_blocks=2, generator_res_blocks=3, latent_channels=latent_channels,
                       codebook_size=codebook_size, norm_groups=32, attention_window=None)


class _Mid(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block_1 = TamingResBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups, None)
        self.block_2 = TamingResBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution: ``block`` (res blocks), ``attn`` (after each block, lowest level only) and
    ``downsample``/``upsample``."""

    def __init__(self, blocks: list[nn.Module], attentions: list[nn.Module], resample: tuple[str, nn.Module] | None):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attentions)
        self.resample_name = None
        if resample is not None:
            self.resample_name = resample[0]
            setattr(self, resample[0], resample[1])

    def chain(self) -> list[nn.Module]:
        """The level's modules in execution order."""
        modules: list[nn.Module] = []
        for i, block in enumerate(self.block):
            modules += [block, self.attn[i]] if len(self.attn) else [block]
        if self.resample_name is not None:
            modules.append(getattr(self, self.resample_name))
        return modules

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.chain():
            x = module(x)
        return x


def _level_blocks(in_channels: int, out_channels: int, count: int, groups: int,
                  with_attention: bool) -> tuple[list[nn.Module], list[nn.Module]]:
    """One resolution's res blocks (the first changes the width) and, at the lowest resolution, the
    attention block after each."""
    blocks = [TamingResBlock(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(count)]
    attentions = [AttnBlock(out_channels, groups, None) for _ in range(count)] if with_attention else []
    return blocks, attentions


class TamingEncoder(nn.Module):
    def __init__(self, config: VQGANConfig):
        super().__init__()
        nf, mult, groups = config.base_channels, config.channel_multipliers, config.norm_groups
        levels = len(mult)
        self.conv_in = nn.Conv2d(3, nf, 3, padding=1)
        channels, down = nf, []
        for level in range(levels):
            out_channels = nf * mult[level]
            blocks, attentions = _level_blocks(channels, out_channels, config.encoder_res_blocks, groups,
                                               level == levels - 1)
            channels = out_channels
            resample = ("downsample", Downsample(channels)) if level != levels - 1 else None
            down.append(_Level(blocks, attentions, resample))
        self.down = nn.ModuleList(down)
        self.mid = _Mid(channels, groups)
        self.norm_out = group_norm(channels, groups)
        self.conv_out = nn.Conv2d(channels, config.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down:
            x = level(x)
        return self.conv_out(Swish()(self.norm_out(self.mid(x))))


class TamingDecoder(nn.Module):
    # LatentCodec.set_memory_budget sets memory_budget: nothing downstream is entropy coded.
    follows_memory_budget = True
    follows_precision = True  # LatentCodec.set_precision sets compute_dtype

    def __init__(self, config: VQGANConfig):
        super().__init__()
        nf, mult, groups = config.base_channels, config.channel_multipliers, config.norm_groups
        levels = len(mult)
        channels = nf * mult[-1]
        self.conv_in = nn.Conv2d(config.latent_channels, channels, 3, padding=1)
        self.mid = _Mid(channels, groups)
        up: list[nn.Module] = [nn.Identity()] * levels
        for level in reversed(range(levels)):  # built from the lowest resolution, stored by level
            out_channels = nf * mult[level]
            blocks, attentions = _level_blocks(channels, out_channels, config.generator_res_blocks, groups,
                                               level == levels - 1)
            channels = out_channels
            resample = ("upsample", Upsample(channels)) if level != 0 else None
            up[level] = _Level(blocks, attentions, resample)
        self.up = nn.ModuleList(up)
        self.norm_out = group_norm(channels, groups)
        self.conv_out = nn.Conv2d(channels, 3, 3, padding=1)
        self.memory_budget: int | None = None  # bytes of activations at inference (latentcodec.nn.tiling)

    @property
    def last_layer(self) -> nn.Conv2d:
        return self.conv_out

    def chain(self) -> list[nn.Module]:
        """The decoder's modules in execution order (what tiled inference walks)."""
        modules = [self.conv_in, self.mid.block_1, self.mid.attn_1, self.mid.block_2]
        for level in reversed(self.up):
            modules += level.chain()
        return modules + [self.norm_out, Swish(), self.conv_out]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return run_in_precision(self, lambda code: run_blocks(self.chain(), code, self.memory_budget), z)


class TamingVQGAN(nn.Module):
    """``encoder`` + ``quant_conv`` (alignment targets, training only), ``quantize`` (its codebook is
    what the latent adaptor mixes), ``post_quant_conv`` + ``decoder``."""

    def __init__(self, config: VQGANConfig, with_encoder: bool = True):
        super().__init__()
        self.config = config
        self.encoder = TamingEncoder(config) if with_encoder else None
        self.quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1) if with_encoder else None
        self.quantize = VectorQuantizer(config.codebook_size, config.latent_channels)
        self.post_quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1)
        self.decoder = TamingDecoder(config)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> continuous latent (before the codebook)."""
        if self.encoder is None:
            raise RuntimeError("this VQGAN was built without its encoder (inference only)")
        return self.quant_conv(self.encoder(x))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(latent))

"""Tiled analysis and synthesis of PerCoV2's VAE (diffusers' AutoencoderKL) under a memory budget.

The VAE's encoder and decoder are run as chains of :mod:`latentcodec.nn.tiling` blocks, so large
images go tile by tile with exact GroupNorm statistics, as the VQGANs of GLC and DLF do. diffusers'
blocks share their layout with ours: a ResnetBlock2D without time embedding is GroupNorm, SiLU,
3x3 conv, GroupNorm, SiLU, 3x3 conv plus an optional 1x1 shortcut (:class:`ResBlock`); Upsample2D
is nearest x2 then a 3x3 conv (:class:`Upsample`); Downsample2D pads right and bottom by one, then a
stride-2 3x3 conv (:class:`Downsample`). Each is wrapped in our block, which holds the very same
submodules (no copy, nothing in the state dict changes). A block of any other configuration, and
the mid-block's global attention, run whole.

Synthesis follows the caller's budget (:meth:`LatentCodec.set_memory_budget`); without one the
decoder is diffusers' own ``vae.decode``. Analysis uses a fixed allowance
(:data:`VAE_ENCODER_ACTIVATION_BUDGET`), so that which tiles an image is encoded with, and so its
tokens, depend on the image alone and never on the budget of the process that wrote the file.
"""

from __future__ import annotations

import torch
from torch import nn

from latentcodec.nn.tiling import run_blocks
from latentcodec.tokenizers.vqgan import Downsample, ResBlock, Swish, Upsample

# Enough to encode a Kodak image whole with SD3-medium's VAE (three 128-channel maps of 768x512).
VAE_ENCODER_ACTIVATION_BUDGET = 640 * 2**20


class _Resnet(ResBlock):
    """A diffusers ResnetBlock2D (no time embedding, no resampling, scale factor 1) as our ResBlock."""

    def __init__(self, block: nn.Module):
        nn.Module.__init__(self)
        self.norm1, self.conv1, self.norm2, self.conv2 = block.norm1, block.conv1, block.norm2, block.conv2
        self.conv_out = block.conv_shortcut  # ResBlock.shortcut_name

    @staticmethod
    def fits(block: nn.Module) -> bool:
        return (type(block).__name__ == "ResnetBlock2D" and block.upsample is None and block.downsample is None
                and block.time_emb_proj is None and float(block.output_scale_factor) == 1.0
                and isinstance(block.nonlinearity, nn.SiLU) and isinstance(block.norm1, nn.GroupNorm)
                and isinstance(block.norm2, nn.GroupNorm) and block.conv1.kernel_size == (3, 3)
                and block.conv2.kernel_size == (3, 3) and block.conv1.padding == (1, 1)
                and block.conv2.padding == (1, 1)
                and (block.conv_shortcut is None or block.conv_shortcut.kernel_size == (1, 1)))


class _Upsample(Upsample):
    def __init__(self, block: nn.Module):
        nn.Module.__init__(self)
        self.conv = block.conv

    @staticmethod
    def fits(block: nn.Module) -> bool:
        return (type(block).__name__ == "Upsample2D" and block.use_conv and not block.use_conv_transpose
                and block.interpolate and block.norm is None and isinstance(block.conv, nn.Conv2d)
                and block.conv.kernel_size == (3, 3) and block.conv.padding == (1, 1))


class _Downsample(Downsample):
    def __init__(self, block: nn.Module):
        nn.Module.__init__(self)
        self.conv = block.conv

    @staticmethod
    def fits(block: nn.Module) -> bool:
        return (type(block).__name__ == "Downsample2D" and block.use_conv and block.padding == 0
                and block.norm is None and isinstance(block.conv, nn.Conv2d)
                and block.conv.kernel_size == (3, 3) and block.conv.stride == (2, 2))


def _tileable(block: nn.Module) -> nn.Module:
    if isinstance(block, (_Resnet, _Upsample, _Downsample)):
        return block  # adapted already (use_transposed_upsampling)
    for adapter in (_Resnet, _Upsample, _Downsample):
        if adapter.fits(block):
            return adapter(block)
    return block  # runs whole


def use_transposed_upsampling(vae: nn.Module) -> nn.Module:
    """Put our :class:`Upsample` in place of each diffusers Upsample2D of the VAE's decoder (the same
    ``conv`` module, so the state dict and its keys are unchanged): nearest x2 then a 3x3 conv as one
    stride-2 transposed conv, 16 instead of 36 multiply-adds per input pixel, in diffusers' own
    decode, in the tiled one and in training. A third of the small VAE decoder's multiply-adds are
    in those convs."""
    for block in vae.decoder.up_blocks:
        for index, sampler in enumerate(block.upsamplers or []):
            if _Upsample.fits(sampler):
                block.upsamplers[index] = _Upsample(sampler)
    return vae


def _mid_chain(mid: nn.Module) -> list[nn.Module]:
    chain = [_tileable(mid.resnets[0])]
    for attention, resnet in zip(mid.attentions, mid.resnets[1:]):
        if attention is not None:
            chain.append(attention)  # global attention: whole
        chain.append(_tileable(resnet))
    return chain


def decoder_chain(decoder: nn.Module) -> list[nn.Module]:
    """diffusers' Decoder.forward (no latent embeddings) as a list of blocks in execution order."""
    chain = [decoder.conv_in, *_mid_chain(decoder.mid_block)]
    for up in decoder.up_blocks:
        chain += [_tileable(resnet) for resnet in up.resnets]
        chain += [_tileable(sampler) for sampler in (up.upsamplers or [])]
    return chain + [decoder.conv_norm_out, Swish(), decoder.conv_out]


def encoder_chain(encoder: nn.Module) -> list[nn.Module]:
    """diffusers' Encoder.forward as a list of blocks in execution order."""
    chain = [encoder.conv_in]
    for down in encoder.down_blocks:
        chain += [_tileable(resnet) for resnet in down.resnets]
        chain += [_tileable(sampler) for sampler in (down.downsamplers or [])]
    return chain + [*_mid_chain(encoder.mid_block), encoder.conv_norm_out, Swish(), encoder.conv_out]


def _runs_as_chain(vae: nn.Module, coder: nn.Module) -> bool:
    """Whether ``coder`` (the VAE's encoder or decoder) is the layout the chains above spell out, and the
    VAE does not use diffusers' own (blending, inexact) tiling."""
    return (coder.mid_block is not None and isinstance(coder.conv_act, nn.SiLU)
            and isinstance(coder.conv_norm_out, nn.GroupNorm) and not getattr(vae, "use_tiling", False))


def vae_decode(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``vae.decode(z).sample``; at inference under a memory budget (``vae.memory_budget``, set by
    :meth:`LatentCodec.set_memory_budget`) the decoder's large maps go tile by tile."""
    budget = getattr(vae, "memory_budget", None)
    if budget is None or torch.is_grad_enabled() or not _runs_as_chain(vae, vae.decoder):
        return vae.decode(z).sample
    if vae.post_quant_conv is not None:
        z = vae.post_quant_conv(z)
    return run_blocks(decoder_chain(vae.decoder), z, budget)


def vae_encode_mode(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The posterior mode of ``vae.encode(x)``; at inference the encoder runs in tiles planned with
    the fixed :data:`VAE_ENCODER_ACTIVATION_BUDGET` (a Kodak image goes whole)."""
    if torch.is_grad_enabled() or not _runs_as_chain(vae, vae.encoder):
        return vae.encode(x).latent_dist.mode()
    moments = run_blocks(encoder_chain(vae.encoder), x, VAE_ENCODER_ACTIVATION_BUDGET, hold_next=False)
    if vae.quant_conv is not None:
        moments = vae.quant_conv(moments)
    return moments.chunk(2, dim=1)[0]  # DiagonalGaussianDistribution: mean, then log-variance

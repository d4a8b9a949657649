"""The f16 VQGAN used by GLC (SYSTEMS.md 2.3): encoder, generator and (training-only) codebook.

Layer order and names follow the official layout (``encoder.blocks.i``, ``generator.blocks.i``)
so official checkpoints load 1:1. Attention exists only at the latent resolution; in eval mode it
is restricted to non-overlapping windows of the latent (32x32 in the official model), which keeps
memory linear in image area, and in training mode it is global, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.nn.precision import run_in_precision
from latentcodec.nn.tiling import NormAffine, NormStatistics, Region, Tile, conv_on_tile, run_blocks
from latentcodec.nn.vq import VectorQuantizer


@dataclass(frozen=True)
class VQGANConfig:
    base_channels: int = 128
    channel_multipliers: tuple[int, ...] = (1, 1, 2, 2, 4)
    encoder_res_blocks: int = 2
    generator_res_blocks: int = 3
    latent_channels: int = 256
    codebook_size: int = 16384
    norm_groups: int = 32
    attention_window: int | None = 32  # latent positions per window side at inference; None: global
    # A fixed-structure low-pass path (not in the official model): the encoder writes the image's
    # f x f block means into latent channels 0-2 and the generator adds their bilinear upsampling to
    # its output, so colour and layout are right from the first step and the nets learn the rest.
    lowpass_path: bool = False

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.channel_multipliers) - 1)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm whose statistics, at inference on maps of TILED_INFERENCE_MIN_PIXELS positions
    or more, are summed in float64: torch's float32 reduction drifts over millions of positions
    (measured: 0.18 absolute error on a 4 MP map of values up to 17, three 8-bit levels in the
    image), more than tiling changes. Smaller maps and training keep torch's kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.shape[-2] * x.shape[-1] < TILED_INFERENCE_MIN_PIXELS:
            return super().forward(x)
        return NormStatistics.of_map(x, TILE_ELEMENTS).affine(self, x.dtype).apply(x)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return GroupNorm(groups, channels, eps=1e-6, affine=True)


# Fused scaled-dot-product attention; False: explicit softmax(q k^T / sqrt(c)) v, as taming does
# (the in-process baseline of benchmarks/bench_dlf.py).
FUSED_ATTENTION = True
# Maps of at least this many positions (about 1450x1450) run GroupNorm -> SiLU -> conv3x3 in row
# tiles, so that the normalised activation map is never materialised in full.
TILED_INFERENCE_MIN_PIXELS = 2**21
# Rows per tile are chosen so that one tile's activations stay near this many elements.
TILE_ELEMENTS = 2**24
# Bytes of activations the encoder may hold at inference, whatever the caller's memory budget:
# its output is entropy coded, and tiles change it by float rounding, which could flip a symbol,
# so its tiling must depend on the image alone for files not to depend on the budget. Enough
# to encode a Kodak image whole with the official preset (three 128-channel maps of 768x512).
ENCODER_ACTIVATION_BUDGET = 640 * 2**20


def norm_silu_conv_tiled(
    x: torch.Tensor,
    norm: nn.GroupNorm,
    conv: nn.Conv2d,
    out: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """conv(silu(norm(x))) [+ residual] for inference, computed in horizontal bands.

    GroupNorm statistics are gathered over the whole map first (in float64, band by band); each
    band then normalises its rows plus a one-row halo, applies SiLU, and convolves with the
    conv's own horizontal padding and zero rows at the map's top and bottom edges, which is
    what the untiled conv3x3(padding=1) sees there. ``out`` may alias ``residual`` (each band
    writes only rows it has already read from the residual).
    """
    n, c, height, width = x.shape
    band = max(1, TILE_ELEMENTS // max(1, c * width))
    scale, shift = NormStatistics.of_map(x, TILE_ELEMENTS).affine(norm, x.dtype)
    if out is None:
        out = torch.empty((n, conv.out_channels, height, width), dtype=x.dtype, device=x.device,
                          memory_format=_memory_format_of(x))
    for top in range(0, height, band):
        bottom = min(height, top + band)
        first, last = max(0, top - 1), min(height, bottom + 1)
        activation = F.silu(x[:, :, first:last] * scale + shift, inplace=True)
        activation = F.pad(activation, (0, 0, 1 if top == 0 else 0, 1 if bottom == height else 0))
        result = F.conv2d(activation, conv.weight, conv.bias, padding=(0, 1))
        if residual is not None:
            result += residual[:, :, top:bottom]
        out[:, :, top:bottom] = result
    return out


def _memory_format_of(x: torch.Tensor) -> torch.memory_format:
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place at inference: its input (a fresh GroupNorm output) is not needed afterwards.
        return F.silu(x, inplace=not torch.is_grad_enabled())

    # Pointwise, for tiled inference; never in place there (a tile may view the source map).
    def tile_input_region(self, region: Region, in_size: tuple[int, int], inner: bool = False) -> Region:
        return region

    def tile_output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return shape

    def tile_norms(self) -> list[tuple[nn.GroupNorm, bool]]:
        return []

    def tile_forward(self, tile: Tile, out_region: Region, stats, inner: bool = False) -> torch.Tensor:
        return F.silu(tile.crop(out_region))


class ResBlock(nn.Module):
    # The 1x1 conv on the identity path when widths differ; taming's checkpoints call it nin_shortcut.
    shortcut_name = "conv_out"

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        setattr(self, self.shortcut_name, shortcut)

    @property
    def shortcut(self) -> nn.Module | None:
        return getattr(self, self.shortcut_name)

    @property
    def untiled_maps(self) -> tuple[int, int]:
        """(input-sized, output-sized) maps alive at the peak of a whole-map pass (latentcodec.nn.tiling):
        conv1 reads the normalised input beside the block's input, conv2 and the shortcut hold the
        input and two output-sized maps; whichever is larger. A narrowing block (a 64 -> 32 channel
        one at 1 MP in PerCoV2's VAE) peaks in conv1."""
        return (2, 1) if self.conv1.in_channels > self.conv1.out_channels else (1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            h = self.conv1(F.silu(self.norm1(x)))
            h = self.conv2(F.silu(self.norm2(h)))
            return h + (x if self.shortcut is None else self.shortcut(x))
        if x.shape[-2] * x.shape[-1] >= TILED_INFERENCE_MIN_PIXELS:
            # Large maps: two full-size maps alive instead of three (three with a shortcut). The
            # block's input buffer is reused for its output, which is safe because the VQGAN loops
            # never read a block's input again.
            h = norm_silu_conv_tiled(x, self.norm1, self.conv1)
            out = x if self.shortcut is None else self.shortcut(x)
            return norm_silu_conv_tiled(h, self.norm2, self.conv2, out=out, residual=out)
        # Inference: every intermediate is released as soon as possible and activations and sums
        # happen in place.
        h = self.norm1(x)
        h = self.conv1(F.silu(h, inplace=True))
        normed = self.norm2(h)
        del h
        h = self.conv2(F.silu(normed, inplace=True))
        del normed
        return h.add_(x if self.shortcut is None else self.shortcut(x))

    # -- tiled inference (latentcodec.nn.tiling): the two 3x3 convs need a two-pixel halo -------
    def tile_input_region(self, region: Region, in_size: tuple[int, int], inner: bool = False) -> Region:
        return region.expand(1 if inner else 2, in_size)

    def tile_output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return self.conv2.out_channels, shape[1], shape[2]

    def tile_inner_channels(self) -> int:
        return self.conv1.out_channels

    def tile_norms(self) -> list[tuple[nn.GroupNorm, bool]]:
        return [(self.norm1, False), (self.norm2, True)]

    def tile_forward(self, tile: Tile, out_region: Region, stats: dict[nn.GroupNorm, NormAffine],
                     inner: bool = False) -> torch.Tensor:
        h = F.silu(stats[self.norm1].apply(tile.data), inplace=True)
        inner_region = out_region if inner else out_region.expand(1, tile.size)
        h = conv_on_tile(self.conv1, Tile(h, tile.region, tile.size), inner_region)
        if inner:
            return h
        h = F.silu(stats[self.norm2].apply(h), inplace=True)
        h = conv_on_tile(self.conv2, Tile(h, inner_region, tile.size), out_region)
        skip = tile.crop(out_region)
        return h.add_(skip if self.shortcut is None else self.shortcut(skip))


class AttnBlock(nn.Module):
    """Single-head self-attention over all channels, scale c^-1/2."""

    def __init__(self, channels: int, groups: int, window: int | None):
        super().__init__()
        self.window = window  # latent positions per window side at inference; None: global, as in training
        self.norm = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    @staticmethod
    def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) maps -> attention output of the same shape, over all H*W positions."""
        b, c, h, w = q.shape
        q_, k_, v_ = (t.reshape(b, 1, c, h * w).transpose(2, 3) for t in (q, k, v))
        if FUSED_ATTENTION:
            out = F.scaled_dot_product_attention(q_, k_, v_)
        else:
            out = (q_ @ k_.transpose(-1, -2) * c**-0.5).softmax(dim=-1) @ v_
        return out.transpose(2, 3).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        if self.training or self.window is None:
            out = self._attend(q, k, v)
        else:
            out = torch.empty_like(v)
            size = self.window
            for top in range(0, x.shape[2], size):
                for left in range(0, x.shape[3], size):
                    window = (slice(None), slice(None), slice(top, top + size), slice(left, left + size))
                    out[window] = self._attend(q[window], k[window], v[window])
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Zero-pad right/bottom by one, then a stride-2 3x3 conv without padding."""

    untiled_maps = (2, 1)  # the input and its padded copy, then the output (latentcodec.nn.tiling)

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))

    # Output row i reads padded input rows 2i..2i+2 (the last one past the map is the zero pad).
    def tile_input_region(self, region: Region, in_size: tuple[int, int], inner: bool = False) -> Region:
        height, width = in_size
        return Region(2 * region.top, 2 * region.left, min(height, 2 * region.bottom + 1),
                      min(width, 2 * region.right + 1))

    def tile_output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return self.conv.out_channels, (shape[1] - 2) // 2 + 1, (shape[2] - 2) // 2 + 1

    def tile_norms(self) -> list[tuple[nn.GroupNorm, bool]]:
        return []

    def tile_forward(self, tile: Tile, out_region: Region, stats, inner: bool = False) -> torch.Tensor:
        height, width = tile.size
        region = tile.region
        x = F.pad(tile.data, (0, int(region.right == width), 0, int(region.bottom == height)))
        out = self.conv(x)
        covered = Region(region.top // 2, region.left // 2, region.top // 2 + out.shape[2],
                         region.left // 2 + out.shape[3])
        return Tile(out, covered, ((height - 2) // 2 + 1, (width - 2) // 2 + 1)).crop(out_region)


def _phase_taps() -> torch.Tensor:
    """(4, 3): which taps d of a 3x3 kernel (rows, and likewise columns) land on tap k of the
    equivalent 4x4 transposed kernel. Output row 2m+p of conv3x3(nearest_up2(x)) reads x rows
    m + (p + d - 1) // 2, and a stride-2 transposed conv with padding 1 gives row 2m+p tap
    k = p + 1 - 2 * ((p + d - 1) // 2) of input row m + (p + d - 1) // 2."""
    taps = torch.zeros(4, 3)
    for phase in (0, 1):
        for d in range(3):
            taps[phase + 1 - 2 * ((phase + d - 1) // 2), d] += 1
    return taps


PHASE_TAPS = _phase_taps()


class Upsample(nn.Module):
    """Nearest x2 upsampling then a 3x3 conv, computed as one stride-2 transposed conv with a 4x4
    kernel derived from the same weights: 16 instead of 36 multiply-adds per input pixel and no
    upsampled copy (2.2x faster on the top level; the same map up to float rounding). The
    checkpoint layout is the official one (``conv``); ``transposed = False`` restores the literal
    upsample-then-conv (the benchmarks' model of the official implementation)."""

    transposed = True

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def transposed_weight(self) -> torch.Tensor:
        taps = PHASE_TAPS.to(self.conv.weight)
        return torch.einsum("kd,le,oide->iokl", taps, taps, self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.transposed:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return F.conv_transpose2d(x, self.transposed_weight(), self.conv.bias, stride=2, padding=1)

    # Output row i reads upsampled rows i-1..i+1, i.e. input rows (i-1)//2 .. (i+1)//2.
    def tile_input_region(self, region: Region, in_size: tuple[int, int], inner: bool = False) -> Region:
        height, width = in_size
        return Region(max(0, (region.top - 1) // 2), max(0, (region.left - 1) // 2),
                      min(height, region.bottom // 2 + 1), min(width, region.right // 2 + 1))

    def tile_output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return self.conv.out_channels, 2 * shape[1], 2 * shape[2]

    def tile_norms(self) -> list[tuple[nn.GroupNorm, bool]]:
        return []

    def tile_forward(self, tile: Tile, out_region: Region, stats, inner: bool = False) -> torch.Tensor:
        region, (height, width) = tile.region, tile.size
        if not self.transposed:
            upsampled = Tile(F.interpolate(tile.data, scale_factor=2.0, mode="nearest"),
                             Region(*(2 * edge for edge in region)), (2 * height, 2 * width))
            return conv_on_tile(self.conv, upsampled, out_region)
        # The transposed conv pads the tile with zeros, which is wrong only on the outermost output
        # row and column at an inner tile edge; tile_input_region's extra input row keeps those
        # outside out_region (and at the map's own edges zeros are right).
        out = self.forward(tile.data)
        return Tile(out, Region(*(2 * edge for edge in region)), (2 * height, 2 * width)).crop(out_region)


# Latent channels 0-2 carry LOWPASS_GAIN x the block means when the low-pass path is on; the gain
# makes them as large as the learned channels, so the codec's latent losses do not neglect them.
LOWPASS_GAIN = 2.0


@torch.no_grad()
def _init_lowpass(encoder: "VQGANEncoder", generator: "VQGANGenerator") -> None:
    """The low-pass path's start: identity between RGB and latent channels 0-2 (scaled by
    LOWPASS_GAIN) both ways, the encoder's learned part of those channels and the generator's last
    conv at zero, so the autoencoder begins as the block-mean image and learns the rest."""
    into_latent, out_of_latent = encoder.lowpass, generator.lowpass
    into_latent.weight.zero_()
    out_of_latent.weight.zero_()
    out_of_latent.bias.zero_()
    for rgb in range(3):
        into_latent.weight[rgb, rgb] = LOWPASS_GAIN
        out_of_latent.weight[rgb, rgb] = 1.0 / LOWPASS_GAIN
    encoder.quant_conv.weight[:3].zero_()
    encoder.quant_conv.bias[:3].zero_()
    generator.last_layer.weight.zero_()
    generator.last_layer.bias.zero_()


class VQGANEncoder(nn.Module):
    """Image in [-1, 1] -> continuous latent at 1/f (never vector-quantised on the coding path)."""

    # LatentCodec.set_precision sets compute_dtype (latentcodec.nn.precision).
    follows_precision = True

    def __init__(self, config: VQGANConfig):
        super().__init__()
        nf, mult, groups = config.base_channels, config.channel_multipliers, config.norm_groups
        levels = len(mult)
        blocks: list[nn.Module] = [nn.Conv2d(3, nf, 3, padding=1)]
        channels = nf
        for level in range(levels):
            out_channels = nf * mult[level]
            for _ in range(config.encoder_res_blocks):
                blocks.append(ResBlock(channels, out_channels, groups))
                channels = out_channels
                if level == levels - 1:
                    blocks.append(AttnBlock(channels, groups, config.attention_window))
            if level != levels - 1:
                blocks.append(Downsample(channels))
        blocks += [
            ResBlock(channels, channels, groups),
            AttnBlock(channels, groups, config.attention_window),
            ResBlock(channels, channels, groups),
            group_norm(channels, groups),
            Swish(),
            nn.Conv2d(channels, config.latent_channels, 3, padding=1),
        ]
        self.blocks = nn.ModuleList(blocks)
        self.quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1)
        self.factor = config.downsampling_factor
        self.lowpass = nn.Conv2d(3, config.latent_channels, 1, bias=False) if config.lowpass_path else None
        # Bytes of activations at inference; larger runs of blocks go tile by tile (None: whole).
        # Fixed, not the caller's budget: see ENCODER_ACTIVATION_BUDGET.
        self.memory_budget: int | None = ENCODER_ACTIVATION_BUDGET

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The low-pass term first: the tiled blocks may reuse buffers once they have read them.
        lowpass = self.lowpass(F.avg_pool2d(x, self.factor)) if self.lowpass is not None else None
        # The plan its files were written with (hold_next=False): a fixed allowance, not a bound.
        latent = run_in_precision(
            self, lambda image: self.quant_conv(run_blocks(self.blocks, image, self.memory_budget, hold_next=False)), x)
        return latent if lowpass is None else latent + lowpass


def upsample_bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)


# Latent rows per band of add_upsampled_in_bands: 16 rows of a 4000-wide image's 3-channel
# upsampling are 12 MB, against 144 MB for the whole map.
LOWPASS_BAND_ROWS = 16


def add_upsampled_in_bands(x: torch.Tensor, small: torch.Tensor, factor: int) -> torch.Tensor:
    """``x += upsample_bilinear(small, factor)`` in place, one band of ``small``'s rows at a time,
    so the full-size upsampled map never exists. Each band is upsampled with one row of halo on
    either side (bilinear output rows near a band's edge read the neighbouring input row), which
    makes its rows the whole map's up to float rounding: the sampling positions (i + 1/2) / f - 1/2
    are shifted by whole input rows and so computed exactly alike, and the map's own edges clamp
    as before."""
    height = small.shape[-2]
    for top in range(0, height, LOWPASS_BAND_ROWS):
        bottom = min(height, top + LOWPASS_BAND_ROWS)
        first, last = max(0, top - 1), min(height, bottom + 1)
        band = upsample_bilinear(small[:, :, first:last], factor)
        offset = (top - first) * factor
        x[:, :, top * factor : bottom * factor] += band[:, :, offset : offset + (bottom - top) * factor]
    return x


class VQGANGenerator(nn.Module):
    """Latent -> image (nominal range [-1, 1]; no output tanh, callers clamp)."""

    # LatentCodec.set_memory_budget sets memory_budget: nothing downstream is entropy coded.
    follows_memory_budget = True
    follows_precision = True

    def __init__(self, config: VQGANConfig):
        super().__init__()
        nf, mult, groups = config.base_channels, config.channel_multipliers, config.norm_groups
        levels = len(mult)
        channels = nf * mult[-1]
        self.post_quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1)
        blocks: list[nn.Module] = [
            nn.Conv2d(config.latent_channels, channels, 3, padding=1),
            ResBlock(channels, channels, groups),
            AttnBlock(channels, groups, config.attention_window),
            ResBlock(channels, channels, groups),
        ]
        for level in reversed(range(levels)):
            out_channels = nf * mult[level]
            for _ in range(config.generator_res_blocks):
                blocks.append(ResBlock(channels, out_channels, groups))
                channels = out_channels
                if level == levels - 1:
                    blocks.append(AttnBlock(channels, groups, config.attention_window))
            if level != 0:
                blocks.append(Upsample(channels))
        blocks += [group_norm(channels, groups), Swish(), nn.Conv2d(channels, 3, 3, padding=1)]
        self.blocks = nn.ModuleList(blocks)
        self.factor = config.downsampling_factor
        self.lowpass = nn.Conv2d(config.latent_channels, 3, 1) if config.lowpass_path else None
        self.memory_budget: int | None = None  # as VQGANEncoder.memory_budget, set by the codec's budget

    @property
    def last_layer(self) -> nn.Conv2d:
        """The final conv, on whose weights the adaptive GAN weight is computed."""
        return self.blocks[-1]

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = run_in_precision(
            self, lambda code: run_blocks(self.blocks, self.post_quant_conv(code), self.memory_budget), latent)
        if self.lowpass is None:
            return x
        if torch.is_grad_enabled():
            return x + upsample_bilinear(self.lowpass(latent), self.factor)
        return add_upsampled_in_bands(x, self.lowpass(latent), self.factor)


class VQGAN(nn.Module):
    """Encoder + generator, with the codebook only when training (it is unused at test)."""

    def __init__(self, config: VQGANConfig, with_codebook: bool = False, with_encoder: bool = True):
        super().__init__()
        self.config = config
        self.encoder = VQGANEncoder(config) if with_encoder else None
        self.quantize = VectorQuantizer(config.codebook_size, config.latent_channels) if with_codebook else None
        self.generator = VQGANGenerator(config)
        if config.lowpass_path and self.encoder is not None:  # a generator alone gets its weights loaded
            _init_lowpass(self.encoder, self.generator)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> continuous latent (the interface DLF shares with TamingVQGAN)."""
        if self.encoder is None:
            raise RuntimeError("this VQGAN was built without its encoder (inference only)")
        return self.encoder(x)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.generator(latent)


@torch.no_grad()
def rescale_latent(vqgan: VQGAN, factor: float) -> None:
    """Divide the latent by ``factor`` without changing what the autoencoder computes: E's last 1x1
    conv (``quant_conv``) is divided by it, G's first (``post_quant_conv``) takes it back on its
    input weights, and the codebook (if any) is divided too, so nearest-codeword indices stay the
    same. Used before a codec is trained on the latent, whose freshly initialised gated transforms
    diverge on a latent with a large spread."""
    if not factor > 0:
        raise ValueError(f"latent rescale factor must be positive, got {factor}")
    quant = vqgan.encoder.quant_conv
    quant.weight.div_(factor)
    if quant.bias is not None:
        quant.bias.div_(factor)
    vqgan.generator.post_quant_conv.weight.mul_(factor)
    if vqgan.encoder.lowpass is not None:
        vqgan.encoder.lowpass.weight.div_(factor)
        vqgan.generator.lowpass.weight.mul_(factor)
    if vqgan.quantize is not None:
        vqgan.quantize.embedding.weight.div_(factor)

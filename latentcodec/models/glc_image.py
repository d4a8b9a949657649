"""GLC-image: Generative Latent Coding (CVPR 2024), SYSTEMS.md section 2.

Transform coding inside the continuous latent of a VQGAN: y = enc(E(x)), a vector-quantised
hyperprior z (fixed-length 14-bit indices), a four-step masked Gaussian conditional for y, and
the VQGAN generator as decoder. Module names follow the official state-dict layout.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from latentcodec.bitstream import ImageHeader, read_image_file, write_image_file
from latentcodec.entropy import (
    DEFAULT_SCALE_TABLE,
    EntropyDecoder,
    EntropyEncoder,
    gaussian_residual_bits,
    pack_indices,
    packed_size,
    unpack_indices,
)
from latentcodec.entropy.masked_gaussian import (
    MaskedStepsResult,
    decode_masked,
    decode_masked_fixed,
    encode_masked,
    encode_masked_fixed,
    quadtree_context_fn,
    quadtree_masks,
    quantize_masked,
    split_prior,
    split_prior_fixed,
)
from latentcodec.entropy.coder import FLOAT_FORMAT_HINT
from latentcodec.errors import BitstreamError, WeightsError
from latentcodec.models.base import LatentCodec
from latentcodec.nn.code_predictor import CodePredictor, CodePredictorConfig
from latentcodec.nn import integer
from latentcodec.nn.dcvc import DepthConvBlock, DepthConvBlock2, ResidualBlockUpsample, conv1x1, conv3x3
from latentcodec.nn.integer import integer_twin, register_integer_twin
from latentcodec.nn.vq import VectorQuantizer
from latentcodec.ratecontrol import interpolated_gain, resize_image, split_rate
from latentcodec.tokenizers.vqgan import VQGAN, VQGANConfig

# z is at 1/4 of the VQGAN latent (two stride-2 convs in hyper_enc).
HYPER_DOWNSAMPLING = 4


@dataclass(frozen=True)
class GLCImageConfig:
    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    num_rates: int = 4
    z_codebook_size: int = 16384
    code_predictor: CodePredictorConfig = field(default_factory=CodePredictorConfig)

    @property
    def latent_channels(self) -> int:
        return self.vqgan.latent_channels

    @property
    def pad_multiple(self) -> int:
        return self.vqgan.downsampling_factor * HYPER_DOWNSAMPLING

    @property
    def z_index_bits(self) -> int:
        return max(1, (self.z_codebook_size - 1).bit_length())

    @classmethod
    def official(cls) -> "GLCImageConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "GLCImageConfig":
        return cls(
            vqgan=VQGANConfig(
                base_channels=16,
                channel_multipliers=(1, 1, 2, 2, 4),
                encoder_res_blocks=1,
                generator_res_blocks=1,
                latent_channels=32,
                codebook_size=256,
                norm_groups=8,
                attention_window=32,
            ),
            num_rates=4,
            z_codebook_size=16384,
            code_predictor=CodePredictorConfig(dim=32, layers=1, heads=2, mlp_dim=64, sequence_length=16),
        )

    @classmethod
    def small(cls) -> "GLCImageConfig":
        """The CPU-trainable shipped default: a 32-channel VQGAN with a 64-channel latent.

        The z codebook keeps the official 16384 entries (14-bit indices), so files share the
        official container layout; the VQGAN codebook (training targets only) is smaller.
        The code heads see 128x128 training crops (8x8 latent positions).
        """
        return cls(
            vqgan=VQGANConfig(
                base_channels=32,
                channel_multipliers=(1, 1, 2, 2, 4),
                encoder_res_blocks=1,
                generator_res_blocks=1,
                latent_channels=64,
                codebook_size=1024,
                norm_groups=16,
                attention_window=32,
            ),
            num_rates=4,
            z_codebook_size=16384,
            code_predictor=CodePredictorConfig(dim=128, layers=2, heads=4, mlp_dim=256, sequence_length=64),
        )


    @classmethod
    def small_lowpass(cls) -> "GLCImageConfig":
        """``small`` with the VQGAN's low-pass path (VQGANConfig.lowpass_path): the issue-10 stage-I
        recipe, which starts from the block-mean image instead of learning colour and layout."""
        small = cls.small()
        return replace(small, vqgan=replace(small.vqgan, lowpass_path=True))


PRESETS = {"official": GLCImageConfig.official, "small": GLCImageConfig.small, "tiny": GLCImageConfig.tiny,
           "small_lowpass": GLCImageConfig.small_lowpass}


def interpolate_rows(table: torch.Tensor, levels: int) -> torch.Tensor:
    """Linear resampling of a (rows, C) table to (levels, C) rows, first and last rows kept (what
    bilinear interpolation with aligned corners does along one axis), in float64.

    Not F.interpolate: its float32 kernels differ in the last bit between CPU ISAs (an FMA or not),
    and these gains feed the portable integer path, which must see the same values on every machine.
    Each float64 step here is one correctly rounded operation; the result differs from the
    reference's float32 interpolation by a few float32 ulps (at most 1.93 eps relative, measured).
    """
    rows = table.shape[0]
    values = table.to(torch.float64)
    if rows == 1 or levels == 1:
        return values[:1].expand(levels, -1).clone()
    position = torch.arange(levels, dtype=torch.float64) * (rows - 1) / (levels - 1)
    lower = position.floor().clamp(max=rows - 2).to(torch.int64)
    fraction = (position - lower.to(torch.float64)).unsqueeze(1)
    low, high = values[lower], values[lower + 1]
    return low + (high - low) * fraction


def z_grid(height: int, width: int, pad_multiple: int) -> tuple[int, int]:
    """Rows and columns of z for an image: one position per pad_multiple x pad_multiple block."""
    return math.ceil(height / pad_multiple), math.ceil(width / pad_multiple)


class LatentTransform(nn.Module):
    """Two DCB2 stages with a per-rate channel gain in between (enc/dec of GLC)."""

    def __init__(self, channels: int, first: str, second: str):
        super().__init__()
        self.stage_names = (first, second)
        setattr(self, first, nn.Sequential(DepthConvBlock2(channels), DepthConvBlock2(channels)))
        setattr(self, second, nn.Sequential(DepthConvBlock2(channels), DepthConvBlock2(channels)))

    def forward(self, x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        first, second = (getattr(self, name) for name in self.stage_names)
        return second(first(x) * gain)


class IntegerLatentTransform(nn.Module):
    def __init__(self, transform: LatentTransform):
        super().__init__()
        first, second = (getattr(transform, name) for name in transform.stage_names)
        self.first, self.second = integer_twin(first), integer_twin(second)

    def forward(self, x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return self.second(integer.scale_by_gain(self.first(x), gain))


register_integer_twin(LatentTransform)(IntegerLatentTransform)


class IntegerDecoderSide(nn.Module):
    """The integer twins of every decoder-side net of GLC-image up to the decoded latent: the
    hyper decoder, prior fusion, spatial-prior reduction, adaptors and context net, and ``dec``.
    With them, files decode to the same symbols and the same latent on every machine."""

    def __init__(self, nets: nn.ModuleList):
        super().__init__()
        hyper_dec, fusion, reduction, adaptor_1, adaptor_2, adaptor_3, spatial_prior, dec = nets
        self.hyper_dec = integer_twin(hyper_dec)
        self.y_prior_fusion = integer_twin(fusion)
        self.y_spatial_prior_reduction = integer_twin(reduction)
        self.adaptors = nn.ModuleList([integer_twin(a) for a in (adaptor_1, adaptor_2, adaptor_3)])
        self.y_spatial_prior = integer_twin(spatial_prior)
        self.dec = integer_twin(dec)

    def prior(self, z_hat: torch.Tensor) -> torch.Tensor:
        """Float z codewords (exact stored values) -> fixed-point prior parameters."""
        return self.y_prior_fusion(self.hyper_dec(integer.to_fixed(z_hat)))

    def context_fn(self, prior_fixed: torch.Tensor):
        return quadtree_context_fn(self.y_spatial_prior_reduction, self.adaptors, self.y_spatial_prior, prior_fixed)


class GLCImageOutput(NamedTuple):
    """What ``GLCImage.forward`` returns for training."""

    x_hat: torch.Tensor | None  # generator output on the padded input, [-1, 1] nominal, unclamped
    latent: torch.Tensor  # E(x): continuous VQGAN encoder output
    latent_hat: torch.Tensor  # decoded latent fed to the generator
    y_bits: torch.Tensor  # (B, C, H, W) estimated bits per element of y (official estimator)
    z_bits: torch.Tensor  # (B,) fixed-length bits of the z indices
    vq_loss: torch.Tensor  # z_vq commitment/codebook loss
    code_logits: torch.Tensor | None  # (B, HW, K) code-prediction logits on latent_hat
    code_targets: torch.Tensor | None  # (B, HW) VQGAN ground-truth indices of E(x)
    num_pixels: int  # unpadded H*W per image (the bpp denominator)


class EncodedImage(NamedTuple):
    """Every intermediate of the encoder side, for coding, estimation and reference checks."""

    latent: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor
    z_indices: torch.Tensor
    z_hat: torch.Tensor
    hyper_params: torch.Tensor
    prior_params: torch.Tensor
    steps: MaskedStepsResult
    latent_hat: torch.Tensor
    vq_loss: torch.Tensor  # z_vq commitment/codebook loss (0 at inference)
    latent_hat_fixed: torch.Tensor | None = None  # portable path: the exact fixed-point decoded latent


class EncodeResult(NamedTuple):
    data: bytes  # the whole file
    latent_hat: torch.Tensor  # what decode_latent(data) reproduces exactly
    estimated_bits: float  # official estimate: Gaussian self-information of y + fixed z bits


class GLCImage(LatentCodec):
    model_name = "glc-image"
    config_class = GLCImageConfig
    optional_prefixes = ("code_pred_loss.", "code_pred_pix_loss.", "vqgan.quantize.")
    # Any rate on the 1/256 grid between the trained levels (latentcodec.ratecontrol).
    continuous_rates = True

    def __init__(self, config: GLCImageConfig, with_training_modules: bool = False):
        super().__init__(config)
        n = config.latent_channels
        self.with_training_modules = with_training_modules
        self.vqgan = VQGAN(config.vqgan, with_codebook=with_training_modules)
        self.q_enc = nn.Parameter(torch.ones(config.num_rates, n, 1, 1))
        self.q_dec = nn.Parameter(torch.ones(config.num_rates, n, 1, 1))
        self.enc = LatentTransform(n, "enc_1", "enc_2")
        self.dec = LatentTransform(n, "dec_1", "dec_2")
        self.hyper_enc = nn.Sequential(
            DepthConvBlock(n, n), conv3x3(n, n, stride=2), nn.LeakyReLU(0.01), conv3x3(n, n, stride=2)
        )
        self.hyper_dec = nn.Sequential(ResidualBlockUpsample(n, n), ResidualBlockUpsample(n, n), DepthConvBlock(n, n))
        self.z_vq = VectorQuantizer(config.z_codebook_size, n)
        self.y_prior_fusion = nn.Sequential(DepthConvBlock(n, 2 * n), DepthConvBlock(2 * n, 3 * n))
        self.y_spatial_prior_reduction = conv1x1(3 * n, n)
        self.y_spatial_prior_adaptor_1 = DepthConvBlock(2 * n, 2 * n)
        self.y_spatial_prior_adaptor_2 = DepthConvBlock(2 * n, 2 * n)
        self.y_spatial_prior_adaptor_3 = DepthConvBlock(2 * n, 2 * n)
        self.y_spatial_prior = nn.Sequential(*[DepthConvBlock(2 * n, 2 * n) for _ in range(3)])
        if with_training_modules:
            k = config.vqgan.codebook_size
            self.code_pred_loss = CodePredictor(config.code_predictor, n, k)
            self.code_pred_pix_loss = CodePredictor(config.code_predictor, n, k)
        else:
            self.code_pred_loss = None
            self.code_pred_pix_loss = None
        self.memory_format = torch.contiguous_format
        self.set_memory_format(torch.channels_last)

    def set_memory_format(self, memory_format: torch.memory_format) -> "GLCImage":
        """NHWC (default) runs oneDNN's convolutions about twice as fast on CPU, where the
        full-resolution VQGAN layers dominate; NCHW follows the reference arithmetic order more
        closely (the official test vectors were made with it)."""
        self.memory_format = memory_format
        self.vqgan.to(memory_format=memory_format)
        return self

    def interpolate_rates(self, levels: int) -> "GLCImage":
        """Resample q_enc/q_dec along the rate axis to ``levels`` rows (bilinear, corners aligned),
        in place: GLC-video's I-frame model is the image model with 64 such levels (SYSTEMS.md 3.1).
        The config's num_rates follows, so save_pretrained/from_pretrained round-trip."""
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be a positive integer, got {levels!r}")
        with torch.no_grad():
            for name in ("q_enc", "q_dec"):
                table = getattr(self, name)
                resampled = interpolate_rows(table.detach().flatten(1), levels).to(table.dtype)
                setattr(self, name, nn.Parameter(resampled.view(levels, -1, 1, 1).contiguous(),
                                                 requires_grad=table.requires_grad))
        self.config = dataclasses.replace(self.config, num_rates=levels)
        return self

    # -- shapes and the container layout ------------------------------------------------
    @property
    def num_rates(self) -> int:
        return self.config.num_rates

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        m = self.config.pad_multiple
        return math.ceil(height / m) * m, math.ceil(width / m) * m

    def z_positions(self, height: int, width: int) -> int:
        return math.prod(z_grid(height, width, self.config.pad_multiple))

    @staticmethod
    def section_layout(header: ImageHeader, z_index_bits: int = 14) -> list[int | None]:
        """Section 0: packed z indices (length derived from the size), section 1: the y stream.

        The default index width is the official 16384-entry z codebook's, which every shipped
        GLC-image model uses, so ``latentcodec info`` can split a file without loading weights.
        """
        positions = math.prod(z_grid(header.coded_height, header.coded_width, GLCImageConfig().pad_multiple))
        return [packed_size(positions, z_index_bits), None]

    def layout(self, header: ImageHeader) -> list[int | None]:
        return self.section_layout(header, self.config.z_index_bits)

    # -- building blocks -------------------------------------------------------------
    def _rate_gain(self, table: torch.Tensor, rate_index: int | float | torch.Tensor) -> torch.Tensor:
        """The gain row of a rate: indexed for whole rates (and training's (B,) tensors),
        interpolated between the two neighbouring rows for a rate on the 1/256 grid."""
        if isinstance(rate_index, torch.Tensor):
            return table[rate_index]
        if isinstance(rate_index, int) and not 0 <= rate_index < self.num_rates:
            raise ValueError(f"rate index {rate_index} out of range 0..{self.num_rates - 1}")
        return interpolated_gain(table, rate_index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] image -> [-1, 1], replicate-padded right/bottom to a multiple of 64."""
        # Built in one buffer (no shifted, padded and re-laid-out copies): a 12 MP image is 145 MB.
        height, width = x.shape[-2:]
        padded_h, padded_w = self.padded_size(height, width)
        out = torch.empty((*x.shape[:-2], padded_h, padded_w), dtype=x.dtype, device=x.device,
                          memory_format=self.memory_format)
        out[..., :height, :width] = x
        out[..., :height, width:] = x[..., width - 1 :]
        out[..., height:, :] = out[..., height - 1 : height, :]
        return out.sub_(0.5).mul_(2.0)

    def masks(self, latent_like: torch.Tensor) -> torch.Tensor:
        _, c, h, w = latent_like.shape
        return quadtree_masks(c, h, w, device=latent_like.device)

    def prior_from_z_hat(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hyper_params = self.hyper_dec(z_hat)
        return hyper_params, self.y_prior_fusion(hyper_params)

    def context_fn(self, prior_params: torch.Tensor):
        """The step k >= 1 context network, bound to this image's prior parameters."""
        adaptors = (self.y_spatial_prior_adaptor_1, self.y_spatial_prior_adaptor_2, self.y_spatial_prior_adaptor_3)
        return quadtree_context_fn(self.y_spatial_prior_reduction, adaptors, self.y_spatial_prior, prior_params)

    def integer_decoder_side(self) -> IntegerDecoderSide:
        nets = nn.ModuleList([self.hyper_dec, self.y_prior_fusion, self.y_spatial_prior_reduction,
                              self.y_spatial_prior_adaptor_1, self.y_spatial_prior_adaptor_2,
                              self.y_spatial_prior_adaptor_3, self.y_spatial_prior, self.dec])
        return self.integer_twin_of("decoder_side", IntegerDecoderSide, nets)

    def integer_twin_bytes(self) -> int:
        # Built here if not yet: decoding a portable file builds them anyway (197 MB, official preset).
        return sum(b.numel() * b.element_size() for b in self.integer_decoder_side().buffers())

    def z_bits_per_image(self, height: int, width: int) -> int:
        return self.z_positions(height, width) * self.config.z_index_bits

    # -- encoder side ------------------------------------------------------------------
    def analyse(self, x_padded: torch.Tensor, rate_index: int | float | torch.Tensor, encoder=None) -> EncodedImage:
        """Run the encoder side on a padded [-1, 1] image; code y into ``encoder`` when given."""
        return self.analyse_latent(self.vqgan.encoder(x_padded), rate_index, encoder)

    def analyse_latent(self, latent: torch.Tensor, rate_index: int | float | torch.Tensor,
                       encoder=None) -> EncodedImage:
        """``analyse`` from the VQGAN encoder's output, which does not depend on the rate (rate
        control reuses it across trial rates)."""
        y = self.enc(latent, self._rate_gain(self.q_enc, rate_index))
        z = self.hyper_enc(y)
        vq = self.z_vq(z)
        hyper_params, prior_params = self.prior_from_z_hat(vq.quantized)
        prior = split_prior(prior_params)
        masks = self.masks(y)
        context = self.context_fn(prior_params)
        if encoder is None:
            steps = quantize_masked(y, prior, masks, context)
        else:
            steps = encode_masked(y, prior, masks, context, encoder, DEFAULT_SCALE_TABLE)
        latent_hat = self.dec(steps.y_hat, self._rate_gain(self.q_dec, rate_index))
        return EncodedImage(latent, y, z, vq.indices, vq.quantized, hyper_params, prior_params, steps, latent_hat, vq.loss)

    def analyse_portable(self, x_padded: torch.Tensor, rate_index: int | float, encoder) -> EncodedImage:
        """The encoder side on the exact integer path: y and z in float (only the encoder sees them),
        every entropy parameter and the decoded latent in fixed point."""
        return self.analyse_portable_latent(self.vqgan.encoder(x_padded), rate_index, encoder)

    def analyse_portable_latent(self, latent: torch.Tensor, rate_index: int | float, encoder) -> EncodedImage:
        y = self.enc(latent, self._rate_gain(self.q_enc, rate_index))
        z = self.hyper_enc(y)
        vq = self.z_vq(z)
        nets = self.integer_decoder_side()
        prior_fixed = nets.prior(vq.quantized)
        steps = encode_masked_fixed(y, split_prior_fixed(prior_fixed), self.masks(y), nets.context_fn(prior_fixed),
                                    encoder, DEFAULT_SCALE_TABLE)
        latent_hat_fixed = nets.dec(steps.y_hat_fixed, self._rate_gain(self.q_dec, rate_index))
        return EncodedImage(latent, y, z, vq.indices, vq.quantized, None, integer.from_fixed(prior_fixed), steps,
                            integer.from_fixed(latent_hat_fixed), vq.loss, latent_hat_fixed)

    def forward(
        self, x: torch.Tensor, rate_index: int | torch.Tensor = 0, decode_pixels: bool = True
    ) -> GLCImageOutput:
        """Training forward on a [0, 1] batch; rate_index may be an int or a (B,) tensor of rates."""
        height, width = x.shape[-2:]
        encoded = self.analyse(self.pad(x), rate_index)
        steps, latent, latent_hat = encoded.steps, encoded.latent, encoded.latent_hat
        y_bits = gaussian_residual_bits(steps.symbols, steps.scales)
        z_bits = torch.full((x.shape[0],), float(self.z_bits_per_image(height, width)), device=x.device)
        x_hat = self.vqgan.generator(latent_hat) if decode_pixels else None
        code_logits = code_targets = None
        if self.code_pred_loss is not None and latent_hat.shape[-2] * latent_hat.shape[-1] == (
            self.config.code_predictor.sequence_length
        ):
            code_logits = self.code_pred_loss(latent_hat)
            with torch.no_grad():
                code_targets = self.vqgan.quantize.indices(latent).flatten(1)
        return GLCImageOutput(
            x_hat, latent, latent_hat, y_bits, z_bits, encoded.vq_loss, code_logits, code_targets, height * width
        )

    @torch.inference_mode()
    def estimate_bits(self, x: torch.Tensor, rate_index: int | float = 0) -> float:
        """The official rate estimate (Gaussian self-information of y + fixed z bits), no file written."""
        height, width = x.shape[-2:]
        return self.estimate_bits_of_latent(self.vqgan.encoder(self.pad(x)), rate_index, height, width)

    @torch.inference_mode()
    def estimate_bits_of_latent(self, latent: torch.Tensor, rate_index: int | float, height: int, width: int) -> float:
        encoded = self.analyse_latent(latent, rate_index)
        y_bits = gaussian_residual_bits(encoded.steps.symbols, encoded.steps.scales).sum().item()
        return y_bits + self.z_bits_per_image(height, width)

    # -- real coding -------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, x: torch.Tensor, rate_index: int | float = 0, scale: int = 0) -> "EncodeResult":
        """[0, 1] image (1, 3, H, W) -> the file, the decoded latent the decoder will reproduce,
        and the official rate estimate of the same symbols (one analysis pass for all three).
        ``rate_index`` may be any rate on the 1/256 grid; ``scale`` n > 0 codes the image
        downscaled to n/64 of each side (the decoder upsamples back to the original size)."""
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"compress expects one RGB image shaped (1, 3, H, W), got {tuple(x.shape)}")
        header = self.image_header(x.shape[-2], x.shape[-1], rate_index, scale)
        coded = resize_image(x, header.coded_height, header.coded_width)
        return self.encode_latent(self.vqgan.encoder(self.pad(coded)), header)

    def image_header(self, height: int, width: int, rate_index: int | float, scale: int = 0) -> ImageHeader:
        """The header of a file of this model (its rate split into level and 1/256ths)."""
        index, fraction = split_rate(rate_index)
        if index > self.num_rates - 1 or (index == self.num_rates - 1 and fraction):
            raise ValueError(f"rate {rate_index} out of range 0..{self.num_rates - 1}")
        return ImageHeader(model_id=self.model_id, rate_index=index, height=height, width=width,
                           portable=self.portable, rate_fraction=fraction, scale=scale)

    @torch.inference_mode()
    def encode_latent(self, latent: torch.Tensor, header: ImageHeader) -> "EncodeResult":
        """The file of ``header`` from the VQGAN latent of the (coded-size, padded) image."""
        encoder = EntropyEncoder(DEFAULT_SCALE_TABLE)
        if self.portable:
            encoded = self.analyse_portable_latent(latent, header.rate, encoder)
        else:
            encoded = self.analyse_latent(latent, header.rate, encoder=encoder)
        z_section = pack_indices(encoded.z_indices.flatten().cpu(), self.config.z_index_bits)
        data = write_image_file(header, [z_section, encoder.finish()], self.layout)
        y_bits = gaussian_residual_bits(encoded.steps.symbols, encoded.steps.scales).sum().item()
        return EncodeResult(data, encoded.latent_hat,
                            y_bits + self.z_bits_per_image(header.coded_height, header.coded_width))

    def compress_with_latent(self, x: torch.Tensor, rate_index: int | float = 0) -> tuple[bytes, torch.Tensor]:
        result = self.encode(x, rate_index)
        return result.data, result.latent_hat

    def compress(self, x: torch.Tensor, rate_index: int | float = 0, scale: int = 0) -> bytes:
        return self.encode(x, rate_index, scale).data

    def rate_trials(self, x: torch.Tensor, scale: int = 0):
        """Rate control's view of one image at one scale (latentcodec.ratecontrol.RateTrials)."""
        from latentcodec.models.glc_image_rate import GLCImageRateTrials

        return GLCImageRateTrials(self, x, scale)

    @torch.inference_mode()
    def decode_latent(self, data: bytes) -> tuple[ImageHeader, torch.Tensor]:
        """File bytes -> (header, decoded latent), without running the generator."""
        parsed = read_image_file(data, self.layout, expected_model_id=self.model_id)
        header = parsed.header
        if header.rate_index >= self.num_rates or (header.rate_index == self.num_rates - 1 and header.rate_fraction):
            raise BitstreamError(f"rate index {header.rate} is out of range for this model ({self.num_rates} rates)")
        try:
            latent_hat = self.decode_sections(parsed.sections[0], parsed.sections[1], header.coded_height,
                                              header.coded_width, header.rate, portable=header.portable)
        except BitstreamError as exc:
            if header.portable:
                raise
            raise BitstreamError(f"{exc}{FLOAT_FORMAT_HINT}") from None
        return header, latent_hat

    @torch.inference_mode()
    def decode_sections(self, z_section: bytes, y_section: bytes, height: int, width: int,
                        rate_index: int | float, portable: bool = False) -> torch.Tensor:
        """The two payload sections of an image (also a GLC-video I-frame) -> the decoded latent
        (float; on the portable path, the exact fixed-point latent converted once)."""
        if portable:
            return integer.from_fixed(self.decode_sections_fixed(z_section, y_section, height, width, rate_index))
        z_hat = self._z_hat_from_section(z_section, height, width)
        _, prior_params = self.prior_from_z_hat(z_hat)
        decoder = EntropyDecoder(y_section, DEFAULT_SCALE_TABLE)
        steps = decode_masked(split_prior(prior_params), self.masks(prior_params[:, : self.config.latent_channels]),
                              self.context_fn(prior_params), decoder, DEFAULT_SCALE_TABLE)
        decoder.finish()
        return self.dec(steps.y_hat, self._rate_gain(self.q_dec, rate_index))

    def _z_hat_from_section(self, z_section: bytes, height: int, width: int) -> torch.Tensor:
        z_shape = (1, *z_grid(height, width, self.config.pad_multiple))
        indices = unpack_indices(z_section, math.prod(z_shape), self.config.z_index_bits)
        if int(indices.max()) >= self.config.z_codebook_size:
            raise BitstreamError("corrupt z section: index beyond the codebook")
        return self.z_vq.lookup(indices.view(z_shape).to(self.q_dec.device))

    @torch.inference_mode()
    def decode_sections_fixed(self, z_section: bytes, y_section: bytes, height: int, width: int,
                              rate_index: int | float) -> torch.Tensor:
        """Portable decoding of the two sections -> the exact fixed-point latent."""
        nets = self.integer_decoder_side()
        prior_fixed = nets.prior(self._z_hat_from_section(z_section, height, width))
        decoder = EntropyDecoder(y_section, DEFAULT_SCALE_TABLE)
        latent_like = prior_fixed[:, : self.config.latent_channels]
        steps = decode_masked_fixed(split_prior_fixed(prior_fixed), self.masks(latent_like),
                                    nets.context_fn(prior_fixed), decoder, DEFAULT_SCALE_TABLE)
        decoder.finish()
        return nets.dec(steps.y_hat_fixed, self._rate_gain(self.q_dec, rate_index))

    @torch.inference_mode()
    def generate(self, latent_hat: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Decoded latent -> [0, 1] image cropped to (height, width)."""
        x_hat = self.vqgan.generator(latent_hat)[..., :height, :width]
        return x_hat.clamp_(-1.0, 1.0).add_(1.0).div_(2.0)  # in place: no full-size copies

    def decompress(self, data: bytes) -> torch.Tensor:
        header, latent_hat = self.decode_latent(data)
        image = self.generate(latent_hat, header.coded_height, header.coded_width)
        return resize_image(image, header.height, header.width)  # a downscaled file comes back at full size

    # -- official checkpoints ------------------------------------------------------------
    @classmethod
    def from_official_state_dict(
        cls, state: dict[str, torch.Tensor], source: str = "state dict", with_training_modules: bool = False
    ) -> "GLCImage":
        model = cls(GLCImageConfig.official(), with_training_modules=with_training_modules)
        model.load_state_dict_strict(state, source=source, ignored_prefixes=cls.optional_prefixes)
        return model.eval()

    @classmethod
    def from_official(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", with_training_modules: bool = False
    ) -> "GLCImage":
        """Load an official GLC image checkpoint (.pth), strictly (SYSTEMS.md 2.7)."""
        state = load_official_checkpoint(path)
        return cls.from_official_state_dict(state, str(path), with_training_modules).to(device)


def unwrap_official_state(obj: object, source: str) -> dict[str, torch.Tensor]:
    """Unwrap nested checkpoint dicts (state_dict, then net, then net_g) and strip 'module.'."""
    for key in ("state_dict", "net", "net_g"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{source}: not a state dict of tensors")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} not found")
    try:
        # mmap keeps the 656 MB official file out of resident memory until tensors are copied.
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a foreign file
            raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    return unwrap_official_state(obj, str(path))

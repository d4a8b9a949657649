"""DLF: Dual-generative Latent Fusion (ICCV 2025; SYSTEMS.md 5).

Two branches code one image. The *semantic* branch runs a 1-D TiTok tokenizer on every 256x256
window and sends 32 cosine-VQ indices per window; the *detail* branch sends a scalar-quantised
64 x H/32 x W/32 latent under a learned constant prior with the four-step context (skip below
sigma 0.12). The decoder fuses both, through Interactive Transforms, into soft weights over a
VQGAN codebook, and the VQGAN decoder paints the picture.

Files: the 6-byte compact header (CRC included) and one range-coded section holding the detail
symbols, then the semantic tokens: uniform over the codebook (log2 K bits each, as the reference
sends them) or, with a token prior, a one-bit choice and then either fixed length or the tokens
under a masked-token model conditioned on the decoded detail latent, whichever is shorter. On the portable path (the default) every entropy parameter comes from exact integer
networks, so a file decodes to the same symbols on any machine.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.bitstream.container import ImageHeader, coded_side, read_image_file, write_image_file
from latentcodec.entropy.coder import FLOAT_FORMAT_HINT, EntropyDecoder, EntropyEncoder
from latentcodec.entropy.estimate import gaussian_residual_bits
from latentcodec.entropy.masked_gaussian import (
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
from latentcodec.entropy.scale_table import DEFAULT_SCALE_TABLE
from latentcodec.entropy.token_prior import MaskedTokenPrior, TokenPriorConfig
from latentcodec.errors import BitstreamError, ConfigError, WeightsError
from latentcodec.models.base import LatentCodec
from latentcodec.models import dlf_tokens
from latentcodec.models.dlf_networks import DLFNetworkConfig, FeatMerge, HybridCodec, soft_codebook_latent
from latentcodec.models.glc_image import load_official_checkpoint
from latentcodec.nn import integer
from latentcodec.nn.functional import use_onednn_linears
from latentcodec.nn.integer import integer_twin
from latentcodec.ratecontrol import interpolated_gain, split_rate
from latentcodec.tokenizers.taming_vqgan import TamingVQGAN, dlf_vqgan_config
from latentcodec.tokenizers.titok import TiTokConfig
from latentcodec.tokenizers.vqgan import VQGAN, VQGANConfig

DETAIL_DOWNSAMPLING = 32
SKIP_THRESHOLD = 0.12
# Checkpoint entries of the official Codec that no inference build holds: the LPIPS/PatchGAN loss
# modules, the training schedule counters, and the VQGAN encoder (alignment targets in training).
OFFICIAL_TRAINING_ONLY = ("img_loss.", "epoch_for_strategy", "lmbda_idx", "lmbda_list", "vqgan.encoder.",
                          "vqgan.quant_conv.")


VQGAN_LAYOUTS = ("taming", "glc")


@dataclass(frozen=True)
class DLFConfig:
    network: DLFNetworkConfig = field(default_factory=DLFNetworkConfig)
    # The pixel decoder: any f16 VQGAN with a small codebook. "taming" is DLF's own module tree
    # (official checkpoints); "glc" is GLC's, so a VQGAN trained for GLC can serve DLF as well.
    vqgan: VQGANConfig = field(default_factory=dlf_vqgan_config)
    vqgan_layout: str = "taming"
    skip_threshold: float = SKIP_THRESHOLD
    # The learned semantic-token prior (None: fixed-length indices, as the reference sends them).
    token_prior: TokenPriorConfig | None = None

    def __post_init__(self) -> None:
        if self.vqgan_layout not in VQGAN_LAYOUTS:
            raise ConfigError(f"vqgan_layout must be one of {VQGAN_LAYOUTS}, got {self.vqgan_layout!r}")
        if self.vqgan.downsampling_factor != self.network.titok.patch_size:
            raise ConfigError(f"the VQGAN's factor {self.vqgan.downsampling_factor} must equal the patch size "
                              f"{self.network.titok.patch_size}: the adaptor predicts one codeword mix per patch")

    @property
    def window_pixels(self) -> int:
        return self.network.titok.window_pixels

    @property
    def token_bits(self) -> int:
        return max(1, (self.network.titok.codebook_size - 1).bit_length())

    @property
    def window_positions(self) -> int:
        """Detail-latent positions per window side (8 for 256-pixel windows)."""
        return self.window_pixels // DETAIL_DOWNSAMPLING

    def default_token_prior(self, **changes) -> TokenPriorConfig:
        """A prior shaped for this model's windows, tokens and detail latent."""
        titok = self.network.titok
        shape = dict(vocab_size=titok.codebook_size, num_positions=titok.num_tokens,
                     condition_channels=self.network.detail_channels, num_condition_tokens=self.window_positions**2)
        return TokenPriorConfig(**{**shape, **changes})

    @classmethod
    def official(cls) -> "DLFConfig":
        return cls()

    @classmethod
    def small(cls) -> "DLFConfig":
        """The CPU-trainable default (SYSTEMS.md 5.10): the reference's windows (16x16 patches of 16
        pixels), 32 twelve-dimensional tokens per window over 4096 cosine codes, the 64 x H/32 x W/32
        detail latent with its four-step context and skip rule, and soft codebook weights. Shrunk:
        an 8-layer, 256-wide tokenizer with ITs after layers 1, 3 and 5 (none after the last group),
        a 256-wide detail trunk and adaptor, 4 rates in one model, and GLC's small VQGAN with its
        low-pass path (``small_lowpass``: f16, 32 channels, 1024 codes), so the VQGAN trained for the
        GLC default serves both codecs."""
        from latentcodec.models.glc_image import GLCImageConfig

        titok = TiTokConfig(width=256, layers=8, heads=4, num_tokens=32, token_dim=12, codebook_size=4096)
        network = DLFNetworkConfig(titok=titok, detail_width=256, interactive_layers=(1, 3, 5), feat_in_depth=2,
                                   feat_out_depth=2, init_up_depth=2, num_rates=4, merge_hidden=512,
                                   merge_width=256, merge_depth=2)
        # No token prior until one is fitted to the trained model (fit-token-prior --save-model): an
        # untrained prior would code the tokens at slightly more than their fixed 12 bits.
        return cls(network=network, vqgan=GLCImageConfig.small_lowpass().vqgan, vqgan_layout="glc")

    @classmethod
    def tiny(cls) -> "DLFConfig":
        """For tests: 64-pixel windows (4x4 patches), narrow widths, 2 rates."""
        titok = TiTokConfig(width=32, layers=4, heads=2, grid=4, num_tokens=8, token_dim=4, codebook_size=64)
        network = DLFNetworkConfig(titok=titok, detail_width=32, interactive_layers=(0, 2), interactive_blocks=1,
                                   feat_in_depth=2, feat_out_depth=2, init_up_depth=2, detail_channels=8,
                                   num_rates=2, merge_hidden=48, merge_width=32, merge_depth=2, merge_in_depth=2,
                                   window=4)
        config = cls(network=network, vqgan=dlf_vqgan_config(base_channels=32, codebook_size=16, latent_channels=8))
        return replace(config, token_prior=config.default_token_prior(width=16, layers=1, heads=2))


PRESETS = {"official": DLFConfig.official, "small": DLFConfig.small, "tiny": DLFConfig.tiny}


class DLFAnalysis(NamedTuple):
    """Everything the encoder side computes, in order (the reference test compares these)."""

    tokens: torch.Tensor  # (N, token_dim, 1, T) continuous semantic tokens
    token_indices: torch.Tensor  # (N, T) int64
    codes: torch.Tensor  # (N, token_dim, 1, T) normalised codewords
    h: torch.Tensor  # (B, d, H/32, W/32) detail features
    y: torch.Tensor  # (B, C, H/32, W/32) detail latent before quantisation
    prior: torch.Tensor  # (B, 3C, H/32, W/32)
    steps: object  # MaskedStepsResult or FixedStepsResult
    vq_loss: torch.Tensor
    record: dict  # intermediate tensors (patch embedding, first IT), when asked for


class DLFFrontEnd(NamedTuple):
    tokens: torch.Tensor
    vq: object  # VQOutput of the semantic tokens
    h: torch.Tensor
    record: dict


class DLFSynthesis(NamedTuple):
    h_hat: torch.Tensor
    semantic: torch.Tensor  # (B, t, H/16, W/16)
    detail: torch.Tensor  # (B, d, H/16, W/16)
    logits: torch.Tensor  # (B, K_vqgan, H/16, W/16)
    soft_latent: torch.Tensor
    x_hat: torch.Tensor  # (B, 3, Hp, Wp), [-1, 1] nominal, not clamped
    record: dict


class DLFOutput(NamedTuple):
    x_hat: torch.Tensor
    logits: torch.Tensor
    soft_latent: torch.Tensor
    detail_bits: torch.Tensor  # (B,) estimated bits of the detail latent
    semantic_bits: torch.Tensor  # (B,) bits of the semantic indices (fixed length)
    vq_loss: torch.Tensor
    num_pixels: int


class DLFEncodeResult(NamedTuple):
    data: bytes
    estimated_bits: float


class SemanticCoding(NamedTuple):
    bits: float  # of the semantic stream, the prior/fixed choice included
    use_prior: bool  # tokens under the token prior (else fixed length)


class DLF(LatentCodec):
    model_name = "dlf"
    config_class = DLFConfig
    optional_prefixes = OFFICIAL_TRAINING_ONLY
    continuous_rates = True

    def __init__(self, config: DLFConfig, with_training_modules: bool = False):
        super().__init__(config)
        net = config.network
        self.hybrid_codec = HybridCodec(net)
        self.prior_fusion = FeatMerge(net, config.vqgan.codebook_size)
        if config.vqgan_layout == "taming":
            self.vqgan = TamingVQGAN(config.vqgan, with_encoder=with_training_modules)
        else:
            self.vqgan = VQGAN(config.vqgan, with_codebook=True, with_encoder=with_training_modules)
        self.token_prior = None if config.token_prior is None else MaskedTokenPrior(config.token_prior)
        self.memory_format = torch.contiguous_format
        # NHWC by default, as GLC-image: oneDNN's convolutions are about twice as fast, and the
        # generator's stride-2 transposed convs (vqgan.Upsample) need no column buffer, which in
        # NCHW is twice their output (measured: +786 MB for a 264 MB output at 4 MP).
        self.set_memory_format(torch.channels_last)
        use_onednn_linears(self)  # float products on CPU through oneDNN, in inference and training

    def set_memory_format(self, memory_format: torch.memory_format) -> "DLF":
        """The VQGAN decoder's layout: channels_last runs oneDNN's fastest convolutions on CPU."""
        self.memory_format = memory_format
        self.vqgan.to(memory_format=memory_format)
        return self

    def attach_token_prior(self, prior: MaskedTokenPrior | None) -> "DLF":
        """Use ``prior`` (fitted to this model's tokens) for the semantic stream; None: fixed length."""
        self.token_prior = prior
        self.config = replace(self.config, token_prior=None if prior is None else prior.config)
        return self

    def integer_token_prior(self):
        return self.integer_twin_of("token_prior", lambda prior: prior.integer_twin(), self.token_prior)

    # -- shapes ----------------------------------------------------------------------------
    @property
    def num_rates(self) -> int:
        return self.config.network.num_rates

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        m = self.config.window_pixels
        return math.ceil(height / m) * m, math.ceil(width / m) * m

    def coded_size(self, height: int, width: int) -> tuple[int, int]:
        """The size a file codes an image at: each side resampled to the nearest whole number of
        windows (at least one). Padding to the next multiple, as the reference does, spends a
        window's 32 tokens on replicated border pixels; resampling never needs more windows than
        padding and spends every token on picture content. The decoder resamples back."""
        m = self.config.window_pixels
        return tuple(m * max(1, math.floor(side / m + 0.5)) for side in (height, width))

    def fit_to_windows(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] image -> the same image at :meth:`coded_size` (antialiased bicubic)."""
        size = self.coded_size(*x.shape[-2:])
        return x if tuple(x.shape[-2:]) == size else resample(x, size)

    def num_windows(self, height: int, width: int) -> int:
        return math.prod(self.window_grid(height, width))

    def window_grid(self, height: int, width: int) -> tuple[int, int]:
        padded_h, padded_w = self.padded_size(height, width)
        return padded_h // self.config.window_pixels, padded_w // self.config.window_pixels

    def semantic_bits_per_image(self, height: int, width: int) -> int:
        """Fixed-length cost of the semantic indices (the reference's; an upper bound with a prior)."""
        return self.num_windows(height, width) * self.config.network.titok.num_tokens * self.config.token_bits

    @staticmethod
    def section_layout(header: ImageHeader) -> list[int | None]:
        """One range-coded section: the detail symbols (four steps), then the semantic tokens
        (uniform over the codebook, i.e. log2 K bits each, or under the token prior). One stream
        needs no stored length, so a Kodak file has a 6-byte header (compact kind, CRC included)."""
        return [None]

    def layout(self, header: ImageHeader) -> list[int | None]:
        return self.section_layout(header)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] image -> [-1, 1], replicate-padded right/bottom to whole windows."""
        height, width = x.shape[-2:]
        padded_h, padded_w = self.padded_size(height, width)
        if (padded_h, padded_w) == (height, width):
            return x * 2.0 - 1.0
        # Padded first, then scaled in place: one image-sized copy instead of two (the same values).
        return F.pad(x, (0, padded_w - width, 0, padded_h - height), mode="replicate").mul_(2.0).sub_(1.0)

    def _rate_row(self, table: torch.Tensor, rate_index: int | torch.Tensor) -> torch.Tensor:
        if isinstance(rate_index, torch.Tensor):
            # Training: one rate per sample, (B,) indices -> (B, C, 1, 1) rows.
            if rate_index.dim() != 1 or not bool(((rate_index >= 0) & (rate_index < self.num_rates)).all()):
                raise ValueError(f"rate indices must be a (B,) tensor in 0..{self.num_rates - 1}")
            return table[rate_index]
        if isinstance(rate_index, float):  # a continuous rate on the 1/256 grid (latentcodec.ratecontrol)
            return interpolated_gain(table, rate_index)
        if not (isinstance(rate_index, int) and 0 <= rate_index < self.num_rates):
            raise ValueError(f"rate index {rate_index!r} out of range 0..{self.num_rates - 1}")
        return table[rate_index : rate_index + 1]

    def masks(self, like: torch.Tensor) -> torch.Tensor:
        _, c, h, w = like.shape
        return quadtree_masks(c, h, w, device=like.device)

    def detail_prior(self, rate_index: int, batch: int, height: int, width: int) -> torch.Tensor:
        bottleneck = self.hybrid_codec.quantize_feat
        return bottleneck.prior(self._rate_row(bottleneck.factorized_prior_vec, rate_index), batch, height, width)

    def context_fn(self, prior: torch.Tensor):
        bottleneck = self.hybrid_codec.quantize_feat
        return quadtree_context_fn(bottleneck.y_spatial_prior_reduction, bottleneck.adaptors,
                                   bottleneck.y_spatial_prior, prior)

    def integer_prior_nets(self) -> "IntegerDetailPrior":
        bottleneck = self.hybrid_codec.quantize_feat
        nets = nn.ModuleList([bottleneck.y_prior_fusion, bottleneck.y_spatial_prior_reduction,
                              *bottleneck.adaptors, bottleneck.y_spatial_prior])
        return self.integer_twin_of("detail_prior", IntegerDetailPrior, nets)

    def fixed_detail_prior(self, rate_index: int, batch: int, height: int, width: int) -> torch.Tensor:
        vector = self._rate_row(self.hybrid_codec.quantize_feat.factorized_prior_vec, rate_index)
        return self.integer_prior_nets().prior(integer.to_fixed(vector).expand(batch, -1, height, width))

    # -- encoder side ------------------------------------------------------------------------
    def front_end(self, x_padded: torch.Tensor, record: dict | None = None) -> DLFFrontEnd:
        """The rate-independent part of the encoder (nearly all of its cost): tokens and detail features."""
        return self._front_end_of_unit_range(x_padded * 0.5 + 0.5, record)

    def image_front_end(self, x: torch.Tensor) -> DLFFrontEnd:
        """:meth:`front_end` of a [0, 1] image at its own size (inference), holding one image-sized
        copy beside the caller's: the padded image is scaled to [-1, 1] and back in place, the
        reference's arithmetic, so the bits are those of ``front_end(pad(fit_to_windows(x)))``."""
        padded = self.pad(self.fit_to_windows(x))
        patches = self.hybrid_codec.encoder.patch_embed(padded.mul_(0.5).add_(0.5))
        del padded  # the image-sized copy goes before the trunk makes its maps
        return self._front_end_of_patches(patches)

    def _front_end_of_unit_range(self, x01: torch.Tensor, record: dict | None = None) -> DLFFrontEnd:
        return self._front_end_of_patches(self.hybrid_codec.encoder.patch_embed(x01), record)

    def _front_end_of_patches(self, patches: torch.Tensor, record: dict | None = None) -> DLFFrontEnd:
        codec = self.hybrid_codec
        tokens, h = codec.encoder.from_patches(patches, codec.latent_tokens, record)
        return DLFFrontEnd(tokens, codec.quantize(tokens), h, record if record is not None else {})

    def analyse(self, x_padded: torch.Tensor, rate_index: int | float, encoder=None, portable: bool = False,
                skip: bool = True, record: dict | None = None, front: DLFFrontEnd | None = None) -> DLFAnalysis:
        """The encoder side on a padded [-1, 1] image; codes the detail latent into ``encoder`` if given.
        ``front`` reuses a :meth:`front_end` of the same image (rate control tries several rates)."""
        front = self.front_end(x_padded, record) if front is None else front
        tokens, vq, h, record = front
        bottleneck = self.hybrid_codec.quantize_feat
        y = bottleneck.analysis(h, self._rate_row(bottleneck.enc_q, rate_index))
        skip_below = self.config.skip_threshold if skip else None
        b, _, hh, ww = y.shape
        if portable:
            nets = self.integer_prior_nets()
            prior_fixed = self.fixed_detail_prior(rate_index, b, hh, ww)
            steps = encode_masked_fixed(y, split_prior_fixed(prior_fixed), self.masks(y), nets.context_fn(prior_fixed),
                                        encoder, DEFAULT_SCALE_TABLE, skip_below)
            prior = integer.from_fixed(prior_fixed)
        else:
            prior = self.detail_prior(rate_index, b, hh, ww)
            context = self.context_fn(prior)
            if encoder is None:
                steps = quantize_masked(y, split_prior(prior), self.masks(y), context, skip_below, divide=True)
            else:
                steps = encode_masked(y, split_prior(prior), self.masks(y), context, encoder, DEFAULT_SCALE_TABLE,
                                      skip_below, divide=True)
        return DLFAnalysis(tokens, vq.indices.flatten(1), vq.quantized, h, y, prior, steps, vq.loss, record)

    # -- decoder side ------------------------------------------------------------------------
    def synthesise(self, codes: torch.Tensor, y_hat: torch.Tensor, rate_index: int,
                   record: dict | None = None, decode: bool = True) -> DLFSynthesis:
        """Semantic codewords (N, token_dim, 1, T) and the decoded detail latent -> padded image
        (``decode=False`` stops at the soft latent, ``x_hat`` None: the latent-alignment stage)."""
        codec = self.hybrid_codec
        bottleneck = codec.quantize_feat
        h_hat = bottleneck.synthesis(y_hat, self._rate_row(bottleneck.dec_q, rate_index))
        semantic, detail = codec.decoder(codes, h_hat, record)
        logits = self.prior_fusion(semantic, detail)
        soft_latent = soft_codebook_latent(logits, self.vqgan.quantize.embedding.weight)
        x_hat = self.vqgan.decode(soft_latent.contiguous(memory_format=self.memory_format)) if decode else None
        return DLFSynthesis(h_hat, semantic, detail, logits, soft_latent, x_hat, record if record is not None else {})

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, T) indices -> (N, token_dim, 1, T) normalised codewords."""
        return self.hybrid_codec.quantize.lookup(indices.unsqueeze(1))

    def decode_detail(self, decoder: EntropyDecoder, rate_index: int, height: int, width: int, portable: bool):
        """Detail symbols from ``decoder`` -> the step results (y_hat, symbols, scales), decoded like
        the encoder coded them."""
        ph, pw = self.padded_size(height, width)
        shape = (1, self.config.network.detail_channels, ph // DETAIL_DOWNSAMPLING, pw // DETAIL_DOWNSAMPLING)
        skip_below = self.config.skip_threshold
        masks = quadtree_masks(*shape[1:], device=self.hybrid_codec.latent_tokens.device)
        if portable:
            nets = self.integer_prior_nets()
            prior_fixed = self.fixed_detail_prior(rate_index, *shape[:1], *shape[2:])
            steps = decode_masked_fixed(split_prior_fixed(prior_fixed), masks, nets.context_fn(prior_fixed),
                                        decoder, DEFAULT_SCALE_TABLE, skip_below)
        else:
            prior = self.detail_prior(rate_index, shape[0], *shape[2:])
            steps = decode_masked(split_prior(prior), masks, self.context_fn(prior), decoder,
                                  DEFAULT_SCALE_TABLE, skip_below)
        return steps

    @staticmethod
    def condition_fixed(steps) -> torch.Tensor:
        """The decoded detail latent in fixed point: exact on the portable path, converted on the float one."""
        fixed = getattr(steps, "y_hat_fixed", None)
        return fixed if fixed is not None else integer.to_fixed(steps.y_hat)

    def semantic_bits(self, steps, token_indices: torch.Tensor, height: int, width: int) -> float:
        """Bits of the semantic stream of a (coded-size) image: fixed length, or with a prior its
        one-bit choice and then the cheaper of fixed length and the information content of
        ``token_indices`` (N, T) under the prior, given the detail ``steps``."""
        return self.semantic_coding(steps, token_indices, height, width).bits

    def semantic_coding(self, steps, token_indices: torch.Tensor, height: int, width: int) -> "SemanticCoding":
        """How the semantic stream codes ``token_indices``. With a prior, the encoder picks the cheaper
        coding by the information content under the exact PMFs, so a picture the prior has never seen
        the like of (text, graphics) costs at most one bit more than fixed length."""
        fixed = float(self.semantic_bits_per_image(height, width))
        if self.token_prior is None:
            return SemanticCoding(fixed, use_prior=False)
        grid = self.window_grid(height, width)
        under_prior = dlf_tokens.exact_token_bits(self.integer_token_prior(), self.condition_fixed(steps),
                                                  token_indices, *grid, self.config.window_positions)
        return SemanticCoding(1.0 + min(under_prior, fixed), use_prior=under_prior < fixed)

    # -- training -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, rate_index: int = 0) -> DLFOutput:
        """Training forward on a [0, 1] batch (straight-through rounding, no skipping)."""
        height, width = x.shape[-2:]
        analysis = self.analyse(self.pad(x), rate_index, skip=False)
        synthesis = self.synthesise(analysis.codes, analysis.steps.y_hat, rate_index)
        detail_bits = gaussian_residual_bits(analysis.steps.symbols, analysis.steps.scales)
        semantic_bits = torch.full((x.shape[0],), float(self.semantic_bits_per_image(height, width)), device=x.device)
        return DLFOutput(synthesis.x_hat, synthesis.logits, synthesis.soft_latent, detail_bits, semantic_bits,
                         analysis.vq_loss, height * width)

    @torch.inference_mode()
    def estimate_bits(self, x: torch.Tensor, rate_index: int = 0) -> float:
        x = self.fit_to_windows(x)
        height, width = x.shape[-2:]
        analysis = self.analyse(self.pad(x), rate_index)
        detail = gaussian_residual_bits(analysis.steps.symbols, analysis.steps.scales).sum().item()
        return detail + self.semantic_bits(analysis.steps, analysis.token_indices, height, width)

    # -- files -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, x: torch.Tensor, rate_index: int | float = 0) -> DLFEncodeResult:
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"compress expects one RGB image shaped (1, 3, H, W), got {tuple(x.shape)}")
        self._rate_row(self.hybrid_codec.quantize_feat.enc_q, rate_index)
        height, width = x.shape[-2:]
        return self.encode_front_end(self.image_front_end(x), height, width, rate_index)

    @torch.inference_mode()
    def encode_front_end(self, front: DLFFrontEnd, height: int, width: int, rate_index: int | float,
                         scale: int = 0) -> DLFEncodeResult:
        """The file of an image (original size height x width) from its front end, at one rate.
        ``scale`` (rate control's downscale fallback, n/64 per side) names the size the front end
        was computed at before fitting to windows: ``coded_size(coded_side(side, scale))``."""
        coded = self.coded_size(coded_side(height, scale), coded_side(width, scale))
        encoder = EntropyEncoder(DEFAULT_SCALE_TABLE)
        analysis = self.analyse(None, rate_index, encoder=encoder, portable=self.portable, front=front)
        # The decoder has the detail latent before the tokens (the prior conditions on it), so the
        # tokens follow the detail symbols in the same stream.
        semantic = self.semantic_coding(analysis.steps, analysis.token_indices, *coded)
        if self.token_prior is not None:
            encoder.encode_uniform(torch.tensor([int(semantic.use_prior)]), 2)
        if semantic.use_prior:
            dlf_tokens.code_tokens(self.integer_token_prior(), self.condition_fixed(analysis.steps),
                                   *self.window_grid(*coded), self.config.window_positions, encoder,
                                   analysis.token_indices)
        else:
            encoder.encode_uniform(analysis.token_indices.flatten(), self.config.network.titok.codebook_size)
        whole, fraction = split_rate(rate_index)
        header = ImageHeader(model_id=self.model_id, rate_index=whole, rate_fraction=fraction, height=height,
                             width=width, portable=self.portable, scale=scale, compact=True)
        data = write_image_file(header, [encoder.finish()], self.layout)
        detail = gaussian_residual_bits(analysis.steps.symbols, analysis.steps.scales).sum().item()
        return DLFEncodeResult(data, detail + semantic.bits)

    def compress(self, x: torch.Tensor, rate_index: int | float = 0) -> bytes:
        return self.encode(x, rate_index).data

    def rate_trials(self, x: torch.Tensor, scale: int = 0):
        """Rate control (latentcodec.ratecontrol): trial encodes sharing one front end."""
        from latentcodec.models.dlf_rate import DLFRateTrials

        return DLFRateTrials(self, x, scale)

    @torch.inference_mode()
    def decompress(self, data: bytes) -> torch.Tensor:
        return self._picture(*self._read(data))

    def _read(self, data: bytes):
        """File bytes -> (header, token indices (N*T,), detail step results): the entropy layer only."""
        parsed = read_image_file(data, self.layout, expected_model_id=self.model_id)
        header = parsed.header
        if header.rate > self.num_rates - 1:
            raise BitstreamError(f"rate {header.rate} is out of range for this model ({self.num_rates} rates)")
        try:
            indices, steps = self._decode_streams(parsed.sections, header)
        except BitstreamError as exc:
            if header.portable:
                raise
            raise BitstreamError(f"{exc}{FLOAT_FORMAT_HINT}") from None
        return header, indices, steps

    def _picture(self, header: ImageHeader, indices: torch.Tensor, steps) -> torch.Tensor:
        """The decoded streams -> the [0, 1] image at the header's original size."""
        device = self.hybrid_codec.latent_tokens.device
        codes = self.codes_from_indices(indices.view(-1, self.config.network.titok.num_tokens).to(device))
        # The soft latent alone goes on to the generator: the codebook logits and the 1/16-scale
        # maps beside it (about 400 MB at 16 MP) are freed before its full-resolution layers run.
        soft_latent = self.synthesise(codes, steps.y_hat.to(device), header.rate, decode=False).soft_latent
        x_hat = self.vqgan.decode(soft_latent.contiguous(memory_format=self.memory_format))
        image = x_hat.clamp_(-1.0, 1.0).add_(1.0).div_(2.0)  # in place: the picture is the largest map
        if tuple(image.shape[-2:]) != (header.height, header.width):
            image = resample(image, (header.height, header.width))
        return image

    def _decode_streams(self, sections, header: ImageHeader):
        """(token indices (N*T,), detail step results) from the file's sections."""
        height, width = self.coded_size(header.coded_height, header.coded_width)
        tokens = self.num_windows(height, width) * self.config.network.titok.num_tokens
        decoder = EntropyDecoder(sections[0], DEFAULT_SCALE_TABLE)
        steps = self.decode_detail(decoder, header.rate, height, width, header.portable)
        use_prior = self.token_prior is not None and bool(decoder.decode_uniform(1, 2)[0])
        if not use_prior:
            indices = decoder.decode_uniform(tokens, self.config.network.titok.codebook_size)
        else:
            indices = dlf_tokens.code_tokens(self.integer_token_prior(), self.condition_fixed(steps),
                                             *self.window_grid(height, width), self.config.window_positions,
                                             decoder).flatten()
        decoder.finish()
        if tokens and int(indices.max()) >= self.config.network.titok.codebook_size:
            raise BitstreamError("corrupt semantic section: index beyond the codebook")
        return indices, steps

    @torch.inference_mode()
    def decoded_fingerprint(self, data: bytes) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """(the decoded detail latent in fixed point, the token indices), and the decoded image: what
        must be identical on every machine (the first two exactly) for a portable file."""
        header, indices, steps = self._read(data)
        return (self.condition_fixed(steps), indices), self._picture(header, indices, steps)

    @torch.inference_mode()
    def stream_bits(self, data: bytes) -> tuple[tuple[str, float], ...]:
        """The two streams of a file's one section, by information content of their decoded symbols:
        (("detail", bits), ("semantic", bits)). Decodes the entropy layer only (no pixel synthesis)."""
        header, indices, steps = self._read(data)
        detail = gaussian_residual_bits(steps.symbols, steps.scales).sum().item()
        coded = self.coded_size(header.coded_height, header.coded_width)
        tokens = indices.view(-1, self.config.network.titok.num_tokens)
        return (("detail", detail), ("semantic", self.semantic_bits(steps, tokens, *coded)))

    # -- official checkpoints --------------------------------------------------------------------
    @classmethod
    def from_official_state_dict(cls, state: dict[str, torch.Tensor], source: str = "state dict") -> "DLF":
        """The official preset with an official ``Codec`` state dict, loaded strictly: every key the
        model has must be present with its shape, and every other key must be one of the known
        training-only entries (:data:`OFFICIAL_TRAINING_ONLY`)."""
        check_official_keys(state, source)
        with torch.device("meta"):
            model = cls(DLFConfig.official())
        model.load_state_dict_strict(state, source=source, ignored_prefixes=cls.optional_prefixes, assign=True)
        model._rebuild_non_persistent()
        return model.eval()

    @classmethod
    def from_official(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "DLF":
        """Load an official DLF checkpoint (.pth / .ckpt, a Lightning or plain state dict), strictly."""
        state = load_official_checkpoint(Path(path))
        return cls.from_official_state_dict(state, str(path)).to(device)

    def _rebuild_non_persistent(self) -> None:
        """Buffers that are not in any checkpoint (relative position indices) are rebuilt after a
        meta-device construction."""
        from latentcodec.nn.swin import WindowAttention, relative_position_index

        for module in self.modules():
            if isinstance(module, WindowAttention) and module.relative_bias:
                module.relative_index = relative_position_index(module.window).to(module.pos_embedding.device)


def resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize of a [0, 1] image, clamped back into range."""
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)


class IntegerDetailPrior(nn.Module):
    """Exact integer twins of the detail prior nets: fusion, reduction, three adaptors, spatial prior."""

    def __init__(self, nets: nn.ModuleList):
        super().__init__()
        self.fusion, self.reduction, adaptor_1, adaptor_2, adaptor_3, self.spatial = (integer_twin(n) for n in nets)
        self.adaptors = nn.ModuleList([adaptor_1, adaptor_2, adaptor_3])

    def prior(self, vector_fixed: torch.Tensor) -> torch.Tensor:
        return self.fusion(vector_fixed)

    def context_fn(self, prior_fixed: torch.Tensor):
        return quadtree_context_fn(self.reduction, self.adaptors, self.spatial, prior_fixed)


def check_official_keys(state: dict[str, torch.Tensor], source: str) -> None:
    """A clear error for a checkpoint of another model, before the key-by-key comparison."""
    if not any(k.startswith("hybrid_codec.") for k in state):
        raise WeightsError(f"{source}: not a DLF checkpoint (no 'hybrid_codec.' keys)")

"""GLC-video's P-frame model (official ``GLC_Video`` layout), SYSTEMS.md 3.2-3.4, and its exact
integer decoder side.

A P-frame is coded in the VQGAN latent conditioned on the previous decoded latent only: a temporal
context from feature adaptors and a feature extractor, a conditional encoder/decoder, 16 global
hyper tokens spread back by weight maps, and a two-step dual Gaussian prior. The decoded latent
is the next frame's reference, so on the portable path every net on the decoder side
(:class:`IntegerInterDecoderSide`) runs in exact fixed point: frame t+1's entropy parameters then
depend only on integers, and a sequence decodes identically on any machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

import torch
from torch import nn

from latentcodec.entropy import DEFAULT_SCALE_TABLE, EntropyEncoder
from latentcodec.entropy.masked_gaussian import (
    FixedStepsResult,
    MaskedStepsResult,
    SplitPrior,
    dual_masks,
    encode_masked,
    encode_masked_fixed,
    quantize_masked,
    split_prior,
    split_prior_fixed,
)
from latentcodec.nn import integer
from latentcodec.nn.dcvc import DepthConvBlock3, conv1x1, conv3x3
from latentcodec.nn.integer import integer_twin, register_integer_twin
from latentcodec.nn.vq import VectorQuantizer
from latentcodec.ratecontrol import interpolated_gain
from latentcodec.tokenizers.vqgan import VQGAN

if TYPE_CHECKING:
    from latentcodec.models.glc_video import FramePlan, GLCVideoConfig


class FeatureExtractor(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.context_refine = nn.Sequential(*[DepthConvBlock3(channels) for _ in range(4)], conv1x1(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.context_refine(x)


class ConditionalTransform(nn.Module):
    """first(cat(x, context)) * gain -> second: the P-model's encoder (enc_1, enc_2) and decoder (dec_1, dec_2)."""

    def __init__(self, channels: int, first: str, second: str):
        super().__init__()
        self.stage_names = (first, second)
        setattr(self, first, nn.Sequential(DepthConvBlock3(2 * channels, channels), DepthConvBlock3(channels)))
        setattr(self, second, nn.Sequential(DepthConvBlock3(channels), DepthConvBlock3(channels)))

    def forward(self, x: torch.Tensor, context: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        first, second = (getattr(self, name) for name in self.stage_names)
        return second(first(torch.cat((x, context), dim=1)) * gain)


class ConvStack(nn.Module):
    """A Sequential kept under ``conv`` (official names ``y_prior_fusion.conv.0`` etc.)."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PriorFusionAdaptor(nn.Module):
    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.conv1 = DepthConvBlock3(channels)
        self.conv2 = conv1x1(channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class HyperTokenizer(nn.Module):
    """Hyper input (B, Ci, H, W) -> K global tokens (B, C, K, 1).

    Token k of head n is the spatial mean of the head's C/heads projected channels weighted by the
    map w'[k, n] = sigmoid(enhancement(cat(prior_extraction(h), weight_map)))[k * heads + n].
    """

    def __init__(self, in_channels: int, channels: int, tokens: int, heads: int):
        super().__init__()
        self.tokens, self.heads = tokens, heads
        weight_channels = tokens * heads
        self.proj = nn.Sequential(
            DepthConvBlock3(in_channels, channels), nn.LeakyReLU(0.01), conv1x1(channels, channels)
        )
        self.prior_extraction = DepthConvBlock3(in_channels, channels)
        self.enhancement = nn.Sequential(
            DepthConvBlock3(channels + weight_channels), nn.LeakyReLU(0.01),
            DepthConvBlock3(channels + weight_channels, weight_channels),
        )
        self.out_proj = nn.Linear(channels, channels)

    def forward(self, hyper_input: torch.Tensor, weight_map: torch.Tensor) -> torch.Tensor:
        prior = self.prior_extraction(hyper_input)
        weights = torch.sigmoid(self.enhancement(torch.cat((prior, weight_map), dim=1)))
        x = self.proj(hyper_input)
        b, c, h, w = x.shape
        per_head = x.reshape(b, 1, self.heads, c // self.heads, h * w)
        head_weights = weights.reshape(b, self.tokens, self.heads, 1, h * w)
        # The mean of the products (not a matmul) follows the reference's summation order: the
        # indices are an argmin over these tokens and one official token is a near-tie.
        tokens = (per_head * head_weights).mean(-1).reshape(b, self.tokens, c)
        return self.out_proj(tokens).transpose(1, 2).unsqueeze(-1)


class HyperInverseTokenizer(nn.Module):
    """Quantised tokens (B, C, K, 1) -> spatial hyper parameters (B, C, H, W), spread by the
    decoder-side weight map (the un-enhanced one, which the decoder can compute)."""

    def __init__(self, channels: int, tokens: int, heads: int):
        super().__init__()
        self.tokens, self.heads = tokens, heads
        self.proj = conv1x1(channels, channels)
        self.out_proj = nn.Sequential(DepthConvBlock3(channels), nn.LeakyReLU(0.01), conv1x1(channels, channels))

    def forward(self, z_hat: torch.Tensor, weight_map: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(z_hat)  # (B, C, K, 1)
        b, c = tokens.shape[:2]
        h, w = weight_map.shape[-2:]
        per_token = tokens.reshape(b, self.heads, c // self.heads, self.tokens).permute(0, 3, 1, 2)
        head_weights = weight_map.reshape(b, self.tokens, self.heads, 1, h * w)
        spread = (per_token.unsqueeze(-1) * head_weights).mean(1)  # (B, heads, C/heads, HW)
        return self.out_proj(spread.reshape(b, c, h, w))


class InterAnalysis(NamedTuple):
    """Every intermediate of a P-frame, encoder side (reference checks use all of them)."""

    adapted_ref: torch.Tensor
    context: torch.Tensor
    y: torch.Tensor
    temporal_params: torch.Tensor
    weight_map: torch.Tensor
    temporal_cond: torch.Tensor
    hyper_input: torch.Tensor
    z: torch.Tensor  # (B, C, K, 1)
    z_indices: torch.Tensor  # (B, K)
    z_hat: torch.Tensor
    hier_params: torch.Tensor
    prior_params: torch.Tensor
    steps: MaskedStepsResult
    latent_hat: torch.Tensor
    vq_loss: torch.Tensor
    latent_hat_fixed: torch.Tensor | None = None  # portable path: the exact decoded latent (next reference)


class InterReconstruction(NamedTuple):
    """The decoder side of a P-frame, from z indices and a symbol source."""

    context: torch.Tensor
    hier_params: torch.Tensor
    prior_params: torch.Tensor
    steps: MaskedStepsResult
    latent_hat: torch.Tensor


StepsFn = Callable[[SplitPrior, torch.Tensor, Callable], MaskedStepsResult]


class GLCVideoInter(nn.Module):
    """The P-frame model with the official ``GLC_Video`` state-dict names."""

    def __init__(self, config: GLCVideoConfig):
        super().__init__()
        self.config = config
        n = config.latent_channels
        half = n // 2
        self.y_q_enc = nn.Parameter(torch.ones(config.num_rates, n, 1, 1))
        self.y_q_dec = nn.Parameter(torch.ones(config.num_rates, n, 1, 1))
        self.feature_adaptor_I = conv3x3(n, n)
        self.feature_adaptor = nn.ModuleList([conv1x1(n, n) for _ in range(3)])
        self.feature_extractor = FeatureExtractor(n)
        self.encoder = ConditionalTransform(n, "enc_1", "enc_2")
        self.temporal_cond = conv3x3(n, half)
        self.y_temporal_combine = ConvStack(DepthConvBlock3(n + half), DepthConvBlock3(n + half))
        self.weight_generator = ConvStack(
            DepthConvBlock3(n), nn.LeakyReLU(0.01), DepthConvBlock3(n), nn.LeakyReLU(0.01),
            DepthConvBlock3(n), nn.LeakyReLU(0.01), conv1x1(n, config.weight_map_channels),
        )
        self.hyper_tokenizer = HyperTokenizer(n + half, n, config.hyper_tokens, config.token_heads)
        self.hyper_inv_tokenizer = HyperInverseTokenizer(n, config.hyper_tokens, config.token_heads)
        self.temporal_prior_encoder = conv3x3(n, n)
        self.prior_fusion_adaptor_0 = PriorFusionAdaptor(2 * n, 3 * n)
        self.prior_fusion_adaptor_1 = PriorFusionAdaptor(2 * n, 3 * n)
        self.y_prior_fusion = ConvStack(DepthConvBlock3(3 * n), DepthConvBlock3(3 * n))
        self.y_spatial_prior = ConvStack(
            DepthConvBlock3(4 * n, 3 * n), DepthConvBlock3(3 * n), DepthConvBlock3(3 * n, 2 * n)
        )
        self.decoder = ConditionalTransform(n, "dec_1", "dec_2")
        self.z_vq = VectorQuantizer(config.z_codebook_size, n)
        self.vqgan = None if config.share_vqgan else VQGAN(config.intra.vqgan)
        self._integer_twins = integer.TwinCache()

    # -- shared by both sides --------------------------------------------------------------------
    def rate_gain(self, table: torch.Tensor, rate_index: int | float | torch.Tensor) -> torch.Tensor:
        """The gain row of a rate: indexed for whole rates (and training's (B,) tensors), interpolated
        between the two neighbouring levels for a rate on the 1/256 grid, as GLC-image does."""
        if isinstance(rate_index, torch.Tensor):
            return table[rate_index]
        return interpolated_gain(table, rate_index)

    def temporal_context(self, ref_latent: torch.Tensor, plan: FramePlan) -> tuple[torch.Tensor, torch.Tensor]:
        """(adapted reference, context) from the previous decoded latent."""
        adaptor = self.feature_adaptor_I if plan.after_intra else self.feature_adaptor[plan.adaptor_index]
        adapted = adaptor(ref_latent)
        return adapted, self.feature_extractor(adapted)

    def temporal_priors(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(temporal_params, weight_map): both sides compute them from the context alone."""
        temporal_params = self.temporal_prior_encoder(context)
        return temporal_params, torch.sigmoid(self.weight_generator(temporal_params))

    def prior_from_tokens(self, z_hat: torch.Tensor, weight_map: torch.Tensor, temporal_params: torch.Tensor,
                          plan: FramePlan) -> tuple[torch.Tensor, torch.Tensor]:
        hier_params = self.hyper_inv_tokenizer(z_hat, weight_map)
        adaptor = self.prior_fusion_adaptor_0 if plan.after_intra else self.prior_fusion_adaptor_1
        prior_params = self.y_prior_fusion(adaptor(torch.cat((hier_params, temporal_params), dim=1)))
        return hier_params, prior_params

    def context_fn(self, prior_params: torch.Tensor):
        """Step 1 of the dual prior: the full 768-channel params, no reduction layer."""

        def context(step: int, y_hat_so_far: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            scales, means = self.y_spatial_prior(torch.cat((y_hat_so_far, prior_params), dim=1)).chunk(2, 1)
            return scales, means

        return context

    def masks(self, latent_like: torch.Tensor) -> torch.Tensor:
        _, c, h, w = latent_like.shape
        return dual_masks(c, h, w, device=latent_like.device)

    def z_lookup(self, z_indices: torch.Tensor) -> torch.Tensor:
        """(B, K) indices -> (B, C, K, 1) codewords."""
        return self.z_vq.lookup(z_indices.unsqueeze(-1))

    # -- encoder side ----------------------------------------------------------------------------
    def analyse(self, latent: torch.Tensor, ref_latent: torch.Tensor, plan: FramePlan,
                rate_index: int | float | torch.Tensor, encoder: EntropyEncoder | None = None) -> InterAnalysis:
        """The whole P-frame on the encoder side; codes y into ``encoder`` when one is given,
        otherwise quantises with straight-through rounding (training/estimation)."""
        adapted, context = self.temporal_context(ref_latent, plan)
        y = self.encoder(latent, context, self.rate_gain(self.y_q_enc, rate_index))
        temporal_params, weight_map = self.temporal_priors(context)
        temporal_cond = self.temporal_cond(context)
        hyper_input = self.y_temporal_combine(torch.cat((y, temporal_cond), dim=1))
        z = self.hyper_tokenizer(hyper_input, weight_map)
        vq = self.z_vq(z)  # exact codewords at inference: what the decoder looks up
        z_indices = vq.indices.flatten(1)
        hier_params, prior_params = self.prior_from_tokens(vq.quantized, weight_map, temporal_params, plan)
        prior = split_prior(prior_params)
        masks = self.masks(y)
        context_fn = self.context_fn(prior_params)
        if encoder is None:
            steps = quantize_masked(y, prior, masks, context_fn)
        else:
            steps = encode_masked(y, prior, masks, context_fn, encoder, DEFAULT_SCALE_TABLE)
        latent_hat = self.decoder(steps.y_hat, context, self.rate_gain(self.y_q_dec, rate_index))
        return InterAnalysis(adapted, context, y, temporal_params, weight_map, temporal_cond, hyper_input, z,
                             z_indices, vq.quantized, hier_params, prior_params, steps, latent_hat, vq.loss)

    # -- decoder side ----------------------------------------------------------------------------
    def reconstruct(self, ref_latent: torch.Tensor, plan: FramePlan, rate_index: int | float,
                    z_indices: torch.Tensor, steps_fn: StepsFn) -> InterReconstruction:
        """Decoder side: ``steps_fn(prior, masks, context_fn)`` supplies the symbols (entropy decoder,
        or stored symbols for teacher forcing)."""
        _, context = self.temporal_context(ref_latent, plan)
        temporal_params, weight_map = self.temporal_priors(context)
        hier_params, prior_params = self.prior_from_tokens(self.z_lookup(z_indices), weight_map, temporal_params, plan)
        masks = self.masks(prior_params[:, : self.config.latent_channels])
        steps = steps_fn(split_prior(prior_params), masks, self.context_fn(prior_params))
        latent_hat = self.decoder(steps.y_hat, context, self.rate_gain(self.y_q_dec, rate_index))
        return InterReconstruction(context, hier_params, prior_params, steps, latent_hat)



    # -- the portable path -----------------------------------------------------------------------
    def integer_decoder_side(self) -> "IntegerInterDecoderSide":
        nets = nn.ModuleList([self.feature_adaptor_I, self.feature_adaptor, self.feature_extractor,
                              self.temporal_prior_encoder, self.weight_generator, self.hyper_inv_tokenizer,
                              self.prior_fusion_adaptor_0, self.prior_fusion_adaptor_1, self.y_prior_fusion,
                              self.y_spatial_prior, self.decoder])
        return self._integer_twins.get("decoder_side", IntegerInterDecoderSide, nets)

    def analyse_portable(self, latent: torch.Tensor, ref_fixed: torch.Tensor, plan: FramePlan,
                         rate_index: int | float, encoder: EntropyEncoder) -> InterAnalysis:
        """The encoder side on the exact path: the temporal context, weight map, prior and decoded
        latent in fixed point (what the decoder computes); y, the tokens and their indices in float
        from the same context (only the encoder sees them)."""
        nets = self.integer_decoder_side()
        adapted_fixed, context_fixed = nets.temporal_context(ref_fixed, plan)
        temporal_fixed, weight_map_fixed = nets.temporal_priors(context_fixed)
        context, weight_map = integer.from_fixed(context_fixed), integer.from_fixed(weight_map_fixed)
        y = self.encoder(latent, context, self.rate_gain(self.y_q_enc, rate_index))
        temporal_cond = self.temporal_cond(context)
        hyper_input = self.y_temporal_combine(torch.cat((y, temporal_cond), dim=1))
        z = self.hyper_tokenizer(hyper_input, weight_map)
        vq = self.z_vq(z)
        prior_fixed = nets.prior_from_tokens(vq.quantized, weight_map_fixed, temporal_fixed, plan)
        steps = encode_masked_fixed(y, split_prior_fixed(prior_fixed), self.masks(y), nets.context_fn(prior_fixed),
                                    encoder, DEFAULT_SCALE_TABLE)
        latent_hat_fixed = nets.decoder(steps.y_hat_fixed, context_fixed, self.rate_gain(self.y_q_dec, rate_index))
        return InterAnalysis(integer.from_fixed(adapted_fixed), context, y, integer.from_fixed(temporal_fixed),
                             weight_map, temporal_cond, hyper_input, z, vq.indices.flatten(1), vq.quantized, None,
                             integer.from_fixed(prior_fixed), steps, integer.from_fixed(latent_hat_fixed), vq.loss,
                             latent_hat_fixed)

    def reconstruct_portable(self, ref_fixed: torch.Tensor, plan: FramePlan, rate_index: int | float,
                             z_indices: torch.Tensor, read_steps) -> torch.Tensor:
        """Decoder side on the exact path -> the fixed-point decoded latent.
        ``read_steps(prior, masks, context_fn)`` supplies the symbols (decode_masked_fixed)."""
        nets = self.integer_decoder_side()
        _, context_fixed = nets.temporal_context(ref_fixed, plan)
        temporal_fixed, weight_map_fixed = nets.temporal_priors(context_fixed)
        prior_fixed = nets.prior_from_tokens(self.z_lookup(z_indices), weight_map_fixed, temporal_fixed, plan)
        masks = self.masks(prior_fixed[:, : self.config.latent_channels])
        steps: FixedStepsResult = read_steps(split_prior_fixed(prior_fixed), masks, nets.context_fn(prior_fixed))
        return nets.decoder(steps.y_hat_fixed, context_fixed, self.rate_gain(self.y_q_dec, rate_index))


# -- integer twins ---------------------------------------------------------------------------------
class IntegerConditionalTransform(nn.Module):
    def __init__(self, transform: ConditionalTransform):
        super().__init__()
        first, second = (getattr(transform, name) for name in transform.stage_names)
        self.first, self.second = integer_twin(first), integer_twin(second)

    def forward(self, x: torch.Tensor, context: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return self.second(integer.scale_by_gain(self.first(torch.cat((x, context), dim=1)), gain))


class IntegerHyperInverseTokenizer(nn.Module):
    def __init__(self, tokenizer: HyperInverseTokenizer):
        super().__init__()
        self.tokens, self.heads = tokenizer.tokens, tokenizer.heads
        self.proj = integer_twin(tokenizer.proj)
        self.out_proj = integer_twin(tokenizer.out_proj)

    def forward(self, z_hat: torch.Tensor, weight_map: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(z_hat)  # (B, C, K, 1) fixed point
        b, c = tokens.shape[:2]
        h, w = weight_map.shape[-2:]
        per_token = tokens.reshape(b, self.heads, c // self.heads, self.tokens)
        head_weights = weight_map.reshape(b, self.tokens, self.heads, 1, h * w)
        # The mean over tokens as an exact sum of products (weights are sigmoids <= ONE = 2**12, so
        # each product is below 2**38), then one rounding division; token by token keeps one
        # (B, C, HW) map alive, not K of them.
        total = torch.zeros(b, self.heads, c // self.heads, h * w, dtype=integer.FIXED_DTYPE, device=tokens.device)
        for k in range(self.tokens):
            total += per_token[..., k].unsqueeze(-1) * head_weights[:, k]
        spread = integer.saturate(integer.rounding_divide(total, self.tokens * integer.ONE))
        return self.out_proj(spread.reshape(b, c, h, w))


class IntegerInterDecoderSide(nn.Module):
    """Integer twins of every P-frame net between the reference latent and the decoded latent."""

    def __init__(self, nets: nn.ModuleList):
        super().__init__()
        (adaptor_i, adaptors, extractor, temporal_prior_encoder, weight_generator, inverse_tokenizer,
         fusion_adaptor_0, fusion_adaptor_1, prior_fusion, spatial_prior, decoder) = nets
        self.feature_adaptor_I = integer_twin(adaptor_i)
        self.feature_adaptor = nn.ModuleList([integer_twin(a) for a in adaptors])
        self.feature_extractor = integer_twin(extractor)
        self.temporal_prior_encoder = integer_twin(temporal_prior_encoder)
        self.weight_generator = integer_twin(weight_generator)
        self.hyper_inv_tokenizer = IntegerHyperInverseTokenizer(inverse_tokenizer)
        self.prior_fusion_adaptor_0 = integer_twin(fusion_adaptor_0)
        self.prior_fusion_adaptor_1 = integer_twin(fusion_adaptor_1)
        self.y_prior_fusion = integer_twin(prior_fusion)
        self.y_spatial_prior = integer_twin(spatial_prior)
        self.decoder = IntegerConditionalTransform(decoder)

    def temporal_context(self, ref_fixed: torch.Tensor, plan: FramePlan) -> tuple[torch.Tensor, torch.Tensor]:
        adaptor = self.feature_adaptor_I if plan.after_intra else self.feature_adaptor[plan.adaptor_index]
        adapted = adaptor(ref_fixed)
        return adapted, self.feature_extractor(adapted)

    def temporal_priors(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        temporal_params = self.temporal_prior_encoder(context)
        return temporal_params, integer.sigmoid(self.weight_generator(temporal_params))

    def prior_from_tokens(self, z_hat: torch.Tensor, weight_map: torch.Tensor, temporal_params: torch.Tensor,
                          plan: FramePlan) -> torch.Tensor:
        hier_params = self.hyper_inv_tokenizer(integer.to_fixed(z_hat), weight_map)
        adaptor = self.prior_fusion_adaptor_0 if plan.after_intra else self.prior_fusion_adaptor_1
        return self.y_prior_fusion(adaptor(torch.cat((hier_params, temporal_params), dim=1)))

    def context_fn(self, prior_fixed: torch.Tensor):
        def context(step: int, y_hat_so_far: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            scales, means = self.y_spatial_prior(torch.cat((y_hat_so_far, prior_fixed), dim=1)).chunk(2, 1)
            return scales, means

        return context


register_integer_twin(ConvStack)(lambda stack: integer_twin(stack.conv))
register_integer_twin(FeatureExtractor)(lambda extractor: integer_twin(extractor.context_refine))
register_integer_twin(PriorFusionAdaptor)(
    lambda adaptor: integer.IntegerSequential(integer_twin(adaptor.conv1), integer_twin(adaptor.conv2)))

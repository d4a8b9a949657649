"""The three GLC-image training objectives (SYSTEMS.md 2.8), as one module DDP can wrap.

Everything that needs gradients goes through ``StageObjective.forward`` so that
DistributedDataParallel sees one forward per backward. The discriminator is passed in per call
(not registered as a sub-module): its parameters belong to its own optimiser and DDP wrapper.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.evaluation.metrics.pixel import THUMBNAIL_FACTOR
from latentcodec.models.glc_image import GLCImage
from latentcodec.models.glc_video import FEATURE_ADAPTOR_PATTERN, GLCVideo, FramePlan, plan_frame
from latentcodec.nn.patchgan import PatchGANDiscriminator
from latentcodec.training.config import TrainConfig
from latentcodec.training.losses import (
    PerceptualLoss,
    adaptive_gan_weight,
    hinge_generator_loss,
    per_sample_mean,
    trainable_residual_bits,
)


class StageLosses(NamedTuple):
    """The generator-side loss and its parts (detached scalars except ``total``)."""

    total: torch.Tensor
    x_hat: torch.Tensor | None  # [-1, 1] reconstruction, for the discriminator step
    x: torch.Tensor  # the [-1, 1] target
    rates: torch.Tensor  # (B,) rate index per sample
    bpp: torch.Tensor  # (B,) estimated bits per pixel (zeros in stage I)
    l1: torch.Tensor
    perceptual: torch.Tensor
    ms_ssim: torch.Tensor
    gan: torch.Tensor
    gan_weight: torch.Tensor
    codebook: torch.Tensor
    latent_mse: torch.Tensor
    code_ce: torch.Tensor
    code_pix_ce: torch.Tensor
    flow: torch.Tensor | None = None  # PerCoV2 stage A: the rectified-flow velocity MSE
    kl: torch.Tensor | None = None  # PerCoV2's VAE stage: KL per latent element
    # DLF: mean cosine between different windows' semantic tokens at the same position (1: the tokens
    # say nothing about the image)
    token_similarity: torch.Tensor | None = None


def trainable_prefixes(config: TrainConfig) -> tuple[str, ...]:
    """State-dict prefixes of the parameters each stage optimises."""
    if config.stage == "video":
        # The P-frame model only; the I-frame model and the shared VQGAN stay frozen.
        return ("inter.",)
    codec = ("q_enc", "q_dec", "enc.", "dec.", "hyper_enc.", "hyper_dec.", "z_vq.", "y_prior_fusion.",
             "y_spatial_prior", "code_pred_loss.")
    if config.stage == "vqgan":
        return ("vqgan.encoder.", "vqgan.generator.", "vqgan.quantize.")
    if config.stage == "latent":
        return codec
    joint = codec + ("vqgan.generator.",)
    if not config.freeze_vqgan_encoder:
        joint += ("vqgan.encoder.",)
    if config.losses.code_pix_ce > 0:
        joint += ("code_pred_pix_loss.",)
    return joint


def set_trainable(model: nn.Module, config: TrainConfig) -> list[nn.Parameter]:
    prefixes = trainable_prefixes(config)
    frozen = ("inter.vqgan.",) if config.stage == "video" else ()
    chosen = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes) and not name.startswith(frozen))
        if parameter.requires_grad:
            chosen.append(parameter)
    return chosen


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, HW, K) logits vs (B, HW) indices -> (B,) mean cross-entropy per sample."""
    per_position = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return per_position.view(targets.shape).mean(1)


class StageObjective(nn.Module):
    def __init__(self, model: GLCImage, config: TrainConfig, perceptual: PerceptualLoss | None):
        super().__init__()
        self.model = model
        self.config = config
        self.perceptual = perceptual
        self.gan_enabled = True  # the trainer turns the GAN term off before gan.start_step

    def generator_last_layer(self) -> nn.Module:
        """The conv whose gradients set the adaptive GAN weight."""
        return self.model.vqgan.generator.last_layer

    def _pixel_terms(self, x_hat: torch.Tensor, x: torch.Tensor, discriminator: PatchGANDiscriminator | None):
        weights = self.config.losses
        l1 = per_sample_mean((x_hat - x).abs())
        distortion = weights.l1 * l1
        if weights.mse:
            distortion = distortion + weights.mse * per_sample_mean((x_hat - x) ** 2)
        if weights.thumbnail:
            distortion = distortion + weights.thumbnail * per_sample_mean(
                (F.avg_pool2d(x_hat, THUMBNAIL_FACTOR) - F.avg_pool2d(x, THUMBNAIL_FACTOR)).abs())
        perceptual = ms_ssim = torch.zeros_like(l1)
        if self.perceptual is not None and weights.perceptual:
            terms = self.perceptual(x_hat, x, discriminator)
            perceptual = terms.per_sample
            if terms.ms_ssim is not None:
                ms_ssim = terms.ms_ssim
            distortion = distortion + weights.perceptual * perceptual
        return distortion, l1, perceptual, ms_ssim

    def _gan_terms(self, reconstruction: torch.Tensor, x_hat: torch.Tensor,
                   discriminator: PatchGANDiscriminator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        zero = reconstruction.new_zeros(())
        if discriminator is None or not self.config.losses.gan or not self.gan_enabled:
            return zero, zero, zero
        gan = hinge_generator_loss(discriminator(x_hat).logits.float())
        if self.config.gan.adaptive_weight and torch.is_grad_enabled():
            weight = adaptive_gan_weight(reconstruction, gan, self.generator_last_layer().weight,
                                         self.config.gan.max_weight)
        else:
            weight = reconstruction.new_ones(())
        return self.config.losses.gan * weight * gan, gan.detach(), weight

    def forward(self, x01: torch.Tensor, rates: torch.Tensor, lambdas: torch.Tensor,
                discriminator: PatchGANDiscriminator | None = None) -> StageLosses:
        stage = self.config.stage
        if stage == "vqgan":
            return self._vqgan(x01, rates, discriminator)
        return self._codec(x01, rates, lambdas, discriminator, pixels=(stage == "joint"))

    def _vqgan(self, x01, rates, discriminator) -> StageLosses:
        model, weights = self.model, self.config.losses
        x = model.pad(x01)
        latent = model.vqgan.encoder(x)
        if self.config.quantize_generator_input:
            vq = model.vqgan.quantize(latent)
            generator_input = vq.quantized
        else:
            # The generator sees the continuous latent (as it will behind the codec); the codebook
            # is only fitted to the latents, for the code-prediction targets of stages II/III.
            vq = model.vqgan.quantize(latent.detach())
            generator_input = latent
        x_hat = model.vqgan.generator(generator_input)
        distortion, l1, perceptual, ms_ssim = self._pixel_terms(x_hat, x, discriminator)
        reconstruction = distortion.mean()
        gan_term, gan, gan_weight = self._gan_terms(reconstruction, x_hat, discriminator)
        total = reconstruction + gan_term + weights.codebook * vq.loss
        zero = reconstruction.new_zeros(())
        return StageLosses(total, x_hat, x, rates, torch.zeros_like(l1), l1.mean().detach(), perceptual.mean().detach(),
                           ms_ssim.mean().detach(), gan, gan_weight, vq.loss.detach(), zero, zero, zero)

    def _codec(self, x01, rates, lambdas, discriminator, pixels: bool) -> StageLosses:
        model, weights = self.model, self.config.losses
        x = model.pad(x01)
        # The encoder side of GLCImage.forward, unrolled so the rate can use the trainable
        # estimator (see trainable_residual_bits) and the z_vq loss its own codeword lookup.
        encoded = model.analyse(x, rates)
        y_bits = trainable_residual_bits(encoded.steps.symbols, encoded.steps.scales)
        z_bits = float(model.z_bits_per_image(*x01.shape[-2:]))
        bpp = (y_bits.sum(dim=(1, 2, 3)) + z_bits) / (x01.shape[-2] * x01.shape[-1])
        vq_loss = self._z_vq_loss(encoded.z, encoded.z_indices)
        latent, latent_hat = encoded.latent.detach(), encoded.latent_hat
        latent_mse = per_sample_mean((latent_hat - latent) ** 2)
        distortion = weights.latent_mse * latent_mse
        lowpass = (lowpass_error(model.vqgan.generator, latent_hat, latent)
                   if weights.lowpass_latent or weights.lowpass_latent_floor else None)
        if weights.lowpass_latent:
            distortion = distortion + weights.lowpass_latent * lowpass
        zero = bpp.new_zeros(())
        l1 = perceptual = ms_ssim = torch.zeros_like(bpp)
        gan_term = gan = gan_weight = zero
        x_hat = model.vqgan.generator(latent_hat) if pixels else None
        if pixels:
            pixel_distortion, l1, perceptual, ms_ssim = self._pixel_terms(x_hat, x, discriminator)
            distortion = distortion + pixel_distortion
        code_ce = code_pix_ce = torch.zeros_like(bpp)
        if weights.code_ce or (pixels and weights.code_pix_ce):
            with torch.no_grad():
                targets = model.vqgan.quantize.indices(latent).flatten(1)
            if weights.code_ce:
                code_ce = cross_entropy(model.code_pred_loss(latent_hat), targets)
            if pixels and weights.code_pix_ce:
                # The second head reads the latent re-encoded from the reconstruction (SYSTEMS.md 2.8 [U]).
                code_pix_ce = cross_entropy(model.code_pred_pix_loss(model.vqgan.encoder(x_hat)), targets)
        # The code-prediction terms are distortions too: left outside lambda they would set the
        # rate on their own, the same for every rate index.
        distortion = distortion + weights.code_ce * code_ce + weights.code_pix_ce * code_pix_ce
        weighted = (lambdas[rates] * distortion).mean()
        if pixels:
            gan_term, gan, gan_weight = self._gan_terms(weighted, x_hat, discriminator)
        total = bpp.mean() + weighted + gan_term + weights.codebook * vq_loss
        if weights.lowpass_latent_floor:
            total = total + weights.lowpass_latent_floor * lowpass.mean()
        if weights.code_ce:
            # The head itself learns at full weight, whatever lambda is: a small lambda should
            # shrink the codec's effort to keep codes predictable, not the predictor's learning.
            total = total + weights.code_ce * cross_entropy(model.code_pred_loss(latent_hat.detach()), targets).mean()
        return StageLosses(total, x_hat, x, rates, bpp.detach(), l1.mean().detach(), perceptual.mean().detach(),
                           ms_ssim.mean().detach(), gan, gan_weight, vq_loss.detach(), latent_mse.mean().detach(),
                           code_ce.mean().detach(), code_pix_ce.mean().detach())

    def _z_vq_loss(self, z: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Commitment (weight 1) + beta * codebook term of z_vq, as VectorQuantizer.forward computes it."""
        quantizer = self.model.z_vq
        codewords = quantizer.lookup(indices)
        return F.mse_loss(z, codewords.detach()) + quantizer.beta * F.mse_loss(codewords, z.detach())


def lowpass_error(generator: nn.Module, latent_hat: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """(B,) MSE of the generator's low-pass images of the two latents (losses.lowpass_latent). The 1x1
    map is detached: the term moves the decoded latent, not the map (shrinking it would fake a small error)."""
    lowpass = generator.lowpass
    weight, bias = lowpass.weight.detach(), lowpass.bias.detach()
    return per_sample_mean((F.conv2d(latent_hat, weight, bias) - F.conv2d(latent, weight, bias)) ** 2)


class VideoObjective(nn.Module):
    """Stage "video": rate + lambda * latent MSE over the P-frames of clips (B, T, 3, H, W).

    Frame 0 goes through the frozen intra model without gradients; every later frame is a P-frame
    on the previous decoded latent, so the loss of frame t reaches the P-model's earlier frames
    through the chain (error propagation is trained, not only one step). The rate is the
    trainable estimate of y plus the fixed token bits, per pixel and P-frame.
    """

    def __init__(self, model: GLCVideo, config: TrainConfig):
        super().__init__()
        self.model = model
        self.config = config
        self.register_buffer("anchor_levels", torch.tensor(config.video.anchor_levels, dtype=torch.long),
                             persistent=False)

    def plans(self, length: int, generator: torch.Generator | None) -> list[FramePlan]:
        plans = [plan_frame(t, self.model.config.gop) for t in range(length)]
        if not self.config.video.random_adaptors:
            return plans
        choices = sorted(set(FEATURE_ADAPTOR_PATTERN))
        picked = torch.randint(0, len(choices), (length,), generator=generator).tolist()
        return [p if p.intra or p.after_intra else p._replace(adaptor_index=choices[picked[p.index]]) for p in plans]

    def forward(self, clips: torch.Tensor, rates: torch.Tensor, lambdas: torch.Tensor,
                discriminator: PatchGANDiscriminator | None = None,
                generator: torch.Generator | None = None) -> StageLosses:
        model, weights = self.model, self.config.losses
        batch, length = clips.shape[:2]
        levels = self.anchor_levels.to(rates.device)[rates]
        with torch.no_grad():
            intra = model.intra.analyse(model.intra.pad(clips[:, 0]), levels)
            # The I-frame's own low-pass error, from its analysis (no second encoder pass).
            intra_lowpass = (lowpass_error(model.intra.vqgan.generator, intra.latent_hat, intra.latent)
                             if weights.lowpass_floor_over_intra else None)
        reference = intra.latent_hat
        vqgan = model.inter_vqgan
        bits = clips.new_zeros(batch)
        latent_mse = clips.new_zeros(batch)
        distortion = clips.new_zeros(batch)  # what lambda weighs: latent MSE (+ the low-pass term)
        lowpass_floor = clips.new_zeros(batch)  # the low-pass term outside lambda (losses.lowpass_latent_floor)
        vq_loss = clips.new_zeros(())
        for plan in self.plans(length, generator)[1:]:
            with torch.no_grad():
                latent = vqgan.encoder(model.intra.pad(clips[:, plan.index]))
            analysis = model.inter.analyse(latent, reference, plan, levels)
            y_bits = trainable_residual_bits(analysis.steps.symbols, analysis.steps.scales)
            bits = bits + y_bits.sum(dim=(1, 2, 3)) + float(model.inter_z_bits())
            frame_mse = per_sample_mean((analysis.latent_hat - latent) ** 2)
            latent_mse = latent_mse + frame_mse
            distortion = distortion + weights.latent_mse * frame_mse
            if weights.lowpass_latent or weights.lowpass_latent_floor:
                # Every P-frame keeps the colour and layout of its low-pass channels (issue 10's
                # per-frame thumbnail target), as stages II/III teach the I-frame model.
                frame_lowpass = lowpass_error(vqgan.generator, analysis.latent_hat, latent)
                distortion = distortion + weights.lowpass_latent * frame_lowpass
                over = frame_lowpass if intra_lowpass is None else (frame_lowpass - intra_lowpass).clamp(min=0)
                lowpass_floor = lowpass_floor + weights.lowpass_latent_floor * over
            vq_loss = vq_loss + analysis.vq_loss
            reference = analysis.latent_hat
        p_frames = length - 1
        bpp = bits / (p_frames * clips.shape[-2] * clips.shape[-1])
        latent_mse, distortion = latent_mse / p_frames, distortion / p_frames
        vq_loss = vq_loss / p_frames
        total = (bpp.mean() + (lambdas[rates] * distortion).mean() + (lowpass_floor / p_frames).mean()
                 + weights.codebook * vq_loss)
        zero = bpp.new_zeros(())
        return StageLosses(total, None, clips, rates, bpp.detach(), zero, zero, zero, zero, zero, vq_loss.detach(),
                           latent_mse.mean().detach(), zero, zero)

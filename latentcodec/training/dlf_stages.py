"""DLF's two training stages (SYSTEMS.md 5.9) on the GLC trainer.

``dlf_align`` (the official "feat" strategy): the VQGAN is frozen and the codec learns to predict
its latent: 1.0 MSE(soft latent, VQGAN-encoder quantised latent) + 0.25 CE(logits, VQGAN indices)
+ 1.0 semantic VQ loss + lambda[q] * detail bpp. ``dlf_pixel`` ("pix"): the VQGAN decoder side
(decoder, post-quant conv, codebook) trains too: L1 + perceptual + adaptive-weight hinge PatchGAN
+ 1.0 semantic VQ loss + lambda[q] * detail bpp.

Differences from the official recipe, and why:
- The semantic tokenizer (TiTok) trains jointly by default (``dlf.freeze_semantic`` freezes it as
  the official does): there is no pretrained TiTok of our sizes.
- One model serves every rate: each sample draws a rate index, with its own lambda and gains.
- The rate term uses the trainable estimator of :func:`trainable_residual_bits` (sigma floored at
  0.11 with a gradient, log-space tails) instead of the official 1e-5-clamped likelihood, whose
  tail elements cost a flat 16.6 bits with no gradient (the same reason as in GLC's stages).
- "codebook" in the pixel stage is the semantic VQ loss, as in the alignment stage; the VQGAN
  codebook learns through the soft latent (the decoder never sees a hard codeword).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from latentcodec.data.crops import BatchStream
from latentcodec.errors import ConfigError, WeightsError
from latentcodec.models.dlf import DLF, PRESETS
from latentcodec.nn.patchgan import PatchGANDiscriminator
from latentcodec.training.checkpoints import CHECKPOINT_FILE, read_run_state
from latentcodec.training.config import TrainConfig
from latentcodec.training.dead_codes import DeadCodeRestart
from latentcodec.training.losses import PerceptualLoss, per_sample_mean, trainable_residual_bits
from latentcodec.training.stages import StageLosses, StageObjective

# Children of the hybrid encoder/decoder that belong to the detail branch; everything else in
# them is TiTok's (the ViT, its embeddings and norms), which ``dlf.freeze_semantic`` freezes.
DETAIL_CHILDREN = ("pix_emb_proj", "feat_in", "inter_blocks", "feat_blocks", "feat_out", "init_feat_up")
SEMANTIC_PREFIXES = ("hybrid_codec.quantize.", "hybrid_codec.latent_tokens")
# The pixel decoder's trainable side in the pixel stage, per VQGAN layout (the encoder stays fixed).
PIXEL_PREFIXES = {"glc": ("vqgan.generator.", "vqgan.quantize."),
                  "taming": ("vqgan.quantize.", "vqgan.post_quant_conv.", "vqgan.decoder.")}


def is_semantic_parameter(name: str) -> bool:
    if name.startswith(SEMANTIC_PREFIXES):
        return True
    for side in ("hybrid_codec.encoder.", "hybrid_codec.decoder."):
        if name.startswith(side):
            return name[len(side):].split(".")[0] not in DETAIL_CHILDREN
    return False


def set_dlf_trainable(model: DLF, config: TrainConfig) -> list[nn.Parameter]:
    """Freeze everything but the stage's parts; returns the trained parameters."""
    prefixes = ("hybrid_codec.", "prior_fusion.")
    if config.stage == "dlf_pixel":
        prefixes += PIXEL_PREFIXES[model.config.vqgan_layout]
    chosen = []
    for name, parameter in model.named_parameters():
        trained = name.startswith(prefixes) and not (config.dlf.freeze_semantic and is_semantic_parameter(name))
        parameter.requires_grad_(trained)
        if trained:
            chosen.append(parameter)
    return chosen


class DLFObjective(StageObjective):
    """Both DLF stages as one module for DDP; returns GLC's :class:`StageLosses` (``latent_mse``:
    soft-latent MSE, ``code_ce``: codeword CE, ``codebook``: semantic VQ loss, ``bpp``: detail)."""

    model: DLF

    def __init__(self, model: DLF, config: TrainConfig, perceptual: PerceptualLoss | None):
        super().__init__(model, config, perceptual)
        dlf_config = config.dlf
        self.dead_codes = DeadCodeRestart(model.hybrid_codec.quantize.codebook_size, dlf_config.semantic_restart_every,
                                          dlf_config.semantic_restart_crops, config.seed, config.data.batch_size)
        # Per-channel weights of the latent MSE (dlf.latent_weighting: generator_sensitivity), measured
        # by measure_channel_weights before training; not saved: the frozen generator gives them again.
        self.channel_weights: torch.Tensor | None = None
        # Set by the trainer each step: False before dlf.latent_weighting_from_step.
        self.weighting_active = True

    @torch.no_grad()
    def measure_channel_weights(self, probe: torch.Tensor, seed: int) -> str:
        """Set :attr:`channel_weights` from a [0, 1] probe batch (see generator_channel_sensitivity)."""
        model = self.model
        weights = generator_channel_sensitivity(model.vqgan, model.pad(probe), torch.Generator().manual_seed(seed))
        self.channel_weights = weights
        order = weights.argsort(descending=True)
        return (f"latent MSE weighted by generator sensitivity (mean 1) on {probe.shape[0]} crops: "
                f"largest {', '.join(f'ch{int(c)} {weights[c]:.2f}' for c in order[:4])}; smallest {float(weights.min()):.3f}")

    def generator_last_layer(self) -> nn.Module:
        vqgan = self.model.vqgan
        return vqgan.decoder.last_layer if self.model.config.vqgan_layout == "taming" else vqgan.generator.last_layer

    def forward(self, x01: torch.Tensor, rates: torch.Tensor, lambdas: torch.Tensor,
                discriminator: PatchGANDiscriminator | None = None,
                generator: torch.Generator | None = None) -> StageLosses:
        model, weights = self.model, self.config.losses
        pixels = self.config.stage == "dlf_pixel"
        x = model.pad(x01)
        analysis = model.analyse(x, rates, skip=False)
        y_hat = analysis.steps.y_hat
        dropout = self.config.dlf.detail_dropout
        if dropout and self.training and generator is not None:  # drawn after the rates: same rates as without
            kept = (torch.rand(y_hat.shape[0], generator=generator) >= dropout).to(y_hat.device, y_hat.dtype)
            y_hat = y_hat * kept.view(-1, 1, 1, 1)
        synthesis = model.synthesise(analysis.codes, y_hat, rates, decode=pixels)
        bits = trainable_residual_bits(analysis.steps.symbols, analysis.steps.scales).sum(dim=(1, 2, 3))
        bpp = bits / (x01.shape[-2] * x01.shape[-1])
        zero = bpp.new_zeros(())
        latent_mse = code_ce = l1 = perceptual = ms_ssim = torch.zeros_like(bpp)
        distortion = torch.zeros_like(bpp)
        if weights.latent_mse or weights.code_ce:
            with torch.no_grad():
                quantizer = model.vqgan.quantize
                latent = model.vqgan.encode(x)
                target_indices = quantizer.indices(latent)
                target = latent if self.config.dlf.latent_target == "continuous" else quantizer.lookup(target_indices)
            squared_error = (synthesis.soft_latent - target) ** 2
            weighting = self.config.dlf.latent_weighting if self.weighting_active else "none"
            if weighting == "channel_variance":
                squared_error = squared_error / codebook_channel_variance(model).view(1, -1, 1, 1)
            elif weighting == "generator_sensitivity":
                if self.channel_weights is None:
                    raise RuntimeError("generator_sensitivity weighting needs measure_channel_weights() first")
                squared_error = squared_error * self.channel_weights.to(squared_error).view(1, -1, 1, 1)
            latent_mse = per_sample_mean(squared_error)
            code_ce = F.cross_entropy(synthesis.logits.float(), target_indices, reduction="none").flatten(1).mean(1)
            distortion = distortion + weights.latent_mse * latent_mse + weights.code_ce * code_ce
        gan_term = gan = gan_weight = zero
        if pixels:
            pixel_distortion, l1, perceptual, ms_ssim = self._pixel_terms(synthesis.x_hat, x, discriminator)
            distortion = distortion + pixel_distortion
        if self.dead_codes.every and self.training and torch.is_grad_enabled():
            self.dead_codes.observe(analysis.token_indices, x01)
        similarity = window_token_similarity(analysis.tokens)
        diversity = F.relu(similarity - self.config.dlf.token_similarity_margin).mean() if similarity.numel() else zero
        reconstruction = distortion.mean()
        if pixels:
            gan_term, gan, gan_weight = self._gan_terms(reconstruction, synthesis.x_hat, discriminator)
        rate = (lambdas[rates] * bpp).mean()
        total = reconstruction + gan_term + weights.codebook * analysis.vq_loss + rate + weights.token_diversity * diversity
        return StageLosses(total, synthesis.x_hat, x, rates, bpp.detach(), l1.mean().detach(),
                           perceptual.mean().detach(), ms_ssim.mean().detach(), gan, gan_weight,
                           analysis.vq_loss.detach(), latent_mse.mean().detach(), code_ce.mean().detach(), zero,
                           token_similarity=similarity.mean().detach() if similarity.numel() else None)

    # -- semantic dead-code restart (dlf.semantic_restart_every) --------------------------------------
    def restart_due(self, step: int) -> bool:
        return self.dead_codes.due(step)

    def restart_dead_codes(self, step: int, distributed: bool, dataset=None) -> str:
        """Semantic codewords unused since the last restart move onto fresh crops' token vectors."""
        model = self.model

        def token_vectors(images: torch.Tensor) -> torch.Tensor:
            tokens = model.front_end(model.pad(images), None).tokens  # (N, D, 1, T)
            return tokens.permute(0, 2, 3, 1).reshape(-1, tokens.shape[1])

        report = self.dead_codes.restart(model.hybrid_codec.quantize.embedding.weight, token_vectors, step,
                                         distributed, dataset)
        return self.dead_codes.describe(step, report, "semantic codes")


def window_token_similarity(tokens: torch.Tensor) -> torch.Tensor:
    """Cosines between every two different windows' continuous semantic tokens (N, D, 1, T) at the same
    token position: (N (N - 1), T); empty for a single window."""
    count = tokens.shape[0]
    unit = F.normalize(tokens.flatten(2).float(), dim=1)  # (N, D, T)
    cosines = torch.einsum("adt,bdt->abt", unit, unit)
    return cosines[~torch.eye(count, dtype=torch.bool, device=tokens.device)]


@torch.no_grad()
def generator_channel_sensitivity(vqgan: nn.Module, images: torch.Tensor, generator: torch.Generator,
                                  relative_noise: float = 0.3) -> torch.Tensor:
    """Pixel MSE the generator makes of a unit of latent MSE, per latent channel, normalised to mean 1.

    Each channel of the probe images' latent in turn gets Gaussian noise of ``relative_noise`` times
    its standard deviation; the decoded pictures' squared error divided by the noise's realised
    power is that channel's sensitivity (small noise: the squared Jacobian norm along the channel).
    One decode per channel, so this runs once per run, not per step."""
    latent = vqgan.encode(images)
    reference = vqgan.decode(latent)
    spread = latent.float().std(dim=(0, 2, 3)).clamp_min(1e-6)
    sensitivity = torch.empty(latent.shape[1], dtype=torch.float64)
    for channel in range(latent.shape[1]):
        noise = torch.randn(latent[:, channel].shape, generator=generator).to(latent) * (relative_noise * spread[channel])
        perturbed = latent.clone()
        perturbed[:, channel] += noise
        pixel_error = float(((vqgan.decode(perturbed) - reference).double() ** 2).mean())
        sensitivity[channel] = pixel_error / max(float((noise.double() ** 2).mean()), 1e-30)
    sensitivity = sensitivity.clamp_min(1e-3 * float(sensitivity.max()))
    return (sensitivity / sensitivity.mean()).float()


def codebook_channel_variance(model: DLF) -> torch.Tensor:
    """Per-channel variance of the VQGAN codebook (the soft latent's range along each channel), floored
    so that a channel the codebook barely uses cannot blow the weighted error up."""
    codebook = model.vqgan.quantize.embedding.weight.detach()
    variance = codebook.float().var(dim=0)
    return variance.clamp_min(1e-3 * float(variance.max())).to(codebook.dtype)


# -- lambda control ------------------------------------------------------------------------------
class LambdaLadder:
    """One index per rate into an ascending ladder of lambdas (lambda weights the rate: a higher
    rung, fewer bits). :meth:`update` moves each index one rung towards its bpp range."""

    def __init__(self, ladder: Sequence[float], start: Sequence[int], bounds: Sequence[tuple[float, float]]):
        self.ladder = tuple(float(v) for v in ladder)
        self.indices = [int(i) for i in start]
        self.bounds = tuple((float(low), float(high)) for low, high in bounds)

    def values(self) -> list[float]:
        return [self.ladder[i] for i in self.indices]

    def update(self, bpp: Sequence[float]) -> list[int]:
        """Too many bits -> one rung up (rate costs more), too few -> one down; the new indices."""
        top = len(self.ladder) - 1
        for q, (value, (low, high)) in enumerate(zip(bpp, self.bounds)):
            if value > high:
                self.indices[q] = min(top, self.indices[q] + 1)
            elif value < low:
                self.indices[q] = max(0, self.indices[q] - 1)
        return list(self.indices)


class LambdaControl:
    """Every ``every`` steps: the detail-only estimated bpp (the model's own inference estimate,
    skip rule on) of fixed control images at each rate, then one ladder update, made on rank 0
    and broadcast so every rank keeps the same lambdas."""

    def __init__(self, ladder: LambdaLadder, images: list[torch.Tensor], every: int):
        self.ladder = ladder
        self.images = images
        self.every = every

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    @torch.no_grad()
    def measure(self, model: DLF) -> list[float]:
        was_training = model.training
        model.eval()
        bpp = []
        for q in range(model.num_rates):
            values = []
            for x in self.images:
                height, width = x.shape[-2:]
                detail_bits = model.estimate_bits(x, q) - model.semantic_bits_per_image(height, width)
                values.append(detail_bits / (height * width))
            bpp.append(float(np.mean(values)))
        model.train(was_training)
        return bpp

    def run(self, model: DLF, is_main: bool, distributed: bool, device: torch.device) -> list[float] | None:
        bpp = None
        if is_main:
            bpp = self.measure(model)
            self.ladder.update(bpp)
        if distributed:
            indices = torch.tensor(self.ladder.indices, dtype=torch.long, device=device)
            dist.broadcast(indices, 0)
            self.ladder.indices = indices.tolist()
        return bpp


def inherited_lambda_indices(config: TrainConfig) -> list[int]:
    """The ladder indices the ``init_from`` DLF run ended with (``dlf.inherit_lambdas``)."""
    path = Path(os.path.expanduser(os.path.expandvars(config.init_from)))
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    payload = torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else {}
    indices, ladder = payload.get("lambda_indices"), payload.get("config", {}).get("dlf", {}).get("lambda_ladder")
    if indices is None or ladder is None:
        raise ConfigError(f"dlf.inherit_lambdas: {path} is not a DLF trainer checkpoint")
    if tuple(float(v) for v in ladder) != tuple(config.dlf.lambda_ladder):
        raise ConfigError(f"dlf.inherit_lambdas: {path} used another dlf.lambda_ladder")
    return [int(i) for i in indices]


def load_control_images(config: TrainConfig, holdout: list[Path], dataset,
                        device: torch.device) -> tuple[list[torch.Tensor], str]:
    """The first ``dlf.control_images`` validation images (centre-cropped to ``dlf.control_crop``),
    or a fixed batch of training crops when there are none."""
    from latentcodec.training.validation import describe_validation, load_images, validation_files

    count, crop = config.dlf.control_images, config.dlf.control_crop
    files = validation_files(dataclasses.replace(config.validation, images=count), holdout)
    if files:
        images = [image.to(device) for image in load_images(files, crop)]
        return images, describe_validation(config.validation, files)
    probe = BatchStream(dataset, count, config.seed + 2, 0, 1, 0).next_batch().to(device)
    return list(probe.split(1)), f"{count} fixed training crops (no validation images)"


# -- weights ---------------------------------------------------------------------------------------
def load_vqgan_weights(model: DLF, source: str) -> tuple[str, bool]:
    """Copy the ``vqgan.*`` tensors of a GLC-image save_pretrained folder, a GLC or DLF training
    checkpoint or run folder into ``model.vqgan``, strictly. Returns (a note, whether the codebook
    was missing there and must be seeded from encoder outputs)."""
    state, path = read_run_state(source, "dlf.init_vqgan")
    state = {k[len("vqgan."):]: v for k, v in state.items() if k.startswith("vqgan.")}
    if not state:
        raise WeightsError(f"dlf.init_vqgan {path}: no vqgan.* tensors (not a GLC-image or DLF model)")
    own = model.vqgan.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if unexpected or any(not k.startswith(("encoder.", "quant_conv.", "quantize.")) for k in missing):
        raise WeightsError(f"dlf.init_vqgan {path}: not this preset's VQGAN layout "
                           f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    if any(k.startswith(("encoder.", "quant_conv.")) for k in missing):
        raise WeightsError(f"dlf.init_vqgan {path}: an inference build without the VQGAN encoder, which DLF "
                           f"training needs for its targets; use the GLC stage-I run (its checkpoint.pt)")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise WeightsError(f"dlf.init_vqgan {path}: vqgan.{key} has shape {tuple(tensor.shape)}, "
                               f"expected {tuple(own[key].shape)}")
    model.vqgan.load_state_dict(state, strict=False)
    codebook_missing = bool(missing)
    note = f"VQGAN from {path}" + (" (no codebook there: seeded from encoder outputs)" if codebook_missing else "")
    return note, codebook_missing


def load_dlf_weights(model: DLF, source: str) -> tuple[str, bool]:
    """Initialise the whole model from a DLF run folder, checkpoint or save_pretrained folder;
    only the training-only VQGAN encoder may be absent (an exported model). Returns (a note,
    whether the encoder stayed fresh)."""
    state, path = read_run_state(source, "init_from")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if unexpected or any(not k.startswith(DLF.optional_prefixes) for k in missing):
        raise WeightsError(f"init_from {path}: not a DLF model of this preset "
                           f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise WeightsError(f"init_from {path}: {key} has shape {tuple(tensor.shape)}, expected {tuple(own[key].shape)}")
    model.load_state_dict(state, strict=False)
    note = f"initialised from {path}" + (f" (no VQGAN encoder there: {len(missing)} tensors fresh)" if missing else "")
    return note, bool(missing)


def build_dlf_model(config: TrainConfig, load_weights: bool = True) -> tuple[DLF, str, bool]:
    """The model of a DLF stage, with the VQGAN encoder; (model, note, codebook needs seeding).
    ``load_weights=False`` (a resumed run) skips ``init_from``/``dlf.init_vqgan``."""
    model = DLF(PRESETS[config.preset](), with_training_modules=True)
    if not load_weights:
        return model, "weights from the checkpoint", False
    notes, seed_codebook, encoder_fresh = [], False, False
    if config.init_from:
        note, encoder_fresh = load_dlf_weights(model, config.init_from)
        notes.append(note)
    if config.dlf.init_vqgan:
        note, seed_codebook = load_vqgan_weights(model, config.dlf.init_vqgan)
        notes.append(note)
        encoder_fresh = False
    if encoder_fresh and (config.losses.latent_mse or config.losses.code_ce):
        raise WeightsError(f"init_from {config.init_from} has no VQGAN encoder for the latent targets: "
                           f"set dlf.init_vqgan, or losses.latent_mse and losses.code_ce to 0")
    if config.dlf.merge_head_init == "codebook_distance" and not seed_codebook:
        # (A codebook still to be seeded from data gets its head from the trainer, once it is seeded.)
        notes.append(init_merge_head(model))
    return model, ", ".join(notes) or "fresh initialisation", seed_codebook


def init_merge_head(model: DLF) -> str:
    """dlf.merge_head_init codebook_distance: the FeatMerge head from the current codebook; a note."""
    tau = model.prior_fusion.init_head_from_codebook(model.vqgan.quantize.embedding.weight)
    return f"FeatMerge head from the codebook's distances (tau {tau:.4g})"


def export_dlf_model(payload: dict[str, Any], out_dir: str | os.PathLike, source: str,
                     metadata: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """A DLF trainer checkpoint -> save_pretrained folder without the VQGAN encoder."""
    model = DLF(PRESETS[payload["preset"]](), with_training_modules=False)
    state = {k: v for k, v in payload["model"].items() if not k.startswith(DLF.optional_prefixes)}
    model.load_state_dict_strict(state, source=source)
    return model.save_pretrained(out_dir, metadata=metadata, dtype=dtype)

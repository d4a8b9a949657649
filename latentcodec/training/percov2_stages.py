"""PerCoV2's training stages on the GLC trainer (SYSTEMS.md 6.6.4).

``percov2_vae``: the small preset's own AutoencoderKL (16 latent channels, f8, SD3's layout), trained as
an autoencoder: L1 + MSE + (1 - MS-SSIM) (the trainer's "fallback" perceptual loss, feature matching
off) on the decoded posterior sample, + a small KL term, optionally the PatchGAN of the GLC stages. SD3's
own VAE is licence-gated, so a shippable model needs one of ours.

``percov2_flow`` (stage A): the VAE frozen; the hyper-encoder, the VQ, the adapter and the whole MMDiT
learn rectified flow on the normalised latent (``PerCoV2.forward``: x_t = (1 - t) z + t eps, logit-normal
t, velocity target eps - z) conditioned on the tokens, plus the VQ loss (commitment + codebook terms),
with caption dropout. The token prior is stage B's (``latentcodec fit-token-prior --model percov2``), so
a stage-A model is built and exported without one.

What differs from 6.6.4, and why: no LPIPS term on one-step estimates for g >= 32 (no LPIPS weights
here; the tiny preset is g = 32); no training captions (the crop loader has no caption source and no
text encoder is available), so caption dropout is exercised only by callers that pass captions.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.config import config_from_dict, config_to_dict
from latentcodec.data.crops import BatchStream, RandomCropDataset
from latentcodec.errors import ConfigError, WeightsError
from latentcodec.models import percov2_sd3 as sd3
from latentcodec.models.percov2 import EMPTY_CAPTION, PRESETS, PerCoV2, PerCoV2Config
from latentcodec.models.percov2_networks import LatentProbe
from latentcodec.nn.patchgan import PatchGANDiscriminator
from latentcodec.training.checkpoints import CHECKPOINT_FILE, read_run_state
from latentcodec.training.config import TrainConfig, ValidationConfig
from latentcodec.training.dead_codes import DeadCodeRestart
from latentcodec.training.losses import PerceptualLoss
from latentcodec.training.stages import StageLosses, StageObjective

VAE_PREFIX = "vae."
PROBE_PREFIX = "latent_probe."  # the training-only LatentProbe: checkpointed, never exported


class PerCoV2VAE(nn.Module):
    """The model of stage ``percov2_vae``: the preset's VAE alone, under the name PerCoV2 gives it
    (``vae.*``), so a flow run copies these tensors straight into its codec."""

    def __init__(self, config: PerCoV2Config):
        super().__init__()
        self.config = config
        self.vae = sd3.build_vae(config.vae)


class PerCoV2Build(NamedTuple):
    model: nn.Module  # PerCoV2 (flow) or PerCoV2VAE
    note: str
    measure_scaling: bool  # a fresh flow run whose VAE has no normalisation of its own yet


# -- models and weights ----------------------------------------------------------------------------
def stage_config(config: TrainConfig) -> PerCoV2Config:
    """The preset's config as stage A trains it: without a token prior (stage B adds one)."""
    return dataclasses.replace(PRESETS[config.preset](), token_prior=None)


def _expand(path: str) -> Path:
    return Path(os.path.expanduser(os.path.expandvars(path)))


def is_diffusers_folder(path: Path) -> bool:
    return (path / sd3.VAE_FOLDER).is_dir() and (path / sd3.TRANSFORMER_FOLDER).is_dir()


def stored_model_config(source: Path) -> PerCoV2Config | None:
    """The PerCoV2Config a flow checkpoint (its ``model_config``) or a save_pretrained folder holds."""
    if source.is_dir() and (source / CHECKPOINT_FILE).is_file():
        source = source / CHECKPOINT_FILE
    if source.is_file():
        # mmap: a small flow checkpoint is ~1 GB, of which only the config is read here.
        stored = torch.load(source, map_location="cpu", weights_only=False, mmap=True).get("model_config")
        return None if stored is None else config_from_dict(PerCoV2Config, stored, where=str(source))
    if (source / "config.json").is_file():
        return PerCoV2.read_config(source)
    return None


def set_latent_scaling(model: nn.Module, scale: float, shift: float) -> None:
    """Normalise the VAE latent as z = (latent - shift) * scale: in the diffusers module's config (what
    the encode/decode functions read) and in the codec config (what save_pretrained writes)."""
    model.vae.register_to_config(scaling_factor=float(scale), shift_factor=float(shift))
    model.config = dataclasses.replace(model.config, vae={**model.config.vae, "scaling_factor": float(scale),
                                                          "shift_factor": float(shift)})


@torch.no_grad()
def measure_latent_scaling(vae: nn.Module, images: torch.Tensor) -> tuple[float, float]:
    """(scale, shift) giving the posterior-mode latent of ``images`` ([0, 1]) mean 0 and std 1 over all
    its elements (one pair for all channels, as SD3's 1.5305 / 0.0609)."""
    latent = vae.encode(images * 2.0 - 1.0).latent_dist.mode().double()
    return float(1.0 / latent.std()), float(latent.mean())


def normalise_latent_on_data(model: PerCoV2, dataset: RandomCropDataset, config: TrainConfig,
                             device: torch.device) -> str:
    """Set the latent normalisation from a fixed set of training crops (the same on every rank)."""
    count = min(config.percov2.scaling_crops, len(dataset))
    probe = BatchStream(dataset, count, config.seed + 1, 0, 1, 0)
    scale, shift = measure_latent_scaling(model.vae, probe.next_batch().to(device))
    set_latent_scaling(model, scale, shift)
    return f"latent normalisation from {count} training crops: scaling_factor {scale:.5g}, shift_factor {shift:.5g}"


def _load_vae_run(model: PerCoV2, state: dict[str, torch.Tensor], path: Path) -> None:
    vae_state = {k[len(VAE_PREFIX):]: v for k, v in state.items() if k.startswith(VAE_PREFIX)}
    own = model.vae.state_dict()
    if set(vae_state) != set(own) or any(tuple(v.shape) != tuple(own[k].shape) for k, v in vae_state.items()):
        raise WeightsError(f"init_from {path}: not a VAE of this preset's layout")
    model.vae.load_state_dict(vae_state)


def build_percov2_model(config: TrainConfig, checkpoint: Path | None = None) -> PerCoV2Build:
    """The model of a PerCoV2 stage. ``checkpoint`` (a resumed run): built from the config it stored,
    weights left to the trainer. Otherwise from ``init_from`` (see PerCoV2TrainConfig) or fresh."""
    model_config = stage_config(config)
    if checkpoint is not None:
        model_config = stored_model_config(checkpoint) or model_config
    if config.stage == "percov2_vae":
        model = PerCoV2VAE(model_config)
        if checkpoint is None and config.init_from:
            state, path = read_run_state(config.init_from, "init_from")
            _load_vae_run(model, state, path)  # type: ignore[arg-type]  (the same vae.* layout)
            return PerCoV2Build(model, f"VAE from {path}", False)
        return PerCoV2Build(model, "weights from the checkpoint" if checkpoint else "fresh VAE", False)
    source = _expand(config.init_from) if config.init_from else None
    if checkpoint is not None:
        model = with_probe(PerCoV2(model_config), config)
        if source is not None and is_diffusers_folder(source) and sd3.has_text_encoders(source):
            model.attach_prompt_encoder(sd3.DiffusersPromptEncoder(source, model.vae, model.transformer))
        return PerCoV2Build(model, "weights from the checkpoint", False)
    if source is None:
        # Only tests want this: the frozen VAE stays random (a real run names a percov2_vae run).
        return PerCoV2Build(with_probe(PerCoV2(model_config), config), "fresh initialisation, the frozen VAE too", True)
    if is_diffusers_folder(source):
        model = with_probe(PerCoV2.from_diffusers(source, hyper=model_config.hyper, sampling=model_config.sampling),
                           config)
        return PerCoV2Build(model.train(), f"SD3 components from {source}", False)
    state, path = read_run_state(source, "init_from")
    if all(k.startswith(VAE_PREFIX) for k in state):  # a percov2_vae run: its VAE, everything else fresh
        model = with_probe(PerCoV2(model_config), config)
        _load_vae_run(model, state, path)
        return PerCoV2Build(model, f"VAE from {path}, the rest fresh", True)
    stored = stored_model_config(source)
    if stored is None:
        raise WeightsError(f"init_from {path}: no PerCoV2 model config there (a flow run or save_pretrained "
                           f"folder is needed)")
    if stored.hyper != model_config.hyper:
        raise WeightsError(f"init_from {path}: its hyper-encoder is not preset {config.preset!r}'s")
    model = with_probe(PerCoV2(dataclasses.replace(stored, token_prior=None)), config)
    state = {k: v for k, v in state.items() if not k.startswith("token_prior.")}
    note = f"initialised from {path}"
    if hasattr(model, "latent_probe"):
        if not any(k.startswith(PROBE_PREFIX) for k in state):
            state.update({PROBE_PREFIX + k: v for k, v in model.latent_probe.state_dict().items()})
            note += " (latent probe fresh)"
    else:
        state = {k: v for k, v in state.items() if not k.startswith(PROBE_PREFIX)}
    model.load_state_dict_strict(state, source=str(path))
    return PerCoV2Build(model, note, False)


def with_probe(model: PerCoV2, config: TrainConfig) -> PerCoV2:
    """Attach the training-only LatentProbe when ``losses.latent_probe`` weighs it (flow stage)."""
    if config.stage == "percov2_flow" and config.losses.latent_probe:
        model.latent_probe = LatentProbe(model.config.hyper)
    return model


def set_percov2_trainable(model: nn.Module, config: TrainConfig) -> list[nn.Parameter]:
    """VAE stage: the VAE. Flow stage: everything but the VAE (frozen, SYSTEMS.md 6.6.4)."""
    chosen = []
    for name, parameter in model.named_parameters():
        trained = name.startswith(VAE_PREFIX) == (config.stage == "percov2_vae")
        parameter.requires_grad_(trained)
        if trained:
            chosen.append(parameter)
    return chosen


def export_percov2_model(payload: dict[str, Any], out_dir: str | os.PathLike, source: str,
                         metadata: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """A flow-stage checkpoint -> a save_pretrained folder (no token prior: stage B fits one)."""
    if payload["stage"] != "percov2_flow":
        raise ConfigError(f"{source} is a {payload['stage']} run: its VAE is the init_from of a percov2_flow run, "
                          f"which exports the codec")
    model = PerCoV2(config_from_dict(PerCoV2Config, payload["model_config"], where=source))
    state = {k: v for k, v in payload["model"].items() if not k.startswith(PROBE_PREFIX)}
    model.load_state_dict_strict(state, source=source)
    return model.save_pretrained(out_dir, metadata=metadata, dtype=dtype)


def model_config_payload(model: nn.Module) -> dict[str, Any]:
    return config_to_dict(model.config)


# -- objectives -------------------------------------------------------------------------------------
def drop_captions(captions: list[str], generator: torch.Generator | None, rate: float) -> list[str]:
    """Each caption replaced by the empty one with probability ``rate`` (one draw per sample, always)."""
    drop = torch.rand(len(captions), generator=generator) < rate
    return [EMPTY_CAPTION if dropped else caption for caption, dropped in zip(captions, drop.tolist())]


class PerCoV2FlowObjective(nn.Module):
    """Stage A as one module for DDP: ``total = flow * MSE(v, eps - z) + codebook * VQ loss
    + latent_probe * MSE(probe(z_l), z)``. StageLosses fields: ``flow`` the velocity MSE, ``latent_mse``
    the probe's MSE (0 without a probe), ``codebook`` the VQ loss, ``bpp`` the fixed-length token rate."""

    def __init__(self, model: PerCoV2, config: TrainConfig, perceptual: PerceptualLoss | None = None):
        super().__init__()
        self.model = model
        self.config = config
        self.gan_enabled = False
        self._empty_prompt: sd3.PromptEmbeddings | None = None  # text encoders are slow: encode "" once
        self.dead_codes = DeadCodeRestart(model.config.hyper.codebook_size, config.percov2.dead_code_every,
                                          config.percov2.restart_crops, config.seed, config.data.batch_size)

    def prompts(self, captions: list[str] | None, batch: int, generator: torch.Generator | None
                ) -> sd3.PromptEmbeddings | None:
        """The batch's caption embeddings after dropout; None (the model's empty caption) without captions.
        The dropout draws come first and always, so the noise that follows does not depend on captions."""
        dropped = drop_captions(captions or [EMPTY_CAPTION] * batch, generator, self.config.percov2.caption_dropout)
        if all(caption == EMPTY_CAPTION for caption in dropped):
            if self.model.prompt_encoder is None:
                return None
            if self._empty_prompt is None:
                self._empty_prompt = self.model.prompt_embeddings(EMPTY_CAPTION)
            return self._empty_prompt.repeat(batch)
        if self.model.prompt_encoder is None:
            raise ConfigError("captions given, but this PerCoV2 model has no text encoders (no-text mode)")
        with torch.no_grad():
            embeddings = self.model.prompt_encoder(dropped)
        return sd3.PromptEmbeddings(embeddings.tokens.to(self.model.device), embeddings.pooled.to(self.model.device))

    def forward(self, x01: torch.Tensor, rates: torch.Tensor, lambdas: torch.Tensor,
                discriminator: PatchGANDiscriminator | None = None, generator: torch.Generator | None = None,
                captions: list[str] | None = None) -> StageLosses:
        weights = self.config.losses
        prompt = self.prompts(captions, x01.shape[0], generator)
        shift = self.config.percov2.position_shift
        rows, cols = (torch.randint(-shift, shift + 1, (2,), generator=generator).tolist() if shift and self.training
                      else (0, 0))
        with sd3.shifted_positions(self.model.transformer, rows, cols):
            output = self.model(x01, prompt=prompt, generator=generator)
        if self.dead_codes.every and self.training and torch.is_grad_enabled():
            self.dead_codes.observe(output.token_indices, x01)
        total = weights.flow * output.flow_loss + weights.codebook * output.vq_loss
        zero = total.new_zeros(())
        probe_loss = zero
        if weights.latent_probe:
            probe_loss = F.mse_loss(self.model.latent_probe(output.hyper_latent), output.latent)
            total = total + weights.latent_probe * probe_loss
        bpp = output.token_bits / output.num_pixels
        flow = output.flow_loss.detach()
        return StageLosses(total, None, x01, rates, bpp, zero, zero, zero, zero, zero, output.vq_loss.detach(),
                           probe_loss.detach(), zero, zero, flow=flow)

    def restart_due(self, step: int) -> bool:
        return self.dead_codes.due(step)

    def restart_dead_codes(self, step: int, distributed: bool, dataset: RandomCropDataset | None = None) -> str:
        """Codes unused since the last restart move onto token vectors: those of ``percov2.restart_crops``
        fresh training crops, one code per vector, or without crops those of the latest batch."""
        model = self.model

        def token_vectors(images: torch.Tensor) -> torch.Tensor:
            code = model.quantizer.down(model.hyper_encoder(sd3.encode_latent(model.vae, model.pad(images))))
            return code.permute(0, 2, 3, 1).reshape(-1, code.shape[1])

        report = self.dead_codes.restart(model.quantizer.vq.embedding.weight, token_vectors, step, distributed, dataset)
        return self.dead_codes.describe(step, report)


class PerCoV2VAEObjective(StageObjective):
    """The VAE stage: the GLC stages' pixel terms (l1, mse, thumbnail, perceptual, GAN) on the decoded
    posterior sample, + ``kl`` * KL per latent element. StageLosses ``kl`` holds the KL."""

    model: PerCoV2VAE

    def generator_last_layer(self) -> nn.Module:
        return self.model.vae.decoder.conv_out

    def forward(self, x01: torch.Tensor, rates: torch.Tensor, lambdas: torch.Tensor,
                discriminator: PatchGANDiscriminator | None = None,
                generator: torch.Generator | None = None) -> StageLosses:
        vae, weights = self.model.vae, self.config.losses
        x = x01 * 2.0 - 1.0
        posterior = vae.encode(x).latent_dist
        x_hat = vae.decode(posterior.sample(generator)).sample
        distortion, l1, perceptual, ms_ssim = self._pixel_terms(x_hat, x, discriminator)
        kl = posterior.kl().float() / posterior.mean[0].numel()
        reconstruction = distortion.mean()
        gan_term, gan, gan_weight = self._gan_terms(reconstruction, x_hat, discriminator)
        total = reconstruction + gan_term + weights.kl * kl.mean()
        zero = reconstruction.new_zeros(())
        return StageLosses(total, x_hat, x, rates, torch.zeros_like(l1), l1.mean().detach(),
                           perceptual.mean().detach(), ms_ssim.mean().detach(), gan, gan_weight, zero, zero, zero,
                           zero, kl=kl.mean().detach())


# -- validation -------------------------------------------------------------------------------------
def reconstruct_with_vae(vae: nn.Module, x: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A [0, 1] image through the VAE without coding: (reconstruction in [0, 1], the posterior mode);
    replicate-padded to the VAE's factor and cropped back."""
    height, width = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (0, -width % factor, 0, -height % factor), mode="replicate")
    mode = vae.encode(padded * 2.0 - 1.0).latent_dist.mode()
    return ((vae.decode(mode).sample + 1.0) / 2.0).clamp(0, 1)[..., :height, :width], mode


@torch.no_grad()
def validate_vae(model: PerCoV2VAE, config: ValidationConfig, files: list[Path], device: torch.device,
                 log: Callable[[str], None]) -> dict[str, Any] | None:
    """Reconstruction (posterior mode) of the validation images: PSNR, MS-SSIM, L1 on [-1, 1] (what
    best.pt selection reads), bpp 0 (nothing is coded), and the latent's mean and std."""
    from latentcodec.evaluation.metrics.pixel import MSSSIM, PSNR
    from latentcodec.training.validation import load_images

    if not files:
        log(f"validation skipped: no images in {config.image_dir}")
        return None
    psnr, msssim = PSNR(), MSSSIM()
    model.eval()
    psnrs, ssims, l1s, means, stds = [], [], [], [], []
    factor = model.config.vae_factor
    for x in load_images(files, config.crop):
        decoded, mode = reconstruct_with_vae(model.vae, x.to(device), factor)
        x_hat = torch.round(decoded.cpu() * 255) / 255
        psnrs.append(psnr(x[0], x_hat[0]))
        ssims.append(msssim(x[0], x_hat[0]))
        l1s.append(float(2 * (x_hat - x).abs().mean()))
        means.append(float(mode.mean()))
        stds.append(float(mode.std()))
    model.train()
    return {"0": {"bpp": 0.0, "psnr": float(np.mean(psnrs)), "ms_ssim": float(np.mean(ssims)),
                  "l1": float(np.mean(l1s)), "latent_mean": float(np.mean(means)), "latent_std": float(np.mean(stds))}}


def single_point(config: ValidationConfig) -> ValidationConfig:
    """PerCoV2 has one operating point: validate rate 0 whatever ``rate_indices`` says."""
    return dataclasses.replace(config, rate_indices=(0,))

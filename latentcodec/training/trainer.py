"""The training loop: DDP, gradient accumulation, bf16 autocast, validation, checkpoints, resume.

One process per device. Under ``torchrun`` the process group comes from the environment (gloo on
CPU, nccl on CUDA); a plain ``latentcodec train`` is a world of one.

Determinism: the data order and crops are functions of (seed, epoch, position), the rate index
of every sample is drawn from a generator seeded by (seed, step, micro-batch, rank), and every
checkpoint stores optimiser, scheduler, scaler, per-rank RNG and data positions. A run killed at
any moment and resumed therefore repeats exactly what it lost since the last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from latentcodec.config import config_to_dict
from latentcodec.data.clips import build_clip_dataset
from latentcodec.data.crops import BatchStream, RandomCropDataset, find_images, split_holdout
from latentcodec.errors import ConfigError, WeightsError
from latentcodec.models.glc_image import PRESETS, GLCImage
from latentcodec.nn.patchgan import PatchGANDiscriminator
from latentcodec.training.checkpoints import (  # noqa: F401  (export_inference_model: the trainer's API)
    CHECKPOINT_FILE,
    atomic_torch_save,
    build_video_model,
    export_inference_model,
    load_model_weights,
    rng_state,
    set_rng_state,
)
from latentcodec.training.codebook_init import codebook_from_vectors, encoder_vectors, sampled_codebook
from latentcodec.training.config import DLF_STAGES, PERCOV2_STAGES, TrainConfig, dump_config
from latentcodec.training.distributed import choose_device, init_distributed
from latentcodec.training.dlf_stages import (
    DLFObjective,
    LambdaControl,
    LambdaLadder,
    build_dlf_model,
    inherited_lambda_indices,
    init_merge_head,
    load_control_images,
    set_dlf_trainable,
)
from latentcodec.training import percov2_stages
from latentcodec.training.losses import PerceptualLoss, hinge_discriminator_loss, lpips_vgg_status
from latentcodec.training.selection import BEST_FILE, improves
from latentcodec.training.stages import StageLosses, StageObjective, VideoObjective, set_trainable
from latentcodec.training.validation import validate_images, validate_video, validation_files

METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer:
    def __init__(self, config: TrainConfig, resume: bool = False):
        self.config = config
        device_kind = "cuda" if config.runtime.device.startswith("cuda") or (
            config.runtime.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.dist = init_distributed(device_kind)
        self.device = choose_device(config, self.dist.local_rank)
        if config.runtime.threads and self.device.type == "cpu":
            torch.set_num_threads(config.runtime.threads)
        # Adam's second moments decay into denormal floats, which x86 CPUs process ~100x slower.
        torch.set_flush_denormal(True)
        self.run_dir = config.run_dir()
        self.checkpoint_path = self.run_dir / CHECKPOINT_FILE
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.checkpoint_path.exists() and not resume:
                raise ConfigError(f"{self.run_dir} already holds a checkpoint: pass --resume, or pick another name")
        self._barrier()
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2**32)
        random.seed(config.seed)

        self.is_video = config.stage == "video"
        self.is_dlf = config.stage in DLF_STAGES
        self.is_percov2 = config.stage in PERCOV2_STAGES
        seed_dlf_codebook = measure_scaling = False
        resuming = resume and self.checkpoint_path.exists()
        if self.is_video:
            self.model, init_note = build_video_model(config)
        elif self.is_dlf:
            self.model, init_note, seed_dlf_codebook = build_dlf_model(config, load_weights=not resuming)
        elif self.is_percov2:
            self.model, init_note, measure_scaling = percov2_stages.build_percov2_model(
                config, self.checkpoint_path if resuming else None)
        else:
            self.model = GLCImage(PRESETS[config.preset](), with_training_modules=True)
            init_note = load_model_weights(self.model, config.init_from) if config.init_from else "fresh initialisation"
        self.model.to(self.device)
        if self.is_percov2:
            parameters = percov2_stages.set_percov2_trainable(self.model, config)
        else:
            parameters = set_dlf_trainable(self.model, config) if self.is_dlf else set_trainable(self.model, config)
        self.rate_slots = 1 if self.is_percov2 else self.model.num_rates if self.is_dlf else len(config.rates.lambdas)

        needs_pixels = config.stage in ("vqgan", "joint", "dlf_pixel", "percov2_vae")
        perceptual_kind, self.perceptual_note = (self._perceptual_choice() if needs_pixels
                                                 else ("none", "none (no pixel loss in this stage)"))
        self.perceptual = None
        if needs_pixels and perceptual_kind != "none" and config.losses.perceptual:
            self.perceptual = PerceptualLoss(perceptual_kind, config.losses.feature_matching, config.losses.ms_ssim)
            self.perceptual.to(self.device)
        self.uses_discriminator = needs_pixels and (
            config.losses.gan > 0 or (perceptual_kind == "fallback" and config.losses.feature_matching > 0))
        self.discriminator = (PatchGANDiscriminator(config.gan.discriminator).to(self.device)
                              if self.uses_discriminator else None)

        if self.is_video:
            self.objective = VideoObjective(self.model, config)
        elif self.is_percov2:
            objective = (percov2_stages.PerCoV2VAEObjective if config.stage == "percov2_vae"
                         else percov2_stages.PerCoV2FlowObjective)
            self.objective = objective(self.model, config, self.perceptual)
        else:
            self.objective = (DLFObjective if self.is_dlf else StageObjective)(self.model, config, self.perceptual)
        # DLF: one rung of dlf.lambda_ladder per rate, moved by self.lambda_control (lambda weights the rate).
        self.lambda_ladder = None
        if self.is_dlf:
            start = (inherited_lambda_indices(config) if config.dlf.inherit_lambdas and not resuming
                     else config.dlf.lambda_start)
            self.lambda_ladder = LambdaLadder(config.dlf.lambda_ladder, start, config.dlf.bpp_bounds)
        # PerCoV2: one operating point and no rate term; a single lambda of 1 keeps the machinery uniform.
        initial_lambdas = self.lambda_ladder.values() if self.is_dlf else (1.0,) if self.is_percov2 else config.rates.lambdas
        self.lambdas = torch.tensor(initial_lambdas, dtype=torch.float32, device=self.device)

        optim = config.optim
        fused = {"fused": True} if self.device.type in ("cpu", "cuda") else {}
        gain_tables = self.rate_gain_tables()
        gains = [p for p in parameters if any(p is g for g in gain_tables)]
        others = [p for p in parameters if not any(p is g for g in gains)]
        groups = [{"params": others}]
        if gains:
            groups.append({"params": gains, "lr": optim.lr * optim.rate_gain_lr_scale, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay,
                                           **fused)
        schedule = lambda step: lr_factor(step, optim.warmup_steps, config.steps, optim.min_lr_ratio)  # noqa: E731
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.disc_optimizer = self.disc_scheduler = None
        if self.discriminator is not None:
            self.disc_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=optim.disc_lr,
                                                    betas=optim.betas, weight_decay=0.0, **fused)
            self.disc_scheduler = torch.optim.lr_scheduler.LambdaLR(self.disc_optimizer, schedule)
        # bf16 needs no loss scaling; the scaler exists (disabled) so checkpoints have one layout
        # whatever the precision, and an fp16 variant would only flip ``enabled``.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if self.device.type == "cuda" and config.runtime.bf16 else contextlib.nullcontext())

        self.holdout: list = []  # held-out training images (validation, lambda control)
        if self.is_video:
            video = config.video
            dataset = build_clip_dataset(video.video_sources, video.photo_dirs, video.clip_length,
                                         config.data.crop_size, video.real_share, video.max_motion, video.max_zoom)
            data_note = (f"{len(dataset.sequences)} video sequences + {len(dataset.photos)} photos for panned clips "
                         f"of {video.clip_length} frames")
        else:
            # Withheld only when something reads them: a run that validates on a folder, or not at
            # all, trains on every image.
            reads_holdout = config.validation.image_dir == "holdout" and (
                config.validation.every > 0 or (self.is_dlf and config.dlf.control_every > 0))
            withheld = config.data.holdout if reads_holdout else 0
            files, self.holdout = split_holdout(find_images(config.data.train_dirs, config.data.min_side), withheld)
            dataset = RandomCropDataset(files, config.data.crop_size)
            data_note = f"{len(files)} training images ({len(self.holdout)} more held out)"
        self.stream = BatchStream(dataset, config.data.batch_size, config.seed, self.dist.rank,
                                  self.dist.world_size, config.data.num_workers)
        self.lambda_control = None
        if self.is_dlf and config.dlf.control_every:
            images, control_note = load_control_images(config, self.holdout, dataset, self.device)
            self.lambda_control = LambdaControl(self.lambda_ladder, images, config.dlf.control_every)
            data_note += f"; lambda control every {config.dlf.control_every} steps on {control_note}"
        self.step = 0
        self.best_score = math.inf  # the lowest validated selection score so far (best.pt)
        self.best_results: dict | None = None  # best.pt's validation results, re-scored as the lambdas move
        self.started_fresh = True
        if resuming:
            self._load_checkpoint()
            self.started_fresh = False
        else:
            if (config.stage == "vqgan" and config.codebook_init_from_data) or seed_dlf_codebook:
                self._init_codebook_from_data()
                if seed_dlf_codebook and config.dlf.merge_head_init == "codebook_distance":
                    self.log(init_merge_head(self.model))
            if measure_scaling and config.percov2.scaling_crops:
                self.log(percov2_stages.normalise_latent_on_data(self.model, dataset, config, self.device))
            if config.stage != "vqgan" and not (self.is_video or self.is_dlf or self.is_percov2) and \
                    config.latent_std is not None:
                self._normalise_latent(config.latent_std)
            if self.is_video and not config.init_from and config.codebook_init_from_data:
                self._init_token_codebook_from_data()
            if config.stage != "vqgan" and config.rates.initial_gains is not None:
                spread = torch.tensor(config.rates.initial_gains, device=self.device).view(-1, 1, 1, 1)
                rows = list(config.video.anchor_levels) if self.is_video else slice(None)
                q_enc, q_dec = gain_tables
                with torch.no_grad():
                    q_enc[rows] = q_enc[rows] * spread
                    q_dec[rows] = q_dec[rows] / spread

        if self.is_dlf and config.dlf.latent_weighting == "generator_sensitivity":
            probe = self._probe_stream().next_batch().to(self.device)
            start = config.dlf.latent_weighting_from_step
            self.log(self.objective.measure_channel_weights(probe, config.seed)
                     + (f", from step {start} (the plain mean before)" if start else ""))
        # DDP broadcasts rank 0's parameters here, so all ranks start identical.
        if self.dist.active:
            kwargs = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
            self.objective_ddp: nn.Module = DistributedDataParallel(self.objective, find_unused_parameters=True, **kwargs)
            self.discriminator_ddp = (DistributedDataParallel(self.discriminator, **kwargs)
                                      if self.discriminator is not None else None)
        else:
            self.objective_ddp = self.objective
            self.discriminator_ddp = self.discriminator

        self.log(f"run {config.name}: stage {config.stage}, preset {config.preset}, {init_note}; "
                 f"device {self.device}, world {self.dist.world_size}, threads {torch.get_num_threads()}; "
                 f"{data_note}; perceptual: {self.perceptual_note}; "
                 f"{'resumed at step ' + str(self.step) if not self.started_fresh else 'new run'}")
        if self.dist.is_main:
            (self.run_dir / "config.yaml").write_text(dump_config(config))

    # -- helpers -----------------------------------------------------------------------
    def rate_gain_tables(self) -> tuple[nn.Parameter, ...]:
        """The per-rate gain tables (encoder, decoder side) this stage trains (PerCoV2: none)."""
        if self.is_percov2:
            return ()
        if self.is_video:
            return self.model.inter.y_q_enc, self.model.inter.y_q_dec
        if self.is_dlf:
            bottleneck = self.model.hybrid_codec.quantize_feat
            return bottleneck.enc_q, bottleneck.dec_q
        return self.model.q_enc, self.model.q_dec

    def _barrier(self) -> None:
        if self.dist.active:
            dist.barrier()

    def _perceptual_choice(self) -> tuple[str, str]:
        choice = self.config.perceptual
        if choice == "none":
            return "none", "none (disabled in the config)"
        available, note = lpips_vgg_status()
        if choice == "fallback":
            terms = "D feature matching + (1 - MS-SSIM)" if self.config.losses.feature_matching else "(1 - MS-SSIM)"
            return "fallback", f"{terms} (chosen in the config)"
        if choice == "lpips_vgg" and available == "fallback":
            raise WeightsError(f"perceptual: lpips_vgg asked for, but {note}")
        return available, note

    def log(self, message: str) -> None:
        if not self.dist.is_main:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        print(line, file=sys.stderr, flush=True)
        with open(self.run_dir / LOG_FILE, "a") as handle:
            handle.write(line + "\n")

    def write_metrics(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            with open(self.run_dir / METRICS_FILE, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def _probe_stream(self) -> BatchStream:
        """Fixed training batches, the same on every rank and on every resume."""
        return BatchStream(self.stream.dataset, self.config.data.batch_size, self.config.seed + 1, 0, 1, 0)

    def _probe_latents(self, batches: int = 1) -> torch.Tensor:
        """VQGAN encoder outputs (positions x channels) of the probe batches."""
        return encoder_vectors(lambda x: self.model.vqgan.encode(self.model.pad(x)), self._probe_stream(), batches,
                               self.device)

    def _init_codebook_from_data(self) -> None:
        """Start the VQGAN codebook on encoder outputs (avoids a collapsed codebook): codewords drawn
        from one batch, or k-means over ``codebook_init_crops`` training crops."""
        config, quantizer = self.config, self.model.vqgan.quantize
        vectors = self._probe_latents(max(1, math.ceil(config.codebook_init_crops / config.data.batch_size)))
        iterations = config.codebook_init_iterations if config.codebook_init_crops else None
        quantizer.embedding.weight.data.copy_(codebook_from_vectors(
            vectors, quantizer.codebook_size, iterations, torch.Generator().manual_seed(config.seed)))
        if iterations is not None:
            self.log(f"codebook: k-means over the latents of {config.codebook_init_crops} training crops")

    def _normalise_latent(self, target_std: float) -> None:
        """Rescale the VQGAN latent to ``target_std`` on one training batch (see rescale_latent)."""
        from latentcodec.tokenizers.vqgan import rescale_latent

        latent = self._probe_latents()
        factor = float(latent.std()) / target_std
        rescale_latent(self.model.vqgan, factor)
        self.log(f"latent rescaled by 1/{factor:.4g} (std {float(latent.std()):.4g} -> {target_std})")

    def _sample_generator(self, micro: int) -> torch.Generator:
        """Draws of one micro-batch (rate slots, P-frame adaptors): fixed by (seed, step, micro, rank)."""
        seed = ((self.config.seed * 1_000_003 + self.step) * 1009 + micro) * 4099 + self.dist.rank
        return torch.Generator().manual_seed(seed)

    def _init_token_codebook_from_data(self) -> None:
        """Start the P-model's token codebook on the tokens of one batch of clips (as the VQGAN
        codebook in stage I): codewords far from every token would never be chosen."""
        model = self.model
        probe = BatchStream(self.stream.dataset, self.config.data.batch_size, self.config.seed + 1, 0, 1, 0)
        clips = probe.next_batch().to(self.device)
        levels = torch.full((clips.shape[0],), self.config.video.anchor_levels[-1], device=self.device)
        tokens = []
        with torch.no_grad():
            reference = model.intra.analyse(model.intra.pad(clips[:, 0]), levels).latent_hat
            for t in range(1, clips.shape[1]):
                latent = model.inter_vqgan.encoder(model.intra.pad(clips[:, t]))
                analysis = model.inter.analyse(latent, reference, model.plan(t), levels)
                tokens.append(analysis.z.squeeze(-1).transpose(1, 2).reshape(-1, analysis.z.shape[1]))
                reference = analysis.latent_hat
        generator = torch.Generator().manual_seed(self.config.seed)
        quantizer = model.inter.z_vq
        quantizer.embedding.weight.data.copy_(sampled_codebook(torch.cat(tokens), quantizer.codebook_size, generator))

    def _rates(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.rate_slots, (batch,), generator=generator).to(self.device)

    # -- checkpoints ---------------------------------------------------------------------
    def _gather(self, obj: Any) -> list[Any]:
        if not self.dist.active:
            return [obj]
        gathered: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def _weights_payload(self) -> dict[str, Any]:
        """What export-weights reads of a run: the weights with their step, lambdas and config
        (all of best.pt; checkpoint.pt adds the optimiser and data state)."""
        payload = {
            "format": 1,
            "preset": self.config.preset,
            "stage": self.config.stage,
            "step": self.step,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "lambdas": self.lambdas.cpu(),
            "config": config_to_dict(self.config),
        }
        if self.is_percov2:  # its VAE normalisation (and, over SD3, the components' configs) is measured
            payload["model_config"] = percov2_stages.model_config_payload(self.model)
        return payload

    def save_checkpoint(self) -> None:
        streams = self._gather(self.stream.state_dict())
        rngs = self._gather(rng_state())
        if self.dist.is_main:
            payload = {
                **self._weights_payload(),
                "discriminator": self.discriminator.state_dict() if self.discriminator is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "disc_optimizer": self.disc_optimizer.state_dict() if self.disc_optimizer else None,
                "disc_scheduler": self.disc_scheduler.state_dict() if self.disc_scheduler else None,
                "scaler": self.scaler.state_dict(),
                "lambda_indices": list(self.lambda_ladder.indices) if self.lambda_ladder else None,
                "streams": streams,
                "rng": rngs,
                "best_score": self.best_score,
                "best_results": self.best_results,
            }
            atomic_torch_save(payload, self.checkpoint_path)
        self._barrier()

    def _load_checkpoint(self) -> None:
        payload = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        if payload["preset"] != self.config.preset or payload["stage"] != self.config.stage:
            raise ConfigError(f"{self.checkpoint_path} is a {payload['preset']}/{payload['stage']} run, "
                              f"not {self.config.preset}/{self.config.stage}")
        if len(payload["streams"]) != self.dist.world_size:
            raise ConfigError(f"{self.checkpoint_path} was written by {len(payload['streams'])} processes; "
                              f"resume with the same number")
        self.model.load_state_dict(payload["model"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(payload["discriminator"])
            self.disc_optimizer.load_state_dict(payload["disc_optimizer"])
            self.disc_scheduler.load_state_dict(payload["disc_scheduler"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.lambdas.copy_(payload["lambdas"])
        if self.lambda_ladder is not None:
            self.lambda_ladder.indices = list(payload["lambda_indices"])
        self.stream.load_state_dict(payload["streams"][self.dist.rank])
        set_rng_state(payload["rng"][self.dist.rank])
        self.step = int(payload["step"])
        self.best_score = float(payload.get("best_score", math.inf))
        self.best_results = payload.get("best_results")
        if self.dist.is_main:
            self._truncate_metrics(self.step)

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after the checkpoint: the resumed run logs those steps again."""
        path = self.run_dir / METRICS_FILE
        if not path.exists():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in kept))

    # -- one optimisation step ----------------------------------------------------------
    def _gan_active(self) -> bool:
        return self.discriminator is not None and self.step >= self.config.gan.start_step

    def train_step(self) -> StageLosses:
        config = self.config
        accumulation = config.optim.grad_accum
        self.objective.train()
        if self.is_video:
            self.model.intra.eval()  # frozen: its quantisers run as at inference
        use_gan = self._gan_active()
        discriminator_for_g = None
        if self.discriminator is not None and (use_gan or self.perceptual is not None):
            discriminator_for_g = self.discriminator
            self.discriminator.requires_grad_(False)
        self.objective.gan_enabled = use_gan
        last: StageLosses | None = None
        rate_sums = torch.zeros(self.rate_slots, device=self.device)
        rate_counts = torch.zeros(self.rate_slots, device=self.device)
        disc_loss_value = 0.0
        if self.is_dlf:
            self.objective.weighting_active = self.step >= self.config.dlf.latent_weighting_from_step
        for micro in range(accumulation):
            batch = self.stream.next_batch().to(self.device, non_blocking=True)
            generator = self._sample_generator(micro)
            rates = self._rates(batch.shape[0], generator)
            extra = {"generator": generator} if self.is_video or self.is_percov2 or self.is_dlf else {}
            sync = micro == accumulation - 1
            no_sync = self.objective_ddp.no_sync() if (self.dist.active and not sync) else contextlib.nullcontext()
            with no_sync, self.autocast:
                losses = self.objective_ddp(batch, rates, self._step_lambdas(), discriminator_for_g, **extra)
            (losses.total / accumulation).backward()
            rate_sums.index_add_(0, rates, losses.bpp.float())
            rate_counts.index_add_(0, rates, torch.ones_like(losses.bpp))
            if use_gan:
                self.discriminator.requires_grad_(True)
                disc_sync = self.dist.active and not sync
                with (self.discriminator_ddp.no_sync() if disc_sync else contextlib.nullcontext()), self.autocast:
                    both = torch.cat([losses.x, losses.x_hat.detach()])
                    logits = self.discriminator_ddp(both).logits.float()
                    real, fake = logits.split(batch.shape[0])
                    disc_loss = hinge_discriminator_loss(real, fake)
                (disc_loss / accumulation).backward()
                disc_loss_value += disc_loss.item() / accumulation
                self.discriminator.requires_grad_(False)
            last = losses
        if self.discriminator is not None:
            self.discriminator.requires_grad_(True)
        self._optimizer_step(self.optimizer, self.scheduler, self.objective)
        if use_gan:
            self._optimizer_step(self.disc_optimizer, self.disc_scheduler, self.discriminator)
        self._adapt_lambdas(rate_sums, rate_counts)
        self.step += 1
        if hasattr(self.objective, "restart_due") and self.objective.restart_due(self.step):  # VQ dead codes
            self.log(self.objective.restart_dead_codes(self.step, self.dist.active, self.stream.dataset))
        if (self.lambda_control is not None and self.lambda_control.due(self.step)
                and self.step > self.config.dlf.rate_free_steps):
            self._control_dlf_lambdas()
        self._last_disc_loss = disc_loss_value
        return last

    def _optimizer_step(self, optimizer, scheduler, module: nn.Module) -> None:
        if self.config.optim.grad_clip:
            params = [p for p in module.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.config.optim.grad_clip)
        self.scaler.step(optimizer) if self.scaler.is_enabled() else optimizer.step()
        if self.scaler.is_enabled():
            self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

    def _step_lambdas(self) -> torch.Tensor:
        """The lambdas of this step: DLF's rate-free opening (official ``feat_wo_bpp``) weights every
        rate by dlf.rate_free_lambda, so the detail branch becomes useful before its rate is priced."""
        if self.is_dlf and self.step < self.config.dlf.rate_free_steps:
            return torch.full_like(self.lambdas, self.config.dlf.rate_free_lambda)
        return self.lambdas

    def _control_dlf_lambdas(self) -> None:
        """DLF: one ladder step per rate towards dlf.bpp_bounds (SYSTEMS.md 5.9), same on every rank."""
        bpp = self.lambda_control.run(self.model, self.dist.is_main, self.dist.active, self.device)
        self.lambdas.copy_(torch.tensor(self.lambda_ladder.values(), device=self.device))
        if bpp is not None:
            self.write_metrics({"step": self.step, "lambda_control": {"detail_bpp": bpp,
                                                                      "indices": self.lambda_ladder.indices}})
            summary = ", ".join(f"q{q}: {b:.4f} bpp -> lambda {v:g}"
                                for q, (b, v) in enumerate(zip(bpp, self.lambda_ladder.values())))
            self.log(f"step {self.step} lambda control: {summary}")

    def _adapt_lambdas(self, rate_sums: torch.Tensor, rate_counts: torch.Tensor) -> None:
        targets = self.config.rates.target_bpp
        if targets is None or self.config.stage == "vqgan" or self.is_dlf:
            return
        if self.dist.active:
            dist.all_reduce(rate_sums)
            dist.all_reduce(rate_counts)
        present = rate_counts > 0
        mean_bpp = rate_sums / rate_counts.clamp(min=1)
        target = torch.tensor(targets, device=self.device)
        # Too many bits -> smaller lambda (distortion matters less), and vice versa.
        step = self.config.rates.adapt_rate * ((mean_bpp - target) / target).clamp(-1.0, 1.0)
        self.lambdas.mul_(torch.where(present, torch.exp(-step), torch.ones_like(step)))

    # -- validation and checkpoint selection ---------------------------------------------
    def validate(self) -> dict[str, Any] | None:
        """Per validated rate: actual file bpp and quality (rank 0 only; None elsewhere or without data)."""
        if not self.dist.is_main:
            return None
        if self.is_video:
            return validate_video(self.model, self.config.validation, self.device, self.log,
                                  self.config.video.anchor_levels)
        validation = self.config.validation
        if self.is_percov2:
            validation = percov2_stages.single_point(validation)
        files = validation_files(validation, self.holdout)
        if self.config.stage == "percov2_vae":
            return percov2_stages.validate_vae(self.model, validation, files, self.device, self.log)
        return validate_images(self.model, validation, files, self.device, self.log)

    def _select(self, results: dict[str, Any]) -> None:
        """Keep the best validated weights in best.pt by DLF's selection rule (training/selection.py)."""
        score = improves(results, self.best_results, self.lambdas.tolist(), self.best_score)
        if score is None:
            return
        self.best_score, self.best_results = score, results
        atomic_torch_save({**self._weights_payload(), "selection_score": score, "validation": results},
                          self.run_dir / BEST_FILE)
        self.log(f"step {self.step}: best validated weights so far (selection score {score:.5f}) -> {BEST_FILE}")

    # -- the loop ------------------------------------------------------------------------
    def fit(self) -> None:
        config = self.config
        from tqdm import tqdm

        progress = tqdm(total=config.steps, initial=self.step, disable=not (self.dist.is_main and config.runtime.progress),
                        desc=config.name, dynamic_ncols=True)
        started = time.time()
        steps_timed = 0
        while self.step < config.steps:
            t0 = time.time()
            losses = self.train_step()
            steps_timed += 1
            elapsed = time.time() - t0
            progress.update(1)
            if self.step % config.runtime.log_every == 0 or self.step == config.steps:
                record = self._record(losses, elapsed)
                self.write_metrics(record)
                progress.set_postfix(loss=f"{record['loss']:.4f}", bpp=f"{record['bpp']:.4f}")
            if config.validation.every and (self.step % config.validation.every == 0 or self.step == config.steps):
                results = self.validate()
                if results is not None:
                    self.write_metrics({"step": self.step, "validation": results})
                    summary = ", ".join(f"q{q}: {r['bpp']:.4f} bpp {r['psnr']:.2f} dB" for q, r in results.items())
                    self.log(f"step {self.step} validation: {summary}")
                    self._select(results)
                self._barrier()
            if self.step % config.runtime.checkpoint_every == 0 or self.step == config.steps:
                self.save_checkpoint()
        progress.close()
        self.log(f"finished at step {self.step} ({steps_timed} steps in {time.time() - started:.0f} s this session)")

    def _record(self, losses: StageLosses, step_seconds: float) -> dict[str, Any]:
        def value(t: torch.Tensor) -> float:
            return float(t.detach().float().mean())

        return {
            "step": self.step,
            "time": time.time(),
            "step_seconds": step_seconds,
            "lr": self.scheduler.get_last_lr()[0],
            "loss": value(losses.total),
            "bpp": value(losses.bpp),
            "l1": value(losses.l1),
            "perceptual": value(losses.perceptual),
            "ms_ssim": value(losses.ms_ssim),
            "gan": value(losses.gan),
            "gan_weight": value(losses.gan_weight),
            "disc": getattr(self, "_last_disc_loss", 0.0),
            "codebook": value(losses.codebook),
            "latent_mse": value(losses.latent_mse),
            "code_ce": value(losses.code_ce),
            "code_pix_ce": value(losses.code_pix_ce),
            "lambdas": self.lambdas.tolist(),
            **{name: value(term) for name, term in (("flow", losses.flow), ("kl", losses.kl),
                                                         ("token_similarity", losses.token_similarity)) if term is not None},
        }

    def close(self) -> None:
        if self.dist.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def run_training(config: TrainConfig, resume: bool = False) -> Path:
    trainer = Trainer(config, resume=resume)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer.run_dir

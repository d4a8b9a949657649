"""Typed training configuration, read from YAML (unknown keys are errors)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from latentcodec.config import config_from_dict, config_to_dict, override_config
from latentcodec.errors import ConfigError
from latentcodec.nn.patchgan import PatchGANConfig

Stage = Literal["vqgan", "latent", "joint", "video", "dlf_align", "dlf_pixel", "percov2_vae", "percov2_flow"]
DLF_STAGES = ("dlf_align", "dlf_pixel")
LATENT_WEIGHTINGS = ("none", "channel_variance", "generator_sensitivity")
PERCOV2_STAGES = ("percov2_vae", "percov2_flow")
PerceptualChoice = Literal["auto", "lpips_vgg", "fallback", "none"]


@dataclass(frozen=True)
class DataConfig:
    train_dirs: tuple[str, ...] = ("../shared/data/train",)
    crop_size: int = 256
    batch_size: int = 8  # per process and per micro-batch
    num_workers: int = 2
    min_side: int = 0  # skip images whose short side is below this (0: upscale them instead)
    # Evenly spaced training images never trained on, when validation.image_dir is "holdout": validation,
    # best.pt selection and DLF's lambda control read them, so no decision of a run looks at Kodak.
    holdout: int = 8


@dataclass(frozen=True)
class VideoTrainConfig:
    """Stage "video": P-frame training of GLC-video over a frozen GLC-image I-frame model.

    Clips of ``clip_length`` frames: frame 0 is coded by the frozen intra model, each later frame
    as a P-frame on the previous decoded latent, gradients flowing through the chain. Only the
    ``anchor_levels`` of the 64 rate levels are trained (one lambda each, ``rates.lambdas``);
    export fills the levels between them by interpolating the gains.
    """

    intra_weights: str = "glc-image-default"  # zoo folder name or save_pretrained folder of GLC-image
    video_sources: tuple[str, ...] = ("../shared/data/video/vimeo_septuplet16",)
    photo_dirs: tuple[str, ...] = ("../shared/data/train",)  # stills for synthetic pans; () for none
    real_share: float = 0.5  # fraction of clips from real video
    clip_length: int = 4
    max_motion: float = 6.0  # synthetic pans: pixels per frame, at most
    max_zoom: float = 0.02  # synthetic pans: relative zoom per frame, at most
    anchor_levels: tuple[int, ...] = (0, 21, 42, 63)
    # Each later P-frame of a clip draws its feature adaptor at random, so short clips train all
    # three (the GOP pattern reaches adaptor 1 only at frame 9).
    random_adaptors: bool = True


@dataclass(frozen=True)
class ValidationConfig:
    every: int = 1000  # steps; 0 disables
    image_dir: str = "holdout"  # "holdout": data.holdout's withheld training images; else a folder
    images: int = 4  # the first N files of the folder (or of the holdout), sorted
    crop: int = 0  # centre crop side in pixels (0: whole image)
    rate_indices: tuple[int, ...] = (0, 1, 2, 3)
    video: str = "../shared/data/video/carphone_qcif/carphone_qcif.y4m"  # stage "video"
    frames: int = 8  # stage "video": the first N frames of ``video``


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    disc_lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decay to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0  # 0 disables
    grad_accum: int = 1
    rate_gain_lr_scale: float = 1.0  # lr multiplier of the per-rate gains q_enc/q_dec


@dataclass(frozen=True)
class LossWeights:
    l1: float = 1.0
    mse: float = 0.0
    perceptual: float = 1.0
    gan: float = 0.1  # times the adaptive weight
    codebook: float = 1.0  # VQ codebook + commitment terms (VQGAN codebook in stage I, z_vq otherwise)
    latent_mse: float = 1.0
    code_ce: float = 0.1
    code_pix_ce: float = 0.0
    feature_matching: float = 1.0  # share of the perceptual fallback
    ms_ssim: float = 1.0  # share of the perceptual fallback
    # L1 between 1/16-scale box-filtered thumbnails of x_hat and x: weights the colour and layout
    # that a from-scratch VQGAN otherwise learns last (issue 10: the grey-blob default).
    thumbnail: float = 0.0
    # MSE between the generator's low-pass images (VQGANConfig.lowpass_path: its 1x1 map of the latent,
    # at 1/16 scale, [-1, 1] units) of the decoded and the original latent. Stage II has no pixels; this
    # term makes its rate-distortion trade-off spend bits on colour and layout.
    lowpass_latent: float = 0.0
    # The same low-pass MSE outside lambda: one weight at every rate index. Under lambda the lowest rate
    # weighs colour and layout least (lambda 0.1 against 0.8), and its thumbnails fell 10 dB below the
    # highest rate's; this term sets a floor that every rate must keep (image stages II/III).
    lowpass_latent_floor: float = 0.0
    # Stage video only: the floor counts only a P-frame's low-pass error above its clip's I-frame's. A plain
    # floor also rewards P-frames for correcting the I-frame, which is worst at the lowest level, so there
    # the P-frames spent more bits than at higher levels (carphone: level 0 0.039 bpp, level 21 0.037);
    # against the I-frame the floor only stops drift along the chain.
    lowpass_floor_over_intra: bool = False
    # PerCoV2 stage "percov2_flow": the rectified-flow velocity MSE (``codebook`` weights the VQ loss).
    flow: float = 1.0
    # PerCoV2 stage "percov2_flow": MSE between the latent and a training-only probe's reading of the tokens
    # (percov2_networks.LatentProbe); 0 builds no probe.
    latent_probe: float = 0.0
    # DLF: relu(cosine - dlf.token_similarity_margin) between different windows' semantic tokens at the
    # same token position, averaged: keeps the jointly trained tokenizer's tokens image-specific.
    token_diversity: float = 0.0
    # PerCoV2 stage "percov2_vae": KL(posterior || N(0, I)), mean per latent element (nats); small, it only
    # keeps the latent's scale and variance bounded (``l1``, ``mse`` and ``perceptual`` do the work).
    kl: float = 1e-6


@dataclass(frozen=True)
class RateConfig:
    """Stage II/III rate-distortion trade-off: loss = bpp + lambda[q] * distortion, per sample.

    With ``target_bpp`` set, each lambda follows a multiplicative controller towards its target
    estimated bpp (so the operating points of a short run land where they are wanted); the
    current lambdas are logged and checkpointed.
    """

    lambdas: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)
    target_bpp: tuple[float, ...] | None = None
    adapt_rate: float = 0.02  # log-lambda step per unit relative bpp error
    # A fresh run scales q_enc[q] by these (and q_dec[q] by the inverse), so the rate indices start
    # apart instead of all at gain 1 (Adam moves a gain by about lr per step).
    initial_gains: tuple[float, ...] | None = None


@dataclass(frozen=True)
class DLFTrainConfig:
    """Stages "dlf_align" and "dlf_pixel" (SYSTEMS.md 5.9): loss = distortion + lambda[q] * detail bpp.

    Note the direction: DLF's lambda weights the rate (GLC's weights the distortion), so a larger
    lambda means fewer bits. Each rate index q has its own lambda, an index into the ascending
    ``lambda_ladder``; every ``control_every`` steps the detail-only estimated bpp of the control
    images at rate q is compared with ``bpp_bounds[q]`` and the index steps up when above the upper
    bound, down when below the lower one. ``rates.*`` (GLC's controller) is not used by DLF stages.
    """

    # The pixel decoder: a GLC-image save_pretrained folder, a GLC (or DLF) training checkpoint or
    # run folder; its ``vqgan.*`` tensors are copied strictly (None: keep init_from's / fresh).
    init_vqgan: str | None = None
    # Freeze the TiTok part (ViT layers, embeddings, latent tokens, semantic codebook). The
    # official recipe freezes a pretrained TiTok; ours has none, so it trains jointly by default.
    freeze_semantic: bool = False
    lambda_ladder: tuple[float, ...] = (1.0, 1.35, 1.8, 2.4, 3.3, 4.4, 5.9, 8.0, 10.7, 14.4, 19.4, 26.0)
    lambda_start: tuple[int, ...] = (11, 8, 5, 2)  # ladder index per rate (rate 0 = lowest bpp)
    # Start from the indices the init_from run ended with (its checkpoint, same ladder), as the
    # official lmbda_idx carries over between strategies, instead of lambda_start.
    inherit_lambdas: bool = False
    bpp_bounds: tuple[tuple[float, float], ...] = ((0.001, 0.003), (0.003, 0.010), (0.010, 0.015), (0.015, 0.020))
    control_every: int = 500  # steps; 0 keeps every lambda at its start
    control_images: int = 2  # the first N images of validation.image_dir (a fixed training batch without it)
    control_crop: int = 0  # centre crop side in pixels (0: whole image)
    # The official recipe opens with "feat_wo_bpp" (lambda 1e-3 for every rate): with the ladder's
    # lambdas from step 0 the untrained detail branch is priced before it helps, and its rate
    # collapses to ~0 at every rate (our first stage-1 run: 0.0003 bpp at all 4 rates by step 600).
    # No lambda control runs during these steps.
    rate_free_steps: int = 0
    rate_free_lambda: float = 1e-3
    # What the soft latent is aligned to: "quantized", the VQGAN latent's nearest codewords (the
    # official recipe, whose taming VQGAN decodes codewords), or "continuous", the encoder's latent
    # itself, for a generator trained on continuous latents (GLC's): with GLC's default VQGAN,
    # kodim23's codewords decode at 22.5 dB against 27.3 dB for its continuous latent, and a soft
    # mixture fitted to the continuous latent decodes at 24.6 dB (fitted to the codewords 22.5 dB,
    # with a code CE of 0.05 / 0.25 beside it 23.4 / 22.5 dB), so the continuous target goes with
    # losses.code_ce 0.
    latent_target: str = "quantized"
    # How the latent MSE weighs the channels: "none" (the plain mean) or "channel_variance", each
    # channel divided by the variance of the VQGAN codebook along it. GLC's low-pass VQGAN keeps
    # colour in channels 0-2 (variance ~2.9) and texture in the other 61 (~0.018); under the plain
    # mean the stage-1 codec at step 3400 conveyed colour partly (error 1.07 of 2.89 at q3) and no
    # texture at all (error 0.0189 against variance 0.0185; benchmarks/dlf_latent_targets.py
    # --codec-rates), which decodes as a smeared, desaturated blob. "generator_sensitivity" weighs
    # each channel by how much pixel error the frozen generator makes of a unit of latent error in
    # it (measured once per run by perturbing each channel of a probe batch, normalised to mean 1):
    # that is the error the pictures see. On GLC's default VQGAN the colour channels weigh ~13x a
    # texture channel, and kodim23 with only its colour channels right decodes at 24.4 dB (texture
    # at its mean) against 16.0 dB for the step-800 codec of session 14.
    latent_weighting: str = "none"
    # The step from which latent_weighting applies (before it: the plain mean). The session-14 stage-1 run
    # that stage 2 took to 16.7 dB ran its first ~1100 steps unweighted (16.0 dB on kodim23 at step 800);
    # its session-18 rerun weighted from step 0 learned no colour in 1100 steps (latent MSE flat, detail
    # rate at 0, kodim23 a grey 12.2 dB).
    latent_weighting_from_step: int = 0
    # The FeatMerge head at the start of a stage (not on resume): "keep" (init_from's or random), or
    # "codebook_distance" (FeatMerge.init_head_from_codebook: logits from the distance of a predicted
    # latent point to each codeword). Stage 1 on a random head ended with a near-flat mixture
    # (entropy 4.7 of ln 1024 = 6.9 nats, top weight 0.08) after 3400 steps.
    merge_head_init: str = "keep"
    # Every this many steps, the semantic (TiTok) codewords no training token chose since the last time
    # move onto the token vectors of ``semantic_restart_crops`` fresh training crops, one code per vector
    # (nn.vq.restart_codes). 0: off. runtime.checkpoint_every must be a multiple (resume repeats it).
    # Without it the small model's quantiser settled on one code per token position: every Kodak window
    # got the same 32 tokens (docs/results/dlf_semantic_bits_small_collapsed.json).
    semantic_restart_every: int = 0
    semantic_restart_crops: int = 16
    # The share of training samples whose decoded detail latent is zeroed, so that the decoder must
    # predict their latent from the semantic tokens alone. The official recipe freezes a pretrained
    # TiTok whose tokens already describe the image; ours trains from scratch, and with the detail
    # branch carrying everything from step 0 its tokens never became image-specific (the collapse
    # above). The rate term still prices the dropped samples' detail. 0: off.
    detail_dropout: float = 0.0
    # The cosine between two windows' tokens at one position above which losses.token_diversity pushes
    # them apart. At a fresh initialisation of the small preset it is 0.986 on Kodak windows (the learned
    # per-position latent tokens dominate what the patches add), and after 200-400 steps 0.99998: the
    # position alone chose the code (docs/models.md, session 13).
    token_similarity_margin: float = 0.5


@dataclass(frozen=True)
class PerCoV2TrainConfig:
    """PerCoV2's stages (SYSTEMS.md 6.6.4). ``percov2_vae`` trains the small preset's own 16-channel f8
    AutoencoderKL (SD3's VAE is licence-gated, so nothing could ship over it); ``percov2_flow`` is stage A:
    rectified flow on the normalised VAE latent conditioned on the VQ tokens, plus the VQ loss, VAE frozen.

    ``init_from`` of a flow run is a PerCoV2 flow run, checkpoint or save_pretrained folder (everything
    is loaded), a ``percov2_vae`` run (its VAE is loaded, the rest starts fresh) or, for the sd3 preset, a
    local SD3 folder in the diffusers layout."""

    # Share of samples whose caption is replaced by the empty caption (the unconditional branch of
    # classifier-free guidance). Without captions every sample already has the empty one: a no-op.
    caption_dropout: float = 0.1
    # A fresh flow run over a VAE that arrived without its own normalisation (a percov2_vae run, or a fresh
    # VAE) sets shift_factor / scaling_factor so that the latent of this many training crops (posterior
    # mode) has mean 0 and standard deviation 1, as SD3's factors do for its VAE; 0 keeps the preset's.
    scaling_crops: int = 16
    # Every this many steps, codewords no training token chose since the last time are moved onto
    # (rank 0's) current token vectors, plus a little noise: the dead-code restart of SYSTEMS.md 6.6.2,
    # against a collapsing codebook. 0: off. runtime.checkpoint_every must be a multiple, so that a
    # checkpoint never holds usage counts and a resumed run repeats every restart.
    dead_code_every: int = 0
    # Where restarted codewords go: 0, the token vectors of rank 0's latest batch (batch x tokens per crop
    # vectors, drawn with replacement); N, those of N training crops drawn for the restart (by seed and
    # step), without replacement while they last. With 64 vectors for ~220 dead codes, the small run's
    # restarted codes sat 3-4 to a vector, competed, and ~220 were dead again 250 steps later.
    restart_crops: int = 0
    # Each training batch reads the MMDiT's positional table shifted by a random offset (one per batch,
    # up to this many patches either way in each direction; percov2_sd3.shifted_positions), so that the
    # positions a whole image decodes at are trained too; 0: the centred window only (diffusers').
    position_shift: int = 0


@dataclass(frozen=True)
class GanConfig:
    start_step: int = 0  # GAN terms (generator and discriminator) are off before this step
    adaptive_weight: bool = True
    max_weight: float = 1.0
    discriminator: PatchGANConfig = field(default_factory=PatchGANConfig)


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "auto"  # auto: cuda when available
    threads: int = 0  # torch intra-op threads on CPU (0: leave torch's default)
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on CPU)
    checkpoint_every: int = 500
    log_every: int = 10
    run_root: str = "~/.cache/latentcodec/runs"
    progress: bool = True


@dataclass(frozen=True)
class TrainConfig:
    name: str
    stage: Stage
    steps: int
    preset: str = "tiny"  # a key of glc_image.PRESETS (glc_video.PRESETS in "video", dlf.PRESETS in dlf_*, percov2.PRESETS in percov2_*)
    init_from: str | None = None  # a previous run's directory, a checkpoint file or a save_pretrained dir
    seed: int = 0
    freeze_vqgan_encoder: bool = True  # stage III: keep E fixed so the latent and code targets stay put
    quantize_generator_input: bool = True  # stage I: decode VQ codewords (True) or the continuous latent
    codebook_init_from_data: bool = True  # stage I: start the VQGAN codebook from encoder outputs
    # > 0: start that codebook by k-means over the latents of this many training crops (DLF's soft
    # latent mixes a frozen codebook, whose coverage bounds its pictures); 0: codewords drawn from one batch.
    codebook_init_crops: int = 0
    codebook_init_iterations: int = 20
    # Stages II/III of a fresh codec: rescale the initialised VQGAN (exactly: E/c, G(c *)) so that its
    # latent's standard deviation on one training batch is this; None keeps it as trained.
    latent_std: float | None = None
    perceptual: PerceptualChoice = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    rates: RateConfig = field(default_factory=RateConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    video: VideoTrainConfig = field(default_factory=VideoTrainConfig)
    dlf: DLFTrainConfig = field(default_factory=DLFTrainConfig)
    percov2: PerCoV2TrainConfig = field(default_factory=PerCoV2TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def run_dir(self) -> Path:
        return Path(os.path.expanduser(os.path.expandvars(self.runtime.run_root))) / self.name


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: bad value ({exc})") from None
    if isinstance(parsed, str):
        # YAML 1.1 reads "2e-4" (no dot) as a string; a number is what anyone typing it means.
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return key.strip(), parsed


def check_lowpass_terms(config: TrainConfig, has_lowpass_path: bool) -> None:
    """The low-pass terms read the VQGAN generator's low-pass map: GLC stages and stage video alike."""
    if (config.losses.lowpass_latent or config.losses.lowpass_latent_floor) and not has_lowpass_path:
        raise ConfigError("losses.lowpass_latent and losses.lowpass_latent_floor need a preset with the VQGAN's "
                          f"low-pass path, not {config.preset!r}")
    if config.losses.lowpass_floor_over_intra and (config.stage != "video" or not config.losses.lowpass_latent_floor):
        raise ConfigError("losses.lowpass_floor_over_intra applies to stage video with losses.lowpass_latent_floor > 0")


def check_video_config(config: TrainConfig) -> TrainConfig:
    from latentcodec.models.glc_video import PRESETS

    if config.preset not in PRESETS:
        raise ConfigError(f"unknown GLC-video preset {config.preset!r} (one of {', '.join(PRESETS)})")
    model_config = PRESETS[config.preset]()
    video = config.video
    if config.data.crop_size % model_config.intra.pad_multiple:
        raise ConfigError(f"data.crop_size must be a multiple of {model_config.intra.pad_multiple}")
    if video.clip_length < 2:
        raise ConfigError("video.clip_length must be at least 2")
    levels = video.anchor_levels
    if not levels or len(set(levels)) != len(levels) or any(not 0 <= q < model_config.num_rates for q in levels):
        raise ConfigError(f"video.anchor_levels must be distinct levels in 0..{model_config.num_rates - 1}")
    for name, values in (("rates.lambdas", config.rates.lambdas), ("rates.target_bpp", config.rates.target_bpp),
                         ("rates.initial_gains", config.rates.initial_gains)):
        if values is not None and len(values) != len(levels):
            raise ConfigError(f"{name} needs {len(levels)} values, one per video.anchor_levels entry")
    if any(not 0 <= q < len(levels) for q in config.validation.rate_indices):
        raise ConfigError("validation.rate_indices index video.anchor_levels and are out of range")
    if not video.video_sources and not video.photo_dirs:
        raise ConfigError("video.video_sources and video.photo_dirs are both empty")
    check_lowpass_terms(config, model_config.intra.vqgan.lowpass_path)
    return config


def check_dlf_config(config: TrainConfig) -> TrainConfig:
    from latentcodec.models.dlf import PRESETS

    if config.preset not in PRESETS:
        raise ConfigError(f"unknown DLF preset {config.preset!r} (one of {', '.join(PRESETS)})")
    model_config = PRESETS[config.preset]()
    window, rates, dlf = model_config.window_pixels, model_config.network.num_rates, config.dlf
    if config.data.crop_size % window:
        raise ConfigError(f"data.crop_size must be a multiple of DLF preset {config.preset!r}'s window, {window}")
    if config.rates.target_bpp is not None:
        raise ConfigError("rates.target_bpp is GLC's controller; DLF stages use dlf.bpp_bounds")
    ladder = dlf.lambda_ladder
    if not ladder or min(ladder) <= 0 or any(b <= a for a, b in zip(ladder, ladder[1:])):
        raise ConfigError("dlf.lambda_ladder must be positive and strictly ascending")
    if len(dlf.lambda_start) != rates or any(not 0 <= i < len(ladder) for i in dlf.lambda_start):
        raise ConfigError(f"dlf.lambda_start needs {rates} indices into dlf.lambda_ladder, one per rate")
    if len(dlf.bpp_bounds) != rates or any(len(b) != 2 or not 0 <= b[0] < b[1] for b in dlf.bpp_bounds):
        raise ConfigError(f"dlf.bpp_bounds needs {rates} [low, high] pairs with low < high, one per rate")
    if config.rates.initial_gains is not None and (
        len(config.rates.initial_gains) != rates or min(config.rates.initial_gains) <= 0
    ):
        raise ConfigError(f"rates.initial_gains needs {rates} positive values")
    if any(not 0 <= q < rates for q in config.validation.rate_indices):
        raise ConfigError("validation.rate_indices out of range")
    every = dlf.semantic_restart_every
    if every < 0 or (every and config.runtime.checkpoint_every % every) or dlf.semantic_restart_crops < 1:
        raise ConfigError("dlf.semantic_restart_every must be 0 or divide runtime.checkpoint_every, "
                          "and dlf.semantic_restart_crops be >= 1")
    if not -1.0 <= dlf.token_similarity_margin < 1.0:
        raise ConfigError("dlf.token_similarity_margin must be in [-1, 1)")
    if not 0.0 <= dlf.detail_dropout < 1.0:
        raise ConfigError("dlf.detail_dropout must be in [0, 1)")
    if dlf.inherit_lambdas and not config.init_from:
        raise ConfigError("dlf.inherit_lambdas needs init_from (a DLF run folder or checkpoint)")
    if dlf.control_crop % window:
        raise ConfigError(f"dlf.control_crop must be a multiple of {window} (or 0)")
    if dlf.latent_target not in ("quantized", "continuous"):
        raise ConfigError(f"dlf.latent_target must be 'quantized' or 'continuous', got {dlf.latent_target!r}")
    if dlf.merge_head_init not in ("keep", "codebook_distance"):
        raise ConfigError(f"dlf.merge_head_init must be 'keep' or 'codebook_distance', got {dlf.merge_head_init!r}")
    if dlf.latent_weighting not in LATENT_WEIGHTINGS:
        raise ConfigError(f"dlf.latent_weighting must be one of {LATENT_WEIGHTINGS}, got {dlf.latent_weighting!r}")
    if dlf.latent_weighting_from_step < 0:
        raise ConfigError(f"dlf.latent_weighting_from_step must be >= 0, got {dlf.latent_weighting_from_step}")
    return config


def check_percov2_config(config: TrainConfig) -> TrainConfig:
    from latentcodec.models.percov2 import PRESETS

    if config.preset not in PRESETS:
        raise ConfigError(f"unknown PerCoV2 preset {config.preset!r} (one of {', '.join(PRESETS)})")
    model_config = PRESETS[config.preset]()
    # The flow stage's crops are coded whole: each side a whole number of tokens.
    multiple = model_config.vae_factor if config.stage == "percov2_vae" else model_config.token_pixels
    if config.data.crop_size % multiple:
        raise ConfigError(f"data.crop_size must be a multiple of {multiple} for stage {config.stage}")
    if not 0.0 <= config.percov2.caption_dropout <= 1.0:
        raise ConfigError("percov2.caption_dropout must lie in [0, 1]")
    if min(config.percov2.scaling_crops, config.percov2.restart_crops, config.percov2.position_shift) < 0:
        raise ConfigError("percov2.scaling_crops, percov2.restart_crops and percov2.position_shift must be >= 0")
    every = config.percov2.dead_code_every
    if every < 0 or (every and config.runtime.checkpoint_every % every):
        raise ConfigError("percov2.dead_code_every must be 0 or divide runtime.checkpoint_every")
    if config.rates.target_bpp is not None or config.rates.initial_gains is not None:
        raise ConfigError("PerCoV2 has one operating point per model: rates.target_bpp and rates.initial_gains "
                          "do not apply")
    return config  # validation.rate_indices: a PerCoV2 stage validates its one operating point, whatever they say


def check_config(config: TrainConfig) -> TrainConfig:
    from latentcodec.models.glc_image import PRESETS

    if config.steps <= 0 or config.optim.grad_accum <= 0 or config.data.batch_size <= 0:
        raise ConfigError("steps, optim.grad_accum and data.batch_size must be positive")
    if config.data.holdout < 0:
        raise ConfigError(f"data.holdout must be >= 0, got {config.data.holdout}")
    if config.validation.image_dir == "holdout" and config.validation.every > 0 and config.data.holdout == 0:
        raise ConfigError("validation.image_dir is 'holdout' but data.holdout is 0: hold some training images out, "
                          "or name a validation folder")
    if config.codebook_init_crops < 0 or config.codebook_init_iterations < 0:
        raise ConfigError("codebook_init_crops and codebook_init_iterations must be >= 0")
    if config.stage == "video":
        return check_video_config(config)
    if config.stage in DLF_STAGES:
        return check_dlf_config(config)
    if config.stage in PERCOV2_STAGES:
        return check_percov2_config(config)
    if config.preset not in PRESETS:
        raise ConfigError(f"unknown preset {config.preset!r} (one of {', '.join(PRESETS)})")
    model_config = PRESETS[config.preset]()
    if config.data.crop_size % model_config.pad_multiple:
        raise ConfigError(f"data.crop_size must be a multiple of {model_config.pad_multiple}")
    needs_code_head = config.stage != "vqgan" and (config.losses.code_ce > 0 or config.losses.code_pix_ce > 0)
    positions = (config.data.crop_size // model_config.vqgan.downsampling_factor) ** 2
    if needs_code_head and positions != model_config.code_predictor.sequence_length:
        side = int(model_config.code_predictor.sequence_length**0.5) * model_config.vqgan.downsampling_factor
        raise ConfigError(f"the code-prediction loss of preset {config.preset!r} needs {side}x{side} crops")
    check_lowpass_terms(config, model_config.vqgan.lowpass_path)
    if len(config.rates.lambdas) != model_config.num_rates:
        raise ConfigError(f"rates.lambdas needs {model_config.num_rates} values, one per rate index")
    if config.rates.target_bpp is not None and len(config.rates.target_bpp) != model_config.num_rates:
        raise ConfigError(f"rates.target_bpp needs {model_config.num_rates} values")
    if config.rates.initial_gains is not None and (
        len(config.rates.initial_gains) != model_config.num_rates or min(config.rates.initial_gains) <= 0
    ):
        raise ConfigError(f"rates.initial_gains needs {model_config.num_rates} positive values")
    if any(not 0 <= q < model_config.num_rates for q in config.validation.rate_indices):
        raise ConfigError("validation.rate_indices out of range")
    return config


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    config = config_from_dict(TrainConfig, data or {}, where=path.name)
    if overrides:
        config = override_config(config, dict(parse_override(o) for o in overrides))
    return check_config(config)


def dump_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)

"""PerCoV2's configuration: the typed presets (``tiny``, ``sd3``, ``small``), the diffusers constructor
arguments of their VAEs and MMDiTs, and the decode defaults. The model is in :mod:`latentcodec.models.percov2`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from latentcodec.entropy.token_prior import TokenPriorConfig
from latentcodec.entropy.token_schedules import DEFAULT_SCHEDULE, schedule_passes
from latentcodec.errors import ConfigError
from latentcodec.models import percov2_sd3 as sd3
from latentcodec.models.percov2_networks import HyperConfig


@dataclass(frozen=True)
class SamplingConfig:
    """Decode defaults (SYSTEMS.md 6.6.6: PerCo(SD)'s 20 steps and CFG 3.0); each is a decode option."""

    steps: int = 20
    cfg_scale: float = 3.0
    # No-text mode: the number of zero caption-token embeddings the MMDiT attends to.
    prompt_length: int = 77

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"sampling.steps must be at least 1, got {self.steps}")
        if not self.cfg_scale >= 0.0:
            raise ConfigError(f"sampling.cfg_scale must be >= 0, got {self.cfg_scale}")
        if self.prompt_length < 1:
            raise ConfigError(f"sampling.prompt_length must be at least 1, got {self.prompt_length}")


@dataclass(frozen=True)
class PerCoV2Config:
    hyper: HyperConfig = field(default_factory=HyperConfig)
    # diffusers constructor arguments. ``transformer`` is the *widened* MMDiT: in_channels =
    # latent channels + hyper.adapter_channels, out_channels = latent channels.
    vae: dict[str, Any] = field(default_factory=sd3.sd3_medium_vae_config)
    transformer: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=sd3.sd3_scheduler_config)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # The masked-token entropy model of the token map (SYSTEMS.md 6.6.5); None: fixed-length tokens.
    token_prior: TokenPriorConfig | None = None

    def __post_init__(self) -> None:
        if not self.transformer:  # the default: SD3-Medium's MMDiT, widened for this hyper config
            object.__setattr__(self, "transformer", widened_config(sd3.sd3_medium_transformer_config(), self.hyper))
        latent = self.vae.get("latent_channels")
        if latent != self.hyper.latent_channels:
            raise ConfigError(f"the VAE has {latent} latent channels, the hyper-encoder expects "
                              f"{self.hyper.latent_channels}")
        expected_in = self.hyper.latent_channels + self.hyper.adapter_channels
        if self.transformer.get("in_channels") != expected_in or self.transformer.get("out_channels") != latent:
            raise ConfigError(f"the transformer must take {expected_in} channels (latent + adapter) and predict "
                              f"{latent}, got in={self.transformer.get('in_channels')} "
                              f"out={self.transformer.get('out_channels')}")
        if self.token_prior is not None:
            check_token_prior(self, self.token_prior)

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    @property
    def token_pixels(self) -> int:
        """Pixels per token side: 64 at g = 8 with the f8 VAE."""
        return self.vae_factor * self.hyper.latent_stride

    @property
    def max_latent_side(self) -> int:
        """The MMDiT's positional table covers pos_embed_max_size patches per side."""
        return self.transformer["pos_embed_max_size"] * self.transformer["patch_size"]

    @property
    def max_token_side(self) -> int:
        return self.max_latent_side // self.hyper.latent_stride

    def default_token_prior(self, schedule: str = DEFAULT_SCHEDULE, **changes) -> TokenPriorConfig:
        """A prior over this model's token maps (any size the MMDiT takes) under ``schedule``. The
        defaults are SYSTEMS.md 6.6.5's network (12 layers, width 512, 8 heads) without its caption
        prefix token: the no-text mode has no pooled caption embedding to give it."""
        side = self.max_token_side
        shape = dict(vocab_size=self.hyper.codebook_size, num_positions=0, condition_channels=0,
                     num_condition_tokens=0, context_units=0, max_grid_side=side, schedule=schedule,
                     passes=schedule_passes(schedule, side, side), width=512, layers=12, heads=8)
        return TokenPriorConfig(**{**shape, **changes})

    @classmethod
    def sd3(cls, grid: int = 8, codebook_size: int = 256) -> "PerCoV2Config":
        """SD3-Medium's components (weights supplied by the user) with PerCo's hyper-encoder at one
        operating point of SYSTEMS.md 6.6.7 (U1: g = 8, K = 256 by default)."""
        return cls(hyper=HyperConfig(grid=grid, codebook_size=codebook_size))

    @classmethod
    def small(cls) -> "PerCoV2Config":
        """The CPU-trainable default (training stages percov2_vae, then percov2_flow): its own narrow
        16-channel f8 VAE (:func:`small_vae_config`, SD3's layout, so every code path is the sd3 preset's),
        a 6-layer, 384-wide MMDiT (33 M parameters) and a 96-wide hyper-encoder at operating point E1 of
        SYSTEMS.md 6.6.7 (g = 16, K = 1024: 0.0098 bpp before the token prior; 0.0024 at the highest
        hybrid quality on a Kodak image). It was U1 (g = 8, K = 256, 0.002 bpp) until session 14: after 5500 CPU steps
        that model decoded noise (11-12 dB held out), its MMDiT barely using 8 bits per 64 x 64 pixels;
        E1 gives it five times the bits, a token per 32 x 32 pixels. The
        MMDiT was 8 x 512 (77 M) until its training started: with 712 training photos and a few tens
        of CPU-hours, the smaller one takes 1.95 s per step (batch 4 of 256 crops, one thread) against
        3.3 s, so more passes over the data, and it is less prone to memorise them. The VAE's
        shift/scaling factors here are placeholders: the flow stage measures them on training data and
        the trained model's config.json holds those."""
        hyper = HyperConfig(grid=16, codebook_size=1024, width=96, residual_blocks=4, down_widths=(192, 256),
                            hyper_channels=160, adapter_channels=32)
        transformer = dict(sd3.sd3_medium_transformer_config(), num_layers=6, num_attention_heads=6,
                           caption_projection_dim=384)
        # No text encoders ship with it: 8 zero caption tokens instead of 77 (each costs attention for nothing).
        return cls(hyper=hyper, vae=small_vae_config(), transformer=widened_config(transformer, hyper),
                   sampling=SamplingConfig(prompt_length=8))

    @classmethod
    def tiny(cls) -> "PerCoV2Config":
        """For tests: an f8 VAE 8 channels wide, a 2-layer 16-wide MMDiT, one token per 16 pixels (g = 32)."""
        hyper = HyperConfig(grid=32, width=16, residual_blocks=1, down_widths=(16,), hyper_channels=16,
                            code_dim=8, adapter_channels=8)
        config = cls(hyper=hyper, vae=tiny_vae_config(), transformer=widened_config(tiny_transformer_config(), hyper),
                     sampling=SamplingConfig(steps=3, cfg_scale=3.0, prompt_length=4))
        return replace(config, token_prior=config.default_token_prior(width=16, layers=1, heads=2))


def tiny_vae_config() -> dict[str, Any]:
    return dict(sd3.sd3_medium_vae_config(), block_out_channels=[8, 8, 8, 8], layers_per_block=1, norm_num_groups=4,
                sample_size=64)


def small_vae_config() -> dict[str, Any]:
    """SD3's AutoencoderKL layout (16 latent channels, f8, no quant convs) at a quarter of its widths,
    trainable on a CPU; scaling 1 and shift 0 until the flow stage measures them."""
    return dict(sd3.sd3_medium_vae_config(), block_out_channels=[32, 64, 128, 128], layers_per_block=2,
                norm_num_groups=16, sample_size=256, scaling_factor=1.0, shift_factor=0.0)


def tiny_transformer_config() -> dict[str, Any]:
    """A 16-channel SD3 MMDiT small enough for unit tests (any side up to 256 pixels)."""
    return dict(sample_size=8, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=2,
                joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16, out_channels=16,
                pos_embed_max_size=16)


def widened_config(transformer: dict[str, Any], hyper: HyperConfig) -> dict[str, Any]:
    return dict(transformer, in_channels=hyper.latent_channels + hyper.adapter_channels,
                out_channels=hyper.latent_channels)


PRESETS = {"tiny": PerCoV2Config.tiny, "sd3": PerCoV2Config.sd3, "small": PerCoV2Config.small}


def check_token_prior(config: PerCoV2Config, prior: TokenPriorConfig) -> None:
    """A prior must be shaped for this model's token maps: its codebook, and a table covering every grid."""
    if not prior.max_grid_side:
        raise ConfigError("a PerCoV2 token prior codes 2-D token maps (max_grid_side > 0)")
    if prior.vocab_size != config.hyper.codebook_size:
        raise ConfigError(f"the token prior has {prior.vocab_size} codes, the model's codebook {config.hyper.codebook_size}")
    if prior.max_grid_side < config.max_token_side:
        raise ConfigError(f"the token prior covers {prior.max_grid_side} tokens per side, the model up to "
                          f"{config.max_token_side}")

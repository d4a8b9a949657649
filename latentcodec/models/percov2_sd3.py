"""PerCoV2's generative components through diffusers (SYSTEMS.md 6.6.1): the 16-channel SD3 VAE, the
SD3 MMDiT and its rectified-flow sampler.

Everything is read from a local folder in the diffusers layout (``vae/``, ``transformer/``,
``scheduler/``) with ``local_files_only=True``: SD3 weights are licence-gated, so we consume a copy
the user already has and never touch the network. The text encoders are optional (see
:class:`PromptEmbeddings`); without them the model runs in the no-text mode of 6.6.1 (zero caption
embeddings).

This module knows nothing about tokens or files; :mod:`latentcodec.models.percov2` builds the codec.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from latentcodec.errors import WeightsError

VAE_FOLDER, TRANSFORMER_FOLDER, SCHEDULER_FOLDER = "vae", "transformer", "scheduler"
MODEL_CONFIG = "config.json"
SCHEDULER_CONFIG = "scheduler_config.json"
# A component folder holds one of these (single file, sharded index, or the older .bin format).
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                "diffusion_pytorch_model.bin")
# The SD3 latent's channels; the hyper-encoder and the VQ are built for it.
SD3_LATENT_CHANNELS = 16


def sd3_medium_vae_config() -> dict[str, Any]:
    """SD3-Medium's public AutoencoderKL config (SYSTEMS.md 6.6.1): f8, 16 channels, no quant convs."""
    return dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=[128, 256, 512, 512],
                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=1024,
                scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False,
                force_upcast=True)


def sd3_medium_transformer_config() -> dict[str, Any]:
    """SD3-Medium's public SD3Transformer2DModel config (SYSTEMS.md 6.6.1), 16 latent channels in and out."""
    return dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)


def sd3_scheduler_config() -> dict[str, Any]:
    return dict(num_train_timesteps=1000, shift=3.0)


def _diffusers():
    try:
        import diffusers
    except ImportError as exc:  # a dependency, but name it clearly if an environment lacks it
        raise WeightsError(f"PerCoV2 needs the diffusers package ({exc}); pip install diffusers") from None
    return diffusers


@contextlib.contextmanager
def float32_loading():
    """``torch_dtype=float32`` is passed explicitly (transformers 5 would otherwise keep a checkpoint's
    float16); newer diffusers call the argument ``dtype`` and warn, older ones know only ``torch_dtype``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
        yield


def build_vae(config: dict[str, Any]) -> nn.Module:
    return _diffusers().AutoencoderKL(**config)


def build_transformer(config: dict[str, Any]) -> nn.Module:
    return _diffusers().SD3Transformer2DModel(**config)


def build_scheduler(config: dict[str, Any]):
    """A fresh scheduler (it keeps a step counter, so every sampling run gets its own)."""
    return _diffusers().FlowMatchEulerDiscreteScheduler(**config)


def check_component_folder(folder: Path, component: str, config_name: str, needs_weights: bool) -> Path:
    """``folder/component`` with its config (and weights): a WeightsError naming what is missing."""
    if not folder.is_dir():
        raise WeightsError(f"{folder} not found (expected a folder in the diffusers layout with vae/, transformer/, "
                           f"scheduler/)")
    sub = folder / component
    if not sub.is_dir():
        raise WeightsError(f"{sub} not found (a diffusers SD3 folder needs vae/, transformer/ and scheduler/)")
    if not (sub / config_name).is_file():
        raise WeightsError(f"{sub / config_name} not found")
    if needs_weights and not any((sub / name).is_file() for name in WEIGHT_FILES):
        raise WeightsError(f"{sub / WEIGHT_FILES[0]} not found (no weights for the {component})")
    return sub


class SD3Components(NamedTuple):
    vae: nn.Module  # diffusers AutoencoderKL
    transformer: nn.Module  # diffusers SD3Transformer2DModel (16 input channels, as saved)
    scheduler_config: dict[str, Any]


def load_sd3_components(folder: str | Path) -> SD3Components:
    """The VAE, the MMDiT and the scheduler config from a local diffusers folder, without network access.
    Weights stay float32 (the SD3 VAE is marked force_upcast: it overflows in float16)."""
    folder = Path(folder)
    for component, config_name, needs_weights in ((VAE_FOLDER, MODEL_CONFIG, True),
                                                  (TRANSFORMER_FOLDER, MODEL_CONFIG, True),
                                                  (SCHEDULER_FOLDER, SCHEDULER_CONFIG, False)):
        check_component_folder(folder, component, config_name, needs_weights)
    diffusers = _diffusers()
    try:
        with float32_loading():
            vae = diffusers.AutoencoderKL.from_pretrained(folder, subfolder=VAE_FOLDER, local_files_only=True,
                                                          torch_dtype=torch.float32)
            transformer = diffusers.SD3Transformer2DModel.from_pretrained(
                folder, subfolder=TRANSFORMER_FOLDER, local_files_only=True, torch_dtype=torch.float32)
            scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(
                folder, subfolder=SCHEDULER_FOLDER, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{folder}: cannot load the SD3 components ({first_line})") from None
    if vae.config.latent_channels != SD3_LATENT_CHANNELS:
        raise WeightsError(f"{folder / VAE_FOLDER}: a VAE with {vae.config.latent_channels} latent channels; PerCoV2 "
                           f"needs SD3's {SD3_LATENT_CHANNELS}")
    if transformer.config.in_channels != SD3_LATENT_CHANNELS:
        raise WeightsError(f"{folder / TRANSFORMER_FOLDER}: in_channels {transformer.config.in_channels}; expected the "
                           f"base SD3 MMDiT with {SD3_LATENT_CHANNELS}")
    return SD3Components(vae.eval(), transformer.eval(), plain_config(scheduler.config))


def plain_config(config) -> dict[str, Any]:
    """A diffusers FrozenDict config -> a JSON-able dict of constructor arguments (no private keys)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")}


def widen_patch_embedding(base: nn.Module, extra_channels: int) -> nn.Module:
    """A copy of the SD3 MMDiT whose patch-embedding conv takes ``16 + extra_channels`` inputs (SYSTEMS.md
    6.6.3 A): the pretrained kernel fills the first 16 input channels and the new ones start at zero, so
    the widened model computes exactly what the base one does until training moves them. The new
    ``in_channels`` is part of the transformer config, so a saved model rebuilds the wide conv."""
    config = plain_config(base.config)
    config["in_channels"] = base.config.in_channels + extra_channels
    config["out_channels"] = base.out_channels  # still predicts the 16-channel velocity
    wide = build_transformer(config)
    state = base.state_dict()
    kernel = state["pos_embed.proj.weight"]
    widened = torch.zeros(kernel.shape[0], config["in_channels"], *kernel.shape[2:], dtype=kernel.dtype)
    widened[:, : kernel.shape[1]] = kernel
    state["pos_embed.proj.weight"] = widened
    wide.load_state_dict(state, strict=True)
    return wide


# The MMDiT's positional table: a fixed sin-cos function of its size that diffusers computes at init
# but keeps as a persistent buffer (14 M values in the small preset, a quarter of its weights).
POSITION_TABLE_KEY = "pos_embed.pos_embed"


def sincos_position_table(embed: nn.Module) -> torch.Tensor | None:
    """The table diffusers' PatchEmbed ``embed`` computes at init (None when it keeps none in its
    state), computed again: for a model built on the meta device, whose saved weights left it out."""
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    if getattr(embed, "pos_embed_max_size", None) is None or getattr(embed, "pos_embed", None) is None:
        return None
    table = get_2d_sincos_pos_embed(embed.proj.out_channels, embed.pos_embed_max_size, base_size=embed.base_size,
                                    interpolation_scale=embed.interpolation_scale, output_type="pt")
    return table.float().unsqueeze(0)


@contextlib.contextmanager
def shifted_positions(transformer: nn.Module, rows: int, cols: int):
    """Within the block, the MMDiT reads its positional table ``rows``/``cols`` patches away from the
    centred window diffusers' PatchEmbed takes (clamped into the table). Training crops shifted this way
    teach the positions that larger images decode at: trained on centred 256 crops only, the small
    model's one-step latent error at t = 0.7 in kodim23's corners was 0.41-0.54 inside the whole image
    against 0.09-0.11 for the same regions coded alone."""
    embed = transformer.pos_embed
    if not (rows or cols) or embed.pos_embed_max_size is None:
        yield
        return
    size, patch = embed.pos_embed_max_size, embed.patch_size

    def cropped(height: int, width: int) -> torch.Tensor:
        height, width = height // patch, width // patch
        top = min(max((size - height) // 2 + rows, 0), size - height)
        left = min(max((size - width) // 2 + cols, 0), size - width)
        table = embed.pos_embed.reshape(1, size, size, -1)[:, top: top + height, left: left + width, :]
        return table.reshape(1, height * width, -1)

    embed.cropped_pos_embed = cropped  # an instance attribute shadows the method for this block only
    try:
        yield
    finally:
        del embed.cropped_pos_embed


class LatentScaling(NamedTuple):
    """SD3's latent normalisation (SYSTEMS.md 6.6.1): z = (latent - shift) * scale. Applying it on one
    side only is the known "washed-out" failure."""

    scale: float
    shift: float

    @classmethod
    def of(cls, vae: nn.Module) -> "LatentScaling":
        return cls(float(vae.config.scaling_factor), float(vae.config.shift_factor or 0.0))


def encode_latent(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[0, 1] image -> normalised latent, from the posterior **mode** (deterministic, unlike a sample)."""
    from latentcodec.models.percov2_tiling import vae_encode_mode
    from latentcodec.nn.precision import run_in_precision

    scaling = LatentScaling.of(vae)
    mode = run_in_precision(vae, lambda image: vae_encode_mode(vae, image), x * 2.0 - 1.0)
    return (mode - scaling.shift) * scaling.scale


def decode_latent(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Normalised latent -> [0, 1] image (clamped), the inverse of :func:`encode_latent`'s scaling."""
    from latentcodec.models.percov2_tiling import vae_decode
    from latentcodec.nn.precision import run_in_precision

    scaling = LatentScaling.of(vae)
    image = run_in_precision(vae, lambda latent: vae_decode(vae, latent), z / scaling.scale + scaling.shift)
    return ((image + 1.0) / 2.0).clamp(0.0, 1.0)


class PromptEmbeddings(NamedTuple):
    """What the MMDiT sees of a caption: token states (B, L, joint_attention_dim) and the pooled vector
    (B, pooled_projection_dim), as ``StableDiffusion3Pipeline.encode_prompt`` returns them."""

    tokens: torch.Tensor
    pooled: torch.Tensor

    @classmethod
    def zeros(cls, transformer_config: dict[str, Any], length: int, batch: int = 1,
              device: torch.device | str = "cpu") -> "PromptEmbeddings":
        """The no-text mode: every embedding zero (no text encoder is run or needed)."""
        return cls(torch.zeros(batch, length, transformer_config["joint_attention_dim"], device=device),
                   torch.zeros(batch, transformer_config["pooled_projection_dim"], device=device))

    def repeat(self, batch: int) -> "PromptEmbeddings":
        return PromptEmbeddings(self.tokens.expand(batch, -1, -1), self.pooled.expand(batch, -1))


TEXT_FOLDERS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")  # the two CLIPs; T5 is optional


def has_text_encoders(folder: str | Path) -> bool:
    folder = Path(folder)
    return all((folder / name).is_dir() for name in TEXT_FOLDERS)


class DiffusersPromptEncoder:
    """Captions -> PromptEmbeddings with the folder's own text encoders (CLIP-L, CLIP-G and, when present,
    T5; transformers models) through ``StableDiffusion3Pipeline.encode_prompt``, so a caption gives
    exactly the embeddings the SD3 pipeline would use. The pipeline shares the codec's VAE and MMDiT
    (it reads only their configs), so nothing is loaded twice."""

    def __init__(self, folder: str | Path, vae: nn.Module, transformer: nn.Module, max_sequence_length: int = 256):
        folder = Path(folder)
        for name in TEXT_FOLDERS:
            if not (folder / name).is_dir():
                raise WeightsError(f"{folder / name} not found (the text encoders need text_encoder/, tokenizer/, "
                                   f"text_encoder_2/ and tokenizer_2/)")
        # Optional components the folder does not hold (T5, the IP-adapter image encoder) are passed as None.
        absent = {name: None for name in ("text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor")
                  if not (folder / name).is_dir()}
        try:
            with float32_loading():
                self.pipeline = _diffusers().StableDiffusion3Pipeline.from_pretrained(
                    folder, vae=vae, transformer=transformer, local_files_only=True, torch_dtype=torch.float32,
                    **absent)
        except (OSError, ValueError, RuntimeError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"{folder}: cannot load the text encoders ({first_line})") from None
        self.max_sequence_length = max_sequence_length

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> PromptEmbeddings:
        device = next(self.pipeline.text_encoder.parameters()).device
        tokens, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=captions, prompt_2=None, prompt_3=None, device=device, do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length)
        return PromptEmbeddings(tokens, pooled)


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device | str) -> torch.Tensor:
    """The starting noise: float32 normal draws from a CPU generator seeded with ``seed``, drawn the way
    diffusers' ``randn_tensor`` draws them for a CPU generator, so the same seed reproduces a pipeline run
    (and a file's picture) whatever device samples afterwards."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


def sample_flow(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                scheduler_config: dict[str, Any], steps: int, progress: Callable[[int], None] | None = None
                ) -> torch.Tensor:
    """Integrate the rectified flow from ``noise`` with FlowMatchEulerDiscreteScheduler over ``steps``
    steps. ``velocity(latents, timestep)`` returns the (guided) velocity; timesteps are the scheduler's
    sigma * 1000, as SD3 was trained with."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    scheduler = build_scheduler(copy.deepcopy(scheduler_config))
    scheduler.set_timesteps(steps, device=noise.device)
    latents = noise
    for i, t in enumerate(scheduler.timesteps):
        latents = scheduler.step(velocity(latents, t), t, latents, return_dict=False)[0]
        if progress is not None:
            progress(i + 1)
    return latents

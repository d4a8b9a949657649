"""PerCoV2: an SD3-latent perceptual codec with a VQ hyper-latent (arXiv 2503.09368; SYSTEMS.md 6.6).

Encoder: image -> SD3 VAE (posterior mode, normalised latent) -> hyper-encoder -> cosine VQ -> a g x g
token map per 512x512 (g in {8, 16, 32}, K in {256, 1024} codes). Decoder: the token map -> z_l ->
nearest-upsampled, 1x1-adapted and concatenated with the noisy latent -> the SD3 MMDiT, whose patch
embedding is widened with zero-initialised inputs (so an untrained model *is* SD3) -> rectified-flow
sampling with classifier-free guidance -> the SD3 VAE decoder.

Files: the compact header, then a caption section (stored length; the caption range-coded under a
static English word model, empty when there is none) and a token section (the rest): a descriptor byte, then the token map
range-coded under the model's masked-token prior (SYSTEMS.md 6.6.5; implicit hierarchical passes by
default, optionally only the first k passes: hybrid mode), or at a fixed log2 K bits each when the
model has no prior or the caller asks for it (docs/bitstream.md, "PerCoV2 files"; percov2_streams.py).
The sampling noise is seeded from a hash of the file, so a file always decodes to the same picture.

Presets (``percov2_config.py``): ``tiny`` (tests: a tiny random VAE and MMDiT), ``sd3`` (the geometry
of SD3-Medium; load the user's weights with :meth:`PerCoV2.from_diffusers`), ``small`` (trained here on
a CPU: its own narrow 16-channel VAE and a 6-layer MMDiT; training/percov2_stages.py; in training).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F

from latentcodec.bitstream.container import ImageHeader, read_image_file, write_image_file
from latentcodec.entropy.token_prior import MaskedTokenPrior
from latentcodec.entropy.token_schedules import schedule_passes
from latentcodec.errors import BitstreamError, ConfigError, InputError
from latentcodec.models.base import LatentCodec
from latentcodec.models.weight_files import weights_location
from latentcodec.models.percov2_networks import (
    ConditionAdapter,
    HyperConfig,
    HyperEncoder,
    TokenOutput,
    TokenQuantizer,
)
from latentcodec.models import percov2_sd3 as sd3
from latentcodec.models import percov2_streams as streams_format
from latentcodec.models.percov2_sd3 import PromptEmbeddings
from latentcodec.models.percov2_tiling import use_transposed_upsampling
from latentcodec.nn.functional import use_onednn_linears
from latentcodec.nn.precision import run_in_precision
from latentcodec.models.percov2_streams import (  # noqa: F401  (the caption coder is part of this module's API)
    MAX_CAPTION_BYTES,
    MAX_TRANSMITTED_PASSES,
    TokenDescriptor,
    TokenSectionInfo,
    decode_caption,
    encode_caption,
    normalise_caption,
)

from latentcodec.models.percov2_config import (  # noqa: F401  (part of this module's API)
    PRESETS,
    PerCoV2Config,
    SamplingConfig,
    check_token_prior,
    small_vae_config,
    tiny_transformer_config,
    tiny_vae_config,
    widened_config,
)

TOKEN_SECTION, CAPTION_SECTION = 1, 0

# Qualities of a model with a token prior: the hybrid points (SYSTEMS.md 6.6.6) and full transmission.
HYBRID_QUALITIES = 4

# The caption an image is decoded against when the file holds none, and the unconditional branch of
# classifier-free guidance (SYSTEMS.md 6.6.6: empty-caption embeddings, z_l kept).
EMPTY_CAPTION = ""

PromptEncoder = Callable[[list[str]], PromptEmbeddings]


class PerCoV2Output(NamedTuple):
    velocity: torch.Tensor  # (B, 16, h, w) predicted
    target: torch.Tensor  # (B, 16, h, w) epsilon - z
    flow_loss: torch.Tensor  # MSE(velocity, target)
    vq_loss: torch.Tensor
    token_bits: torch.Tensor  # (B,) fixed-length bits of each token map
    token_indices: torch.Tensor  # (B, gh, gw)
    num_pixels: int
    latent: torch.Tensor | None = None  # (B, 16, h, w) the normalised latent z
    hyper_latent: torch.Tensor | None = None  # (B, hyper_channels, gh, gw) z_l (straight-through)


class PerCoV2EncodeResult(NamedTuple):
    data: bytes
    token_indices: torch.Tensor  # (gh, gw): the map the decoder will have (hybrid mode fills passes)
    estimated_bits: float  # the token estimate plus every caption and descriptor bit
    estimated_token_bits: float  # the token stream's information content under the exact PMFs


class DecodedStreams(NamedTuple):
    header: ImageHeader
    caption: str | None
    token_indices: torch.Tensor  # (gh, gw)
    seed: int


class PerCoV2(LatentCodec):
    model_name = "percov2"
    config_class = PerCoV2Config

    def __init__(self, config: PerCoV2Config, components: sd3.SD3Components | None = None):
        super().__init__(config)
        self.hyper_encoder = HyperEncoder(config.hyper)
        self.quantizer = TokenQuantizer(config.hyper)
        self.adapter = ConditionAdapter(config.hyper)
        if components is None:
            self.vae = sd3.build_vae(config.vae)
            self.transformer = sd3.build_transformer(config.transformer)
            # A fresh model too starts as a plain MMDiT: the injected inputs begin at exactly zero.
            with torch.no_grad():
                self.transformer.pos_embed.proj.weight[:, config.hyper.latent_channels:].zero_()
        else:
            self.vae = components.vae
            self.transformer = sd3.widen_patch_embedding(components.transformer, config.hyper.adapter_channels)
        use_transposed_upsampling(self.vae)
        self.vae.requires_grad_(False)  # frozen in both training stages (SYSTEMS.md 6.6.4)
        # Its decoder follows set_memory_budget (tiled when a map would not fit; percov2_tiling.py).
        self.vae.follows_memory_budget = True
        self.vae.memory_budget = None
        # set_precision sets their compute_dtype (latentcodec.nn.precision): nothing after them is entropy coded.
        self.vae.follows_precision = True
        self.transformer.follows_precision = True
        self.token_prior = None if config.token_prior is None else MaskedTokenPrior(config.token_prior)
        self.attach_prompt_encoder(None)
        use_onednn_linears(self)  # float products on CPU through oneDNN, in inference and training
        self.set_memory_format(torch.channels_last)

    def set_memory_format(self, memory_format: torch.memory_format) -> "PerCoV2":
        """The VAE decoder's layout. channels_last (default) runs oneDNN's convolutions without
        reordering each map to a blocked copy and back: a 1 MP decode's peak fell from 1579 to
        1331 MB under a 1.5 GB budget (docs/results/memory.md). The encoder stays NCHW: its output
        is coded, so its arithmetic, and with it every file, stays as it was."""
        self.memory_format = memory_format
        self.vae.decoder.to(memory_format=memory_format)
        if self.vae.post_quant_conv is not None:
            self.vae.post_quant_conv.to(memory_format=memory_format)
        return self

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_diffusers(cls, folder: str | os.PathLike, hyper: HyperConfig | None = None,
                       sampling: SamplingConfig | None = None) -> "PerCoV2":
        """A codec over a local SD3 copy in the diffusers layout (vae/, transformer/, scheduler/): the
        pretrained VAE and MMDiT, the MMDiT's patch embedding widened with zeros, and a fresh hyper-encoder
        and VQ (g = 8, K = 256 unless ``hyper`` says otherwise), to be trained in stage A. Until then the
        tokens cannot change the picture: decoding gives SD3's own sample for the caption and seed. When the
        folder has the CLIP text encoders (text_encoder/, text_encoder_2/, their tokenizers; T5 optional),
        captions condition the MMDiT through them; otherwise the model runs in the no-text mode."""
        components = sd3.load_sd3_components(folder)
        hyper = hyper or HyperConfig()
        config = PerCoV2Config(hyper=hyper, vae=sd3.plain_config(components.vae.config),
                               transformer=widened_config(sd3.plain_config(components.transformer.config), hyper),
                               scheduler=components.scheduler_config, sampling=sampling or SamplingConfig())
        # The new parts are initialised from a fixed seed, so every load of one folder is the same codec
        # (a file written after one load decodes after another).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = cls(config, components).eval()
        if sd3.has_text_encoders(folder):
            model.attach_prompt_encoder(sd3.DiffusersPromptEncoder(folder, model.vae, model.transformer))
        return model

    def state_dict_for_saving(self) -> dict[str, torch.Tensor]:
        """Everything but the MMDiT's sin-cos positional table, which loading computes again."""
        state = super().state_dict_for_saving()
        state.pop("transformer." + sd3.POSITION_TABLE_KEY, None)
        return state

    def load_state_dict_strict(self, state: dict[str, torch.Tensor], source: str,
                               ignored_prefixes: tuple[str, ...] = (), assign: bool = False) -> None:
        """Strict, except that a state without the positional table (as save_pretrained writes it;
        folders of earlier versions hold it) gets the table computed for this MMDiT."""
        key = "transformer." + sd3.POSITION_TABLE_KEY
        if key not in state:
            table = sd3.sincos_position_table(self.transformer.pos_embed)
            if table is not None:
                state = {**state, key: table}
        super().load_state_dict_strict(state, source, ignored_prefixes, assign)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs: Any):
        """A save_pretrained folder, built on the meta device and adopting the stored tensors (the sd3
        preset holds ~2 B parameters; a random initialisation first would double load time and memory)."""
        path = Path(path)
        config = cls.read_config(path)
        # Narrower storage (save_pretrained(dtype=torch.float16)) loads into float32 parameters, as in
        # LatentCodec.from_pretrained: assign=True would otherwise adopt the stored dtype.
        state = {k: v.float() if v.is_floating_point() else v
                 for k, v in cls.read_weights(path).items()}
        with torch.device("meta"):
            model = cls(config, **kwargs)
        model.load_state_dict_strict(state, source=str(weights_location(path)), assign=True)
        model.vae.requires_grad_(False)
        model.set_memory_format(model.memory_format)  # the adopted tensors come in the stored layout
        return model.to(device).eval()

    def attach_token_prior(self, prior: MaskedTokenPrior | None) -> "PerCoV2":
        """Code the token map under ``prior`` (stage B's result; shaped by ``config.default_token_prior``),
        or at fixed length (None). The config follows, so save_pretrained stores the prior too."""
        if prior is not None:
            check_token_prior(self.config, prior.config)
        self.token_prior = prior
        self.config = replace(self.config, token_prior=None if prior is None else prior.config)
        return self

    def integer_token_prior(self):
        """The prior's exact integer twin: what decides the token section's PMFs."""
        return self.integer_twin_of("token_prior", lambda prior: prior.integer_twin(), self.token_prior)

    def attach_prompt_encoder(self, encoder: PromptEncoder | None) -> "PerCoV2":
        """Use ``encoder`` (list of captions -> PromptEmbeddings) for captions; None: the no-text mode (zero
        embeddings, no caption accepted). The text encoders stay outside the codec's modules: they are
        not part of its weights, and ``to(device)`` does not move them (their outputs are moved)."""
        object.__setattr__(self, "_prompt_encoder", encoder)  # bypasses nn.Module's submodule registration
        return self

    @property
    def prompt_encoder(self) -> PromptEncoder | None:
        return self._prompt_encoder

    # -- shapes --------------------------------------------------------------------------------
    @property
    def num_rates(self) -> int:
        """Qualities of this model. One model serves one (g, K) operating point (SYSTEMS.md 6.6.4);
        with a token prior it also serves the hybrid points below it (SYSTEMS.md 6.6.6: the first passes
        of the schedule are sent, the decoder fills the rest with the prior's most probable codes); the
        top quality sends every token."""
        return HYBRID_QUALITIES if self.token_prior is not None else 1

    def hybrid_passes(self, rate_index: int, rows: int, cols: int) -> int | None:
        """The passes quality ``rate_index`` transmits for a rows x cols token map (None: all of them):
        the fewest that carry at least 4**-(top - q) of the tokens, so the qualities step by about 4x in
        rate (a hierarchical schedule's passes grow 4x each; counting passes instead gave a Kodak map at
        g = 16 hybrid points of 2, 6 and 96 of its 384 tokens)."""
        if self.token_prior is None or rate_index is None or rate_index >= self.num_rates - 1:
            return None
        groups = self.token_prior.config.groups((rows, cols)).flatten()
        per_pass = torch.bincount(groups)
        wanted = groups.numel() * 4.0 ** -(self.num_rates - 1 - rate_index)
        transmitted = int((torch.cumsum(per_pass, 0) < wanted).sum()) + 1
        return None if transmitted >= len(per_pass) else min(transmitted, MAX_TRANSMITTED_PASSES)

    @property
    def device(self) -> torch.device:
        return self.adapter.proj.weight.device

    def coded_size(self, height: int, width: int) -> tuple[int, int]:
        """The padded size an image is coded at: each side up to whole tokens (reflect padding)."""
        m = self.config.token_pixels
        return math.ceil(height / m) * m, math.ceil(width / m) * m

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        padded_h, padded_w = self.coded_size(height, width)
        return padded_h // self.config.token_pixels, padded_w // self.config.token_pixels

    def fits(self, height: int, width: int) -> bool:
        padded_h, padded_w = self.coded_size(height, width)
        limit = self.config.max_latent_side * self.config.vae_factor
        return padded_h <= limit and padded_w <= limit

    def token_bits(self, height: int, width: int) -> int:
        rows, cols = self.token_grid(height, width)
        return rows * cols * self.config.hyper.token_bits

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded_h, padded_w = self.coded_size(height, width)
        pad = (0, padded_w - width, 0, padded_h - height)
        if pad == (0, 0, 0, 0):
            return x
        # Reflection keeps edge statistics natural; a side too short to reflect that far is replicated.
        mode = "reflect" if pad[1] < width and pad[3] < height else "replicate"
        return F.pad(x, pad, mode=mode)

    @staticmethod
    def section_layout(header: ImageHeader) -> list[int | None]:
        """Caption (stored length, 0 when absent), then the token stream (the rest of the file)."""
        return [None, None]

    def layout(self, header: ImageHeader) -> list[int | None]:
        return self.section_layout(header)

    # -- prompts --------------------------------------------------------------------------------
    def prompt_embeddings(self, caption: str, batch: int = 1) -> PromptEmbeddings:
        if self.prompt_encoder is None:
            if caption:
                raise ConfigError("this PerCoV2 model has no text encoders (no-text mode), so a caption cannot "
                                  "condition it")
            return PromptEmbeddings.zeros(self.config.transformer, self.config.sampling.prompt_length, batch,
                                          self.device)
        embeddings = self.prompt_encoder([caption])  # text encoders may live on another device
        return PromptEmbeddings(embeddings.tokens.to(self.device), embeddings.pooled.to(self.device)).repeat(batch)

    # -- training ---------------------------------------------------------------------------------
    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, TokenOutput]:
        """[0, 1] image (already padded to whole tokens) -> (normalised SD3 latent, VQ output)."""
        with torch.no_grad():
            latent = sd3.encode_latent(self.vae, x)
        return latent, self.quantizer(self.hyper_encoder(latent))

    def condition(self, hyper_latent: torch.Tensor | None, latent_shape: tuple[int, ...]) -> torch.Tensor:
        """The channels concatenated with the noisy latent (zeros for no condition)."""
        if hyper_latent is None:
            b, _, h, w = latent_shape
            return torch.zeros(b, self.config.hyper.adapter_channels, h, w, device=self.device)
        return self.adapter(hyper_latent)

    def velocity(self, noisy: torch.Tensor, condition: torch.Tensor, timestep: torch.Tensor,
                 prompt: PromptEmbeddings) -> torch.Tensor:
        """The MMDiT's velocity for ``noisy`` (B, 16, h, w) at ``timestep`` (B,) = sigma * 1000."""
        hidden = torch.cat([noisy, condition], dim=1)
        # Sampling only (training stays float32); the sampler integrates in float32 whatever the MMDiT ran in.
        return run_in_precision(self.transformer, lambda h: self.transformer(
            hidden_states=h, timestep=timestep, encoder_hidden_states=prompt.tokens,
            pooled_projections=prompt.pooled, return_dict=False)[0], hidden)

    def forward(self, x: torch.Tensor, rate_index: int = 0, prompt: PromptEmbeddings | None = None,
                generator: torch.Generator | None = None) -> PerCoV2Output:
        """Stage A's objective on a [0, 1] batch (SYSTEMS.md 6.6.4): rectified flow on the normalised latent,
        x_t = (1 - t) z + t eps with logit-normal t, velocity target eps - z, plus the VQ loss. ``prompt``
        carries the batch's caption embeddings (the caller applies caption dropout); None: no text."""
        latent, tokens = self.tokens(self.pad(x))
        b = latent.shape[0]
        device = latent.device
        # Drawn on the generator's device (the trainer's are CPU generators) and moved, so a step's
        # draws are the same on CPU and GPU and a resumed run repeats them.
        draw_on = generator.device if generator is not None else device
        t = torch.sigmoid(torch.randn(b, generator=generator, device=draw_on)).to(device)
        noise = torch.randn(latent.shape, generator=generator, device=draw_on).to(device)
        noisy = (1.0 - t.view(-1, 1, 1, 1)) * latent + t.view(-1, 1, 1, 1) * noise
        target = noise - latent
        prompt = prompt if prompt is not None else self.prompt_embeddings(EMPTY_CAPTION, b)
        predicted = self.velocity(noisy, self.condition(tokens.hyper_latent, latent.shape), t * 1000.0, prompt)
        bits = torch.full((b,), float(self.token_bits(*x.shape[-2:])), device=device)
        return PerCoV2Output(predicted, target, F.mse_loss(predicted, target), tokens.loss, bits, tokens.indices,
                             x.shape[-2] * x.shape[-1], latent, tokens.hyper_latent)

    # -- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, hyper_latent: torch.Tensor | None, latent_size: tuple[int, int], prompt: PromptEmbeddings,
               negative: PromptEmbeddings | None, seed: int, steps: int, cfg_scale: float,
               progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """Sample a normalised latent (1, 16, h, w). With ``negative`` and ``cfg_scale`` > 1 each step
        runs both branches in one batch, negative first, and guides v = v_u + s (v_c - v_u), as
        StableDiffusion3Pipeline does; otherwise the conditional branch alone."""
        latent_shape = (1, self.config.hyper.latent_channels, *latent_size)
        condition = self.condition(hyper_latent, latent_shape)
        guided = negative is not None and cfg_scale > 1.0
        if guided:
            condition = torch.cat([condition, condition])
            both = PromptEmbeddings(torch.cat([negative.tokens, prompt.tokens]),
                                    torch.cat([negative.pooled, prompt.pooled]))

        def velocity(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if not guided:
                return self.velocity(latents, condition, t.expand(1), prompt)
            v = self.velocity(torch.cat([latents, latents]), condition, t.expand(2), both)
            unconditional, conditional = v.chunk(2)
            return unconditional + cfg_scale * (conditional - unconditional)

        noise = sd3.initial_noise(latent_shape, seed, self.device)
        return sd3.sample_flow(velocity, noise, self.config.scheduler, steps, progress)

    # -- files ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor, rate_index: int | None = None, caption: str | None = None,
               transmitted_passes: int | None = None, fixed_length: bool | None = None) -> PerCoV2EncodeResult:
        """One image -> a file. Every token sent: under the model's prior, or at fixed length where the prior
        would cost more (an image unlike its training maps); ``fixed_length`` True / False forces one of
        the two. ``transmitted_passes`` = k sends only the first k passes of the prior's schedule (hybrid
        mode; the decoder fills the rest with the prior's most probable codes)."""
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"compress expects one RGB image shaped (1, 3, H, W), got {tuple(x.shape)}")
        if rate_index is None:  # the top quality; transmitted_passes / fixed_length may then choose the coding
            rate_index = self.num_rates - 1
        if not (isinstance(rate_index, int) and 0 <= rate_index < self.num_rates):
            raise ValueError(f"rate index {rate_index!r} out of range 0..{self.num_rates - 1} (one PerCoV2 model per "
                             f"operating point; hybrid qualities need a token prior)")
        hybrid_quality = rate_index < self.num_rates - 1
        if hybrid_quality and (transmitted_passes is not None or fixed_length is not None):
            raise ConfigError("give a hybrid quality or transmitted passes / fixed-length tokens, not both")
        height, width = x.shape[-2:]
        if not self.fits(height, width):
            raise InputError(f"image {height}x{width} is larger than this model's positional table allows "
                             f"({self.config.max_latent_side * self.config.vae_factor} pixels per side)")
        use_prior = self.token_prior is not None and not fixed_length
        if transmitted_passes is not None and not (use_prior and 1 <= transmitted_passes <= MAX_TRANSMITTED_PASSES):
            raise ConfigError(f"hybrid mode needs the model's token prior and 1 <= transmitted passes <= "
                              f"{MAX_TRANSMITTED_PASSES}, got {transmitted_passes}")
        caption = normalise_caption(caption)
        if caption:
            self.prompt_embeddings(caption)  # fails now, not at decode, when no text encoder can use it
        _, tokens = self.tokens(self.pad(x.to(self.device)))
        indices = tokens.indices[0].cpu()
        if hybrid_quality:
            transmitted_passes = self.hybrid_passes(rate_index, *indices.shape)
        section, decoded, token_bits = self.encode_token_section(indices, use_prior, transmitted_passes)
        if use_prior and fixed_length is None and TokenDescriptor.from_byte(section[0]).transmitted == 0:
            # Every token sent, so never more than at fixed length: the descriptor names either coding.
            fixed = self.encode_token_section(indices, False, None)
            if len(fixed[0]) < len(section):
                section, decoded, token_bits = fixed
        # The header's rate stays 0 (the layout has one operating point): a hybrid quality is read off the
        # token descriptor's transmitted passes.
        header = ImageHeader(model_id=self.model_id, rate_index=0, height=height, width=width,
                             portable=self.portable, compact=True)
        caption_bytes = encode_caption(caption)
        data = write_image_file(header, [caption_bytes, section], self.layout)
        return PerCoV2EncodeResult(data, decoded, token_bits + 8.0 * (len(caption_bytes) + 1), token_bits)

    def encode_token_section(self, indices: torch.Tensor, use_prior: bool,
                             transmitted_passes: int | None) -> tuple[bytes, torch.Tensor, float]:
        """(gh, gw) token map -> (the token section, the decoder's map, the estimated stream bits)."""
        hyper = self.config.hyper
        rows, cols = indices.shape
        if not use_prior:
            descriptor = TokenDescriptor(hyper.grid, hyper.codebook_size, False, 0)
            stream = streams_format.encode_uniform_tokens(indices, hyper.codebook_size)
            return bytes([descriptor.to_byte()]) + stream, indices, float(rows * cols * hyper.token_bits)
        prior = self.integer_token_prior()
        passes = schedule_passes(prior.config.schedule, rows, cols)
        # k >= the number of passes is every pass: written as 0, so a file has one spelling.
        transmitted = transmitted_passes if transmitted_passes is not None and transmitted_passes < passes else None
        descriptor = TokenDescriptor(hyper.grid, hyper.codebook_size, True, transmitted or 0)
        stream, decoded = streams_format.encode_prior_tokens(prior, indices, transmitted)
        bits = prior.exact_bits(None, None, indices.reshape(1, -1).to(self.device), (rows, cols), transmitted)
        return bytes([descriptor.to_byte()]) + stream, decoded, bits

    def compress(self, x: torch.Tensor, rate_index: int | None = None, caption: str | None = None,
                 transmitted_passes: int | None = None) -> bytes:
        return self.encode(x, rate_index, caption, transmitted_passes).data

    @torch.no_grad()
    def estimate_bits(self, x: torch.Tensor, rate_index: int | None = None) -> float:
        """Token bits (no caption): fixed length, or under the prior the float model's estimate (at a
        hybrid quality, of the transmitted passes; with every token sent, at most the fixed length, as
        ``encode`` writes)."""
        if self.token_prior is None:
            return float(self.token_bits(*x.shape[-2:]))
        _, tokens = self.tokens(self.pad(x.to(self.device)))
        indices = tokens.indices
        grid = tuple(indices.shape[-2:])
        transmitted = self.hybrid_passes(rate_index, *grid)
        if transmitted is None:
            return min(float(self.token_prior.bits(None, indices.flatten(1), grid).sum()),
                       float(self.token_bits(*x.shape[-2:])))
        return self.integer_token_prior().exact_bits(None, None, indices.flatten(1), grid, transmitted)

    @staticmethod
    def token_sections(data: bytes) -> tuple[TokenSectionInfo, ...]:
        """The token section of a file, described from the file alone (``latentcodec info``)."""
        parsed = read_image_file(data, PerCoV2.section_layout)
        section = parsed.sections[TOKEN_SECTION]
        descriptor, _ = streams_format.split_token_section(section)
        rows, cols = descriptor.token_grid(parsed.header.height, parsed.header.width)
        return (TokenSectionInfo(TOKEN_SECTION, len(section), descriptor.grid, rows, cols, descriptor.codebook_size,
                                 "prior" if descriptor.prior else "fixed-length", descriptor.transmitted,
                                 rows * cols * int(math.log2(descriptor.codebook_size))),)

    def decode_streams(self, data: bytes) -> DecodedStreams:
        """Caption, token map and noise seed of a file, checked against this model (BitstreamError)."""
        parsed = read_image_file(data, self.layout, expected_model_id=self.model_id)
        header = parsed.header
        if header.rate != 0:
            raise BitstreamError(f"rate {header.rate} is out of range for this model (1 operating point)")
        if not self.fits(header.height, header.width):
            raise BitstreamError(f"invalid header: image size {header.height}x{header.width} exceeds this model's "
                                 f"positional table")
        caption = decode_caption(parsed.sections[CAPTION_SECTION])
        indices = self.decode_token_section(parsed.sections[TOKEN_SECTION], header.height, header.width)
        return DecodedStreams(header, caption, indices, file_seed(data))

    def decode_token_section(self, section: bytes, height: int, width: int) -> torch.Tensor:
        descriptor, stream = streams_format.split_token_section(section)
        hyper = self.config.hyper
        if (descriptor.grid, descriptor.codebook_size) != (hyper.grid, hyper.codebook_size) or \
                descriptor.token_grid(height, width) != self.token_grid(height, width):
            raise BitstreamError(f"the token section is for g = {descriptor.grid}, K = {descriptor.codebook_size}; "
                                 f"this model codes g = {hyper.grid}, K = {hyper.codebook_size}")
        rows, cols = self.token_grid(height, width)
        if not descriptor.prior:
            return streams_format.decode_uniform_tokens(stream, rows, cols, hyper.codebook_size)
        if self.token_prior is None:
            raise BitstreamError("the file's tokens are coded under a masked-token prior, and this model has none")
        prior = self.integer_token_prior()
        transmitted = descriptor.transmitted or None
        if transmitted is not None and transmitted >= int(prior.config.groups((rows, cols)).max().item()) + 1:
            raise BitstreamError(f"corrupt token section: {transmitted} transmitted passes is not fewer than the "
                                 f"schedule's")
        return streams_format.decode_prior_tokens(prior, stream, rows, cols, transmitted)

    def decoded_fingerprint(self, data: bytes) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(the decoded token map and, under a prior, every pass's integer frequencies; the decoded
        picture): what evaluation.portability compares across machines."""
        streams = self.decode_streams(data)
        tensors = [streams.token_indices]
        if self.token_prior is not None:
            rows, cols = streams.token_indices.shape
            tokens = streams.token_indices.reshape(1, -1).to(self.device)
            tensors += [f for _, _, f in self.integer_token_prior().teacher_forced(None, None, tokens, (rows, cols))]
        return tensors, self.decompress(data)

    @torch.no_grad()
    def decompress(self, data: bytes, steps: int | None = None, cfg_scale: float | None = None,
                   progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """A file -> (1, 3, H, W) in [0, 1]. ``steps`` and ``cfg_scale`` override the config's sampling
        defaults; the noise comes from the file's hash, so the same file and options give the same picture."""
        streams = self.decode_streams(data)
        header = streams.header
        steps = self.config.sampling.steps if steps is None else int(steps)
        cfg_scale = self.config.sampling.cfg_scale if cfg_scale is None else float(cfg_scale)
        caption = streams.caption or EMPTY_CAPTION
        if caption and self.prompt_encoder is None:
            raise ConfigError("the file carries a caption, but this PerCoV2 model has no text encoders to read it")
        prompt = self.prompt_embeddings(caption)
        # With no caption both guidance branches see the same input, so the guided velocity equals the
        # conditional one: skip the second branch (half the cost).
        negative = self.prompt_embeddings(EMPTY_CAPTION) if caption else None
        hyper_latent = self.quantizer.dequantize(streams.token_indices[None].to(self.device))
        padded_h, padded_w = self.coded_size(header.height, header.width)
        factor = self.config.vae_factor
        latent = self.sample(hyper_latent, (padded_h // factor, padded_w // factor), prompt, negative, streams.seed,
                             steps, cfg_scale, progress)
        image = sd3.decode_latent(self.vae, latent)
        return image[..., : header.height, : header.width]


def file_seed(data: bytes) -> int:
    """The sampling seed of a file: the first 63 bits of its SHA-256 (0 bytes in the file, and the same
    file always yields the same picture; another image's file gets unrelated noise)."""
    return int.from_bytes(hashlib.sha256(bytes(data)).digest()[:8], "big") >> 1

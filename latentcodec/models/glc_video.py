"""GLC-video: conditional latent video coding (TCSVT), SYSTEMS.md section 3.

I-frames are GLC-image with its per-channel rate gains interpolated to 64 levels. P-frames are coded
in the VQGAN latent, conditioned on the previous *decoded latent* only (no motion, no pixels):

* context = feature_extractor(adaptor(ref_latent)), the adaptor chosen by the GOP position;
* y = encoder(latent, context, y_q_enc[q]);
* a spatio-temporal hyper path: 16 global tokens per frame, each vector-quantised to a 14-bit
  ``z_vq`` index, spread back over the latent by attention-like weight maps from the context;
* a two-step "dual" checkerboard Gaussian conditional for y;
* rec_latent = decoder(y_hat, context, y_q_dec[q]) is both the generator input and the next reference.

Module names of :class:`GLCVideoInter` follow the official ``GLC_Video`` state dict, so official
P-frame checkpoints load 1:1 (strictly). :class:`GLCVideo` bundles the intra model (``intra.*``) and
the P-frame model (``inter.*``), runs the GOP, and writes real sequence files
(:mod:`latentcodec.bitstream.sequence`).
"""

from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, NamedTuple, Sequence

import torch

from latentcodec.bitstream import RATE_FRACTION_STEPS, rate_from_code, rate_to_code
from latentcodec.bitstream.sequence import (
    FrameUnitError,
    SequenceHeader,
    SequenceReader,
    SequenceWriter,
)
from latentcodec.entropy import (
    DEFAULT_SCALE_TABLE,
    EntropyDecoder,
    EntropyEncoder,
    gaussian_residual_bits,
    pack_indices,
    packed_size,
    unpack_indices,
)
from latentcodec.entropy.masked_gaussian import decode_masked, decode_masked_fixed
from latentcodec.entropy.coder import FLOAT_FORMAT_HINT
from latentcodec.errors import BitstreamError, ConfigError, InputError, LatentCodecError, WeightsError
from latentcodec.models.base import LatentCodec, narrow_floats
from latentcodec.models.glc_image import GLCImage, GLCImageConfig, GLCImageOutput, load_official_checkpoint
from latentcodec.models.glc_video_inter import GLCVideoInter
from latentcodec.models.weight_files import weights_location, weights_sha256
from latentcodec.models.glc_video_weights import (  # noqa: F401 (load_inter_strict: public here too)
    INTRA_REFERENCE_KEY,
    interpolate_inter_rates,
    load_inter_strict,
    resolve_intra_reference,
)
from latentcodec.nn import integer
from latentcodec.tokenizers.vqgan import VQGAN

# fa_idx of the reference: which 1x1 feature adaptor a P-frame uses, by its position in a group of 8.
FEATURE_ADAPTOR_PATTERN = (0, 1, 0, 2, 0, 2, 0, 2)
OFFICIAL_RATE_LEVELS = 64


# -- configuration ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GOPConfig:
    """Group-of-pictures structure (reference test: intra period 96, context reset every 32 frames).

    ``intra_period`` 0 codes only the first frame as intra. ``reset_interval`` 0 never resets;
    otherwise a P-frame at distance p from its I-frame with p % reset_interval == 1 uses the
    "after intra" branch again (feature_adaptor_I, prior_fusion_adaptor_0), against drift.
    """

    intra_period: int = 96
    reset_interval: int = 32

    def __post_init__(self) -> None:
        for name in ("intra_period", "reset_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"GOPConfig.{name} must be a non-negative integer, got {value!r}")


@dataclass(frozen=True)
class GLCVideoConfig:
    intra: GLCImageConfig = field(default_factory=lambda: dataclasses.replace(GLCImageConfig(), num_rates=64))
    num_rates: int = OFFICIAL_RATE_LEVELS
    hyper_tokens: int = 16  # K global tokens per P-frame
    token_heads: int = 8
    z_codebook_size: int = 16384
    # True: the P-frame path uses the intra model's VQGAN (no ``inter.vqgan``); the official P model
    # carries its own copy (``vqgan.*`` in its checkpoint), so the official preset keeps two.
    share_vqgan: bool = False
    gop: GOPConfig = field(default_factory=GOPConfig)

    def __post_init__(self) -> None:
        if self.intra.num_rates != self.num_rates:
            raise ConfigError(f"the intra model must have the video's {self.num_rates} rate levels "
                              f"(interpolated), got {self.intra.num_rates}")
        if self.latent_channels % self.token_heads:
            raise ConfigError(f"latent channels ({self.latent_channels}) must split into {self.token_heads} heads")
        if self.latent_channels % 2:
            raise ConfigError("the dual masks need an even latent channel count")

    @property
    def latent_channels(self) -> int:
        return self.intra.latent_channels

    @property
    def weight_map_channels(self) -> int:
        return self.hyper_tokens * self.token_heads

    @property
    def z_index_bits(self) -> int:
        return max(1, (self.z_codebook_size - 1).bit_length())

    @property
    def z_section_bytes(self) -> int:
        return packed_size(self.hyper_tokens, self.z_index_bits)

    @classmethod
    def official(cls) -> "GLCVideoConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "GLCVideoConfig":
        return cls(intra=dataclasses.replace(GLCImageConfig.tiny(), num_rates=64), share_vqgan=True)

    @classmethod
    def small(cls) -> "GLCVideoConfig":
        """The shipped default: a P-frame model over the shipped GLC-image default (its 64-channel
        latent and VQGAN, shared), with a 1024-entry token codebook (10-bit indices, 20 bytes of
        tokens per P-frame) so that both defaults fit the package's weight budget."""
        return cls(intra=dataclasses.replace(GLCImageConfig.small(), num_rates=64), share_vqgan=True,
                   z_codebook_size=1024)


    @classmethod
    def small_lowpass(cls) -> "GLCVideoConfig":
        """``small`` over an I-frame model of preset ``small_lowpass`` (the image default since session 5):
        the same P-model, the I-frame VQGAN with its low-pass path."""
        small = cls.small()
        return dataclasses.replace(small, intra=dataclasses.replace(GLCImageConfig.small_lowpass(), num_rates=64))


PRESETS = {"official": GLCVideoConfig.official, "small": GLCVideoConfig.small, "tiny": GLCVideoConfig.tiny,
           "small_lowpass": GLCVideoConfig.small_lowpass}


class FramePlan(NamedTuple):
    """How frame ``index`` is coded under a GOP structure."""

    index: int
    intra: bool
    after_intra: bool  # the reference's "ref_y is None": feature_adaptor_I and prior_fusion_adaptor_0
    adaptor_index: int  # fa_idx: feature_adaptor[adaptor_index] when not after_intra


def plan_frame(index: int, gop: GOPConfig) -> FramePlan:
    """The reference GOP logic, counted from the last I-frame (identical to the reference's global
    frame index whenever the intra period is a multiple of 8 and of the reset interval, as 96 is)."""
    position = index % gop.intra_period if gop.intra_period else index
    reset = gop.reset_interval > 0 and position >= 1 and (position - 1) % gop.reset_interval == 0
    after_intra = position == 1 or reset
    adaptor_index = FEATURE_ADAPTOR_PATTERN[position % len(FEATURE_ADAPTOR_PATTERN)]
    return FramePlan(index, position == 0, after_intra, adaptor_index)


# -- outputs ---------------------------------------------------------------------------------------
class GLCVideoOutput(NamedTuple):
    """What ``GLCVideo.forward`` returns for a clip of T frames (training)."""

    x_hat: torch.Tensor | None  # (B, T, 3, Hp, Wp) generator outputs, [-1, 1] nominal, unclamped
    latents: torch.Tensor  # (B, T, C, h, w) VQGAN encoder outputs
    latent_hats: torch.Tensor  # (B, T, C, h, w) decoded latents (each P-frame's reference is the previous)
    y_bits: torch.Tensor  # (B, T, C, h, w) estimated bits per element of y
    z_bits: torch.Tensor  # (B, T) bits of the hyper indices (fixed length)
    vq_loss: torch.Tensor  # P-frame z_vq loss, summed over frames
    intra: GLCImageOutput  # the I-frame's full output (code heads etc.)
    num_pixels: int  # unpadded H*W per frame


class EncodedFrame(NamedTuple):
    payload: bytes  # the frame unit's payload: z section then y stream
    latent_hat: torch.Tensor  # the decoded latent (float); the decoder reproduces it exactly
    estimated_bits: float  # official estimate for this frame
    reference: torch.Tensor  # what the next P-frame conditions on: latent_hat, or its exact fixed-point form


class DecodedFrame(NamedTuple):
    latent_hat: torch.Tensor  # float, the generator's input
    reference: torch.Tensor  # the next P-frame's reference (fixed point on the portable path)


class FrameStats(NamedTuple):
    """Per-frame figures reported while compressing."""

    index: int
    intra: bool
    payload_bytes: int
    unit_bytes: int  # payload + the unit's framing (length varint + CRC-8)
    estimated_bits: float


class DecodedLatent(NamedTuple):
    header: SequenceHeader
    plan: FramePlan
    latent_hat: torch.Tensor
    latent_hat_fixed: torch.Tensor | None = None  # portable files: the exact latent (int64 fixed point)


FrameSource = Iterable[torch.Tensor]


class GLCVideo(LatentCodec):
    """GLC-video: the intra model (``intra``, a 64-level GLC-image) and the P-frame model (``inter``)."""

    model_name = "glc-video"
    config_class = GLCVideoConfig
    # Any rate on the 1/256 grid between the 64 levels (latentcodec.ratecontrol.interpolated_gain).
    continuous_rates = True
    optional_prefixes = ("intra.code_pred_loss.", "intra.code_pred_pix_loss.", "intra.vqgan.quantize.",
                         "inter.vqgan.quantize.")

    def __init__(self, config: GLCVideoConfig, with_training_modules: bool = False, intra: GLCImage | None = None):
        super().__init__(config)
        if intra is not None and intra.config != config.intra:
            raise ConfigError("the given intra model's config differs from config.intra")
        self.intra = intra if intra is not None else GLCImage(config.intra, with_training_modules=with_training_modules)
        self.inter = GLCVideoInter(config)
        self.set_memory_format(self.intra.memory_format)

    def set_memory_format(self, memory_format: torch.memory_format) -> "GLCVideo":
        """NHWC for speed (default) or NCHW to follow the reference arithmetic (see GLCImage)."""
        self.intra.set_memory_format(memory_format)
        if self.inter.vqgan is not None:
            self.inter.vqgan.to(memory_format=memory_format)
        return self

    # -- properties ------------------------------------------------------------------------------
    @property
    def num_rates(self) -> int:
        return self.config.num_rates

    @property
    def inter_vqgan(self) -> VQGAN:
        return self.inter.vqgan if self.inter.vqgan is not None else self.intra.vqgan

    def vqgan_for(self, plan: FramePlan) -> VQGAN:
        return self.intra.vqgan if plan.intra else self.inter_vqgan

    def interpolate_inter_rates(self, anchor_levels: Sequence[int]) -> "GLCVideo":
        """Fill the P-model's rate levels between trained anchor levels, in place (see
        glc_video_weights.interpolate_inter_rates); training visits only the anchors."""
        interpolate_inter_rates(self.inter, anchor_levels)
        return self

    def plan(self, index: int, gop: GOPConfig | None = None) -> FramePlan:
        return plan_frame(index, gop or self.config.gop)

    def _check_rate(self, rate_index: int | float, what: str = "rate index") -> int | float:
        """A whole level, or any rate on the 1/256 grid between them (continuous rates)."""
        try:
            code = None if isinstance(rate_index, bool) else rate_to_code(rate_index)
        except (TypeError, ValueError, OverflowError):
            code = None
        if code is None or code > (self.num_rates - 1) * RATE_FRACTION_STEPS:
            raise LatentCodecError(f"{what} {rate_index!r} is not a rate of this model: 0..{self.num_rates - 1} "
                                   f"in steps of 1/{RATE_FRACTION_STEPS}")
        return rate_from_code(code)

    def inter_z_bits(self) -> int:
        """Fixed bits of a P-frame's tokens as the reference counts them: byte-rounded (224)."""
        return self.config.z_section_bytes * 8

    # -- training --------------------------------------------------------------------------------
    def forward(self, frames: torch.Tensor, rate_index: int | torch.Tensor = 0, decode_pixels: bool = True,
                train_intra: bool = False, gop: GOPConfig | None = None) -> GLCVideoOutput:
        """Training forward over clips (B, T, 3, H, W) in [0, 1]: frame 0 intra, the rest P-frames,
        each conditioned on the previous decoded latent (gradients flow through the chain).
        ``train_intra=False`` runs the intra model without gradients (frozen I-frame model)."""
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"expected clips shaped (B, T, 3, H, W), got {tuple(frames.shape)}")
        batch, length = frames.shape[:2]
        height, width = frames.shape[-2:]
        with torch.set_grad_enabled(train_intra and torch.is_grad_enabled()):
            intra_out = self.intra(frames[:, 0], rate_index, decode_pixels=decode_pixels)
        latents, latent_hats, y_bits = [intra_out.latent], [intra_out.latent_hat], [intra_out.y_bits]
        z_bits = [intra_out.z_bits]
        x_hats = [intra_out.x_hat] if decode_pixels else []
        vq_loss = frames.new_zeros(())
        vqgan = self.inter_vqgan
        for t in range(1, length):
            plan = plan_frame(t, gop or self.config.gop)
            latent = vqgan.encoder(self.intra.pad(frames[:, t]))
            analysis = self.inter.analyse(latent, latent_hats[-1], plan, rate_index)
            latents.append(latent)
            latent_hats.append(analysis.latent_hat)
            y_bits.append(gaussian_residual_bits(analysis.steps.symbols, analysis.steps.scales))
            z_bits.append(torch.full((batch,), float(self.inter_z_bits()), device=frames.device))
            vq_loss = vq_loss + analysis.vq_loss
            if decode_pixels:
                x_hats.append(vqgan.generator(analysis.latent_hat))
        return GLCVideoOutput(
            torch.stack(x_hats, 1) if decode_pixels else None, torch.stack(latents, 1), torch.stack(latent_hats, 1),
            torch.stack(y_bits, 1), torch.stack(z_bits, 1), vq_loss, intra_out, height * width,
        )

    # -- frame coding ----------------------------------------------------------------------------
    def _pad(self, frame: torch.Tensor) -> torch.Tensor:
        return self.intra.pad(frame)

    @torch.inference_mode()
    def encode_frame(self, frame: torch.Tensor, plan: FramePlan, rate_index: int | float,
                     ref_latent: torch.Tensor | None, portable: bool | None = None) -> EncodedFrame:
        """One [0, 1] frame (1, 3, H, W) -> its unit payload and decoded latent. ``ref_latent`` is the
        previous frame's ``EncodedFrame.reference``; ``portable`` defaults to the model's setting."""
        portable = self.portable if portable is None else portable
        height, width = frame.shape[-2:]
        coder = EntropyEncoder(DEFAULT_SCALE_TABLE)
        x_padded = self._pad(frame)
        if plan.intra:
            if portable:
                encoded = self.intra.analyse_portable(x_padded, rate_index, coder)
            else:
                encoded = self.intra.analyse(x_padded, rate_index, encoder=coder)
            z_section = pack_indices(encoded.z_indices.flatten().cpu(), self.intra.config.z_index_bits)
            z_bits = self.intra.z_bits_per_image(height, width)
        else:
            if ref_latent is None:
                raise ValueError("a P-frame needs the previous decoded latent")
            latent = self.inter_vqgan.encoder(x_padded)
            if portable:
                encoded = self.inter.analyse_portable(latent, ref_latent, plan, rate_index, coder)
            else:
                encoded = self.inter.analyse(latent, ref_latent, plan, rate_index, encoder=coder)
            z_section = pack_indices(encoded.z_indices.flatten().cpu(), self.config.z_index_bits)
            z_bits = self.inter_z_bits()
        y_bits = gaussian_residual_bits(encoded.steps.symbols, encoded.steps.scales).sum().item()
        reference = encoded.latent_hat_fixed if portable else encoded.latent_hat
        return EncodedFrame(z_section + coder.finish(), encoded.latent_hat, y_bits + z_bits, reference)

    def _z_section_bytes(self, plan: FramePlan, height: int, width: int) -> int:
        if plan.intra:
            return packed_size(self.intra.z_positions(height, width), self.intra.config.z_index_bits)
        return self.config.z_section_bytes

    @torch.inference_mode()
    def decode_frame(self, payload: bytes, plan: FramePlan, rate_index: int | float, height: int, width: int,
                     ref_latent: torch.Tensor | None, portable: bool = False) -> DecodedFrame:
        """A unit payload -> the decoded latent (exactly the encoder's) and the next reference."""
        split = self._z_section_bytes(plan, height, width)
        if len(payload) < split:
            raise BitstreamError(f"payload of {len(payload)} bytes is shorter than its {split}-byte token section")
        z_section, y_section = payload[:split], payload[split:]
        if plan.intra:
            if portable:
                fixed = self.intra.decode_sections_fixed(z_section, y_section, height, width, rate_index)
                return DecodedFrame(integer.from_fixed(fixed), fixed)
            latent_hat = self.intra.decode_sections(z_section, y_section, height, width, rate_index)
            return DecodedFrame(latent_hat, latent_hat)
        if ref_latent is None:
            raise BitstreamError("a P-frame without a preceding decoded frame")
        indices = unpack_indices(z_section, self.config.hyper_tokens, self.config.z_index_bits)
        if int(indices.max()) >= self.config.z_codebook_size:
            raise BitstreamError("corrupt token section: index beyond the codebook")
        decoder = EntropyDecoder(y_section, DEFAULT_SCALE_TABLE)
        indices = indices.view(1, -1).to(self.inter.y_q_dec.device)
        if portable:
            def read_fixed(prior, masks, context_fn):
                return decode_masked_fixed(prior, masks, context_fn, decoder, DEFAULT_SCALE_TABLE)

            fixed = self.inter.reconstruct_portable(ref_latent, plan, rate_index, indices, read_fixed)
            decoder.finish()
            return DecodedFrame(integer.from_fixed(fixed), fixed)

        def read_steps(prior, masks, context_fn):
            return decode_masked(prior, masks, context_fn, decoder, DEFAULT_SCALE_TABLE)

        result = self.inter.reconstruct(ref_latent, plan, rate_index, indices, read_steps)
        decoder.finish()
        return DecodedFrame(result.latent_hat, result.latent_hat)

    @torch.inference_mode()
    def generate(self, latent_hat: torch.Tensor, plan: FramePlan, height: int, width: int) -> torch.Tensor:
        """Decoded latent -> [0, 1] frame (1, 3, height, width)."""
        x_hat = self.vqgan_for(plan).generator(latent_hat)[..., :height, :width]
        return (x_hat.clamp_(-1.0, 1.0) + 1.0) / 2.0

    # -- sequences -------------------------------------------------------------------------------
    def sequence_header(self, height: int, width: int, rate_index: int | float,
                        intra_rate_index: int | float | None = None, frame_count: int = 0,
                        frame_rate: Fraction | int | float = Fraction(25), gop: GOPConfig | None = None,
                        per_gop_rates: bool = False) -> SequenceHeader:
        gop = gop or self.config.gop
        rate = Fraction(frame_rate).limit_denominator(1 << 20)
        return SequenceHeader(
            model_id=self.model_id,
            intra_rate=self._check_rate(rate_index if intra_rate_index is None else intra_rate_index,
                                        "intra rate index"),
            inter_rate=self._check_rate(rate_index),
            height=height,
            width=width,
            frame_count=frame_count,
            frame_rate_num=rate.numerator,
            frame_rate_den=rate.denominator,
            intra_period=gop.intra_period,
            reset_interval=gop.reset_interval,
            portable=self.portable,
            per_gop_rates=per_gop_rates,
        )

    def encode_sequence(self, frames: FrameSource, stream: BinaryIO, rate_index: int | float = 0,
                        intra_rate_index: int | float | None = None, frame_rate: Fraction | int | float = Fraction(25),
                        frame_count: int = 0, gop: GOPConfig | None = None,
                        on_frame: Callable[[FrameStats], None] | None = None) -> int:
        """Code [0, 1] frames (each (1, 3, H, W) or (3, H, W)) into ``stream``, one unit per frame,
        holding only the current frame and the reference latent. ``frame_count`` 0 writes an
        open-ended sequence closed by an end marker. Returns the number of frames coded."""
        writer = None
        ref_latent = None
        size = None
        count = 0
        for index, frame in enumerate(frames):
            frame = self._check_frame(frame, index, size)
            size = tuple(frame.shape[-2:])
            if writer is None:
                header = self.sequence_header(*size, rate_index, intra_rate_index, frame_count, frame_rate, gop)
                writer = SequenceWriter(stream, header)
            plan = plan_frame(index, GOPConfig(writer.header.intra_period, writer.header.reset_interval))
            rate = writer.header.intra_rate if plan.intra else writer.header.inter_rate
            encoded = self.encode_frame(frame, plan, rate, ref_latent, portable=writer.header.portable)
            unit_bytes = writer.write_frame(encoded.payload)
            ref_latent = encoded.reference
            count += 1
            if on_frame is not None:
                on_frame(FrameStats(index, plan.intra, len(encoded.payload), unit_bytes, encoded.estimated_bits))
        if writer is None:
            raise InputError("the video has no frames")
        writer.close()
        return count

    def _check_frame(self, frame, index: int, size: tuple[int, int] | None) -> torch.Tensor:
        if not isinstance(frame, torch.Tensor):
            raise InputError(f"frame {index}: expected a tensor, got {type(frame).__name__}")
        if frame.dim() == 3:
            frame = frame.unsqueeze(0)
        if frame.dim() != 4 or frame.shape[:2] != (1, 3):
            raise InputError(f"frame {index}: expected an RGB frame shaped (3, H, W), got {tuple(frame.shape)}")
        if size is not None and tuple(frame.shape[-2:]) != size:
            raise InputError(f"frame {index} is {frame.shape[-1]}x{frame.shape[-2]}, the video is {size[1]}x{size[0]}")
        device = self.inter.y_q_dec.device
        return frame.to(device=device, dtype=torch.float32)

    def compress_frames(self, frames: FrameSource, rate_index: int | float = 0,
                        intra_rate_index: int | float | None = None,
                        frame_rate: Fraction | int | float = Fraction(25), gop: GOPConfig | None = None,
                        on_frame: Callable[[FrameStats], None] | None = None) -> bytes:
        """A whole sequence in memory (frames given as a list/tensor get an exact frame count)."""
        buffer = io.BytesIO()
        count = len(frames) if hasattr(frames, "__len__") else 0
        self.encode_sequence(frames, buffer, rate_index, intra_rate_index, frame_rate, count, gop, on_frame)
        return buffer.getvalue()

    def decode_latents(self, source: bytes | BinaryIO, max_side: int | None = None) -> Iterator[DecodedLatent]:
        """Stream (header, plan, decoded latent) per frame; errors inside a unit name its frame."""
        options = {} if max_side is None else {"max_side": max_side}
        reader = SequenceReader(source, expected_model_id=self.model_id, **options)
        header = reader.header
        self._check_file_rates(header.intra_rate, header.inter_rate)
        gop = GOPConfig(header.intra_period, header.reset_interval)
        ref_latent = None
        for unit in reader:
            plan = plan_frame(unit.index, gop)
            if plan.intra and unit.index:
                self._check_file_rates(unit.intra_rate, unit.inter_rate, unit.index)
            rate = unit.intra_rate if plan.intra else unit.inter_rate
            try:
                decoded = self.decode_frame(unit.payload, plan, rate, header.height, header.width, ref_latent,
                                            portable=header.portable)
            except BitstreamError as exc:
                raise FrameUnitError(unit.index, str(exc) + ("" if header.portable else FLOAT_FORMAT_HINT)) from None
            ref_latent = decoded.reference
            yield DecodedLatent(header, plan, decoded.latent_hat, decoded.reference if header.portable else None)

    def _check_file_rates(self, intra_rate: int | float, inter_rate: int | float, frame: int | None = None) -> None:
        for rate, what in ((intra_rate, "intra"), (inter_rate, "inter")):
            if rate > self.num_rates - 1:
                message = f"{what} rate index {rate} is out of range for this model ({self.num_rates} rates)"
                raise BitstreamError(message) if frame is None else FrameUnitError(frame, message)

    def decode_sequence(self, source: bytes | BinaryIO, max_side: int | None = None) -> Iterator[torch.Tensor]:
        """Stream decoded [0, 1] frames (1, 3, H, W) one by one: memory holds one unit, one frame
        and the reference latent, whatever the sequence length."""
        for decoded in self.decode_latents(source, max_side):
            yield self.generate(decoded.latent_hat, decoded.plan, decoded.header.height, decoded.header.width)

    def read_header(self, data: bytes | BinaryIO) -> SequenceHeader:
        return SequenceReader(data, expected_model_id=self.model_id).header

    def compress(self, x: torch.Tensor, rate_index: int | float = 0) -> bytes:
        """Frames (T, 3, H, W) or (1, T, 3, H, W) in [0, 1] -> sequence file bytes."""
        if x.dim() == 5 and x.shape[0] == 1:
            x = x[0]
        if x.dim() != 4:
            raise InputError(f"expected frames shaped (T, 3, H, W), got {tuple(x.shape)}")
        return self.compress_frames(list(x.unbind(0)), rate_index)

    def decompress(self, data: bytes) -> torch.Tensor:
        """Sequence file bytes -> (T, 3, H, W) in [0, 1]."""
        return torch.cat(list(self.decode_sequence(data)), 0)

    @torch.inference_mode()
    def estimate_bits(self, frames: torch.Tensor, rate_index: int | float = 0) -> list[float]:
        """Official per-frame rate estimates (no file written)."""
        return [s.estimated_bits for s in self._stats_of(frames, rate_index)]

    def _stats_of(self, frames: torch.Tensor, rate_index: int | float) -> list[FrameStats]:
        stats: list[FrameStats] = []
        self.compress_frames(list(frames.unbind(0)), rate_index, on_frame=stats.append)
        return stats

    # -- persistence -----------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None,
                        intra_reference: str | os.PathLike | None = None,
                        dtype: torch.dtype | None = None) -> Path:
        """``config.json`` + ``model.safetensors`` of the whole model, or, with ``intra_reference``
        (a folder name under the zoo's shipped weights, or a save_pretrained folder of the
        GLC-image model this I-frame model was loaded from), of the P-frame model alone: the
        intra model is then read from that folder (rates interpolated) and checked against the
        SHA-256 of its weights recorded here. ``dtype`` (e.g. torch.float16) stores floating
        tensors narrower; they load back into float32 parameters exactly as stored."""
        tensors = self.state_dict_for_saving()
        extra = None
        if intra_reference is not None:
            source = resolve_intra_reference(intra_reference, Path(path))
            intra = GLCImage.from_pretrained(source).interpolate_rates(self.num_rates)
            own = self.intra.state_dict()
            for key, value in intra.state_dict().items():
                if not torch.equal(value, own[key].cpu()):
                    raise WeightsError(f"intra_reference {source}: its {key} differs from this model's intra model")
            tensors = {k: v for k, v in tensors.items() if k.startswith("inter.")}
            extra = {INTRA_REFERENCE_KEY: {"weights": str(intra_reference),
                                           "sha256": weights_sha256(source)}}
        return self.write_pretrained(path, narrow_floats(tensors, dtype), metadata, extra)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs: Any) -> "GLCVideo":
        path = Path(path)
        reference = cls.read_payload(path).get(INTRA_REFERENCE_KEY)
        if reference is None:
            return super().from_pretrained(path, device, **kwargs)
        config = cls.read_config(path)
        if not isinstance(reference, dict) or not isinstance(reference.get("weights"), str):
            raise WeightsError(f"{path}: malformed {INTRA_REFERENCE_KEY} entry in config.json")
        source = resolve_intra_reference(reference["weights"], path)
        if reference.get("sha256") != weights_sha256(source):
            raise WeightsError(f"{path}: its P-frame model was trained over other I-frame weights than "
                               f"{weights_location(source)} (SHA-256 differs)")
        intra = GLCImage.from_pretrained(source).interpolate_rates(config.num_rates)
        if intra.config != config.intra:
            raise WeightsError(f"{path}: the referenced I-frame model {source} has another configuration")
        model = cls(config, intra=intra, **kwargs)
        state = cls.read_weights(path)
        weights_source = str(weights_location(path))
        stray = [k for k in state if not k.startswith("inter.")]
        if stray:
            raise WeightsError(f"{weights_source}: holds {len(stray)} non-P-model key(s) such as {stray[0]!r} "
                               f"although config.json references its I-frame model")
        load_inter_strict(model.inter, {k[len("inter."):]: v for k, v in state.items()}, weights_source)
        return model.to(device).eval()

    # -- official checkpoints --------------------------------------------------------------------
    @classmethod
    def from_official_state_dicts(cls, intra_state: dict[str, torch.Tensor], inter_state: dict[str, torch.Tensor],
                                  intra_source: str = "intra state dict",
                                  inter_source: str = "inter state dict") -> "GLCVideo":
        """The official I model (4 rates, loaded strictly, then interpolated to 64 levels) and the
        official P model (loaded strictly: a missing or unexpected key is a WeightsError naming it)."""
        intra = GLCImage.from_official_state_dict(intra_state, source=intra_source)
        intra.interpolate_rates(OFFICIAL_RATE_LEVELS)
        config = GLCVideoConfig(intra=intra.config)
        model = cls(config, intra=intra)
        load_inter_strict(model.inter, inter_state, inter_source)
        return model.eval()

    @classmethod
    def from_official(cls, intra_path: str | os.PathLike, inter_path: str | os.PathLike | None = None,
                      device: str | torch.device = "cpu") -> "GLCVideo":
        """Load the official GLC image (I) and video (P) checkpoints (.pth); ``latentcodec.load``
        takes them as ``weights="image.pth,video.pth"``."""
        if inter_path is None:
            raise WeightsError(f"{intra_path}: GLC-video needs two official checkpoints, the image (I-frame) and "
                               "the video (P-frame) model; pass weights as 'image.pth,video.pth'")
        return cls.from_official_state_dicts(load_official_checkpoint(intra_path), load_official_checkpoint(inter_path),
                                             str(intra_path), str(inter_path)).to(device)

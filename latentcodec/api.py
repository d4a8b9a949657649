"""The public Python API: ``latentcodec.load(name, quality, weights, device)``.

    codec = latentcodec.load("glc-image", quality=0)
    data = codec.compress(pil_image)       # bytes: the whole file
    image = codec.decompress(data)         # PIL.Image of the original size
    bits = codec.estimate_bits(pil_image)  # the model's own rate estimate, in bits
    codec.at_quality(1.37)                 # a continuous rate (snapped to 1/256 of a level)
    data = codec.compress(pil_image, target_bytes=1000)          # the largest file <= 1000 bytes
    result = codec.compress_to_target(pil_image, target_bpp=0.02)  # ... with rate, encodes, scale

    video = latentcodec.load("glc-video", quality=21)   # a VideoCodec
    data = video.compress_video("clip.y4m")             # bytes: the sequence file
    frames = video.decompress_video(data)               # list of PIL.Image
"""

from __future__ import annotations

import io
import math
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from latentcodec.data.images import pil_to_tensor, tensor_to_pil, to_rgb
from latentcodec.errors import LatentCodecError, WeightsError
from latentcodec.models.base import CONFIG_FILE
from latentcodec.zoo.registry import ModelEntry, get_entry

OFFICIAL_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


class LoadedCodec:
    """What image and video codecs share: the model, its registry entry, quality and weights."""

    def __init__(self, model, entry: ModelEntry, quality: int | float, weights_source: str):
        quality = self._check_quality(model, entry, quality, "quality")
        self.model = model
        self.entry = entry
        self.quality = quality
        self.weights_source = weights_source

    @staticmethod
    def _check_quality(model, entry: ModelEntry, value, what: str) -> int | float:
        """The quality as the file will record it: an int level, or for codecs with continuous
        rates any number in 0..num_rates-1, snapped to the 1/256 grid (whole values become ints)."""
        if getattr(model, "continuous_rates", False) and isinstance(value, float):
            from latentcodec.ratecontrol import snap_quality

            if math.isfinite(value) and 0 <= value <= model.num_rates - 1:
                return snap_quality(value, model.num_rates)
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < model.num_rates):
            raise LatentCodecError(f"{what} {value!r} out of range for {entry.name}: 0..{model.num_rates - 1}")
        return value

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def num_qualities(self) -> int:
        return self.model.num_rates

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


class ImageCodec(LoadedCodec):
    """A loaded image codec at one quality (rate index); PIL images in, bytes out."""

    def at_quality(self, quality: int | float) -> "ImageCodec":
        """The same model (shared, not copied) at another quality (a float for continuous rates)."""
        return ImageCodec(self.model, self.entry, quality, self.weights_source)

    def _tensor(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise LatentCodecError(f"expected a PIL.Image, got {type(image).__name__}")
        return pil_to_tensor(to_rgb(image)).to(self.device)

    def compress(self, image: Image.Image, target_bytes: int | None = None, target_bpp: float | None = None,
                 allow_downscale: bool = False, caption: str | None = None) -> bytes:
        """The whole file at this quality, or with ``target_bytes`` / ``target_bpp`` the largest file
        not above that budget (see :meth:`compress_to_target`). ``caption`` (PerCoV2 only): the text
        coded with the image, which conditions its decoder."""
        if caption is not None:
            if self.entry.name != "percov2":
                raise LatentCodecError(f"{self.name} codes no caption: caption applies to percov2 only")
            if target_bytes is not None or target_bpp is not None:
                raise LatentCodecError("a caption does not combine with a size target")
            return self.model.compress(self._tensor(image), self.quality, caption)
        if target_bytes is None and target_bpp is None:
            return self.model.compress(self._tensor(image), self.quality)
        return self.compress_to_target(image, target_bytes, target_bpp, allow_downscale).data

    def compress_to_target(self, image: Image.Image, target_bytes: int | None = None,
                           target_bpp: float | None = None, allow_downscale: bool = False, config=None):
        """Search the continuous rate for the largest file not above the budget (``target_bpp``
        counts over the original H x W); returns a ``latentcodec.ratecontrol.RateSearchResult``
        (data, rate, scale, encodes, ...). Raises ``TargetUnreachable`` (a LatentCodecError naming
        the smallest reachable size) when the lowest rate is too large, unless ``allow_downscale``
        lets it code a smaller image that the decoder upsamples back to the original size."""
        from latentcodec.ratecontrol import RateSearchConfig, compress_to_target, target_bytes_for

        if not hasattr(self.model, "rate_trials"):
            raise LatentCodecError(f"{self.name} has no continuous rates, so no target-size mode")
        x = self._tensor(image)
        budget = target_bytes_for(target_bytes, target_bpp, x.shape[-2], x.shape[-1])
        return compress_to_target(lambda scale: self.model.rate_trials(x, scale), budget, allow_downscale,
                                  config or RateSearchConfig())

    def decompress(self, data: bytes) -> Image.Image:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise LatentCodecError(f"expected bytes, got {type(data).__name__}")
        return tensor_to_pil(self.model.decompress(bytes(data)))

    def estimate_bits(self, image: Image.Image) -> float:
        return float(self.model.estimate_bits(self._tensor(image), self.quality))

    def __repr__(self) -> str:
        return f"ImageCodec({self.name!r}, quality={self.quality}, weights={self.weights_source!r})"


def load_model(name: str, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               token_prior: str | os.PathLike | None = None):
    """The registered model ``name`` with weights from a save_pretrained dir, an official
    checkpoint file, or (None) the shipped default, and (DLF) an optional fitted token-prior
    folder. Returns (model, entry, weights description)."""
    model, entry, source = _model_with_weights(name, weights, device)
    if token_prior is not None:
        attach_token_prior(model, token_prior, device)
        source = f"{source} + token prior {token_prior}"
    return model, entry, source


def _model_with_weights(name: str, weights: str | os.PathLike | None, device: str | torch.device):
    entry = get_entry(name)
    cls = entry.load_class()
    if weights is None:
        path = entry.default_weights_path
        if path is None:
            raise WeightsError(
                f"no default weights are shipped for {name} yet; pass --weights (CLI) or weights= (Python): "
                f"a directory written by save_pretrained, or official checkpoint file(s)"
            )
        return cls.from_pretrained(path, device=device), entry, f"default ({path.name})"
    pair = _official_pair(weights)
    if pair is not None and entry.kind == "video":
        # GLC-video ships as two official checkpoints: the image (I-frame) and video (P-frame) models.
        return cls.from_official(*pair, device=device), entry, f"{pair[0]} + {pair[1]}"
    path = Path(weights)
    if path.is_dir():
        diffusers_folder = (path / "model_index.json").is_file() and not (path / CONFIG_FILE).is_file()
        if diffusers_folder and hasattr(cls, "from_diffusers"):
            # A pipeline folder in the diffusers layout (PerCoV2 over a local SD3 copy).
            return cls.from_diffusers(path).to(device), entry, str(path)
        if not (path / CONFIG_FILE).is_file():
            raise WeightsError(f"{path}: no {CONFIG_FILE} (expected a directory written by save_pretrained)")
        return cls.from_pretrained(path, device=device), entry, str(path)
    if path.is_file():
        if path.suffix.lower() in OFFICIAL_CHECKPOINT_SUFFIXES and hasattr(cls, "from_official"):
            return cls.from_official(path, device=device), entry, str(path)
        raise WeightsError(f"{path}: unsupported weights file (give a save_pretrained directory or an official .pth)")
    raise WeightsError(f"weights {path} not found")


def _official_pair(weights) -> tuple[Path, Path] | None:
    """``"image.pth,video.pth"`` or a (image, video) pair of paths; None for anything else."""
    if isinstance(weights, (tuple, list)) and len(weights) == 2:
        return Path(weights[0]), Path(weights[1])
    if isinstance(weights, str) and "," in weights and not Path(weights).exists():
        first, _, second = weights.partition(",")
        return Path(first.strip()), Path(second.strip())
    return None


def load(
    name: str,
    quality: int = 0,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    portable: bool = True,
    token_prior: str | os.PathLike | None = None,
    max_memory: int | str | None = None,
    precision: str = "fp32",
) -> "ImageCodec | VideoCodec":
    """An ImageCodec for image models, a VideoCodec for video models (e.g. ``glc-video``).

    ``portable`` (default) writes files whose entropy parameters come from exact integer networks,
    so they decode identically on any CPU, thread count and GPU. ``portable=False`` keeps the float
    arithmetic of the reference implementations (it reproduces official test vectors); its files
    are marked as such and decode reliably only on the machine kind that wrote them.

    ``token_prior`` (DLF): a folder written by ``latentcodec fit-token-prior``; the semantic tokens are
    then entropy-coded under it instead of at a fixed 12 bits each.

    ``max_memory``: the process's memory budget in bytes or as text ("2GB", "512MiB"); decoding
    runs the generator tile by tile when a whole-image pass would exceed it (the reconstruction
    stays within one 8-bit level of the untiled one, and files never depend on it). Default:
    half of the RAM available when the codec is loaded.

    ``precision``: the arithmetic of the pixel-space nets: "fp32" (default), "bf16", or "auto"
    (bfloat16 on CPUs with AMX matrix units, where it is several times faster, float32 elsewhere).
    bfloat16 never changes the symbols a file decodes to, but moves decoded pixels by a few 8-bit
    levels, so the one-level guarantees (between machines, tiled against whole) hold in float32
    only; ``latentcodec.nn.precision`` says more.
    """
    check_precision(precision)
    model, entry, source = load_model(name, weights, device, token_prior)
    model.set_portable(portable)
    model.set_memory_budget(memory_budget(max_memory))
    model.set_precision(precision)
    if entry.kind == "video":
        return VideoCodec(model.eval(), entry, quality, source)
    return ImageCodec(model.eval(), entry, quality, source)


def check_precision(precision: str) -> str:
    """``precision`` checked before any weights load, as a one-line LatentCodecError."""
    from latentcodec.nn.precision import check_precision as check

    try:
        return check(precision)
    except ValueError as exc:
        raise LatentCodecError(str(exc)) from None


def memory_budget(max_memory: int | str | None) -> int:
    """``max_memory`` as bytes: an int, a size such as "2GB", or None for the machine's default."""
    from latentcodec.nn.tiling import MIN_MEMORY_BUDGET, default_memory_budget, parse_memory_size

    if max_memory is None:
        return default_memory_budget()
    if isinstance(max_memory, str):
        try:
            return parse_memory_size(max_memory)
        except ValueError as exc:
            raise LatentCodecError(str(exc)) from None
    if isinstance(max_memory, bool) or not isinstance(max_memory, int) or max_memory < MIN_MEMORY_BUDGET:
        raise LatentCodecError(f"max_memory must be at least {MIN_MEMORY_BUDGET} bytes or a size such as '2GB', "
                               f"got {max_memory!r}")
    return max_memory


def attach_token_prior(model, path: str | os.PathLike, device: str | torch.device = "cpu") -> None:
    """Plug a fitted token prior folder (``latentcodec fit-token-prior``) into a DLF or PerCoV2 model."""
    from latentcodec.training.token_prior_fit import check_prior_fits, load_token_prior

    if not hasattr(model, "attach_token_prior"):
        raise LatentCodecError(f"{model.model_name} has no token prior: token_prior applies to dlf only and to percov2")
    prior = load_token_prior(path, model.model_name)
    check_prior_fits(model, prior)
    model.attach_token_prior(prior.to(device))


def load_video(
    name: str = "glc-video",
    quality: int = 0,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    intra_quality: int | None = None,
    portable: bool = True,
    max_memory: int | str | None = None,
    precision: str = "fp32",
) -> "VideoCodec":
    """A registered video codec; ``intra_quality`` sets the I-frame rate level (default: ``quality``);
    ``portable``, ``max_memory`` and ``precision`` as in :func:`load`."""
    entry = get_entry(name)
    if entry.kind != "video":
        raise LatentCodecError(f"{name} is an {entry.kind} codec; use load")
    check_precision(precision)
    model, entry, source = load_model(name, weights, device)
    model.set_portable(portable)
    model.set_memory_budget(memory_budget(max_memory))
    model.set_precision(precision)
    return VideoCodec(model.eval(), entry, quality, source, intra_quality)


def _tqdm_disable(progress: bool | None) -> bool | None:
    return None if progress is None else not progress


class VideoCodec(LoadedCodec):
    """A loaded video codec at one quality (rate level, 0 = lowest rate).

        codec = latentcodec.load("glc-video", quality=21)
        data = codec.compress_video("clip.y4m")          # or a list of PIL images / arrays / a tensor
        frames = codec.decompress_video(data)            # list of PIL.Image
        for frame in codec.iter_decompress_video(data):  # streaming, bounded memory
            ...
    """

    def __init__(self, model, entry: ModelEntry, quality: int, weights_source: str, intra_quality: int | None = None):
        super().__init__(model, entry, quality, weights_source)
        if intra_quality is not None:
            intra_quality = self._check_quality(model, entry, intra_quality, "intra quality")
        self.intra_quality = intra_quality

    def at_quality(self, quality: int, intra_quality: int | None = None) -> "VideoCodec":
        return VideoCodec(self.model, self.entry, quality, self.weights_source, intra_quality)

    # -- compression -------------------------------------------------------------------------
    def _frame_source(self, source, frame_rate):
        """(iterable of (1, 3, H, W) tensors, frame rate, frame count or 0, closer)."""
        from fractions import Fraction

        from latentcodec.data.video import frame_to_tensor, open_video

        if isinstance(source, (str, os.PathLike)):
            reader = open_video(source, frame_rate=frame_rate)
            rate = Fraction(frame_rate) if frame_rate is not None else reader.info.frame_rate
            return (frame_to_tensor(f) for f in reader), rate, reader.info.frame_count or 0, reader.close
        rate = Fraction(frame_rate) if frame_rate is not None else Fraction(25)
        if isinstance(source, torch.Tensor):
            if source.dim() == 5 and source.shape[0] == 1:
                source = source[0]
            if source.dim() != 4 or source.shape[1] != 3:
                raise LatentCodecError(f"expected frames shaped (T, 3, H, W) in [0, 1], got {tuple(source.shape)}")
            return [f.unsqueeze(0) for f in source.unbind(0)], rate, source.shape[0], None
        if isinstance(source, np.ndarray):
            if source.ndim != 4 or source.shape[-1] != 3 or source.dtype != np.uint8:
                raise LatentCodecError(f"expected a (T, H, W, 3) uint8 array, got {source.shape} {source.dtype}")
            return [frame_to_tensor(f) for f in source], rate, source.shape[0], None
        if isinstance(source, (list, tuple)):
            frames = []
            for index, frame in enumerate(source):
                if isinstance(frame, Image.Image):
                    frames.append(pil_to_tensor(to_rgb(frame)))
                elif isinstance(frame, np.ndarray) and frame.shape[-1:] == (3,) and frame.ndim == 3 \
                        and frame.dtype == np.uint8:
                    frames.append(frame_to_tensor(frame))
                elif isinstance(frame, torch.Tensor):
                    frames.append(frame if frame.dim() == 4 else frame.unsqueeze(0))
                else:
                    raise LatentCodecError(f"frame {index}: expected a PIL.Image, an (H, W, 3) uint8 array or a "
                                           f"tensor, got {type(frame).__name__}")
            return frames, rate, len(frames), None
        raise LatentCodecError("expected a video path, a list of frames, an array or a tensor, "
                               f"got {type(source).__name__}")

    def compress_video_to(self, source, stream, frame_rate=None, progress: bool | None = False, on_frame=None) -> int:
        """Stream ``source`` (path, frames, array or tensor) into a binary ``stream``; returns the
        number of frames. Memory holds one frame at a time when ``source`` is a path. ``progress``
        True shows a per-frame bar, None shows it on a terminal only."""
        from tqdm import tqdm

        frames, rate, count, close = self._frame_source(source, frame_rate)
        bar = tqdm(total=count or None, unit="frame", desc="compress", disable=_tqdm_disable(progress), file=sys.stderr)

        def report(stats) -> None:
            bar.update(1)
            bar.set_postfix_str(f"{'I' if stats.intra else 'P'} {stats.unit_bytes} B", refresh=False)
            if on_frame is not None:
                on_frame(stats)

        try:
            return self.model.encode_sequence(frames, stream, self.quality, self.intra_quality, rate, count,
                                              on_frame=report)
        finally:
            bar.close()
            if close is not None:
                close()

    def compress_video(self, source, frame_rate=None, progress: bool | None = False, on_frame=None) -> bytes:
        """The whole sequence file as bytes."""
        buffer = io.BytesIO()
        self.compress_video_to(source, buffer, frame_rate, progress, on_frame)
        return buffer.getvalue()

    # -- decompression -----------------------------------------------------------------------
    def iter_decompress_video(self, data, progress: bool | None = False) -> Iterator[Image.Image]:
        """Decoded frames one by one from bytes, a path or a binary stream (bounded memory)."""
        from tqdm import tqdm

        owned = None
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            if not path.is_file():
                raise LatentCodecError(f"{path}: no such file")
            data = owned = open(path, "rb")
        elif isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, bytes) and not hasattr(data, "read"):
            raise LatentCodecError(f"expected bytes, a path or a binary stream, got {type(data).__name__}")
        try:
            frames = self.model.decode_sequence(data)
            with tqdm(unit="frame", desc="decompress", disable=_tqdm_disable(progress), file=sys.stderr) as bar:
                for frame in frames:
                    bar.update(1)
                    yield tensor_to_pil(frame)
        finally:
            if owned is not None:
                owned.close()

    def read_header(self, data):
        return self.model.read_header(data)

    def decompress_video(self, data) -> list[Image.Image]:
        return list(self.iter_decompress_video(data))

    def __repr__(self) -> str:
        return (f"VideoCodec({self.name!r}, quality={self.quality}, intra_quality={self.intra_quality}, "
                f"weights={self.weights_source!r})")

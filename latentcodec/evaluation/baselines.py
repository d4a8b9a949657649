"""Classical image codecs as evaluation baselines, with the same rate accounting as ours.

Every baseline turns an RGB image into the bytes of one real file, and counts all of them:

==========  =============================================================  ==================
name        encoder                                                        rate parameter
==========  =============================================================  ==================
``jpeg``    Pillow/libjpeg, 4:2:0, optimised Huffman tables, baseline      quality 1..100
``webp``    Pillow/libwebp, lossy, method 6                                quality 0..100
``avif``    Pillow/libavif (AV1 intra), speed 6, 4:2:0                      quality 0..100
``jxl``     ``cjxl``/``djxl`` (libjxl), effort 7                           distance 25..0.1
``hevc``    ``ffmpeg`` + libx265 Main 4:4:4 intra, preset medium, fixed QP  qp 51..0
==========  =============================================================  ==================

For HEVC the counted bytes are the **raw Annex-B bitstream** (VPS/SPS/PPS and slice NAL units;
x265's informational SEI is switched off), never a container. The RGB <-> YCbCr conversion is
BT.709 full range, done by ffmpeg on both sides.

**Downscaled modes.** ``encode_scaled(codec, image, value, s)`` encodes the image bicubically
downscaled by ``s`` (to ``round(W/s) x round(H/s)``); ``decode_scaled`` decodes it and upscales it
back to the original size, again with Pillow's bicubic filter. This reaches rates far below the
codec's lowest quality. The decoder needs (H, W, s): this side information is **not** counted in the
file (a few bytes, in the baseline's favour). An input smaller than an encoder accepts (x265 needs
16 x 16) is edge-padded before encoding and cropped after decoding.

**Largest file not above a size.** ``encode_at_most`` searches each scale's parameter range by
bisection (file size grows monotonically with quality for all five encoders, up to rare one-byte
wobbles) and returns the largest file found that is not larger than the limit.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import PIL
from PIL import Image, UnidentifiedImageError, features

from latentcodec.errors import BitstreamError, InputError, LatentCodecError

RESAMPLE_FILTER = Image.Resampling.BICUBIC


class BaselineError(LatentCodecError):
    """A classical encoder or decoder (an external tool or a Pillow plugin) failed."""


@dataclass(frozen=True)
class ClassicalCodec:
    """One classical codec. ``search_values`` run from the smallest file to the largest."""

    name: str
    extension: str
    parameter: str
    search_values: tuple[float, ...]
    default_values: tuple[float, ...]
    min_side: int = 1
    description: str = ""

    def unavailable_reason(self) -> str | None:
        """None when usable here, else a one-line reason."""
        raise NotImplementedError

    def encode_rgb(self, image: Image.Image, value: float) -> bytes:
        raise NotImplementedError

    def decode_rgb(self, data: bytes, size: tuple[int, int]) -> Image.Image:
        raise NotImplementedError

    def format_value(self, value: float) -> str:
        return f"{self.parameter}-{_format_number(value)}"

    def check_value(self, value: float) -> float:
        low, high = min(self.search_values), max(self.search_values)
        if not low <= value <= high:
            raise InputError(f"{self.name}: {self.parameter} {value:g} is outside [{low:g}, {high:g}]")
        return value


@dataclass(frozen=True)
class PillowCodec(ClassicalCodec):
    pillow_format: str = ""
    feature: str = ""
    save_options: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    def unavailable_reason(self) -> str | None:
        if self.feature and not features.check(self.feature):
            return f"Pillow {PIL.__version__} was built without {self.feature} support"
        return None

    def encode_rgb(self, image: Image.Image, value: float) -> bytes:
        buffer = io.BytesIO()
        options = dict(self.save_options)
        options["quality"] = int(value)
        try:
            image.save(buffer, self.pillow_format, **options)
        except (OSError, ValueError) as exc:
            raise BaselineError(f"{self.name}: encoding failed ({exc})") from None
        return buffer.getvalue()

    def decode_rgb(self, data: bytes, size: tuple[int, int]) -> Image.Image:
        try:
            with Image.open(io.BytesIO(data), formats=[self.pillow_format]) as decoded:
                decoded.load()
                image = decoded.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise BitstreamError(f"{self.name}: undecodable file ({exc})") from None
        return _check_size(self.name, image, size)


@dataclass(frozen=True)
class JpegXlCodec(ClassicalCodec):
    effort: int = 7

    def unavailable_reason(self) -> str | None:
        missing = [tool for tool in ("cjxl", "djxl") if shutil.which(tool) is None]
        if missing:
            return f"{' and '.join(missing)} not found on PATH (Debian: apt-get install libjxl-tools)"
        return None

    def encode_rgb(self, image: Image.Image, value: float) -> bytes:
        with tempfile.TemporaryDirectory(prefix="lc-jxl-") as tmp:
            source, target = os.path.join(tmp, "in.ppm"), os.path.join(tmp, "out.jxl")
            image.save(source, "PPM")
            _run_tool(self.name, ["cjxl", source, target, "-d", _format_number(value), "-e", str(self.effort), "--quiet"])
            with open(target, "rb") as f:
                return f.read()

    def decode_rgb(self, data: bytes, size: tuple[int, int]) -> Image.Image:
        with tempfile.TemporaryDirectory(prefix="lc-jxl-") as tmp:
            source, target = os.path.join(tmp, "in.jxl"), os.path.join(tmp, "out.ppm")
            with open(source, "wb") as f:
                f.write(data)
            _run_tool(self.name, ["djxl", source, target, "--quiet"], error=BitstreamError)
            with Image.open(target) as decoded:
                decoded.load()
                image = decoded.convert("RGB")
        return _check_size(self.name, image, size)


@dataclass(frozen=True)
class HevcCodec(ClassicalCodec):
    preset: str = "medium"

    def unavailable_reason(self) -> str | None:
        return ffmpeg_encoder_problem("libx265")

    def encode_rgb(self, image: Image.Image, value: float) -> bytes:
        width, height = image.size
        command = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-i", "-",
            "-vf", "scale=out_color_matrix=bt709:out_range=full,format=yuv444p",
            "-c:v", "libx265", "-preset", self.preset,
            "-x265-params", f"qp={int(value)}:keyint=1:info=0:log-level=error",
            "-frames:v", "1", "-f", "hevc", "-",
        ]  # fmt: skip
        return _run_tool(self.name, command, stdin=np.asarray(image, dtype=np.uint8).tobytes())

    def decode_rgb(self, data: bytes, size: tuple[int, int]) -> Image.Image:
        command = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "hevc", "-i", "-",
            "-vf", "scale=in_color_matrix=bt709:in_range=full,format=rgb24",
            "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
        ]  # fmt: skip
        raw = _run_tool(self.name, command, stdin=data, error=BitstreamError)
        width, height = size
        if len(raw) != width * height * 3:
            raise BitstreamError(f"{self.name}: decoded {len(raw)} bytes, expected a {width}x{height} RGB frame")
        return Image.fromarray(np.frombuffer(raw, np.uint8).reshape(height, width, 3), "RGB")

    def format_value(self, value: float) -> str:
        return f"qp-{int(value)}"


def _jxl_distances() -> tuple[float, ...]:
    # Geometric steps: equal relative changes of distance give roughly equal changes of size.
    return tuple(sorted({round(float(d), 3) for d in np.geomspace(25.0, 0.1, 64)}, reverse=True))


BASELINES: dict[str, ClassicalCodec] = {
    codec.name: codec
    for codec in (
        PillowCodec(
            name="jpeg", extension="jpg", parameter="quality",
            search_values=tuple(range(1, 101)), default_values=(1, 3, 5, 10, 20, 40, 70, 90),
            description="JPEG (Pillow/libjpeg, 4:2:0, optimised Huffman)",
            pillow_format="JPEG", feature="jpg", save_options=(("optimize", True), ("subsampling", 2)),
        ),
        PillowCodec(
            name="webp", extension="webp", parameter="quality",
            search_values=tuple(range(0, 101)), default_values=(0, 5, 10, 20, 40, 60, 80, 95),
            description="WebP lossy (Pillow/libwebp, method 6)",
            pillow_format="WEBP", feature="webp", save_options=(("method", 6),),
        ),
        PillowCodec(
            name="avif", extension="avif", parameter="quality",
            search_values=tuple(range(0, 101)), default_values=(0, 5, 10, 20, 35, 50, 70, 90),
            description="AVIF (Pillow/libavif AV1 intra, speed 6, 4:2:0)",
            pillow_format="AVIF", feature="avif", save_options=(("speed", 6), ("subsampling", "4:2:0")),
        ),
        JpegXlCodec(
            name="jxl", extension="jxl", parameter="distance",
            search_values=_jxl_distances(), default_values=(25, 15, 10, 6, 3, 1.5, 1, 0.5),
            description="JPEG XL (cjxl/djxl, effort 7)",
        ),
        HevcCodec(
            name="hevc", extension="hevc", parameter="qp",
            search_values=tuple(range(51, -1, -1)), default_values=(51, 47, 43, 39, 35, 31, 27, 22),
            min_side=16, description="HEVC intra (ffmpeg/libx265 Main 4:4:4, raw Annex-B bitstream)",
        ),
    )  # fmt: skip
}


def get_baseline(name: str) -> ClassicalCodec:
    try:
        return BASELINES[name]
    except KeyError:
        raise InputError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})") from None


def baseline_availability() -> dict[str, str | None]:
    """Every baseline's name -> None if usable here, else a one-line reason."""
    return {name: codec.unavailable_reason() for name, codec in BASELINES.items()}


# -- downscaled encoding -------------------------------------------------------------------


def scaled_size(size: tuple[int, int], scale: int) -> tuple[int, int]:
    """The encoded size of an image of ``size`` (W, H) at downscale factor ``scale``."""
    width, height = size
    return max(1, math.floor(width / scale + 0.5)), max(1, math.floor(height / scale + 0.5))


def _padded_size(size: tuple[int, int], min_side: int) -> tuple[int, int]:
    return max(size[0], min_side), max(size[1], min_side)


def encode_scaled(codec: ClassicalCodec, image: Image.Image, value: float, scale: int) -> bytes:
    """The file of ``image`` downscaled by ``scale`` at parameter ``value``."""
    small = image if scale == 1 else image.resize(scaled_size(image.size, scale), RESAMPLE_FILTER)
    padded_size = _padded_size(small.size, codec.min_side)
    if padded_size != small.size:
        pixels = np.asarray(small)
        pad = ((0, padded_size[1] - small.size[1]), (0, padded_size[0] - small.size[0]), (0, 0))
        small = Image.fromarray(np.pad(pixels, pad, mode="edge"), "RGB")
    return codec.encode_rgb(small, value)


def decode_scaled(codec: ClassicalCodec, data: bytes, scale: int, original_size: tuple[int, int]) -> Image.Image:
    """The reconstruction at ``original_size`` of a file written by ``encode_scaled``."""
    small_size = scaled_size(original_size, scale)
    decoded = codec.decode_rgb(data, _padded_size(small_size, codec.min_side))
    if decoded.size != small_size:
        decoded = decoded.crop((0, 0, *small_size))
    if scale == 1:
        return decoded
    return decoded.resize(original_size, RESAMPLE_FILTER)


class SizedFile(NamedTuple):
    """A file found by ``encode_at_most``: its bytes, the parameter and scale that made it."""

    data: bytes
    value: float
    scale: int
    encode_s: float


class SizeSearch(NamedTuple):
    """Outcome of ``encode_at_most``: ``best`` is None when even the smallest file is too large."""

    best: SizedFile | None
    smallest_bytes: int
    encodes: int
    search_s: float


def encode_at_most(
    codec: ClassicalCodec, image: Image.Image, max_bytes: int, scales: tuple[int, ...] = (1,)
) -> SizeSearch:
    """The largest file of ``image`` not above ``max_bytes``, over all parameters and ``scales``."""
    return search_at_most(
        lambda value, scale: encode_scaled(codec, image, value, scale), codec.search_values, max_bytes, scales
    )


def search_at_most(
    encode: Callable[[float, int], bytes],
    values: Sequence[float],
    max_bytes: int,
    scales: Sequence[int] = (1,),
) -> SizeSearch:
    """The largest ``encode(value, scale)`` not above ``max_bytes``, by bisection over ``values``.

    ``values`` run from the smallest file to the largest; any codec (an image, a video) can be searched.
    """
    start = time.perf_counter()
    best: SizedFile | None = None
    smallest = math.inf
    encodes = 0
    for scale in scales:
        cache: dict[int, SizedFile] = {}

        def size_at(index: int) -> int:
            nonlocal encodes
            if index not in cache:
                t0 = time.perf_counter()
                data = encode(values[index], scale)
                cache[index] = SizedFile(data, values[index], scale, time.perf_counter() - t0)
                encodes += 1
            return len(cache[index].data)

        low_size = size_at(0)
        smallest = min(smallest, low_size)
        if low_size > max_bytes:
            continue
        # Invariant: values[low] fits; values[high] does not (or high is one past the end).
        low, high = 0, len(values)
        while high - low > 1:
            middle = (low + high) // 2
            if size_at(middle) <= max_bytes:
                low = middle
            else:
                high = middle
        candidate = cache[low]
        if best is None or len(candidate.data) > len(best.data):
            best = candidate
    return SizeSearch(best, int(smallest), encodes, time.perf_counter() - start)


# -- helpers -----------------------------------------------------------------------------


def _check_size(name: str, image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size != tuple(size):
        raise BitstreamError(f"{name}: decoded size {image.size[0]}x{image.size[1]}, expected {size[0]}x{size[1]}")
    return image


def _run_tool(name: str, command: list[str], stdin: bytes | None = None, error: type = BaselineError) -> bytes:
    try:
        completed = subprocess.run(command, input=stdin, capture_output=True, check=False)
    except OSError as exc:
        raise BaselineError(f"{name}: cannot run {command[0]} ({exc.strerror})") from None
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.decode(errors="replace").splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit status {completed.returncode}"
        raise error(f"{name}: {command[0]} failed: {detail}")
    return completed.stdout


@lru_cache(maxsize=8)
def ffmpeg_encoder_problem(encoder: str) -> str | None:
    """None when ``ffmpeg`` is on PATH and lists ``encoder`` (e.g. libx264), else a one-line reason."""
    if shutil.which("ffmpeg") is None:
        return "ffmpeg not found on PATH (Debian: apt-get install ffmpeg)"
    try:
        listing = subprocess.run(
            ["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, check=False, timeout=30
        ).stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ffmpeg does not run ({exc})"
    if encoder not in listing.split():
        return f"this ffmpeg has no {encoder} encoder"
    return None


def _format_number(value: float) -> str:
    return f"{value:g}"

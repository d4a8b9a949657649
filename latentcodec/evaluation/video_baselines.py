"""x264 and x265 as video baselines, through ``ffmpeg``, with the same rate accounting as ours.

=========  ==========================================================================  ===============
name       encoder (ffmpeg)                                                            rate parameter
=========  ==========================================================================  ===============
``x264``   libx264, preset medium, 4:2:0 8-bit, no B-frames, GOP = intra period          crf 51..0
``x265``   libx265, preset medium, 4:2:0 8-bit (Main), no B-frames, GOP = intra period   crf 51..0
=========  ==========================================================================  ===============

Both code the frames in display order as I P P P ... (``-bf 0``: low delay, like GLC-video), with
an I-frame every ``intra_period`` frames (the model's, 96 by default; 0 = only the first frame),
no scene-cut I-frames and a single thread (``-threads 1``; x265 ``pools=1:frame-threads=1``), so
a file depends only on its inputs. Rate control is constant rate factor; the matched search steps
it by 0.5.

**What is counted.** The raw Annex-B elementary stream (``.264``/``.265``: parameter sets and
slices), never a container. Informational SEI is dropped: x265 with ``info=0``, x264 by ffmpeg's
``filter_units=remove_types=6`` bitstream filter (x264's options string is ~600 bytes, more than a
whole low-rate P-frame). The stream is tagged with the source's matrix and range (VUI, a few bytes).
Per-frame bytes are the access units' sizes as FFmpeg's parser splits the stream (through PyAV);
the parameter sets travel in frame 0's. They add up to the file size.

**Colour.** The encoders get 8-bit 4:2:0 planes (see :mod:`latentcodec.evaluation.videos`), edge-
padded to even sides of at least 64 (:data:`MIN_SIDE`); decoded planes are cropped back and converted to RGB with the
source's conversion (:func:`latentcodec.data.video.yuv420_to_rgb`), never by swscale.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from latentcodec.data.video import YUVConversion, _plane_array, yuv420_to_rgb
from latentcodec.errors import BitstreamError, InputError
from latentcodec.evaluation.baselines import _run_tool, ffmpeg_encoder_problem
from latentcodec.evaluation.videos import Planes, VideoSource, iter_yuv420_planes

# x265 3.5 corrupts its heap (and aborts) on some frames narrower or shorter than 64 pixels; x264
# has no such limit, but one padded input serves both encoders.
MIN_SIDE = 64
CRF_STEP = 0.5
# Constant rate factors from the smallest file to the largest, in steps of CRF_STEP.
CRF_SEARCH_VALUES = tuple(float(v) for v in np.arange(51.0, -CRF_STEP / 2, -CRF_STEP))


@dataclass(frozen=True)
class VideoBaseline:
    """One ffmpeg video encoder. ``search_values`` run from the smallest file to the largest."""

    name: str
    encoder: str
    extension: str
    stream_format: str  # ffmpeg's muxer / demuxer of the raw elementary stream
    default_values: tuple[float, ...]
    description: str
    parameter: str = "crf"
    preset: str = "medium"
    search_values: tuple[float, ...] = CRF_SEARCH_VALUES

    def unavailable_reason(self) -> str | None:
        return ffmpeg_encoder_problem(self.encoder)

    def check_value(self, value: float) -> float:
        if not 0 <= value <= 51:
            raise InputError(f"{self.name}: {self.parameter} {value:g} is outside [0, 51]")
        return value

    def format_value(self, value: float) -> str:
        return f"{self.parameter}-{value:g}"

    def encoder_arguments(self, value: float, keyint: int) -> list[str]:
        raise NotImplementedError

    def encode(self, planes: PlanesFile, value: float, intra_period: int) -> bytes:
        """The elementary stream of the frames in ``planes`` at rate factor ``value``."""
        keyint = intra_period if intra_period > 0 else planes.frames
        range_tag = "pc" if planes.conversion.full_range else "tv"
        matrix_tag = "bt709" if planes.conversion.name.startswith("bt709") else "smpte170m"
        command = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{planes.padded_width}x{planes.padded_height}",
            "-framerate", str(planes.frame_rate), "-i", str(planes.path), "-frames:v", str(planes.frames),
            "-color_range", range_tag, "-colorspace", matrix_tag,
            "-c:v", self.encoder, "-preset", self.preset, "-crf", f"{value:g}",
            *self.encoder_arguments(value, keyint), "-f", self.stream_format, "-",
        ]  # fmt: skip
        return _run_tool(self.name, command)

    def decode(self, data: bytes, source: VideoSource) -> Iterator[np.ndarray]:
        """The frames of a stream written by :meth:`encode`, as (H, W, 3) uint8 RGB."""
        import av

        chroma = ((source.height + 1) // 2, (source.width + 1) // 2)
        count = 0
        try:
            with av.open(io.BytesIO(data), format=self.stream_format) as container:
                for frame in container.decode(video=0):
                    y, u, v = (_plane_array(plane) for plane in frame.planes[:3])
                    y = y[: source.height, : source.width]
                    u, v = u[: chroma[0], : chroma[1]], v[: chroma[0], : chroma[1]]
                    if y.shape != (source.height, source.width) or u.shape != chroma:
                        raise BitstreamError(f"{self.name}: decoded a {frame.width}x{frame.height} frame, "
                                             f"expected {source.width}x{source.height}")  # fmt: skip
                    count += 1
                    yield yuv420_to_rgb(y, u, v, source.conversion)
        except av.error.FFmpegError as exc:
            raise BitstreamError(f"{self.name}: undecodable stream ({exc})") from None
        if count != source.frames:
            raise BitstreamError(f"{self.name}: decoded {count} frames, expected {source.frames}")


@dataclass(frozen=True)
class X264(VideoBaseline):
    def encoder_arguments(self, value: float, keyint: int) -> list[str]:
        return ["-bf", "0", "-g", str(keyint), "-sc_threshold", "0", "-threads", "1",
                "-bsf:v", "filter_units=remove_types=6"]  # fmt: skip


@dataclass(frozen=True)
class X265(VideoBaseline):
    def encoder_arguments(self, value: float, keyint: int) -> list[str]:
        params = f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0:info=0:pools=1:frame-threads=1"
        return ["-x265-params", f"{params}:log-level=error"]


VIDEO_BASELINES: dict[str, VideoBaseline] = {
    codec.name: codec
    for codec in (
        X264(
            name="x264", encoder="libx264", extension="264", stream_format="h264",
            default_values=(51, 47, 43, 39, 35, 31, 27, 23),
            description="x264 (ffmpeg/libx264, preset medium, IPPP, raw Annex-B stream without SEI)",
        ),
        X265(
            name="x265", encoder="libx265", extension="265", stream_format="hevc",
            default_values=(51, 47, 43, 39, 35, 31, 27, 23),
            description="x265 (ffmpeg/libx265 Main, preset medium, IPPP, raw Annex-B stream without SEI)",
        ),
    )  # fmt: skip
}


def get_video_baseline(name: str) -> VideoBaseline:
    try:
        return VIDEO_BASELINES[name]
    except KeyError:
        raise InputError(f"unknown video baseline {name!r} (known: {', '.join(VIDEO_BASELINES)})") from None


# -- input planes and per-frame sizes ------------------------------------------------------


class PlanesFile(NamedTuple):
    """A sequence's 4:2:0 planes in a raw ``yuv420p`` file, padded to what the encoders accept."""

    path: Path
    padded_width: int
    padded_height: int
    frames: int
    frame_rate: str
    conversion: YUVConversion


def padded_size(width: int, height: int) -> tuple[int, int]:
    """Even sides of at least :data:`MIN_SIDE` (4:2:0 needs even sides; x265 fails on tiny frames)."""
    return max(MIN_SIDE, width + width % 2), max(MIN_SIDE, height + height % 2)


def pad_planes(planes: Planes, width: int, height: int) -> Planes:
    """Edge-pad Y to (height, width) and U, V to half of it."""
    y, u, v = planes
    chroma = (height // 2, width // 2)

    def pad(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        extra = ((0, shape[0] - plane.shape[0]), (0, shape[1] - plane.shape[1]))
        return plane if extra == ((0, 0), (0, 0)) else np.pad(plane, extra, mode="edge")

    return pad(y, (height, width)), pad(u, chroma), pad(v, chroma)


def write_planes_file(source: VideoSource, folder: str | Path) -> PlanesFile:
    """``folder/<sequence>.yuv``: the evaluated frames as the encoders' input."""
    width, height = padded_size(source.width, source.height)
    path = Path(folder) / f"{source.ref.sequence_id}.yuv"
    with open(path, "wb") as f:
        for planes in iter_yuv420_planes(source):
            for plane in pad_planes(planes, width, height):
                f.write(np.ascontiguousarray(plane).tobytes())
    rate = source.frame_rate
    return PlanesFile(path, width, height, source.frames, f"{rate.numerator}/{rate.denominator}", source.conversion)


def planes_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="lc-video-eval-")


class FrameSizes(NamedTuple):
    bytes: tuple[int, ...]  # per frame, summing to the file size
    types: tuple[str, ...]  # "I" (a key frame: IDR) or "P" (no B-frames are coded)


def frame_sizes(codec: VideoBaseline, data: bytes) -> FrameSizes:
    """Access-unit sizes and types of a stream (FFmpeg's parser, no decoding); bytes outside the
    units FFmpeg reports (none, in practice) are counted in frame 0."""
    import av

    sizes: list[int] = []
    types: list[str] = []
    try:
        with av.open(io.BytesIO(data), format=codec.stream_format) as container:
            for packet in container.demux(video=0):
                if packet.size:
                    sizes.append(packet.size)
                    types.append("I" if packet.is_keyframe else "P")
    except av.error.FFmpegError as exc:
        raise BitstreamError(f"{codec.name}: unparsable stream ({exc})") from None
    if not sizes:
        raise BitstreamError(f"{codec.name}: the stream holds no frames")
    sizes[0] += len(data) - sum(sizes)
    return FrameSizes(tuple(sizes), tuple(types))

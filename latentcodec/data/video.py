"""Video input and output: y4m, PNG-frame folders and containers (mp4, mkv, ... via PyAV).

Frames travel as HxWx3 uint8 RGB numpy arrays, one at a time, so reading and writing never hold
more than a frame or two whatever the length of the video.

Colour conversion
-----------------
y4m holds 8-bit Y'CbCr 4:2:0 without a matrix tag. We read and write it with **BT.709, full range**
(:data:`BT709_FULL`), the convention of the DCVC/GLC "PNG, BT.709" test sets and of the GLC reference
vectors (../shared/reference/glc/README.md section 3):

* y = Y/255, u = U/255 - 1/2, v = V/255 - 1/2 (no 16-235 scaling), in float64;
* chroma is upsampled x2 bilinearly with **corner-aligned** samples (``scipy.ndimage.zoom(order=1)``:
  output sample o reads input position o (n - 1)/(m - 1));
* R = y + 2(1 - Kr) v, B = y + 2(1 - Kb) u, G = (y - Kr R - Kb B)/(1 - Kr - Kb), Kr = 0.2126, Kb = 0.0722
  (2(1 - Kr) = 1.5748, 2(1 - Kb) = 1.8556);
* clip to [0, 1], then ``rint(255 x)`` (half to even).

Writing inverts the matrix and resamples chroma to ceil(H/2) x ceil(W/2) with the same corner-aligned
bilinear rule (the mirror of reading). In this full-range convention neutral chroma is 127.5, which
rounds (half to even) to 128: grey round-trips with G exact and R, B within one level.
:class:`YUVConversion` also offers BT.601 and limited range for y4m files known to use
them. Containers (decoded by FFmpeg through PyAV) in 8-bit 4:2:0 use the same conversion with the
matrix and range the stream signals (untagged: BT.601, limited range, FFmpeg's default); other pixel
formats are converted by swscale. Containers we write are tagged BT.709 full range (or lossless RGB).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from latentcodec.errors import InputError

Y4M_SUFFIX = ".y4m"
CONTAINER_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
VIDEO_SUFFIXES = (Y4M_SUFFIX, *CONTAINER_SUFFIXES)
FRAME_SUFFIXES = (".png",)
MAX_FRAME_SIDE = 16384
_Y4M_MAGIC = b"YUV4MPEG2"
_MAX_HEADER_LINE = 4096
# Every 8-bit 4:2:0 variant differs only in chroma siting, which this converter does not model.
_Y4M_420 = {"420jpeg", "420paldv", "420mpeg2", "420"}


# -- colour conversion ---------------------------------------------------------------------------
@dataclass(frozen=True)
class YUVConversion:
    """A Y'CbCr <-> R'G'B' matrix (Kr, Kb) and range, for 8-bit samples."""

    name: str
    kr: float
    kb: float
    full_range: bool

    @property
    def kg(self) -> float:
        return 1.0 - self.kr - self.kb

    def normalise(self, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """8-bit planes -> y in [0, 1] and chroma centred on 0 (float64)."""
        if self.full_range:
            return y / 255.0, u / 255.0 - 0.5, v / 255.0 - 0.5
        return (y - 16.0) / 219.0, (u - 128.0) / 224.0, (v - 128.0) / 224.0

    def quantise(self, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.full_range:
            planes = (y * 255.0, (u + 0.5) * 255.0, (v + 0.5) * 255.0)
        else:
            planes = (16.0 + 219.0 * y, 128.0 + 224.0 * u, 128.0 + 224.0 * v)
        return tuple(np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in planes)


BT709_FULL = YUVConversion("bt709-full", 0.2126, 0.0722, True)
BT709_LIMITED = YUVConversion("bt709-limited", 0.2126, 0.0722, False)
BT601_FULL = YUVConversion("bt601-full", 0.299, 0.114, True)
BT601_LIMITED = YUVConversion("bt601-limited", 0.299, 0.114, False)
CONVERSIONS = {c.name: c for c in (BT709_FULL, BT709_LIMITED, BT601_FULL, BT601_LIMITED)}
DEFAULT_CONVERSION = BT709_FULL


def resample_plane(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Corner-aligned bilinear resize of a float plane to (height, width) (scipy.ndimage.zoom, order 1).

    Used both ways: chroma up to the luma size when reading, and down to half size when writing
    (the mirror of reading, which round-trips best: carphone 50.5 dB against 48.5 dB with 2x2 means)."""
    from scipy.ndimage import zoom

    if plane.shape == (height, width):
        return plane
    factors = (height / plane.shape[0], width / plane.shape[1])
    out = zoom(plane, factors, order=1, grid_mode=False, mode="nearest")
    if out.shape != (height, width):  # zoom rounds the output size; never off by more than one
        out = out[:height, :width]
    return out


def yuv420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray,
                  conversion: YUVConversion = DEFAULT_CONVERSION) -> np.ndarray:
    """8-bit planes Y (H, W), U and V (ceil(H/2), ceil(W/2)) -> (H, W, 3) uint8 RGB."""
    height, width = y.shape
    luma, cb, cr = conversion.normalise(y.astype(np.float64), u.astype(np.float64), v.astype(np.float64))
    cb = resample_plane(cb, height, width)
    cr = resample_plane(cr, height, width)
    red = luma + 2.0 * (1.0 - conversion.kr) * cr
    blue = luma + 2.0 * (1.0 - conversion.kb) * cb
    green = (luma - conversion.kr * red - conversion.kb * blue) / conversion.kg
    rgb = np.stack((red, green, blue), axis=-1)
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


upsample_chroma = resample_plane


def rgb_to_yuv420(rgb: np.ndarray, conversion: YUVConversion = DEFAULT_CONVERSION) -> tuple[np.ndarray, ...]:
    """(H, W, 3) uint8 RGB -> 8-bit planes Y (H, W), U, V (ceil(H/2), ceil(W/2))."""
    values = rgb.astype(np.float64) / 255.0
    red, green, blue = values[..., 0], values[..., 1], values[..., 2]
    luma = conversion.kr * red + conversion.kg * green + conversion.kb * blue
    # B - Y and R - Y written as weighted differences, so grey gives exactly zero chroma.
    cb = (conversion.kr * (blue - red) + conversion.kg * (blue - green)) / (2.0 * (1.0 - conversion.kb))
    cr = (conversion.kg * (red - green) + conversion.kb * (red - blue)) / (2.0 * (1.0 - conversion.kr))
    chroma_shape = ((rgb.shape[0] + 1) // 2, (rgb.shape[1] + 1) // 2)
    return conversion.quantise(luma, resample_plane(cb, *chroma_shape), resample_plane(cr, *chroma_shape))


# -- reading -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frame_rate: Fraction
    frame_count: int | None  # None when the source does not say
    source: str


class VideoReader:
    """Iterate to get (H, W, 3) uint8 RGB frames; use as a context manager (closes the source)."""

    info: VideoInfo

    def __iter__(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_size(width: int, height: int, source: str) -> None:
    if not (1 <= width <= MAX_FRAME_SIDE and 1 <= height <= MAX_FRAME_SIDE):
        raise InputError(f"{source}: unsupported frame size {width}x{height} (sides 1..{MAX_FRAME_SIDE})")


def _parse_rate(text: str, source: str) -> Fraction:
    try:
        num, _, den = text.partition(":")
        rate = Fraction(int(num), int(den or 1))
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{source}: bad y4m frame rate F{text}") from None
    if rate <= 0:
        raise InputError(f"{source}: bad y4m frame rate F{text}")
    return rate


class Y4MReader(VideoReader):
    """Streaming 8-bit 4:2:0 y4m reader. ``conversion`` None: BT.709, full range unless the header
    says ``XCOLORRANGE=LIMITED`` (FFmpeg's tag); pass a :class:`YUVConversion` to override."""

    def __init__(self, source: str | os.PathLike | BinaryIO, conversion: YUVConversion | None = None):
        self.conversion = conversion
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise InputError(f"{path}: no such file")
            self.name = str(path)
            self._stream: BinaryIO = open(path, "rb")
            self._owns_stream = True
            total_size = path.stat().st_size
        else:
            self.name = getattr(source, "name", "<stream>")
            self._stream = source
            self._owns_stream = False
            total_size = None
        try:
            self._parse_header(total_size)
        except BaseException:
            self.close()
            raise

    def _parse_header(self, total_size: int | None) -> None:
        line = self._stream.readline(_MAX_HEADER_LINE)
        if not line.startswith(_Y4M_MAGIC + b" ") or not line.endswith(b"\n"):
            raise InputError(f"{self.name}: not a y4m file (no YUV4MPEG2 header line)")
        fields = line[len(_Y4M_MAGIC):].decode("ascii", "replace").split()
        params: dict[str, str] = {}
        for item in fields:
            params.setdefault(item[0], item[1:])
        try:
            width, height = int(params["W"]), int(params["H"])
        except (KeyError, ValueError):
            raise InputError(f"{self.name}: y4m header without a valid W and H") from None
        _check_size(width, height, self.name)
        colour = params.get("C", "420jpeg").lower()
        if colour not in _Y4M_420:
            raise InputError(f"{self.name}: unsupported y4m colour space C{colour} (only 8-bit 4:2:0 is read)")
        if params.get("I", "p") not in ("p", "?"):
            raise InputError(f"{self.name}: interlaced y4m (I{params['I']}) is not supported")
        rate = _parse_rate(params.get("F", "25:1"), self.name)
        if self.conversion is None:
            limited = any(item.upper() == "XCOLORRANGE=LIMITED" for item in fields)
            self.conversion = BT709_LIMITED if limited else BT709_FULL
        self.width, self.height = width, height
        self._luma = width * height
        self._chroma_shape = ((height + 1) // 2, (width + 1) // 2)
        self._frame_bytes = self._luma + 2 * self._chroma_shape[0] * self._chroma_shape[1]
        count = None
        if total_size is not None:
            # Exact when every FRAME line is bare (the common case); otherwise unknown.
            body = total_size - len(line)
            unit = len(b"FRAME\n") + self._frame_bytes
            if body % unit == 0:
                count = body // unit
        self.info = VideoInfo(width, height, rate, count, self.name)

    def read_planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The next frame's Y, U, V planes (uint8), or None at the end of the file."""
        line = self._stream.readline(_MAX_HEADER_LINE)
        if not line:
            return None
        if not line.startswith(b"FRAME") or not line.endswith(b"\n"):
            raise InputError(f"{self.name}: corrupt y4m file (expected a FRAME header)")
        data = self._stream.read(self._frame_bytes)
        if len(data) != self._frame_bytes:
            raise InputError(f"{self.name}: truncated y4m file (a frame has {len(data)} of {self._frame_bytes} bytes)")
        buffer = np.frombuffer(data, dtype=np.uint8)
        chroma = self._chroma_shape[0] * self._chroma_shape[1]
        y = buffer[: self._luma].reshape(self.height, self.width)
        u = buffer[self._luma : self._luma + chroma].reshape(self._chroma_shape)
        v = buffer[self._luma + chroma :].reshape(self._chroma_shape)
        return y, u, v

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            planes = self.read_planes()
            if planes is None:
                return
            yield yuv420_to_rgb(*planes, conversion=self.conversion)

    def close(self) -> None:
        if self._owns_stream and not self._stream.closed:
            self._stream.close()


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class FrameFolderReader(VideoReader):
    """PNG frames of a folder in natural order (im2.png before im10.png)."""

    def __init__(self, folder: str | os.PathLike, frame_rate: Fraction | int = Fraction(25)):
        from latentcodec.data.images import open_image, to_rgb

        self._open = lambda p: np.asarray(to_rgb(open_image(p)), dtype=np.uint8)
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: not a folder")
        self.files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES),
                            key=_natural_key)
        if not self.files:
            raise InputError(f"{folder}: no PNG frames in this folder")
        first = self._open(self.files[0])
        height, width = first.shape[:2]
        _check_size(width, height, str(folder))
        self.info = VideoInfo(width, height, Fraction(frame_rate), len(self.files), str(folder))

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self.files:
            frame = self._open(path)
            if frame.shape[:2] != (self.info.height, self.info.width):
                raise InputError(f"{path}: frame is {frame.shape[1]}x{frame.shape[0]}, the first frame is "
                                 f"{self.info.width}x{self.info.height}")
            yield frame


# FFmpeg's AVColorSpace / AVColorRange codes.
_AVCOL_SPC_BT709 = 1
_AVCOL_SPC_BT601 = (5, 6)  # BT.470BG, SMPTE 170M
_AVCOL_RANGE_JPEG = 2


def _plane_array(plane) -> np.ndarray:
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def container_frame_to_rgb(frame) -> np.ndarray:
    """A decoded PyAV frame -> (H, W, 3) uint8.

    8-bit 4:2:0 frames go through :func:`yuv420_to_rgb` with the matrix and range the frame signals
    (untagged: BT.601 limited, FFmpeg's default; yuvj420p is full range): swscale's own 4:2:0 path
    is biased by about -1.3 levels on R and B (measured on carphone). Other formats use swscale.
    """
    name = frame.format.name
    if name in ("yuv420p", "yuvj420p"):
        full = name == "yuvj420p" or frame.color_range == _AVCOL_RANGE_JPEG
        bt709 = frame.colorspace == _AVCOL_SPC_BT709
        conversion = (BT709_FULL if full else BT709_LIMITED) if bt709 else (BT601_FULL if full else BT601_LIMITED)
        return yuv420_to_rgb(*(_plane_array(p) for p in frame.planes), conversion=conversion)
    return frame.reformat(format="rgb24", src_color_range=frame.color_range or None).to_ndarray()


class ContainerReader(VideoReader):
    """The first video stream of a container (mp4, mkv, ...) decoded by FFmpeg through PyAV."""

    def __init__(self, path: str | os.PathLike):
        import av

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        self.name = str(path)
        try:
            self._container = av.open(str(path))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot open video ({exc})") from None
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{path}: no video stream")
        self._stream = self._container.streams.video[0]
        context = self._stream.codec_context
        _check_size(context.width, context.height, self.name)
        rate = self._stream.average_rate or self._stream.guessed_rate or Fraction(25)
        self.info = VideoInfo(context.width, context.height, Fraction(rate), self._stream.frames or None, self.name)

    def __iter__(self) -> Iterator[np.ndarray]:
        import av

        try:
            for frame in self._container.decode(self._stream):
                if (frame.width, frame.height) != (self.info.width, self.info.height):
                    raise InputError(f"{self.name}: the frame size changes inside the stream")
                yield container_frame_to_rgb(frame)
        except av.error.FFmpegError as exc:
            raise InputError(f"{self.name}: cannot decode video ({exc})") from None

    def close(self) -> None:
        self._container.close()


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def open_video(path: str | os.PathLike, frame_rate: Fraction | int | None = None,
               conversion: YUVConversion | None = None) -> VideoReader:
    """A reader for a y4m file, a container file or a folder of PNG frames (``frame_rate`` then
    sets the rate, 25 by default)."""
    path = Path(path)
    if path.is_dir():
        return FrameFolderReader(path, frame_rate or Fraction(25))
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    suffix = path.suffix.lower()
    if suffix == Y4M_SUFFIX:
        return Y4MReader(path, conversion)
    if suffix in CONTAINER_SUFFIXES:
        return ContainerReader(path)
    raise InputError(f"{path}: not a video (expected {', '.join(VIDEO_SUFFIXES)} or a folder of PNG frames)")


def read_frames(path: str | os.PathLike, limit: int | None = None) -> list[np.ndarray]:
    """All (or the first ``limit``) frames of a video, in memory."""
    frames = []
    with open_video(path) as reader:
        for frame in reader:
            if limit is not None and len(frames) >= limit:
                break
            frames.append(frame)
    return frames


# -- writing -------------------------------------------------------------------------------------
class VideoWriter:
    """write(frame) per (H, W, 3) uint8 RGB frame, then close(); a context manager."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.frames_written = 0

    def _check(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.shape != (self.height, self.width, 3):
            raise ValueError(f"expected a ({self.height}, {self.width}, 3) uint8 frame, "
                             f"got {frame.shape} {frame.dtype}")
        return frame

    def write(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _y4m_rate(rate: Fraction) -> str:
    rate = Fraction(rate).limit_denominator(1 << 20)
    return f"{rate.numerator}:{rate.denominator}"


class Y4MWriter(VideoWriter):
    """8-bit 4:2:0 y4m (C420jpeg, tagged full range), converted with ``conversion``."""

    def __init__(self, target: str | os.PathLike | BinaryIO, width: int, height: int,
                 frame_rate: Fraction | int = Fraction(25), conversion: YUVConversion = DEFAULT_CONVERSION):
        super().__init__(width, height)
        self.conversion = conversion
        if isinstance(target, (str, os.PathLike)):
            self._stream: BinaryIO = open(target, "wb")
            self._owns_stream = True
        else:
            self._stream = target
            self._owns_stream = False
        colour_range = "FULL" if conversion.full_range else "LIMITED"
        header = f"YUV4MPEG2 W{width} H{height} F{_y4m_rate(frame_rate)} Ip A1:1 C420jpeg XCOLORRANGE={colour_range}\n"
        self._stream.write(header.encode("ascii"))

    def write(self, frame: np.ndarray) -> None:
        planes = rgb_to_yuv420(self._check(frame), self.conversion)
        self._stream.write(b"FRAME\n")
        for plane in planes:
            self._stream.write(np.ascontiguousarray(plane).tobytes())
        self.frames_written += 1

    def close(self) -> None:
        if self._owns_stream and not self._stream.closed:
            self._stream.close()


class FrameFolderWriter(VideoWriter):
    """frame_000000.png, frame_000001.png, ... in a folder."""

    def __init__(self, folder: str | os.PathLike, width: int, height: int, prefix: str = "frame_"):
        super().__init__(width, height)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix

    def frame_path(self, index: int) -> Path:
        return self.folder / f"{self.prefix}{index:06d}.png"

    def write(self, frame: np.ndarray) -> None:
        from PIL import Image

        Image.fromarray(self._check(frame), mode="RGB").save(self.frame_path(self.frames_written), format="PNG")
        self.frames_written += 1


class ContainerWriter(VideoWriter):
    """H.264 through PyAV: lossless RGB (libx264rgb, qp 0) or high quality (libx264, CRF ``crf``,
    4:2:0 with BT.709 full-range tags; 4:4:4 when a side is odd, which 4:2:0 cannot hold)."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, frame_rate: Fraction | int = Fraction(25),
                 lossless: bool = False, crf: int = 12):
        import av

        super().__init__(width, height)
        self._container = av.open(str(path), "w")
        rate = Fraction(frame_rate).limit_denominator(1 << 16)
        if lossless:
            self._stream = self._container.add_stream("libx264rgb", rate=rate)
            self._stream.pix_fmt = "rgb24"
            self._stream.options = {"qp": "0", "preset": "medium"}
            self._reformat = {}
        else:
            self._stream = self._container.add_stream("libx264", rate=rate)
            self._stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            self._stream.options = {"crf": str(int(crf)), "preset": "medium"}
            context = self._stream.codec_context
            context.color_range = 2  # JPEG / full
            context.colorspace = 1  # BT.709
            context.color_primaries = 1
            context.color_trc = 1
            self._reformat = {"dst_colorspace": "itu709", "dst_color_range": "JPEG"}
        self._stream.width, self._stream.height = width, height

    def write(self, frame: np.ndarray) -> None:
        import av

        video_frame = av.VideoFrame.from_ndarray(self._check(frame), format="rgb24")
        if self._reformat:
            video_frame = video_frame.reformat(format=self._stream.pix_fmt, **self._reformat)
            video_frame.color_range = 2
            video_frame.colorspace = 1
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None


def open_video_writer(path: str | os.PathLike, width: int, height: int, frame_rate: Fraction | int = Fraction(25),
                      lossless: bool = False) -> VideoWriter:
    """By target: ``*.y4m``, a container suffix (mp4, mkv, ...), or anything else = a folder of PNGs."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == Y4M_SUFFIX:
        return Y4MWriter(path, width, height, frame_rate)
    if suffix in CONTAINER_SUFFIXES:
        return ContainerWriter(path, width, height, frame_rate, lossless=lossless)
    return FrameFolderWriter(path, width, height)


def frame_to_tensor(frame: np.ndarray):
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    import torch

    # A copy: frames are often read-only views (np.frombuffer, PIL), which torch will not wrap.
    return torch.from_numpy(np.array(frame, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def tensor_to_frame(x) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) in [0, 1] -> (H, W, 3) uint8 (round half to even, as the reference)."""
    from latentcodec.data.images import tensor_to_uint8

    return tensor_to_uint8(x)


__all__ = [
    "BT601_FULL", "BT601_LIMITED", "BT709_FULL", "BT709_LIMITED", "CONVERSIONS", "CONTAINER_SUFFIXES",
    "ContainerReader", "ContainerWriter", "DEFAULT_CONVERSION", "FrameFolderReader", "FrameFolderWriter",
    "VIDEO_SUFFIXES", "VideoInfo", "VideoReader", "VideoWriter", "Y4MReader", "Y4MWriter", "YUVConversion",
    "frame_to_tensor", "is_video_path", "open_video", "open_video_writer", "read_frames", "rgb_to_yuv420",
    "resample_plane", "tensor_to_frame", "upsample_chroma", "yuv420_to_rgb",
]

"""Finding and reading the evaluation videos.

``--data`` for a video evaluation is one video (a ``.y4m`` file, a container such as ``.mp4``, or a
folder of PNG frames), or a folder of them: its video files and its sub-folders of PNG frames, one
level deep, sorted by name. A folder that holds PNG files directly is one PNG-frame sequence.

Each sequence is evaluated on its first ``--frames`` frames (all by default), as 8-bit RGB frames
read by :mod:`latentcodec.data.video` (y4m: BT.709 full range unless tagged limited). Classical
codecs get 8-bit 4:2:0 planes instead: a y4m's own planes (no colour round-trip), or for other
sources the RGB frames converted with :func:`~latentcodec.data.video.rgb_to_yuv420`, BT.709 full
range. Their decoded planes go back to RGB with the same conversion, so the reference frames and
every reconstruction share one colour pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np

from latentcodec.data.video import (
    DEFAULT_CONVERSION,
    FRAME_SUFFIXES,
    FrameFolderReader,
    Y4MReader,
    YUVConversion,
    is_video_path,
    open_video,
    rgb_to_yuv420,
)
from latentcodec.errors import InputError
from latentcodec.evaluation.learned import safe_name

Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


class SequenceRef(NamedTuple):
    """One evaluation sequence: ``sequence_id`` is unique in the set and safe as a file name."""

    sequence_id: str
    path: Path


class VideoSource(NamedTuple):
    """A probed sequence: its size, the number of frames evaluated, and its YCbCr conversion."""

    ref: SequenceRef
    width: int
    height: int
    frames: int
    frame_rate: Fraction
    conversion: YUVConversion

    @property
    def pixels(self) -> int:
        """H x W x frames: the denominator of the sequence's bpp."""
        return self.width * self.height * self.frames


def _has_frames(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in FRAME_SUFFIXES for p in folder.iterdir())


def looks_like_video_data(data: str | Path) -> bool:
    """A video file, or a folder holding video files or sub-folders of PNG frames.

    A folder of PNG files alone is ambiguous (images, or the frames of one video); it counts as
    video only when the model or a baseline says so.
    """
    root = Path(data)
    if root.is_file():
        return is_video_path(root)
    if not root.is_dir():
        return False
    return any((p.is_file() and is_video_path(p)) or (p.is_dir() and _has_frames(p)) for p in root.iterdir())


def discover_sequences(data: str | Path) -> list[SequenceRef]:
    """The sequences of ``data``, or an InputError saying why there are none."""
    root = Path(data)
    if not root.exists():
        raise InputError(f"--data {root}: no such file or directory")
    if root.is_file():
        if not is_video_path(root):
            raise InputError(f"--data {root}: not a video file (.y4m, .mp4, .mkv, ... or a folder of PNG frames)")
        return [SequenceRef(safe_name(root.stem), root)]
    entries = sorted(
        (p for p in root.iterdir() if (p.is_file() and is_video_path(p)) or (p.is_dir() and _has_frames(p))),
        key=lambda p: p.name,
    )
    if not entries:
        if _has_frames(root):
            return [SequenceRef(safe_name(root.name), root)]
        raise InputError(f"--data {root}: no videos (.y4m, .mp4, ...) or folders of PNG frames in this folder")
    refs: list[SequenceRef] = []
    seen: set[str] = set()
    for path in entries:
        sequence_id = safe_name(path.stem if path.is_file() else path.name)
        if sequence_id in seen:  # clip.y4m beside clip.mp4 or a folder clip/
            sequence_id = safe_name(path.name + ("_frames" if path.is_dir() else ""))
        seen.add(sequence_id)
        refs.append(SequenceRef(sequence_id, path))
    return refs


def probe_sequence(ref: SequenceRef, limit: int | None) -> VideoSource:
    """Size, frame rate, conversion and the number of frames to evaluate (at most ``limit``)."""
    with open_video(ref.path) as reader:
        info = reader.info
        conversion = reader.conversion if isinstance(reader, Y4MReader) else DEFAULT_CONVERSION
        count = info.frame_count if isinstance(reader, (Y4MReader, FrameFolderReader)) else None
        if count is None:  # a container's count is a guess: decode (up to the limit) and count
            count = 0
            for _ in reader:
                count += 1
                if limit is not None and count >= limit:
                    break
    frames = count if limit is None else min(count, limit)
    if frames < 1:
        raise InputError(f"{ref.path}: the video has no frames")
    return VideoSource(ref, info.width, info.height, frames, info.frame_rate, conversion)


def iter_rgb_frames(source: VideoSource) -> Iterator[np.ndarray]:
    """The evaluated frames of ``source``, (H, W, 3) uint8 RGB, one at a time."""
    with open_video(source.ref.path) as reader:
        count = 0
        for frame in reader:
            if count == source.frames:
                return
            count += 1
            yield frame
    if count != source.frames:
        raise InputError(f"{source.ref.path}: {count} frames, {source.frames} were expected")


def iter_yuv420_planes(source: VideoSource) -> Iterator[Planes]:
    """The evaluated frames as 8-bit 4:2:0 planes: a y4m's own, else RGB converted (BT.709 full)."""
    if source.ref.path.suffix.lower() != ".y4m":
        for frame in iter_rgb_frames(source):
            yield rgb_to_yuv420(frame, source.conversion)
        return
    with Y4MReader(source.ref.path, source.conversion) as reader:
        for _ in range(source.frames):
            planes = reader.read_planes()
            if planes is None:
                raise InputError(f"{source.ref.path}: fewer than {source.frames} frames")
            yield planes

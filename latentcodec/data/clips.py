"""Training clips for P-frame training: short runs of consecutive frames, cropped alike.

Two sources, mixed in one dataset:

* real video: PNG-frame folders (Vimeo septuplets) and video files (y4m, mp4, ...), read once into
  memory as uint8; a clip is ``clip_length`` consecutive frames from a random start, one crop
  window for all of them, flipped left-right and played backwards half the time each;
* synthetic motion over still photos: a crop window that pans (sub-pixel) and zooms slightly from
  frame to frame. The few real clips we have would be seen hundreds of times in a short run;
  the 712 photos add content diversity with plausible global motion.

Samples are pure functions of their ``SampleKey`` (see ``latentcodec.data.crops``), so runs resume
exactly and any number of loader workers sees the same clips.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from latentcodec.data.crops import SampleKey, find_images
from latentcodec.data.video import is_video_path, read_frames
from latentcodec.errors import ConfigError


def find_sequences(sources: Sequence[str | os.PathLike], clip_length: int) -> list[np.ndarray]:
    """Every sequence under ``sources`` as a (T, H, W, 3) uint8 array: a source is a video file, a
    folder of PNG frames, or a folder holding such folders/files (one level). Sequences shorter
    than ``clip_length`` are skipped."""
    sequences: list[np.ndarray] = []
    for source in sources:
        root = Path(os.path.expandvars(os.path.expanduser(str(source))))
        if not root.exists():
            raise ConfigError(f"training video source {root} does not exist")
        for item in _sequence_items(root):
            frames = read_frames(item)
            if len(frames) >= clip_length:
                sequences.append(np.stack(frames))
    return sequences


def _sequence_items(root: Path) -> list[Path]:
    if root.is_file():
        return [root] if is_video_path(root) else []
    if any(p.suffix.lower() == ".png" for p in root.iterdir()):
        return [root]
    return sorted(p for p in root.iterdir() if (p.is_dir() or is_video_path(p)))


class ClipDataset(Dataset):
    """(T, 3, crop, crop) float clips in [0, 1] from real sequences and panned still photos.

    ``real_share`` is the fraction of dataset items that are real clips (the rest synthetic);
    with no photos every item is real, with no sequences every item synthetic.
    """

    def __init__(self, sequences: Sequence[np.ndarray], photos: Sequence[Path], clip_length: int, crop_size: int,
                 real_share: float = 0.5, max_motion: float = 6.0, max_zoom: float = 0.02):
        if clip_length < 2:
            raise ConfigError("clip_length must be at least 2 (an I-frame and a P-frame)")
        if not sequences and not photos:
            raise ConfigError("no training clips: neither video sequences nor photos were found")
        self.sequences = [s for s in sequences]
        self.photos = list(photos)
        self.clip_length = clip_length
        self.crop_size = crop_size
        self.max_motion = max_motion
        self.max_zoom = max_zoom
        if not self.photos:
            self.real_items = max(len(self.sequences), 1)
        elif not self.sequences:
            self.real_items = 0
        else:
            share = min(max(real_share, 0.0), 0.95)
            self.real_items = max(len(self.sequences), round(len(self.photos) * share / (1.0 - share)))

    def __len__(self) -> int:
        return self.real_items + len(self.photos)

    def __getitem__(self, key: SampleKey) -> torch.Tensor:
        rng = np.random.default_rng(key.augment_seed)
        if key.index < self.real_items:
            clip = self._real_clip(self.sequences[key.index % len(self.sequences)], rng)
        else:
            clip = self._synthetic_clip(self.photos[key.index - self.real_items], rng)
        return torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float().div_(255.0)

    def _real_clip(self, sequence: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        frames, height, width = sequence.shape[:3]
        start = int(rng.integers(0, frames - self.clip_length + 1))
        clip = sequence[start : start + self.clip_length]
        if min(height, width) < self.crop_size:
            clip = np.stack([_enlarge(frame, self.crop_size) for frame in clip])
            height, width = clip.shape[1:3]
        top = int(rng.integers(0, height - self.crop_size + 1))
        left = int(rng.integers(0, width - self.crop_size + 1))
        clip = clip[:, top : top + self.crop_size, left : left + self.crop_size]
        if rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        if rng.random() < 0.5:
            clip = clip[::-1]
        return clip

    def _synthetic_clip(self, path: Path, rng: np.random.Generator) -> np.ndarray:
        with Image.open(path) as image:
            image = image.convert("RGB")
        # Room for the whole path: the window may drift by max_motion per frame and grow by max_zoom.
        travel = self.max_motion * (self.clip_length - 1)
        span = self.crop_size * (1.0 + self.max_zoom) ** (self.clip_length - 1) + 2 * travel + 2
        if min(image.size) < span:
            scale = span / min(image.size)
            image = image.resize((int(np.ceil(image.width * scale)), int(np.ceil(image.height * scale))), Image.BICUBIC)
        velocity = rng.uniform(-self.max_motion, self.max_motion, size=2)
        zoom = float(np.exp(rng.uniform(-1.0, 1.0) * np.log1p(self.max_zoom)))
        centre = np.array([
            rng.uniform(span / 2, image.width - span / 2),
            rng.uniform(span / 2, image.height - span / 2),
        ])
        frames = []
        for t in range(self.clip_length):
            side = self.crop_size * zoom**t
            cx, cy = centre + velocity * t
            scale = side / self.crop_size
            # PIL's affine maps output (x, y) to input (a x + b y + c, d x + e y + f).
            coefficients = (scale, 0.0, cx - side / 2, 0.0, scale, cy - side / 2)
            frame = image.transform((self.crop_size, self.crop_size), Image.AFFINE, coefficients, Image.BILINEAR)
            frames.append(np.asarray(frame, dtype=np.uint8))
        clip = np.stack(frames)
        if rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        return clip


def _enlarge(frame: np.ndarray, short_side: int) -> np.ndarray:
    height, width = frame.shape[:2]
    scale = short_side / min(height, width)
    size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BICUBIC))


def build_clip_dataset(video_sources: Sequence[str], photo_dirs: Sequence[str], clip_length: int, crop_size: int,
                       real_share: float, max_motion: float, max_zoom: float) -> ClipDataset:
    sequences = find_sequences(video_sources, clip_length) if video_sources else []
    photos = find_images(photo_dirs) if photo_dirs else []
    return ClipDataset(sequences, photos, clip_length, crop_size, real_share, max_motion, max_zoom)

"""Training data: random crops and flips over image folders, in a resumable, rank-aware order.

The order of samples and every crop position are pure functions of (seed, epoch, position), so a
run restarted from a checkpoint sees exactly the batches the uninterrupted run would have seen,
whatever the number of loader workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from latentcodec.errors import ConfigError

TRAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".ppm", ".tif", ".tiff")


def find_images(folders: Sequence[str | os.PathLike], min_side: int = 0) -> list[Path]:
    """Every image file under the folders (recursively), sorted, optionally at least ``min_side`` px."""
    files: list[Path] = []
    for folder in folders:
        root = Path(os.path.expandvars(os.path.expanduser(str(folder))))
        if not root.is_dir():
            raise ConfigError(f"training data folder {root} does not exist")
        files += sorted(p for p in root.rglob("*") if p.suffix.lower() in TRAIN_SUFFIXES and p.is_file())
    if min_side:
        kept = []
        for path in files:
            with Image.open(path) as image:
                if min(image.size) >= min_side:
                    kept.append(path)
        files = kept
    if not files:
        raise ConfigError(f"no training images (at least {min_side} px) under {', '.join(map(str, folders))}")
    return files


def split_holdout(files: Sequence[Path], count: int) -> tuple[list[Path], list[Path]]:
    """(training files, held-out files): ``count`` evenly spaced files of the sorted list are withheld.

    Evenly spaced rather than the last ``count``, so that a data root with several sub-folders
    (sources of different kinds) contributes to the held-out set from each of them.
    """
    files = list(files)
    if count <= 0:
        return files, []
    if count >= len(files):
        raise ConfigError(f"data.holdout = {count} would withhold all {len(files)} training images")
    held_indices = {(2 * k + 1) * len(files) // (2 * count) for k in range(count)}
    return ([p for i, p in enumerate(files) if i not in held_indices],
            [p for i, p in enumerate(files) if i in held_indices])


class SampleKey(NamedTuple):
    """Which image to read, and the seed of its crop/flip."""

    index: int
    augment_seed: int


class RandomCropDataset(Dataset):
    """(3, crop, crop) float tensors in [0, 1]: a uniformly placed crop, flipped left-right half the time.

    Images smaller than the crop are first enlarged (bicubic) so the short side equals the crop.
    """

    def __init__(self, files: Sequence[Path], crop_size: int, vertical_flip: bool = False):
        self.files = list(files)
        self.crop_size = crop_size
        self.vertical_flip = vertical_flip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: SampleKey) -> torch.Tensor:
        rng = np.random.default_rng(key.augment_seed)
        with Image.open(self.files[key.index]) as image:
            image = image.convert("RGB")
            width, height = image.size
            if min(width, height) < self.crop_size:
                scale = self.crop_size / min(width, height)
                width, height = max(self.crop_size, round(width * scale)), max(self.crop_size, round(height * scale))
                image = image.resize((width, height), Image.BICUBIC)
            left = int(rng.integers(0, width - self.crop_size + 1))
            top = int(rng.integers(0, height - self.crop_size + 1))
            array = np.asarray(image.crop((left, top, left + self.crop_size, top + self.crop_size)), dtype=np.uint8)
        if rng.random() < 0.5:
            array = array[:, ::-1]
        if self.vertical_flip and rng.random() < 0.5:
            array = array[::-1]
        return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).float().div_(255.0)


class ResumableDistributedSampler(Sampler[SampleKey]):
    """A per-epoch shuffled order split across ranks (as DistributedSampler), startable mid-epoch.

    Each rank gets ``ceil(N / world)`` samples per epoch (the shuffled order is wrapped to fill the
    last round), so all ranks run the same number of steps. ``start`` skips that many of this
    rank's samples of the current epoch without reading them: this is how a resumed run continues
    the data order of the run it replaces.
    """

    def __init__(self, dataset_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.dataset_size = dataset_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0
        self.samples_per_rank = math.ceil(dataset_size / world_size)

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.samples_per_rank - self.start

    def __iter__(self) -> Iterator[SampleKey]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.dataset_size, generator=generator).tolist()
        total = self.samples_per_rank * self.world_size
        order = (order * math.ceil(total / self.dataset_size))[:total]
        mine = order[self.rank :: self.world_size]
        for position in range(self.start, self.samples_per_rank):
            global_position = position * self.world_size + self.rank
            augment_seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + global_position
            yield SampleKey(mine[position], augment_seed % (2**63))


class BatchStream:
    """Endless batches over epochs, with a position (epoch, samples into the epoch) to checkpoint."""

    def __init__(self, dataset: RandomCropDataset, batch_size: int, seed: int, rank: int, world_size: int,
                 num_workers: int = 0):
        if batch_size > math.ceil(len(dataset) / world_size):
            raise ConfigError(f"batch size {batch_size} exceeds the {len(dataset)} training images per rank")
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = ResumableDistributedSampler(len(dataset), seed, rank, world_size)
        self.num_workers = num_workers
        self.epoch = 0
        self.position = 0  # samples of this rank consumed in the current epoch
        self._iterator: Iterator[torch.Tensor] | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._iterator = None

    def _start_epoch(self) -> None:
        self.sampler.set_position(self.epoch, self.position)
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=False,
        )
        self._iterator = iter(loader)

    def next_batch(self) -> torch.Tensor:
        while True:
            if self._iterator is None:
                self._start_epoch()
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                self.epoch += 1
                self.position = 0
                continue
            self.position += batch.shape[0]
            return batch

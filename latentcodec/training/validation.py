"""Validation during training: real files at every validated rate, scored on the decoded pixels.

Images: per rate, actual file bpp (``compress``), PSNR, MS-SSIM and the L1 on [-1, 1] that the
checkpoint-selection rule uses. Video: per validated anchor level, bpp over I and P frames and mean
PSNR on the first frames of a clip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latentcodec.training.config import ValidationConfig


def _expand(path: str) -> Path:
    return Path(os.path.expanduser(os.path.expandvars(path)))


def validation_files(config: ValidationConfig, holdout: list[Path]) -> list[Path]:
    """The first ``config.images`` validation images: of the run's held-out training images when
    ``image_dir`` is "holdout", else of that folder (none when it does not exist)."""
    if config.image_dir == "holdout":
        return holdout[: config.images]
    folder = _expand(config.image_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[: config.images]


def describe_validation(config: ValidationConfig, files: list[Path]) -> str:
    source = "held-out training images" if config.image_dir == "holdout" else str(_expand(config.image_dir))
    return f"{len(files)} of {source}"


def load_images(files: list[Path], crop: int) -> list[torch.Tensor]:
    """(1, 3, H, W) tensors in [0, 1], centre-cropped to ``crop`` (0: whole image)."""
    from PIL import Image

    images = []
    for path in files:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        if crop:
            h, w = array.shape[:2]
            top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
            array = array[top : top + crop, left : left + crop]
        images.append(torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0))
    return images


@torch.no_grad()
def validate_images(model: nn.Module, config: ValidationConfig, files: list[Path], device: torch.device,
                    log: Callable[[str], None]) -> dict[str, Any] | None:
    from latentcodec.evaluation.metrics.pixel import MSSSIM, PSNR

    if not files:
        log(f"validation skipped: no images in {config.image_dir}")
        return None
    images = load_images(files, config.crop)
    psnr, msssim = PSNR(), MSSSIM()
    model.eval()
    results: dict[str, Any] = {}
    for q in config.rate_indices:
        bpps, psnrs, ssims, l1s = [], [], [], []
        for x in images:
            data = model.compress(x.to(device), q)
            x_hat = torch.round(model.decompress(data).cpu() * 255) / 255
            bpps.append(8 * len(data) / (x.shape[2] * x.shape[3]))
            psnrs.append(psnr(x[0], x_hat[0]))
            ssims.append(msssim(x[0], x_hat[0]))
            l1s.append(float(2 * (x_hat - x).abs().mean()))  # on [-1, 1], the training losses' range
        results[str(q)] = {"bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs)), "ms_ssim": float(np.mean(ssims)),
                           "l1": float(np.mean(l1s))}
    model.train()
    return results


@torch.no_grad()
def validate_video(model: nn.Module, config: ValidationConfig, device: torch.device,
                   log: Callable[[str], None], anchor_levels: tuple[int, ...]) -> dict[str, Any] | None:
    from latentcodec.data.video import read_frames
    from latentcodec.evaluation.metrics.pixel import PSNR

    path = _expand(config.video)
    if not path.exists():
        log(f"validation skipped: {path} does not exist")
        return None
    frames = [torch.from_numpy(f.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
              for f in read_frames(path, config.frames)]
    psnr = PSNR()
    model.eval()
    results: dict[str, Any] = {}
    for slot in config.rate_indices:
        level = anchor_levels[slot]
        data = model.compress_frames([f.to(device) for f in frames], level)
        decoded = [torch.round(x.cpu() * 255) / 255 for x in model.decode_sequence(data)]
        height, width = frames[0].shape[-2:]
        results[str(level)] = {
            "bpp": 8 * len(data) / (height * width * len(frames)),
            "psnr": float(np.mean([psnr(x[0], y[0]) for x, y in zip(frames, decoded)])),
        }
    model.train()
    return results

"""Image loading and conversion between PIL images and the codecs' [0, 1] tensors."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from latentcodec.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".avif")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file fully, turning every failure into a one-line InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    try:
        # Not a `with` block, whose close() would force a copy of the pixels: load() reads them and
        # closes the file of a single-frame image itself.
        image = Image.open(path)
        try:
            image.load()
        except BaseException:
            image.close()
            raise
        return image if image.mode != "P" else image.convert("RGBA" if "transparency" in image.info else "RGB")
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, warning when information is dropped (alpha, 16-bit depth, greyscale expanded)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        warnings.warn(f"converting {mode} image (more than 8 bits per sample) to 8-bit RGB", stacklevel=2)
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        if mode == "F":
            peak = max(float(array.max()), 1.0) if array.max() > 1.0 else 1.0
        grey = np.clip(np.rint(array / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        warnings.warn(f"dropping the alpha channel of a {mode} image", stacklevel=2)
    elif mode in ("L", "1"):
        warnings.warn(f"converting a greyscale ({mode}) image to RGB", stacklevel=2)
    else:
        warnings.warn(f"converting a {mode} image to RGB", stacklevel=2)
    return image.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    return to_rgb(open_image(path))


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> (1, 3, H, W) float32 in [0, 1]."""
    array = np.array(to_rgb(image), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


# Rows converted at once by tensor_to_uint8: its float intermediates stay this small, so a huge
# decoded image is never copied in full as floats on its way to a file.
UINT8_BAND_ELEMENTS = 2**20


def _uint8_bands(x: torch.Tensor):
    """(1, 3, H, W) or (3, H, W) in [0, 1] -> (top row, HWC uint8 band) pairs, rounding half to
    even as the reference does."""
    if x.dim() == 4:
        x = x[0]
    x = x.detach()
    channels, height, width = x.shape
    band = max(1, UINT8_BAND_ELEMENTS // max(1, channels * width))
    for top in range(0, height, band):
        rows = torch.round(x[:, top : top + band].float().clamp(0, 1) * 255.0).to(torch.uint8)
        yield top, rows.permute(1, 2, 0).cpu().numpy()


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) in [0, 1] -> HWC uint8, rounding half to even as the reference does."""
    channels, height, width = x.shape[-3:]
    out = np.empty((height, width, channels), dtype=np.uint8)
    for top, rows in _uint8_bands(x):
        out[top : top + rows.shape[0]] = rows
    return out


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """An RGB image filled band by band, so the only full-size copy is the image itself."""
    height, width = x.shape[-2:]
    image = Image.new("RGB", (width, height))
    for top, rows in _uint8_bands(x):
        image.paste(Image.fromarray(np.ascontiguousarray(rows), mode="RGB"), (0, top))
    return image


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

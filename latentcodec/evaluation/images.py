"""Finding and reading the evaluation images.

``--data`` is a folder (its image files, not recursive, sorted by name) or a single image file.
Every image is evaluated as 8-bit RGB: an alpha channel is dropped, grey images are expanded.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

from latentcodec.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageRef(NamedTuple):
    """One evaluation image: ``image_id`` is unique in the set and safe as a file name."""

    image_id: str
    path: Path


def discover_images(data: str | Path) -> list[ImageRef]:
    """The images of ``data`` (a folder or one file), or an InputError saying why there are none."""
    root = Path(data)
    if not root.exists():
        raise InputError(f"--data {root}: no such file or directory")
    if root.is_file():
        if root.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"--data {root}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
        return [ImageRef(_safe_id(root.stem), root)]
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"--data {root}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    refs: list[ImageRef] = []
    seen: set[str] = set()
    for path in files:
        image_id = _safe_id(path.stem)
        # kodim01.png and kodim01.jpg side by side would share an id (and a bitstream path).
        if image_id in seen:
            image_id = _safe_id(path.name)
        seen.add(image_id)
        refs.append(ImageRef(image_id, path))
    return refs


def load_rgb(path: str | Path) -> Image.Image:
    """An image file as a loaded 8-bit RGB PIL image; unreadable files are an InputError."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit greyscale: keep the top 8 bits rather than clipping at 255.
                image = image.point(lambda v: v / 256).convert("L")
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None


def _safe_id(stem: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "image"

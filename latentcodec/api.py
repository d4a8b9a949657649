"""The public Python API: ``latentcodec.load(name, quality, weights, device)``.

    codec = latentcodec.load("glc-image", quality=0)
    data = codec.compress(pil_image)       # bytes: the whole file
    image = codec.decompress(data)         # PIL.Image of the original size
    bits = codec.estimate_bits(pil_image)  # the model's own rate estimate, in bits
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

from latentcodec.data.images import pil_to_tensor, tensor_to_pil, to_rgb
from latentcodec.errors import LatentCodecError, WeightsError
from latentcodec.models.base import CONFIG_FILE
from latentcodec.zoo.registry import ModelEntry, get_entry

OFFICIAL_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


class ImageCodec:
    """A loaded image codec at one quality (rate index); PIL images in, bytes out."""

    def __init__(self, model, entry: ModelEntry, quality: int, weights_source: str):
        if not 0 <= quality < model.num_rates:
            raise LatentCodecError(f"quality {quality} out of range for {entry.name}: 0..{model.num_rates - 1}")
        self.model = model
        self.entry = entry
        self.quality = quality
        self.weights_source = weights_source

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def num_qualities(self) -> int:
        return self.model.num_rates

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def at_quality(self, quality: int) -> "ImageCodec":
        """The same model (shared, not copied) at another quality."""
        return ImageCodec(self.model, self.entry, quality, self.weights_source)

    def _tensor(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise LatentCodecError(f"expected a PIL.Image, got {type(image).__name__}")
        return pil_to_tensor(to_rgb(image)).to(self.device)

    def compress(self, image: Image.Image) -> bytes:
        return self.model.compress(self._tensor(image), self.quality)

    def decompress(self, data: bytes) -> Image.Image:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise LatentCodecError(f"expected bytes, got {type(data).__name__}")
        return tensor_to_pil(self.model.decompress(bytes(data)))

    def estimate_bits(self, image: Image.Image) -> float:
        return float(self.model.estimate_bits(self._tensor(image), self.quality))

    def __repr__(self) -> str:
        return f"ImageCodec({self.name!r}, quality={self.quality}, weights={self.weights_source!r})"


def load_model(name: str, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
    """The registered model ``name`` with weights from a save_pretrained dir, an official
    checkpoint file, or (None) the shipped default. Returns (model, entry, weights description)."""
    entry = get_entry(name)
    cls = entry.load_class()
    if weights is None:
        path = entry.default_weights_path
        if path is None:
            raise WeightsError(
                f"no default weights are shipped for {name} yet; pass weights= (a directory written by "
                f"save_pretrained, or an official checkpoint file)"
            )
        return cls.from_pretrained(path, device=device), entry, f"default ({path.name})"
    path = Path(weights)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise WeightsError(f"{path}: no {CONFIG_FILE} (expected a directory written by save_pretrained)")
        return cls.from_pretrained(path, device=device), entry, str(path)
    if path.is_file():
        if path.suffix.lower() in OFFICIAL_CHECKPOINT_SUFFIXES and hasattr(cls, "from_official"):
            return cls.from_official(path, device=device), entry, str(path)
        raise WeightsError(f"{path}: unsupported weights file (give a save_pretrained directory or an official .pth)")
    raise WeightsError(f"weights {path} not found")


def load(
    name: str,
    quality: int = 0,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> ImageCodec:
    model, entry, source = load_model(name, weights, device)
    if entry.kind != "image":
        raise LatentCodecError(f"{name} is a {entry.kind} codec; use load_video")
    return ImageCodec(model.eval(), entry, quality, source)

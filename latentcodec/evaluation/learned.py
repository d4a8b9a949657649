"""The codec under test, reached through the library's public API.

``--model NAME`` loads ``latentcodec.load(NAME, quality=0, weights=..., device=...)``; the object
must offer ``num_qualities``, ``at_quality(q)``, ``compress(pil) -> bytes`` (the whole file),
``decompress(bytes) -> PIL`` and, optionally, ``estimate_bits(pil) -> float``.
``--model package.module:factory`` calls ``factory(quality=0, weights=..., device=...)`` instead,
so any object with that API (an external codec, a test double) can be evaluated the same way.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, NamedTuple

from PIL import Image

from latentcodec.errors import BitstreamError, InputError, LatentCodecError


class TargetEncode(NamedTuple):
    """A learned codec's file for a byte budget (``data`` None when even its smallest is too big)."""

    data: bytes | None
    rate: float | None
    scale: int  # 0 = full size; n = coded at n/64 of each side
    encodes: int
    smallest_bytes: int | None  # set when unreachable


class LearnedCodec:
    """One loaded codec at all of its qualities (``at_quality`` views share the model)."""

    extension = "lci"  # the library's image-file suffix
    required_attributes: tuple[str, ...] = ("num_qualities", "at_quality", "compress", "decompress")

    def __init__(self, name: str, codec: Any):
        for attribute in self.required_attributes:
            if not hasattr(codec, attribute):
                raise LatentCodecError(f"model {name!r}: the loaded object has no {attribute!r}")
        self.name = name
        self._codec = codec
        self._by_quality: dict[int, Any] = {}

    @property
    def num_qualities(self) -> int:
        return int(self._codec.num_qualities)

    def _at(self, quality: int) -> Any:
        if quality not in self._by_quality:
            self._by_quality[quality] = self._codec.at_quality(quality)
        return self._by_quality[quality]

    def check_quality(self, quality: float) -> int | float:
        """An int level; for codecs with continuous rates any number in range, snapped to the 1/256 grid."""
        if self.supports_targets and quality != int(quality) and 0 <= quality <= self.num_qualities - 1:
            from latentcodec.ratecontrol import snap_quality

            return snap_quality(float(quality), self.num_qualities)
        if quality != int(quality) or not 0 <= quality < self.num_qualities:
            raise InputError(f"model {self.name!r} has qualities 0..{self.num_qualities - 1}, not {quality:g}")
        return int(quality)

    def encode(self, image: Image.Image, quality: int | float) -> bytes:
        data = self._at(quality).compress(image)
        if not isinstance(data, (bytes, bytearray)):
            raise LatentCodecError(f"model {self.name!r}: compress returned {type(data).__name__}, not bytes")
        return bytes(data)

    def decode(self, data: bytes, size: tuple[int, int]) -> Image.Image:
        image = self._codec.decompress(data)
        if not isinstance(image, Image.Image):
            raise LatentCodecError(f"model {self.name!r}: decompress returned {type(image).__name__}, not an image")
        image = image.convert("RGB")
        if image.size != tuple(size):
            raise BitstreamError(f"model {self.name!r}: decoded {image.size}, the original is {tuple(size)}")
        return image

    @property
    def supports_targets(self) -> bool:
        """Whether the codec has a target-size mode (``compress_to_target``: continuous rates)."""
        return hasattr(self._codec, "compress_to_target") and bool(getattr(getattr(self._codec, "model", None),
                                                                             "continuous_rates", False))

    def encode_at_most(self, image: Image.Image, max_bytes: int) -> TargetEncode:
        """The largest file not above ``max_bytes`` (downscaling allowed, as the baselines' searches)."""
        from latentcodec.ratecontrol import TargetUnreachable

        try:
            result = self._codec.compress_to_target(image, target_bytes=max_bytes, allow_downscale=True)
        except TargetUnreachable as exc:
            return TargetEncode(None, None, exc.scale, exc.encodes, exc.smallest_bytes)
        return TargetEncode(bytes(result.data), float(result.rate), result.scale, result.encodes, None)

    def estimated_bpp(self, image: Image.Image, quality: int) -> float | None:
        codec = self._at(quality)
        if not hasattr(codec, "estimate_bits"):
            return None
        bits = float(codec.estimate_bits(image))
        return bits / (image.size[0] * image.size[1]) if math.isfinite(bits) else None


def load_learned(model: str, weights: str | None, device: str) -> LearnedCodec:
    """The codec named ``model`` (a registry name or ``module:factory``) as a LearnedCodec."""
    name, codec = load_codec_object(model, weights, device)
    return LearnedCodec(name, codec)


def load_codec_object(model: str, weights: str | None, device: str) -> tuple[str, Any]:
    """(safe curve name, the object) for ``model``: ``latentcodec.load`` or a ``module:factory`` call."""
    if ":" in model:
        module_name, _, factory_name = model.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), factory_name)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"--model {model}: cannot import {factory_name!r} from {module_name!r} ({exc})") from None
        codec = factory(quality=0, weights=weights, device=device)
        name = str(getattr(codec, "name", factory_name))
    else:
        import latentcodec

        load = getattr(latentcodec, "load", None)
        if load is None:
            raise LatentCodecError(f"model {model!r} is not available yet (latentcodec.load is not implemented)")
        codec = load(model, quality=0, weights=weights, device=device)
        name = model
    return safe_name(name), codec


def safe_name(name: str) -> str:
    """``name`` usable as one path component (curve names become file names)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"

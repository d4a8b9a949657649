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


class CaptionSource:
    """The caption coded with each image (PerCoV2): from a JSON file mapping image ids (file stems)
    or file names to captions, or made by a local captioning model, once per image."""

    def __init__(self, captions_file: str | None = None, captioner_dir: str | None = None, device: str = "cpu"):
        if (captions_file is None) == (captioner_dir is None):
            raise InputError("give exactly one of a captions file and a captioner folder")
        self.described_as = f"captions from {captions_file}" if captions_file else f"captioner {captioner_dir}"
        self._table: dict[str, str] | None = None
        self._captioner = None
        self._made: dict[str, str] = {}
        if captions_file is not None:
            self._table = _read_captions(captions_file)
        else:
            from latentcodec.models.percov2_captioner import LocalCaptioner

            self._captioner = LocalCaptioner(captioner_dir, device=device)

    def caption(self, image_id: str, image: Image.Image) -> str:
        if self._table is not None:
            if image_id not in self._table:
                raise InputError(f"{self.described_as}: no caption for image {image_id!r}")
            return self._table[image_id]
        if image_id not in self._made:
            self._made[image_id] = self._captioner(image)
        return self._made[image_id]


def _read_captions(path: str) -> dict[str, str]:
    import json
    from pathlib import Path

    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"--captions {path}: cannot read a JSON object of captions ({exc})") from None
    if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
        raise InputError(f"--captions {path}: expected a JSON object mapping image names to caption strings")
    # Keys may be file names (kodim23.png) or stems (kodim23); image ids are stems.
    return {**{Path(k).stem: v for k, v in table.items()}, **table}


class LearnedCodec:
    """One loaded codec at all of its qualities (``at_quality`` views share the model)."""

    extension = "lci"  # the library's image-file suffix
    required_attributes: tuple[str, ...] = ("num_qualities", "at_quality", "compress", "decompress")

    def __init__(self, name: str, codec: Any, captions: CaptionSource | None = None):
        for attribute in self.required_attributes:
            if not hasattr(codec, attribute):
                raise LatentCodecError(f"model {name!r}: the loaded object has no {attribute!r}")
        self.name = name
        self._codec = codec
        self._by_quality: dict[int, Any] = {}
        self.captions = captions

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

    def caption_for(self, image_id: str, image: Image.Image) -> str | None:
        return None if self.captions is None else self.captions.caption(image_id, image)

    def encode(self, image: Image.Image, quality: int | float, caption: str | None = None) -> bytes:
        data = self._at(quality).compress(image) if caption is None else self._at(quality).compress(image, caption=caption)
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


def load_learned(model: str, weights: str | None, device: str, captions: str | None = None,
                 captioner: str | None = None) -> LearnedCodec:
    """The codec named ``model`` (a registry name or ``module:factory``) as a LearnedCodec; with
    ``captions`` (a JSON file) or ``captioner`` (a local model folder), PerCoV2 codes a caption with each image."""
    source = None
    if captions is not None or captioner is not None:
        if model != "percov2":
            raise InputError("--captions and --captioner apply to --model percov2 only")
        source = CaptionSource(captions, captioner, device)
    name, codec = load_codec_object(model, weights, device)
    return LearnedCodec(name, codec, source)


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

"""The latentcodec image file: a few header bytes, the codec's sections, and a CRC-8.

Layout (docs/bitstream.md has the byte-level table)::

    lead byte        magic nibble 0xB | kind (2 bits) | format version (2 bits)
    model id         varint, the stable id from latentcodec.zoo.registry
    rate index       varint (kind 2: the rate in 1/256ths of a step, times 2, plus 1 if a scale follows)
    height, width    varints, the original (unpadded) size
    scale            kind 2 only, when flagged: varint n, each side coded at n/64
    stored lengths   one varint per section whose length the codec cannot derive from the header,
                     except the last section, which takes the rest of the file
    sections         concatenated
    CRC-8            one byte over everything before it

Sections whose length the codec derives from the header (e.g. GLC's bit-packed z indices) cost no
length byte, so a 768x512 GLC-image file carries 8 bytes beyond its entropy-coded payload.
"""

from __future__ import annotations

import enum
import math
import operator
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

from latentcodec.bitstream.primitives import crc8, decode_varint, encode_varint
from latentcodec.errors import BitstreamError, LatentCodecError
from latentcodec.zoo.registry import get_entry_by_id

# Version 2: entropy parameters from exact integer networks (latentcodec.nn.integer), so the file
# decodes identically on any CPU, thread count and GPU. Version 1: float arithmetic, decodable only
# where the encoder's float kernels are reproduced (in practice the machine kind that wrote it);
# still written on request (portable=False), because it reproduces the official test vectors.
FORMAT_VERSION = 2
FLOAT_FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (FLOAT_FORMAT_VERSION, FORMAT_VERSION)
DEFAULT_MAX_SIDE = 16384

# High nibble of the lead byte. 0xB_ starts none of the common image/video/archive formats and is
# not a valid first byte of UTF-8 text, so foreign files are recognised from their first byte.
MAGIC_NIBBLE = 0xB
# Version field values: 0 is never written; 3 is kept as an escape ("an extended version follows")
# for when more than two further versions are needed.
_VERSION_FIELD_ESCAPE = 3


class FileKind(enum.IntEnum):
    """The two kind bits of the lead byte."""

    IMAGE = 0
    VIDEO_SEQUENCE = 1  # see "Video sequences" in docs/bitstream.md
    # An image whose header also carries a fractional rate and/or a coding scale (rate control).
    # A separate kind, so that kind-0 files stay byte-identical and older readers name the file as
    # "from a newer latentcodec" instead of misreading the rate field.
    IMAGE_EXTENDED = 2
    # An image whose model id (< 16), whole rate (< 16) and size (sides <= 4096) fit 4 bytes: the
    # whole header, CRC included, is 6 bytes (DLF's own header is 6 bytes without a CRC). Written
    # for codecs that ask for it (ImageHeader.compact); the others keep kind 0, byte for byte.
    IMAGE_COMPACT = 3


def lead_byte(kind: FileKind, version: int = FORMAT_VERSION) -> int:
    """The first byte of every latentcodec file."""
    if not 1 <= version < _VERSION_FIELD_ESCAPE:
        raise ValueError(f"format version {version} does not fit the 2-bit version field")
    return (MAGIC_NIBBLE << 4) | (int(kind) << 2) | version


def format_version_for(portable: bool) -> int:
    return FORMAT_VERSION if portable else FLOAT_FORMAT_VERSION


def parse_lead_byte(data: bytes | bytearray | memoryview) -> FileKind:
    """Check magic and version of any latentcodec file; return its kind (the video reader reuses this)."""
    return parse_lead_byte_version(data)[0]


def parse_lead_byte_version(data: bytes | bytearray | memoryview) -> tuple[FileKind, int]:
    """(kind, format version) of any latentcodec file, both checked."""
    if len(data) == 0:
        raise BitstreamError("truncated file: it is empty")
    first = data[0]
    if first >> 4 != MAGIC_NIBBLE:
        raise BitstreamError(f"not a latentcodec file (first byte 0x{first:02X}; latentcodec files start "
                             "with 0xB0-0xBF)")
    version = first & 0b11
    if version not in SUPPORTED_VERSIONS:
        label = f"{version}" if version != _VERSION_FIELD_ESCAPE else f">= {_VERSION_FIELD_ESCAPE}"
        raise BitstreamError(f"unsupported latentcodec format version {label} (this build reads versions "
                             f"{FLOAT_FORMAT_VERSION} and {FORMAT_VERSION}; the file may come from a newer latentcodec)")
    return FileKind((first >> 2) & 0b11), version  # all four kind values are defined


# Extended image headers (kind 2) store the rate in 1/256ths of a rate step: fine enough that one
# step moves a Kodak file by about a byte, and every value is exact in binary floating point.
RATE_FRACTION_BITS = 8
RATE_FRACTION_STEPS = 1 << RATE_FRACTION_BITS
# A coding scale n (1..63) means each side was coded at n/64 of the original (rounded, at least 1).
SCALE_DENOMINATOR = 64
# Compact (kind 3) headers: model id and rate in one byte, sides - 1 in 12 bits each.
COMPACT_FIELD_LIMIT = 16
COMPACT_SIDE_BITS = 12
COMPACT_MAX_SIDE = 1 << COMPACT_SIDE_BITS


def rate_to_code(rate: int | float) -> int:
    """A rate on the 1/256 grid as an integer count of 1/256ths; ValueError when it is off the grid."""
    scaled = rate * RATE_FRACTION_STEPS
    if isinstance(rate, bool) or scaled != math.floor(scaled) or rate < 0:
        raise ValueError(f"rate {rate!r} is not a non-negative multiple of 1/{RATE_FRACTION_STEPS}")
    return int(scaled)


def rate_from_code(code: int) -> int | float:
    """The rate a grid code names: an int for whole rates (the integer API), else code/256 (exact)."""
    if code % RATE_FRACTION_STEPS == 0:
        return code // RATE_FRACTION_STEPS
    return code / RATE_FRACTION_STEPS


def coded_side(side: int, scale: int) -> int:
    """The side the codec coded for an original ``side`` at ``scale`` (0 = full size), in integers."""
    if scale == 0:
        return side
    return max(1, (side * scale + SCALE_DENOMINATOR // 2) // SCALE_DENOMINATOR)


@dataclass(frozen=True)
class ImageHeader:
    model_id: int
    rate_index: int  # the integer part of the rate
    height: int  # the original size: what the decoder outputs
    width: int
    portable: bool = True  # format version 2 (exact integer entropy parameters); False: version 1
    rate_fraction: int = 0  # 1/256ths of a rate step above rate_index (0..255); kind-2 header only
    scale: int = 0  # 0 = coded at full size; n in 1..63 = each side coded at n/64; kind-2 header only
    compact: bool = False  # ask for the 6-byte kind-3 header; used when every field fits it

    @property
    def fits_compact(self) -> bool:
        return (self.compact and not self.extended and 0 <= self.model_id < COMPACT_FIELD_LIMIT
                and 0 <= self.rate_index < COMPACT_FIELD_LIMIT and 1 <= self.height <= COMPACT_MAX_SIDE
                and 1 <= self.width <= COMPACT_MAX_SIDE)

    @property
    def format_version(self) -> int:
        return format_version_for(self.portable)

    @property
    def extended(self) -> bool:
        """Written as kind 2 (a fractional rate or a scale); otherwise the 8-byte kind-0 header."""
        return self.rate_fraction != 0 or self.scale != 0

    @property
    def rate_code(self) -> int:
        """The rate in 1/256ths of a step: rate_index * 256 + rate_fraction."""
        return (self.rate_index << RATE_FRACTION_BITS) + self.rate_fraction

    @property
    def rate(self) -> int | float:
        """The exact rate: an int for whole rates (as before), else a float k/256 (exact in binary)."""
        if self.rate_fraction == 0:
            return self.rate_index
        return self.rate_code / RATE_FRACTION_STEPS

    @property
    def coded_height(self) -> int:
        return coded_side(self.height, self.scale)

    @property
    def coded_width(self) -> int:
        return coded_side(self.width, self.scale)


SectionLayout = Callable[[ImageHeader], Sequence[int | None]]
"""Per section: its byte length when the codec derives it from the header, None when it is stored
(the last section may be None: it then takes the rest of the file and its length is not stored)."""


class ParsedImageFile(NamedTuple):
    header: ImageHeader
    sections: tuple[bytes, ...]


@dataclass(frozen=True)
class TokenSectionInfo:
    """A section that holds a token map (PerCoV2), as `latentcodec info` reports it from the file alone."""

    section: int
    bytes: int  # the whole section, descriptor byte included
    grid: int  # g
    rows: int  # g_h
    cols: int  # g_w
    codebook_size: int  # K
    coding: str  # "fixed-length" or "prior"
    transmitted_passes: int  # 0 = every pass
    fixed_length_bits: int  # g_h * g_w * log2 K: what the same map costs uniformly


@dataclass(frozen=True)
class FileInfo:
    """What `latentcodec info` shows about an image file."""

    format_version: int
    model_id: int
    model_name: str | None  # None when the id is not in this build's registry
    rate_index: int
    height: int
    width: int
    header_bytes: int  # every byte that is not section payload: header fields, stored lengths, CRC
    section_bytes: tuple[int, ...]
    total_bytes: int
    bpp: float  # 8 * total_bytes / (height * width): every byte counts, over the original size
    rate: float = 0.0  # the exact rate (rate_index + rate_fraction / 256)
    scale: int = 0  # 0 = full size; n = coded at n/64 of each side
    coded_height: int = 0
    coded_width: int = 0
    # Streams sharing a section, as (name, bits) measured by decoding (latentcodec info --streams).
    streams: tuple[tuple[str, float], ...] = ()
    # Sections holding a token map, with what the same map costs at fixed length (codecs that have them).
    token_sections: tuple[TokenSectionInfo, ...] = ()


# -- writing ----------------------------------------------------------------------------------------
def _as_int(value, name: str, minimum: int) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def _encode_compact_fields(header: ImageHeader) -> bytearray:
    sides = ((header.height - 1) << COMPACT_SIDE_BITS) | (header.width - 1)
    out = bytearray([lead_byte(FileKind.IMAGE_COMPACT, header.format_version), (header.model_id << 4) | header.rate_index])
    return out + sides.to_bytes(3, "big")


def _encode_header_fields(header: ImageHeader) -> bytearray:
    if header.fits_compact:
        return _encode_compact_fields(header)
    fraction = _as_int(header.rate_fraction, "rate_fraction", 0)
    scale = _as_int(header.scale, "scale", 0)
    if fraction >= RATE_FRACTION_STEPS:
        raise ValueError(f"rate_fraction must be below {RATE_FRACTION_STEPS}, got {fraction}")
    if scale >= SCALE_DENOMINATOR:
        raise ValueError(f"scale must be below {SCALE_DENOMINATOR} (0 = full size), got {scale}")
    kind = FileKind.IMAGE_EXTENDED if header.extended else FileKind.IMAGE
    out = bytearray([lead_byte(kind, header.format_version)])
    out += encode_varint(_as_int(header.model_id, "model_id", 0))
    rate_index = _as_int(header.rate_index, "rate_index", 0)
    if kind is FileKind.IMAGE:
        out += encode_varint(rate_index)
    else:  # the rate in 1/256ths, shifted left once; the low bit says "a scale field follows"
        out += encode_varint((((rate_index << RATE_FRACTION_BITS) | fraction) << 1) | int(scale != 0))
    out += encode_varint(_as_int(header.height, "height", 1))
    out += encode_varint(_as_int(header.width, "width", 1))
    if scale:
        out += encode_varint(scale)
    return out


def _layout_lengths(layout: SectionLayout, header: ImageHeader) -> list[int | None]:
    lengths: list[int | None] = []
    for index, length in enumerate(layout(header)):
        if length is not None:
            length = operator.index(length)
            if length < 0:
                raise ValueError(f"section layout gave a negative length {length} for section {index}")
        lengths.append(length)
    return lengths


def write_image_file(header: ImageHeader, sections: Sequence[bytes], layout: SectionLayout) -> bytes:
    """Serialise one image. ValueError if the sections do not match the layout or a field is invalid."""
    out = _encode_header_fields(header)
    lengths = _layout_lengths(layout, header)
    if len(sections) != len(lengths):
        raise ValueError(f"the layout has {len(lengths)} sections but {len(sections)} were given")
    for index, (section, length) in enumerate(zip(sections, lengths)):
        if length is not None and len(section) != length:
            raise ValueError(f"section {index} has {len(section)} bytes but the layout derives {length} "
                             "from the header")
        if length is None and index < len(sections) - 1:
            out += encode_varint(len(section))
    for section in sections:
        out += section
    out.append(crc8(out))
    return bytes(out)


# -- reading ----------------------------------------------------------------------------------------
_FIELD_NAMES = ("model id", "rate index", "height", "width")


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class _HeaderFields(NamedTuple):
    """The header varints as read, before any validation."""

    model_id: int
    rate_index: int
    rate_fraction: int
    height: int
    width: int
    scale: int
    portable: bool
    extended: bool  # a kind-2 header
    has_scale: bool
    compact: bool = False  # a kind-3 header

    def header(self) -> ImageHeader:
        return ImageHeader(model_id=self.model_id, rate_index=self.rate_index, height=self.height,
                           width=self.width, portable=self.portable, rate_fraction=self.rate_fraction,
                           scale=self.scale, compact=self.compact)


def _parse_compact_fields(data: memoryview, version: int) -> tuple[_HeaderFields, int]:
    if len(data) < 5:
        raise BitstreamError(f"truncated file: it ends inside the compact header ({len(data)} bytes)")
    sides = int.from_bytes(bytes(data[2:5]), "big")
    fields = _HeaderFields(data[1] >> 4, data[1] & 0x0F, 0, (sides >> COMPACT_SIDE_BITS) + 1,
                           (sides & (COMPACT_MAX_SIDE - 1)) + 1, 0,
                           version == FORMAT_VERSION, False, False, compact=True)
    if len(data) <= 5:
        raise BitstreamError(f"truncated file: it ends after the header ({len(data)} bytes, no sections or checksum)")
    return fields, 5


def _parse_header_fields(data: memoryview) -> tuple[_HeaderFields, int]:
    """Lead byte and the header varints, unvalidated; returns (fields, offset after them)."""
    kind, version = parse_lead_byte_version(data)
    if kind is FileKind.VIDEO_SEQUENCE:
        raise BitstreamError("not an image file: it holds a latentcodec video sequence")
    if kind is FileKind.IMAGE_COMPACT:
        return _parse_compact_fields(data, version)
    extended = kind is FileKind.IMAGE_EXTENDED
    values = []
    offset = 1
    for name in _FIELD_NAMES:
        value, offset = decode_varint(data, offset, field=f"{name} field")
        values.append(value)
    model_id, rate_field, height, width = values
    rate_index, fraction, scale = rate_field, 0, 0
    if extended:
        code, has_scale = rate_field >> 1, rate_field & 1
        rate_index, fraction = code >> RATE_FRACTION_BITS, code & (RATE_FRACTION_STEPS - 1)
        if has_scale:
            scale, offset = decode_varint(data, offset, field="scale field")
    else:
        has_scale = 0
    if offset >= len(data):
        raise BitstreamError(f"truncated file: it ends after the header ({len(data)} bytes, no sections or checksum)")
    fields = _HeaderFields(model_id, rate_index, fraction, height, width, scale, version == FORMAT_VERSION, extended,
                           bool(has_scale))
    return fields, offset


def _header_problem(fields: _HeaderFields, max_side: int) -> str | None:
    height, width = fields.height, fields.width
    if fields.extended and fields.rate_fraction == 0 and not fields.has_scale:
        # Never written: such a header has exactly one encoding, the kind-0 one.
        return "invalid header: an extended (kind 2) image header with neither a rate fraction nor a scale"
    if fields.has_scale and not 1 <= fields.scale < SCALE_DENOMINATOR:
        return f"invalid header: scale {fields.scale}/{SCALE_DENOMINATOR} (must be 1..{SCALE_DENOMINATOR - 1})"
    if height == 0 or width == 0:
        return f"invalid header: image size {height}x{width} (sides must be at least 1 pixel)"
    if height > max_side or width > max_side:
        return (f"invalid header: image size {height}x{width} exceeds the limit of {max_side} pixels per side "
                "(raise max_side to read larger images)")
    return None


def _checksum_error(data: memoryview) -> BitstreamError | None:
    stored, computed = data[-1], crc8(data[:-1])
    if stored == computed:
        return None
    return BitstreamError(f"checksum mismatch: the file is corrupt or truncated "
                          f"(stored CRC-8 0x{stored:02X}, computed 0x{computed:02X})")


def _model_name(model_id: int) -> str | None:
    try:
        return get_entry_by_id(model_id).name
    except LatentCodecError:
        return None


def resolve_section_layout(model_id: int) -> SectionLayout:
    """The layout of a registered image codec: its class's ``section_layout`` staticmethod."""
    try:
        entry = get_entry_by_id(model_id)
    except LatentCodecError:
        raise BitstreamError(f"unknown model id {model_id}: the file was written by a codec this "
                             "latentcodec build does not know") from None
    if entry.kind != "image":
        raise BitstreamError(f"model id {model_id} ({entry.name}) is a {entry.kind} codec, not an image codec")
    return entry.load_class().section_layout


class _ParsedLayout(NamedTuple):
    header: ImageHeader
    header_end: int  # offset just after the header fields
    section_spans: tuple[tuple[int, int], ...]  # (start, end) of each section


def _parse(data: bytes | bytearray | memoryview, layout: SectionLayout | None, expected_model_id: int | None,
           max_side: int) -> _ParsedLayout:
    """Full validation. The order is chosen so that each failure gets the most telling message:

    1. the lead byte and header varints (what the file is; truncation inside the header);
    2. field checks (sizes, expected model, registry) are reported as such only when the checksum
       holds; with a bad checksum the field is most likely corrupt, so "checksum mismatch" is raised;
    3. section boundaries ("truncated" when the file is shorter than the header says, "trailing
       garbage" when it is longer and the last section's length is derived), then the checksum.

    No field is used to size anything before it is checked: varints stop after MAX_VARINT_BYTES,
    sizes are bounded by max_side before the layout sees them, section lengths are compared with the
    file size before slicing.
    """
    view = _byte_view(data)
    fields, offset = _parse_header_fields(view)
    model_id = fields.model_id
    checksum_error = _checksum_error(view)

    def field_error(message: str) -> BitstreamError:
        return checksum_error if checksum_error is not None else BitstreamError(message)

    problem = _header_problem(fields, max_side)
    if problem is not None:
        raise field_error(problem)
    header = fields.header()
    if expected_model_id is not None and model_id != expected_model_id:
        found = _model_name(model_id)
        expected = _model_name(expected_model_id)
        raise field_error(f"wrong model: the file was written by model id {model_id}"
                          f"{f' ({found})' if found else ''}, expected model id {expected_model_id}"
                          f"{f' ({expected})' if expected else ''}")
    if layout is None:
        try:
            layout = resolve_section_layout(model_id)
        except BitstreamError as exc:
            raise field_error(str(exc)) from None
    lengths = _layout_lengths(layout, header)

    header_end = offset
    stored: list[int | None] = []
    for index, length in enumerate(lengths):
        if length is None and index < len(lengths) - 1:
            value, offset = decode_varint(view, offset, field=f"length of section {index}")
            stored.append(value)
        else:
            stored.append(length)
    payload_end = len(view) - 1  # the last byte is the checksum
    if offset > payload_end:
        raise BitstreamError("truncated file: it ends inside the stored section lengths")
    spans = []
    for index, (length, size) in enumerate(zip(lengths, stored)):
        remaining = payload_end - offset
        if size is None:  # the last section takes the rest of the file
            size = max(remaining, 0)
        if size > remaining:
            origin = "derived from the header" if length is not None else "stored"
            raise BitstreamError(f"truncated file: section {index} needs {size} bytes (length {origin}) "
                                 f"but only {max(remaining, 0)} remain")
        spans.append((offset, offset + size))
        offset += size
    if offset < payload_end:
        raise BitstreamError(f"trailing garbage: {payload_end - offset} bytes after the last section")
    if checksum_error is not None:
        raise checksum_error
    return _ParsedLayout(header, header_end, tuple(spans))


def read_image_file(data: bytes, layout: SectionLayout | None = None, expected_model_id: int | None = None,
                    max_side: int = DEFAULT_MAX_SIDE) -> ParsedImageFile:
    """Parse and validate a whole image file. Every problem raises one BitstreamError.

    layout=None resolves the layout through the registry from the file's model id.
    """
    parsed = _parse(data, layout, expected_model_id, max_side)
    view = _byte_view(data)
    return ParsedImageFile(parsed.header, tuple(bytes(view[start:end]) for start, end in parsed.section_spans))


def read_image_header(data: bytes, max_side: int = DEFAULT_MAX_SIDE) -> tuple[ImageHeader, int]:
    """The header of an image file and the offset just after its fields.

    That offset is where the stored section lengths begin, which is the first section when the
    codec's layout stores no lengths (GLC-image). The checksum is verified (so the header can be
    trusted), but section boundaries need the codec's layout: use read_image_file for those.
    """
    view = _byte_view(data)
    fields, offset = _parse_header_fields(view)
    checksum_error = _checksum_error(view)
    if checksum_error is not None:
        raise checksum_error
    problem = _header_problem(fields, max_side)
    if problem is not None:
        raise BitstreamError(problem)
    return fields.header(), offset


def describe_image_file(data: bytes, layout: SectionLayout | None = None,
                        max_side: int = DEFAULT_MAX_SIDE) -> FileInfo:
    """Header fields, section sizes and the real bpp of an image file (validated like read_image_file)."""
    parsed = _parse(data, layout, None, max_side)
    header = parsed.header
    section_bytes = tuple(end - start for start, end in parsed.section_spans)
    total = len(data)
    return FileInfo(
        format_version=header.format_version,
        model_id=header.model_id,
        model_name=_model_name(header.model_id),
        rate_index=header.rate_index,
        height=header.height,
        width=header.width,
        header_bytes=total - sum(section_bytes),
        section_bytes=section_bytes,
        total_bytes=total,
        bpp=8 * total / (header.height * header.width),
        rate=float(header.rate),
        scale=header.scale,
        coded_height=header.coded_height,
        coded_width=header.coded_width,
    )

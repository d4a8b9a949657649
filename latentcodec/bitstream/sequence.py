"""The latentcodec video sequence file: a sequence header, then one self-delimiting unit per frame.

Layout (docs/bitstream.md, "Video sequences", has the byte-level table)::

    sequence header  lead byte 0xB6 (magic 0xB, kind 1 = video sequence, version 2; 0xB5 for version 1), then varints:
                     model id, intra rate, inter rate, height, width, frame count (0 = open-ended),
                     frame rate numerator, denominator, intra period, reset interval; then a CRC-8
                     over the header
    frame unit       varint payload length (>= 1) | payload | CRC-8
                     (per-GOP rates: the payload of every I-frame unit but the first starts with
                     its GOP's two rates)
    ...
    end marker       one 0x00 byte (a zero length), only when the frame count is 0

A unit's CRC-8 covers its length varint and payload and is *seeded* with the header's CRC and the
frame index, so a unit that is corrupt, dropped, duplicated, reordered or spliced in from another
sequence fails at its own index. A P-frame unit costs 3 bytes beyond its payload up to payloads of
16 511 bytes (2 + 1 above 127 bytes; 1 + 1 below).

Rates. Whole rates below 128 are the plain varints above (the layout of every earlier file). A
fractional rate (1/256 grid, as in extended image headers), a whole rate of 128 or more, or a file
whose GOPs each carry their own rates (rate control moving bytes between GOPs) uses the *extended
rate fields*: the intra rate field holds ``128 + 2 * intra_code + g`` and the inter rate field
``inter_code`` (codes in 1/256ths of a level), with g = 1 when every later GOP's I-frame unit starts
with ``varint(intra_code) varint(inter_code)`` for that GOP. Older builds read the extended intra
field as a rate of 128 or more and reject the file as out of range instead of misreading it.

Reading is streaming: :class:`SequenceReader` takes bytes or a binary file object and yields one
unit at a time, reading each payload in bounded chunks, so memory never depends on the frame count
nor on a (possibly corrupt) length field.
"""

from __future__ import annotations

import io
import operator
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Iterator, NamedTuple

from latentcodec.bitstream.container import (
    DEFAULT_MAX_SIDE,
    FORMAT_VERSION,
    RATE_FRACTION_STEPS,
    FileKind,
    _model_name,
    format_version_for,
    lead_byte,
    parse_lead_byte_version,
    rate_from_code,
    rate_to_code,
)
from latentcodec.bitstream.primitives import MAX_VARINT_BYTES, crc8, decode_varint, encode_varint
from latentcodec.errors import BitstreamError

END_OF_SEQUENCE = 0  # a unit length of zero: no frame payload is ever empty
# An intra rate field at or above this value announces the extended rate fields (module docstring).
EXTENDED_RATE_BASE = 128
_READ_CHUNK = 1 << 20


class FrameUnitError(BitstreamError):
    """A frame unit is corrupt, truncated or undecodable; ``frame_index`` says which."""

    def __init__(self, frame_index: int, message: str):
        super().__init__(f"frame {frame_index}: {message}")
        self.frame_index = frame_index


@dataclass(frozen=True)
class SequenceHeader:
    model_id: int
    intra_rate: int | float  # of the first GOP (of every GOP without per_gop_rates); 1/256 grid
    inter_rate: int | float
    height: int
    width: int
    frame_count: int  # 0: open-ended, closed by an end marker
    frame_rate_num: int
    frame_rate_den: int
    intra_period: int  # 0: only frame 0 is intra
    reset_interval: int  # 0: never
    portable: bool = True  # format version 2 (exact integer entropy parameters); False: version 1
    per_gop_rates: bool = False  # every later GOP's I-frame unit starts with that GOP's two rates

    @property
    def format_version(self) -> int:
        return format_version_for(self.portable)

    @property
    def extended_rates(self) -> bool:
        """Written with the extended rate fields (a fractional or large rate, or per-GOP rates)."""
        return _needs_extended_rates(rate_to_code(self.intra_rate), rate_to_code(self.inter_rate), self.per_gop_rates)

    def is_gop_start(self, index: int) -> bool:
        """Frame ``index`` is an I-frame (the first of a GOP)."""
        return index == 0 if self.intra_period == 0 else index % self.intra_period == 0

    @property
    def frame_rate(self) -> Fraction:
        return Fraction(self.frame_rate_num, self.frame_rate_den)


def _needs_extended_rates(intra_code: int, inter_code: int, per_gop_rates: bool) -> bool:
    whole_limit = EXTENDED_RATE_BASE * RATE_FRACTION_STEPS
    return per_gop_rates or any(c % RATE_FRACTION_STEPS or c >= whole_limit for c in (intra_code, inter_code))


_FIELDS = ("model_id", "intra_rate", "inter_rate", "height", "width", "frame_count", "frame_rate_num",
           "frame_rate_den", "intra_period", "reset_interval")
_FIELD_LABELS = {name: name.replace("_", " ") for name in _FIELDS}
_MINIMUMS = {"height": 1, "width": 1, "frame_rate_den": 1}


def _rate_code(rate, name: str) -> int:
    try:
        return rate_to_code(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a non-negative multiple of 1/{RATE_FRACTION_STEPS}, got {rate!r}") from None


def encode_gop_rates(intra_rate: int | float, inter_rate: int | float) -> bytes:
    """The prefix of a later GOP's I-frame unit in a per-GOP-rate sequence: both rates in 1/256ths."""
    return encode_varint(_rate_code(intra_rate, "intra_rate")) + encode_varint(_rate_code(inter_rate, "inter_rate"))


def encode_sequence_header(header: SequenceHeader) -> bytes:
    """The header bytes including their CRC-8. ValueError on an invalid field (a programming error)."""
    out = bytearray([lead_byte(FileKind.VIDEO_SEQUENCE, header.format_version)])
    intra_code, inter_code = _rate_code(header.intra_rate, "intra_rate"), _rate_code(header.inter_rate, "inter_rate")
    for name in _FIELDS:
        value = getattr(header, name)
        if name in ("intra_rate", "inter_rate"):
            if not header.extended_rates:
                value = rate_to_code(value) // RATE_FRACTION_STEPS
            elif name == "intra_rate":
                value = EXTENDED_RATE_BASE + 2 * intra_code + int(header.per_gop_rates)
            else:
                value = inter_code
        try:
            value = operator.index(value)
        except TypeError:
            raise ValueError(f"{name} must be an integer, got {value!r}") from None
        if value < _MINIMUMS.get(name, 0):
            raise ValueError(f"{name} must be at least {_MINIMUMS.get(name, 0)}, got {value}")
        out += encode_varint(value)
    out.append(crc8(out))
    return bytes(out)


def _unit_seed(header_crc: int, index: int) -> int:
    return crc8(encode_varint(index), header_crc)


def encode_frame_unit(payload: bytes, index: int, header_crc: int) -> bytes:
    if len(payload) == 0:
        raise ValueError("a frame payload cannot be empty (length 0 is the end marker)")
    body = encode_varint(len(payload)) + bytes(payload)
    return body + bytes([crc8(body, _unit_seed(header_crc, index))])


class SequenceWriter:
    """Writes a sequence to a binary stream frame by frame (nothing is buffered beyond one unit)."""

    def __init__(self, stream: BinaryIO, header: SequenceHeader):
        self.stream = stream
        self.header = header
        encoded = encode_sequence_header(header)
        self._header_crc = encoded[-1]
        self.bytes_written = len(encoded)
        self.header_bytes = len(encoded)
        self.frames_written = 0
        self._closed = False
        stream.write(encoded)

    def write_frame(self, payload: bytes, gop_rates: tuple[int | float, int | float] | None = None) -> int:
        """Append one frame's unit; returns the unit's size in bytes. In a per-GOP-rate sequence,
        every I-frame after the first gives its GOP's (intra, inter) rates as ``gop_rates``."""
        if self._closed:
            raise RuntimeError("SequenceWriter is closed")
        if self.header.frame_count and self.frames_written >= self.header.frame_count:
            raise ValueError(f"the header announces {self.header.frame_count} frames; no more can be written")
        carries_rates = self.header.per_gop_rates and self.frames_written > 0 and \
            self.header.is_gop_start(self.frames_written)
        if carries_rates != (gop_rates is not None):
            raise ValueError(f"frame {self.frames_written}: GOP rates are given exactly at the I-frames after the "
                             "first of a per-GOP-rate sequence")
        if gop_rates is not None:
            payload = encode_gop_rates(*gop_rates) + bytes(payload)
        unit = encode_frame_unit(payload, self.frames_written, self._header_crc)
        self.stream.write(unit)
        self.frames_written += 1
        self.bytes_written += len(unit)
        return len(unit)

    def close(self) -> None:
        """Write the end marker (open-ended sequences) or check the announced frame count."""
        if self._closed:
            return
        if self.header.frame_count:
            if self.frames_written != self.header.frame_count:
                raise ValueError(f"the header announces {self.header.frame_count} frames but "
                                 f"{self.frames_written} were written")
        else:
            self.stream.write(bytes([END_OF_SEQUENCE]))
            self.bytes_written += 1
        self._closed = True


def write_sequence(header: SequenceHeader, payloads) -> bytes:
    buffer = io.BytesIO()
    writer = SequenceWriter(buffer, header)
    for payload in payloads:
        writer.write_frame(payload)
    writer.close()
    return buffer.getvalue()


class FrameUnit(NamedTuple):
    index: int
    payload: bytes  # the codec's payload (a GOP-rate prefix is read off into the rates)
    offset: int  # file offset of the unit's first byte
    size: int  # the whole unit: length varint + payload + CRC
    intra_rate: int | float = 0  # the rates of the frame's GOP (the header's unless per-GOP rates)
    inter_rate: int | float = 0


@dataclass(frozen=True)
class SequenceInfo:
    """What `latentcodec info` shows about a sequence file."""

    format_version: int
    model_id: int
    model_name: str | None
    intra_rate: int | float
    inter_rate: int | float
    height: int
    width: int
    frame_rate: str
    frame_count: int
    open_ended: bool
    intra_period: int
    reset_interval: int
    header_bytes: int
    unit_bytes: tuple[int, ...]  # per frame, framing included
    payload_bytes: tuple[int, ...]
    total_bytes: int
    bpp: float  # 8 * total_bytes / (frames * height * width)
    gop_rates: tuple[tuple[int, int | float, int | float], ...] = ()  # (first frame, intra, inter) per GOP


class _ByteSource:
    """A binary stream with an offset counter; reads never allocate more than they return."""

    def __init__(self, source: bytes | bytearray | memoryview | BinaryIO):
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(bytes(source))
        if not hasattr(source, "read"):
            raise TypeError(f"expected bytes or a binary file object, got {type(source).__name__}")
        self.stream = source
        self.offset = 0

    def read(self, size: int) -> bytes:
        chunks = []
        remaining = size
        while remaining > 0:
            chunk = self.stream.read(min(remaining, _READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        self.offset += len(data)
        return data

    def read_varint(self, field: str) -> tuple[int, bytes]:
        """(value, its bytes); raises BitstreamError naming ``field`` when the data ends inside it."""
        raw = bytearray()
        value = 0
        start = self.offset
        for index in range(MAX_VARINT_BYTES):
            byte = self.read(1)
            if not byte:
                raise BitstreamError(f"truncated file: it ends inside the {field} (offset {start})")
            raw += byte
            value += ((byte[0] & 0x7F) + (1 if index else 0)) << (7 * index)
            if not byte[0] & 0x80:
                return value, bytes(raw)
        raise BitstreamError(f"corrupt file: the {field} at offset {start} is a varint longer than "
                             f"{MAX_VARINT_BYTES} bytes")


class SequenceReader:
    """Parses the header on construction, then iterates over frame units.

    Every problem raises a BitstreamError; problems inside a unit raise :class:`FrameUnitError`
    with the frame index. The header is trusted only after its CRC-8 matched.
    """

    def __init__(self, source: bytes | bytearray | memoryview | BinaryIO, expected_model_id: int | None = None,
                 max_side: int = DEFAULT_MAX_SIDE):
        self._source = _ByteSource(source)
        lead = self._source.read(1)
        kind, version = parse_lead_byte_version(lead)
        if kind is not FileKind.VIDEO_SEQUENCE:
            raise BitstreamError("not a video sequence file: it holds a latentcodec image")
        raw = bytearray(lead)
        values = {}
        for name in _FIELDS:
            value, encoded = self._source.read_varint(f"{_FIELD_LABELS[name]} field")
            values[name] = value
            raw += encoded
        stored = self._source.read(1)
        if not stored:
            raise BitstreamError("truncated file: it ends inside the sequence header (no header checksum)")
        computed = crc8(raw)
        if stored[0] != computed:
            raise BitstreamError(f"checksum mismatch in the sequence header: the file is corrupt "
                                 f"(stored CRC-8 0x{stored[0]:02X}, computed 0x{computed:02X})")
        self.header_crc = computed
        self.header_bytes = len(raw) + 1
        values.update(_rates_from_fields(values["intra_rate"], values["inter_rate"]))
        header = SequenceHeader(**values, portable=version == FORMAT_VERSION)
        if header.height == 0 or header.width == 0 or header.frame_rate_den == 0:
            raise BitstreamError(f"invalid sequence header: frame size {header.height}x{header.width}, frame rate "
                                 f"{header.frame_rate_num}/{header.frame_rate_den}")
        if header.height > max_side or header.width > max_side:
            raise BitstreamError(f"invalid sequence header: frame size {header.height}x{header.width} exceeds the "
                                 f"limit of {max_side} pixels per side (raise max_side to read larger videos)")
        if expected_model_id is not None and header.model_id != expected_model_id:
            found, expected = _model_name(header.model_id), _model_name(expected_model_id)
            raise BitstreamError(f"wrong model: the file was written by model id {header.model_id}"
                                 f"{f' ({found})' if found else ''}, expected model id {expected_model_id}"
                                 f"{f' ({expected})' if expected else ''}")
        self.header = header
        self._rates = (header.intra_rate, header.inter_rate)
        self._next_index = 0
        self._done = False

    def __iter__(self) -> Iterator[FrameUnit]:
        while not self._done:
            unit = self.read_unit()
            if unit is None:
                return
            yield unit

    def read_unit(self) -> FrameUnit | None:
        """The next unit, or None after the last frame (the end is validated first)."""
        if self._done:
            return None
        header, index, source = self.header, self._next_index, self._source
        if header.frame_count and index == header.frame_count:
            self._finish_counted()
            return None
        offset = source.offset
        first = source.read(1)
        if not first:
            self._done = True
            if header.frame_count:
                raise FrameUnitError(index, f"truncated file: the header announces {header.frame_count} frames "
                                            f"but the file ends after {index}")
            raise FrameUnitError(index, f"truncated file: it ends after {index} frames without the "
                                        "end-of-sequence marker")
        if first[0] == END_OF_SEQUENCE:
            if header.frame_count:
                raise FrameUnitError(index, "corrupt frame unit: a zero length (end marker) in a sequence with "
                                            f"{header.frame_count} announced frames")
            self._finish_open_ended()
            return None
        length, raw = self._length_from(first, index)
        payload = source.read(length)
        if len(payload) < length:
            self._done = True
            raise FrameUnitError(index, f"truncated file: the unit needs {length} payload bytes but only "
                                        f"{len(payload)} remain")
        stored = source.read(1)
        if not stored:
            self._done = True
            raise FrameUnitError(index, "truncated file: the unit ends before its checksum")
        computed = crc8(payload, crc8(raw, _unit_seed(self.header_crc, index)))
        if stored[0] != computed:
            self._done = True
            raise FrameUnitError(index, f"checksum mismatch: the frame unit is corrupt, missing or out of order "
                                        f"(stored CRC-8 0x{stored[0]:02X}, computed 0x{computed:02X})")
        self._next_index += 1
        if header.per_gop_rates and index > 0 and header.is_gop_start(index):
            payload = self._read_gop_rates(payload, index)
        return FrameUnit(index, payload, offset, source.offset - offset, *self._rates)

    def _read_gop_rates(self, payload: bytes, index: int) -> bytes:
        """Reads the GOP-rate prefix of an I-frame unit into the current rates; returns the rest."""
        offset, codes = 0, []
        for what in ("intra", "inter"):
            try:
                code, offset = decode_varint(payload, offset, field=f"GOP {what} rate")
            except BitstreamError as exc:
                raise FrameUnitError(index, f"corrupt frame unit: {exc}") from None
            codes.append(code)
        if offset >= len(payload):
            raise FrameUnitError(index, "corrupt frame unit: nothing follows its GOP rates")
        self._rates = (rate_from_code(codes[0]), rate_from_code(codes[1]))
        return payload[offset:]

    def _length_from(self, first: bytes, index: int) -> tuple[int, bytes]:
        raw = bytearray(first)
        value = first[0] & 0x7F
        byte = first[0]
        position = 1
        while byte & 0x80:
            if position >= MAX_VARINT_BYTES:
                self._done = True
                raise FrameUnitError(index, "corrupt frame unit: its length is a varint longer than "
                                            f"{MAX_VARINT_BYTES} bytes")
            more = self._source.read(1)
            if not more:
                self._done = True
                raise FrameUnitError(index, "truncated file: it ends inside the unit length")
            byte = more[0]
            raw.append(byte)
            value += ((byte & 0x7F) + 1) << (7 * position)
            position += 1
        return value, bytes(raw)

    def _finish_counted(self) -> None:
        self._done = True
        if self._source.read(1):
            raise BitstreamError(f"trailing garbage after the last of the {self.header.frame_count} announced frames")

    def _finish_open_ended(self) -> None:
        self._done = True
        if self._source.read(1):
            raise BitstreamError("trailing garbage after the end-of-sequence marker")


def _rates_from_fields(intra_field: int, inter_field: int) -> dict:
    """Header rates from the two rate fields: plain whole rates, or the extended form."""
    if intra_field < EXTENDED_RATE_BASE:
        return {"intra_rate": intra_field, "inter_rate": inter_field}
    intra_code, per_gop = divmod(intra_field - EXTENDED_RATE_BASE, 2)
    rates = {"intra_rate": rate_from_code(intra_code), "inter_rate": rate_from_code(inter_field),
             "per_gop_rates": bool(per_gop)}
    if not _needs_extended_rates(intra_code, inter_field, bool(per_gop)):
        raise BitstreamError("invalid sequence header: extended rate fields holding whole rates below "
                             f"{EXTENDED_RATE_BASE} without per-GOP rates (they have the plain encoding)")
    return rates


def read_sequence_header(data: bytes | BinaryIO, max_side: int = DEFAULT_MAX_SIDE) -> SequenceHeader:
    return SequenceReader(data, max_side=max_side).header


def describe_sequence_file(data: bytes | BinaryIO, max_side: int = DEFAULT_MAX_SIDE) -> SequenceInfo:
    """Header fields, per-frame unit sizes and the real bpp (every unit is validated)."""
    reader = SequenceReader(data, max_side=max_side)
    header = reader.header
    units, gop_rates = [], []
    for unit in reader:
        units.append((unit.size, len(unit.payload)))
        if header.is_gop_start(unit.index):
            gop_rates.append((unit.index, unit.intra_rate, unit.inter_rate))
    total = reader._source.offset
    frames = len(units)
    return SequenceInfo(
        format_version=header.format_version,
        model_id=header.model_id,
        model_name=_model_name(header.model_id),
        intra_rate=header.intra_rate,
        inter_rate=header.inter_rate,
        height=header.height,
        width=header.width,
        frame_rate=str(header.frame_rate),
        frame_count=frames,
        open_ended=header.frame_count == 0,
        intra_period=header.intra_period,
        reset_interval=header.reset_interval,
        header_bytes=reader.header_bytes,
        unit_bytes=tuple(u for u, _ in units),
        payload_bytes=tuple(p for _, p in units),
        total_bytes=total,
        bpp=8 * total / (max(frames, 1) * header.height * header.width),
        gop_rates=tuple(gop_rates),
    )

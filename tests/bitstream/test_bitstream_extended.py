"""The extended image header (kind 2): a fractional rate and an optional coding scale.

Whole-rate, full-size headers must keep the kind-0 bytes (the golden files of
test_bitstream_golden.py); the kind-2 layout is pinned by its own golden file. Rewrite with
``python tests/bitstream/test_bitstream_extended.py --rewrite``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentcodec.bitstream import (
    RATE_FRACTION_STEPS,
    SCALE_DENOMINATOR,
    FileKind,
    ImageHeader,
    coded_side,
    crc8,
    describe_image_file,
    encode_varint,
    lead_byte,
    parse_lead_byte,
    read_image_file,
    read_image_header,
    write_image_file,
)
from latentcodec.errors import BitstreamError

GOLDEN = Path(__file__).resolve().parent / "golden" / "image_container_ext_v2.bin"
# rate 1 + 95/256 = 1.37109375, 130x200 coded at 40/64 -> 81x125
GOLDEN_HEADER = ImageHeader(model_id=1, rate_index=1, height=130, width=200, rate_fraction=95, scale=40)
SECTIONS = (b"\x00\x01\x02\x03\x04\x05\x06", b"tail")


def coded_layout(header: ImageHeader) -> list[int | None]:
    """GLC-style: a derived section sized from the *coded* size, then the rest."""
    n_z = math.ceil(header.coded_height / 64) * math.ceil(header.coded_width / 64)
    return [math.ceil(n_z * 14 / 8), None]


def test_golden_extended_file_bytes_and_fields():
    data = write_image_file(GOLDEN_HEADER, SECTIONS, coded_layout)
    assert data == GOLDEN.read_bytes()
    assert parse_lead_byte(data) is FileKind.IMAGE_EXTENDED and data[0] == 0xBA
    # rate field: (1*256 + 95) * 2 + 1 (scale follows) = 703 -> 2 varint bytes; scale 40 -> 1 byte
    assert data[1:4] == bytes([1]) + encode_varint(703)
    parsed = read_image_file(data, coded_layout, expected_model_id=1)
    assert parsed.header == GOLDEN_HEADER and parsed.sections == SECTIONS
    assert parsed.header.rate == 1.37109375 and (parsed.header.coded_height, parsed.header.coded_width) == (81, 125)


def test_whole_rates_at_full_size_keep_the_kind0_bytes():
    plain = ImageHeader(1, 3, 130, 200)
    assert not plain.extended and plain.rate == 3 and isinstance(plain.rate, int)
    data = write_image_file(plain, [bytes(21), b"y"], coded_layout)
    assert data[0] == 0xB2 and data[2] == 3


def test_extended_header_costs_one_byte_for_a_fraction_and_one_for_a_scale():
    base = len(write_image_file(ImageHeader(1, 2, 512, 768), [bytes(168), b"y"], coded_layout))
    fractional = len(write_image_file(ImageHeader(1, 2, 512, 768, rate_fraction=1), [bytes(168), b"y"], coded_layout))
    assert fractional == base + 1  # the rate field grows from 1 to 2 bytes
    scaled = ImageHeader(1, 2, 512, 768, rate_fraction=1, scale=32)
    assert len(write_image_file(scaled, [bytes(coded_layout(scaled)[0]), b"y"], coded_layout)) == base + 2 - 126


@settings(max_examples=200, deadline=None)
@given(rate_index=st.integers(0, 70), fraction=st.integers(0, RATE_FRACTION_STEPS - 1),
       scale=st.integers(0, SCALE_DENOMINATOR - 1), height=st.integers(1, 3000), width=st.integers(1, 3000),
       portable=st.booleans())
def test_round_trip_of_every_field(rate_index, fraction, scale, height, width, portable):
    header = ImageHeader(1, rate_index, height, width, portable, rate_fraction=fraction, scale=scale)
    data = write_image_file(header, [bytes(coded_layout(header)[0]), b"y"], coded_layout)
    assert read_image_file(data, coded_layout).header == header
    assert read_image_header(data)[0] == header
    info = describe_image_file(data, coded_layout)
    assert info.rate == rate_index + fraction / 256 and info.scale == scale
    assert (info.coded_height, info.coded_width) == (coded_side(height, scale), coded_side(width, scale))
    assert info.bpp == 8 * len(data) / (height * width)  # over the original size, scaled or not


def test_coded_side_rounds_in_integers_and_never_reaches_zero():
    assert coded_side(768, 0) == 768 and coded_side(768, 32) == 384 and coded_side(1, 1) == 1
    assert coded_side(130, 40) == 81  # 130 * 40 / 64 = 81.25


def _raw_extended(rate_field: int, scale: int | None, body: bytes = b"\x00" * 8) -> bytes:
    data = bytes([lead_byte(FileKind.IMAGE_EXTENDED)]) + encode_varint(1) + encode_varint(rate_field)
    data += encode_varint(64) + encode_varint(64) + (encode_varint(scale) if scale is not None else b"") + body
    return data + bytes([crc8(data)])


@pytest.mark.parametrize("rate_field, scale, message", [
    (2 * 256, None, "neither a rate fraction nor a scale"),  # non-canonical: must be kind 0
    (2 * 256 + 1, 0, "scale 0/64"),
    (2 * 256 + 1, 64, "scale 64/64"),
])
def test_invalid_extended_headers_are_one_line_errors(rate_field, scale, message):
    with pytest.raises(BitstreamError, match=message):
        read_image_file(_raw_extended(rate_field, scale), lambda h: [None])


def test_a_corrupt_scale_reads_as_a_checksum_error():
    data = bytearray(_raw_extended(2 * 256 + 1, 64))
    data[-1] ^= 0xFF
    with pytest.raises(BitstreamError, match="^checksum mismatch"):
        read_image_file(bytes(data), lambda h: [None])


def test_writer_rejects_out_of_range_fraction_and_scale():
    with pytest.raises(ValueError, match="rate_fraction"):
        write_image_file(ImageHeader(1, 0, 8, 8, rate_fraction=256), [b"", b"y"], lambda h: [None, None])
    with pytest.raises(ValueError, match="scale"):
        write_image_file(ImageHeader(1, 0, 8, 8, scale=64), [b"", b"y"], lambda h: [None, None])


if __name__ == "__main__" and sys.argv[1:] == ["--rewrite"]:
    GOLDEN.write_bytes(write_image_file(GOLDEN_HEADER, SECTIONS, coded_layout))
    print(f"wrote {GOLDEN}")

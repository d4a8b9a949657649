"""The image container: round trips, the 8-byte overhead target, and every rejection."""

from __future__ import annotations

import math
import random
import tracemalloc
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import latentcodec.bitstream.container as container
from latentcodec.bitstream import (
    DEFAULT_MAX_SIDE,
    FORMAT_VERSION,
    SUPPORTED_VERSIONS,
    FileKind,
    ImageHeader,
    crc8,
    describe_image_file,
    encode_varint,
    lead_byte,
    read_image_file,
    read_image_header,
    write_image_file,
)
from latentcodec.errors import BitstreamError
from latentcodec.zoo.registry import get_entry

GLC_IMAGE_ID = get_entry("glc-image").model_id


def glc_layout(header: ImageHeader) -> list[int | None]:
    """Synthetic GLC-image layout: 14-bit z index per 64x64 block (derived), then the y stream (rest)."""
    n_z = math.ceil(header.height / 64) * math.ceil(header.width / 64)
    return [math.ceil(n_z * 14 / 8), None]


def three_section_layout(header: ImageHeader) -> list[int | None]:
    """Derived, stored, implicit: exercises every kind of section."""
    return [header.rate_index + 1, None, None]


def all_derived_layout(header: ImageHeader) -> list[int | None]:
    return [2, 3]


def raw_image_file(model_id=1, rate_index=0, height=64, width=64, body=b"", lead=None, fix_crc=True) -> bytes:
    """Hand-built file (bypassing write_image_file's validation) with a correct CRC unless told otherwise."""
    data = bytes([lead_byte(FileKind.IMAGE) if lead is None else lead])
    data += b"".join(encode_varint(v) for v in (model_id, rate_index, height, width)) + body
    return data + bytes([crc8(data) if fix_crc else crc8(data) ^ 0x5A])


def small_glc_file() -> bytes:
    header = ImageHeader(model_id=GLC_IMAGE_ID, rate_index=2, height=100, width=130)  # n_z = 6 -> 11 bytes
    return write_image_file(header, [bytes(range(11)), b"\x91\x22\x7e\x05\xc3"], glc_layout)


def small_three_section_file() -> bytes:
    header = ImageHeader(model_id=3, rate_index=1, height=200, width=5)
    return write_image_file(header, [b"\x01\x02", b"cat", b"\xaa\xbb\xcc"], three_section_layout)


def parse(data: bytes, layout=glc_layout, **kwargs):
    return read_image_file(data, layout, **kwargs)


# -- round trips ------------------------------------------------------------------------------------
@st.composite
def image_files(draw):
    header = ImageHeader(
        model_id=draw(st.integers(0, 2**21)),
        rate_index=draw(st.integers(0, 1000)),
        height=draw(st.integers(1, DEFAULT_MAX_SIDE)),
        width=draw(st.integers(1, DEFAULT_MAX_SIDE)),
    )
    count = draw(st.integers(1, 4))
    sections = draw(st.lists(st.binary(max_size=200), min_size=count, max_size=count))
    derived = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    lengths = [len(section) if is_derived else None for section, is_derived in zip(sections, derived)]

    def layout(seen: ImageHeader) -> list[int | None]:
        assert seen == header
        return list(lengths)

    return header, sections, layout, lengths


@settings(max_examples=150, deadline=None)
@given(case=image_files())
def test_round_trip(case):
    header, sections, layout, lengths = case
    data = write_image_file(header, sections, layout)
    parsed = read_image_file(data, layout, expected_model_id=header.model_id)
    assert parsed.header == header
    assert parsed.sections == tuple(sections)
    assert read_image_file(bytearray(data), layout) == parsed == read_image_file(memoryview(data), layout)

    parsed_header, fields_end = read_image_header(data)
    assert parsed_header == header
    stored = [len(s) for s, n in zip(sections[:-1], lengths[:-1]) if n is None]
    stored_bytes = sum(len(encode_varint(n)) for n in stored)
    assert data[fields_end + stored_bytes:len(data) - 1] == b"".join(sections)

    info = describe_image_file(data, layout)
    assert (info.model_id, info.rate_index, info.height, info.width) == (
        header.model_id, header.rate_index, header.height, header.width)
    assert info.section_bytes == tuple(len(s) for s in sections)
    assert info.total_bytes == len(data) == info.header_bytes + sum(info.section_bytes)
    assert info.header_bytes == fields_end + stored_bytes + 1
    assert info.bpp == pytest.approx(8 * len(data) / (header.height * header.width))


@pytest.mark.parametrize("height,width", [(768, 512), (512, 768)])
@pytest.mark.parametrize("rate_index", range(4))
@pytest.mark.parametrize("y_bytes", [1, 60, 127, 128, 5000])
def test_glc_overhead_at_kodak_size_is_at_most_8_bytes(height, width, rate_index, y_bytes):
    header = ImageHeader(model_id=GLC_IMAGE_ID, rate_index=rate_index, height=height, width=width)
    z_bytes = glc_layout(header)[0]
    assert z_bytes == 168  # 96 positions x 14 bits
    sections = [bytes(z_bytes), bytes(range(256)) * (y_bytes // 256) + bytes(range(y_bytes % 256))]
    data = write_image_file(header, sections, glc_layout)
    overhead = len(data) - z_bytes - y_bytes
    assert overhead <= 8
    assert describe_image_file(data, glc_layout).header_bytes == overhead


def test_write_rejects_sections_that_do_not_match_the_layout():
    header = ImageHeader(GLC_IMAGE_ID, 0, 768, 512)
    with pytest.raises(ValueError, match="section 0 has 167 bytes but the layout derives 168"):
        write_image_file(header, [bytes(167), b"y"], glc_layout)
    with pytest.raises(ValueError, match="the layout has 2 sections but 1 were given"):
        write_image_file(header, [bytes(168)], glc_layout)


@pytest.mark.parametrize("field,value,message", [
    ("height", 0, "height must be at least 1"),
    ("width", -3, "width must be at least 1"),
    ("rate_index", -1, "rate_index must be at least 0"),
    ("model_id", -1, "model_id must be at least 0"),
    ("height", 64.0, "height must be an integer"),
])
def test_write_rejects_invalid_header_fields(field, value, message):
    fields = dict(model_id=1, rate_index=0, height=64, width=64)
    fields[field] = value
    with pytest.raises(ValueError, match=message):
        write_image_file(ImageHeader(**fields), [bytes(2), b""], glc_layout)


# -- rejections: each with its own message ----------------------------------------------------------
@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n", b"hello world", b"\x00" * 16, b"\xff\xd8\xff\xe0"])
def test_rejects_files_that_are_not_latentcodec_files(data):
    with pytest.raises(BitstreamError, match=r"^not a latentcodec file \(first byte 0x"):
        parse(data)


@pytest.mark.parametrize("version_field", [0, 3])
def test_rejects_unsupported_versions(version_field):
    lead = (0xB << 4) | (FileKind.IMAGE << 2) | version_field
    assert version_field not in SUPPORTED_VERSIONS
    with pytest.raises(BitstreamError, match=r"^unsupported latentcodec format version"):
        parse(raw_image_file(lead=lead, body=bytes(2)))


def test_rejects_video_files_and_truncated_compact_headers():
    video = raw_image_file(lead=lead_byte(FileKind.VIDEO_SEQUENCE), body=bytes(2))
    with pytest.raises(BitstreamError, match=r"^not an image file: it holds a latentcodec video sequence"):
        parse(video)
    # Kind 2 is the extended image header (test_bitstream_extended.py), 3 the compact one
    # (test_bitstream_compact.py), whose four field bytes must all be there.
    with pytest.raises(BitstreamError, match=r"^truncated file"):
        parse(raw_image_file(lead=(0xB << 4) | (3 << 2) | FORMAT_VERSION, body=bytes(2)))


def test_rejects_a_file_for_another_model():
    data = write_image_file(ImageHeader(7, 0, 64, 64), [bytes(2), b"y"], glc_layout)
    with pytest.raises(BitstreamError, match=r"^wrong model: the file was written by model id 7, expected "
                                             r"model id 1 \(glc-image\)"):
        parse(data, expected_model_id=GLC_IMAGE_ID)
    assert parse(data, expected_model_id=7).header.model_id == 7


def test_rejects_an_unknown_model_id_when_resolving_the_layout():
    data = write_image_file(ImageHeader(999_999, 0, 64, 64), [bytes(2), b"y"], glc_layout)
    with pytest.raises(BitstreamError, match=r"^unknown model id 999999"):
        read_image_file(data)
    with pytest.raises(BitstreamError, match=r"^unknown model id 999999"):
        describe_image_file(data)


@dataclass(frozen=True)
class FakeEntry:
    name: str
    kind: str

    def load_class(self):
        class FakeCodec:
            section_layout = staticmethod(glc_layout)

        return FakeCodec


def test_layout_none_resolves_through_the_registry(monkeypatch):
    monkeypatch.setattr(container, "get_entry_by_id", lambda model_id: FakeEntry("fake-image", "image"))
    data = small_glc_file()
    assert read_image_file(data) == read_image_file(data, glc_layout)
    assert describe_image_file(data).model_name == "fake-image"
    monkeypatch.setattr(container, "get_entry_by_id", lambda model_id: FakeEntry("fake-video", "video"))
    with pytest.raises(BitstreamError, match=r"^model id 1 \(fake-video\) is a video codec, not an image codec"):
        read_image_file(data)


@pytest.mark.parametrize("make_file,layout", [(small_glc_file, glc_layout),
                                              (small_three_section_file, three_section_layout)])
def test_every_truncation_is_rejected(make_file, layout):
    data = make_file()
    messages = {}
    for cut in range(len(data)):
        with pytest.raises(BitstreamError) as caught:
            read_image_file(data[:cut], layout)
        message = str(caught.value)
        assert message.startswith(("truncated file:", "checksum mismatch: the file is corrupt or truncated")), message
        messages[cut] = message
    # Cuts that end before the implicit last section are seen from the structure alone.
    implicit_start = len(data) - 1 - len(read_image_file(data, layout).sections[-1])
    assert all(messages[cut].startswith("truncated file:") for cut in range(implicit_start))


def test_derived_section_longer_than_the_file_is_rejected():
    data = raw_image_file(model_id=1, height=16384, width=16384, body=bytes(20))  # CRC is valid
    with pytest.raises(BitstreamError, match=r"^truncated file: section 0 needs 114688 bytes \(length derived "
                                             r"from the header\) but only 20 remain"):
        parse(data)


def test_stored_section_longer_than_the_file_is_rejected():
    body = encode_varint(500) + b"\x01" + b"abc"  # length of section 1, then section 0 (1 byte derived)
    data = raw_image_file(rate_index=0, body=body)
    with pytest.raises(BitstreamError, match=r"^truncated file: section 1 needs 500 bytes \(length stored\) but "
                                             r"only 3 remain"):
        read_image_file(data, three_section_layout)


def test_file_ending_inside_the_stored_lengths_is_truncated():
    header_only = raw_image_file(body=b"")[:-1]
    for last_byte in (0x05, 0x85):  # a complete varint where the CRC should be, or the start of one
        with pytest.raises(BitstreamError, match=r"^truncated file: it ends inside the (stored section lengths"
                                                 r"|length of section 0)"):
            read_image_file(header_only + bytes([last_byte]), lambda header: [None, None])


def test_trailing_garbage_is_rejected_when_the_last_length_is_derived():
    data = write_image_file(ImageHeader(1, 0, 64, 64), [b"ab", b"cde"], all_derived_layout)
    assert read_image_file(data, all_derived_layout).sections == (b"ab", b"cde")
    with pytest.raises(BitstreamError, match=r"^trailing garbage: 3 bytes after the last section"):
        read_image_file(data + b"xyz", all_derived_layout)
    crafted = raw_image_file(body=b"abcdeXY")  # checksum valid, still two bytes too many
    with pytest.raises(BitstreamError, match=r"^trailing garbage: 2 bytes after the last section"):
        read_image_file(crafted, all_derived_layout)


def test_garbage_appended_to_an_implicit_last_section_fails_the_checksum():
    data = small_glc_file()
    rng = random.Random(3)
    undetected = 0
    for _ in range(500):
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        try:
            parse(data + garbage)
            undetected += 1
        except BitstreamError as exc:
            assert str(exc).startswith("checksum mismatch")
    assert undetected <= 10  # 1/256 expected


@pytest.mark.parametrize("height,width", [(0, 64), (64, 0), (0, 0)])
def test_zero_sizes_are_rejected(height, width):
    data = raw_image_file(height=height, width=width, body=bytes(3))
    with pytest.raises(BitstreamError, match=rf"^invalid header: image size {height}x{width} \(sides must be at"):
        parse(data)
    with pytest.raises(BitstreamError, match="sides must be at least 1"):
        read_image_header(data)


def test_sizes_above_the_limit_are_rejected_and_the_limit_is_configurable():
    data = raw_image_file(height=16385, width=64, body=bytes(10))
    with pytest.raises(BitstreamError, match=r"^invalid header: image size 16385x64 exceeds the limit of 16384"):
        parse(data)
    with pytest.raises(BitstreamError, match=r"exceeds the limit of 100 pixels"):
        read_image_header(raw_image_file(height=101, width=64, body=bytes(10)), max_side=100)
    header, _ = read_image_header(data, max_side=20000)
    assert (header.height, header.width) == (16385, 64)


def test_giant_header_is_rejected_before_anything_is_sized_by_it():
    data = raw_image_file(height=10**9, width=10**9, body=bytes(4))
    layout_calls = []

    def spying_layout(header):
        layout_calls.append(header)
        return glc_layout(header)

    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError, match=r"^invalid header: image size 1000000000x1000000000 exceeds"):
            read_image_file(data, spying_layout)
        with pytest.raises(BitstreamError, match=r"exceeds the limit"):
            read_image_header(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert layout_calls == []
    assert peak < 64 * 1024


def test_huge_derived_length_within_a_raised_limit_allocates_nothing():
    data = raw_image_file(height=10**9, width=10**9, body=bytes(4))
    z_bytes = glc_layout(ImageHeader(1, 0, 10**9, 10**9))[0]
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError, match=rf"^truncated file: section 0 needs {z_bytes} bytes"):
            read_image_file(data, glc_layout, max_side=10**9)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_header_varint_of_100_continuation_bytes_is_rejected():
    data = bytes([lead_byte(FileKind.IMAGE)]) + b"\x01\x00" + b"\x80" * 100 + b"\x01"
    with pytest.raises(BitstreamError, match=r"^corrupt file: the height field at offset 3 is a varint longer than"):
        parse(data)


def test_header_cut_short_is_truncated():
    data = bytes([lead_byte(FileKind.IMAGE)]) + encode_varint(1) + encode_varint(0) + encode_varint(768)
    with pytest.raises(BitstreamError, match=r"^truncated file: it ends inside the width field"):
        parse(data)
    with pytest.raises(BitstreamError, match=r"^truncated file: it ends after the header"):
        parse(data + encode_varint(512))


def test_a_corrupted_field_is_reported_as_a_checksum_mismatch():
    """With a bad CRC, an odd-looking field is most likely corruption, not a file for another model."""
    bad_size = raw_image_file(height=0, width=64, body=bytes(3), fix_crc=False)
    bad_model = raw_image_file(model_id=5, body=bytes(3), fix_crc=False)
    for data, kwargs in ((bad_size, {}), (bad_model, {"expected_model_id": 1})):
        with pytest.raises(BitstreamError, match=r"^checksum mismatch: the file is corrupt or truncated \(stored "
                                                 r"CRC-8 0x[0-9A-F]{2}, computed 0x[0-9A-F]{2}\)"):
            parse(data, **kwargs)


def flip(data: bytes, *bits: int) -> bytes:
    corrupted = bytearray(data)
    for bit in bits:
        corrupted[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(corrupted)


@pytest.mark.parametrize("make_file,layout", [(small_glc_file, glc_layout),
                                              (small_three_section_file, three_section_layout)])
def test_every_single_bit_flip_is_detected(make_file, layout):
    """The CRC sits at a fixed place (the last byte), so the CRC-8 guarantee holds for the whole file."""
    data = make_file()
    checksum_reports = 0
    for bit in range(8 * len(data)):
        with pytest.raises(BitstreamError) as caught:
            read_image_file(flip(data, bit), layout)
        checksum_reports += str(caught.value).startswith("checksum mismatch")
    # Flips in the lead byte are named by what they break (magic, version, kind); most others reach the CRC.
    assert checksum_reports >= 8 * len(data) // 2


def test_almost_every_double_bit_flip_is_detected():
    """A 1-byte CRC cannot catch everything: measure. Expected miss rate for a CRC-8 <= 1/256."""
    data = small_glc_file()
    nbits = 8 * len(data)
    undetected = 0
    pairs = 0
    for first in range(nbits):
        for second in range(first + 1, nbits):
            pairs += 1
            try:
                read_image_file(flip(data, first, second), glc_layout)
                undetected += 1
            except BitstreamError:
                pass
    assert undetected / pairs < 1 / 256


def test_random_byte_corruption_is_detected_at_the_crc8_rate():
    data = small_three_section_file()
    rng = random.Random(7)
    trials, undetected = 3000, 0
    for _ in range(trials):
        corrupted = bytearray(data)
        for position in rng.sample(range(len(data)), rng.randrange(2, 6)):
            corrupted[position] = rng.randrange(256)
        if bytes(corrupted) == data:
            continue
        try:
            read_image_file(bytes(corrupted), three_section_layout)
            undetected += 1
        except BitstreamError:
            pass
    assert undetected / trials < 2 / 256


def test_describe_reports_the_real_rate():
    data = small_glc_file()
    info = describe_image_file(data, glc_layout)
    assert info.model_name == "glc-image"
    assert info.format_version == FORMAT_VERSION
    assert info.section_bytes == (11, 5)
    assert info.total_bytes == len(data)
    assert info.header_bytes == len(data) - 16
    assert info.bpp == 8 * len(data) / (100 * 130)

"""The compact (kind 3) image header: 6 bytes with the CRC, used when every field fits."""

from __future__ import annotations

import pytest

from latentcodec.bitstream.container import (
    FileKind,
    ImageHeader,
    describe_image_file,
    parse_lead_byte,
    read_image_file,
    write_image_file,
)
from latentcodec.errors import BitstreamError


def one_section(header):
    return [None]


@pytest.mark.parametrize("size", [(512, 768), (1, 1), (4096, 4096), (255, 4000)])
def test_compact_header_round_trips_in_six_bytes(size):
    header = ImageHeader(model_id=3, rate_index=15, height=size[0], width=size[1], compact=True)
    data = write_image_file(header, [b"payload"], one_section)
    assert parse_lead_byte(data) is FileKind.IMAGE_COMPACT
    assert describe_image_file(data, one_section).header_bytes == 6
    assert read_image_file(data, one_section).header == header


@pytest.mark.parametrize("fields", [dict(model_id=16), dict(rate_index=16), dict(height=4097), dict(width=5000),
                                    dict(rate_fraction=3)])
def test_fields_that_do_not_fit_fall_back_to_the_general_header(fields):
    header = ImageHeader(**{**dict(model_id=3, rate_index=1, height=512, width=768, compact=True), **fields})
    data = write_image_file(header, [b"payload"], one_section)
    assert parse_lead_byte(data) is not FileKind.IMAGE_COMPACT
    parsed = read_image_file(data, one_section).header
    assert (parsed.model_id, parsed.rate_index, parsed.height, parsed.width) == (
        header.model_id, header.rate_index, header.height, header.width)


def test_codecs_that_do_not_ask_keep_the_general_header():
    data = write_image_file(ImageHeader(1, 0, 512, 768), [b"x"], one_section)
    assert parse_lead_byte(data) is FileKind.IMAGE


def test_a_flipped_size_bit_is_a_checksum_error():
    data = bytearray(write_image_file(ImageHeader(3, 0, 512, 768, compact=True), [b"payload"], one_section))
    data[3] ^= 0x10
    with pytest.raises(BitstreamError, match="checksum mismatch"):
        read_image_file(bytes(data), one_section)

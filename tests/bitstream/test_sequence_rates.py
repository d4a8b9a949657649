"""Sequence files with fractional rates and per-GOP rates (the extended rate fields, issue 14)."""

from __future__ import annotations

import pytest

from latentcodec.bitstream import (
    FrameUnitError,
    SequenceHeader,
    SequenceReader,
    SequenceWriter,
    crc8,
    describe_sequence_file,
    encode_varint,
    write_sequence,
)
from latentcodec.bitstream.sequence import EXTENDED_RATE_BASE, encode_frame_unit
from latentcodec.errors import BitstreamError
from tests.bitstream.test_sequence import header as sequence_header


def header(**changes) -> SequenceHeader:
    """test_sequence's header with a 2-frame intra period, so that 5 frames make 3 GOPs."""
    return sequence_header(**{"frame_count": 5, "frame_rate_num": 25, "frame_rate_den": 1, "intra_period": 2,
                              "reset_interval": 0, **changes})


def replace_rate_fields(data: bytes, intra_field: int, inter_field: int) -> bytes:
    """The header of ``data`` (one-byte model id, rates, then the rest) with other rate fields and a valid CRC."""
    rest_start = 1 + 1 + len(encode_varint(data[2])) + 1  # whole rates below 128 are one byte each
    end = SequenceReader(data).header_bytes - 1
    head = data[:2] + encode_varint(intra_field) + encode_varint(inter_field) + data[rest_start:end]
    return head + bytes([crc8(head)])


def test_whole_rates_keep_the_plain_fields():
    data = write_sequence(header(frame_count=1), [b"x"])
    assert data[2:4] == bytes([21, 21]) and not header().extended_rates


@pytest.mark.parametrize("intra, inter", [(1.37109375, 20.5), (21, 20.5), (63, 0.00390625), (130, 2)])
def test_fractional_and_large_rates_round_trip_exactly(intra, inter):
    original = header(intra_rate=intra, inter_rate=inter, frame_count=2)
    data = write_sequence(original, [b"I", b"P"])
    read = SequenceReader(data).header
    assert read == original and (read.intra_rate, read.inter_rate) == (intra, inter)
    assert read.extended_rates and data[2] >= 0x80  # the intra field is at least 128: a 2-byte varint
    assert [(u.intra_rate, u.inter_rate) for u in SequenceReader(data)] == [(intra, inter)] * 2


def test_off_grid_rates_are_refused_when_writing():
    with pytest.raises(ValueError, match="1/256"):
        write_sequence(header(inter_rate=1.3, frame_count=1), [b"x"])


def test_per_gop_rates_ride_on_every_later_i_frame():
    rates = [(1.5, 2.25), (0.0, 3.0), (40, 40)]
    original = header(intra_rate=rates[0][0], inter_rate=rates[0][1], per_gop_rates=True)
    payloads = [b"I0", b"P1", b"I2", b"P3", b"I4"]  # intra period 2: GOPs start at 0, 2, 4
    data = write_sequence_with_gop_rates(original, payloads, rates)
    reader = SequenceReader(data)
    assert reader.header == original
    units = list(reader)
    assert [u.payload for u in units] == payloads
    assert [(u.intra_rate, u.inter_rate) for u in units] == [rates[0], rates[0], rates[1], rates[1], rates[2]]
    info = describe_sequence_file(data)
    assert info.gop_rates == ((0, 1.5, 2.25), (2, 0.0, 3.0), (4, 40, 40))
    assert info.total_bytes == len(data)


def write_sequence_with_gop_rates(original: SequenceHeader, payloads, rates) -> bytes:
    import io

    buffer = io.BytesIO()
    writer = SequenceWriter(buffer, original)
    for index, payload in enumerate(payloads):
        gop_rates = rates[index // 2] if index and index % 2 == 0 else None
        writer.write_frame(payload, gop_rates=gop_rates)
    writer.close()
    return buffer.getvalue()


def test_the_writer_wants_gop_rates_exactly_at_later_i_frames():
    import io

    writer = SequenceWriter(io.BytesIO(), header(per_gop_rates=True))
    with pytest.raises(ValueError, match="GOP rates"):
        writer.write_frame(b"I", gop_rates=(1, 1))  # the first GOP's rates are the header's
    writer.write_frame(b"I")
    writer.write_frame(b"P")
    with pytest.raises(ValueError, match="GOP rates"):
        writer.write_frame(b"I")
    plain = SequenceWriter(io.BytesIO(), header())
    plain.write_frame(b"I")
    plain.write_frame(b"P")
    with pytest.raises(ValueError, match="GOP rates"):
        plain.write_frame(b"I", gop_rates=(1, 1))


def test_a_plain_encoding_in_extended_fields_is_rejected():
    data = write_sequence(header(frame_count=1), [b"x"])
    noncanonical = replace_rate_fields(data, EXTENDED_RATE_BASE + 2 * 21 * 256, 21 * 256)
    with pytest.raises(BitstreamError, match="^invalid sequence header: extended rate fields holding whole rates"):
        SequenceReader(noncanonical)
    with_gop_flag = replace_rate_fields(data, EXTENDED_RATE_BASE + 2 * 21 * 256 + 1, 21 * 256)
    assert SequenceReader(with_gop_flag).header.per_gop_rates


def test_a_unit_cut_inside_or_right_after_its_gop_rates_names_its_frame():
    data = write_sequence_with_gop_rates(header(per_gop_rates=True), [b"I0", b"P1", b"I2", b"P3", b"I4"],
                                         [(21, 21), (1.5, 2.5), (3, 3)])
    reader = SequenceReader(data)
    start = next(u for u in reader if u.index == 1)
    offset = start.offset + start.size
    for body in (encode_varint(1 << 9), encode_varint(384) + encode_varint(640)):
        unit = encode_frame_unit(body, 2, reader.header_crc)
        broken = data[:offset] + unit
        with pytest.raises(FrameUnitError, match="^frame 2: corrupt frame unit") as caught:
            list(SequenceReader(broken))
        assert caught.value.frame_index == 2

"""The video sequence file: header, self-delimiting frame units, streaming reads, and errors that
name the frame."""

from __future__ import annotations

import io
import tracemalloc

import pytest

from latentcodec.bitstream import (
    END_OF_SEQUENCE,
    FrameUnitError,
    ImageHeader,
    SequenceHeader,
    SequenceReader,
    SequenceWriter,
    crc8,
    describe_sequence_file,
    encode_sequence_header,
    encode_varint,
    read_image_file,
    read_sequence_header,
    write_image_file,
    write_sequence,
)
from latentcodec.errors import BitstreamError


def header(**changes) -> SequenceHeader:
    fields = dict(model_id=2, intra_rate=21, inter_rate=21, height=144, width=176, frame_count=3,
                  frame_rate_num=30000, frame_rate_den=1001, intra_period=96, reset_interval=32)
    fields.update(changes)
    return SequenceHeader(**fields)


PAYLOADS = [b"I" * 40, b"P" * 200, b"p" * 7]


def test_worked_example_bytes():
    """The exact bytes of docs/bitstream.md's worked example (pins the format)."""
    data = write_sequence(header(frame_count=2, height=64, width=96, frame_rate_num=25, frame_rate_den=1,
                                 intra_rate=5, inter_rate=5), [b"\x01\x02\x03", b"\x04"])
    expected_header = bytes([0xB6, 0x02, 0x05, 0x05, 0x40, 0x60, 0x02, 0x19, 0x01, 0x60, 0x20])
    header_crc = crc8(expected_header)
    assert data[: len(expected_header) + 1] == expected_header + bytes([header_crc])
    unit0 = bytes([0x03, 0x01, 0x02, 0x03])
    unit1 = bytes([0x01, 0x04])
    crc0 = crc8(unit0, crc8(b"\x00", header_crc))
    crc1 = crc8(unit1, crc8(b"\x01", header_crc))
    assert data[len(expected_header) + 1 :] == unit0 + bytes([crc0]) + unit1 + bytes([crc1])
    assert data.hex(" ") == "b6 02 05 05 40 60 02 19 01 60 20 97 03 01 02 03 fe 01 04 dd"
    # Version 1 (float arithmetic) differs in the lead byte only, and so in every CRC after it.
    float_data = write_sequence(header(frame_count=2, height=64, width=96, frame_rate_num=25, frame_rate_den=1,
                                       intra_rate=5, inter_rate=5, portable=False), [b"\x01\x02\x03", b"\x04"])
    assert float_data.hex(" ") == "b5 02 05 05 40 60 02 19 01 60 20 b6 03 01 02 03 f8 01 04 f5"
    assert not SequenceReader(float_data).header.portable and SequenceReader(data).header.portable


def test_counted_round_trip_and_header_fields():
    data = write_sequence(header(), PAYLOADS)
    reader = SequenceReader(data, expected_model_id=2)
    assert reader.header == header()
    assert reader.header.frame_rate == pytest.approx(29.97, abs=1e-3)
    units = list(reader)
    assert [u.payload for u in units] == PAYLOADS
    assert [u.index for u in units] == [0, 1, 2]
    assert units[0].offset == reader.header_bytes
    assert sum(u.size for u in units) + reader.header_bytes == len(data)


def test_open_ended_round_trip_ends_with_the_marker():
    data = write_sequence(header(frame_count=0), PAYLOADS)
    assert data[-1] == END_OF_SEQUENCE
    assert [u.payload for u in SequenceReader(data)] == PAYLOADS
    info = describe_sequence_file(data)
    assert info.open_ended and info.frame_count == 3 and info.total_bytes == len(data)
    assert info.payload_bytes == (40, 200, 7)
    assert info.bpp == pytest.approx(8 * len(data) / (3 * 144 * 176))


@pytest.mark.parametrize("length, overhead", [(1, 2), (127, 2), (128, 3), (16511, 3), (16512, 4)])
def test_unit_overhead(length, overhead):
    writer = SequenceWriter(io.BytesIO(), header(frame_count=0))
    assert writer.write_frame(b"x" * length) - length == overhead


def test_writer_checks():
    writer = SequenceWriter(io.BytesIO(), header(frame_count=1))
    with pytest.raises(ValueError, match="empty"):
        writer.write_frame(b"")
    writer.write_frame(b"a")
    with pytest.raises(ValueError, match="announces 1"):
        writer.write_frame(b"b")
    short = SequenceWriter(io.BytesIO(), header(frame_count=2))
    short.write_frame(b"a")
    with pytest.raises(ValueError, match="announces 2"):
        short.close()
    for bad in (dict(height=0), dict(frame_rate_den=0), dict(model_id=-1), dict(width=1.5)):
        with pytest.raises(ValueError):
            encode_sequence_header(header(**bad))


def test_each_corrupt_byte_is_caught_and_units_name_their_frame():
    data = write_sequence(header(), PAYLOADS)
    reader = SequenceReader(data)
    starts = [u.offset for u in reader]
    header_end = starts[0]
    for position in range(len(data)):
        broken = bytearray(data)
        broken[position] ^= 0x20
        with pytest.raises(BitstreamError) as caught:
            list(SequenceReader(bytes(broken)))
        if position >= header_end:
            frame = max(i for i, start in enumerate(starts) if start <= position)
            assert isinstance(caught.value, FrameUnitError) and caught.value.frame_index == frame, position
            assert str(caught.value).startswith(f"frame {frame}: ")


def test_every_truncation_is_an_error():
    for frame_count in (3, 0):
        data = write_sequence(header(frame_count=frame_count), PAYLOADS)
        for size in range(len(data)):
            with pytest.raises(BitstreamError):
                list(SequenceReader(data[:size]))


def test_dropped_reordered_and_foreign_units():
    data = write_sequence(header(), PAYLOADS)
    units = list(SequenceReader(data))
    head = data[: units[0].offset]
    pieces = [data[u.offset : u.offset + u.size] for u in units]
    with pytest.raises(FrameUnitError, match="frame 1: checksum"):
        list(SequenceReader(head + pieces[0] + pieces[2]))
    with pytest.raises(FrameUnitError, match="frame 1: checksum"):
        list(SequenceReader(head + pieces[0] + pieces[2] + pieces[1]))
    other = write_sequence(header(inter_rate=22), PAYLOADS)
    other_units = list(SequenceReader(other))
    spliced = head + pieces[0] + other[other_units[1].offset : other_units[1].offset + other_units[1].size] + pieces[2]
    with pytest.raises(FrameUnitError, match="frame 1"):
        list(SequenceReader(spliced))


def test_end_and_garbage_errors():
    counted = write_sequence(header(), PAYLOADS)
    with pytest.raises(BitstreamError, match="trailing garbage"):
        list(SequenceReader(counted + b"\x00"))
    open_ended = write_sequence(header(frame_count=0), PAYLOADS)
    with pytest.raises(BitstreamError, match="trailing garbage after the end"):
        list(SequenceReader(open_ended + b"\x01"))
    with pytest.raises(FrameUnitError, match="frame 3: truncated.*end-of-sequence"):
        list(SequenceReader(open_ended[:-1]))
    # An end marker where the header announced more frames.
    units = list(SequenceReader(counted))
    with pytest.raises(FrameUnitError, match="frame 2: corrupt frame unit: a zero length"):
        list(SequenceReader(counted[: units[2].offset] + b"\x00"))
    buffer = io.BytesIO()
    writer = SequenceWriter(buffer, header(frame_count=4))
    for payload in PAYLOADS:
        writer.write_frame(payload)
    with pytest.raises(FrameUnitError, match="frame 3: truncated.*announces 4 frames"):
        list(SequenceReader(buffer.getvalue()))
    # Units are bound to their header: the same units after another header fail at frame 0.
    with pytest.raises(FrameUnitError, match="frame 0: checksum"):
        list(SequenceReader(encode_sequence_header(header(frame_count=4)) + counted[units[0].offset :]))


def test_header_errors():
    data = write_sequence(header(), PAYLOADS)
    size = len(encode_sequence_header(header()))
    broken = bytearray(data)
    broken[3] ^= 0x01
    with pytest.raises(BitstreamError, match="checksum mismatch in the sequence header"):
        SequenceReader(bytes(broken))
    with pytest.raises(BitstreamError, match="truncated"):
        SequenceReader(data[: size - 1])
    with pytest.raises(BitstreamError, match="wrong model"):
        SequenceReader(data, expected_model_id=1)
    with pytest.raises(BitstreamError, match="exceeds the limit"):
        SequenceReader(write_sequence(header(height=20000), PAYLOADS))
    assert read_sequence_header(write_sequence(header(height=20000), PAYLOADS), max_side=32768).height == 20000
    with pytest.raises(BitstreamError, match="not a latentcodec file"):
        SequenceReader(b"YUV4MPEG2 W1 H1\n")
    with pytest.raises(BitstreamError, match="empty"):
        SequenceReader(b"")


def test_image_and_video_files_are_told_apart():
    image = write_image_file(ImageHeader(1, 0, 10, 10), [b"z", b"y"], lambda h: [None, None])
    with pytest.raises(BitstreamError, match="not a video sequence file"):
        SequenceReader(image)
    video = write_sequence(header(), PAYLOADS)
    with pytest.raises(BitstreamError, match="not an image file"):
        read_image_file(video, lambda h: [None, None])


class CountingStream(io.RawIOBase):
    def __init__(self, data: bytes):
        self.inner = io.BytesIO(data)
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.inner.readinto(buffer)
        self.consumed += count
        return count


def test_reading_streams_unit_by_unit():
    payloads = [bytes([i % 251 + 1]) * 5000 for i in range(20)]
    data = write_sequence(header(frame_count=20), payloads)
    stream = CountingStream(data)
    reader = SequenceReader(stream)
    first = next(iter(reader))
    assert first.payload == payloads[0]
    assert stream.consumed <= reader.header_bytes + first.size  # nothing read ahead
    assert [u.payload for u in reader] == payloads[1:]


def test_a_huge_length_field_allocates_nothing():
    encoded = encode_sequence_header(header(frame_count=0))
    data = encoded + encode_varint(2**62) + b"abc"
    tracemalloc.start()
    with pytest.raises(FrameUnitError, match="frame 0: truncated"):
        list(SequenceReader(data))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 1024
    too_long = encoded + b"\xff" * 12
    with pytest.raises(FrameUnitError, match="longer than 9 bytes"):
        list(SequenceReader(too_long))

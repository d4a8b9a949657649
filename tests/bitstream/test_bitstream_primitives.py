"""Varint and CRC-8 primitives shared by the image (and later video) file formats."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from latentcodec.bitstream import MAX_VARINT_BYTES, crc8, decode_varint, encode_varint, varint_size
from latentcodec.errors import BitstreamError

MAX_9_BYTE_VALUE = 128**9 - 1 + sum(128**i for i in range(1, 9))  # bijective base-128 range of 9 bytes


def crc8_bitwise(data: bytes, polynomial: int = 0x07) -> int:
    """Independent reference: long division over GF(2), one bit at a time."""
    crc = 0
    for byte in data:
        for bit in range(7, -1, -1):
            feedback = ((crc >> 7) & 1) ^ ((byte >> bit) & 1)
            crc = (crc << 1) & 0xFF
            if feedback:
                crc ^= polynomial
    return crc


# -- varints ----------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(value=st.integers(0, MAX_9_BYTE_VALUE), prefix=st.binary(max_size=4), suffix=st.binary(max_size=4))
def test_varint_round_trip_at_any_offset(value, prefix, suffix):
    encoded = encode_varint(value)
    assert len(encoded) == varint_size(value) <= MAX_VARINT_BYTES
    assert all(byte & 0x80 for byte in encoded[:-1]) and not encoded[-1] & 0x80
    assert decode_varint(prefix + encoded + suffix, len(prefix)) == (value, len(prefix) + len(encoded))


def test_one_and_two_byte_varints_are_a_bijection_onto_0_to_16511():
    """Every 1- and 2-byte sequence is a distinct value: no overlong encodings, nothing wasted."""
    sequences = [bytes([b]) for b in range(128)]
    sequences += [bytes([0x80 | low, high]) for low, high in itertools.product(range(128), range(128))]
    values = sorted(decode_varint(seq)[0] for seq in sequences)
    assert values == list(range(128 + 128 * 128))
    for value in values:
        assert decode_varint(encode_varint(value)) == (value, varint_size(value))


@pytest.mark.parametrize("value,size", [(0, 1), (127, 1), (128, 2), (512, 2), (768, 2), (16384, 2), (16511, 2),
                                        (16512, 3), (MAX_9_BYTE_VALUE, 9)])
def test_varint_sizes(value, size):
    assert varint_size(value) == size


def test_encode_varint_rejects_negative_and_oversized_values():
    with pytest.raises(ValueError, match="non-negative"):
        encode_varint(-1)
    with pytest.raises(ValueError, match="limit of 9 bytes"):
        encode_varint(MAX_9_BYTE_VALUE + 1)
    with pytest.raises(ValueError, match="limit of 2 bytes"):
        encode_varint(16512, max_bytes=2)


def test_varint_of_100_continuation_bytes_is_rejected_after_max_bytes():
    class CountingBytes:
        """Records which positions the decoder reads."""

        def __init__(self, data: bytes):
            self.data, self.read = data, set()

        def __len__(self):
            return len(self.data)

        def __getitem__(self, index):
            self.read.add(index)
            return self.data[index]

    data = CountingBytes(b"\x80" * 100 + b"\x00")
    with pytest.raises(BitstreamError, match=r"^corrupt file: the width field at offset 0 is a varint longer than 9"):
        decode_varint(data, 0, field="width field")
    assert max(data.read) == MAX_VARINT_BYTES - 1


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff"])
def test_varint_cut_short_is_a_truncated_file(data):
    with pytest.raises(BitstreamError, match=r"^truncated file: it ends inside the height field"):
        decode_varint(data, 0, field="height field")


# -- CRC-8 ------------------------------------------------------------------------------------------
def test_crc8_is_the_catalogued_crc8_smbus():
    assert crc8(b"123456789") == 0xF4  # check value of CRC-8/SMBUS in the CRC catalogue
    assert crc8(b"") == 0


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64), split=st.integers(0, 64))
def test_crc8_matches_bitwise_division_and_chains(data, split):
    assert crc8(data) == crc8_bitwise(data)
    assert crc8(data[split:], crc8(data[:split])) == crc8(data)
    assert crc8(bytearray(data)) == crc8(memoryview(data)) == crc8(data)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=1, max_size=300), position=st.integers(0, 2399), burst=st.integers(1, 255))
def test_crc8_catches_every_burst_of_up_to_8_bits(data, position, burst):
    """Single-bit errors included: guaranteed for a CRC whose polynomial has a constant term."""
    nbits = 8 * len(data)
    error = (burst << (position % nbits)) & ((1 << nbits) - 1)
    assume(error != 0)
    corrupted = (int.from_bytes(data, "big") ^ error).to_bytes(len(data), "big")
    assert crc8(corrupted) != crc8(data)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=200), positions=st.sets(st.integers(0, 1599), min_size=1, max_size=9))
def test_crc8_catches_every_odd_number_of_flipped_bits(data, positions):
    """Polynomial 0x07 = (x + 1)(...): odd-weight errors are always detected."""
    positions = {p % (8 * len(data)) for p in positions}
    assume(len(positions) % 2 == 1)
    corrupted = bytearray(data)
    for p in positions:
        corrupted[p // 8] ^= 0x80 >> (p % 8)
    assert crc8(corrupted) != crc8(data)

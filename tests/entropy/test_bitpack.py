import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentcodec.entropy import pack_indices, packed_size, unpack_indices
from latentcodec.errors import BitstreamError


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 24), st.integers(0, 300), st.integers(0, 2**32 - 1))
def test_round_trip_and_exact_size_for_1_to_24_bits(bits, count, seed):
    indices = np.random.default_rng(seed).integers(0, 2**bits, size=count)
    data = pack_indices(torch.from_numpy(indices), bits)
    assert len(data) == packed_size(count, bits) == -(-count * bits // 8)
    decoded = unpack_indices(data, count, bits)
    assert decoded.dtype == torch.int64
    assert np.array_equal(decoded.numpy(), indices)


def test_msb_first_without_per_index_byte_rounding():
    assert pack_indices(np.array([1]), 1) == b"\x80"
    assert pack_indices(np.array([0b101, 0b011]), 3) == bytes([0b10101100])
    # Two 14-bit indices fill 28 bits: 3.5 bytes -> 4 bytes, not 2 x 2.
    data = pack_indices(np.array([0x3FFF, 0x0001]), 14)
    assert data == bytes([0xFF, 0xFC, 0x00, 0x10])


def test_large_and_blocked_inputs_round_trip():
    rng = np.random.default_rng(0)
    for bits, count in [(14, 70001), (63, 1000), (12, 65536), (1, 131075)]:
        indices = rng.integers(0, 2**bits, size=count, dtype=np.int64)
        data = pack_indices(indices, bits)
        assert len(data) == packed_size(count, bits)
        assert np.array_equal(unpack_indices(data, count, bits).numpy(), indices)


def test_multidimensional_input_is_flattened_in_c_order():
    indices = torch.arange(24).reshape(2, 3, 4)
    assert unpack_indices(pack_indices(indices, 5), 24, 5).tolist() == list(range(24))


def test_zero_bits_and_zero_count():
    assert pack_indices(np.zeros(5, dtype=np.int64), 0) == b""
    assert unpack_indices(b"", 5, 0).tolist() == [0] * 5
    assert pack_indices(np.zeros(0, dtype=np.int64), 14) == b""
    assert unpack_indices(b"", 0, 14).shape == (0,)


def test_pack_rejects_out_of_range_and_non_integer_indices():
    with pytest.raises(ValueError):
        pack_indices(np.array([16384]), 14)
    with pytest.raises(ValueError):
        pack_indices(np.array([-1]), 14)
    with pytest.raises(ValueError):
        pack_indices(np.array([1.0]), 14)
    with pytest.raises(ValueError):
        pack_indices(np.array([1]), 64)


def test_unpack_rejects_short_data_and_dirty_padding():
    data = pack_indices(np.array([1, 2, 3]), 14)  # 42 bits -> 6 bytes, 6 padding bits
    with pytest.raises(BitstreamError):
        unpack_indices(data[:-1], 3, 14)
    with pytest.raises(BitstreamError):
        unpack_indices(data[:-1] + bytes([data[-1] | 1]), 3, 14)
    # Longer buffers are fine: only the first packed_size bytes are read.
    assert unpack_indices(data + b"\xff\xff", 3, 14).tolist() == [1, 2, 3]

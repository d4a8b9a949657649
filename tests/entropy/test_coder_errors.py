"""Damaged streams and API misuse.

What a damaged stream does (see latentcodec/entropy/coder.py): appended or zero-padded bytes always
raise BitstreamError at finish(); truncation and bit flips either raise BitstreamError or decode
"wrong but safe" (tensors of the requested shape and dtype, categorical/uniform values in range),
because a near-redundancy-free range code cannot tell them apart from other valid streams.
No other exception type may escape.
"""

import constriction
import numpy as np
import pytest
import torch
from entropy_test_helpers import edge_symbols, random_scales
from hypothesis import given, settings
from hypothesis import strategies as st

from latentcodec.entropy import DEFAULT_SCALE_TABLE, EntropyDecoder, EntropyEncoder, gaussian_tables
from latentcodec.errors import BitstreamError

CATEGORIES, UNIFORM_SIZE = 300, 1000


def make_stream(seed: int):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 200))
    scale_index = DEFAULT_SCALE_TABLE.index(random_scales((count,), rng))
    symbols = torch.from_numpy(edge_symbols(scale_index.numpy(), rng))
    generator = torch.Generator().manual_seed(seed)
    probabilities = torch.rand(10, CATEGORIES, generator=generator) ** 6
    tokens = torch.multinomial(probabilities, 1, generator=generator)[:, 0]
    encoder = EntropyEncoder()
    encoder.encode_gaussian(symbols, scale_index)
    encoder.encode_categorical(tokens, probabilities)
    encoder.encode_uniform(tokens, UNIFORM_SIZE)
    return encoder.finish(), scale_index, probabilities


def decode_stream(data, scale_index, probabilities):
    decoder = EntropyDecoder(data)
    residuals = decoder.decode_gaussian(scale_index)
    tokens = decoder.decode_categorical(probabilities)
    uniform = decoder.decode_uniform(10, UNIFORM_SIZE)
    # Wrong-but-safe contract: shapes, dtypes and ranges hold even before finish() judges the data.
    assert residuals.shape == scale_index.shape and residuals.dtype == torch.int64
    assert tokens.shape == (10,) and 0 <= int(tokens.min()) and int(tokens.max()) < CATEGORIES
    assert uniform.shape == (10,) and 0 <= int(uniform.min()) and int(uniform.max()) < UNIFORM_SIZE
    decoder.finish()
    return residuals, tokens, uniform


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.data())
def test_truncation_raises_bitstream_error_or_decodes_safely(seed, data):
    stream, scale_index, probabilities = make_stream(seed)
    cut = data.draw(st.integers(0, len(stream) - 1))
    try:
        decode_stream(stream[:cut], scale_index, probabilities)
    except BitstreamError:
        pass


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.data())
def test_bit_flips_raise_bitstream_error_or_decode_safely(seed, data):
    stream, scale_index, probabilities = make_stream(seed)
    damaged = bytearray(stream)
    position = data.draw(st.integers(0, len(stream) - 1))
    damaged[position] ^= 1 << data.draw(st.integers(0, 7))
    try:
        decode_stream(bytes(damaged), scale_index, probabilities)
    except BitstreamError:
        pass


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.binary(min_size=1, max_size=4))
def test_appended_bytes_always_raise(seed, suffix):
    stream, scale_index, probabilities = make_stream(seed)
    decode_stream(stream, scale_index, probabilities)
    with pytest.raises(BitstreamError):
        decode_stream(stream + suffix, scale_index, probabilities)


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=0, max_size=64))
def test_arbitrary_bytes_never_raise_anything_but_bitstream_error(garbage):
    scale_index = torch.tensor([0, 10, 100, 255, 255, 255])
    try:
        decode_stream(garbage, scale_index, torch.ones(10, CATEGORIES))
    except BitstreamError:
        pass


def test_bit_flips_are_detected_some_of_the_time():
    """The canonical-termination check has teeth: it must catch a noticeable share of flips."""
    detected = 0
    trials = 60
    for seed in range(trials):
        stream, scale_index, probabilities = make_stream(seed)
        damaged = bytearray(stream)
        damaged[seed % len(stream)] ^= 1 << (seed % 8)
        try:
            decode_stream(bytes(damaged), scale_index, probabilities)
        except BitstreamError:
            detected += 1
    assert detected >= trials // 10


def crafted_escape_stream(sign_bin: int, length: int, mantissa: int) -> bytes:
    """A stream for one residual at scale index 0 (R = 1) with a hand-chosen escape payload."""
    model = constriction.stream.model
    tables = gaussian_tables(DEFAULT_SCALE_TABLE)
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(np.array([sign_bin], dtype=np.int32), tables.models[0])
    encoder.encode(np.array([length], dtype=np.int32), tables.escape_length_model)
    for low_bit in range(0, length, 16):
        bits = min(16, length - low_bit)
        chunk = (mantissa >> low_bit) & ((1 << bits) - 1)
        encoder.encode(np.array([chunk], dtype=np.int32), model.Uniform(), np.array([1 << bits], dtype=np.int32))
    return encoder.get_compressed().astype(">u4").tobytes()


@pytest.mark.parametrize(
    "sign_bin, length, mantissa, expected",
    [
        (0, 62, 2**62 - 1, -(2**63)),  # R + 2**62 + mantissa = 2**63: the most negative int64
        (4, 62, 2**62 - 3, 2**63 - 2),
        (4, 62, 2**62 - 1, None),  # 2**63 overflows the positive range
        (0, 63, 0, None),  # length 63 never comes from the encoder
    ],
)
def test_escape_payloads_beyond_int64_raise_instead_of_wrapping(sign_bin, length, mantissa, expected):
    decoder = EntropyDecoder(crafted_escape_stream(sign_bin, length, mantissa), verify=False)
    if expected is None:
        with pytest.raises(BitstreamError):
            decoder.decode_gaussian(torch.zeros(1, dtype=torch.int64))
    else:
        assert decoder.decode_gaussian(torch.zeros(1, dtype=torch.int64)).tolist() == [expected]


def test_misuse_raises_value_error():
    encoder = EntropyEncoder()
    index = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError):
        encoder.encode_gaussian(torch.zeros(4), index)  # shape mismatch
    with pytest.raises(ValueError):
        encoder.encode_gaussian(torch.tensor([0.5, 0.0, 1.0]), index)  # not integral
    with pytest.raises(ValueError):
        encoder.encode_gaussian(torch.tensor([float("nan"), 0.0, 1.0]), index)
    with pytest.raises(ValueError):
        encoder.encode_gaussian(torch.tensor([1e30, 0.0, 1.0]), index)  # beyond int64
    with pytest.raises(ValueError):
        encoder.encode_gaussian(torch.zeros(3), index.float())  # scales instead of indices
    with pytest.raises(ValueError):
        encoder.encode_gaussian(torch.zeros(3), torch.tensor([0, 256, 1]))
    with pytest.raises(ValueError):
        encoder.encode_categorical(torch.tensor([0, 4]), torch.ones(2, 4))  # index == K
    with pytest.raises(ValueError):
        encoder.encode_categorical(torch.tensor([0]), torch.ones(4))  # not (N, K)
    with pytest.raises(ValueError):
        encoder.encode_categorical(torch.tensor([0, 1]), torch.ones(3, 4))  # N mismatch
    with pytest.raises(ValueError):
        encoder.encode_uniform(torch.tensor([5]), 5)
    with pytest.raises(ValueError):
        encoder.encode_uniform(torch.tensor([0]), 0)
    assert encoder.finish() == b""  # nothing half-written by the rejected calls
    with pytest.raises(RuntimeError):
        encoder.finish()
    decoder = EntropyDecoder(b"")
    decoder.finish()
    with pytest.raises(RuntimeError):
        decoder.decode_uniform(1, 2)

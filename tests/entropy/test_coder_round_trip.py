import numpy as np
import pytest
import torch
from entropy_test_helpers import EDGE_SCALES, INT64_MAX, INT64_MIN, edge_symbols, random_scales, round_trip
from hypothesis import given, settings
from hypothesis import strategies as st

from latentcodec.entropy import (
    DEFAULT_SCALE_TABLE,
    MAX_CATEGORIES,
    EntropyDecoder,
    EntropyEncoder,
    gaussian_code_bits,
    gaussian_tables,
)

SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 0, 3), (2, 3, 4, 5), (1, 4, 6, 6)]
TABLES = gaussian_tables(DEFAULT_SCALE_TABLE)


def gaussian_call(shape, rng):
    scale_index = DEFAULT_SCALE_TABLE.index(random_scales(shape, rng))
    symbols = torch.from_numpy(np.asarray(edge_symbols(scale_index.numpy(), rng)).reshape(shape))
    return {"symbols": symbols, "scale_index": scale_index}


def categorical_call(count, categories, rng):
    logits = rng.normal(0.0, rng.uniform(0.1, 8.0), size=(count, categories))
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    # Near-zero, exactly-zero and NaN entries must leave every symbol codable.
    probabilities[rng.random(probabilities.shape) < 0.2] = 1e-30
    probabilities[rng.random(probabilities.shape) < 0.1] = 0.0
    probabilities[rng.random(probabilities.shape) < 0.02] = np.nan
    indices = rng.integers(0, categories, size=count)
    return {"indices": torch.from_numpy(indices), "probabilities": torch.from_numpy(probabilities).float()}


def uniform_call(count, num_symbols, rng):
    indices = rng.integers(0, num_symbols, size=count, dtype=np.uint64).astype(np.int64)
    return {"indices": torch.from_numpy(indices), "num_symbols": num_symbols}


def assert_round_trip(operations, decoded):
    for (kind, args), result in zip(operations, decoded):
        assert result.dtype == torch.int64
        if kind == "g":
            assert result.shape == args["scale_index"].shape
            assert torch.equal(result, args["symbols"].to(torch.int64))
        else:
            assert torch.equal(result, args["indices"].reshape(-1).to(torch.int64))


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(SHAPES), st.integers(0, 2**32 - 1))
def test_gaussian_round_trip_any_shape_with_edge_scales_and_extreme_symbols(shape, seed):
    operations = [("g", gaussian_call(shape, np.random.default_rng(seed)))]
    _, decoded = round_trip(operations)
    assert_round_trip(operations, decoded)


@pytest.mark.parametrize("scale", EDGE_SCALES)
@pytest.mark.parametrize(
    "value", [0, 1, -1, 2, -2, 269, -269, 270, -270, 2**20, -(2**20), 10**6, -(10**6), INT64_MAX, INT64_MIN]
)
def test_every_edge_symbol_at_every_edge_scale(scale, value):
    scale_index = DEFAULT_SCALE_TABLE.index(torch.full((3,), scale))
    symbols = torch.tensor([value, 0, -value if value != INT64_MIN else INT64_MAX])
    operations = [("g", {"symbols": symbols, "scale_index": scale_index})]
    _, decoded = round_trip(operations)
    assert_round_trip(operations, decoded)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int32, torch.int16])
def test_integral_float_and_narrow_int_symbols(dtype):
    rng = np.random.default_rng(7)
    scale_index = DEFAULT_SCALE_TABLE.index(random_scales((4, 9), rng))
    symbols = torch.from_numpy(np.rint(rng.normal(0.0, 30.0, (4, 9)))).to(dtype)
    encoder = EntropyEncoder()
    encoder.encode_gaussian(symbols, scale_index)
    decoder = EntropyDecoder(encoder.finish())
    assert torch.equal(decoder.decode_gaussian(scale_index), symbols.to(torch.int64))
    decoder.finish()


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("gcu"), st.integers(0, 40), st.integers(0, 2**32 - 1)),
        min_size=0,
        max_size=8,
    )
)
def test_interleaved_gaussian_categorical_uniform_calls(plan):
    operations = []
    for kind, count, seed in plan:
        rng = np.random.default_rng(seed)
        if kind == "g":
            operations.append(("g", gaussian_call((count,), rng)))
        elif kind == "c":
            categories = int(rng.choice([1, 2, 3, 17, 256, 1000, 4096]))
            operations.append(("c", categorical_call(count, categories, rng)))
        else:
            num_symbols = int(rng.choice([1, 2, 7, 256, 16384, 2**24 - 1, 2**24, 2**24 + 1, 2**40 + 3, 2**63]))
            operations.append(("u", uniform_call(count, num_symbols, rng)))
    data, decoded = round_trip(operations)
    assert_round_trip(operations, decoded)
    # Same inputs, same bytes.
    assert round_trip(operations)[0] == data


@pytest.mark.parametrize("categories", [2, 3, 255, 4096, 16384])
def test_categorical_round_trip_with_degenerate_rows(categories):
    rng = np.random.default_rng(categories)
    count = 12
    call = categorical_call(count, categories, rng)
    probabilities = call["probabilities"].clone()
    probabilities[0] = 0.0  # all-zero row
    probabilities[1] = float("nan")  # all-NaN row
    probabilities[2, :] = 0.0
    probabilities[2, 0] = 1.0  # a one-hot row, coding a different symbol
    probabilities[3, 1] = float("inf")
    probabilities[4] = -1.0  # negative entries count as zero
    probabilities[5] *= 1e30  # unnormalised
    indices = call["indices"].clone()
    indices[2] = categories - 1
    operations = [("c", {"indices": indices, "probabilities": probabilities})]
    _, decoded = round_trip(operations)
    assert_round_trip(operations, decoded)


def test_categorical_cost_is_close_to_cross_entropy_at_24_bit_precision():
    """K = 16384 reserves 0.1 % of the mass at 24 bits (0.0014 bit/token); 16 bits would cost ~0.4."""
    rng = np.random.default_rng(0)
    count, categories = 300, 16384
    logits = rng.normal(0.0, 4.0, size=(count, categories))
    logits[np.arange(count), rng.integers(0, categories, count)] += 30.0  # confident predictions
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    indices = np.array([rng.choice(categories, p=row) for row in probabilities])
    ideal_bits = -np.log2(probabilities[np.arange(count), indices]).sum()
    encoder = EntropyEncoder()
    encoder.encode_categorical(torch.from_numpy(indices), torch.from_numpy(probabilities))
    data = encoder.finish()
    assert 8 * len(data) <= ideal_bits + 0.002 * count + 10


@pytest.mark.parametrize("num_symbols", [1, 2, 3, 1000, 2**24 - 1, 2**24, 2**40 + 3, 2**63])
def test_uniform_round_trip_including_large_alphabets(num_symbols):
    rng = np.random.default_rng(num_symbols % 1000)
    call = uniform_call(50, num_symbols, rng)
    call["indices"][0] = 0
    call["indices"][1] = num_symbols - 1 if num_symbols <= INT64_MAX + 1 else 0
    operations = [("u", call)]
    data, decoded = round_trip(operations)
    assert_round_trip(operations, decoded)
    if num_symbols in (2, 2**40 + 3):
        assert 8 * len(data) <= 50 * np.log2(num_symbols) + 9


def test_empty_streams_are_zero_bytes():
    encoder = EntropyEncoder()
    assert encoder.finish() == b""
    encoder = EntropyEncoder()
    encoder.encode_gaussian(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64))
    encoder.encode_categorical(torch.zeros(4, dtype=torch.int64), torch.ones(4, 1))  # K = 1: no information
    encoder.encode_uniform(torch.zeros(5, dtype=torch.int64), 1)
    encoder.encode_uniform(torch.zeros(0, dtype=torch.int64), 1000)
    assert encoder.finish() == b""
    decoder = EntropyDecoder(b"")
    assert decoder.decode_gaussian(torch.zeros(0, 3, dtype=torch.int64)).shape == (0, 3)
    assert decoder.decode_categorical(torch.ones(4, 1)).tolist() == [0, 0, 0, 0]
    assert decoder.decode_uniform(5, 1).tolist() == [0] * 5
    decoder.finish()


@pytest.mark.parametrize("count", [1, 10, 1000, 50000])
def test_coded_size_is_within_a_byte_of_the_information_content(count):
    """Termination costs <= ~2 bits + byte rounding; the range coder's own rounding adds ~1e-4 bit/symbol."""
    rng = np.random.default_rng(count)
    scale_index = rng.integers(0, 256, count)
    sigma = DEFAULT_SCALE_TABLE.values()[scale_index] * rng.uniform(0.5, 2.0, count)
    symbols = np.rint(rng.normal(0.0, sigma)).astype(np.int64)
    encoder = EntropyEncoder()
    encoder.encode_gaussian(torch.from_numpy(symbols), torch.from_numpy(scale_index))
    data = encoder.finish()
    information = gaussian_code_bits(symbols, scale_index)
    assert 8 * len(data) - information <= 10 + 2e-4 * count


def test_escape_cost_is_bounded():
    """A residual of 2**20 at sigma = 0.11: escape bin (16 bits) + Exp-Golomb length and mantissa."""
    scale_index = torch.zeros(1, dtype=torch.int64)
    for value in (2**20, -(2**20), 10**6, INT64_MAX):
        bits = gaussian_code_bits(np.array([value]), scale_index.numpy())
        magnitude_bits = int(abs(value)).bit_length()
        assert bits <= 17 + 2 * magnitude_bits
        encoder = EntropyEncoder()
        encoder.encode_gaussian(torch.tensor([value]), scale_index)
        assert 8 * len(encoder.finish()) <= bits + 10


def test_outliers_cost_about_the_escape_floor_and_the_mode_leaks_little():
    """The 2**-16 escape floor: an outlier just past R costs ~17 bits; r = 0 at sigma = 0.11 ~5e-5 bit."""
    level0 = np.zeros(1, dtype=np.int64)
    assert 16.0 <= gaussian_code_bits(np.array([2]), level0) <= 17.1
    assert gaussian_code_bits(np.array([0]), level0) <= 6e-5


def test_decoder_without_verification_skips_the_check():
    encoder = EntropyEncoder()
    encoder.encode_uniform(torch.tensor([3, 1, 2]), 5)
    data = encoder.finish() + b"\x00\x00"
    decoder = EntropyDecoder(data, verify=False)
    assert decoder.decode_uniform(3, 5).tolist() == [3, 1, 2]
    decoder.finish()


def test_max_categories_constant_matches_constriction_limit():
    assert MAX_CATEGORIES == 2**24 - 2


def test_termination_handles_streams_that_end_with_a_pending_carry():
    """~4 % of streams end with lower + range >= 2**64 (constriction's "inverted" state, carry pending)."""
    rng = np.random.default_rng(5)
    pending_carry = 0
    for _ in range(400):
        count, num_symbols = int(rng.integers(1, 30)), int(rng.choice([2, 3, 5, 100, 2**20 + 7]))
        symbols = torch.from_numpy(rng.integers(0, num_symbols, count))
        encoder = EntropyEncoder()
        encoder.encode_uniform(symbols, num_symbols)
        _, (lower, size) = encoder._coder.pos()
        pending_carry += lower + size >= 2**64
        decoder = EntropyDecoder(encoder.finish())
        assert torch.equal(decoder.decode_uniform(count, num_symbols), symbols)
        decoder.finish()
    assert pending_carry >= 4

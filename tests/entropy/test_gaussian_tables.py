import numpy as np
import pytest
import torch
from scipy.special import ndtr

from latentcodec.entropy import DEFAULT_SCALE_TABLE, EntropyEncoder, ScaleTable, gaussian_tables
from latentcodec.entropy._exact_math import exact_exp, gaussian_upper_tail, log_spaced_values
from latentcodec.entropy.gaussian import ESCAPE_FLOOR, TAIL_Z, TOTAL_COUNT

TABLES = gaussian_tables(DEFAULT_SCALE_TABLE)


def counts_of(level: int) -> np.ndarray:
    return np.rint(np.exp2(24 - TABLES.code_lengths[level])).astype(np.int64)


def test_exact_math_agrees_with_libm():
    x = np.linspace(-700, 700, 10001)
    np.testing.assert_allclose(exact_exp(x), np.exp(x), rtol=1e-15)
    z = np.linspace(0, 37, 10001)
    np.testing.assert_allclose(gaussian_upper_tail(z), ndtr(-z), rtol=1.3e-7)
    np.testing.assert_allclose(log_spaced_values(0.11, 64.0, 256), DEFAULT_SCALE_TABLE.values(), rtol=0)


def test_half_widths_and_escape_mass_follow_the_documented_rule():
    sigma = DEFAULT_SCALE_TABLE.values()
    assert np.array_equal(TABLES.half_widths, np.maximum(1, np.ceil(TAIL_Z * sigma - 0.5)))
    assert TABLES.half_widths[0] == 1 and TABLES.half_widths[-1] == 269
    for level in range(256):
        counts = counts_of(level)
        tail = ndtr(-(TABLES.half_widths[level] + 0.5) / sigma[level])
        expected = max(tail, ESCAPE_FLOOR) * TOTAL_COUNT
        assert counts[0] == counts[-1] and abs(counts[0] - expected) <= 1


@pytest.mark.parametrize("level", [0, 1, 60, 128, 200, 255])
def test_tables_are_exact_symmetric_gaussians(level):
    counts = counts_of(level)
    sigma = DEFAULT_SCALE_TABLE.values()[level]
    half_width = TABLES.half_widths[level]
    assert counts.sum() == TOTAL_COUNT and counts.min() >= 1
    assert np.array_equal(counts, counts[::-1])
    assert np.all(np.diff(counts[half_width + 2 : -1]) <= 0)  # decreasing from r = 1 outwards
    r = np.arange(-half_width, half_width + 1)
    pmf = ndtr((r + 0.5) / sigma) - ndtr((r - 0.5) / sigma)
    inner = counts[1:-1].astype(np.float64)
    off_mode = np.arange(len(r)) != half_width
    # Rounding to the nearest count (+-0.5) plus the erfc fit's 1.2e-7 relative error.
    assert np.all(np.abs(inner[off_mode] - np.maximum(1, pmf[off_mode] * TOTAL_COUNT)) <= 3)
    # The mode also pays for the escape floors.
    floors = 2 * max(0.0, ESCAPE_FLOOR - ndtr(-(half_width + 0.5) / sigma)) * TOTAL_COUNT
    assert abs(inner[half_width] - (pmf[half_width] * TOTAL_COUNT - floors)) <= len(counts) / 2 + 3


@pytest.mark.parametrize("level, offset", [(0, 1), (100, 3), (255, 250)])
def test_constriction_codes_with_exactly_our_counts(level, offset):
    """2000 copies of a tail symbol: an off-by-one count would shift the size by hundreds of bits."""
    repeats = 2000
    encoder = EntropyEncoder()
    encoder.encode_gaussian(torch.full((repeats,), offset), torch.full((repeats,), level))
    expected = repeats * TABLES.code_lengths[level][offset + TABLES.half_widths[level] + 1]
    coded = 8 * len(encoder.finish())
    assert expected - 8 <= coded <= expected + 10 + 2e-4 * repeats


def test_tables_are_cached_and_follow_custom_tables():
    assert gaussian_tables(ScaleTable()) is TABLES
    custom = gaussian_tables(ScaleTable(min_scale=0.5, max_scale=8.0, levels=16))
    assert len(custom.models) == 16 and custom.half_widths[-1] == np.ceil(TAIL_Z * 8.0 - 0.5)

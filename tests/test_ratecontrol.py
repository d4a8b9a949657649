"""latentcodec.ratecontrol: the rate grid, gain interpolation and the target-size search.

The search is tested against synthetic codecs (size as a function of rate and scale) so every
case is exact and fast; tests/models/test_glc_image_rate.py runs it on a real model.
"""

from __future__ import annotations

import math

import pytest
import torch

from latentcodec.errors import LatentCodecError
from latentcodec.ratecontrol import (
    RateSearchConfig,
    TargetUnreachable,
    compress_to_target,
    interpolated_gain,
    rate_code,
    rate_from_code,
    search_rate,
    snap_quality,
    split_rate,
    target_bytes_for,
)


class FakeTrials:
    """A codec whose file at rate code c and scale n has ``size(c) * (n/64)^2`` bytes, and whose
    estimate is off by the factor ``bias``."""

    def __init__(self, size, levels: int = 4, bias: float = 1.0, scale: int = 0, fixed: int = 0):
        self.size, self.bias, self.scale, self.fixed = size, bias, scale, fixed
        self.min_code, self.max_code = 0, (levels - 1) * 256
        self.encodes = self.estimates = 0

    def _bytes(self, code: int) -> int:
        area = 1.0 if self.scale == 0 else (self.scale / 64) ** 2
        return max(1, int(self.size(code) * area)) + self.fixed

    def estimate_bytes(self, code: int) -> float:
        self.estimates += 1
        return self._bytes(code) * self.bias

    def encode(self, code: int) -> bytes:
        self.encodes += 1
        return bytes(self._bytes(code))


def kodak_like(code: int) -> float:
    """About 1150 bytes at rate 0 and 2350 at rate 3, log-linear, as kodim23 with the default."""
    return 1150 * math.exp(code * math.log(2350 / 1150) / 768)


def test_rate_grid_snaps_to_1_256_and_keeps_whole_rates_ints():
    assert rate_code(1.37, 4) == 351 and snap_quality(1.37, 4) == 351 / 256 == 1.37109375
    assert snap_quality(2.0, 4) == 2 and isinstance(snap_quality(2.0, 4), int)
    assert rate_from_code(512) == 2 and rate_from_code(513) == 513 / 256
    assert split_rate(1.37109375) == (1, 95) and split_rate(3) == (3, 0)
    with pytest.raises(ValueError, match="multiple of 1/256"):
        split_rate(1.37)
    for bad in (-0.1, 3.01, float("nan"), float("inf"), True, "1"):
        with pytest.raises(LatentCodecError):
            rate_code(bad, 4)


def test_whole_rates_index_the_table_bit_for_bit():
    table = torch.randn(4, 8, 1, 1, generator=torch.Generator().manual_seed(0))
    for rate in range(4):
        gain = interpolated_gain(table, rate)
        assert gain.shape == (1, 8, 1, 1) and torch.equal(gain, table[rate : rate + 1])


def test_fractional_gains_are_float64_linear_interpolation_rounded_once():
    table = torch.tensor([[1.0, 4.0], [3.0, 2.0], [0.5, 0.25]]).view(3, 2, 1, 1)
    assert interpolated_gain(table, 0.5).flatten().tolist() == [2.0, 3.0]  # exact midpoints
    gain = interpolated_gain(table, 1.25)
    assert gain.dtype == torch.float32
    low, high = table[1].double(), table[2].double()
    assert torch.equal(gain[0], (low + (high - low) * 0.25).float())
    with pytest.raises(ValueError, match="out of range"):
        interpolated_gain(table, 2 + 1 / 256)


def test_target_bytes_from_bytes_or_bpp():
    assert target_bytes_for(1000, None, 512, 768) == 1000
    assert target_bytes_for(None, 0.02, 512, 768) == math.floor(0.02 * 512 * 768 / 8) == 983
    for kwargs in ({}, {"target_bytes": 10, "target_bpp": 0.1}, {"target_bytes": 0}, {"target_bytes": 2.5},
                   {"target_bpp": -1.0}, {"target_bpp": float("nan")}):
        with pytest.raises(LatentCodecError):
            target_bytes_for(kwargs.get("target_bytes"), kwargs.get("target_bpp"), 8, 8)


@pytest.mark.parametrize("target", [1200, 1500, 1777, 2000, 2300])
@pytest.mark.parametrize("bias", [1.0, 0.97, 1.03])
def test_search_lands_just_below_the_target_in_few_encodes(target, bias):
    trials = FakeTrials(kodak_like, bias=bias)
    config = RateSearchConfig()
    result = search_rate(trials, target, config)
    assert result.size <= target
    assert result.size >= target * (1 - config.tolerance) - 3  # the grid step is ~1.1 bytes here
    assert result.encodes == trials.encodes <= config.max_encodes
    assert result.estimates == trials.estimates <= config.max_estimates
    assert [t.bytes for t in result.trials] == [trials._bytes(round(t.rate * 256)) for t in result.trials]
    if bias == 1.0:
        assert result.encodes <= 2  # an exact estimate needs at most one correction


def test_target_above_the_highest_rate_gives_the_highest_rate():
    result = search_rate(FakeTrials(kodak_like), 10_000)
    assert result.rate == 3 and result.size == int(kodak_like(768))


def test_unreachable_target_names_the_smallest_size_in_one_line():
    with pytest.raises(TargetUnreachable) as caught:
        search_rate(FakeTrials(kodak_like), 1000)
    assert caught.value.smallest_bytes == 1150
    message = str(caught.value)
    assert "\n" not in message and "1150 bytes" in message and "--allow-downscale" in message


def test_sizes_that_are_not_monotone_still_give_a_file_within_the_target():
    noisy = lambda code: kodak_like(code) + (15 if code % 7 == 0 else 0)  # noqa: E731
    for target in range(1200, 2300, 97):
        result = search_rate(FakeTrials(noisy), target)
        assert result.size <= target


def test_downscale_codes_a_smaller_image_when_the_lowest_rate_is_too_big():
    made = []

    def make(scale):
        made.append(scale)
        return FakeTrials(kodak_like, scale=scale)

    result = compress_to_target(make, 500, allow_downscale=True)
    assert 0 < result.scale < 64 and made[0] == 0 and result.scale == made[-1]
    assert 500 * 0.97 <= result.size <= 500
    with pytest.raises(TargetUnreachable):
        compress_to_target(lambda scale: FakeTrials(kodak_like, scale=scale), 500)


def test_an_absurd_target_is_unreachable_even_downscaled():
    # 20 bytes (a header, say) that no scale removes
    with pytest.raises(TargetUnreachable, match=r"^target 3 bytes is unreachable: the smallest file is 21 bytes "
                                                r"at the lowest rate and the smallest scale 1/64$"):
        compress_to_target(lambda scale: FakeTrials(kodak_like, scale=scale, fixed=20), 3, allow_downscale=True)

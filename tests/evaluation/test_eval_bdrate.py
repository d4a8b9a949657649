"""BD-rate against hand-computed cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from latentcodec.cli import main
from latentcodec.errors import InputError
from latentcodec.evaluation.bdrate import bd_rate

ANCHOR_RATE = [0.02, 0.035, 0.06, 0.1, 0.17]
ANCHOR_PSNR = [24.1, 25.6, 27.0, 28.9, 30.2]
ANCHOR_LPIPS = [0.31, 0.24, 0.19, 0.14, 0.11]  # lower is better: falls as the rate grows


def test_uniform_rate_scaling_is_exact():
    scaled = [r * 0.9 for r in ANCHOR_RATE]
    assert bd_rate(ANCHOR_RATE, ANCHOR_PSNR, scaled, ANCHOR_PSNR).percent == pytest.approx(-10.0, abs=1e-10)
    assert bd_rate(scaled, ANCHOR_PSNR, ANCHOR_RATE, ANCHOR_PSNR).percent == pytest.approx(100 / 9, abs=1e-10)


def test_lower_is_better_metric_integrates_on_the_metric():
    scaled = [r * 0.9 for r in ANCHOR_RATE]
    result = bd_rate(ANCHOR_RATE, ANCHOR_LPIPS, scaled, ANCHOR_LPIPS)
    assert result.percent == pytest.approx(-10.0, abs=1e-10)
    assert (result.low, result.high) == (0.11, 0.31)
    # A codec that needs 25 % more rate everywhere is +25 %, whatever the metric's direction.
    worse = [r * 1.25 for r in ANCHOR_RATE]
    assert bd_rate(ANCHOR_RATE, ANCHOR_LPIPS, worse, ANCHOR_LPIPS).percent == pytest.approx(25.0, abs=1e-10)


def test_straight_lines_with_different_slopes_over_a_partial_overlap():
    # PCHIP through collinear points is the line itself, so the integral is known in closed form.
    # Anchor: ln r = -9 + 0.2 m on m in [30, 36]; test: ln r = -8 + 0.15 m on m in [32, 38].
    anchor_m = np.array([30.0, 31.5, 33.0, 34.0, 36.0])
    test_m = np.array([32.0, 33.0, 35.5, 38.0])
    anchor_r = np.exp(-9 + 0.2 * anchor_m)
    test_r = np.exp(-8 + 0.15 * test_m)
    # Over [32, 36]: mean of (1 - 0.05 m) = 1 - 0.05 * 34 = -0.7.
    result = bd_rate(anchor_r, anchor_m, test_r, test_m)
    assert (result.low, result.high) == (32.0, 36.0)
    assert result.percent == pytest.approx((math.exp(-0.7) - 1) * 100, abs=1e-9)


def _pchip_three_point_integral(x, y):
    """Integral of the PCHIP through three points, by hand (Fritsch-Butland derivatives).

    Each cubic Hermite segment integrates exactly by Simpson's rule:
    h (y0 + y1) / 2 + h^2 (d0 - d1) / 12.
    """
    h0, h1 = x[1] - x[0], x[2] - x[1]
    s0, s1 = (y[1] - y[0]) / h0, (y[2] - y[1]) / h1
    assert s0 * s1 > 0  # same signs: the interior derivative is a weighted harmonic mean
    w1, w2 = 2 * h1 + h0, h1 + 2 * h0
    d1 = (w1 + w2) / (w1 / s0 + w2 / s1)

    def end(h_near, h_far, s_near, s_far):
        d = ((2 * h_near + h_far) * s_near - h_near * s_far) / (h_near + h_far)
        if np.sign(d) != np.sign(s_near):
            return 0.0
        if np.sign(s_near) != np.sign(s_far) and abs(d) > 3 * abs(s_near):
            return 3 * s_near
        return d

    d0 = end(h0, h1, s0, s1)
    d2 = end(h1, h0, s1, s0)
    return h0 * (y[0] + y[1]) / 2 + h0**2 * (d0 - d1) / 12 + h1 * (y[1] + y[2]) / 2 + h1**2 * (d1 - d2) / 12


def test_curved_shapes_against_a_hand_computed_pchip_integral():
    # Both curves span the same PSNR range, so the overlap is whole segments.
    anchor_m, anchor_r = [28.0, 30.0, 34.0], [0.05, 0.09, 0.30]
    test_m, test_r = [28.0, 31.0, 34.0], [0.045, 0.07, 0.21]
    anchor_integral = _pchip_three_point_integral(anchor_m, np.log(anchor_r))
    test_integral = _pchip_three_point_integral(test_m, np.log(test_r))
    expected = (math.exp((test_integral - anchor_integral) / 6.0) - 1) * 100
    result = bd_rate(anchor_r, anchor_m, test_r, test_m)
    assert result.percent == pytest.approx(expected, abs=1e-9)
    assert -40 < result.percent < -10  # sanity: the test curve is below the anchor everywhere


def test_partial_overlap_against_dense_numeric_integration():
    from scipy.interpolate import PchipInterpolator

    anchor_m, anchor_r = [26.0, 27.5, 29.0, 31.0, 33.5], [0.02, 0.03, 0.05, 0.09, 0.2]
    test_m, test_r = [27.0, 28.0, 30.5, 32.0], [0.018, 0.025, 0.05, 0.08]
    low, high = 27.0, 32.0
    grid = np.linspace(low, high, 200_001)
    difference = PchipInterpolator(test_m, np.log(test_r))(grid) - PchipInterpolator(anchor_m, np.log(anchor_r))(grid)
    expected = (math.exp(np.trapezoid(difference, grid) / (high - low)) - 1) * 100
    result = bd_rate(anchor_r, anchor_m, test_r, test_m)
    assert (result.low, result.high) == (low, high)
    assert result.percent == pytest.approx(expected, abs=1e-6)


def test_points_in_any_order():
    order = [3, 0, 4, 1, 2]
    shuffled_r = [ANCHOR_RATE[i] * 0.8 for i in order]
    shuffled_m = [ANCHOR_PSNR[i] for i in order]
    assert bd_rate(ANCHOR_RATE, ANCHOR_PSNR, shuffled_r, shuffled_m).percent == pytest.approx(-20.0, abs=1e-10)


@pytest.mark.parametrize(
    "test_rate, test_metric, message",
    [
        ([0.1, 0.2, 0.3], [40.0, 41.0, 42.0], "do not overlap"),
        ([0.1, 0.2], [25.0, 26.0], "at least 3"),
        ([0.1, 0.2, 0.3], [25.0, 25.0, 26.0], "share a metric value"),
        ([0.1, -0.2, 0.3], [25.0, 26.0, 27.0], "positive"),
    ],
)
def test_bad_curves_are_input_errors(test_rate, test_metric, message):
    with pytest.raises(InputError, match=message):
        bd_rate(ANCHOR_RATE, ANCHOR_PSNR, test_rate, test_metric)


def _results_file(path, name, rates, metric_name, metric_values):
    payload = {"name": name, "description": "", "results": {"bpp": rates, metric_name: metric_values}}
    path.write_text(json.dumps(payload))
    return str(path)


def test_cli_prints_the_bd_rate(tmp_path, capsys):
    a = _results_file(tmp_path / "a.json", "anchor", ANCHOR_RATE, "lpips_alex", ANCHOR_LPIPS)
    b = _results_file(tmp_path / "b.json", "ours", [r * 0.9 for r in ANCHOR_RATE], "lpips_alex", ANCHOR_LPIPS)
    assert main(["bdrate", a, b, "--metric", "lpips_alex"]) == 0
    out = capsys.readouterr().out
    assert "BD-rate of ours against anchor on lpips_alex: -10.00 %" in out


def test_cli_missing_metric_is_one_line(tmp_path, capsys):
    a = _results_file(tmp_path / "a.json", "anchor", ANCHOR_RATE, "psnr", ANCHOR_PSNR)
    assert main(["bdrate", a, a, "--metric", "dists"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no 'dists' values" in err

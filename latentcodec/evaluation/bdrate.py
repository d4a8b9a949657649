"""Bjontegaard delta rate with PCHIP interpolation.

Each curve's log-rate is interpolated as a function of the metric with a monotone piecewise cubic
Hermite interpolant (``scipy.interpolate.PchipInterpolator``), integrated over the metric interval
where both curves have data, and the mean log-rate difference is turned into a percentage:

    BD-rate = exp( (integral of ln R_test - integral of ln R_anchor) / (hi - lo) ) - 1

Negative means the test codec needs fewer bits for the same quality. Because the integral runs over
the metric axis, metrics where lower is better (LPIPS, DISTS, FID) need no special treatment: the
interpolant is simply decreasing instead of increasing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from latentcodec.errors import InputError
from latentcodec.evaluation.results import Curve

MIN_POINTS = 3  # the protocol's minimum; PCHIP through two points is a straight line


class BDRate(NamedTuple):
    """``percent``: rate change of the test curve against the anchor over [``low``, ``high``]."""

    percent: float
    low: float
    high: float
    anchor_points: int
    test_points: int


def bd_rate(
    anchor_rate: Sequence[float],
    anchor_metric: Sequence[float],
    test_rate: Sequence[float],
    test_metric: Sequence[float],
) -> BDRate:
    """BD-rate (in percent) of the test curve against the anchor curve."""
    from scipy.interpolate import PchipInterpolator

    anchor_x, anchor_y = _prepare(anchor_rate, anchor_metric, "anchor")
    test_x, test_y = _prepare(test_rate, test_metric, "test")
    low = max(anchor_x[0], test_x[0])
    high = min(anchor_x[-1], test_x[-1])
    if not high > low:
        raise InputError(
            f"the curves do not overlap in the metric: anchor spans [{anchor_x[0]:g}, {anchor_x[-1]:g}], "
            f"test spans [{test_x[0]:g}, {test_x[-1]:g}]"
        )
    anchor_integral = PchipInterpolator(anchor_x, anchor_y).integrate(low, high)
    test_integral = PchipInterpolator(test_x, test_y).integrate(low, high)
    mean_difference = (test_integral - anchor_integral) / (high - low)
    return BDRate(float(math.expm1(mean_difference) * 100.0), float(low), float(high), len(anchor_x), len(test_x))


def bd_rate_curves(anchor: Curve, test: Curve, metric: str, rate_key: str = "bpp") -> BDRate:
    """BD-rate between two loaded results files on ``metric``."""
    anchor_rate, anchor_metric = _columns(anchor, metric, rate_key)
    test_rate, test_metric = _columns(test, metric, rate_key)
    return bd_rate(anchor_rate, anchor_metric, test_rate, test_metric)


def _columns(curve: Curve, metric: str, rate_key: str) -> tuple[list[float], list[float]]:
    rates, values = [], []
    for point in curve.points:
        if rate_key in point.values and metric in point.values:
            rates.append(point.values[rate_key])
            values.append(point.values[metric])
    if not rates:
        available = sorted({k for p in curve.points for k in p.values} - {rate_key})
        raise InputError(f"{curve.name}: no {metric!r} values (it has: {', '.join(available) or 'nothing'})")
    return rates, values


def _prepare(rate: Sequence[float], metric: Sequence[float], which: str) -> tuple[np.ndarray, np.ndarray]:
    rate = np.asarray(rate, dtype=np.float64)
    metric = np.asarray(metric, dtype=np.float64)
    if rate.shape != metric.shape or rate.ndim != 1:
        raise InputError(f"{which} curve: rates and metric values differ in length")
    if len(rate) < MIN_POINTS:
        raise InputError(f"{which} curve: BD-rate needs at least {MIN_POINTS} points, got {len(rate)}")
    if not (np.all(np.isfinite(rate)) and np.all(rate > 0) and np.all(np.isfinite(metric))):
        raise InputError(f"{which} curve: rates must be positive and all values finite")
    order = np.argsort(metric, kind="stable")
    metric, rate = metric[order], rate[order]
    if np.any(np.diff(metric) == 0):
        raise InputError(f"{which} curve: two points share a metric value; the rate is not a function of it")
    return metric, np.log(rate)

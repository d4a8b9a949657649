"""Platform-independent float64 maths for the probability tables that encoder and decoder share.

Why not ``np.exp`` / ``scipy.special.ndtr``: they call the platform's libm (or SIMD variants of it),
whose last-ULP results differ between machines. A Gaussian table entry that rounds to a different
integer count on the decoder's machine desynchronises the whole stream. Everything here uses only
IEEE-754 operations that are correctly rounded by definition (+, -, *, /, rint, ldexp) or Python's
``decimal`` module, so every machine computes bit-identical tables.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction
from math import factorial

import numpy as np

# Cody-Waite split of ln 2 (the high part has trailing zero bits, so k * _LN2_HI is exact for
# the |k| <= 1100 that the clipped exponent range produces).
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.4426950408889634
# Taylor coefficients 1/i!, correctly rounded from exact fractions; degree 13 gives a remainder
# below 1e-17 on the reduced interval |r| <= ln(2)/2.
_EXP_COEFFS = tuple(float(Fraction(1, factorial(i))) for i in range(14))

# Numerical Recipes' Chebyshev fit for erfc (fractional error < 1.2e-7 everywhere), ample for
# coding tables that are quantised to 24 bits anyway.
_ERFC_COEFFS = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)
_SQRT2 = 1.4142135623730951


def exact_exp(x: np.ndarray) -> np.ndarray:
    """exp(x) in float64 (relative error ~1e-16), identical on every IEEE-754 machine."""
    x = np.clip(np.asarray(x, dtype=np.float64), -745.0, 709.0)
    k = np.rint(x * _INV_LN2)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    poly = np.full_like(r, _EXP_COEFFS[-1])
    for coeff in _EXP_COEFFS[-2::-1]:
        poly = poly * r + coeff
    return np.ldexp(poly, k.astype(np.int32))


def gaussian_upper_tail(x: np.ndarray) -> np.ndarray:
    """Q(x) = P(N(0, 1) > x) for x >= 0, accurate to a relative 1.2e-7, platform-independent."""
    z = np.asarray(x, dtype=np.float64) / _SQRT2
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(t, _ERFC_COEFFS[-1])
    for coeff in _ERFC_COEFFS[-2::-1]:
        poly = poly * t + coeff
    return 0.5 * t * exact_exp(-z * z + poly)


def log_spaced_values(low: float, high: float, count: int) -> np.ndarray:
    """``count`` values low * (high/low)^(j/(count-1)), each correctly rounded to float64."""
    values = np.empty(count, dtype=np.float64)
    with localcontext() as ctx:
        ctx.prec = 40
        log_low = Decimal(low).ln()
        step = (Decimal(high).ln() - log_low) / (count - 1)
        for j in range(count):
            values[j] = float((log_low + j * step).exp())
    return values

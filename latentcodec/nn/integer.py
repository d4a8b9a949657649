"""Exact integer arithmetic for every network whose output decides an entropy-coding parameter.

A file is only portable if encoder and decoder compute bit-identical Gaussian parameters. Float
convolutions do not: oneDNN, MKL, cuDNN and a change of thread count each sum in their own order
and the last bits differ, which moves a scale index or a mean across a rounding boundary and
desynchronises the stream (Ballé, Johnston and Minnen, "Integer networks for data compression with
latent-variable models", ICLR 2019). This module gives those networks an integer twin whose result
is the same on every CPU ISA, thread count, memory format and on CUDA:

* **Activations** are fixed-point integers with :data:`FRACTION_BITS` fractional bits, stored as
  integer-valued float64 (:data:`FIXED_DTYPE`), saturated to ``|x| <= ACTIVATION_LIMIT`` (2**26)
  after every operation: a defined clamp, never an overflow. float64 holds every integer below
  2**53 exactly and runs at SIMD speed on every CPU and GPU, where int64 multiplies and divisions
  are slow or missing; all the operations below keep every intermediate an integer below 2**53.
* **Weights** are integers with a power-of-two scale per output channel (at most
  :data:`WEIGHT_BITS` bits of magnitude), chosen on conversion so that no accumulator can reach
  2**53 for any admissible input (checked exactly, in integers).
* **Accumulation** runs as float64 matrix products and multiply-adds of integer-valued operands. Every
  product and every partial sum is an integer below 2**53, so each float64 operation is exact and the
  result is the same in any summation order, with or without FMA, on any BLAS. Only matmul and
  elementwise operations are used (never a convolution kernel, which may pick FFT or Winograd).
* **Requantisation** adds half the divisor, multiplies by 2**-shift and floors (round half up):
  each step exact on integers below 2**53.
* **Nonlinearities** are defined on integers: LeakyReLU as a multiply by a 16-bit slope and a
  rounding shift; sigmoid, exp (for softmax) and the normal CDF (for GELU) by linear interpolation
  in tables built with platform-independent maths; LayerNorm with an exact integer square root.
  These are the transformer pieces (I-BERT's integer softmax, LayerNorm and GELU, Kim et al. 2021)
  that PerCoV2's masked-token entropy model and DLF's detail context need.

Conversion (:func:`integer_twin`) is a deterministic post-training quantisation of the float module:
the same float32 weights give the same integers everywhere. Codecs register twins of their own
blocks with :func:`register_integer_twin`; DLF's detail context and PerCoV2's token transformer
build on the same primitives.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FRACTION_BITS = 12
ONE = 1 << FRACTION_BITS
# Saturation bound of every activation: |x| <= 2**15 in real units. Trained nets stay far inside.
ACTIVATION_LIMIT = float((1 << 26) - 1)
# The storage of every fixed-point tensor (integer values only).
FIXED_DTYPE = torch.float64
WEIGHT_BITS = 15
# Strictly below 2**53: every integer of this size is exact in float64.
ACCUMULATOR_LIMIT = 1 << 53
# Per-channel gains and LeakyReLU slopes carry 16 fractional bits.
GAIN_BITS = 16
SLOPE_BITS = 16
# Sigmoid table: knots every 2**-SIGMOID_KNOT_BITS over [-SIGMOID_RANGE, SIGMOID_RANGE].
SIGMOID_KNOT_BITS = 6
SIGMOID_RANGE = 16
EXP_RANGE = 16  # exp(-16) < 2**-12: below it the table is 0
CDF_RANGE = 8
# fixed_matmul operands: |x| <= 128 in real units, so 2**38 per product and up to 2**14 terms.
MATMUL_OPERAND_LIMIT = 1 << 19
# Float64 values an integer conv's row band holds per temporary (8 MB each).
BAND_ELEMENTS = 1 << 20


# -- fixed-point conversion and requantisation ------------------------------------------------------
def to_fixed(x: torch.Tensor, fraction_bits: int = FRACTION_BITS) -> torch.Tensor:
    """Float tensor -> fixed point (round half to even of x * 2**bits, exact in float64), saturated."""
    scaled = torch.round(x.detach().to(FIXED_DTYPE) * float(1 << fraction_bits))
    scaled = torch.nan_to_num(scaled, nan=0.0, posinf=ACTIVATION_LIMIT, neginf=-ACTIVATION_LIMIT)
    return scaled.clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)


def from_fixed(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed point -> float (exact in float64; float32 rounds once, the same everywhere)."""
    if dtype == torch.float32:
        # Scaling by 2**-FRACTION_BITS commutes with rounding to float32 (no overflow or subnormals
        # at these magnitudes), so converting first gives the same bits without a float64 temporary.
        return x.to(torch.float32).mul_(1.0 / ONE)
    return (x.to(torch.float64) * (1.0 / ONE)).to(dtype)


def saturate(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)


def rounding_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """round(x / 2**shift), halves rounded up, for integer-valued x below 2**53 (shift >= 0)."""
    if shift == 0:
        return x
    return rounding_shift_(x.clone(), shift)


def rounding_shift_(x: torch.Tensor, shift: int) -> torch.Tensor:
    """:func:`rounding_shift` in place."""
    if shift == 0:
        return x
    return x.add_(float(1 << (shift - 1))).mul_(1.0 / (1 << shift)).floor_()


def rounding_divide(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """round(x / divisor) for integer-valued |x| < 2**53 and a positive int, halves rounded up.
    Exact: a non-integral quotient of such integers is never rounded up to the next integer."""
    return torch.floor((x + float(divisor // 2)) / float(divisor))


def fixed_multiply(a: torch.Tensor, b: torch.Tensor, fraction_bits: int = FRACTION_BITS,
                   inplace: bool = False) -> torch.Tensor:
    """Product of two fixed-point tensors (b may carry ``fraction_bits`` of its own), saturated.
    Both operands are at most 2**26, so the product (< 2**52) is exact. ``inplace``: into ``a``."""
    product = a.mul_(b) if inplace else a * b
    return saturate(rounding_shift_(product, fraction_bits))


def scale_by_gain(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """x times a float gain (e.g. a per-rate channel gain), the gain rounded to GAIN_BITS fractional bits."""
    gain_fixed = torch.round(gain.detach().to(FIXED_DTYPE) * float(1 << GAIN_BITS))
    gain_fixed = gain_fixed.clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT).to(x.device)
    return fixed_multiply(x, gain_fixed, GAIN_BITS)


def leaky_relu(x: torch.Tensor, slope: float) -> torch.Tensor:
    """x for x >= 0, round(x * s) for x < 0, with s = round(slope * 2**16) / 2**16 in (0, 1).

    Computed as max(x, floor(x * s + 1/2)): for x < 0, x * s > x, so the rounded product is >= the
    integer x; for x >= 0 it is <= x. x * s is exact (x * round(slope * 2**16) < 2**43, scaled by
    a power of two), and so is adding 1/2.
    """
    if not 0 < slope < 1:
        raise ValueError(f"integer leaky_relu needs a slope in (0, 1), got {slope}")
    slope_fixed = round(slope * (1 << SLOPE_BITS)) / float(1 << SLOPE_BITS)
    scaled = (x * slope_fixed).add_(0.5).floor_()
    return torch.maximum(x, scaled, out=scaled)


@lru_cache(maxsize=8)
def _knots(function: str) -> tuple[torch.Tensor, int]:
    """(fixed-point values at every 2**-KNOT_BITS, the first knot's position in knot units) of a
    nonlinearity, computed with platform-independent maths (+, -, *, / and _exact_math)."""
    from latentcodec.entropy._exact_math import exact_exp, gaussian_upper_tail

    low, high = {"sigmoid": (-SIGMOID_RANGE, SIGMOID_RANGE), "exp": (-EXP_RANGE, 0),
                 "normal_cdf": (-CDF_RANGE, CDF_RANGE)}[function]
    first, last = low << SIGMOID_KNOT_BITS, high << SIGMOID_KNOT_BITS
    points = np.arange(first, last + 1, dtype=np.float64) / float(1 << SIGMOID_KNOT_BITS)
    if function == "sigmoid":
        values = 1.0 / (1.0 + exact_exp(-points))
    elif function == "exp":
        values = exact_exp(points)
    else:
        upper = gaussian_upper_tail(np.abs(points))
        values = np.where(points >= 0, 1.0 - upper, upper)
    return torch.from_numpy(np.rint(values * ONE)), first


def _interpolate(x: torch.Tensor, function: str) -> torch.Tensor:
    """Linear interpolation between the knots of ``function``; inputs outside clamp to the ends."""
    knots, first = _knots(function)
    knots = knots.to(x.device)
    shift = FRACTION_BITS - SIGMOID_KNOT_BITS
    start, stop = float(first << shift), float(((first + knots.numel() - 1) << shift) - 1)
    offset = x.clamp(start, stop) - start
    index = torch.floor(offset * (1.0 / (1 << shift)))
    fraction = offset - index * float(1 << shift)
    index = index.to(torch.int64)
    low, high = knots[index], knots[index + 1]
    return low + rounding_shift((high - low) * fraction, shift)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Fixed-point sigmoid: linear interpolation between table knots (max error about 2**-13)."""
    return _interpolate(x, "sigmoid")


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Fixed-point GELU, x * Phi(x), with the normal CDF interpolated from a table (I-BERT's role
    for i-GELU; a table is simpler and as exact)."""
    return fixed_multiply(x, _interpolate(x, "normal_cdf"))


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Fixed-point softmax: exp of (x - max) from a table, integer sum, one rounding division per
    element. Rows sum to ONE within the row length (each entry rounds once)."""
    exponentials = _interpolate(x - x.amax(dim=dim, keepdim=True), "exp")
    total = exponentials.sum(dim=dim, keepdim=True)  # >= ONE: the maximum contributes exp(0)
    return torch.floor((exponentials * ONE + torch.floor(total * 0.5)) / total)


def integer_sqrt(n: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(n)) for integer-valued 0 <= n < 2**53 (int64 or float64), exactly: a float64
    estimate corrected by exact integer comparisons, so a last-ulp difference of a device's sqrt
    cannot change the result."""
    root = torch.sqrt(n.to(torch.float64)).floor().to(n.dtype)
    for _ in range(2):
        root = torch.where(root * root > n, root - 1, root)
        root = torch.where((root + 1) * (root + 1) <= n, root + 1, root)
    return root


def fixed_matmul(a: torch.Tensor, b: torch.Tensor, operand_limit: int = MATMUL_OPERAND_LIMIT) -> torch.Tensor:
    """a @ b of two fixed-point tensors (attention scores, attention-weighted values). Operands are
    saturated to ``operand_limit`` so every partial sum stays an exact float64 integer."""
    inner = a.shape[-1]
    if operand_limit * operand_limit * inner >= ACCUMULATOR_LIMIT:
        raise ValueError(f"fixed_matmul: {inner} terms of size {operand_limit}**2 could reach 2**53")
    a64 = a.clamp(-operand_limit, operand_limit)
    b64 = b.clamp(-operand_limit, operand_limit)
    return saturate(rounding_shift(torch.matmul(a64, b64), FRACTION_BITS))


# -- linear layers ----------------------------------------------------------------------------------
def _channel_exponents(weight: torch.Tensor, bias: torch.Tensor, input_limit: int) -> torch.Tensor:
    """Per output channel, the largest e such that round(W * 2**e) fits WEIGHT_BITS and
    sum |w_int| * input_limit + |bias_int| + 2**(e-1) < ACCUMULATOR_LIMIT (the requantisation's
    rounding term included), checked exactly in int64."""
    out_channels = weight.shape[0]
    flat = weight.reshape(out_channels, -1)
    largest = flat.abs().amax(dim=1)
    _, exponent = torch.frexp(largest)  # largest < 2**exponent (exact)
    e = torch.where(largest > 0, WEIGHT_BITS - exponent, torch.zeros_like(exponent)).to(torch.int64).clamp(max=60)
    for _ in range(128):
        scale = torch.ldexp(torch.ones_like(largest), e.to(largest.dtype))
        w_int = torch.round(flat * scale[:, None]).to(torch.int64)
        b_int = torch.round(bias * torch.ldexp(scale, torch.full_like(scale, FRACTION_BITS))).to(torch.int64)
        half = torch.where(e > 0, torch.ones_like(e) << (e - 1).clamp(min=0), torch.zeros_like(e))
        bound = w_int.abs().sum(dim=1) * int(input_limit) + b_int.abs() + half
        too_big = (bound >= ACCUMULATOR_LIMIT) | (w_int.abs().amax(dim=1) > (1 << WEIGHT_BITS))
        if not too_big.any():
            return e
        e = e - too_big.to(torch.int64)
    raise ValueError("weights too large for the integer path")


def _rounded_bias(bias: torch.Tensor, scale: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
    """The bias at the accumulator's scale plus the rounding term 2**(e-1) (0 when e = 0)."""
    half = torch.where(exponents > 0, torch.ldexp(torch.ones_like(scale), (exponents - 1).to(scale.dtype)),
                       torch.zeros_like(scale))
    return torch.round(bias * scale * ONE) + half


class IntegerConv2d(nn.Module):
    """Integer twin of a 1x1 or 3x3 (padding 1, stride 1) Conv2d, dense or depthwise."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        k = conv.kernel_size
        if k not in ((1, 1), (3, 3)) or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.padding != (k[0] // 2, k[1] // 2):
            raise TypeError(f"no integer version of {conv}: only 1x1 and 3x3 'same' convolutions with stride 1")
        self.depthwise = conv.groups > 1
        if self.depthwise and not (conv.groups == conv.in_channels == conv.out_channels):
            raise TypeError(f"no integer version of {conv}: grouped convolutions must be depthwise")
        weight = conv.weight.detach().to("cpu", torch.float64)
        bias = (conv.bias.detach().to("cpu", torch.float64) if conv.bias is not None
                else torch.zeros(conv.out_channels, dtype=torch.float64))
        exponents = _channel_exponents(weight, bias, ACTIVATION_LIMIT)
        scale = torch.ldexp(torch.ones_like(bias), exponents.to(torch.float64))
        w_int = torch.round(weight * scale.view(-1, 1, 1, 1))
        self.kernel = k[0]
        # Weights are stored as float64 holding integers (the operand dtype of the exact matmul).
        self.register_buffer("weight", w_int.permute(2, 3, 0, 1).contiguous())  # (k, k, O, I/g)
        # Requantisation: floor((acc + bias + 2**(e-1)) * 2**-e), per output channel.
        self.register_buffer("bias", _rounded_bias(bias, scale, exponents).view(1, -1, 1, 1))
        self.register_buffer("inverse_scale", (1.0 / scale).view(1, -1, 1, 1))
        # (bias + 2**(e-1)) * 2**-e: exact (a power-of-two scaling), so that one fused
        # acc * 2**-e + offset (exact: both are multiples of 2**-e below 2**53 of them) requantises.
        self.register_buffer("output_offset", self.bias * self.inverse_scale)

    def _accumulate(self, padded: torch.Tensor, rows: int) -> torch.Tensor:
        """Integer-valued float64 accumulator (B, O, rows, W) of a float64 input already padded for the
        kernel ((B, C, rows + 2, W + 2) for 3x3), exact by the bound of _channel_exponents."""
        b, c = padded.shape[:2]
        w = padded.shape[-1] - (self.kernel - 1)
        if self.kernel == 1:
            if self.depthwise:
                return padded * self.weight[0, 0].view(1, -1, 1, 1)
            return torch.matmul(self.weight[0, 0], padded.reshape(b, c, rows * w)).view(b, -1, rows, w)
        acc = None
        for dy in range(3):
            for dx in range(3):
                window = padded[:, :, dy : dy + rows, dx : dx + w]
                if self.depthwise:
                    tap = self.weight[dy, dx].view(1, -1, 1, 1)
                    acc = window * tap if acc is None else acc.addcmul_(window, tap)
                    continue
                term = torch.matmul(self.weight[dy, dx], window.reshape(b, c, rows * w)).view(b, -1, rows, w)
                acc = term if acc is None else acc.add_(term)
        return acc

    def _requantise(self, acc: torch.Tensor) -> torch.Tensor:
        return saturate(torch.addcmul(self.output_offset, acc, self.inverse_scale).floor_())

    def _rows(self, x: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
        """Output rows [top, bottom) from the input rows they read, zero-padded only beyond the map's edges."""
        margin, height = self.kernel // 2, x.shape[2]
        first, last = max(0, top - margin), min(height, bottom + margin)
        band = x[:, :, first:last].to(torch.float64)
        if margin:
            band = F.pad(band, (margin, margin, margin - (top - first), margin - (last - bottom)))
        return self._requantise(self._accumulate(band, bottom - top))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        b, c, h, w = x.shape
        out_channels = self.weight.shape[2]
        # Row bands bound the temporaries (padded input, window copies, per-tap products, accumulator)
        # to about BAND_ELEMENTS float64 values each, where whole maps would hold several full-size
        # copies (at 16 MP the official preset's 256-channel latent maps are 128 MB apiece). The sums
        # are exact integers, so the bands give the same bits as one pass.
        rows = max(1, BAND_ELEMENTS // max(1, b * max(c, out_channels) * (w + 2)))
        if rows >= h:
            return self._rows(x, 0, h)
        out = torch.empty(b, out_channels, h, w, dtype=torch.float64, device=x.device)
        for top in range(0, h, rows):
            out[:, :, top : top + rows] = self._rows(x, top, min(h, top + rows))
        return out


class IntegerLeakyReLU(nn.Module):
    def __init__(self, slope: float):
        super().__init__()
        self.slope = float(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return leaky_relu(x, self.slope)


class IntegerLinear(nn.Module):
    """Integer twin of nn.Linear over the last dimension (the token transformers of DLF and PerCoV2)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().to("cpu", torch.float64)
        bias = (linear.bias.detach().to("cpu", torch.float64) if linear.bias is not None
                else torch.zeros(linear.out_features, dtype=torch.float64))
        exponents = _channel_exponents(weight, bias, ACTIVATION_LIMIT)
        scale = torch.ldexp(torch.ones_like(bias), exponents.to(torch.float64))
        self.register_buffer("weight_t", torch.round(weight * scale[:, None]).t().contiguous())
        self.register_buffer("bias", _rounded_bias(bias, scale, exponents))
        self.register_buffer("inverse_scale", 1.0 / scale)
        self.register_buffer("output_offset", self.bias * self.inverse_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return saturate(torch.addcmul(self.output_offset, torch.matmul(x, self.weight_t), self.inverse_scale).floor_())


class IntegerLayerNorm(nn.Module):
    """Integer twin of nn.LayerNorm over the last dimension: integer mean, integer variance of
    (slightly pre-shifted) deviations, exact integer square root, one rounding division."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        if len(norm.normalized_shape) != 1:
            raise TypeError("no integer version of a LayerNorm over more than the last dimension")
        self.features = norm.normalized_shape[0]
        # Deviations reach 2**27; shifting them by `pre_shift` bits keeps features * d**2 < 2**62.
        self.pre_shift = max(0, -(-(self.features.bit_length() + 54 - 62) // 2))
        variance_bits = 2 * (FRACTION_BITS - self.pre_shift)
        self.eps = max(1, int(round(norm.eps * 2.0**variance_bits)))
        weight = norm.weight.detach() if norm.weight is not None else torch.ones(self.features)
        bias = norm.bias.detach() if norm.bias is not None else torch.zeros(self.features)
        self.register_buffer("weight", to_fixed(weight.cpu()))
        self.register_buffer("bias", to_fixed(bias.cpu()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Squares of deviations need 64 bits here, so this one runs in int64.
        x = x.to(torch.int64)
        mean = torch.div(x.sum(dim=-1, keepdim=True) + self.features // 2, self.features, rounding_mode="floor")
        deviation = x - mean
        half = (1 << (self.pre_shift - 1)) if self.pre_shift else 0
        shifted = torch.div(deviation + half, 1 << self.pre_shift, rounding_mode="floor")
        variance = torch.div((shifted * shifted).sum(dim=-1, keepdim=True) + self.features // 2, self.features,
                             rounding_mode="floor") + self.eps
        std = integer_sqrt(variance)  # in units of 2**-(FRACTION_BITS - pre_shift)
        normalised = torch.div((deviation << (FRACTION_BITS - self.pre_shift)) + std // 2, std, rounding_mode="floor")
        return saturate(fixed_multiply(saturate(normalised.to(FIXED_DTYPE)), self.weight) + self.bias)


class IntegerGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu(x)


class IntegerSequential(nn.Sequential):
    """nn.Sequential of integer twins (same indices, so errors name the float layer)."""


# -- conversion -------------------------------------------------------------------------------------
class TwinCache:
    """Integer twins of a model's float modules, rebuilt whenever a parameter of the float module
    changed (training steps and loads bump ``_version``) or moved to another device."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple, nn.Module]] = {}

    def get(self, name: str, build: Callable[[nn.Module], nn.Module], source: nn.Module) -> nn.Module:
        key = tuple((id(p), p._version, p.device) for p in source.parameters())
        cached = self._entries.get(name)
        if cached is None or cached[0] != key:
            twin = build(source)
            first = next(source.parameters(), None)
            cached = (key, twin if first is None else twin.to(first.device))
            self._entries[name] = cached
        return cached[1]


TwinBuilder = Callable[[nn.Module], nn.Module]
_TWINS: dict[type, TwinBuilder] = {}


def register_integer_twin(float_class: type) -> Callable[[TwinBuilder], TwinBuilder]:
    """Decorator: ``builder(float_module) -> integer module`` for ``float_class`` and its subclasses."""

    def decorate(builder: TwinBuilder) -> TwinBuilder:
        _TWINS[float_class] = builder
        return builder

    return decorate


def integer_twin(module: nn.Module) -> nn.Module:
    """The integer version of a float module (a deterministic post-training quantisation)."""
    for cls in type(module).__mro__:
        builder = _TWINS.get(cls)
        if builder is not None:
            return builder(module).eval()
    raise TypeError(f"no integer version of {type(module).__name__}; register one with register_integer_twin")


register_integer_twin(nn.Conv2d)(IntegerConv2d)
register_integer_twin(nn.LeakyReLU)(lambda m: IntegerLeakyReLU(m.negative_slope))
register_integer_twin(nn.Sequential)(lambda m: IntegerSequential(*[integer_twin(c) for c in m]))
register_integer_twin(nn.PixelShuffle)(lambda m: nn.PixelShuffle(m.upscale_factor))
register_integer_twin(nn.Identity)(lambda m: nn.Identity())
register_integer_twin(nn.Linear)(IntegerLinear)
register_integer_twin(nn.LayerNorm)(IntegerLayerNorm)


@register_integer_twin(nn.GELU)
def _gelu_twin(module: nn.GELU) -> nn.Module:
    if module.approximate != "none":
        raise TypeError("no integer version of GELU(approximate='tanh'); use the exact GELU")
    return IntegerGELU()

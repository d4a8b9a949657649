"""Rate control for every codec with learned per-rate gains: continuous rates and target sizes.

Continuous rates. A codec with a table of per-rate channel gains (GLC-image's q_enc/q_dec, and the
same idea in DLF and PerCoV2) reaches any rate between its trained levels by interpolating the
table linearly. Rates live on a grid of 1/256 of a level (``RATE_FRACTION_STEPS``): every grid
value is exact in binary floating point, so a float quality such as 1.37109375 (= 351/256) names
one rate exactly and the container stores it as an integer (docs/bitstream.md, kind 2). Whole
rates index the table, exactly as before, so their files are byte-identical to those of earlier
builds. Interpolated gains are computed elementwise in float64 from the stored table (each step
one correctly rounded IEEE operation) and then rounded once to the table's dtype, so they are the
same on every machine and the integer path quantises them like any stored gain.

Target sizes. :func:`search_rate` finds the largest file not above a byte budget by a bounded
search over the rate grid: the codec's own rate estimate first (cheap, no entropy coding), then
real encodes to confirm, each next trial interpolated in log-size between the tightest bracket
found so far. :func:`compress_to_target` adds the optional downscale fallback. A codec plugs in by
offering ``rate_trials(x, scale) -> RateTrials`` (see :class:`RateTrials`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Protocol

import torch
import torch.nn.functional as F

from latentcodec.bitstream import RATE_FRACTION_STEPS, SCALE_DENOMINATOR, rate_from_code, rate_to_code
from latentcodec.errors import LatentCodecError


# -- continuous rates ---------------------------------------------------------------------------
def rate_code(quality: float, num_rates: int) -> int:
    """``quality`` (int or float in 0..num_rates-1) as an integer on the 1/256 grid, rounded to nearest."""
    if isinstance(quality, bool) or not isinstance(quality, (int, float)) or not math.isfinite(quality):
        raise LatentCodecError(f"quality must be a number in 0..{num_rates - 1}, got {quality!r}")
    if not 0 <= quality <= num_rates - 1:
        raise LatentCodecError(f"quality {quality:g} out of range 0..{num_rates - 1}")
    return int(round(quality * RATE_FRACTION_STEPS))


def snap_quality(quality: float, num_rates: int) -> int | float:
    """The grid rate nearest to ``quality``: the value the file will record."""
    return rate_from_code(rate_code(quality, num_rates))


def split_rate(rate: int | float) -> tuple[int, int]:
    """(integer part, 1/256ths) of a grid rate; ValueError when it is not on the grid."""
    return divmod(rate_to_code(rate), RATE_FRACTION_STEPS)


def interpolated_gain(table: torch.Tensor, rate: int | float) -> torch.Tensor:
    """Row ``rate`` of a (levels, ...) gain table, keeping the leading axis: table[r:r+1] for a
    whole rate (bit-identical to indexing), else the linear interpolation of the two neighbouring
    rows in float64, rounded once to the table's dtype. The same on every IEEE-754 machine, with or
    without fused multiply-adds: the difference of two float32 values is exact in float64 (at most
    25 significant bits), and so is its product with k/256 (k < 256: at most 33 bits), so the only
    rounding is that of the final addition, which IEEE-754 defines."""
    levels = table.shape[0]
    index, fraction = split_rate(rate)
    if index > levels - 1 or (index == levels - 1 and fraction):
        raise ValueError(f"rate {rate} out of range 0..{levels - 1}")
    if fraction == 0:
        return table[index : index + 1]
    low = table[index : index + 1].detach().to(torch.float64)
    high = table[index + 1 : index + 2].detach().to(torch.float64)
    weight = fraction / RATE_FRACTION_STEPS  # exact: a dyadic rational
    return (low + (high - low) * weight).to(table.dtype)


def resize_image(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A [0, 1] (1, 3, H, W) image resampled to (height, width): antialiased bicubic when shrinking,
    bicubic when enlarging (the decoder's upsampling), clamped back into [0, 1]."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    shrinking = height < x.shape[-2] or width < x.shape[-1]
    resized = F.interpolate(x.float(), size=(height, width), mode="bicubic", align_corners=False,
                            antialias=shrinking)
    return resized.clamp_(0.0, 1.0).to(x.dtype)


# -- target-size search -----------------------------------------------------------------------
class RateTrials(Protocol):
    """What a codec offers the search for one image at one coding scale. Implementations cache
    whatever does not depend on the rate (GLC: the VQGAN encoder's latent)."""

    min_code: int  # the lowest rate, in 1/256ths of a level
    max_code: int  # the highest rate

    def estimate_bytes(self, code: int) -> float:
        """The model's own estimate of the file size at this rate (no entropy coding)."""

    def encode(self, code: int) -> bytes:
        """The real file at this rate."""


class ImageRateTrials:
    """Shared set-up of a codec's ``RateTrials`` for one image (1, 3, H, W) in [0, 1] at coding
    scale ``scale``: checks the input, resizes it once, and hands the coded image to
    :meth:`prepare`, where a codec caches its rate-independent work."""

    def __init__(self, model, x: torch.Tensor, scale: int = 0):
        from latentcodec.bitstream import coded_side

        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"rate control expects one RGB image shaped (1, 3, H, W), got {tuple(x.shape)}")
        self.model = model
        self.height, self.width = int(x.shape[-2]), int(x.shape[-1])
        self.scale = scale
        self.coded_height, self.coded_width = coded_side(self.height, scale), coded_side(self.width, scale)
        self.min_code = 0
        self.max_code = (model.num_rates - 1) * RATE_FRACTION_STEPS
        with torch.inference_mode():
            self.prepare(resize_image(x, self.coded_height, self.coded_width))

    def prepare(self, coded: torch.Tensor) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class RateSearchConfig:
    max_encodes: int = 8  # real encodes per scale, the first one included
    max_estimates: int = 8  # estimate evaluations before the first encode
    tolerance: float = 0.01  # done once a file is within this fraction below the target
    downscale_margin: float = 0.97  # aim this far below the target when picking a scale


# A lowest-rate estimate this far above the target is not confirmed by an encode before downscaling
# (the estimate is within about 1.5 % of the real size on Kodak).
HOPELESS_ESTIMATE_RATIO = 1.05


class Trial(NamedTuple):
    rate: int | float
    bytes: int
    scale: int


class RateSearchResult(NamedTuple):
    data: bytes  # the chosen file: the largest found that is not above the target
    rate: int | float  # its rate (grid value, as the header records it)
    scale: int  # 0 = full size; n = each side coded at n/64
    target_bytes: int
    encodes: int  # real encodes, over every scale tried
    estimates: int  # rate-estimate evaluations
    trials: tuple[Trial, ...]  # every real encode, in order

    @property
    def size(self) -> int:
        return len(self.data)


class TargetUnreachable(LatentCodecError):
    """Even the lowest rate gives a file above the target; ``smallest_bytes`` is the size it reaches."""

    def __init__(self, target_bytes: int, smallest_bytes: int, scale: int = 0, encodes: int = 0, estimates: int = 0):
        where = "at the lowest rate" if scale == 0 else f"at the lowest rate and the smallest scale {scale}/64"
        hint = "" if scale else " (--allow-downscale codes a smaller image)"
        super().__init__(f"target {target_bytes} bytes is unreachable: the smallest file is {smallest_bytes} bytes "
                         f"{where}{hint}")
        self.target_bytes, self.smallest_bytes, self.scale = target_bytes, smallest_bytes, scale
        self.encodes, self.estimates = encodes, estimates


def target_bytes_for(target_bytes: int | None, target_bpp: float | None, height: int, width: int) -> int:
    """The byte budget from exactly one of a byte count and a bpp (over the original H x W)."""
    if (target_bytes is None) == (target_bpp is None):
        raise LatentCodecError("give exactly one of target_bytes and target_bpp")
    if target_bpp is not None:
        if isinstance(target_bpp, bool) or not isinstance(target_bpp, (int, float)) or not (
                math.isfinite(target_bpp) and target_bpp > 0):
            raise LatentCodecError(f"target bpp must be a positive number, got {target_bpp!r}")
        target_bytes = math.floor(target_bpp * height * width / 8)
    if isinstance(target_bytes, bool) or not isinstance(target_bytes, int) or target_bytes < 1:
        raise LatentCodecError(f"target size must be a positive whole number of bytes, got {target_bytes!r}")
    return target_bytes


class _Search:
    """One search over the rate grid of one RateTrials (one image at one scale)."""

    def __init__(self, trials: RateTrials, target: int, config: RateSearchConfig, scale: int):
        self.trials, self.target, self.config, self.scale = trials, target, config, scale
        self.aim = target * (1.0 - config.tolerance / 2)  # land inside the tolerance band, not at its edge
        self.estimated: dict[int, float] = {}
        self.encoded: dict[int, bytes] = {}
        self.order: list[int] = []

    def estimate(self, code: int) -> float:
        if code not in self.estimated:
            self.estimated[code] = max(float(self.trials.estimate_bytes(code)), 1.0)
        return self.estimated[code]

    def encode(self, code: int) -> int:
        if code not in self.encoded:
            self.encoded[code] = self.trials.encode(code)
            self.order.append(code)
        return len(self.encoded[code])

    def slope(self, code: int) -> float:
        """d log(bytes) / d code of the estimates around ``code`` (0 when unknown or not increasing)."""
        points = sorted(self.estimated.items())
        for (c0, e0), (c1, e1) in zip(points, points[1:]):
            if c0 <= code <= c1 and e1 > e0:
                return math.log(e1 / e0) / (c1 - c0)
        if len(points) >= 2 and points[-1][1] > points[0][1]:
            return math.log(points[-1][1] / points[0][1]) / (points[-1][0] - points[0][0])
        return 0.0

    def first_guess(self) -> int:
        """The code whose estimate meets the aim, by regula falsi in log-size over the estimates."""
        low, high = self.trials.min_code, self.trials.max_code
        if self.estimate(high) <= self.aim:
            return high
        if self.estimate(low) >= self.aim or low == high:
            return low
        for _ in range(self.config.max_estimates - 2):
            if high - low <= 1:
                break
            guess = log_interpolate(low, self.estimate(low), high, self.estimate(high), self.aim)
            value = self.estimate(guess)
            # The estimate is itself about 1 % off the real size, so finer is wasted work.
            if abs(math.log(value / self.aim)) < self.config.tolerance / 2:
                return guess
            if value <= self.aim:
                low = guess
            else:
                high = guess
        return low

    def run(self, skip_hopeless: bool = False) -> tuple[int | None, int]:
        """(code of the best file not above the target or None, smallest size seen). With
        ``skip_hopeless``, a lowest-rate estimate clearly above the target ends the search without
        an encode (the caller only needs to know that it must downscale)."""
        low_code, high_code = self.trials.min_code, self.trials.max_code
        code = self.first_guess()
        if skip_hopeless and code == low_code and self.estimate(low_code) > self.target * HOPELESS_ESTIMATE_RATIO:
            return None, round(self.estimate(low_code))
        for _ in range(self.config.max_encodes):
            self.encode(code)
            fits = [c for c in self.encoded if len(self.encoded[c]) <= self.target]
            best = max(fits, key=lambda c: (len(self.encoded[c]), c)) if fits else None
            if best is not None and len(self.encoded[best]) >= self.target * (1 - self.config.tolerance):
                break
            below = max(fits) if fits else None  # the highest rate known to fit
            above = min((c for c in self.encoded if c not in fits and (below is None or c > below)), default=None)
            next_code = self._next(below, above, low_code, high_code)
            if next_code is None:
                break
            code = next_code
        fits = [c for c in self.encoded if len(self.encoded[c]) <= self.target]
        best = max(fits, key=lambda c: (len(self.encoded[c]), c)) if fits else None
        return best, min(len(d) for d in self.encoded.values())

    def _next(self, below: int | None, above: int | None, low_code: int, high_code: int) -> int | None:
        if below is None:  # every file so far is too big: go down, down to the lowest rate
            if above == low_code:
                return None
            step = _log_step(self.encode_size(above), self.aim, self.slope(above))
            return max(low_code, min(above - 1, above + step))
        if above is None:  # every file so far fits: go up, up to the highest rate
            if below == high_code:
                return None
            step = _log_step(self.encode_size(below), self.aim, self.slope(below))
            return min(high_code, max(below + 1, below + step))
        if above - below <= 1:
            return None
        guess = log_interpolate(below, self.encode_size(below), above, self.encode_size(above), self.aim)
        margin = (above - below) // 8  # keeps the bracket shrinking geometrically when sizes are lopsided
        return min(above - 1 - margin, max(below + 1 + margin, guess))

    def encode_size(self, code: int) -> int:
        return len(self.encoded[code])


def log_interpolate(c0: int, s0: float, c1: int, s1: float, aim: float) -> int:
    """The code between c0 and c1 where log-size, linear between the two points, meets the aim."""
    if s1 <= s0:
        return (c0 + c1) // 2
    fraction = (math.log(aim) - math.log(s0)) / (math.log(s1) - math.log(s0))
    return int(round(c0 + min(max(fraction, 0.0), 1.0) * (c1 - c0)))


def _log_step(size: float, aim: float, slope: float) -> int:
    """Codes to move from a file of ``size`` towards ``aim`` at the estimated log-size slope."""
    if slope <= 0:
        slope = math.log(2) / RATE_FRACTION_STEPS  # no estimate slope: assume size doubles per level
    # Rounded down either way: going up it stays below the aim, going down it gets there.
    return math.floor(math.log(aim / size) / slope)


def search_rate(trials: RateTrials, target_bytes: int, config: RateSearchConfig = RateSearchConfig(),
                scale: int = 0, skip_hopeless: bool = False) -> RateSearchResult:
    """The largest file not above ``target_bytes`` over the rate grid of ``trials``; raises
    TargetUnreachable (naming the smallest size) when even the lowest rate is too large (with
    ``skip_hopeless``, the estimated smallest size when the estimate alone shows it)."""
    search = _Search(trials, target_bytes, config, scale)
    best, smallest = search.run(skip_hopeless)
    if best is None and skip_hopeless and not search.encoded:
        raise TargetUnreachable(target_bytes, smallest, scale, 0, len(search.estimated))
    if best is None:
        if trials.min_code not in search.encoded:
            search.encode(trials.min_code)
        smallest = search.encode_size(trials.min_code)
        if smallest <= target_bytes:  # the search stopped early; the lowest rate fits
            best = trials.min_code
        else:
            raise TargetUnreachable(target_bytes, smallest, scale, len(search.order), len(search.estimated))
    tried = tuple(Trial(rate_from_code(c), search.encode_size(c), scale) for c in search.order)
    return RateSearchResult(search.encoded[best], rate_from_code(best), scale, target_bytes, len(search.order),
                            len(search.estimated), tried)


def compress_to_target(make_trials: Callable[[int], RateTrials], target_bytes: int, allow_downscale: bool = False,
                       config: RateSearchConfig = RateSearchConfig()) -> RateSearchResult:
    """search_rate at full size; with ``allow_downscale``, when that is unreachable, again at the
    largest scale n/64 whose files (size taken as proportional to the area) fit, shrinking further
    until one does or the scale reaches 1/64."""
    try:
        return search_rate(make_trials(0), target_bytes, config, skip_hopeless=allow_downscale)
    except TargetUnreachable as exc:
        if not allow_downscale:
            raise
        failure = exc
    encodes, estimates = failure.encodes, failure.estimates
    previous_scale = SCALE_DENOMINATOR
    while True:
        ratio = math.sqrt(target_bytes / failure.smallest_bytes) * config.downscale_margin
        scale = max(1, min(previous_scale - 1, math.floor(previous_scale * ratio)))
        try:
            result = search_rate(make_trials(scale), target_bytes, config, scale, skip_hopeless=scale > 1)
            return result._replace(encodes=result.encodes + encodes, estimates=result.estimates + estimates)
        except TargetUnreachable as exc:
            failure, encodes, estimates = exc, encodes + exc.encodes, estimates + exc.estimates
            if scale == 1:
                raise TargetUnreachable(target_bytes, exc.smallest_bytes, scale, encodes, estimates) from None
            previous_scale = scale

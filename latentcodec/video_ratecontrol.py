"""Target bitrate for video codecs with rate levels (GLC-video): ``--target-bitrate 50k``.

The sequence format records one intra and one inter rate level per file (docs/bitstream.md), so
the controller picks one level pair for the whole sequence; bytes are allocated across frames by
the codec's own I/P split at that level. It works in four steps:

1. **Probe.** Code the first ``probe_frames`` frames at a level L and note the I-frame's unit size
   and the mean P-frame unit size.
2. **Model.** Over a GOP of G frames (the intra period, capped at the clip length) the sequence
   costs ``(I + (G - 1) * P) / G`` bytes per frame plus its header spread over all frames; times
   8 x frame rate, that is the predicted bitrate at L. The probe's frame mix (one I-frame in a few
   frames) would overstate long GOPs, which is why the model reweights it.
3. **Search.** Regula falsi in log-bitrate over the levels (the highest and lowest level first, then
   interpolated guesses) for the highest level whose predicted bitrate stays below the target less
   a margin; at most ``max_probes`` probes besides the two ends.
4. **Confirm.** Code the whole sequence at that level and measure the file. If it is above the
   target (later content is harder than the probe), step down by the predicted ratio and code it
   again. If it fits but the probe overstated the clip (a file well below the target), the model is
   corrected by the measured ratio and one more pass tries the level it then predicts. At most
   ``max_passes`` full encodes; the result is the best file not above the target, with the achieved
   bitrate of every GOP.
"""

from __future__ import annotations

import io
import itertools
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from latentcodec.errors import LatentCodecError
from latentcodec.ratecontrol import log_interpolate

_BITRATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmM]?)\s*(?:bps|b/s)?\s*$")


def parse_bitrate(text: str) -> float:
    """``"50k"`` -> 50000.0 bits per second (suffixes k = 1e3, M = 1e6); positive and finite."""
    match = _BITRATE.match(str(text))
    if match is None:
        raise LatentCodecError(f"not a bitrate: {text!r} (e.g. 50k, 1.5M or 20000 bits per second)")
    value = float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[match.group(2).lower()]
    if not (math.isfinite(value) and value > 0):
        raise LatentCodecError(f"the target bitrate must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class BitrateControlConfig:
    probe_frames: int = 8  # frames coded per probe
    max_probes: int = 4  # probes between the two ends per search
    margin: float = 0.03  # aim this fraction below the target
    max_passes: int = 3  # full encodes at most


class GOPRate(NamedTuple):
    first_frame: int
    frames: int
    bytes: int  # its frame units (the first GOP also carries the sequence header)
    bits_per_second: float


class BitrateResult(NamedTuple):
    data: bytes
    level: int  # inter rate level of the file
    intra_level: int
    target_bps: float
    achieved_bps: float  # 8 x file bytes x frame rate / frames
    frames: int
    gops: tuple[GOPRate, ...]
    probes: int  # probe encodes (of probe_frames frames each)
    passes: int  # full encodes


class _Pass(NamedTuple):
    data: bytes
    units: list  # FrameStats per frame
    frame_rate: Fraction
    announced_frames: int  # the source's frame count, 0 when it does not say


# The GOP length assumed when neither the intra period nor the frame count bounds it.
DEFAULT_GOP = 96


def _encode(codec, source, level: int, frame_rate, limit: int | None = None) -> _Pass:
    frames, rate, count, close = codec._frame_source(source, frame_rate)
    stats: list = []
    buffer = io.BytesIO()
    try:
        selected = frames if limit is None else itertools.islice(frames, limit)
        codec.model.encode_sequence(selected, buffer, level, None, rate, count if limit is None else 0,
                                    on_frame=stats.append)
    finally:
        if close is not None:
            close()
    return _Pass(buffer.getvalue(), stats, Fraction(rate), count)


def _bitrate(size_bytes: float, frames: int, frame_rate: Fraction) -> float:
    return 8.0 * size_bytes * float(frame_rate) / frames


def compress_to_bitrate(codec, source, target_bps: float, frame_rate=None,
                        config: BitrateControlConfig = BitrateControlConfig()) -> BitrateResult:
    """The sequence file of ``source`` at the highest level whose bitrate is not above ``target_bps``
    (see the module docstring); raises LatentCodecError when even level 0 is above it."""
    levels = codec.model.num_rates
    gop_config = getattr(getattr(codec.model, "config", None), "gop", None)
    intra_period = getattr(gop_config, "intra_period", DEFAULT_GOP)
    predictions: dict[int, float] = {}
    frames_known: list[int] = []

    def predicted(level: int) -> float:
        if level not in predictions:
            probe = _encode(codec, source, level, frame_rate, config.probe_frames)
            if probe.announced_frames and not frames_known:
                frames_known.append(probe.announced_frames)
            intra = [s.unit_bytes for s in probe.units if s.intra]
            inter = [s.unit_bytes for s in probe.units if not s.intra] or intra
            header = len(probe.data) - sum(s.unit_bytes for s in probe.units)
            frames = frames_known[0] if frames_known else None
            gop = intra_period or frames or DEFAULT_GOP
            gop = min(gop, frames) if frames else gop
            per_frame = (intra[0] + (gop - 1) * sum(inter) / len(inter)) / gop
            predictions[level] = _bitrate(per_frame + header / (frames or gop), 1, probe.frame_rate)
        return predictions[level]

    def highest_level_below(aim: float, ceiling: int) -> int:
        """Regula falsi in log-bitrate over the levels, on probes (cached across passes)."""
        known = [lv for lv in predictions if lv <= ceiling]
        fitting = [lv for lv in known if predictions[lv] <= aim]
        low = max(fitting, default=0)
        high = min((lv for lv in known if lv > low and predictions[lv] > aim), default=ceiling)
        if predicted(high) <= aim:
            return high
        for _ in range(config.max_probes):
            if high - low <= 1 or (low == 0 and predicted(0) > aim):
                break
            guess = log_interpolate(low, predicted(low), high, predicted(high), aim)
            guess = min(high - 1, max(low + 1, guess))
            low, high = (guess, high) if predicted(guess) <= aim else (low, guess)
        return low

    bias, level, best, passes, smallest = 1.0, levels - 1, None, 0, math.inf
    while passes < config.max_passes:
        level = highest_level_below(target_bps * (1 - config.margin) / bias, level)
        result = _encode(codec, source, level, frame_rate)
        passes += 1
        frames_known[:] = [len(result.units)]
        achieved = _bitrate(len(result.data), len(result.units), result.frame_rate)
        smallest = min(smallest, achieved)
        if achieved <= target_bps:
            best = (result, level)
            corrected = achieved / predicted(level)  # < 1 when the probe overstated the whole clip
            higher = highest_level_below(target_bps * (1 - config.margin) / corrected, levels - 1)
            if passes < config.max_passes and higher > level:
                trial = _encode(codec, source, higher, frame_rate)
                passes += 1
                if _bitrate(len(trial.data), len(trial.units), trial.frame_rate) <= target_bps:
                    best = (trial, higher)
            break
        if level == 0:
            break
        # The probe model missed by this factor on the whole clip: correct it, and go at least one lower.
        bias = max(bias, achieved / predicted(level))
        level -= 1
    if best is None:
        raise LatentCodecError(f"target bitrate {target_bps:.0f} bit/s is unreachable: the lowest level tried gives "
                               f"{smallest:.0f} bit/s")
    result, level = best
    return BitrateResult(result.data, level, level, target_bps,
                         _bitrate(len(result.data), len(result.units), result.frame_rate), len(result.units),
                         gop_rates(result), len(predictions), passes)


def gop_rates(result: _Pass) -> tuple[GOPRate, ...]:
    """The achieved bitrate of every GOP (frames from one I-frame to the next)."""
    header = len(result.data) - sum(s.unit_bytes for s in result.units)
    starts = [s.index for s in result.units if s.intra] + [len(result.units)]
    gops = []
    for first, end in zip(starts, starts[1:]):
        size = sum(s.unit_bytes for s in result.units[first:end]) + (header if first == 0 else 0)
        gops.append(GOPRate(first, end - first, size, _bitrate(size, end - first, result.frame_rate)))
    return tuple(gops)

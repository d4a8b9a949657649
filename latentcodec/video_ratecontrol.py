"""Target bitrate for video codecs with continuous rates (GLC-video): ``--target-bitrate 50k``.

A GOP (an I-frame and the P-frames up to the next one) references nothing outside itself, so it
can be coded, measured and coded again on its own. The controller codes the clip one GOP at a time
with a **bit reservoir** that carries every GOP's unspent bytes to the next:

1. **Budget.** GOP g of n_g frames earns ``B_g = target x n_g / (8 x frame rate)`` bytes, its share
   of the target. The sequence header (and, for open-ended sources, the 1-byte end marker) is
   charged to the first GOP.
2. **Allowance.** It may spend ``A_g = B_g + R_g``, where the reservoir ``R_g`` holds what the GOPs
   before it left unspent (``R_0 = 0``).
3. **Rate.** The GOP's rate (one rate on the 1/256 grid for its I- and P-frames) is the highest whose
   GOP fits ``A_g``, found by the shared bounded search of :func:`latentcodec.ratecontrol.search_rate`:
   estimates from a probe (the GOP's first ``probe_frames`` frames, reweighted to its length:
   ``I + (n_g - 1) x mean P``) first, then real encodes of the whole GOP to confirm (the probe's
   frames are reused, not coded again); the search stops once a GOP is within ``tolerance`` below
   its allowance.
4. **Carry.** ``R_{g+1} = A_g - bytes_g``. Continuous rates make the leftover small, and an easy GOP
   that tops out at the highest rate hands its whole surplus to the next one.

Every GOP stays within its allowance, so the file stays within the target. The one exception: a GOP
that does not fit its allowance even at the lowest rate is coded at the lowest rate and leaves a
deficit (a negative reservoir) that the GOPs after it pay back. If the file still ends above the
target (the pass has no look-ahead: typically a short last GOP, whose I-frame costs far more than
its frames' share), a **second pass** codes the clip again with those GOPs' budgets set to their
measured lowest-rate bytes and the rest of the target shared among the other GOPs by frames; if
that fails too, the target is unreachable and the error names the GOP. The reservoir is not capped:
the target bounds the file's average bitrate, not a decoder buffer.

Each GOP after the first records its own rates at the start of its I-frame unit (a sequence with
per-GOP rates, docs/bitstream.md), so the decoder needs nothing but the file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, NamedTuple

from latentcodec.bitstream import (
    RATE_FRACTION_STEPS,
    describe_sequence_file,
    encode_sequence_header,
    rate_from_code,
    varint_size,
)
from latentcodec.bitstream.sequence import END_OF_SEQUENCE, encode_frame_unit, encode_gop_rates
from latentcodec.errors import LatentCodecError
from latentcodec.ratecontrol import RateSearchConfig, TargetUnreachable, search_rate

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
    probe_frames: int = 8  # frames of a GOP coded for one estimate (at least 2)
    # Per GOP: probes before the first encode, real encodes, and the band below the allowance that
    # ends the search (what is left over moves on to the next GOP, so 2 % costs little).
    search: RateSearchConfig = field(default_factory=lambda: RateSearchConfig(max_encodes=4, max_estimates=6,
                                                                              tolerance=0.02))


class GOPRate(NamedTuple):
    first_frame: int
    frames: int
    bytes: int  # its frame units (the first GOP also carries the sequence header)
    bits_per_second: float
    rate: int | float  # the rate of its I- and P-frames (1/256 grid)
    budget_bytes: float  # its share of the target
    allowance_bytes: float  # budget plus the reservoir carried in from earlier GOPs
    encodes: int  # real encodes of the whole GOP
    probes: int  # probe estimates


class BitrateResult(NamedTuple):
    data: bytes
    target_bps: float
    achieved_bps: float  # 8 x file bytes x frame rate / frames
    frames: int
    gops: tuple[GOPRate, ...]
    encodes: int  # real GOP encodes, all GOPs and passes
    probes: int  # probe estimates, all GOPs and passes
    passes: int  # 1, or 2 when a GOP overspent at the lowest rate in the first
    frame_rate: Fraction

    @property
    def rates(self) -> tuple[int | float, ...]:
        return tuple(g.rate for g in self.gops)


def _unit_size(payload_bytes: int) -> int:
    return varint_size(payload_bytes) + payload_bytes + 1


class _SequenceLayout:
    """The file being built: its header (fixed by the first GOP's rate) and the units' framing."""

    def __init__(self, model, height: int, width: int, frame_count: int, frame_rate: Fraction, gop):
        self.model, self.height, self.width = model, height, width
        self.frame_count, self.frame_rate, self.gop = frame_count, frame_rate, gop
        # Per-GOP rates only when a second GOP can follow (they cost the extended rate fields).
        self.per_gop_rates = gop.intra_period > 0 and (frame_count == 0 or frame_count > gop.intra_period)
        self.header: bytes | None = None

    def header_for(self, code: int) -> bytes:
        rate = rate_from_code(code)
        return encode_sequence_header(self.model.sequence_header(
            self.height, self.width, rate, rate, self.frame_count, self.frame_rate, self.gop, self.per_gop_rates))

    def gop_bytes(self, code: int, first_index: int, payloads: list[bytes]) -> bytes:
        """The GOP's units as the file holds them; the first GOP's start with the header."""
        header = self.header_for(code) if first_index == 0 else self.header
        out = bytearray(header if first_index == 0 else b"")
        for offset, payload in enumerate(payloads):
            if offset == 0 and first_index > 0:
                rate = rate_from_code(code)
                payload = encode_gop_rates(rate, rate) + payload
            out += encode_frame_unit(payload, first_index + offset, header[-1])
        return bytes(out)


class GOPRateTrials:
    """``RateTrials`` (latentcodec.ratecontrol) of one GOP: the GOP's bytes in the file at a rate
    code. Coded frames are kept per code, so a probe's frames start the full encode."""

    def __init__(self, model, frames: list, first_index: int, layout: _SequenceLayout, probe_frames: int):
        self.model, self.frames, self.first_index, self.layout = model, frames, first_index, layout
        self.probe_frames = max(2, probe_frames)  # an I-frame and at least one P-frame
        self.min_code, self.max_code = 0, (model.num_rates - 1) * RATE_FRACTION_STEPS
        self._coded: dict[int, tuple[list[bytes], object]] = {}
        self._complete: set[int] = set()
        self.probes = 0  # estimates from a probe
        self.encodes = 0  # whole-GOP encodes (an estimate of a GOP no longer than a probe is one)

    def _payloads(self, code: int, count: int) -> list[bytes]:
        payloads, reference = self._coded.get(code, ([], None))
        rate = rate_from_code(code)
        for offset in range(len(payloads), count):
            index = self.first_index + offset
            encoded = self.model.encode_frame(self.frames[offset], self.model.plan(index, self.layout.gop), rate,
                                              reference)
            payloads.append(encoded.payload)
            reference = encoded.reference
        self._coded[code] = (payloads, reference)
        return payloads[:count]

    def estimate_bytes(self, code: int) -> float:
        frames = len(self.frames)
        if frames <= self.probe_frames:  # the probe is the whole GOP: exact
            return float(len(self.encode(code)))
        self.probes += 1
        probe = self.layout.gop_bytes(code, self.first_index, self._payloads(code, self.probe_frames))
        units = [_unit_size(len(p)) for p in self._payloads(code, self.probe_frames)]
        overhead = len(probe) - sum(units)  # the header (first GOP) and the rate prefix
        return overhead + units[0] + (frames - 1) * sum(units[1:]) / (len(units) - 1)

    def encode(self, code: int) -> bytes:
        if code not in self._complete:
            self._complete.add(code)
            self.encodes += 1
        return self.layout.gop_bytes(code, self.first_index, self._payloads(code, len(self.frames)))


def _bitrate(size_bytes: float, frames: int, frame_rate: Fraction) -> float:
    return 8.0 * size_bytes * float(frame_rate) / frames


def _gops(frames, intra_period: int):
    """Lists of frames, one per GOP (the whole clip when the intra period is 0)."""
    group: list = []
    for frame in frames:
        if group and intra_period and len(group) == intra_period:
            yield group
            group = []
        group.append(frame)
    if group:
        yield group


def compress_to_bitrate(codec, source, target_bps: float, frame_rate=None,
                        config: BitrateControlConfig = BitrateControlConfig()) -> BitrateResult:
    """The sequence file of ``source`` (a path, frames, array or tensor) within ``target_bps``, one
    rate per GOP under the bit reservoir of the module docstring. When a GOP overspends at the
    lowest rate and the file ends above the target, a second pass reserves that GOP's lowest-rate
    bytes up front and shares the rest among the others; LatentCodecError when that fails too."""
    first = _code_pass(codec, source, target_bps, frame_rate, config,
                       lambda index, frames, per_frame: frames * per_frame)
    if first.achieved_bps <= target_bps:
        return first
    total = target_bps * first.frames / (8.0 * float(first.frame_rate))
    fixed = {i: g.bytes for i, g in enumerate(first.gops) if g.bytes > g.allowance_bytes}
    free_frames = sum(g.frames for i, g in enumerate(first.gops) if i not in fixed)
    if free_frames and total - sum(fixed.values()) > 0:
        per_free_frame = (total - sum(fixed.values())) / free_frames
        second = _code_pass(codec, source, target_bps, frame_rate, config,
                            lambda index, frames, _: fixed.get(index, frames * per_free_frame))
        if second.achieved_bps <= target_bps:
            return second._replace(encodes=first.encodes + second.encodes, probes=first.probes + second.probes,
                                   passes=2)
    over = next(g for g in first.gops if g.bytes > g.allowance_bytes)
    raise LatentCodecError(f"target bitrate {target_bps:.0f} bit/s is unreachable: frames {over.first_frame}-"
                           f"{over.first_frame + over.frames - 1} need {over.bytes} bytes at the lowest rate "
                           f"(allowance {over.allowance_bytes:.0f}), and the file would be "
                           f"{first.achieved_bps:.0f} bit/s")


def _code_pass(codec, source, target_bps: float, frame_rate, config: BitrateControlConfig,
               budget_of: Callable[[int, int, float], float]) -> BitrateResult:
    """One pass over the clip, GOP by GOP: GOP g of n frames gets ``budget_of(g, n, bytes per frame
    of the target)`` bytes plus the reservoir."""
    model = codec.model
    frames, rate, count, close = codec._frame_source(source, frame_rate)
    rate = Fraction(rate)
    bytes_per_frame = target_bps / (8.0 * float(rate))
    layout, parts, gops, reservoir, total_frames = None, [], [], 0.0, 0
    try:
        for index, group in enumerate(_gops(frames, model.config.gop.intra_period)):
            first = total_frames
            size = None if layout is None else (layout.height, layout.width)
            group = [model._check_frame(frame, first + i, size) for i, frame in enumerate(group)]
            if layout is None:
                height, width = (int(s) for s in group[0].shape[-2:])
                layout = _SequenceLayout(model, height, width, count, rate, model.config.gop)
            budget = budget_of(index, len(group), bytes_per_frame)
            budget -= 1 if first == 0 and count == 0 else 0  # the end marker of an open-ended file
            allowance = budget + reservoir
            trials = GOPRateTrials(model, group, first, layout, config.probe_frames)
            data, code = _fit_gop(trials, allowance, config.search)
            if first == 0:
                layout.header = layout.header_for(code)
            reservoir = allowance - len(data)
            parts.append(data)
            gops.append(GOPRate(first, len(group), len(data), _bitrate(len(data), len(group), rate),
                                rate_from_code(code), budget, allowance, trials.encodes, trials.probes))
            total_frames += len(group)
    finally:
        if close is not None:
            close()
    if layout is None:
        raise LatentCodecError("the video has no frames")
    if count and total_frames != count:
        raise LatentCodecError(f"the source announced {count} frames but held {total_frames}")
    data = b"".join(parts) + (bytes([END_OF_SEQUENCE]) if count == 0 else b"")
    describe_sequence_file(data)  # the assembled file reads back (every CRC and GOP rate)
    return BitrateResult(data, target_bps, _bitrate(len(data), total_frames, rate), total_frames, tuple(gops),
                         sum(g.encodes for g in gops), sum(g.probes for g in gops), 1, rate)


def _fit_gop(trials: GOPRateTrials, allowance: float, search: RateSearchConfig) -> tuple[bytes, int]:
    """(GOP bytes, rate code): the largest GOP within the allowance, or the lowest rate's when none fits."""
    limit = math.floor(allowance)
    try:
        if limit < 1:
            raise TargetUnreachable(max(limit, 0), 0)
        result = search_rate(trials, limit, search)
    except TargetUnreachable:
        return trials.encode(trials.min_code), trials.min_code
    return result.data, round(result.rate * RATE_FRACTION_STEPS)

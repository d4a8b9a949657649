"""Integer frequency tables for zero-mean Gaussian residuals, and their escape code.

One table per scale index k, each an exact set of integer counts summing to 2**24 (the coder's
precision), built once per :class:`ScaleTable` with platform-independent arithmetic
(:mod:`._exact_math`), so encoder and decoder hold bit-identical models on any machine.

Support and escape. Table k covers r in [-R_k, R_k] plus two escape bins, "r <= -(R_k+1)" and
"r >= R_k+1", with R_k = max(1, ceil(TAIL_Z * sigma_k - 1/2)), TAIL_Z = 4.2, and each escape bin
holding max(Gaussian tail mass beyond R_k + 1/2, ESCAPE_FLOOR = 2**-16).

Why a floor on the escape: GLC/DLF nets are trained on an estimate that floors every likelihood at
1e-5 (~2**-16.6, SYSTEMS.md 1.2), so they are never pushed to avoid residuals beyond ~4.4 sigma,
and real latents contain such outliers. Under the pure Gaussian a 24-bit coder charges each one
the minimum count, ~24 bits; with the floor an outlier costs ~16 bits plus its Exp-Golomb excess,
close to what training assumed. The price is a leak of 2**-15 of the mass from the likely bins:
4.4e-5 bit per symbol (~18 bits for a 768x512 GLC image's 400k symbols, ~0.1 % of its file), which
the saving of ~8 bits per outlier repays from about 2 outliers per image on.
Why that width: the Gaussian mass beyond 4.2 sigma (1.3e-5) is already below the escape floor, so
the escape bin carries the whole remaining tail without taking mass from it; a wider support would
add bins that each steal counts (>= 1 of 2**24) and would code a residual just past R_k (e.g. 5
sigma, ~19 bits as a Gaussian bin) no cheaper than the escape does (~17 bits). Scale-dependent
widths (R = 1 at sigma = 0.11, 269 at 64) also keep the tables small.

After an escape bin, the excess e = |r| - (R_k+1) >= 0 follows as an Exp-Golomb code of e+1:
L = bit_length(e+1) - 1 under a fixed geometric model P(L) ~ 2**-(L+1) (1 bit for L = 0), then the L
low bits of e+1 in uniform chunks of at most 16 bits. Any int64 residual is codable: +-2**20 costs
about 16 + 41 bits, +-10**6 the same; the sign comes from which escape bin was used.

Coding order inside one call: symbols are grouped by scale index (stable order), each group is
coded with its fixed table in one vectorised call, then all escape lengths, then the mantissa
chunks. The decoder knows every scale index before it decodes the call, so it rebuilds the same
grouping and scatters the values back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import constriction
import numpy as np

from latentcodec.entropy._exact_math import gaussian_upper_tail
from latentcodec.entropy.scale_table import DEFAULT_SCALE_TABLE, ScaleTable
from latentcodec.errors import BitstreamError

PRECISION = 24  # constriction's default (and only Python-exposed) coder precision
TOTAL_COUNT = 1 << PRECISION
TAIL_Z = 4.2
ESCAPE_FLOOR = 2.0**-16
ESCAPE_LENGTH_LEVELS = 64  # L in [0, 63] covers every uint64 e + 1
MANTISSA_CHUNK_BITS = 16

_model = constriction.stream.model


def quantize_pmf(pmf: np.ndarray) -> np.ndarray:
    """Integer counts >= 1 summing to 2**24, nearest to ``pmf * 2**24``; the mode absorbs the rest."""
    counts = np.maximum(1, np.rint(np.asarray(pmf, dtype=np.float64) * TOTAL_COUNT)).astype(np.int64)
    mode = int(np.argmax(pmf))
    counts[mode] += TOTAL_COUNT - int(counts.sum())
    if counts[mode] < 1:
        raise ValueError("pmf cannot be quantised: the mode is too small to absorb the rounding")
    return counts


def categorical_from_counts(counts: np.ndarray):
    """A constriction Categorical whose quantised probabilities are exactly ``counts`` / 2**24.

    constriction's ``perfect=False`` quantiser gives symbol i the count
    floor(cum_i * (2**24 - n) / total) + i - (previous left edge); feeding it ``counts - 1`` (whose
    total is 2**24 - n) makes every product exact, so it reproduces our counts bit for bit.
    """
    return _model.Categorical((np.asarray(counts) - 1).astype(np.float64), perfect=False)


@dataclass(frozen=True)
class GaussianTables:
    half_widths: np.ndarray  # int64 (levels,): R_k
    models: tuple  # constriction Categorical over 2 R_k + 3 bins, index = r + R_k + 1
    code_lengths: tuple  # float64 arrays, -log2(count / 2**24) per bin
    escape_length_model: object
    escape_length_bits: np.ndarray  # float64 (64,)


@lru_cache(maxsize=8)
def gaussian_tables(table: ScaleTable) -> GaussianTables:
    sigmas = table.values()
    half_widths = np.maximum(1, np.ceil(TAIL_Z * sigmas - 0.5)).astype(np.int64)
    models, code_lengths = [], []
    for sigma, half_width in zip(sigmas, half_widths):
        # upper_tails[j] = P(r >= j + 1/2) for j = 0..R; bins are differences of upper tails,
        # which keeps their relative precision in the far tails.
        upper_tails = gaussian_upper_tail((np.arange(half_width + 1) + 0.5) / sigma)
        positive = upper_tails[:-1] - upper_tails[1:]
        centre = 1.0 - 2.0 * upper_tails[0]
        escape = max(upper_tails[-1], ESCAPE_FLOOR)
        pmf = np.concatenate([[escape], positive[::-1], [centre], positive, [escape]])
        counts = quantize_pmf(pmf)
        models.append(categorical_from_counts(counts))
        code_lengths.append(PRECISION - np.log2(counts))
    half_widths.setflags(write=False)
    length_counts = quantize_pmf(np.ldexp(1.0, -np.minimum(np.arange(ESCAPE_LENGTH_LEVELS) + 1, 63)))
    return GaussianTables(
        half_widths=half_widths,
        models=tuple(models),
        code_lengths=tuple(code_lengths),
        escape_length_model=categorical_from_counts(length_counts),
        escape_length_bits=PRECISION - np.log2(length_counts),
    )


class _Grouping:
    """Symbols sorted (stably) by scale index: the order in which one call codes them."""

    def __init__(self, scale_index: np.ndarray, levels: int):
        keys = scale_index.astype(np.uint8 if levels <= 256 else np.uint16)  # radix sort
        self.order = np.argsort(keys, kind="stable")
        self.sorted_index = scale_index[self.order]
        counts = np.bincount(scale_index, minlength=levels)
        self.bounds = np.concatenate([[0], np.cumsum(counts)])
        self.used_levels = np.flatnonzero(counts)


def _bit_length_minus_one(values: np.ndarray) -> np.ndarray:
    """floor(log2 v) for uint64 v >= 1, exactly (no float rounding above 2**53)."""
    result = np.zeros(values.shape, dtype=np.int64)
    rest = values.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        big = rest >= np.uint64(1 << shift)
        result[big] += shift
        rest[big] >>= np.uint64(shift)
    return result


def _magnitudes(values: np.ndarray) -> np.ndarray:
    """|v| as uint64, exact for every int64 including -2**63."""
    negative = values < 0
    magnitude = values.astype(np.uint64)
    magnitude[negative] = (-(values[negative] + 1)).astype(np.uint64) + np.uint64(1)
    return magnitude


def encode_gaussian_flat(encoder, tables: GaussianTables, symbols: np.ndarray, scale_index: np.ndarray) -> None:
    """Code int64 residuals ``symbols`` under the tables of ``scale_index`` (both 1-D, same length)."""
    if symbols.size == 0:
        return
    groups = _Grouping(scale_index, len(tables.models))
    values = symbols[groups.order]
    half_widths = tables.half_widths[groups.sorted_index]
    bins = (np.clip(values, -half_widths - 1, half_widths + 1) + half_widths + 1).astype(np.int32)
    for level in groups.used_levels:
        start, stop = groups.bounds[level], groups.bounds[level + 1]
        encoder.encode(bins[start:stop], tables.models[level])

    magnitudes = _magnitudes(values)
    escaped = magnitudes > half_widths.astype(np.uint64)
    if not escaped.any():
        return
    # e + 1 = |r| - R, in [1, 2**63]: fits uint64 without overflow.
    shifted_excess = magnitudes[escaped] - half_widths[escaped].astype(np.uint64)
    lengths = _bit_length_minus_one(shifted_excess)
    encoder.encode(lengths.astype(np.int32), tables.escape_length_model)
    mantissas = shifted_excess - (np.uint64(1) << lengths.astype(np.uint64))
    for low_bit in range(0, ESCAPE_LENGTH_LEVELS, MANTISSA_CHUNK_BITS):
        present = lengths > low_bit
        if not present.any():
            break
        chunk_bits = np.minimum(lengths[present] - low_bit, MANTISSA_CHUNK_BITS).astype(np.uint64)
        chunks = (mantissas[present] >> np.uint64(low_bit)) & ((np.uint64(1) << chunk_bits) - np.uint64(1))
        sizes = (np.uint64(1) << chunk_bits).astype(np.int32)
        encoder.encode(chunks.astype(np.int32), _model.Uniform(), sizes)


def decode_gaussian_flat(decoder, tables: GaussianTables, scale_index: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_gaussian_flat`; returns int64 residuals in the original order."""
    count = scale_index.size
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    groups = _Grouping(scale_index, len(tables.models))
    half_widths = tables.half_widths[groups.sorted_index]
    values = np.empty(count, dtype=np.int64)
    for level in groups.used_levels:
        start, stop = groups.bounds[level], groups.bounds[level + 1]
        values[start:stop] = decoder.decode(tables.models[level], int(stop - start))
    values -= half_widths + 1

    escaped = np.abs(values) == half_widths + 1
    if escaped.any():
        lengths = decoder.decode(tables.escape_length_model, int(escaped.sum())).astype(np.int64)
        mantissas = np.zeros(lengths.shape, dtype=np.uint64)
        for low_bit in range(0, ESCAPE_LENGTH_LEVELS, MANTISSA_CHUNK_BITS):
            present = lengths > low_bit
            if not present.any():
                break
            chunk_bits = np.minimum(lengths[present] - low_bit, MANTISSA_CHUNK_BITS).astype(np.uint64)
            sizes = (np.uint64(1) << chunk_bits).astype(np.int32)
            chunks = decoder.decode(_model.Uniform(), sizes).astype(np.uint64)
            mantissas[present] |= chunks << np.uint64(low_bit)
        # |r| = R + 2**L + mantissa must fit int64 (2**63 only when negative). L <= 62 keeps the
        # uint64 sum below 2**63 + R, so it cannot wrap before the comparison.
        if np.any(lengths >= ESCAPE_LENGTH_LEVELS - 1):
            raise BitstreamError("corrupt entropy-coded data: escaped residual out of the int64 range")
        negative = values[escaped] < 0
        magnitudes = (
            half_widths[escaped].astype(np.uint64) + (np.uint64(1) << lengths.astype(np.uint64)) + mantissas
        )
        if np.any(magnitudes > np.where(negative, np.uint64(2**63), np.uint64(2**63 - 1))):
            raise BitstreamError("corrupt entropy-coded data: escaped residual out of the int64 range")
        signed = np.where(
            negative,
            -((magnitudes - np.uint64(1)).astype(np.int64)) - 1,
            magnitudes.astype(np.int64),
        )
        values[escaped] = signed

    result = np.empty(count, dtype=np.int64)
    result[groups.order] = values
    return result


def table_code_bits(tables: GaussianTables, symbols: np.ndarray, scale_index: np.ndarray) -> float:
    """Information content (bits) of 1-D int64 ``symbols`` under ``tables``, escapes included."""
    if symbols.size == 0:
        return 0.0
    half_widths = tables.half_widths[scale_index]
    bins = np.clip(symbols, -half_widths - 1, half_widths + 1) + half_widths + 1
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in tables.code_lengths])])
    flat_lengths = np.concatenate(tables.code_lengths)
    total = float(flat_lengths[offsets[scale_index] + bins].sum())
    magnitudes = _magnitudes(symbols)
    escaped = magnitudes > half_widths.astype(np.uint64)
    if escaped.any():
        lengths = _bit_length_minus_one(magnitudes[escaped] - half_widths[escaped].astype(np.uint64))
        total += float(tables.escape_length_bits[lengths].sum() + lengths.sum())
    return total


def gaussian_code_bits(symbols, scale_index, table: ScaleTable = DEFAULT_SCALE_TABLE) -> float:
    """Exact bits that :meth:`EntropyEncoder.encode_gaussian` spends on these residuals, before the
    stream's termination (about a byte at most) and the range coder's rounding (~1e-4 bit/symbol).

    The real-coder counterpart of :func:`gaussian_residual_bits`: table-rounded sigma, the 0.11
    floor, 24-bit counts, escapes. ``symbols`` and ``scale_index`` are same-shape integer tensors
    or arrays.
    """
    values = np.asarray(symbols.detach().cpu() if hasattr(symbols, "detach") else symbols).astype(np.int64)
    indices = np.asarray(scale_index.detach().cpu() if hasattr(scale_index, "detach") else scale_index)
    return table_code_bits(gaussian_tables(table), values.reshape(-1), indices.astype(np.int64).reshape(-1))

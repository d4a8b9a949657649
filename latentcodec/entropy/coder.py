"""One entropy-coded stream holding Gaussian residuals, learned categoricals and uniform symbols.

Coder. constriction's range coder (``constriction.stream.queue``, u32 words, 64-bit state, 24-bit
probabilities) because it is a queue: symbols decode in the order they were encoded, so a
multi-step context model can decode step k, run its network, and only then supply step k+1's
parameters. (An ANS stack would have to buffer every call and replay them reversed at finish(),
and its 64-bit state costs ~24 - log2(1/p_first) extra bits at the start: ~2-3 bytes per stream.)

Termination. constriction seals a stream by writing the whole top word of ``lower + 2**32 - 1``
(plus a zero word when needed to survive concatenation). Our streams are never concatenated
without a length, and the range decoder reads missing words as zeros, so :meth:`EntropyEncoder.finish`
instead writes the point of the final interval [lower, lower + range) with the most trailing zero
bits, serialises words big-endian, and drops every trailing zero byte. That costs at most ~2 bits
plus byte rounding over the information content, 1-2 bytes less than the default seal; a stream
without symbols is 0 bytes. The only other loss is the range coder's truncation of range / 2**24,
0.4-1.5e-4 bit per symbol (17-58 bits for 400k residuals; ``benchmarks/bench_entropy.py``).

Integrity. A range decoder accepts any byte string and the code has almost no redundancy, so most
damage is undetectable here: a truncated stream, zero-padded by the decoder, is usually the exact
encoding of *other* symbols, which then decode "wrong but safe" (right shapes, values in range).
What is detectable is caught: the termination above is canonical (one valid encoding per symbol
sequence), so :class:`EntropyDecoder` re-encodes what it decodes and :meth:`EntropyDecoder.finish`
raises :class:`BitstreamError` when that differs from the input. This catches zero padding always,
appended bytes in all our trials, and about a third of single bit flips; constriction exceptions
become BitstreamError too. Detecting truncation and flips reliably needs redundancy: the
container's optional CRC (SYSTEMS.md 8.3).

Categorical probabilities are converted to float64 (float32 cumulative sums would blur small
probabilities by ~1 count) and sanitised deterministically: rows that are finite, non-negative and
of moderate magnitude pass unchanged; in any other row NaN/negative/-inf entries become 0, a row
containing +inf becomes uniform over its +inf entries, an all-zero row becomes uniform, and the row
is divided by its maximum. constriction's ``Categorical(perfect=False)`` then quantises each row,
giving every one of the K symbols at least one of the 2**24 counts, so every symbol stays codable.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import constriction
import numpy as np
import torch

from latentcodec.entropy.gaussian import PRECISION, decode_gaussian_flat, encode_gaussian_flat, gaussian_tables
from latentcodec.entropy.scale_table import DEFAULT_SCALE_TABLE, ScaleTable
from latentcodec.errors import BitstreamError

_queue = constriction.stream.queue
_model = constriction.stream.model

# constriction needs 2 <= K < 2**24 - 1 for a categorical; uniform sizes must stay below 2**24.
MAX_CATEGORIES = (1 << PRECISION) - 2
_UNIFORM_DIGIT_BITS = 16
_MAX_UNIFORM_DIRECT = (1 << PRECISION) - 1
# Rows of a categorical call sanitised and coded at once; bounds the float64 copy to ~16 MiB.
_CATEGORICAL_CHUNK_ELEMENTS = 1 << 21
# Row maxima in this range keep any row sum (<= K * max < 2**24 * 2**900) a normal, finite float.
_MODERATE_LOW, _MODERATE_HIGH = 2.0**-900, 2.0**900

# The codec layer adds the likely cause for float-arithmetic (version-1) files: FLOAT_FORMAT_HINT.
_CORRUPT = "corrupt or truncated entropy-coded data"
FLOAT_FORMAT_HINT = ("; this is a format-version-1 file, whose entropy parameters are float arithmetic: it decodes "
                     "only where the writer's float kernels are reproduced (the same kind of CPU and thread count, "
                     "or GPU); files written by this version are portable")

T = TypeVar("T")


def _to_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _integer_array(values, what: str) -> np.ndarray:
    """int64 copy of integer (or integral floating) ``values``; ValueError for anything else."""
    array = _to_numpy(values)
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        if array.dtype == np.uint64 and array.size and array.max() >= 2**63:
            raise ValueError(f"{what} exceed the int64 range")
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"{what} must be integers (got non-integral or non-finite floats)")
        if array.size and (array.min() < -(2.0**63) or array.max() >= 2.0**63):
            raise ValueError(f"{what} exceed the int64 range")
        return array.astype(np.int64)
    raise ValueError(f"{what} must be an integer tensor, got dtype {array.dtype}")


def _device_of(values) -> torch.device:
    return values.device if isinstance(values, torch.Tensor) else torch.device("cpu")


def _shape_of(values) -> tuple[int, ...]:
    return tuple(values.shape) if hasattr(values, "shape") else np.shape(values)


def _scale_indices(scale_index, levels: int) -> np.ndarray:
    array = _to_numpy(scale_index)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(f"scale_index must be an integer tensor (use ScaleTable.index), got {array.dtype}")
    flat = array.astype(np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= levels):
        raise ValueError(f"scale_index values must lie in [0, {levels}), got [{flat.min()}, {flat.max()}]")
    return flat


def _categorical_rows(probabilities) -> tuple[np.ndarray, int, int]:
    array = _to_numpy(probabilities)
    if array.ndim != 2:
        raise ValueError(f"probabilities must have shape (N, K), got {array.shape}")
    rows, categories = array.shape
    if categories < 1 or categories > MAX_CATEGORIES:
        raise ValueError(f"categorical coding needs 1 <= K <= {MAX_CATEGORIES} categories, got {categories}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"probabilities must be a real-valued tensor, got dtype {array.dtype}")
    return array, rows, categories


def sanitize_probabilities(rows: np.ndarray) -> np.ndarray:
    """float64 (N, K) rows that constriction can always normalise; deterministic elementwise rules.

    Rows that are already finite, non-negative and of moderate magnitude (softmax outputs) pass
    through unchanged; the others get the rules of the module docstring and are divided by their
    maximum, which keeps every row sum a normal float in [1, K], as constriction requires.
    """
    p = np.array(rows, dtype=np.float64)  # copy: never modify the caller's buffer
    if p.size == 0:
        return p
    with np.errstate(invalid="ignore"):
        row_max = p.max(axis=1)  # NaN propagates, so NaN rows fail the check below
        row_min = p.min(axis=1)
    clean = (row_min >= 0.0) & (row_max >= _MODERATE_LOW) & (row_max <= _MODERATE_HIGH)
    if clean.all():
        return p
    dirty = p[~clean]
    positive_infinite = np.isinf(dirty) & (dirty > 0)
    infinite_rows = positive_infinite.any(axis=1)
    dirty[infinite_rows] = positive_infinite[infinite_rows]
    dirty[~(np.isfinite(dirty) & (dirty > 0.0))] = 0.0
    dirty_max = dirty.max(axis=1)
    empty_rows = dirty_max <= 0.0
    dirty[empty_rows] = 1.0
    dirty_max[empty_rows] = 1.0
    p[~clean] = dirty / dirty_max[:, None]
    return p


def _uniform_digits(num_symbols: int) -> tuple[int, int]:
    """(number of 16-bit low digits, size of the top digit) for a uniform over ``num_symbols``."""
    low_digits = 0
    while ((num_symbols - 1) >> (_UNIFORM_DIGIT_BITS * low_digits)) + 1 > _MAX_UNIFORM_DIRECT:
        low_digits += 1
    return low_digits, ((num_symbols - 1) >> (_UNIFORM_DIGIT_BITS * low_digits)) + 1


def _check_num_symbols(num_symbols: int) -> int:
    if isinstance(num_symbols, bool) or not isinstance(num_symbols, (int, np.integer)):
        raise ValueError(f"num_symbols must be an int, got {num_symbols!r}")
    num_symbols = int(num_symbols)
    if not 1 <= num_symbols <= 2**63:
        raise ValueError(f"num_symbols must lie in [1, 2**63], got {num_symbols}")
    return num_symbols


def _terminate(encoder) -> bytes:
    """Shortest canonical byte string that the range decoder decodes like constriction's own seal."""
    if encoder.is_empty():
        return b""
    words = np.asarray(encoder.get_compressed(), dtype=np.uint32)
    position, (lower, size) = encoder.pos()
    # words[:position] = flushed words + any pending carry words ("inverted" situation), resolved
    # by constriction for its own point lower + 2**32 - 1. The next 64 bits must be a point in
    # [lower, lower + size); pick the one with the most trailing zeros (it may carry past 2**64).
    prefix = words[:position].copy()
    upper = lower + size
    for zeros in range(64, -1, -1):
        point = -((-lower) >> zeros) << zeros  # lower rounded up to a multiple of 2**zeros
        if point < upper:
            break
    constriction_carried = lower + (1 << 32) - 1 >= 1 << 64
    if point >= 1 << 64 and not constriction_carried:
        i = len(prefix) - 1
        while i >= 0 and prefix[i] == 0xFFFFFFFF:
            prefix[i] = 0
            i -= 1
        if i < 0:
            raise RuntimeError("range coder carry propagated past the first word (constriction invariant broken)")
        prefix[i] += 1
    elif point < 1 << 64 and constriction_carried:
        raise RuntimeError("range coder termination: unexpected carry state (constriction invariant broken)")
    data = prefix.astype(">u4").tobytes() + (point & ((1 << 64) - 1)).to_bytes(8, "big")
    return data.rstrip(b"\x00")


def _words_from_bytes(data: bytes) -> np.ndarray:
    padded = bytes(data) + b"\x00" * (-len(data) % 4)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)


class EntropyEncoder:
    """Appends Gaussian, categorical and uniform symbols to one range-coded stream, in call order."""

    def __init__(self, table: ScaleTable = DEFAULT_SCALE_TABLE):
        self.table = table
        self._tables = gaussian_tables(table)
        self._coder = _queue.RangeEncoder()
        self._finished = False

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("EntropyEncoder.finish() was already called")

    def encode_gaussian(self, symbols: torch.Tensor, scale_index: torch.Tensor) -> None:
        """Integer residuals (zero-mean, sigma = table.values()[scale_index]); any shape, any int64."""
        self._check_open()
        if _shape_of(symbols) != _shape_of(scale_index):
            raise ValueError(
                f"symbols and scale_index must have the same shape, got {_shape_of(symbols)} and {_shape_of(scale_index)}"
            )
        values = _integer_array(symbols, "Gaussian symbols").reshape(-1)
        indices = _scale_indices(scale_index, self.table.levels)
        encode_gaussian_flat(self._coder, self._tables, values, indices)

    def encode_categorical(self, indices: torch.Tensor, probabilities: torch.Tensor) -> None:
        """indices (N,) in [0, K) under per-row probabilities (N, K), unnormalised rows allowed."""
        self._check_open()
        rows, count, categories = _categorical_rows(probabilities)
        symbols = _integer_array(indices, "categorical indices").reshape(-1)
        if symbols.size != count:
            raise ValueError(f"got {symbols.size} indices for {count} probability rows")
        if symbols.size and (symbols.min() < 0 or symbols.max() >= categories):
            raise ValueError(f"categorical indices must lie in [0, {categories})")
        if count == 0 or categories == 1:
            return
        family = _model.Categorical(perfect=False)
        step = max(1, _CATEGORICAL_CHUNK_ELEMENTS // categories)
        for start in range(0, count, step):
            probs = sanitize_probabilities(rows[start : start + step])
            self._coder.encode(symbols[start : start + step].astype(np.int32), family, probs)

    def encode_uniform(self, indices: torch.Tensor, num_symbols: int) -> None:
        """indices (any shape, flattened) uniform over [0, num_symbols), num_symbols <= 2**63."""
        self._check_open()
        num_symbols = _check_num_symbols(num_symbols)
        symbols = _integer_array(indices, "uniform indices").reshape(-1)
        if symbols.size and (symbols.min() < 0 or symbols.max() >= num_symbols):
            raise ValueError(f"uniform indices must lie in [0, {num_symbols})")
        if symbols.size == 0 or num_symbols == 1:
            return
        low_digits, top_size = _uniform_digits(num_symbols)
        unsigned = symbols.astype(np.uint64)
        if top_size > 1:
            top = unsigned >> np.uint64(_UNIFORM_DIGIT_BITS * low_digits)
            self._coder.encode(top.astype(np.int32), _model.Uniform(top_size))
        for digit in range(low_digits - 1, -1, -1):
            part = (unsigned >> np.uint64(_UNIFORM_DIGIT_BITS * digit)) & np.uint64((1 << _UNIFORM_DIGIT_BITS) - 1)
            self._coder.encode(part.astype(np.int32), _model.Uniform(1 << _UNIFORM_DIGIT_BITS))

    def finish(self) -> bytes:
        """The stream's bytes (b"" when nothing was coded). The encoder cannot be used afterwards."""
        self._check_open()
        self._finished = True
        return _terminate(self._coder)


class EntropyDecoder:
    """Reads a stream written by :class:`EntropyEncoder`; calls must mirror the encoder's, in order.

    ``verify=True`` (default) re-encodes every decoded call so that :meth:`finish` can check that
    the data is exactly the canonical stream of what was decoded (see the module docstring); it
    costs about one extra encode.
    """

    def __init__(self, data: bytes, table: ScaleTable = DEFAULT_SCALE_TABLE, verify: bool = True):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"EntropyDecoder needs bytes, got {type(data).__name__}")
        self.table = table
        self._data = bytes(data)
        self._tables = gaussian_tables(table)
        self._coder = self._guard(lambda: _queue.RangeDecoder(_words_from_bytes(self._data)))
        self._shadow = EntropyEncoder(table) if verify else None
        self._finished = False

    @staticmethod
    def _guard(operation: Callable[[], T]) -> T:
        try:
            return operation()
        except BitstreamError:
            raise
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as error:  # constriction may raise a pyo3 PanicException (a BaseException)
            raise BitstreamError(f"{_CORRUPT} ({type(error).__name__}: {error})") from error

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("EntropyDecoder.finish() was already called")

    def decode_gaussian(self, scale_index: torch.Tensor) -> torch.Tensor:
        """int64 residuals with the shape (and device) of ``scale_index``."""
        self._check_open()
        indices = _scale_indices(scale_index, self.table.levels)
        values = self._guard(lambda: decode_gaussian_flat(self._coder, self._tables, indices))
        if self._shadow is not None:
            encode_gaussian_flat(self._shadow._coder, self._tables, values, indices)
        return torch.from_numpy(values).reshape(_shape_of(scale_index)).to(_device_of(scale_index))

    def decode_categorical(self, probabilities: torch.Tensor) -> torch.Tensor:
        """int64 (N,) indices under per-row probabilities (N, K), on the probabilities' device."""
        self._check_open()
        rows, count, categories = _categorical_rows(probabilities)
        decoded = np.zeros(count, dtype=np.int64)
        if count and categories > 1:
            family = _model.Categorical(perfect=False)
            step = max(1, _CATEGORICAL_CHUNK_ELEMENTS // categories)
            for start in range(0, count, step):
                probs = sanitize_probabilities(rows[start : start + step])
                chunk = self._guard(lambda: self._coder.decode(family, probs))
                decoded[start : start + step] = chunk
                if self._shadow is not None:
                    self._shadow._coder.encode(chunk.astype(np.int32), family, probs)
        return torch.from_numpy(decoded).to(_device_of(probabilities))

    def decode_uniform(self, count: int, num_symbols: int) -> torch.Tensor:
        """int64 (count,) indices uniform over [0, num_symbols)."""
        self._check_open()
        num_symbols = _check_num_symbols(num_symbols)
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"count must be a non-negative int, got {count!r}")
        count = int(count)
        decoded = np.zeros(count, dtype=np.uint64)
        if count and num_symbols > 1:
            low_digits, top_size = _uniform_digits(num_symbols)
            if top_size > 1:
                top = self._guard(lambda: self._coder.decode(_model.Uniform(top_size), count))
                decoded = top.astype(np.uint64) << np.uint64(_UNIFORM_DIGIT_BITS * low_digits)
            for digit in range(low_digits - 1, -1, -1):
                part = self._guard(lambda: self._coder.decode(_model.Uniform(1 << _UNIFORM_DIGIT_BITS), count))
                decoded |= part.astype(np.uint64) << np.uint64(_UNIFORM_DIGIT_BITS * digit)
            if decoded.max() >= num_symbols:
                raise BitstreamError(f"{_CORRUPT}: uniform index out of range")
        result = torch.from_numpy(decoded.astype(np.int64))
        if self._shadow is not None:
            self._shadow.encode_uniform(result, num_symbols)
        return result

    def finish(self) -> None:
        """Raise BitstreamError if the data is not exactly what the decoded calls encode to
        (appended bytes, some corruption); truncation usually goes unnoticed (module docstring)."""
        self._check_open()
        self._finished = True
        if self._shadow is not None and self._shadow.finish() != self._data:
            raise BitstreamError(f"{_CORRUPT}: the stream does not match the symbols decoded from it")


__all__ = [
    "EntropyDecoder",
    "EntropyEncoder",
    "MAX_CATEGORIES",
    "sanitize_probabilities",
]

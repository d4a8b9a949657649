"""Fixed-length index coding (SYSTEMS.md 1.5, 8.1): ``bits`` bits per index, MSB first, no per-index
byte rounding, so ``count`` indices take exactly ceil(count * bits / 8) bytes and no termination.

Used where a codebook index is sent without a learned model (GLC z: 14 bits for K = 16384; DLF
semantic tokens: 12 bits; PerCo-style hyper-latents). The padding bits of the last byte are zero,
and :func:`unpack_indices` rejects data whose padding is not, which catches some corruption for free.
"""

from __future__ import annotations

import numpy as np
import torch

from latentcodec.errors import BitstreamError

MAX_BITS = 63  # results are int64
# Indices per vectorised block; a multiple of 8 so every block starts on a byte boundary.
_BLOCK = 1 << 16


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 0 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an int in [0, {MAX_BITS}], got {bits!r}")
    return int(bits)


def packed_size(count: int, bits: int) -> int:
    """Bytes taken by ``count`` indices of ``bits`` bits: ceil(count * bits / 8)."""
    bits = _check_bits(bits)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    return (int(count) * bits + 7) // 8


def _bit_columns(bits: int) -> np.ndarray:
    return np.arange(64 - bits, 64)  # the low ``bits`` of each big-endian 64-bit word


def pack_indices(indices: torch.Tensor | np.ndarray, bits: int) -> bytes:
    """Pack integer indices (any shape, flattened in C order) into bytes, ``bits`` each, MSB first."""
    bits = _check_bits(bits)
    array = indices.detach().cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(f"indices must be integers, got dtype {array.dtype}")
    flat = array.reshape(-1)
    if flat.size == 0:
        return b""
    if flat.min() < 0 or flat.max() >= 2**bits:
        raise ValueError(f"indices must lie in [0, 2**{bits}), got [{flat.min()}, {flat.max()}]")
    if bits == 0:
        return b""
    words = flat.astype(">u8")
    columns = _bit_columns(bits)
    blocks = []
    for start in range(0, flat.size, _BLOCK):
        word_bits = np.unpackbits(words[start : start + _BLOCK].view(np.uint8).reshape(-1, 8), axis=1)
        blocks.append(np.packbits(word_bits[:, columns].reshape(-1)).tobytes())
    return b"".join(blocks)


def unpack_indices(data: bytes, count: int, bits: int) -> torch.Tensor:
    """int64 (count,) indices from the first ``packed_size(count, bits)`` bytes of ``data``.

    Bytes beyond that are ignored, so a caller may pass a buffer that continues with other data.
    Raises BitstreamError if ``data`` is too short or the padding bits are not zero.
    """
    size = packed_size(count, bits)
    count = int(count)
    if len(data) < size:
        raise BitstreamError(f"truncated index data: need {size} bytes for {count} x {bits}-bit indices, got {len(data)}")
    if count == 0 or bits == 0:
        return torch.zeros(count, dtype=torch.int64)
    buffer = np.frombuffer(bytes(data[:size]), dtype=np.uint8)
    padding_bits = size * 8 - count * bits
    if padding_bits and int(buffer[-1]) & ((1 << padding_bits) - 1):
        raise BitstreamError("corrupt index data: non-zero padding bits")
    result = np.empty(count, dtype=np.int64)
    columns = _bit_columns(bits)
    block_bytes = _BLOCK * bits // 8
    for block, start in enumerate(range(0, count, _BLOCK)):
        stop = min(count, start + _BLOCK)
        chunk = buffer[block * block_bytes : block * block_bytes + packed_size(stop - start, bits)]
        index_bits = np.unpackbits(chunk)[: (stop - start) * bits].reshape(-1, bits)
        word_bits = np.zeros((stop - start, 64), dtype=np.uint8)
        word_bits[:, columns] = index_bits
        result[start:stop] = np.packbits(word_bits, axis=1).view(">u8").reshape(-1).astype(np.int64)
    return torch.from_numpy(result)

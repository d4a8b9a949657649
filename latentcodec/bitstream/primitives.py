"""Byte-level building blocks shared by every latentcodec file format (image files now, video later).

* **Varints** are bijective little-endian base-128 numbers: each byte carries 7 value bits, the high
  bit says "another byte follows", and every continuation adds one to the next group. Unlike LEB128,
  every value has exactly one encoding (no overlong forms a corrupted file could hide behind), and
  two bytes reach 16511 instead of 16383, so the default maximum image side (16384) still fits in two.
* **CRC-8** with polynomial x^8 + x^2 + x + 1 (0x07; the catalogued CRC-8/SMBUS: init 0, no
  reflection, no final xor; check value 0xF4 for b"123456789").
"""

from __future__ import annotations

from latentcodec.errors import BitstreamError

# Longest varint any latentcodec field may use: 9 bytes hold every value below 2**63. Readers pass a
# limit so that a run of continuation bytes is rejected after a few bytes, never read to its end.
MAX_VARINT_BYTES = 9

_CONTINUATION = 0x80
_PAYLOAD_MASK = 0x7F


def encode_varint(value: int, max_bytes: int = MAX_VARINT_BYTES) -> bytes:
    """Encode a non-negative integer; ValueError if it is negative or needs more than max_bytes bytes."""
    if value < 0:
        raise ValueError(f"varints encode non-negative integers, got {value}")
    out = bytearray()
    while value > _PAYLOAD_MASK:
        out.append(_CONTINUATION | (value & _PAYLOAD_MASK))
        # The -1 makes the encoding bijective: a continued group always stands for at least one more.
        value = (value >> 7) - 1
    out.append(value)
    if len(out) > max_bytes:
        raise ValueError(f"value needs a {len(out)}-byte varint, more than the limit of {max_bytes} bytes")
    return bytes(out)


def varint_size(value: int) -> int:
    """Number of bytes encode_varint(value) writes (no length limit)."""
    return len(encode_varint(value, max_bytes=1 << 30))


def decode_varint(data: bytes | bytearray | memoryview, offset: int = 0, max_bytes: int = MAX_VARINT_BYTES,
                  field: str = "varint") -> tuple[int, int]:
    """Read one varint at offset; returns (value, offset just after it).

    Raises BitstreamError naming ``field`` when the data ends inside the varint ("truncated file") or
    the varint is longer than max_bytes. At most max_bytes bytes are inspected.
    """
    value = 0
    for index in range(max_bytes):
        position = offset + index
        if position >= len(data):
            raise BitstreamError(f"truncated file: it ends inside the {field} (offset {offset})")
        byte = data[position]
        value += ((byte & _PAYLOAD_MASK) + (1 if index else 0)) << (7 * index)
        if not byte & _CONTINUATION:
            return value, position + 1
    raise BitstreamError(f"corrupt file: the {field} at offset {offset} is a varint longer than {max_bytes} bytes")


# A CRC-8 rather than a truncated zlib.crc32 / binascii.crc_hqx: only a true 8-bit CRC guarantees that
# every single-bit error and every burst of up to 8 bits is caught (the low byte of a longer CRC does
# not), and the stdlib has no 8-bit CRC. Polynomial 0x07 has the factor (x + 1), so it also catches
# every error that flips an odd number of bits. The table loop is pure Python, but it runs once per
# file over a few hundred bytes (~0.1 ms per kB), far from any hot path.
CRC8_POLYNOMIAL = 0x07


def _crc8_table(polynomial: int) -> bytes:
    table = bytearray(256)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ polynomial) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table[byte] = crc
    return bytes(table)


_CRC8_TABLE = _crc8_table(CRC8_POLYNOMIAL)


def crc8(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-8/SMBUS of data. Pass a previous result as ``crc`` to continue it: crc8(b, crc8(a)) == crc8(a + b)."""
    table = _CRC8_TABLE
    for byte in bytes(data):
        crc = table[crc ^ byte]
    return crc

"""A stand-in for a learned codec with the public API the evaluation harness drives.

Quality q keeps the image at 1/2**(3-q) of its size, 4 bits per channel, zlib-compressed, behind
a 5-byte header (width, height, quality): small, deterministic, and decodable from the bytes alone.
"""

from __future__ import annotations

import os
import signal
import struct
import zlib

import numpy as np
from PIL import Image

NUM_QUALITIES = 4
# Simulated crash: with LC_FAKE_KILL_AFTER=N, the process SIGKILLs itself at its N-th compress call
# (mid-run, with no chance to clean up), the way an out-of-memory kill or a pulled plug would.
KILL_AFTER_ENV = "LC_FAKE_KILL_AFTER"
_compress_calls = 0


def _count_compress_and_maybe_die() -> None:
    global _compress_calls
    _compress_calls += 1
    limit = os.environ.get(KILL_AFTER_ENV)
    if limit is not None and _compress_calls >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


class FakeCodec:
    name = "fake-glc"
    num_qualities = NUM_QUALITIES

    def __init__(self, quality: int = 0):
        self.quality = quality

    def at_quality(self, quality: int) -> "FakeCodec":
        return FakeCodec(quality)

    def compress(self, image: Image.Image) -> bytes:
        _count_compress_and_maybe_die()
        return self._encode(image)

    def _encode(self, image: Image.Image) -> bytes:
        width, height = image.size
        factor = 2 ** (NUM_QUALITIES - 1 - self.quality)
        small = image.resize((max(1, width // factor), max(1, height // factor)), Image.Resampling.BILINEAR)
        pixels = (np.asarray(small, dtype=np.uint8) >> 4).astype(np.uint8)
        header = struct.pack(">HHB", width, height, self.quality)
        return header + zlib.compress(pixels.tobytes() + struct.pack(">HH", *small.size), 9)

    def decompress(self, data: bytes) -> Image.Image:
        width, height, quality = struct.unpack(">HHB", data[:5])
        payload = zlib.decompress(data[5:])
        small_w, small_h = struct.unpack(">HH", payload[-4:])
        pixels = np.frombuffer(payload[:-4], np.uint8).reshape(small_h, small_w, 3)
        small = Image.fromarray((pixels << 4) + 8, "RGB")
        return small.resize((width, height), Image.Resampling.BILINEAR)

    def estimate_bits(self, image: Image.Image) -> float:
        return 8.0 * (len(self._encode(image)) - 5)


def make(quality: int = 0, weights: str | None = None, device: str = "cpu") -> FakeCodec:
    return FakeCodec(quality)


class OtherFakeCodec(FakeCodec):
    """A second learned codec for ``--compare``: the same coding under another curve name."""

    name = "fake-other"

    def at_quality(self, quality: int) -> "OtherFakeCodec":
        return OtherFakeCodec(quality)


def make_other(quality: int = 0, weights: str | None = None, device: str = "cpu") -> OtherFakeCodec:
    return OtherFakeCodec(quality)

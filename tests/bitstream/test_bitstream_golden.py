"""Golden file of the image container alone: any change to the byte format fails here.

A deliberate format change bumps FORMAT_VERSION (old files must keep failing with a clear message or
keep decoding), and only then is the file rewritten with
``python tests/bitstream/test_bitstream_golden.py --rewrite``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from latentcodec.bitstream import FORMAT_VERSION, ImageHeader, read_image_file, read_image_header, write_image_file

GOLDEN_FILE = Path(__file__).resolve().parent / "golden" / "image_container_v1.bin"

HEADER = ImageHeader(model_id=1, rate_index=3, height=130, width=200)
SECTIONS = (bytes(range(21)), b"cat", b"\xde\xad\xbe\xef\x01")


def golden_layout(header: ImageHeader) -> list[int | None]:
    """GLC-style packed z (derived: 12 positions x 14 bits = 21 bytes), a stored section, the implicit rest."""
    n_z = math.ceil(header.height / 64) * math.ceil(header.width / 64)
    return [math.ceil(n_z * 14 / 8), None, None]


def test_writer_reproduces_the_golden_bytes():
    assert FORMAT_VERSION == 1, "format version changed: add a golden file for the new version"
    assert write_image_file(HEADER, SECTIONS, golden_layout) == GOLDEN_FILE.read_bytes()


def test_reader_parses_the_golden_file_to_the_same_fields():
    data = GOLDEN_FILE.read_bytes()
    parsed = read_image_file(data, golden_layout, expected_model_id=HEADER.model_id)
    assert parsed.header == HEADER
    assert parsed.sections == SECTIONS
    assert read_image_header(data) == (HEADER, 7)
    assert len(data) == 1 + 1 + 1 + 2 + 2 + 1 + sum(map(len, SECTIONS)) + 1  # lead, ids, sizes, 1 length, CRC


if __name__ == "__main__" and sys.argv[1:] == ["--rewrite"]:
    GOLDEN_FILE.parent.mkdir(exist_ok=True)
    GOLDEN_FILE.write_bytes(write_image_file(HEADER, SECTIONS, golden_layout))
    print(f"wrote {GOLDEN_FILE} ({GOLDEN_FILE.stat().st_size} bytes)")

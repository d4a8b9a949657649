"""Golden file of the image container alone: any change to the byte format fails here.

A deliberate format change bumps FORMAT_VERSION (old files must keep failing with a clear message or
keep decoding) and adds a golden file for the new version. Version 1 (float arithmetic) and version 2
(portable integer arithmetic) share the byte layout and differ in the lead byte. Rewrite with
``python tests/bitstream/test_bitstream_golden.py --rewrite``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from latentcodec.bitstream import FORMAT_VERSION, ImageHeader, read_image_file, read_image_header, write_image_file

GOLDEN = Path(__file__).resolve().parent / "golden"
HEADERS = {version: ImageHeader(model_id=1, rate_index=3, height=130, width=200, portable=version == 2)
           for version in (1, 2)}
SECTIONS = (bytes(range(21)), b"cat", b"\xde\xad\xbe\xef\x01")


def golden_layout(header: ImageHeader) -> list[int | None]:
    """GLC-style packed z (derived: 12 positions x 14 bits = 21 bytes), a stored section, the implicit rest."""
    n_z = math.ceil(header.height / 64) * math.ceil(header.width / 64)
    return [math.ceil(n_z * 14 / 8), None, None]


def golden_file(version: int) -> Path:
    return GOLDEN / f"image_container_v{version}.bin"


@pytest.mark.parametrize("version", [1, 2])
def test_writer_reproduces_the_golden_bytes(version):
    assert FORMAT_VERSION == 2, "format version changed: add a golden file for the new version"
    data = write_image_file(HEADERS[version], SECTIONS, golden_layout)
    assert data == golden_file(version).read_bytes()
    assert data[0] == 0xB0 | version


@pytest.mark.parametrize("version", [1, 2])
def test_reader_parses_the_golden_file_to_the_same_fields(version):
    data = golden_file(version).read_bytes()
    header = HEADERS[version]
    parsed = read_image_file(data, golden_layout, expected_model_id=header.model_id)
    assert parsed.header == header and parsed.header.format_version == version
    assert parsed.sections == SECTIONS
    assert read_image_header(data) == (header, 7)
    assert len(data) == 1 + 1 + 1 + 2 + 2 + 1 + sum(map(len, SECTIONS)) + 1  # lead, ids, sizes, 1 length, CRC


if __name__ == "__main__" and sys.argv[1:] == ["--rewrite"]:
    GOLDEN.mkdir(exist_ok=True)
    for version, header in HEADERS.items():
        golden_file(version).write_bytes(write_image_file(header, SECTIONS, golden_layout))
        print(f"wrote {golden_file(version)}")

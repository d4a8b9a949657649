"""Golden files pin the GLC-image format: committed bytes must keep decoding to the same pixels.

The weights come from the reference's per-key rules (independent of torch's RNG) on the tiny
preset, and the source image is a closed-form pattern, so nothing here depends on a seed.
Regenerate deliberately, after a format change, with:
    python -m pytest tests/models/test_glc_image_golden.py --rewrite-golden  (see conftest)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from latentcodec.data.images import pil_to_tensor, tensor_to_uint8

GOLDEN = Path(__file__).parent / "golden"
RATE = 2


def golden_source() -> Image.Image:
    yy, xx = np.mgrid[0:72, 0:100].astype(np.float64)
    r = 128 + 100 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    g = 128 + 90 * np.cos((xx + yy) / 17.0)
    b = (xx * 2.5 + yy) % 256
    return Image.fromarray(np.stack([r, g, b], -1).round().clip(0, 255).astype(np.uint8))


def test_golden_file_still_decodes_to_the_same_pixels(tiny_glc, request):
    data_path, pixels_path = GOLDEN / "glc_tiny_q2.lci", GOLDEN / "glc_tiny_q2_decoded.png"
    x = pil_to_tensor(golden_source())
    if request.config.getoption("--rewrite-golden"):
        data = tiny_glc.compress(x, RATE)
        data_path.write_bytes(data)
        Image.fromarray(tensor_to_uint8(tiny_glc.decompress(data))).save(pixels_path)
    golden = data_path.read_bytes()
    decoded = tensor_to_uint8(tiny_glc.decompress(golden))
    assert np.array_equal(decoded, np.asarray(Image.open(pixels_path)))
    # The encoder side is pinned too: the same image, weights and rate give the same bytes.
    assert tiny_glc.compress(x, RATE) == golden

"""Classical baselines: real files, downscaled modes, the size-limited search, availability messages."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latentcodec.errors import BitstreamError, InputError
from latentcodec.evaluation import baselines as classical


def _photo_like(width: int = 72, height: int = 56, seed: int = 0) -> Image.Image:
    """Smooth gradients plus mild texture: compressible, but not trivially."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 7.0 + y / 5.0)], axis=-1) * 200 + 20
    pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def test_every_baseline_is_available_here():
    # CI installs ffmpeg and libjxl-tools (.ci/apt-packages.txt); a missing one must fail loudly.
    assert classical.baseline_availability() == {name: None for name in classical.BASELINES}


@pytest.mark.parametrize("name", list(classical.BASELINES))
def test_round_trip_at_every_scale_and_monotone_size(name):
    codec = classical.get_baseline(name)
    image = _photo_like()
    low, high = codec.search_values[0], codec.search_values[-1]
    for scale in (1, 2, 8):  # 8 takes the 72x56 image to 9x7: below x265's 16x16, so it is padded
        small = classical.encode_scaled(codec, image, low, scale)
        large = classical.encode_scaled(codec, image, high, scale)
        assert 0 < len(small) < len(large)
        for data in (small, large):
            decoded = classical.decode_scaled(codec, data, scale, image.size)
            assert decoded.size == image.size and decoded.mode == "RGB"
    best = classical.decode_scaled(codec, classical.encode_scaled(codec, image, high, 1), 1, image.size)
    worst = classical.decode_scaled(codec, classical.encode_scaled(codec, image, low, 1), 1, image.size)
    assert _psnr(image, best) > 30.0
    assert _psnr(image, best) > _psnr(image, worst) + 5.0


def test_downscaled_file_codes_the_small_image():
    codec = classical.get_baseline("webp")
    image = _photo_like(80, 48)
    data = classical.encode_scaled(codec, image, 50, 4)
    with Image.open(__import__("io").BytesIO(data)) as stored:
        assert stored.size == classical.scaled_size(image.size, 4) == (20, 12)


def test_decoding_garbage_is_a_bitstream_error():
    for name in ("jpeg", "avif", "jxl"):
        with pytest.raises(BitstreamError):
            classical.decode_scaled(classical.get_baseline(name), b"not an image at all", 1, (8, 8))


@pytest.mark.parametrize("name", ["jpeg", "webp", "hevc"])
def test_encode_at_most_returns_the_largest_file_within_the_limit(name):
    codec = classical.get_baseline(name)
    image = _photo_like()
    scales = (1, 2)
    full = len(classical.encode_scaled(codec, image, codec.search_values[len(codec.search_values) // 2], 1))
    limit = full // 2
    result = classical.encode_at_most(codec, image, limit, scales)
    assert result.best is not None
    assert len(result.best.data) <= limit
    # The next parameter up at the chosen scale overshoots, and no sampled parameter at any scale
    # gives a larger file within the limit.
    index = codec.search_values.index(result.best.value)
    if index + 1 < len(codec.search_values):
        above = classical.encode_scaled(codec, image, codec.search_values[index + 1], result.best.scale)
        assert len(above) > limit
    stride = max(1, len(codec.search_values) // 6)
    for scale in scales:
        for value in codec.search_values[::stride]:
            size = len(classical.encode_scaled(codec, image, value, scale))
            assert size > limit or size <= len(result.best.data)
    # The file returned is the one the parameter/scale it names produces.
    assert classical.encode_scaled(codec, image, result.best.value, result.best.scale) == result.best.data


def test_encode_at_most_reports_unreachable_limits():
    codec = classical.get_baseline("jpeg")
    result = classical.encode_at_most(codec, _photo_like(), 40, (1, 2))
    assert result.best is None
    assert result.smallest_bytes > 40  # a JPEG's headers alone exceed 40 bytes


def test_missing_tools_give_one_line_reasons(monkeypatch):
    monkeypatch.setattr(classical.shutil, "which", lambda tool: None)
    classical.ffmpeg_encoder_problem.cache_clear()
    try:
        jxl = classical.get_baseline("jxl").unavailable_reason()
        hevc = classical.get_baseline("hevc").unavailable_reason()
    finally:
        classical.ffmpeg_encoder_problem.cache_clear()
    assert "cjxl" in jxl and "libjxl-tools" in jxl and "\n" not in jxl
    assert "ffmpeg" in hevc and "\n" not in hevc


def test_unknown_baseline_and_out_of_range_value_are_input_errors():
    with pytest.raises(InputError, match="unknown baseline"):
        classical.get_baseline("bpg")
    with pytest.raises(InputError, match="qp"):
        classical.get_baseline("hevc").check_value(60)

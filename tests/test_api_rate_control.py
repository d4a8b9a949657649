"""The API's continuous qualities and target-size mode (ImageCodec.compress(target_bytes=...))."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import latentcodec
from latentcodec.bitstream import read_image_file
from latentcodec.errors import LatentCodecError
from latentcodec.models.glc_image import GLCImage, GLCImageConfig
from latentcodec.ratecontrol import TargetUnreachable


def save_tiny_with_rate_gains(path):
    """A tiny GLC-image whose four rates really differ (a fresh model has the same gain at every
    rate): encoder gains 1/4 .. 2, decoder gains their inverses."""
    torch.manual_seed(0)
    model = GLCImage(GLCImageConfig.tiny())
    with torch.no_grad():
        steps = torch.tensor([0.25, 0.5, 1.0, 2.0]).view(4, 1, 1, 1)
        model.q_enc.copy_(steps.expand_as(model.q_enc))
        model.q_dec.copy_((1 / steps).expand_as(model.q_dec))
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_with_rate_gains(tmp_path_factory.mktemp("weights") / "tiny-rates")


@pytest.fixture(scope="module")
def picture():
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float64)
    rgb = np.stack([128 + 100 * np.sin(xx / 7) * np.cos(yy / 11), 128 + 90 * np.cos((xx + yy) / 13),
                    (xx * 2 + yy) % 256], -1)
    return Image.fromarray(rgb.round().clip(0, 255).astype(np.uint8))


def test_float_qualities_snap_to_the_grid_and_whole_floats_are_ints(weights):
    codec = latentcodec.load("glc-image", quality=1.37, weights=weights)
    assert codec.quality == 1.37109375
    assert codec.at_quality(2.0).quality == 2 and isinstance(codec.at_quality(2.0).quality, int)
    for bad in (-0.5, 3.2, float("nan"), "1"):
        with pytest.raises(LatentCodecError, match="out of range"):
            codec.at_quality(bad)


def test_a_float_quality_file_records_its_rate(weights, picture):
    codec = latentcodec.load("glc-image", quality=0.5, weights=weights)
    data = codec.compress(picture)
    assert read_image_file(data).header.rate == 0.5
    assert codec.decompress(data).size == picture.size


def test_compress_with_a_target_returns_the_largest_file_not_above_it(weights, picture):
    codec = latentcodec.load("glc-image", weights=weights)
    low, high = len(codec.at_quality(0).compress(picture)), len(codec.at_quality(3).compress(picture))
    assert high > low + 20
    target = (low + high) // 2
    data = codec.compress(picture, target_bytes=target)
    assert low <= len(data) <= target
    result = codec.compress_to_target(picture, target_bpp=8 * target / (96 * 128))
    assert result.target_bytes == target and result.size <= target and result.encodes >= 1
    assert read_image_file(result.data).header.rate == result.rate


def test_an_unreachable_target_is_one_error_naming_the_smallest_size(weights, picture):
    codec = latentcodec.load("glc-image", weights=weights)
    smallest = len(codec.at_quality(0).compress(picture))
    with pytest.raises(TargetUnreachable, match=rf"^target 10 bytes is unreachable: the smallest file is {smallest} "):
        codec.compress(picture, target_bytes=10)
    with pytest.raises(LatentCodecError, match="exactly one"):
        codec.compress_to_target(picture)


def test_downscale_fits_a_small_target_and_decodes_at_full_size(weights, picture):
    codec = latentcodec.load("glc-image", weights=weights)
    target = len(codec.at_quality(0).compress(picture)) // 2
    result = codec.compress_to_target(picture, target_bytes=target, allow_downscale=True)
    assert result.size <= target and 0 < result.scale < 64
    assert read_image_file(result.data).header.scale == result.scale
    assert codec.decompress(result.data).size == picture.size

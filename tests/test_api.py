"""The public Python API: latentcodec.load and the ImageCodec it returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import latentcodec
from latentcodec.errors import LatentCodecError, WeightsError
from latentcodec.models.glc_image import GLCImage, GLCImageConfig


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny"
    GLCImage(GLCImageConfig.tiny()).save_pretrained(path)
    return path


def test_compress_decompress_estimate(weights):
    codec = latentcodec.load("glc-image", quality=1, weights=weights, device="cpu")
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    data = codec.compress(picture)
    assert isinstance(data, bytes) and len(data) > 8
    decoded = codec.decompress(data)
    assert isinstance(decoded, Image.Image) and decoded.size == (70, 50) and decoded.mode == "RGB"
    bits = codec.estimate_bits(picture)
    assert isinstance(bits, float) and bits > 0
    other = codec.at_quality(3)
    assert other.model is codec.model and other.quality == 3
    with pytest.raises(LatentCodecError, match="percov2 only"):
        codec.compress(picture, caption="a red barn")


def test_default_weights_or_a_clear_error():
    entry_default = latentcodec.api.get_entry("glc-image").default_weights_path
    if entry_default is None:
        with pytest.raises(WeightsError, match="no default weights"):
            latentcodec.load("glc-image")
    else:
        codec = latentcodec.load("glc-image")
        assert codec.num_qualities >= 3


def test_quality_and_model_name_are_checked(weights):
    with pytest.raises(LatentCodecError, match="quality"):
        latentcodec.load("glc-image", quality=7, weights=weights)
    with pytest.raises(LatentCodecError, match="unknown model"):
        latentcodec.load("no-such-codec", weights=weights)
    with pytest.raises(WeightsError, match="not found"):
        latentcodec.load("glc-image", weights=weights / "missing")


@pytest.mark.parametrize(
    "picture, message",
    [
        (Image.new("L", (40, 30), 100), "greyscale"),
        (Image.new("RGBA", (40, 30), (10, 20, 30, 128)), "alpha"),
        (Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16)), "8-bit"),
    ],
)
def test_non_rgb_inputs_are_converted_with_a_warning(weights, picture, message):
    codec = latentcodec.load("glc-image", weights=weights)
    with pytest.warns(UserWarning, match=message):
        data = codec.compress(picture)
    assert codec.decompress(data).size == (40, 30)


def test_portable_flag_chooses_the_arithmetic_and_decoding_follows_the_file(weights):
    from PIL import Image

    picture = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    portable = latentcodec.load("glc-image", weights=weights)
    floating = latentcodec.load("glc-image", weights=weights, portable=False)
    data_portable, data_float = portable.compress(picture), floating.compress(picture)
    assert data_portable[0] == 0xB2 and data_float[0] == 0xB1
    # Either codec object decodes either file: the file records its arithmetic.
    assert np.array_equal(np.asarray(floating.decompress(data_portable)), np.asarray(portable.decompress(data_portable)))
    assert np.array_equal(np.asarray(portable.decompress(data_float)), np.asarray(floating.decompress(data_float)))


def test_max_memory_sets_the_generator_budget(weights):
    from latentcodec.nn.tiling import activation_budget

    codec = latentcodec.load("glc-image", weights=weights, max_memory="1.5GB")
    assert codec.model.vqgan.generator.memory_budget == activation_budget(1_500_000_000, codec.model, codec.model.integer_twin_bytes())
    default = latentcodec.load("glc-image", weights=weights)
    assert default.model.vqgan.generator.memory_budget is not None  # from the machine's available RAM


@pytest.mark.parametrize("max_memory", ["lots", "2 parsecs", 1000, -5, 2.5e9, True])
def test_bad_max_memory_is_refused(weights, max_memory):
    with pytest.raises(LatentCodecError, match="memory"):
        latentcodec.load("glc-image", weights=weights, max_memory=max_memory)

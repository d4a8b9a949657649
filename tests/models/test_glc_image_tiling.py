"""GLC-image under a memory budget: files never depend on it, and tiled decoding stays within
one 8-bit level of untiled decoding."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from latentcodec.api import load
from latentcodec.data.images import pil_to_tensor, tensor_to_uint8
from latentcodec.models.glc_image import GLCImage, GLCImageConfig
from latentcodec.nn import tiling
from latentcodec.tokenizers.vqgan import ENCODER_ACTIVATION_BUDGET


@pytest.fixture(scope="module")
def tiny_model() -> GLCImage:
    torch.manual_seed(0)
    return GLCImage(GLCImageConfig.tiny()).eval()


@pytest.fixture
def count_tiles(monkeypatch):
    calls = []
    original = tiling.TiledChain.__call__

    def call(self, source, budget):
        calls.append(budget)
        return original(self, source, budget)

    monkeypatch.setattr(tiling.TiledChain, "__call__", call)
    return calls


def test_budget_sets_the_generator_and_leaves_the_encoder(tiny_model):
    tiny_model.set_memory_budget(2 * 10**9)
    try:
        assert tiny_model.vqgan.generator.memory_budget == tiling.activation_budget(2 * 10**9, tiny_model, tiny_model.integer_twin_bytes())
        assert tiny_model.vqgan.encoder.memory_budget == ENCODER_ACTIVATION_BUDGET
        tiny_model.set_memory_budget(None)
        assert tiny_model.vqgan.generator.memory_budget is None
        assert tiny_model.vqgan.encoder.memory_budget == ENCODER_ACTIVATION_BUDGET
    finally:
        tiny_model.set_memory_budget(None)


def test_file_bytes_do_not_depend_on_the_budget(tiny_model, count_tiles, monkeypatch):
    # As if the image were huge: the encoder's fixed budget is small enough to tile this one.
    monkeypatch.setattr(tiny_model.vqgan.encoder, "memory_budget", 150_000)
    x = torch.rand(1, 3, 96, 160)
    files = []
    for budget in (None, tiling.MIN_MEMORY_BUDGET, 10**12):
        tiny_model.set_memory_budget(budget)
        files.append(tiny_model.compress(x, 1))
    tiny_model.set_memory_budget(None)
    assert count_tiles, "the encoder did not tile"
    assert files[0] == files[1] == files[2]


def test_tiled_decoding_within_one_level(tiny_model, count_tiles):
    x = torch.rand(1, 3, 80, 112)
    data = tiny_model.compress(x, 2)
    whole = tensor_to_uint8(tiny_model.decompress(data)).astype(int)
    tiny_model.vqgan.generator.memory_budget = 200_000
    try:
        tiled = tensor_to_uint8(tiny_model.decompress(data)).astype(int)
    finally:
        tiny_model.vqgan.generator.memory_budget = None
    assert count_tiles, "the generator did not tile"
    assert abs(tiled - whole).max() <= 1


def test_shipped_default_on_kodak_tiled_within_one_level(kodak_dir, count_tiles):
    codec = load("glc-image", quality=0, max_memory="4GB")
    model = codec.model
    x = pil_to_tensor(Image.open(kodak_dir / "kodim23.png"))
    data = model.compress(x, 0)
    model.set_memory_budget(None)
    whole = tensor_to_uint8(model.decompress(data)).astype(int)
    model.vqgan.generator.memory_budget = 20 * 10**6  # a few tiles for 768x512
    tiled = tensor_to_uint8(model.decompress(data)).astype(int)
    assert count_tiles, "the generator did not tile"
    assert abs(tiled - whole).max() <= 1

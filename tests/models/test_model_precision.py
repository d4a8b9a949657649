"""LatentCodec.set_precision: the pixel-space nets in bfloat16 change pixels slightly, never symbols."""

import pytest
import torch

import latentcodec
from latentcodec.errors import LatentCodecError


def _pixel_nets(model):
    return [m for m in model.modules() if getattr(m, "follows_precision", False)]


def test_set_precision_reaches_every_pixel_net_and_only_those(tiny_glc):
    nets = _pixel_nets(tiny_glc)
    assert {type(m).__name__ for m in nets} == {"VQGANEncoder", "VQGANGenerator"}
    try:
        tiny_glc.set_precision("bf16")
        assert all(m.compute_dtype == torch.bfloat16 for m in nets)
        assert tiny_glc.compute_dtype == torch.bfloat16
        tiny_glc.set_precision("fp32")
        assert all(m.compute_dtype == torch.float32 for m in nets)
    finally:
        tiny_glc.set_precision("fp32")


def test_bfloat16_changes_pixels_slightly_and_never_the_symbols(tiny_glc):
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 96)
    tiny_glc.set_precision("fp32")
    data = tiny_glc.compress(x)
    reference = tiny_glc.decompress(data)
    _, latent = tiny_glc.decode_latent(data)
    try:
        tiny_glc.set_precision("bf16")
        decoded = tiny_glc.decompress(data)
        _, latent_bf16 = tiny_glc.decode_latent(data)
        with torch.no_grad():
            image_bf16 = tiny_glc.vqgan.generator(latent)
    finally:
        tiny_glc.set_precision("fp32")
    assert torch.equal(latent_bf16, latent)  # the entropy path ignores the precision
    assert decoded.dtype == reference.dtype == torch.float32 and image_bf16.dtype == torch.float32
    difference = (decoded - reference).abs()
    # bfloat16 keeps 8 significant bits: not bit-equal, but close (the generator's output is [0, 1] here).
    assert 0 < difference.max() < 0.1 and difference.mean() < 0.01


def test_training_ignores_the_precision(tiny_glc):
    """With gradients on, the nets run in float32 whatever the setting (autocast is for inference)."""
    latent = torch.randn(1, tiny_glc.config.vqgan.latent_channels, 4, 6)
    generator = tiny_glc.vqgan.generator
    with torch.enable_grad():
        reference = generator(latent)
        try:
            tiny_glc.set_precision("bf16")
            again = generator(latent)
        finally:
            tiny_glc.set_precision("fp32")
    assert torch.equal(again, reference)


def test_dlf_and_percov2_pixel_nets_follow_the_precision(tiny_dlf):
    from latentcodec.models.percov2 import PerCoV2, PerCoV2Config

    assert {type(m).__name__ for m in _pixel_nets(tiny_dlf)} >= {"TamingDecoder"} or \
        {type(m).__name__ for m in _pixel_nets(tiny_dlf)} >= {"VQGANGenerator"}
    torch.manual_seed(0)
    percov2 = PerCoV2(PerCoV2Config.tiny()).eval()
    assert percov2.vae in _pixel_nets(percov2) and percov2.transformer in _pixel_nets(percov2)
    x = torch.rand(1, 3, 64, 64)
    for model in (tiny_dlf, percov2):
        data = model.compress(x)
        reference = model.decompress(data)
        try:
            model.set_precision("bf16")
            decoded = model.decompress(data)
        finally:
            model.set_precision("fp32")
        assert decoded.dtype == torch.float32 and decoded.shape == reference.shape
        assert (decoded - reference).abs().mean() < 0.02, type(model).__name__


def test_load_rejects_an_unknown_precision():
    with pytest.raises(LatentCodecError, match="precision must be one of auto, fp32, bf16"):
        latentcodec.load("glc-image", precision="half")

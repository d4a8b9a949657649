"""PerCoV2's VAE in tiles: the same maps as diffusers' own encoder and decoder, and budgets that bite."""

import pytest
import torch
from torch import nn

from latentcodec.models import percov2_tiling
from latentcodec.models.percov2 import PerCoV2, PerCoV2Config
from latentcodec.nn import tiling


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    codec = PerCoV2(PerCoV2Config.tiny()).eval()
    with torch.no_grad():  # GroupNorm away from identity, so that wrong statistics would show
        for module in codec.vae.modules():
            if isinstance(module, nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return codec


def test_every_block_but_attention_is_tileable(model):
    for chain in (percov2_tiling.decoder_chain(model.vae.decoder), percov2_tiling.encoder_chain(model.vae.encoder)):
        whole = [type(block).__name__ for block in chain if not tiling.is_tileable(block)]
        assert whole == ["Attention"]


def test_the_decoder_upsamples_with_transposed_convs_as_diffusers_does_literally(model, monkeypatch):
    """Each Upsample2D runs as our transposed-conv Upsample, with the same conv (state-dict keys
    unchanged), and decodes what nearest x2 then the conv decode."""
    from latentcodec.tokenizers.vqgan import Upsample

    samplers = [s for block in model.vae.decoder.up_blocks for s in (block.upsamplers or [])]
    assert samplers and all(isinstance(s, percov2_tiling._Upsample) for s in samplers)
    assert any(".upsamplers.0.conv.weight" in key for key in model.state_dict())
    z = torch.randn(1, 16, 9, 13)
    with torch.inference_mode():
        transposed = model.vae.decode(z).sample
        monkeypatch.setattr(Upsample, "transposed", False)
        literal = model.vae.decode(z).sample
    assert (transposed - literal).abs().max() <= 1e-4 * literal.abs().max()


@pytest.mark.parametrize("latent_size", [(12, 16), (9, 13)])
def test_tiled_decoder_matches_diffusers_decode(model, latent_size, count_tiled_runs):
    z = torch.randn(1, 16, *latent_size)
    with torch.inference_mode():
        expected = model.vae.decode(z).sample
        model.vae.memory_budget = 60_000
        try:
            tiled = percov2_tiling.vae_decode(model.vae, z)
        finally:
            model.vae.memory_budget = None
    assert count_tiled_runs and min(count_tiled_runs) < 8 * max(latent_size) // 2
    assert tiled.shape == expected.shape
    assert (tiled - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_tiled_encoder_mode_matches_diffusers(model, monkeypatch, count_tiled_runs):
    x = torch.rand(1, 3, 88, 120) * 2 - 1
    monkeypatch.setattr(percov2_tiling, "VAE_ENCODER_ACTIVATION_BUDGET", 80_000)
    with torch.inference_mode():
        expected = model.vae.encode(x).latent_dist.mode()
        tiled = percov2_tiling.vae_encode_mode(model.vae, x)
    assert count_tiled_runs
    assert (tiled - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_memory_budget_reaches_the_vae_and_decoding_stays_within_one_level(model, count_tiled_runs):
    x = torch.rand(1, 3, 96, 128)
    data = model.compress(x)
    whole = model.decompress(data)
    model.set_memory_budget(tiling.MIN_MEMORY_BUDGET)
    try:
        assert model.vae.memory_budget is not None
        budget = model.vae.memory_budget
        model.vae.memory_budget = 60_000  # the minimum process budget leaves room for a tiny map whole
        tiled = model.decompress(data)
        model.vae.memory_budget = budget
    finally:
        model.set_memory_budget(None)
    assert model.vae.memory_budget is None and count_tiled_runs
    assert ((tiled * 255).round() - (whole * 255).round()).abs().max() <= 1


def test_the_decoder_runs_channels_last_the_encoder_as_stored_and_loading_keeps_both(model, tmp_path):
    """channels_last spares oneDNN a blocked copy of every decoder map; the encoder, whose output is
    coded, keeps NCHW so files do not change. A loaded model (tensors adopted as stored) does the same."""
    def layouts(codec):
        decoder = [m.weight for m in codec.vae.decoder.modules() if isinstance(m, nn.Conv2d)]
        encoder = [m.weight for m in codec.vae.encoder.modules() if isinstance(m, nn.Conv2d)]
        return (all(w.is_contiguous(memory_format=torch.channels_last) for w in decoder),
                all(w.is_contiguous() for w in encoder))

    assert layouts(model) == (True, True)
    model.save_pretrained(tmp_path / "m")
    loaded = PerCoV2.from_pretrained(tmp_path / "m")
    assert layouts(loaded) == (True, True)
    x = torch.rand(1, 3, 64, 96)
    data = model.compress(x)
    nhwc = model.decompress(data)
    model.set_memory_format(torch.contiguous_format)
    try:
        assert layouts(model) == (False, True)
        assert model.compress(x) == data
        nchw = model.decompress(data)
    finally:
        model.set_memory_format(torch.channels_last)
    assert ((nhwc * 255).round() - (nchw * 255).round()).abs().max() <= 1

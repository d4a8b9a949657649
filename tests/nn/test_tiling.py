"""Tiled inference: budgets parse, and tiled chains compute what the untiled nets compute."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latentcodec.models.glc_image import GLCImageConfig
from latentcodec.nn import tiling
from latentcodec.nn.tiling import Region, parse_memory_size, run_blocks
from latentcodec.tokenizers.vqgan import VQGAN, Swish, group_norm


@pytest.mark.parametrize("text, size", [("2GB", 2 * 10**9), ("1.5G", 1_500_000_000), ("512MiB", 512 * 2**20),
                                        (" 300 mb ", 300 * 10**6), ("100000000", 10**8), ("1TiB", 2**40)])
def test_memory_sizes_parse(text, size):
    assert parse_memory_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "2XB", "-1GB", "1e9", "2 G B", "10MB"])
def test_bad_memory_sizes_are_refused(text):
    with pytest.raises(ValueError):
        parse_memory_size(text)


def test_default_budget_follows_available_memory(monkeypatch):
    monkeypatch.setattr(tiling, "available_memory", lambda: 8 * 10**9)
    assert tiling.default_memory_budget() == 4 * 10**9
    monkeypatch.setattr(tiling, "available_memory", lambda: 10**6)
    assert tiling.default_memory_budget() == tiling.MIN_MEMORY_BUDGET


def test_region_expand_clips_at_the_border():
    assert Region(0, 5, 10, 20).expand(2, (11, 21)) == Region(0, 3, 11, 21)


def _randomised_vqgan() -> VQGAN:
    """The tiny VQGAN with GroupNorm affines away from identity, so wrong statistics would show."""
    torch.manual_seed(0)
    model = VQGAN(GLCImageConfig.tiny().vqgan).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return model


@pytest.mark.parametrize("height, width", [(96, 160), (83, 117)])
def test_tiled_encoder_matches_untiled(height, width, count_tiled_runs):
    model = _randomised_vqgan()
    x = torch.rand(1, 3, height, width) * 2 - 1
    with torch.inference_mode():
        model.encoder.memory_budget = None
        whole = model.encoder(x)
        model.encoder.memory_budget = 150_000
        tiled = model.encoder(x)
    assert count_tiled_runs and min(count_tiled_runs) < max(height, width) // 2
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() <= 1e-4 * whole.abs().max()


@pytest.mark.parametrize("latent_size", [(6, 10), (5, 7)])
def test_tiled_generator_matches_untiled_within_one_level(latent_size, count_tiled_runs):
    model = _randomised_vqgan()
    latent = torch.randn(1, GLCImageConfig.tiny().latent_channels, *latent_size)
    with torch.inference_mode():
        whole = model.generator(latent)
        model.generator.memory_budget = 200_000
        tiled = model.generator(latent)
    assert count_tiled_runs and min(count_tiled_runs) < 16 * max(latent_size) // 2
    assert tiled.shape == whole.shape
    to_8bit = lambda image: torch.round((image.clamp(-1, 1) + 1) * 127.5)  # noqa: E731
    assert (to_8bit(tiled) - to_8bit(whole)).abs().max() <= 1
    assert (tiled - whole).abs().max() <= 1e-4 * whole.abs().max()


def test_group_norm_statistics_are_global():
    """A chain whose only non-local step is GroupNorm: tiles that normalised alone would differ."""
    torch.manual_seed(1)
    blocks = [nn.Conv2d(3, 8, 3, padding=1), group_norm(8, 4), Swish(), nn.Conv2d(8, 2, 3, padding=1)]
    x = torch.randn(1, 3, 40, 50)
    x[..., :20, :] *= 5  # statistics differ strongly between the halves
    with torch.inference_mode():
        whole = run_blocks(blocks, x, None)
        tiled = run_blocks(blocks, x, 20_000)
    assert torch.allclose(tiled, whole, atol=1e-5, rtol=1e-5)


def test_training_never_tiles(count_tiled_runs):
    model = _randomised_vqgan()
    model.generator.memory_budget = 1
    latent = torch.randn(1, GLCImageConfig.tiny().latent_channels, 3, 3)
    out = model.generator(latent)  # grad enabled: whole maps, as training needs
    assert out.requires_grad and not count_tiled_runs


def test_tiled_taming_decoder_matches_untiled(count_tiled_runs):
    """DLF's VQGAN decoder (taming's module tree, global attention) tiles the same way."""
    from latentcodec.tokenizers.taming_vqgan import TamingDecoder, dlf_vqgan_config

    torch.manual_seed(0)
    decoder = TamingDecoder(dlf_vqgan_config(base_channels=32, codebook_size=16, latent_channels=8,
                                             channel_multipliers=(1, 1, 2))).eval()
    latent = torch.randn(1, 8, 9, 11)
    with torch.inference_mode():
        whole = decoder(latent)
        decoder.memory_budget = 300_000
        tiled = decoder(latent)
    assert count_tiled_runs
    assert (tiled - whole).abs().max() <= 1e-4 * whole.abs().max()


@pytest.mark.parametrize("rows, factor", [(37, 16), (5, 4), (16, 2)])
def test_lowpass_upsampling_in_bands_matches_whole(rows, factor, monkeypatch):
    from latentcodec.tokenizers import vqgan

    monkeypatch.setattr(vqgan, "LOWPASS_BAND_ROWS", 3)  # several bands, the last one short
    small = torch.randn(1, 3, rows, 7, generator=torch.Generator().manual_seed(rows))
    base = torch.randn(1, 3, rows * factor, 7 * factor)
    expected = base + vqgan.upsample_bilinear(small, factor)
    banded = vqgan.add_upsampled_in_bands(base.clone(), small, factor)
    assert (banded - expected).abs().max() < 1e-5


def _planned_runs(monkeypatch, blocks, x, budget):
    """Run ``blocks`` under ``budget`` and whole; returns (blocks, bytes held) of every tiled run
    (its input map plus its output map) after checking that tiling kept the values."""
    runs = []
    original = tiling.TiledChain.__call__

    def call(self, source, tile_budget):
        held = tiling._map_bytes(self.shapes[0], 1) + tiling._map_bytes(self.shapes[-1], 1)
        runs.append((len(self.blocks), held))
        return original(self, source, tile_budget)

    monkeypatch.setattr(tiling.TiledChain, "__call__", call)
    with torch.inference_mode():
        tiled = run_blocks(blocks, x, budget)
        whole = run_blocks(blocks, x, None)
    assert (tiled - whole).abs().max() <= 1e-4 * whole.abs().max()
    assert all(held <= budget - budget // 8 for _, held in runs)
    return runs


def test_a_tiled_run_does_not_end_on_a_map_the_next_run_cannot_hold_beside_its_output(monkeypatch):
    """Upsample (8 -> 8 channels, x2) then a res block (8 -> 4): the upsampled map fits beside the
    run's input, but not beside the next block's output; the run must go on through the res block."""
    from latentcodec.tokenizers.vqgan import ResBlock, Upsample

    torch.manual_seed(0)
    blocks = [Upsample(8), ResBlock(8, 4, 4)]
    budget = 50_000  # bytes: upsampled map 32 KB, res block output 16 KB, input 8 KB
    runs = _planned_runs(monkeypatch, blocks, torch.randn(1, 8, 16, 16), budget)
    assert runs == [(2, 8 * 16 * 16 * 4 + 4 * 32 * 32 * 4)]


def test_a_tiled_run_goes_on_through_a_small_block_rather_than_end_on_a_map_it_cannot_hold(monkeypatch):
    """Upsample (x2), a res block, then a conv to one channel: the conv could run whole, but the
    res block's output (32 KB) does not fit beside the run's input (8 KB) with room for tiles in a
    41 KB budget, so the run must take the conv in and end on its 4 KB output (the official preset
    at 2304x1728 ended on a 2 GB map and overran a 4 GB budget by a quarter)."""
    from latentcodec.tokenizers.vqgan import ResBlock, Upsample

    torch.manual_seed(0)
    blocks = [Upsample(8), ResBlock(8, 8, 4), torch.nn.Conv2d(8, 1, 3, padding=1)]
    budget = 41_000  # the conv whole: 32 KiB in + 2 x 4 KiB out = 40,960 bytes
    runs = _planned_runs(monkeypatch, blocks, torch.randn(1, 8, 16, 16), budget)
    assert runs == [(3, 8 * 16 * 16 * 4 + 1 * 32 * 32 * 4)]


def test_the_allocator_releases_freed_memory_once_an_image_needs_tiling(monkeypatch):
    """Whole-map runs leave the allocator as it is (retaining, under the CLI); the first tiled run
    switches it to giving memory back (latentcodec/runtime.py)."""
    from latentcodec.tokenizers.vqgan import ResBlock

    calls = []
    monkeypatch.setattr(tiling, "release_freed_memory", lambda: calls.append(1) or True)
    blocks = [ResBlock(8, 8, 4)]
    x = torch.randn(1, 8, 16, 16)
    with torch.inference_mode():
        run_blocks(blocks, x, 10**9)
        assert calls == []
        run_blocks(blocks, x, 20_000)
    assert calls == [1]

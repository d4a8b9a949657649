"""VQGAN inference paths: windowed attention and the tiled large-map ResBlock."""

from __future__ import annotations

import pytest
import torch

import latentcodec.tokenizers.vqgan as vqgan
from latentcodec.tokenizers.vqgan import AttnBlock, ResBlock, Upsample


def perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return module.eval()


def test_windowed_attention_attends_only_inside_each_window():
    """Normalisation and q/k/v cover the whole map; softmax runs within 4x4 windows (edges partial)."""
    block = perturbed(AttnBlock(16, 4, window=4))
    x = torch.randn(1, 16, 6, 9)
    with torch.inference_mode():
        windowed = block(x)
        h = block.norm(x)
        q, k, v = block.q(h), block.k(h), block.v(h)
        attended = torch.empty_like(v)
        for top in (0, 4):
            for left in (0, 4, 8):
                window = (slice(None), slice(None), slice(top, top + 4), slice(left, left + 4))
                c = q[window].shape[1]
                qw, kw, vw = (t[window].flatten(2) for t in (q, k, v))  # (1, C, n)
                weights = torch.softmax(qw.transpose(1, 2) @ kw * c**-0.5, dim=-1)  # (1, n, n)
                attended[window] = (vw @ weights.transpose(1, 2)).view_as(v[window])
        expected = x + block.proj_out(attended)
    assert torch.allclose(windowed, expected, atol=1e-5)


@pytest.mark.parametrize("in_channels, out_channels", [(64, 32), (32, 64), (32, 32)])
def test_the_whole_map_estimate_of_a_res_block_counts_its_larger_phase(in_channels, out_channels):
    """Run whole, conv1 holds the input and its normalised copy beside its output (2 in + 1 out), conv2
    the input and two output-sized maps (1 in + 2 out): a narrowing block peaks in the first, which
    an estimate of 1 + 2 missed (PerCoV2's VAE at 1 MP went 5 % over a 1.5 GB budget)."""
    from latentcodec.nn.tiling import untiled_bytes

    block = ResBlock(in_channels, out_channels, 8)
    map_bytes = 4 * 10 * 12
    estimate = untiled_bytes(block, (in_channels, 10, 12), (out_channels, 10, 12), 1)
    phases = (2 * in_channels + out_channels, in_channels + 2 * out_channels)
    assert estimate == max(phases) * map_bytes


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("in_channels", [32, 16])  # 16: with the 1x1 shortcut
def test_tiled_resblock_matches_the_plain_path(monkeypatch, memory_format, in_channels):
    block = perturbed(ResBlock(in_channels, 32, 8)).to(memory_format=memory_format)
    x = torch.randn(1, in_channels, 37, 50).contiguous(memory_format=memory_format)
    with torch.inference_mode():
        plain = block(x.clone())
        monkeypatch.setattr(vqgan, "TILED_INFERENCE_MIN_PIXELS", 1)
        monkeypatch.setattr(vqgan, "TILE_ELEMENTS", 32 * 50 * 5)  # 5-row bands, a partial last band
        tiled = block(x.clone())
    assert torch.allclose(tiled, plain, atol=1e-4, rtol=1e-4)
    assert tiled.is_contiguous(memory_format=memory_format)


def test_large_map_group_norm_sums_in_float64(monkeypatch):
    """The banded float64 statistics (partial last band included) are GroupNorm's own. (Where they
    beat torch's float32 kernel, on maps of millions of positions, is too large for a unit test.)"""
    norm = perturbed(vqgan.group_norm(32, 8))
    x = torch.randn(1, 32, 37, 50) * 3 + 4
    expected = torch.nn.functional.group_norm(x.double(), 8, norm.weight.double(), norm.bias.double(), norm.eps)
    with torch.inference_mode():
        monkeypatch.setattr(vqgan, "TILED_INFERENCE_MIN_PIXELS", 1)
        monkeypatch.setattr(vqgan, "TILE_ELEMENTS", 32 * 50 * 5)
        banded = norm(x)
    assert torch.allclose(banded.double(), expected, atol=1e-5)


@pytest.mark.parametrize("transposed", [True, False])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_upsample_is_nearest_then_conv(monkeypatch, transposed, memory_format):
    """The transposed-conv form equals nearest x2 then the 3x3 conv, values and weight gradients,
    odd sizes and both memory formats included."""
    monkeypatch.setattr(Upsample, "transposed", transposed)
    block = perturbed(Upsample(8))
    x = torch.randn(1, 8, 5, 7).contiguous(memory_format=memory_format)
    out = block(x)
    expected = block.conv(x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    assert out.shape == (1, 8, 10, 14) and torch.allclose(out, expected, atol=1e-5)
    weights = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * weights).sum(), block.conv.weight)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), block.conv.weight)
    assert torch.allclose(grad, expected_grad, atol=1e-4)

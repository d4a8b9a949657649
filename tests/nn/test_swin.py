"""Banded inference of the Swin and ConvNeXt blocks, and window groups of the transformer blocks:
the same maps as one pass over everything, up to float rounding."""

from __future__ import annotations

import pytest
import torch

from latentcodec.nn import swin, transformer
from latentcodec.nn.swin import ConvNeXtBlock, row_bands, swin_stack
from latentcodec.nn.transformer import ResidualAttentionBlock, over_window_groups, window_groups


def test_row_bands_cover_the_map_in_whole_windows(monkeypatch):
    monkeypatch.setattr(swin, "POSITIONS_PER_BAND", 100)
    with torch.no_grad():
        bands = row_bands(50, 12, multiple=4)
    assert [(band.start, band.stop) for band in bands] == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 40),
                                                           (40, 48), (48, 50)]
    with torch.no_grad():  # a row wider than the band still gets one window row
        assert row_bands(8, 1000, multiple=4)[0] == slice(0, 4)
    assert row_bands(50, 12, multiple=4) == [slice(0, 50)]  # training: one band


@pytest.mark.parametrize("depth", [1, 2], ids=["plain", "plain+shifted"])
def test_banded_swin_stack_and_convnext_match_one_pass(monkeypatch, depth):
    torch.manual_seed(0)
    blocks = torch.nn.Sequential(swin_stack(32, depth, 4), ConvNeXtBlock(32)).eval()
    x = torch.randn(2, 32, 24, 20)
    whole = blocks(x).detach()  # with gradients: each block in one pass, as in training
    with torch.inference_mode():
        assert torch.allclose(blocks(x), whole, atol=1e-5, rtol=1e-5)  # one band
        monkeypatch.setattr(swin, "POSITIONS_PER_BAND", 40)
        assert len(row_bands(24, 20, multiple=4)) == 6
        banded = blocks(x)
    assert torch.allclose(banded, whole, atol=1e-5, rtol=1e-5)


def test_window_groups_run_each_window_alone_and_give_the_same_sequences(monkeypatch):
    torch.manual_seed(0)
    block = ResidualAttentionBlock(16, 2).eval()
    sequence, other = torch.randn(9, 7, 16), torch.randn(5, 7, 16)
    with torch.inference_mode():
        whole = block(sequence)
        pair = (sequence * 2, other + 1)
        monkeypatch.setattr(transformer, "TOKENS_PER_WINDOW_GROUP", 30)
        assert [(g.start, g.stop) for g in window_groups(7, 14)] == [(0, 2), (2, 4), (4, 6), (6, 7)]
        grouped = over_window_groups(block, sequence)
        grouped_pair = over_window_groups(lambda a, b: (a * 2, b + 1), sequence, other)
    assert torch.allclose(grouped, whole, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(grouped_pair, pair))

"""DLF on images of many windows: the encoder and decoder nets run in row bands and window groups
at inference, so their memory does not grow with the image beyond its maps; the results are those
of one pass over everything, up to float rounding, and the token bits are the same sums."""

from __future__ import annotations

import pytest
import torch

from latentcodec.models.dlf import DLF
from latentcodec.nn import swin, transformer


def synthesis_of(model: DLF, analysis):
    with torch.inference_mode():
        return model.synthesise(model.codes_from_indices(analysis.token_indices), analysis.steps.y_hat, 1)


def run(model: DLF, x: torch.Tensor):
    with torch.inference_mode():
        padded = model.pad(model.fit_to_windows(x))
        analysis = model.analyse(padded, 1)
        bits = model.semantic_bits(analysis.steps, analysis.token_indices, *padded.shape[-2:])
    return analysis, synthesis_of(model, analysis), bits


def test_bands_and_window_groups_give_the_maps_of_one_pass(tiny_dlf, monkeypatch):
    # 3 x 4 windows of 64 pixels; the 1/16 maps are 12 x 16
    x = torch.rand(1, 3, 192, 256, generator=torch.Generator().manual_seed(0))
    whole = run(tiny_dlf, x)
    monkeypatch.setattr(swin, "POSITIONS_PER_BAND", 16)  # bands of one Swin window row
    monkeypatch.setattr(transformer, "TOKENS_PER_WINDOW_GROUP", 1)  # one window at a time
    with torch.no_grad():
        assert len(swin.row_bands(12, 16, multiple=4)) == 3
        assert len(transformer.window_groups(12, 25)) == 12
    banded = run(tiny_dlf, x)
    assert torch.allclose(banded[0].tokens, whole[0].tokens, atol=1e-5)
    assert torch.allclose(banded[0].y, whole[0].y, atol=1e-4)
    # From the same decoded streams, the decoder's nets give the same picture.
    synthesis = synthesis_of(tiny_dlf, whole[0])
    assert (synthesis.x_hat - whole[1].x_hat).abs().max() < 1e-4
    # The semantic bits are exact integer-path figures summed over groups of windows.
    assert banded[2] == pytest.approx(whole[2], rel=1e-9)

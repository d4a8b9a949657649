"""The DCVC blocks' integer twins: row bands give exactly the integers of one whole pass."""

from __future__ import annotations

import torch

from latentcodec.nn import dcvc, integer
from latentcodec.nn.dcvc import ConvFFN, ConvFFN3
from latentcodec.nn.integer import integer_twin


def test_banded_integer_ffn_is_exact(monkeypatch):
    torch.manual_seed(0)
    for block in (ConvFFN(8), ConvFFN3(8)):
        twin = integer_twin(block.eval())
        x = integer.to_fixed(torch.randn(1, 8, 13, 11))
        whole = twin(x)
        monkeypatch.setattr(dcvc, "FFN_BAND_ELEMENTS", 4 * 8 * 11 * 3)  # 3-row bands, a partial last one
        banded = twin(x)
        monkeypatch.undo()
        assert torch.equal(banded, whole)

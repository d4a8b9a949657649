"""The integer transformer block (latentcodec.nn.integer_transformer)."""

import torch

from latentcodec.nn import integer_transformer
from latentcodec.nn.integer import from_fixed, integer_twin, to_fixed
from latentcodec.nn.transformer import ResidualAttentionBlock


def test_queries_in_blocks_give_the_bits_of_one_pass(monkeypatch):
    torch.manual_seed(0)
    block = ResidualAttentionBlock(32, 4).eval()
    tokens = torch.randn(37, 2, 32)  # (L, N, C)
    with torch.no_grad():
        expected = block(tokens)
    twin = integer_twin(block)
    whole = twin(to_fixed(tokens))
    assert (from_fixed(whole) - expected).abs().max() < 0.05  # a twin, not another net
    # One query row per block, then 5 rows (the last block shorter): each must equal the one pass.
    for elements in (2 * 4 * 37, 5 * 2 * 4 * 37):
        monkeypatch.setattr(integer_transformer, "SCORE_BLOCK_ELEMENTS", elements)
        assert torch.equal(twin(to_fixed(tokens)), whole)

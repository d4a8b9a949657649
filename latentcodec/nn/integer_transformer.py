"""Exact integer twin of the pre-LN transformer block (:class:`latentcodec.nn.transformer.ResidualAttentionBlock`).

The masked-token entropy models (DLF's semantic-token prior, PerCoV2's hyper-latent prior) decide
probabilities that both encoder and decoder must reproduce bit for bit, so their transformer runs on
:mod:`latentcodec.nn.integer`: integer LayerNorm, Linear, GELU and softmax, and bounded fixed-point
matmuls for the attention scores and the attention-weighted values. The head scale 1/sqrt(d) is
exact when d is a power of four; other head widths use a rounded 16-bit multiplier.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from latentcodec.nn import integer
from latentcodec.nn.integer import IntegerLayerNorm, IntegerLinear, integer_twin, register_integer_twin
from latentcodec.nn.transformer import ResidualAttentionBlock


def _linear_from(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight.detach().cpu())
        if bias is not None:
            linear.bias.copy_(bias.detach().cpu())
    return linear


# Attention scores (float64) held per block of queries: 32 MB per temporary.
SCORE_BLOCK_ELEMENTS = 1 << 22


class IntegerSelfAttention(nn.Module):
    """Twin of ``nn.MultiheadAttention`` used as self-attention on (L, N, C) sequences."""

    def __init__(self, attention: nn.MultiheadAttention):
        super().__init__()
        if not attention._qkv_same_embed_dim or attention.bias_k is not None:
            raise TypeError("no integer version of this MultiheadAttention (separate q/k/v widths or bias_k)")
        self.heads = attention.num_heads
        self.head_dim = attention.embed_dim // attention.num_heads
        self.in_proj = IntegerLinear(_linear_from(attention.in_proj_weight, attention.in_proj_bias))
        self.out_proj = IntegerLinear(_linear_from(attention.out_proj.weight, attention.out_proj.bias))
        # 1/sqrt(d) as a 16-bit fixed-point multiplier (exact for d = 4, 16, 64, 256 ...).
        self.score_scale = float(round(2**integer.GAIN_BITS / math.sqrt(self.head_dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length, batch, width = x.shape
        q, k, v = self.in_proj(x).chunk(3, dim=-1)

        def split(t: torch.Tensor) -> torch.Tensor:  # (L, N, C) -> (N, heads, L, d)
            return t.reshape(length, batch, self.heads, self.head_dim).permute(1, 2, 0, 3)

        q, k, v = split(q), split(k), split(v)
        keys = k.transpose(-1, -2)
        # Every step below is row by row (the softmax's maximum and sum included), so queries can go
        # in blocks with the same bits: the float64 score matrix and the softmax's temporaries then
        # stay near SCORE_BLOCK_ELEMENTS values each instead of (heads x L x L), which at PerCoV2's
        # 4 MP token maps was 2.9 GB.
        rows = max(1, SCORE_BLOCK_ELEMENTS // max(1, batch * self.heads * length))
        blocks = []
        for top in range(0, length, rows):
            scores = integer.fixed_matmul(q[:, :, top : top + rows], keys)
            scores = integer.rounding_shift(scores * self.score_scale, integer.GAIN_BITS)
            blocks.append(integer.fixed_matmul(integer.softmax(scores, dim=-1), v))
        attended = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=2)
        return self.out_proj(attended.permute(2, 0, 1, 3).reshape(length, batch, width))


class IntegerResidualAttentionBlock(nn.Module):
    def __init__(self, block: ResidualAttentionBlock):
        super().__init__()
        self.ln_1 = IntegerLayerNorm(block.ln_1)
        self.attn = IntegerSelfAttention(block.attn)
        self.ln_2 = IntegerLayerNorm(block.ln_2)
        self.c_fc = IntegerLinear(block.mlp.c_fc)
        self.gelu = integer_twin(block.mlp.gelu)
        self.c_proj = IntegerLinear(block.mlp.c_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = integer.saturate(x + self.attn(self.ln_1(x)))
        return integer.saturate(x + self.c_proj(self.gelu(self.c_fc(self.ln_2(x)))))


register_integer_twin(ResidualAttentionBlock)(IntegerResidualAttentionBlock)

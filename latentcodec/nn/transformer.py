"""The pre-LN transformer block of CLIP/TiTok, used by DLF's semantic tokenizer and Interactive Transform.

Names follow the TiTok checkpoints (``ln_1``, ``attn`` = ``nn.MultiheadAttention``, ``ln_2``,
``mlp.c_fc`` / ``mlp.c_proj``); sequences are (length, batch, width), the layout TiTok uses.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(
            c_fc=nn.Linear(width, hidden), gelu=nn.GELU(), c_proj=nn.Linear(hidden, width)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))

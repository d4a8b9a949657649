"""The pre-LN transformer block of CLIP/TiTok, used by DLF's semantic tokenizer and Interactive Transform.

Names follow the TiTok checkpoints (``ln_1``, ``attn`` = ``nn.MultiheadAttention``, ``ln_2``,
``mlp.c_fc`` / ``mlp.c_proj``); sequences are (length, batch, width), the layout TiTok uses.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from latentcodec.nn.tiling import inference_slices


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


# Inference runs per-window sequence work (TiTok's layers, DLF's Interactive Transform) over groups
# of windows instead of all of them at once, so that its temporaries (the 4x-wide MLP layer above
# all) are the same size for a Kodak image and a 16 MP photo. The group size depends on the sequence
# length alone, never on a memory budget, so a file does not depend on the budget of the process
# that wrote it. 2**13 tokens: 28 windows of TiTok's 289-token sequence, 15 of the Interactive
# Transform's 545 (a Kodak image has 6 windows, so it runs in one group, as the reference does).
TOKENS_PER_WINDOW_GROUP = 2**13


def window_groups(windows: int, tokens_per_window: int) -> list[slice]:
    """Slices of the window axis to run one at a time; one slice while training."""
    return inference_slices(windows, max(1, TOKENS_PER_WINDOW_GROUP // max(1, tokens_per_window)))


def over_window_groups(function, *sequences: torch.Tensor):
    """``function(*sequences)`` on (length, windows, width) sequences, computed group by group
    along the window axis and concatenated there; ``function`` returns a tensor or a tuple."""
    groups = window_groups(sequences[0].shape[1], sum(s.shape[0] for s in sequences))
    if len(groups) == 1:
        return function(*sequences)
    parts = [function(*(s[:, group] for s in sequences)) for group in groups]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(pieces, dim=1) for pieces in zip(*parts))
    return torch.cat(parts, dim=1)

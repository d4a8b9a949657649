"""Code-prediction transformer (GLC training, SYSTEMS.md 2.8; CodeFormer-style).

Predicts, from a decoded latent, the VQGAN codebook index of every latent position. Its
cross-entropy against the ground-truth indices of the original image is GLC's code-prediction
loss. Parameter names follow the official checkpoint (``position_emb``, ``feat_emb``,
``ft_layers.i.self_attn``, ``idx_pred_layer``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class CodePredictorConfig:
    dim: int = 512
    layers: int = 9
    heads: int = 8
    mlp_dim: int = 1024
    sequence_length: int = 256  # 16x16 latents, i.e. 256x256 training crops


class SelfAttentionLayer(nn.Module):
    """Pre-norm self-attention + GELU MLP; the positional embedding is added to queries and keys only."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=0.0)
        self.linear1 = nn.Linear(dim, mlp_dim)
        self.linear2 = nn.Linear(mlp_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        query_key = h + position
        x = x + self.self_attn(query_key, query_key, value=h, need_weights=False)[0]
        h = self.norm2(x)
        return x + self.linear2(F.gelu(self.linear1(h)))


class CodePredictor(nn.Module):
    def __init__(self, config: CodePredictorConfig, latent_channels: int, codebook_size: int):
        super().__init__()
        self.config = config
        self.position_emb = nn.Parameter(torch.zeros(config.sequence_length, config.dim))
        self.feat_emb = nn.Linear(latent_channels, config.dim)
        self.ft_layers = nn.Sequential(
            *[SelfAttentionLayer(config.dim, config.heads, config.mlp_dim) for _ in range(config.layers)]
        )
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(config.dim), nn.Linear(config.dim, codebook_size, bias=False))
        nn.init.normal_(self.position_emb, std=0.02)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) latent with H*W == sequence_length -> logits (B, H*W, K)."""
        b, c, h, w = latent.shape
        if h * w != self.config.sequence_length:
            raise ValueError(
                f"code predictor expects {self.config.sequence_length} latent positions, got {h}x{w}"
            )
        tokens = latent.flatten(2).permute(2, 0, 1)  # (HW, B, C), sequence-first as nn.MultiheadAttention expects
        position = self.position_emb.unsqueeze(1)
        x = self.feat_emb(tokens)
        for layer in self.ft_layers:
            x = layer(x, position)
        return self.idx_pred_layer(x).permute(1, 0, 2)

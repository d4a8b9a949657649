"""Vector quantisation with an L2 codebook (SYSTEMS.md 1.4)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# Distances are computed in row chunks so that a 4K image's z (a few thousand vectors)
# against a 16384-entry codebook never materialises more than ~64 MB at once.
_DISTANCE_CHUNK_ROWS = 1024


def nearest_codewords(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codeword for each row of ``vectors`` (N, D) -> (N,) int64.

    Uses ||v||^2 + ||e||^2 - 2 v.e in float32, the reference formulation, so that argmin
    decisions match the official models; the first index wins ties.
    """
    codebook_sq = codebook.pow(2).sum(1)
    indices = []
    for start in range(0, vectors.shape[0], _DISTANCE_CHUNK_ROWS):
        chunk = vectors[start : start + _DISTANCE_CHUNK_ROWS]
        distances = chunk.pow(2).sum(1, keepdim=True) + codebook_sq - 2 * chunk @ codebook.t()
        indices.append(distances.argmin(1))
    if not indices:
        return torch.zeros(0, dtype=torch.long, device=vectors.device)
    return torch.cat(indices)


class VQOutput(NamedTuple):
    quantized: torch.Tensor  # straight-through in training; exact codewords at inference
    indices: torch.Tensor  # (B, H, W) int64, raster order
    loss: torch.Tensor  # commitment + beta * codebook term (0 at inference)


class VectorQuantizer(nn.Module):
    """Nearest-codeword quantiser over the channel axis of a (B, C, H, W) map."""

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    @property
    def index_bits(self) -> int:
        return max(1, (self.codebook_size - 1).bit_length())

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        return nearest_codewords(flat, self.embedding.weight).view(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, H, W) indices -> (B, C, H, W) codewords."""
        return self.embedding.weight[indices].permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> VQOutput:
        indices = self.indices(z.detach())
        codewords = self.lookup(indices)
        if not self.training:
            return VQOutput(codewords, indices, z.new_zeros(()))
        # Reference weighting (CodeFormer/GLC): the encoder is pulled to the codewords with weight 1,
        # the codebook towards the encoder with weight beta.
        loss = F.mse_loss(z, codewords.detach()) + self.beta * F.mse_loss(codewords, z.detach())
        return VQOutput(z + (codewords - z).detach(), indices, loss)


class CosineVectorQuantizer(VectorQuantizer):
    """VQ on the unit sphere (TiTok, DLF's semantic tokens; SYSTEMS.md 1.4): vectors and codewords are
    l2-normalised before the nearest-codeword search, and the codewords handed on are normalised.

    Training loss (TiTok): ``beta * |sg(e) - z|^2 + |e - sg(z)|^2`` on the normalised vectors, with a
    straight-through estimator.
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25):
        super().__init__(codebook_size, dim, beta)
        nn.init.normal_(self.embedding.weight)

    def normalised_codebook(self) -> torch.Tensor:
        return F.normalize(self.embedding.weight, dim=1)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        flat = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, c), dim=1)
        return nearest_codewords(flat, self.normalised_codebook()).view(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self.normalised_codebook()[indices].permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> VQOutput:
        indices = self.indices(z.detach())
        codewords = self.lookup(indices)
        if not self.training:
            return VQOutput(codewords, indices, z.new_zeros(()))
        z = F.normalize(z, dim=1)
        loss = self.beta * F.mse_loss(z, codewords.detach()) + F.mse_loss(codewords, z.detach())
        return VQOutput(z + (codewords - z).detach(), indices, loss)


@torch.no_grad()
def restart_codes(weight: torch.Tensor, dead: torch.Tensor, vectors: torch.Tensor, generator: torch.Generator,
                  one_per_vector: bool) -> int:
    """The dead-code restart of a codebook ``weight`` (K, D): codewords ``dead`` move onto rows of
    ``vectors`` (normalised encoder outputs, (N, D)), plus noise of 10 % of a unit vector, all drawn
    from ``generator``. ``one_per_vector``: no two codes land on one vector, so at most N codes move
    (those drawn among ``dead``); otherwise every dead code moves, vectors drawn with replacement
    (several codes on one vector compete and most die again). Returns how many moved."""
    if one_per_vector:
        moved = dead
        if len(dead) > len(vectors):
            moved = dead[torch.randperm(len(dead), generator=generator)[: len(vectors)].to(dead.device)]
        picks = torch.randperm(len(vectors), generator=generator)[: len(moved)]
    else:
        moved = dead
        picks = torch.randint(0, len(vectors), (len(dead),), generator=generator)
    noise = torch.randn(len(moved), vectors.shape[1], generator=generator).to(vectors.device)
    weight[moved] = (vectors[picks.to(vectors.device)] + 0.1 * noise / vectors.shape[1] ** 0.5).to(weight.dtype)
    return len(moved)

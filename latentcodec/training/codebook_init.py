"""Starting codebooks from data: random encoder outputs, or k-means over many training crops.

A codebook drawn from one batch (2 crops of 256 x 256 give 512 latent vectors for 1024 codewords)
covers the colours and textures of those two crops only. That barely matters where the codebook
trains (GLC stage I), but DLF's soft latent mixes a frozen codebook: its decoded picture can only
reach what a mixture of the codewords reaches. On kodim23, with the GLC-image default's VQGAN, the
one-batch codebook decodes its nearest codewords at 18.3 dB and a fitted mixture at 19.7 dB; k-means
over 64 training crops gives 22.4 dB and 25.6 dB (session 14, docs/models.md).
"""

from __future__ import annotations

from typing import Callable

import torch

from latentcodec.errors import ConfigError
from latentcodec.nn.vq import nearest_codewords


@torch.no_grad()
def encoder_vectors(encode: Callable[[torch.Tensor], torch.Tensor], stream, batches: int,
                    device: torch.device) -> torch.Tensor:
    """The latent vectors (positions x channels) of ``batches`` batches of a BatchStream."""
    vectors = []
    for _ in range(batches):
        latent = encode(stream.next_batch().to(device))
        vectors.append(latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1]))
    return torch.cat(vectors)


def sampled_codebook(vectors: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Codewords = randomly drawn vectors plus a little noise (10 % of their spread), so that
    repeated draws of one vector still differ."""
    vectors = vectors.float()
    picks = torch.randint(0, vectors.shape[0], (size,), generator=generator)
    noise = torch.randn(size, vectors.shape[1], generator=generator) * vectors.std().item() * 0.1
    return vectors[picks.to(vectors.device)] + noise.to(vectors.device)


def assign(vectors: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of the nearest codeword, squared distance to it) for every vector."""
    index = nearest_codewords(vectors, codebook)
    return index, ((vectors - codebook[index]) ** 2).sum(1)


def kmeans_codebook(vectors: torch.Tensor, size: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding, then Lloyd iterations. A codeword that loses all its vectors moves to the
    vector farthest from its own codeword, so every codeword ends up in use."""
    vectors = vectors.float()
    count = vectors.shape[0]
    if count < size:
        raise ConfigError(f"k-means over {count} latent vectors cannot give {size} distinct codewords: "
                          f"raise codebook_init_crops")
    device = vectors.device
    codebook = torch.empty(size, vectors.shape[1], device=device)
    first = int(torch.randint(0, count, (1,), generator=generator))
    codebook[0] = vectors[first]
    closest = ((vectors - codebook[0]) ** 2).sum(1)
    for i in range(1, size):
        # Draw the next seed with probability proportional to its squared distance (k-means++).
        weights = closest.cpu().double()
        total = weights.sum()
        pick = int(torch.multinomial(weights / total, 1, generator=generator)) if total > 0 else \
            int(torch.randint(0, count, (1,), generator=generator))
        codebook[i] = vectors[pick]
        closest = torch.minimum(closest, ((vectors - codebook[i]) ** 2).sum(1))
    for _ in range(iterations):
        assignment, distance = assign(vectors, codebook)
        sums = torch.zeros_like(codebook).index_add_(0, assignment, vectors)
        members = torch.bincount(assignment, minlength=size)
        used = members > 0
        codebook[used] = sums[used] / members[used].unsqueeze(1).float()
        empty = (~used).nonzero().flatten()
        if len(empty):
            farthest = distance.topk(len(empty)).indices
            codebook[empty] = vectors[farthest]
    return codebook


def codebook_from_vectors(vectors: torch.Tensor, size: int, kmeans_iterations: int | None,
                          generator: torch.Generator) -> torch.Tensor:
    """k-means over ``vectors`` when ``kmeans_iterations`` is given (codebook_init_crops > 0), else drawn."""
    if kmeans_iterations is None:
        return sampled_codebook(vectors, size, generator)
    return kmeans_codebook(vectors, size, kmeans_iterations, generator)

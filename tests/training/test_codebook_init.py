"""Codebooks started from data: k-means (separated clusters, every codeword used, determinism) and
the trainer's choice between it and codewords drawn from one batch."""

import pytest
import torch

from latentcodec.errors import ConfigError
from latentcodec.training.codebook_init import assign, kmeans_codebook, sampled_codebook


def blobs(centres: torch.Tensor, per_blob: int, spread: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    points = centres.repeat_interleave(per_blob, dim=0)
    return points + spread * torch.randn(points.shape, generator=generator)


def test_kmeans_finds_well_separated_clusters():
    centres = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    vectors = blobs(centres, 200, 0.3)
    codebook = kmeans_codebook(vectors, 4, 10, torch.Generator().manual_seed(1))
    # Each true centre has exactly one codeword within a few standard errors of it.
    distances = torch.cdist(centres, codebook)
    assert (distances.min(dim=1).values < 0.2).all()
    assert sorted(distances.argmin(dim=1).tolist()) == [0, 1, 2, 3]


def test_kmeans_beats_sampled_codewords_and_uses_every_codeword():
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(3000, 8, generator=generator) * torch.linspace(0.1, 3.0, 8)
    kmeans = kmeans_codebook(vectors, 64, 15, torch.Generator().manual_seed(0))
    sampled = sampled_codebook(vectors[:128], 64, torch.Generator().manual_seed(0))
    kmeans_index, kmeans_error = assign(vectors, kmeans)
    _, sampled_error = assign(vectors, sampled)
    assert kmeans_error.mean() < 0.8 * sampled_error.mean()
    assert torch.bincount(kmeans_index, minlength=64).min() > 0


def test_kmeans_is_deterministic_and_survives_duplicate_vectors():
    # 5 distinct vectors, 8 codewords wanted: k-means++ runs out of distance mass and Lloyd empties
    # codewords; the result must stay finite and reproducible.
    vectors = torch.arange(5.0).repeat_interleave(40).unsqueeze(1).repeat(1, 3)
    first = kmeans_codebook(vectors, 8, 5, torch.Generator().manual_seed(2))
    second = kmeans_codebook(vectors, 8, 5, torch.Generator().manual_seed(2))
    assert torch.isfinite(first).all() and torch.equal(first, second)
    assert len({tuple(row) for row in first.tolist()}) == 5


def test_kmeans_needs_at_least_one_vector_per_codeword():
    with pytest.raises(ConfigError, match="raise codebook_init_crops"):
        kmeans_codebook(torch.randn(10, 4), 16, 3, torch.Generator().manual_seed(0))


def test_assign_matches_brute_force_across_chunks(monkeypatch):
    import latentcodec.nn.vq as vq

    monkeypatch.setattr(vq, "_DISTANCE_CHUNK_ROWS", 7)
    generator = torch.Generator().manual_seed(3)
    vectors, codebook = torch.randn(50, 5, generator=generator), torch.randn(9, 5, generator=generator)
    index, distance = assign(vectors, codebook)
    brute = ((vectors[:, None] - codebook[None]) ** 2).sum(-1)
    assert torch.equal(index, brute.argmin(1))
    assert torch.allclose(distance, brute.min(1).values, atol=1e-5)

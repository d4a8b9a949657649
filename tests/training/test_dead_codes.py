"""The shared dead-code restart of the VQ codebooks trained inside DLF's and PerCoV2's stages."""

from __future__ import annotations

import torch

from latentcodec.training.dead_codes import DeadCodeRestart


def test_counts_accumulate_and_the_period_needs_counts():
    counter = DeadCodeRestart(codebook_size=6, every=2, crops=0, seed=0, chunk=2)
    assert not counter.due(2)  # nothing counted yet (e.g. right after a resume)
    counter.observe(torch.tensor([[0, 1], [1, 1]]), torch.zeros(2, 3, 4, 4))
    counter.observe(torch.tensor([3]), torch.ones(1, 3, 4, 4))
    assert counter.usage.tolist() == [1, 3, 0, 1, 0, 0]
    assert torch.equal(counter.last_batch, torch.ones(1, 3, 4, 4))
    assert counter.due(2) and not counter.due(3)
    assert not DeadCodeRestart(6, 0, 0, 0, 2).due(2)  # every = 0: never


def test_restart_without_crops_moves_every_dead_code_onto_the_latest_batch():
    torch.manual_seed(0)
    weight = torch.randn(8, 3)
    before = weight.clone()
    counter = DeadCodeRestart(codebook_size=8, every=1, crops=0, seed=5, chunk=1)
    images = torch.randn(2, 3, 1, 1)  # token_vectors below: one 3-vector per image
    counter.observe(torch.tensor([0, 2, 2]), images)
    seen = []

    def token_vectors(chunk: torch.Tensor) -> torch.Tensor:
        seen.append(chunk.shape[0])
        return chunk.flatten(1)

    report = counter.restart(weight, token_vectors, step=1, distributed=False, dataset=None)
    assert report == (6, 6, False) and seen == [1, 1] and counter.usage is None
    assert torch.equal(weight[[0, 2]], before[[0, 2]])  # the used codes stay
    targets = torch.nn.functional.normalize(images.flatten(1), dim=1)
    distance = torch.cdist(weight[[1, 3, 4, 5, 6, 7]], targets).min(dim=1).values
    assert float(distance.max()) < 0.5  # each moved code sits near a normalised vector (10 % noise)
    # The same step and seed move the codes the same way: a resumed run repeats the restart exactly.
    again = before.clone()
    counter.observe(torch.tensor([0, 2, 2]), images)
    counter.restart(again, token_vectors, step=1, distributed=False, dataset=None)
    assert torch.equal(again, weight)


def test_restart_with_nothing_dead_or_nothing_to_draw_from_moves_nothing():
    weight = torch.randn(3, 2)
    before = weight.clone()
    counter = DeadCodeRestart(codebook_size=3, every=1, crops=0, seed=0, chunk=1)
    counter.usage = torch.tensor([1, 0, 2])  # counts without a batch (no vectors to move onto)
    assert counter.restart(weight, lambda chunk: chunk, 1, False, None) == (1, 0, False)
    counter.observe(torch.tensor([0, 1, 2]), torch.zeros(1, 2))
    assert counter.restart(weight, lambda chunk: chunk, 2, False, None) == (0, 0, False)
    assert torch.equal(weight, before)

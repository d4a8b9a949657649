"""Dead-code restarts for the VQ codebooks that train inside a stage (DLF's semantic tokens, PerCoV2's
hyper-latent tokens): codes no training batch has picked since the last restart move onto the token
vectors of fresh training crops, so that a codebook which starts collapsing gets its unused codes back
where the encoder's outputs are. The trainer calls an objective's ``restart_due`` / ``restart_dead_codes``
after the optimiser step; the objectives count uses in ``forward`` through :meth:`DeadCodeRestart.observe`."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

from latentcodec.data.crops import BatchStream, RandomCropDataset
from latentcodec.nn.vq import restart_codes


class RestartReport(NamedTuple):
    dead: int  # codes unused since the last restart, over all ranks
    moved: int  # of them, codes moved onto token vectors
    fresh_crops: bool  # the vectors came from fresh training crops (else from the latest batch)


class DeadCodeRestart:
    """Use counts of one codebook between restarts, and the restart itself.

    ``every``: restart period in optimiser steps (0: never). ``crops``: fresh training crops drawn by
    (seed, step) whose token vectors the dead codes move onto, one code per vector; 0 (or no dataset)
    uses the latest batch instead, every dead code moving, vectors drawn with replacement. ``chunk``: crops
    encoded at a time."""

    def __init__(self, codebook_size: int, every: int, crops: int, seed: int, chunk: int):
        self.codebook_size, self.every, self.crops, self.seed, self.chunk = codebook_size, every, crops, seed, chunk
        self.usage: torch.Tensor | None = None  # each code's uses since the last restart
        self.last_batch: torch.Tensor | None = None

    def observe(self, indices: torch.Tensor, images: torch.Tensor) -> None:
        """Count a training batch's code ``indices`` and keep its ``images`` for a restart without crops."""
        counts = torch.bincount(indices.flatten(), minlength=self.codebook_size)
        self.usage = counts if self.usage is None else self.usage + counts
        self.last_batch = images.detach()

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0 and self.usage is not None

    @torch.no_grad()
    def restart(self, weight: torch.Tensor, token_vectors: Callable[[torch.Tensor], torch.Tensor], step: int,
                distributed: bool, dataset: RandomCropDataset | None) -> RestartReport:
        """Move the dead codes of codebook ``weight`` (K, D) onto normalised ``token_vectors(images)`` ((N, D)
        for a few [0, 1] crops), plus noise of 10 % of a unit vector, drawn by (seed, step); rank 0's codebook
        is then broadcast, so the ranks stay identical. Resets the counts."""
        usage, self.usage = self.usage, None
        if distributed:
            dist.all_reduce(usage)
        dead = (usage == 0).nonzero().flatten()
        fresh = bool(self.crops) and dataset is not None
        if not len(dead) or (not fresh and self.last_batch is None):
            return RestartReport(len(dead), 0, fresh)
        # one seed for the crops and the draws, so that a resumed run restarts exactly as the first one did
        seed = self.seed * 1_000_003 + step
        generator = torch.Generator().manual_seed(seed)
        if fresh:
            images = BatchStream(dataset, min(self.crops, len(dataset)), seed, 0, 1, 0).next_batch()
        else:
            images = self.last_batch
        vectors = [token_vectors(chunk).float() for chunk in images.to(weight.device).split(self.chunk)]
        moved = restart_codes(weight, dead, F.normalize(torch.cat(vectors), dim=1), generator, one_per_vector=fresh)
        if distributed:
            dist.broadcast(weight.data, 0)
        return RestartReport(len(dead), moved, fresh)

    def describe(self, step: int, report: RestartReport, codes: str = "codes") -> str:
        """The training log's line for a restart (``codes`` names the codebook's entries)."""
        source = "fresh crops" if report.fresh_crops else "the latest batch"
        return (f"step {step}: {report.dead} of {self.codebook_size} {codes} unused in the last {self.every} "
                f"steps; {report.moved} restarted on {source}' token vectors")

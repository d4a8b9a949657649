"""Checkpoint selection by DLF's rule (SYSTEMS.md 5.9): the lowest rec_loss + 2 lambda bpp.

At every validation the trainer scores the model on real files: for each validated rate index q,
the L1 reconstruction loss on [-1, 1] plus 2 x lambda_q x the file's bpp, averaged over the rates,
with each rate's current lambda of the run. The best-scoring weights are kept in ``best.pt`` beside
the rolling ``checkpoint.pt``; ``latentcodec export-weights RUN/best.pt`` exports them. (The
reference adds 100 to scores outside its pixel stage, so that a run spanning stages always picks a
pixel-stage checkpoint; our stages are separate runs, each with its own ``best.pt``.)

Lambda control moves the lambdas during a run, and two scores are comparable only under the same
lambdas: scored under the lambdas of their own steps, the first DLF pixel run kept its step-500
weights over step 2000's, which had fewer bits and a higher PSNR at both validated rates (the
rate-0 lambda had grown from 90.5 to 256 in between). So :func:`improves` re-scores the kept
weights' validation results under the current lambdas before comparing; with the reference's
fixed lambdas nothing changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

BEST_FILE = "best.pt"


def selection_score(results: dict[str, dict[str, float]], lambdas: Sequence[float]) -> float | None:
    """Mean over validated rates of l1 + 2 lambda bpp; None when the results carry no L1 (video)."""
    terms = []
    for rate, scores in results.items():
        index = int(rate)
        if "l1" not in scores or not 0 <= index < len(lambdas):
            return None
        terms.append(scores["l1"] + 2.0 * lambdas[index] * scores["bpp"])
    score = sum(terms) / len(terms) if terms else math.nan
    return score if math.isfinite(score) else None


def improves(results: dict[str, dict[str, float]], kept: dict[str, dict[str, float]] | None,
             lambdas: Sequence[float], kept_score: float = math.inf) -> float | None:
    """The score of ``results`` if it beats the kept weights' (their validation ``kept``, both scored under
    ``lambdas``; ``kept_score`` when their results were not recorded), else None."""
    score = selection_score(results, lambdas)
    if score is None:
        return None
    incumbent = selection_score(kept, lambdas) if kept is not None else kept_score
    return score if incumbent is None or score < incumbent else None

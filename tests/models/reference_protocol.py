"""The discrete half of the README section 5 protocol (../shared/reference/glc), shared by the GLC
image and video reference tests.

A correct float32 reimplementation sums in another order than the official code, so its continuous
tensors differ from the stored ones at float noise level. A discrete decision taken from them can
then differ too, but only where the official value sits right at the decision boundary:

* a y symbol ``round(y/step - mu)`` may differ by exactly 1, and only where the residual lies within
  NEAR_BOUNDARY of the .5 boundary between the two symbols;
* a z index (argmin over codeword distances) may differ only where the nearest and second-nearest
  distances are within NEAR_TIE_GAP, and then it must be the other one of those two.

Everything else must match exactly, and only a handful of such flips are allowed per tensor.

Symbols are checked with **teacher-forced context**: each masked step rounds our own residual, but
the reference's symbols (and the reference's z indices) are what later steps see. A flip therefore
cannot cascade through the context model into later steps, and every symbol of every step is held to
the rule above. (The model's own encoder does cascade; the tests check it against the teacher-forced
one exactly up to and including the first step with a flip.)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from latentcodec.entropy.masked_gaussian import MaskedStepsResult, run_masked_steps, split_prior

# README section 5: changing only the float32 summation order (2 threads instead of 1, or a float64
# model) moves y by at most 3.9e-5 * std(y); with std(y) ~ 0.7 and quant_step >= 0.5 (its clamp) that
# is <= 5.5e-5 on a residual y/step - mu (5.2e-5 measured here, our residual against the stored one;
# the README's smallest stored distances to a boundary are 9.5e-7 ... 6e-5). A symbol may round the
# other way only within this distance of the boundary: that noise bound with a ~4x margin.
NEAR_BOUNDARY = 2e-4
# README section 5 ("allow a handful of +-1 flips"); about 1e-4 of the 24576..36864 symbols per tensor.
MAX_BOUNDARY_FLIPS = 3
# README section 5: the only z near-tie in the vectors has a best-vs-second gap of 1.45e-4; every
# other gap is >= 0.02. Our tokens move the gaps by <= 1.2e-5 (measured, against the stored z). 1e-3
# is ~80x that noise and 20x below the next-smallest gap, so only the documented token qualifies.
NEAR_TIE_GAP = 1e-3
MAX_NEAR_TIE_FLIPS = 1
# Bits of one symbol are at most -log2(1e-5) (the estimator's floor, README section 4), so each
# allowed flip may move bit_y by at most this much.
MAX_BITS_PER_SYMBOL = -math.log2(1e-5)


def assert_symbols_match(ours: torch.Tensor, reference: torch.Tensor, residual: torch.Tensor, what: str) -> int:
    """``ours == reference`` except for +-1 flips where ``residual`` lies within NEAR_BOUNDARY of the
    .5 boundary between the two symbols. ``residual`` is the reference's pre-rounding value where the
    vectors store it, otherwise ours (a flip puts both within the float noise of that boundary).
    Returns the number of flips."""
    flips = ours != reference
    count = int(flips.sum())
    if count == 0:
        return 0
    assert count <= MAX_BOUNDARY_FLIPS, f"{what}: {count} symbols differ (at most {MAX_BOUNDARY_FLIPS} may flip)"
    ours_f, reference_f = ours[flips].double(), reference[flips].double()
    by = (ours_f - reference_f).abs()
    assert by.max() == 1, f"{what}: a symbol differs by {by.max().item():g}"
    boundary = (ours_f + reference_f) / 2
    distance = (residual[flips].double() - boundary).abs()
    assert distance.max() < NEAR_BOUNDARY, (
        f"{what}: a symbol differs {distance.max().item():.3g} away from its rounding boundary "
        f"(allowed below {NEAR_BOUNDARY:g})")
    return count


def codeword_distances(tokens: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, D) tokens, (K, D) codebook -> (N, K) squared distances in float64."""
    return torch.cdist(tokens.double(), codebook.double()).pow(2)


def tokens_of(z: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) z -> (B*H*W, C), the raster order of the z indices (for P-frames H = 16 tokens, W = 1)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def assert_indices_match(ours: torch.Tensor, reference: torch.Tensor, tokens: torch.Tensor,
                         codebook: torch.Tensor, what: str) -> int:
    """``ours == reference`` except where the two nearest codewords of a token are within
    NEAR_TIE_GAP and the indices are exactly those two. ``tokens`` are the reference's z where the
    vectors store it, otherwise ours. Returns the number of differing indices."""
    ours, reference = ours.flatten(), reference.flatten()
    assert ours.shape == reference.shape, what
    differ = ours != reference
    count = int(differ.sum())
    if count == 0:
        return 0
    assert count <= MAX_NEAR_TIE_FLIPS, f"{what}: {count} z indices differ (at most {MAX_NEAR_TIE_FLIPS} may)"
    nearest = codeword_distances(tokens[differ], codebook).topk(2, largest=False)
    gap = nearest.values[:, 1] - nearest.values[:, 0]
    assert gap.max() < NEAR_TIE_GAP, f"{what}: a z index differs where the top-2 gap is {gap.max().item():.3g}"
    pair = torch.stack((ours[differ], reference[differ]), 1).sort(1).values
    assert torch.equal(pair, nearest.indices.sort(1).values), f"{what}: a differing z index is not a top-2 swap"
    return count


class ForcedSteps(NamedTuple):
    steps: MaskedStepsResult  # the loop fed with the reference symbols: its y_hat is the reference's
    rounded: torch.Tensor  # our own rounding of every residual, merged over steps
    residual: torch.Tensor  # our residual y/step - mu, given the reference's context
    step_of: torch.Tensor  # the masked step that codes each element


def run_forced(prior, masks: torch.Tensor, context, y: torch.Tensor, reference_symbols: torch.Tensor) -> ForcedSteps:
    """The masked-step loop with teacher-forced context: round our residual, pass the reference's on."""
    rounded = torch.zeros_like(prior.means)
    residual = torch.zeros_like(prior.means)
    step_of = torch.zeros(prior.means.shape, dtype=torch.long, device=prior.means.device)

    def source(k, mask, scales_k, residual_k):
        rounded.add_(torch.round(residual_k))
        residual.add_(residual_k)
        step_of.masked_fill_(mask, k)
        return reference_symbols * mask

    # The same normalisation as the model's own quantize_masked (multiply by the reciprocal).
    steps = run_masked_steps(prior, masks, context, source, y * (1.0 / prior.quant_step))
    return ForcedSteps(steps, rounded, residual, step_of)


def image_forced(model, y: torch.Tensor, z_index: torch.Tensor, y_q: torch.Tensor):
    """GLC-image (and the GLC-video I-frame): the prior from the reference's z indices, then the
    teacher-forced steps on our y. Returns (hyper_params, prior_params, ForcedSteps)."""
    hyper_params, prior_params = model.prior_from_z_hat(model.z_vq.lookup(z_index))
    forced = run_forced(split_prior(prior_params), model.masks(y), model.context_fn(prior_params), y, y_q.float())
    return hyper_params, prior_params, forced


def reference_residual(vectors, prefix: str, fallback: torch.Tensor) -> torch.Tensor:
    """The reference's pre-rounding residual y/step - mu where the vectors store y, quant_step and
    means_hat (README: round() of it is exactly y_q); ``fallback`` (ours) where they do not."""
    if all(prefix + name in vectors for name in ("y", "quant_step", "means_hat")):
        return vectors[prefix + "y"] * (1.0 / vectors[prefix + "quant_step"]) - vectors[prefix + "means_hat"]
    return fallback


def assert_own_encoder_agrees(own: MaskedStepsResult, forced: ForcedSteps, flips: int, what: str) -> None:
    """The model's own encoder against the teacher-forced loop: identical everywhere when nothing
    flipped; with flips, identical on every step up to and including the first one with a flip
    (later steps see the flipped symbol in their context and may legitimately differ)."""
    if flips == 0:
        assert torch.equal(own.symbols, forced.rounded), what
        assert torch.equal(own.y_hat, forced.steps.y_hat), what
        return
    flipped_steps = forced.step_of[forced.rounded != forced.steps.symbols]
    upto = forced.step_of <= flipped_steps.min()
    assert torch.equal(own.symbols[upto], forced.rounded[upto]), what


def bit_y_tolerance(flips: int) -> dict:
    """pytest.approx arguments for bit_y: 1e-5 relative (README), plus one symbol's worth per flip."""
    return {"rel": 1e-5, "abs": flips * MAX_BITS_PER_SYMBOL}

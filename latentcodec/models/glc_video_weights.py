"""GLC-video's weights beside the model: the P-model's strict official-layout load and the
reference from a P-model folder to the GLC-image folder its I-frame model is read from."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from latentcodec.errors import WeightsError
from latentcodec.models.base import load_strict
from latentcodec.models.weight_files import has_weights

INTER_OPTIONAL_PREFIXES = ("vqgan.quantize.",)
INTRA_REFERENCE_KEY = "intra_weights"


def resolve_intra_reference(reference: str | os.PathLike, folder: Path) -> Path:
    """A referenced I-frame model folder: a name under the zoo's shipped weights, a path relative
    to the referring folder, or an absolute path."""
    from latentcodec.zoo.registry import SHIPPED_WEIGHTS_DIR

    reference = Path(os.path.expanduser(str(reference)))
    candidates = [reference] if reference.is_absolute() else [SHIPPED_WEIGHTS_DIR / reference, folder / reference]
    for candidate in candidates:
        if has_weights(candidate):
            return candidate
    raise WeightsError(f"the I-frame model {str(reference)!r} referenced by {folder} was not found "
                       f"(looked in {', '.join(str(c) for c in candidates)})")


def load_inter_strict(inter, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load of an official-layout P-model state dict (only the unused VQGAN codebook may be
    dropped); every missing or unexpected key is named in the WeightsError."""
    load_strict(inter, state, source, "GLC-video P-model weights", INTER_OPTIONAL_PREFIXES)


def interpolate_inter_rates(inter, anchor_levels) -> None:
    """Fill the P-model's rate levels (``inter.y_q_enc``/``y_q_dec`` rows) between trained anchor
    levels, linear in the gains as the intra model's 64 levels are interpolated from its 4; levels
    outside the anchors take the nearest anchor's gains."""
    num_rates = inter.config.num_rates
    levels = sorted(set(int(a) for a in anchor_levels))
    if not levels or levels[0] < 0 or levels[-1] >= num_rates:
        raise ValueError(f"anchor levels {anchor_levels!r} must lie in 0..{num_rates - 1}")
    positions = torch.arange(num_rates, dtype=torch.float64)
    anchors = torch.tensor(levels, dtype=torch.float64)
    upper = torch.searchsorted(anchors, positions).clamp(1, max(1, len(levels) - 1))
    lower = upper - 1 if len(levels) > 1 else upper * 0
    span = (anchors[upper] - anchors[lower]).clamp(min=1)
    weight = ((positions - anchors[lower]) / span).clamp(0, 1).view(-1, 1, 1, 1)
    with torch.no_grad():
        for table in (inter.y_q_enc, inter.y_q_dec):
            known = table[levels].double()
            index = {level: i for i, level in enumerate(levels)}
            low = known[[index[levels[i]] for i in lower.tolist()]]
            high = known[[index[levels[i]] for i in upper.tolist()]]
            table.copy_((low + (high - low) * weight).to(table.dtype))

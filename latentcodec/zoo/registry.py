"""The codec registry.

Each codec has a *stable numeric id* that is written into every bitstream. Ids are assigned
here by hand, once, and never reused or renumbered: a file written today must name the same
codec in every later release.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from latentcodec.errors import LatentCodecError
from latentcodec.models.weight_files import has_weights

SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    model_id: int
    class_path: str  # "module:ClassName"
    description: str
    kind: str  # "image" or "video"
    default_weights: str | None = None  # folder name under zoo/weights/, once one is shipped

    def load_class(self):
        module_name, _, class_name = self.class_path.partition(":")
        return getattr(importlib.import_module(module_name), class_name)

    @property
    def default_weights_path(self) -> Path | None:
        if self.default_weights is None:
            return None
        path = SHIPPED_WEIGHTS_DIR / self.default_weights
        return path if has_weights(path) else None


REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry(
        name="glc-image",
        model_id=1,
        class_path="latentcodec.models.glc_image:GLCImage",
        description="Generative Latent Coding (CVPR 2024): transform coding in a VQGAN latent",
        kind="image",
        default_weights="glc-image-default",
    ),
    ModelEntry(
        name="glc-video",
        model_id=2,
        class_path="latentcodec.models.glc_video:GLCVideo",
        description="GLC-video (TCSVT): P-frames coded in the VQGAN latent, conditioned on the previous one",
        kind="video",
        default_weights="glc-video-default",
    ),
    ModelEntry(
        name="dlf",
        model_id=3,
        class_path="latentcodec.models.dlf:DLF",
        description="DLF (ICCV 2025): semantic 1-D tokens + scalar-quantised detail, fused into a VQGAN",
        kind="image",
        default_weights="dlf-default",
    ),
    ModelEntry(
        name="percov2",
        model_id=4,
        class_path="latentcodec.models.percov2:PerCoV2",
        description="PerCoV2 (2025): SD3-latent VQ hyper-latent tokens + caption, decoded by the SD3 MMDiT",
        kind="image",
        default_weights="percov2-default",
    ),
)


def get_entry(name: str) -> ModelEntry:
    for entry in REGISTRY:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in REGISTRY)
    raise LatentCodecError(f"unknown model {name!r} (known: {known})")


def get_entry_by_id(model_id: int) -> ModelEntry:
    for entry in REGISTRY:
        if entry.model_id == model_id:
            return entry
    raise LatentCodecError(f"no registered model has id {model_id}")

"""The bridge between the runner and :mod:`latentcodec.evaluation.metrics`.

Per-image metrics are scored by the workers, item by item. Set-level metrics (patch FID/KID) need
every image of a rate point at once, so they run in a final pass over finished points
(:func:`score_dataset_point`), fed from the written files; their results are cached per point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

DEFAULT_METRICS = (
    "psnr", "thumbnail_psnr", "ms_ssim", "lpips_alex", "dists", "nlpd", "ssimulacra2", "butteraugli", "butteraugli_3norm",
)  # fmt: skip


@dataclass
class MetricSuite:
    """The metrics one process scores with (built once: the networks load here)."""

    image_metrics: list[Any] = field(default_factory=list)
    dataset_metrics: list[Any] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    patch_size: int = 256

    @property
    def image_metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.image_metrics)

    @property
    def dataset_metric_names(self) -> tuple[str, ...]:
        return tuple(name for m in self.dataset_metrics for name in m.names)

    def score(self, original: Image.Image, reconstruction: Image.Image) -> dict[str, float]:
        """Every per-image metric of one 8-bit pair."""
        reference = np.asarray(original, dtype=np.uint8)
        decoded = np.asarray(reconstruction, dtype=np.uint8)
        return {m.name: float(m(reference, decoded)) for m in self.image_metrics}


def build_suite(names: Sequence[str] | None, device: str = "cpu", patch_size: int = 256) -> MetricSuite:
    """The requested metrics (default :data:`DEFAULT_METRICS`); unavailable ones carry a reason.

    An unknown name is a ConfigError. SSIMULACRA 2 and Butteraugli without their tools come back
    unavailable, as the network metrics do without their weights. FID/KID are never in the default
    set: they are set-level, costly, and meaningful only with many patches (CLIC/DIV2K at P = 256,
    Kodak at P = 64).
    """
    from latentcodec.evaluation.metrics import available_metrics

    selection = available_metrics(tuple(names) if names else DEFAULT_METRICS, device=device, patch_size=patch_size)
    return MetricSuite(
        image_metrics=list(selection.per_image),
        dataset_metrics=list(selection.per_dataset),
        unavailable={u.name: u.reason for u in selection.unavailable},
        patch_size=patch_size,
    )


def score_dataset_point(
    suite: MetricSuite,
    originals: Sequence[Callable[[], Image.Image]],
    reconstructions: Sequence[Callable[[], Image.Image]],
    reference_ready: bool,
) -> dict[str, float]:
    """Set-level metrics of one rate point over all its images (loaded lazily, one at a time).

    ``reference_ready``: the accumulators already hold the reference images' features (from the
    previous point), so only the reconstructions are fed.
    """
    scores: dict[str, float] = {}
    for metric in suite.dataset_metrics:
        # Accumulators that take the two sides separately keep the reference features between
        # points; the bare protocol (update(reference, reconstruction)) gets both every time.
        split = hasattr(metric, "update_reference") and hasattr(metric, "update_reconstruction")
        keep = reference_ready and split
        metric.reset(keep_reference=keep)
        for index, load_reconstruction in enumerate(reconstructions):
            reconstruction = np.asarray(load_reconstruction(), dtype=np.uint8)
            if not split:
                metric.update(np.asarray(originals[index](), dtype=np.uint8), reconstruction)
                continue
            if not keep:
                metric.update_reference(np.asarray(originals[index](), dtype=np.uint8))
            metric.update_reconstruction(reconstruction)
        for score in metric.compute():
            scores[score.name] = float(score.value)
    return scores

"""Image-quality metrics for the evaluation harness (SYSTEMS.md section 7.2).

Names (the runner's JSON keys), direction and what each needs:

===================== ======= =============================================================================
name                  better  definition
===================== ======= =============================================================================
``psnr``              higher  RGB, [0, 1], peak 1; ``inf`` for identical images
``thumbnail_psnr``    higher  PSNR of the 1/16 box-filtered thumbnails: colour and layout (:class:`ThumbnailPSNR`)
``ms_ssim``           higher  pytorch-msssim, data_range 1; fewer scales below 161 px (see :class:`MSSSIM`)
``lpips_alex``        lower   LPIPS v0.1, AlexNet (the protocol's LPIPS)
``lpips_vgg``         lower   LPIPS v0.1, VGG16
``dists``             lower   DISTS (VGG16 with L2 pooling), as DISTS_pytorch on [0, 1]
``nlpd``              lower   normalised Laplacian pyramid distance; no pretrained network
``ssimulacra2``       higher  SSIMULACRA 2 (``ssimulacra2`` package), 100 = identical (:mod:`.tools`)
``butteraugli``       lower   Butteraugli max norm (libjxl ``butteraugli_main``), 0 = identical
``butteraugli_3norm`` lower   the same Butteraugli run's 3-norm
``fid``               lower   patch FID (P x P patches + half-shifted grid), InceptionV3 pool features
``kid``               lower   patch KID, cubic polynomial kernel, 100 subsets x min(1000, n)
===================== ======= =============================================================================

Weight files and where they go: see :mod:`latentcodec.evaluation.metrics.weights` (all under
``$TORCH_HOME/hub/checkpoints/``; never downloaded). SSIMULACRA 2 and Butteraugli need no weights but
their tools (see :mod:`latentcodec.evaluation.metrics.tools`); without them they are unavailable.

For the runner::

    selection = available_metrics(["psnr", "lpips_alex", "fid", "kid"], device="cpu", patch_size=256)
    for name, reason in selection.unavailable:      # e.g. a missing weights file: report and go on
        ...
    for ref, rec in pairs:                           # uint8 (H, W, 3) arrays, PIL RGB images, or
        for metric in selection.per_image:           # float (3, H, W) tensors in [0, 1]
            value = metric(ref, rec)                 # -> float; key: metric.name
        for metric in selection.per_dataset:
            metric.update(ref, rec)
    for metric in selection.per_dataset:
        scores = metric.compute()                    # -> tuple of MetricScore(name, value)
        metric.reset(keep_reference=True)            # next rate point, same reference images

``fid`` and ``kid`` share one :class:`PatchFidKid` accumulator (one Inception pass per patch); it
also takes the two sides separately (``update_reference`` / ``update_reconstruction``) so that the
reference features are extracted once for all rate points. Its ``compute_detailed()`` adds the KID
standard deviation, the patch counts, and the reason when a value is NaN (fewer than 2 patches).
Per-image metrics are :class:`ImageMetric` (``name``, ``higher_is_better``, ``__call__``); set-level
ones are :class:`DatasetMetric` (``names``, ``higher_is_better``, ``update``, ``compute``,
``reset``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch

from latentcodec.errors import ConfigError, WeightsError
from latentcodec.evaluation.metrics.backbones import AlexNetFeatures, FidInceptionV3, VGG16Features
from latentcodec.evaluation.metrics.base import (
    DatasetMetric,
    ImageMetric,
    MetricScore,
    UnavailableMetric,
    image_pair,
    to_float_image,
    to_uint8_image,
)
from latentcodec.evaluation.metrics.fid import (
    FidKidResult,
    PatchFidKid,
    frechet_distance,
    kernel_inception_distance,
    load_fid_inception,
    protocol_patch_count,
    protocol_patches,
)
from latentcodec.evaluation.metrics.perceptual import DISTS, LPIPS, load_dists_network, load_lpips_network
from latentcodec.evaluation.metrics.pixel import MSSSIM, NLPD, PSNR, ThumbnailPSNR, ms_ssim_scales
from latentcodec.evaluation.metrics.tools import (
    SSIMULACRA2,
    TOOL_METRIC_NAMES,
    Butteraugli,
    ButteraugliRunner,
    MetricToolError,
    missing_tool_reason,
)
from latentcodec.evaluation.metrics.weights import (
    REQUIRED_WEIGHTS,
    checkpoint_dir,
    missing_weights_reason,
    write_random_weights,
)

PER_IMAGE_NAMES = ("psnr", "thumbnail_psnr", "ms_ssim", "lpips_alex", "lpips_vgg", "dists", "nlpd", *TOOL_METRIC_NAMES)
PER_DATASET_NAMES = ("fid", "kid")
METRIC_NAMES = PER_IMAGE_NAMES + PER_DATASET_NAMES
HIGHER_IS_BETTER = {name: name in ("psnr", "thumbnail_psnr", "ms_ssim", "ssimulacra2") for name in METRIC_NAMES}


class MetricSelection(NamedTuple):
    """What :func:`available_metrics` could build, in the requested order, and what it could not."""

    per_image: list[ImageMetric]
    per_dataset: list[DatasetMetric]
    unavailable: list[UnavailableMetric]


def _build_image_metric(
    name: str, device: torch.device, directory: Path | None, butteraugli: ButteraugliRunner
) -> ImageMetric:
    if name == "psnr":
        return PSNR()
    if name == "thumbnail_psnr":
        return ThumbnailPSNR()
    if name == "ms_ssim":
        return MSSSIM()
    if name == "nlpd":
        return NLPD()
    if name == "lpips_alex":
        return LPIPS("alex", device, directory)
    if name == "lpips_vgg":
        return LPIPS("vgg", device, directory)
    if name == "dists":
        return DISTS(device, directory)
    if name == "ssimulacra2":
        return SSIMULACRA2()
    if name == "butteraugli":
        return Butteraugli("max", butteraugli)
    if name == "butteraugli_3norm":
        return Butteraugli("3", butteraugli)
    raise AssertionError(name)


def available_metrics(
    names: Iterable[str],
    device: torch.device | str = "cpu",
    *,
    patch_size: int = 256,
    directory: Path | None = None,
) -> MetricSelection:
    """Build the requested metrics; those whose weights or tools are missing (or weights broken) come
    back unavailable.

    ``names`` are from :data:`METRIC_NAMES` (an unknown one is a ConfigError); duplicates are
    ignored. ``patch_size`` is the FID/KID patch P (256; 64 for Kodak as GLC uses). ``directory``
    overrides the checkpoint folder (default ``$TORCH_HOME/hub/checkpoints``).
    """
    requested = list(dict.fromkeys(names))
    unknown = [name for name in requested if name not in METRIC_NAMES]
    if unknown:
        raise ConfigError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRIC_NAMES)}")
    folder = checkpoint_dir() if directory is None else Path(directory)
    target = torch.device(device)
    selection = MetricSelection([], [], [])
    butteraugli = ButteraugliRunner()  # shared: both Butteraugli norms of a pair come from one run
    for name in requested:
        if name in PER_DATASET_NAMES:
            continue
        reason = missing_weights_reason(name, folder) or missing_tool_reason(name)
        if reason is None:
            try:
                selection.per_image.append(_build_image_metric(name, target, folder, butteraugli))
                continue
            except WeightsError as exc:
                reason = str(exc)
        selection.unavailable.append(UnavailableMetric(name, reason))

    set_level = tuple(name for name in requested if name in PER_DATASET_NAMES)
    if set_level:
        reason = missing_weights_reason(set_level[0], folder)
        if reason is None:
            try:
                inception = load_fid_inception(folder).to(target)
                selection.per_dataset.append(PatchFidKid(inception, patch_size, set_level, target))
            except WeightsError as exc:
                reason = str(exc)
        if reason is not None:
            selection.unavailable.extend(UnavailableMetric(name, reason) for name in set_level)
    return selection


__all__ = [
    "AlexNetFeatures",
    "Butteraugli",
    "ButteraugliRunner",
    "DISTS",
    "DatasetMetric",
    "FidInceptionV3",
    "FidKidResult",
    "HIGHER_IS_BETTER",
    "ImageMetric",
    "LPIPS",
    "METRIC_NAMES",
    "MSSSIM",
    "MetricScore",
    "MetricSelection",
    "MetricToolError",
    "NLPD",
    "PER_DATASET_NAMES",
    "PER_IMAGE_NAMES",
    "PSNR",
    "PatchFidKid",
    "REQUIRED_WEIGHTS",
    "SSIMULACRA2",
    "TOOL_METRIC_NAMES",
    "ThumbnailPSNR",
    "UnavailableMetric",
    "VGG16Features",
    "available_metrics",
    "checkpoint_dir",
    "frechet_distance",
    "image_pair",
    "kernel_inception_distance",
    "load_dists_network",
    "load_fid_inception",
    "load_lpips_network",
    "missing_tool_reason",
    "missing_weights_reason",
    "ms_ssim_scales",
    "protocol_patch_count",
    "protocol_patches",
    "to_float_image",
    "to_uint8_image",
    "write_random_weights",
]

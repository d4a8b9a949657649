"""Perceptual metrics without a learned network, computed by their own tools: SSIMULACRA 2, Butteraugli.

======================= ======= ===========================================================================
name                    better  what computes it
======================= ======= ===========================================================================
``ssimulacra2``         higher  the ``ssimulacra2`` Python package (PyPI, numpy/scipy port of libjxl's
                                ``tools/ssimulacra2``), ``compute_ssimulacra2``. 100 = identical, about 90
                                visually lossless, 70 high, 50 medium, 30 low quality; it can go negative
``butteraugli``         lower   ``butteraugli_main`` of libjxl (Debian ``libjxl-devtools``): the max-norm
                                distance, the first number it prints. 0 = identical; around 1 is the
                                just-noticeable difference
``butteraugli_3norm``   lower   the same run's ``3-norm:`` line: the 3-norm of Butteraugli's distance map
======================= ======= ===========================================================================

Both tools see each pair exactly as two 8-bit RGB PNG files: the images are written to a temporary
folder (float images are rounded to 8 bits first) and handed over by path. Butteraugli's values are
parsed from ``butteraugli_main REFERENCE.png RECONSTRUCTION.png``'s stdout (default options:
intensity target 80 nits), so they are exactly what the tool prints for those files; one tool run
serves both Butteraugli names (:class:`ButteraugliRunner` keeps the last pair's scores). The PNGs
carry no colour profile, which both tools read as sRGB.

Images with a side under :data:`MIN_SIDE` (8) pixels score NaN: both tools skip their work on images
that small and report a perfect score whatever the pixels.

Availability: ``butteraugli_main`` must be on ``PATH``, and the ``ssimulacra2`` package importable
(it is in the ``eval`` extra); otherwise :func:`missing_tool_reason` gives the one-line reason the
evaluation prints when it skips the metric.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
from typing import Any, Literal, NamedTuple

import numpy as np
from PIL import Image

from latentcodec.errors import InputError, LatentCodecError
from latentcodec.evaluation.metrics.base import to_uint8_image

BUTTERAUGLI_TOOL = "butteraugli_main"
SSIMULACRA2_PACKAGE = "ssimulacra2"
MIN_SIDE = 8
TOOL_METRIC_NAMES = ("ssimulacra2", "butteraugli", "butteraugli_3norm")

_THREE_NORM = re.compile(r"3-norm:\s*(\S+)")


class MetricToolError(LatentCodecError):
    """An external metric tool failed, or printed something other than its scores."""


def missing_tool_reason(name: str) -> str | None:
    """One line saying why the tool behind metric ``name`` cannot run here; None when it can
    (and for metrics that need no tool)."""
    if name == "ssimulacra2":
        install = f"pip install {SSIMULACRA2_PACKAGE} (part of latentcodec[eval])"
        try:
            from ssimulacra2 import compute_ssimulacra2  # noqa: F401
        except ModuleNotFoundError as exc:
            if exc.name == SSIMULACRA2_PACKAGE:
                return f"the {SSIMULACRA2_PACKAGE} Python package is not installed; {install}"
            return f"the {SSIMULACRA2_PACKAGE} Python package does not import ({exc}); {install}"
        except Exception as exc:  # noqa: BLE001 - installed but broken
            return f"the {SSIMULACRA2_PACKAGE} Python package does not import ({type(exc).__name__}: {exc}); {install}"
        return None
    if name in ("butteraugli", "butteraugli_3norm"):
        if shutil.which(BUTTERAUGLI_TOOL) is None:
            return f"{BUTTERAUGLI_TOOL} not found on PATH (Debian: apt-get install libjxl-devtools)"
        return None
    return None


def uint8_pair(reference: Any, reconstruction: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both images as C-contiguous uint8 (H, W, 3) arrays; sizes must agree."""
    ref = to_uint8_image(reference).permute(1, 2, 0).contiguous().numpy()
    rec = to_uint8_image(reconstruction).permute(1, 2, 0).contiguous().numpy()
    if ref.shape != rec.shape:
        raise InputError(
            f"reference and reconstruction differ in size: {ref.shape[:2]} vs {rec.shape[:2]} (H, W)"
        )
    return ref, rec


def write_png_pair(folder: str, reference: np.ndarray, reconstruction: np.ndarray) -> tuple[str, str]:
    """``folder/reference.png`` and ``folder/reconstruction.png`` (8-bit RGB, no colour profile)."""
    paths = (os.path.join(folder, "reference.png"), os.path.join(folder, "reconstruction.png"))
    for path, pixels in zip(paths, (reference, reconstruction)):
        Image.fromarray(pixels).save(path, "PNG", compress_level=1)
    return paths


def _too_small(image: np.ndarray) -> bool:
    return min(image.shape[0], image.shape[1]) < MIN_SIDE


# ----------------------------------------------------------------------------- Butteraugli


class ButteraugliScores(NamedTuple):
    """What one ``butteraugli_main`` run printed: the max norm, and the 3-norm when it printed one."""

    max_norm: float
    three_norm: float | None


def parse_butteraugli_output(text: str) -> ButteraugliScores:
    """The scores in ``butteraugli_main``'s stdout: the first line is the max-norm distance, a line
    ``3-norm: X`` the 3-norm (libjxl 0.7 prints both)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise MetricToolError(f"{BUTTERAUGLI_TOOL} printed no score")
    try:
        max_norm = float(lines[0])
    except ValueError:
        raise MetricToolError(f"{BUTTERAUGLI_TOOL} printed {lines[0]!r} where its score should be") from None
    three_norm = None
    for line in lines[1:]:
        match = _THREE_NORM.fullmatch(line)
        if match:
            try:
                three_norm = float(match.group(1))
            except ValueError:
                raise MetricToolError(f"{BUTTERAUGLI_TOOL} printed {line!r}") from None
    return ButteraugliScores(max_norm, three_norm)


class ButteraugliRunner:
    """Runs ``butteraugli_main`` on a pair; the last pair's scores are kept, so that the max-norm and
    3-norm metrics of one pair cost one run."""

    def __init__(self, tool: str = BUTTERAUGLI_TOOL) -> None:
        self.tool = tool
        self._last: tuple[bytes, ButteraugliScores | None] | None = None

    def scores(self, reference: Any, reconstruction: Any) -> ButteraugliScores | None:
        """The tool's scores for the pair; None for an image with a side under :data:`MIN_SIDE`."""
        ref, rec = uint8_pair(reference, reconstruction)
        digest = hashlib.blake2b(digest_size=20)
        digest.update(repr(ref.shape).encode())
        digest.update(ref.tobytes())
        digest.update(rec.tobytes())
        key = digest.digest()
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        scores = None if _too_small(ref) else self._run(ref, rec)
        self._last = (key, scores)
        return scores

    def _run(self, ref: np.ndarray, rec: np.ndarray) -> ButteraugliScores:
        with tempfile.TemporaryDirectory(prefix="lc-butteraugli-") as folder:
            reference_png, reconstruction_png = write_png_pair(folder, ref, rec)
            try:
                completed = subprocess.run(
                    [self.tool, reference_png, reconstruction_png], capture_output=True, check=False
                )
            except OSError as exc:
                raise MetricToolError(f"cannot run {self.tool} ({exc.strerror or exc})") from None
        if completed.returncode != 0:
            lines = [line for line in completed.stderr.decode(errors="replace").splitlines() if line.strip()]
            detail = lines[-1].strip() if lines else f"exit status {completed.returncode}"
            raise MetricToolError(f"{self.tool} failed: {detail}")
        return parse_butteraugli_output(completed.stdout.decode(errors="replace"))


class Butteraugli:
    """Butteraugli distance of libjxl's ``butteraugli_main``: ``norm="max"`` is the tool's headline
    max-norm score (``butteraugli``), ``norm="3"`` its 3-norm (``butteraugli_3norm``). Lower is better;
    0 for identical images, NaN below 8 px."""

    higher_is_better = False

    def __init__(self, norm: Literal["max", "3"] = "max", runner: ButteraugliRunner | None = None) -> None:
        if norm not in ("max", "3"):
            raise ValueError(f"unknown Butteraugli norm {norm!r} (max or 3)")
        self.norm = norm
        self.name = "butteraugli" if norm == "max" else "butteraugli_3norm"
        self.runner = runner if runner is not None else ButteraugliRunner()

    def __call__(self, reference: Any, reconstruction: Any) -> float:
        scores = self.runner.scores(reference, reconstruction)
        if scores is None:
            return math.nan
        if self.norm == "max":
            return scores.max_norm
        if scores.three_norm is None:
            raise MetricToolError(f"{self.runner.tool} printed no '3-norm:' line; butteraugli_3norm needs it")
        return scores.three_norm


# ----------------------------------------------------------------------------- SSIMULACRA 2


class SSIMULACRA2:
    """SSIMULACRA 2 of the ``ssimulacra2`` package on the pair's 8-bit PNGs. Higher is better, 100 for
    identical images, NaN below 8 px."""

    name = "ssimulacra2"
    higher_is_better = True

    def __call__(self, reference: Any, reconstruction: Any) -> float:
        ref, rec = uint8_pair(reference, reconstruction)
        if _too_small(ref):
            return math.nan
        from ssimulacra2 import compute_ssimulacra2

        with tempfile.TemporaryDirectory(prefix="lc-ssimulacra2-") as folder:
            reference_png, reconstruction_png = write_png_pair(folder, ref, rec)
            try:
                return float(compute_ssimulacra2(reference_png, reconstruction_png))
            except Exception as exc:  # noqa: BLE001 - any failure inside the package is the tool's
                raise MetricToolError(f"ssimulacra2 failed: {type(exc).__name__}: {exc}") from None

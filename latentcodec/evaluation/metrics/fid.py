"""Patch FID and KID (the HiFiC "FID/256" protocol) over a whole data set.

Protocol (SYSTEMS.md 7.2): every image is cut into non-overlapping PxP patches (partial border
patches dropped); when H >= 1.5P and W >= 1.5P a second grid, shifted by P/2 in both directions
(the crop [P/2:, P/2:]), adds more. Patches are uint8 and go through the FID InceptionV3 (2048-d
pool features). FID is the Fréchet distance of the two Gaussians fitted to the feature sets
(torchmetrics' estimator: float64 sums, covariance normalised by n - 1); KID is the unbiased
polynomial-kernel MMD^2 (degree 3, gamma 1/d, coef 1) averaged over 100 random subsets of
min(1000, n_real, n_fake) features each (NeuralCompression's setting of torchmetrics' KID).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg
import torch

from latentcodec.errors import InputError, WeightsError
from latentcodec.evaluation.metrics.backbones import FidInceptionV3, load_checkpoint, load_state_exactly
from latentcodec.evaluation.metrics.base import MetricScore, to_uint8_image
from latentcodec.evaluation.metrics.weights import INCEPTION, checkpoint_dir

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def protocol_patches(image: Any, patch_size: int) -> torch.Tensor:
    """The protocol's uint8 patches of one image, shape (count, 3, P, P); count may be 0."""
    if patch_size < 2:
        raise InputError(f"patch size must be at least 2, got {patch_size}")
    pixels = to_uint8_image(image)
    grids = [pixels]
    height, width = pixels.shape[1:]
    if 2 * height >= 3 * patch_size and 2 * width >= 3 * patch_size:
        half = patch_size // 2
        grids.append(pixels[:, half:, half:])
    patches = []
    for grid in grids:
        rows, cols = grid.shape[1] // patch_size, grid.shape[2] // patch_size
        tiles = grid[:, : rows * patch_size, : cols * patch_size].reshape(3, rows, patch_size, cols, patch_size)
        patches.append(tiles.permute(1, 3, 0, 2, 4).reshape(rows * cols, 3, patch_size, patch_size))
    return torch.cat(patches)


def protocol_patch_count(height: int, width: int, patch_size: int) -> int:
    """How many patches :func:`protocol_patches` yields for an H x W image."""
    count = (height // patch_size) * (width // patch_size)
    if 2 * height >= 3 * patch_size and 2 * width >= 3 * patch_size:
        half = patch_size // 2
        count += ((height - half) // patch_size) * ((width - half) // patch_size)
    return count


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), with scipy's matrix square root.

    The trace of the root is real in theory; its rounding-level imaginary part is dropped, as
    torchmetrics does. If the root is not finite (near-singular covariances), both covariances
    get 1e-6 on the diagonal, as in pytorch-fid.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        offset = np.eye(cov_a.shape[0]) * 1e-6
        root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    difference = mean_a - mean_b
    return float(difference @ difference + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root).real)


def _polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    base = x @ y.T / x.shape[1] + 1.0
    return base * base * base


def kernel_inception_distance(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[float, float]:
    """(mean, std) over ``subsets`` draws of the unbiased MMD^2 with the cubic polynomial kernel.

    Each draw takes min(subset_size, n_real, n_fake) features without replacement from each set,
    independently. The draws come from a seeded generator, so a data set always gets the same
    value; the kernels are evaluated in float64 with torch on ``device``.
    """
    real = torch.as_tensor(real, dtype=torch.float64, device=device)
    fake = torch.as_tensor(fake, dtype=torch.float64, device=device)
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        return math.nan, math.nan
    generator = np.random.default_rng(seed)
    values = np.empty(subsets)
    for draw in range(subsets):
        x = real[torch.from_numpy(generator.permutation(len(real))[:size]).to(real.device)]
        y = fake[torch.from_numpy(generator.permutation(len(fake))[:size]).to(fake.device)]
        k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
        within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (size * (size - 1))
        values[draw] = float(within - 2.0 * k_xy.sum() / size**2)
    return float(values.mean()), float(values.std())


class FidKidResult(NamedTuple):
    """Everything :meth:`PatchFidKid.compute` found; ``reason`` says why a value is NaN."""

    fid: float
    kid: float
    kid_std: float
    real_patches: int
    fake_patches: int
    reason: str | None


def load_fid_inception(directory: Path | None = None) -> FidInceptionV3:
    """The FID InceptionV3 with ``pt_inception-2015-12-05-6726825d.pth`` loaded (WeightsError if missing)."""
    folder = checkpoint_dir() if directory is None else Path(directory)
    path = folder / INCEPTION.filename
    if not path.is_file():
        raise WeightsError(f"missing weights file {path} ({INCEPTION.origin})")
    network = FidInceptionV3()
    load_state_exactly(network, load_checkpoint(path), path)
    return network.eval().requires_grad_(False)


class PatchFidKid:
    """Accumulates patch features of (reference, reconstruction) pairs; scores FID and/or KID.

    ``extractor`` maps uint8 (N, 3, P, P) patches to (N, D) features (normally a loaded
    :class:`FidInceptionV3`). ``names`` picks which of ``("fid", "kid")`` :meth:`compute` reports.
    Reference features can be kept across :meth:`reset` calls, since the reference set is the same
    for every rate point.
    """

    higher_is_better = False

    def __init__(
        self,
        extractor: Callable[[torch.Tensor], torch.Tensor],
        patch_size: int = 256,
        names: tuple[str, ...] = ("fid", "kid"),
        device: torch.device | str = "cpu",
        batch_size: int = 32,
    ) -> None:
        unknown = set(names) - {"fid", "kid"}
        if unknown or not names:
            raise ValueError(f"PatchFidKid reports 'fid' and/or 'kid', not {sorted(unknown) or names}")
        self.extractor = extractor
        self.patch_size = patch_size
        self.names = tuple(names)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._real: list[np.ndarray] = []
        self._fake: list[np.ndarray] = []

    def _features(self, image: Any) -> np.ndarray:
        patches = protocol_patches(image, self.patch_size)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(patches), self.batch_size):
                batch = patches[start : start + self.batch_size].to(self.device)
                chunks.append(self.extractor(batch).double().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0))

    def update(self, reference: Any, reconstruction: Any) -> None:
        """Add the patches of one image pair (any form :func:`to_uint8_image` accepts)."""
        self.update_reference(reference)
        self.update_reconstruction(reconstruction)

    def update_reference(self, reference: Any) -> None:
        """Add one reference image's patches (kept by ``reset(keep_reference=True)``)."""
        self._real.append(self._features(reference))

    def update_reconstruction(self, reconstruction: Any) -> None:
        """Add one reconstructed image's patches."""
        self._fake.append(self._features(reconstruction))

    def add_features(self, real: np.ndarray | None = None, fake: np.ndarray | None = None) -> None:
        """Add precomputed (N, D) feature rows, bypassing the extractor."""
        if real is not None:
            self._real.append(np.asarray(real, np.float64))
        if fake is not None:
            self._fake.append(np.asarray(fake, np.float64))

    def reset(self, keep_reference: bool = False) -> None:
        self._fake = []
        if not keep_reference:
            self._real = []

    @staticmethod
    def _stack(parts: list[np.ndarray]) -> np.ndarray:
        rows = [p for p in parts if len(p)]
        return np.concatenate(rows) if rows else np.zeros((0, 0))

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """The accumulated (reference, reconstruction) feature rows, float64."""
        return self._stack(self._real), self._stack(self._fake)

    def compute_detailed(self) -> FidKidResult:
        real, fake = self.features()
        if len(real) < 2 or len(fake) < 2:
            reason = (
                f"FID/KID need at least 2 patches per side, got {len(real)} reference and {len(fake)} "
                f"reconstructed (images smaller than the {self.patch_size}-px patch give none)"
            )
            return FidKidResult(math.nan, math.nan, math.nan, len(real), len(fake), reason)
        fid = math.nan
        if "fid" in self.names:
            fid = frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))
        kid, kid_std = (math.nan, math.nan)
        if "kid" in self.names:
            kid, kid_std = kernel_inception_distance(real, fake, device=self.device)
        return FidKidResult(fid, kid, kid_std, len(real), len(fake), None)

    def compute(self) -> tuple[MetricScore, ...]:
        result = self.compute_detailed()
        return tuple(MetricScore(name, getattr(result, name)) for name in self.names)

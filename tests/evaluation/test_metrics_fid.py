"""Patch FID/KID: the patch protocol, the two estimators, and the accumulator end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from latentcodec.errors import InputError
from latentcodec.evaluation.metrics import (
    PatchFidKid,
    available_metrics,
    frechet_distance,
    kernel_inception_distance,
    protocol_patch_count,
    protocol_patches,
    write_random_weights,
)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- patches


@pytest.mark.parametrize(
    ("height", "width", "patch", "expected"),
    [
        (512, 768, 256, 3 * 2 + 2 * 1),  # Kodak landscape at the CLIC/DIV2K patch size
        (768, 512, 256, 8),  # portrait
        (512, 768, 64, 12 * 8 + 11 * 7),  # Kodak at GLC's P = 64
        (260, 300, 256, 1),  # one patch, too small for the shifted grid
        (200, 300, 256, 0),  # shorter than P: no full patch at all
        (384, 383, 256, 1),  # W < 1.5 P: no shifted grid
        (384, 384, 256, 1 + 1),
    ],
)
def test_patch_counts_follow_the_protocol(height, width, patch, expected) -> None:
    image = np.zeros((height, width, 3), np.uint8)
    patches = protocol_patches(image, patch)
    assert patches.shape == (expected, 3, patch, patch)
    assert patches.dtype == torch.uint8
    assert protocol_patch_count(height, width, patch) == expected


def test_patches_are_the_grid_cells_then_the_half_shifted_cells() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    patches = protocol_patches(image, 16).permute(0, 2, 3, 1).numpy()  # back to HWC
    assert len(patches) == 2 * 3 + 2 * 3
    for row in range(2):
        for col in range(3):
            assert np.array_equal(patches[row * 3 + col], image[16 * row : 16 * row + 16, 16 * col : 16 * col + 16])
    assert np.array_equal(patches[6], image[8:24, 8:24])
    assert np.array_equal(patches[-1], image[24:40, 40:56])


def test_float_images_are_rounded_to_uint8_patches() -> None:
    values = torch.full((3, 32, 32), 100.4 / 255)
    assert torch.all(protocol_patches(values, 32) == 100)
    with pytest.raises(InputError):
        protocol_patches(np.zeros((32, 32, 3), np.uint8), 1)


# ----------------------------------------------------------------------------- FID


def with_moments(samples: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``samples`` transformed so that their sample mean and (n - 1) covariance are exactly these."""
    centred = samples - samples.mean(0)
    whitened = centred @ np.linalg.inv(np.linalg.cholesky(np.cov(centred, rowvar=False))).T
    return whitened @ np.linalg.cholesky(cov).T + mean


def accumulated_fid(real: np.ndarray, fake: np.ndarray) -> float:
    accumulator = PatchFidKid(extractor=lambda patches: patches, names=("fid",))
    accumulator.add_features(real=real[: len(real) // 2], fake=fake)
    accumulator.add_features(real=real[len(real) // 2 :])
    (score,) = accumulator.compute()
    assert score.name == "fid"
    return score.value


def test_fid_matches_the_closed_form_for_gaussians() -> None:
    rng = np.random.default_rng(1)
    dim = 6
    variances_a, variances_b = rng.uniform(0.2, 3.0, dim), rng.uniform(0.2, 3.0, dim)
    mean_a, mean_b = rng.normal(size=dim), rng.normal(size=dim)
    real = with_moments(rng.normal(size=(400, dim)), mean_a, np.diag(variances_a))
    fake = with_moments(rng.normal(size=(300, dim)), mean_b, np.diag(variances_b))
    closed_form = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(variances_a) - np.sqrt(variances_b)) ** 2)
    assert accumulated_fid(real, fake) == pytest.approx(closed_form, rel=1e-9)


def test_fid_of_a_shifted_copy_is_the_squared_shift_and_of_identical_sets_zero() -> None:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))
    shift = rng.normal(size=8)
    assert accumulated_fid(features, features + shift) == pytest.approx(float(shift @ shift), rel=1e-8)
    assert abs(accumulated_fid(features, features.copy())) < 1e-8


def test_fid_of_independent_gaussian_samples_approaches_the_population_value() -> None:
    rng = np.random.default_rng(3)
    shift = np.array([1.0, -0.5, 0.25, 0.0])
    real, fake = rng.normal(size=(20000, 4)), rng.normal(size=(20000, 4)) + shift
    # Sampling error: the cross term 2 shift.(mean error) has std 2 |shift| sqrt(2 / n) ~ 0.023.
    assert accumulated_fid(real, fake) == pytest.approx(float(shift @ shift), abs=0.1)


def test_frechet_distance_agrees_with_the_eigenvalue_formula_for_non_commuting_covariances() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    cov_a, cov_b = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mean_a, mean_b = rng.normal(size=5), rng.normal(size=5)
    # torchmetrics: tr(S_a) + tr(S_b) - 2 * sum(sqrt(eig(S_a S_b))).
    eigen = np.sum(np.sqrt(np.linalg.eigvals(cov_a @ cov_b).astype(complex)).real)
    expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * eigen
    assert frechet_distance(mean_a, cov_a, mean_b, cov_b) == pytest.approx(expected, rel=1e-9)


# ----------------------------------------------------------------------------- KID


def test_kid_is_the_unbiased_polynomial_mmd() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.3
    kernel = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    m = len(x)
    within = sum(kernel(x[i], x[j]) + kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    across = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
    expected = within / (m * (m - 1)) - 2 * across / m**2
    # A subset as large as the sets is the whole set, so every draw gives exactly this value.
    mean, std = kernel_inception_distance(x, y, subsets=3)
    assert mean == pytest.approx(expected, rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_near_zero_for_identical_sets_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(6)
    features = rng.normal(size=(2000, 8))
    identical, _ = kernel_inception_distance(features, features.copy(), subsets=20)
    shifted = [kernel_inception_distance(features, features + s, subsets=5)[0] for s in (0.1, 0.2, 0.4)]
    assert all(0 < a < b for a, b in zip(shifted, shifted[1:])), shifted
    # Independent draws from one set share m^2/n rows on average, whose self-similarity enters the
    # cross term: the estimate is -(2/n)(mean k(x, x) - mean k(x, x')), O(1/n), not exactly 0.
    kernel = (features @ features.T / 8 + 1) ** 3
    diagonal = np.trace(kernel) / len(kernel)
    off_diagonal = (kernel.sum() - np.trace(kernel)) / (len(kernel) * (len(kernel) - 1))
    assert identical == pytest.approx(-2 / len(features) * (diagonal - off_diagonal), rel=0.2)
    assert abs(identical) < 0.01 < shifted[0]


def test_kid_is_reproducible() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(1200, 4)), rng.normal(size=(1100, 4))
    assert kernel_inception_distance(x, y, subsets=5) == kernel_inception_distance(x, y, subsets=5)


# ----------------------------------------------------------------------------- accumulator


def test_too_few_patches_give_nan_with_a_reason() -> None:
    accumulator = PatchFidKid(extractor=lambda p: p.flatten(1).float(), patch_size=64)
    tiny = np.zeros((40, 40, 3), np.uint8)
    accumulator.update(tiny, tiny)
    result = accumulator.compute_detailed()
    assert math.isnan(result.fid) and math.isnan(result.kid)
    assert result.real_patches == 0 and "64-px patch" in result.reason
    assert [score.name for score in accumulator.compute()] == ["fid", "kid"]


def test_reset_can_keep_the_reference_features() -> None:
    accumulator = PatchFidKid(extractor=lambda p: p.float().mean(dim=(2, 3)), patch_size=8, names=("kid",))
    rng = np.random.default_rng(8)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    accumulator.update(image, image)
    accumulator.reset(keep_reference=True)
    assert accumulator.compute_detailed().real_patches == 16 + 9
    assert accumulator.compute_detailed().fake_patches == 0
    accumulator.reset()
    assert accumulator.compute_detailed().real_patches == 0


@pytest.fixture(scope="module")
def inception_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("torch_home")
    write_random_weights(home / "hub" / "checkpoints", ["fid"], seed=5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        yield home


def test_fid_and_kid_share_one_inception_accumulator(inception_home) -> None:
    selection = available_metrics(["kid", "psnr", "fid"], patch_size=32)
    assert selection.unavailable == []
    assert [m.name for m in selection.per_image] == ["psnr"]
    (accumulator,) = selection.per_dataset
    assert accumulator.names == ("kid", "fid")
    rng = np.random.default_rng(9)
    images = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(2)]
    for image in images:
        accumulator.update(image, image.copy())
    real, fake = accumulator.features()
    assert real.shape == (4, 2048)  # 1 + 1 shifted patch per 48x48 image
    assert np.array_equal(real, fake)
    assert np.isfinite(real).all() and not np.allclose(real[0], real[1])

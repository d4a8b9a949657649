"""PSNR, MS-SSIM and NLPD: exact values where they are known, and their defining properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
import torch
from PIL import Image
from pytorch_msssim import ms_ssim

from latentcodec.errors import InputError
from latentcodec.evaluation.metrics import MSSSIM, NLPD, PSNR, ms_ssim_scales
from latentcodec.evaluation.metrics.pixel import (
    MS_SSIM_WEIGHTS,
    NLPD_DN_FILTERS,
    NLPD_SIGMAS,
    laplacian_pyramid,
    multiscale_ssim,
)

torch.set_num_threads(1)
NOISE_LEVELS = (2.0, 6.0, 16.0, 40.0)  # in 8-bit steps


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 RGB test image with edges, gradients and texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    channels = []
    for c in range(3):
        phase = rng.uniform(0, 2 * np.pi)
        value = 0.5 + 0.3 * np.sin(9 * xx + 5 * yy * (c + 1) + phase) + 0.15 * (xx - yy)
        value += 0.2 * ((xx - 0.5) ** 2 + (yy - 0.4) ** 2 < 0.05)
        channels.append(value)
    return np.clip(np.stack(channels, -1) * 255, 0, 255).round().astype(np.uint8)


def noisy(image: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    # The same noise pattern at every level, so that only its strength changes.
    pattern = np.random.default_rng(seed).standard_normal(image.shape)
    return np.clip(image + sigma * pattern, 0, 255).round().astype(np.uint8)


def assert_monotone(metric, image: np.ndarray) -> list[float]:
    values = [metric(image, noisy(image, sigma)) for sigma in NOISE_LEVELS]
    ordered = values if not metric.higher_is_better else [-v for v in values]
    assert all(a < b for a, b in zip(ordered, ordered[1:])), (metric.name, values)
    return values


# ----------------------------------------------------------------------------- PSNR


def test_psnr_of_identical_images_is_infinite() -> None:
    image = smooth_image(16, 24)
    assert PSNR()(image, image.copy()) == math.inf


def test_psnr_of_a_uniform_error_is_exact() -> None:
    image = smooth_image(16, 24)
    image[image > 250] = 250
    shifted = image + np.uint8(5)
    assert PSNR()(image, shifted) == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)


def test_psnr_accepts_arrays_tensors_and_pil_images_alike() -> None:
    reference, reconstruction = smooth_image(20, 12), noisy(smooth_image(20, 12), 8.0)
    from_arrays = PSNR()(reference, reconstruction)
    as_float = torch.from_numpy(reconstruction).permute(2, 0, 1).float() / 255
    assert PSNR()(Image.fromarray(reference), as_float) == pytest.approx(from_arrays, abs=1e-5)
    assert PSNR()(torch.from_numpy(reference), torch.from_numpy(reconstruction)) == from_arrays


def test_bad_inputs_are_input_errors() -> None:
    image = smooth_image(16, 16)
    with pytest.raises(InputError, match="differ in size"):
        PSNR()(image, smooth_image(16, 17))
    with pytest.raises(InputError, match="uint8"):
        PSNR()(image.astype(np.float32), image)
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        PSNR()(image[..., 0], image[..., 0])


# ----------------------------------------------------------------------------- MS-SSIM


def test_ms_ssim_scale_count_follows_the_window_size() -> None:
    assert [ms_ssim_scales(s, 1000) for s in (10, 11, 20, 21, 41, 81, 160, 161, 512)] == [0, 1, 1, 2, 3, 4, 4, 5, 5]


def test_ms_ssim_is_the_pytorch_msssim_value_for_large_images() -> None:
    reference = smooth_image(161, 170)
    reconstruction = noisy(reference, 12.0)
    expected = ms_ssim(
        torch.from_numpy(reference).permute(2, 0, 1)[None].float() / 255,
        torch.from_numpy(reconstruction).permute(2, 0, 1)[None].float() / 255,
        data_range=1.0,
    )
    assert MSSSIM()(reference, reconstruction) == pytest.approx(float(expected), abs=1e-7)
    assert MSSSIM()(reference, reference) == pytest.approx(1.0, abs=1e-6)


def test_reduced_scale_recursion_reproduces_the_library_at_five_scales() -> None:
    reference = torch.from_numpy(smooth_image(170, 176)).permute(2, 0, 1)[None].float() / 255
    reconstruction = torch.from_numpy(noisy(smooth_image(170, 176), 20.0)).permute(2, 0, 1)[None].float() / 255
    ours = multiscale_ssim(reference, reconstruction, MS_SSIM_WEIGHTS)
    assert ours == pytest.approx(float(ms_ssim(reference, reconstruction, data_range=1.0)), abs=1e-6)


def test_ms_ssim_on_small_images_uses_fewer_scales_and_stays_meaningful() -> None:
    image = smooth_image(48, 64)
    assert MSSSIM()(image, image) == pytest.approx(1.0, abs=1e-6)
    values = assert_monotone(MSSSIM(), image)
    assert 0.0 < values[-1] < values[0] < 1.0
    assert math.isnan(MSSSIM()(smooth_image(8, 64), smooth_image(8, 64)))


# ----------------------------------------------------------------------------- NLPD


def reference_nlpd(gray_a: np.ndarray, gray_b: np.ndarray) -> float:
    """A direct port of NLP_dist.m with scipy's filters, as an independent check."""
    taps = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
    kernel = np.outer(taps, taps)

    def pyramid(image: np.ndarray) -> list[np.ndarray]:
        bands, current = [], image
        for _ in range(5):
            low = scipy.ndimage.correlate(current, kernel, mode="reflect")[::2, ::2]  # MATLAB 'symmetric'
            odd = 2 * np.array(low.shape) - np.array(current.shape)
            padded = np.pad(low, 1, mode="edge")
            sparse = np.zeros((2 * padded.shape[0], 2 * padded.shape[1]))
            sparse[::2, ::2] = 4 * padded
            smooth = scipy.ndimage.correlate(sparse, kernel, mode="constant")
            rows, cols = sparse.shape
            bands.append(current - smooth[2 : rows - 2 - odd[0], 2 : cols - 2 - odd[1]])
            current = low
        return bands + [current]

    def normalise(image: np.ndarray) -> list[np.ndarray]:
        return [
            band / (sigma + scipy.signal.convolve2d(np.abs(band), filt, mode="same"))
            for band, sigma, filt in zip(pyramid(image), NLPD_SIGMAS, NLPD_DN_FILTERS)
        ]

    return float(np.mean([np.sqrt(np.mean((a - b) ** 2)) for a, b in zip(normalise(gray_a), normalise(gray_b))]))


def gray(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / 255 @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def test_nlpd_matches_a_scipy_port_of_the_reference_code() -> None:
    reference = smooth_image(45, 62)
    reconstruction = noisy(reference, 10.0)
    assert NLPD()(reference, reconstruction) == pytest.approx(reference_nlpd(gray(reference), gray(reconstruction)),
                                                               rel=1e-9)


def test_laplacian_pyramid_reconstructs_the_image() -> None:
    from latentcodec.evaluation.metrics.pixel import _BURT_ADELSON, _upsample

    image = torch.from_numpy(gray(smooth_image(37, 50)))[None, None]
    bands = laplacian_pyramid(image, 6)
    kernel = torch.from_numpy(np.outer(_BURT_ADELSON, _BURT_ADELSON))
    current = bands[-1]
    for band in reversed(bands[:-1]):
        current = band + _upsample(current, band.shape[-2:], kernel)
    assert torch.allclose(current, image, atol=1e-12)
    assert [tuple(b.shape[-2:]) for b in bands] == [(37, 50), (19, 25), (10, 13), (5, 7), (3, 4), (2, 2)]


def test_nlpd_is_a_distance() -> None:
    a, b, c = smooth_image(40, 40, seed=0), smooth_image(40, 40, seed=1), noisy(smooth_image(40, 40, seed=0), 30.0)
    metric = NLPD()
    assert metric(a, a) == 0.0
    assert metric(a, b) > 0.0
    assert metric(a, b) == pytest.approx(metric(b, a), rel=1e-12)
    assert metric(a, c) <= metric(a, b) + metric(b, c) + 1e-12


@pytest.mark.parametrize("metric", [PSNR(), MSSSIM(), NLPD()], ids=lambda m: m.name)
def test_pixel_metrics_degrade_monotonically_with_noise(metric) -> None:
    assert_monotone(metric, smooth_image(48, 48))


def test_thumbnail_psnr_sees_block_means_only():
    from latentcodec.evaluation.metrics import ThumbnailPSNR

    image = smooth_image(64, 96).astype(np.float64)
    # Zero-mean noise within every 16x16 block leaves the thumbnail exact (infinite PSNR) ...
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 8, (64, 96, 3))
    blocks = noise.reshape(4, 16, 6, 16, 3)
    noise = (blocks - blocks.mean(axis=(1, 3), keepdims=True)).reshape(64, 96, 3)
    reference = torch.from_numpy(image / 255).permute(2, 0, 1)
    assert ThumbnailPSNR()(reference, reference + torch.from_numpy(noise / 255).permute(2, 0, 1)) > 200
    # ... while a uniform shift of d shows at 20 log10(1 / d), and the full PSNR sees the noise.
    shifted = reference + 4 / 255
    assert ThumbnailPSNR()(reference, shifted) == pytest.approx(-20 * math.log10(4 / 255), abs=1e-9)
    assert PSNR()(reference, reference + torch.from_numpy(noise / 255).permute(2, 0, 1)) < 40
    # Edges that do not fill a 16x16 block are left out
    assert ThumbnailPSNR()(reference[:, :70, :100], reference[:, :70, :100]) == math.inf
    assert math.isnan(ThumbnailPSNR()(reference[:, :8, :8], reference[:, :8, :8]))

"""LPIPS and DISTS through the real loading path, with random weights in the official file layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from latentcodec.evaluation.metrics import available_metrics, write_random_weights
from latentcodec.evaluation.metrics.perceptual import load_dists_network, load_lpips_network

torch.set_num_threads(1)
NOISE_LEVELS = (4.0, 12.0, 32.0, 80.0)
PERCEPTUAL = ("lpips_alex", "lpips_vgg", "dists")


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub/checkpoints holds random LPIPS/DISTS weights, set for this module."""
    home = tmp_path_factory.mktemp("torch_home")
    write_random_weights(home / "hub" / "checkpoints", PERCEPTUAL, seed=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def metrics(torch_home):
    selection = available_metrics(PERCEPTUAL, device="cpu")
    assert selection.unavailable == []
    assert [m.name for m in selection.per_image] == list(PERCEPTUAL)
    return {m.name: m for m in selection.per_image}


def textured_image(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 0.5 + 0.25 * np.sin(14 * xx + rng.uniform(0, 6, (3, 1, 1))) * np.cos(9 * yy)
    base += 0.2 * (((xx * 4).astype(int) + (yy * 4).astype(int)) % 2)
    return np.clip(base.transpose(1, 2, 0) * 230, 0, 255).round().astype(np.uint8)


def noisy(image: np.ndarray, sigma: float) -> np.ndarray:
    pattern = np.random.default_rng(7).standard_normal(image.shape)
    return np.clip(image + sigma * pattern, 0, 255).round().astype(np.uint8)


@pytest.mark.parametrize("name", PERCEPTUAL)
def test_identical_images_score_zero(metrics, name) -> None:
    image = textured_image()
    assert metrics[name](image, image.copy()) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", PERCEPTUAL)
def test_distance_grows_with_noise_and_is_symmetric(metrics, name) -> None:
    metric = metrics[name]
    assert not metric.higher_is_better
    image = textured_image()
    values = [metric(image, noisy(image, sigma)) for sigma in NOISE_LEVELS]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert values[0] > 0
    degraded = noisy(image, NOISE_LEVELS[1])
    assert metric(degraded, image) == pytest.approx(values[1], rel=1e-5)


def test_lpips_is_linear_in_the_loaded_lin_weights(torch_home) -> None:
    folder = torch_home / "hub" / "checkpoints"
    network = load_lpips_network("alex", folder)
    reference = torch.from_numpy(textured_image()).permute(2, 0, 1)[None].float() / 255
    degraded = torch.from_numpy(noisy(textured_image(), 20.0)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        before = network(reference, degraded)
        for head in network.heads.children():
            head.model[1].weight.mul_(2.5)
        after = network(reference, degraded)
    assert float(after) == pytest.approx(2.5 * float(before), rel=1e-5)
    # The loaded lin weights are those of the file (here: random, non-negative).
    stored = torch.load(folder / "lpips_v0.1_alex.pth", weights_only=True)
    assert torch.allclose(network.heads.lin3.model[1].weight, 2.5 * stored["lin3.model.1.weight"])


def test_dists_depends_only_on_the_relative_alpha_beta(torch_home) -> None:
    network = load_dists_network(torch_home / "hub" / "checkpoints")
    reference = torch.from_numpy(textured_image(48)).permute(2, 0, 1)[None].float() / 255
    degraded = torch.from_numpy(noisy(textured_image(48), 20.0)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        before = float(network(reference, degraded))
        network.alpha.mul_(3.0)
        network.beta.mul_(3.0)
        scaled = float(network(reference, degraded))
        network.beta.zero_()
        texture_only = float(network(reference, degraded))
    assert scaled == pytest.approx(before, rel=1e-5)
    assert texture_only != pytest.approx(before, rel=1e-3)


def test_lpips_reads_inputs_in_unit_range(metrics) -> None:
    # The same pair as uint8 arrays and as float tensors in [0, 1] must give the same distance.
    image, degraded = textured_image(), noisy(textured_image(), 10.0)
    as_float = [torch.from_numpy(x).permute(2, 0, 1).float() / 255 for x in (image, degraded)]
    assert metrics["lpips_alex"](*as_float) == pytest.approx(metrics["lpips_alex"](image, degraded), rel=1e-6)

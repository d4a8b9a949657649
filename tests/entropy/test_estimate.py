import math

import numpy as np
import torch
from scipy.special import ndtr

from latentcodec.entropy import gaussian_residual_bits


def reference_bits(symbols: np.ndarray, scales: np.ndarray) -> np.ndarray:
    sigma = np.clip(scales.astype(np.float64), 1e-5, 1e10)
    r = symbols.astype(np.float64)
    p = ndtr((r + 0.5) / sigma) - ndtr((r - 0.5) / sigma)
    return np.maximum(-np.log2(p + 1e-5), 0.0)


def test_matches_a_float64_recomputation():
    rng = np.random.default_rng(0)
    scales = np.concatenate([np.exp(rng.uniform(-12, 5, 5000)), [0.0, -3.0, 1e-7, 1e12]]).astype(np.float32)
    symbols = np.rint(rng.normal(0, 1, scales.shape) * np.minimum(scales, 50) * rng.uniform(0, 3, scales.shape))
    ours = gaussian_residual_bits(torch.from_numpy(symbols).float(), torch.from_numpy(scales))
    assert ours.dtype == torch.float32 and ours.shape == scales.shape
    # float32 CDFs near 1 are spaced ~6e-8 apart; through the 1e-5 floor that is < 0.02 bit.
    np.testing.assert_allclose(ours.numpy(), reference_bits(symbols, scales), atol=0.03, rtol=1e-4)


def test_known_values():
    bits = gaussian_residual_bits(torch.tensor([0.0, 0.0, 40.0]), torch.tensor([1e-9, 1.0, 0.11]))
    assert bits[0] == 0.0  # certain symbol: clamped at zero
    assert math.isclose(bits[1].item(), -math.log2(math.erf(0.5 / math.sqrt(2)) + 1e-5), rel_tol=1e-5)
    assert math.isclose(bits[2].item(), -math.log2(1e-5), rel_tol=1e-5)  # floor caps impossible symbols


def test_gradients_flow_to_symbols_and_scales():
    symbols = torch.tensor([[0.0, 1.0], [-2.0, 3.0]], requires_grad=True)
    scales = torch.tensor([[0.5, 1.0], [2.0, 0.8]], requires_grad=True)
    gaussian_residual_bits(symbols, scales).sum().backward()
    assert torch.all(torch.isfinite(symbols.grad)) and torch.all(torch.isfinite(scales.grad))
    assert scales.grad[1, 1] < 0  # r = 3 at sigma = 0.8: a wider sigma makes the outlier cheaper
    assert scales.grad[0, 0] > 0  # r = 0: a wider sigma makes the mode dearer
    assert torch.all(symbols.grad[0, 1:] > 0)  # moving away from the mean costs bits


def test_gradcheck_in_float64():
    symbols = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64, requires_grad=True)
    scales = torch.tensor([0.7, 1.5, 3.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gaussian_residual_bits, (symbols, scales))


def test_broadcasting_and_integer_symbols():
    bits = gaussian_residual_bits(torch.tensor([[0], [1], [2]]), torch.tensor([0.5, 1.0]))
    assert bits.shape == (3, 2) and bits.dtype == torch.float32

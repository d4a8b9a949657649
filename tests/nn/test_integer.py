"""The integer path (latentcodec.nn.integer): exactness whatever the layout or thread count,
closeness to the float nets it replaces, defined rounding and saturation, and no overflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from latentcodec.entropy.scale_table import DEFAULT_SCALE_TABLE
from latentcodec.nn import integer
from latentcodec.nn.dcvc import DepthConvBlock, DepthConvBlock2, DepthConvBlock3, ResidualBlockUpsample
from latentcodec.nn.integer import from_fixed, integer_twin, to_fixed

BLOCKS = [
    (DepthConvBlock, (32, 48)),
    (DepthConvBlock2, (32,)),
    (DepthConvBlock3, (32,)),
    (ResidualBlockUpsample, (32, 16)),
]


@pytest.mark.parametrize("block_class, args", BLOCKS, ids=[b.__name__ for b, _ in BLOCKS])
def test_twin_is_close_to_the_float_block_and_exact_under_layout_and_threads(block_class, args):
    torch.manual_seed(0)
    block = block_class(*args).eval()
    x = torch.randn(2, 32, 12, 20)
    with torch.no_grad():
        expected = block(x)
    twin = integer_twin(block)
    out = twin(to_fixed(x))
    assert out.dtype == integer.FIXED_DTYPE and torch.equal(out, out.round())
    # A few units of 2**-12 of post-training quantisation error, on outputs of size ~1-5.
    assert (from_fixed(out) - expected).abs().max() < 4e-3
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = twin(to_fixed(x).contiguous(memory_format=torch.channels_last))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(out, single)


def test_conversion_is_deterministic_and_rejects_unsupported_layers():
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    a, b = integer_twin(conv), integer_twin(conv)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert a.weight.abs().max() <= 2**integer.WEIGHT_BITS
    with pytest.raises(TypeError, match="no integer version"):
        integer_twin(nn.Conv2d(8, 8, 5, padding=2))
    with pytest.raises(TypeError, match="no integer version"):
        integer_twin(nn.SiLU())


def test_accumulators_stay_below_2_53_even_at_saturated_inputs():
    conv = nn.Conv2d(512, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(3.0)  # every weight at the channel maximum: the worst case for the bound
        conv.bias.fill_(100.0)
    twin = integer_twin(conv)
    bound = twin.weight.abs().sum(dim=(0, 1, 3)) * integer.ACTIVATION_LIMIT + twin.bias.view(-1).abs()
    assert int(bound.max()) < 2**53
    x = torch.full((1, 512, 3, 3), integer.ACTIVATION_LIMIT, dtype=integer.FIXED_DTYPE)
    accumulator = twin._accumulate(torch.nn.functional.pad(x, (1, 1, 1, 1)), 3)
    # The centre sees all 9 taps of all 512 channels: an exact integer in float64.
    assert accumulator[0, 0, 1, 1] == float(twin.weight[..., 0, :].sum()) * integer.ACTIVATION_LIMIT
    assert twin(x).abs().max() <= integer.ACTIVATION_LIMIT


@pytest.mark.parametrize("groups,kernel", [(1, 3), (1, 1), (16, 3), (16, 1)])
def test_row_bands_give_the_bits_of_one_pass(monkeypatch, groups, kernel):
    torch.manual_seed(0)
    twin = integer_twin(nn.Conv2d(16, 16 if groups > 1 else 24, kernel, padding=kernel // 2, groups=groups))
    x = to_fixed(torch.randn(2, 16, 37, 23) * 3)
    whole = twin(x)
    for band_elements in (1, 2 * 24 * 25, 5 * 24 * 25):  # one row, two rows, five rows a band
        monkeypatch.setattr(integer, "BAND_ELEMENTS", band_elements)
        assert torch.equal(twin(x), whole)


def test_from_fixed_to_float32_rounds_once_like_the_float64_route():
    x = torch.round(torch.randn(20000, dtype=torch.float64) * 2**26).clamp_(-integer.ACTIVATION_LIMIT,
                                                                           integer.ACTIVATION_LIMIT)
    x = torch.cat([x, torch.tensor([0.0, 1.0, -1.0, 4097.0, 2.0**25 + 1, integer.ACTIVATION_LIMIT])])
    expected = (x * (1.0 / integer.ONE)).to(torch.float32)
    assert torch.equal(integer.from_fixed(x).view(torch.int32), expected.view(torch.int32))


def test_rounding_is_half_up_and_saturation_is_defined():
    x = torch.tensor([-3, -2, -1, 0, 1, 2, 3], dtype=integer.FIXED_DTYPE)
    assert integer.rounding_shift(x, 1).tolist() == [-1, -1, 0, 0, 1, 1, 2]
    assert integer.rounding_divide(torch.tensor([5.0, -5.0, 7.0, 2.0**52 + 1], dtype=torch.float64), 3).tolist() == [
        2, -2, 2, (2**52 + 1 + 1) // 3]
    assert to_fixed(torch.tensor([1e9, -1e9, float("nan")])).tolist() == [
        integer.ACTIVATION_LIMIT, -integer.ACTIVATION_LIMIT, 0]


def test_leaky_relu_and_sigmoid_match_their_float_definitions():
    x = torch.linspace(-20, 20, 4001)
    fixed = to_fixed(x)
    assert (from_fixed(integer.leaky_relu(fixed, 0.01)) - torch.nn.functional.leaky_relu(x, 0.01)).abs().max() < 1e-3
    assert (from_fixed(integer.sigmoid(fixed)) - torch.sigmoid(x)).abs().max() < 3e-4
    assert integer.sigmoid(fixed).min() >= 0 and integer.sigmoid(fixed).max() <= integer.ONE


def test_fixed_scale_index_agrees_with_the_float_index():
    sigma = torch.from_numpy(np.geomspace(0.05, 80, 5000)).float()
    fixed = to_fixed(sigma)
    exact = DEFAULT_SCALE_TABLE.index_fixed(fixed, integer.FRACTION_BITS)
    assert torch.equal(exact, DEFAULT_SCALE_TABLE.index(from_fixed(fixed, torch.float64)))


def test_transformer_pieces_match_float_and_are_exact_under_threads():
    torch.manual_seed(2)
    tokens = torch.randn(3, 10, 64)
    layers = nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 64)).eval()
    with torch.no_grad():
        expected = layers(tokens)
    twin = integer_twin(layers)
    out = twin(to_fixed(tokens))
    assert (from_fixed(out) - expected).abs().max() < 1e-2
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(twin(to_fixed(tokens)), out)
    finally:
        torch.set_num_threads(threads)

    logits = torch.randn(4, 7, 33) * 3
    probabilities = integer.softmax(to_fixed(logits))
    assert (from_fixed(probabilities) - torch.softmax(logits, -1)).abs().max() < 2e-3
    assert (probabilities.sum(-1) - integer.ONE).abs().max() <= 33
    q, k = to_fixed(torch.randn(2, 5, 16)), to_fixed(torch.randn(2, 6, 16))
    scores = integer.fixed_matmul(q, k.transpose(1, 2))
    assert (from_fixed(scores) - from_fixed(q) @ from_fixed(k).transpose(1, 2)).abs().max() < 1e-3


def test_integer_sqrt_is_exact():
    n = torch.tensor([0, 1, 2, 3, 4, 15, 16, 17, 2**52 - 1, 2**52, (2**26 + 1) ** 2 - 1], dtype=torch.int64)
    root = integer.integer_sqrt(n)
    assert bool(((root * root <= n) & ((root + 1) * (root + 1) > n)).all())

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentcodec.entropy import DEFAULT_SCALE_TABLE, ScaleTable

EDGE_SCALES = [0.0, -1.0, -0.0, math.nan, 1e-9, 1e-45, 0.11, 64.0, 1e6, math.inf, -math.inf, 3.4e38]


def floor_log_index(sigma: np.ndarray, table: ScaleTable) -> np.ndarray:
    step = (math.log(table.max_scale) - math.log(table.min_scale)) / (table.levels - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.floor((np.log(sigma) - math.log(table.min_scale)) / step)
    return np.clip(np.nan_to_num(raw, nan=0.0, neginf=0.0, posinf=table.levels - 1), 0, table.levels - 1)


def test_values_are_log_spaced_between_the_bounds():
    values = DEFAULT_SCALE_TABLE.values()
    assert values.dtype == np.float64 and values.shape == (256,)
    assert values[0] == 0.11 and values[-1] == 64.0
    ratios = values[1:] / values[:-1]
    np.testing.assert_allclose(ratios, (64.0 / 0.11) ** (1 / 255), rtol=1e-12)


def test_values_returns_a_copy():
    values = DEFAULT_SCALE_TABLE.values()
    values[0] = 123.0
    assert DEFAULT_SCALE_TABLE.values()[0] == 0.11


def test_edge_scales_map_to_the_documented_indices():
    indices = DEFAULT_SCALE_TABLE.index(torch.tensor(EDGE_SCALES))
    assert indices.dtype == torch.int64
    expected = [0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 0, 255]
    assert indices.tolist() == expected


def test_each_table_value_maps_to_its_own_index():
    values = torch.from_numpy(DEFAULT_SCALE_TABLE.values())
    assert DEFAULT_SCALE_TABLE.index(values).tolist() == list(range(256))
    # Just below an entry (in float32) falls into the previous bucket.
    below = torch.nextafter(values.float()[1:], torch.tensor(0.0))
    assert DEFAULT_SCALE_TABLE.index(below).tolist() == list(range(255))


def test_matches_the_floor_of_log_formula_away_from_bucket_edges():
    rng = np.random.default_rng(0)
    sigma = np.exp(rng.uniform(-4.0, 5.0, 20000)).astype(np.float32)
    ours = DEFAULT_SCALE_TABLE.index(torch.from_numpy(sigma)).numpy()
    reference = floor_log_index(sigma.astype(np.float64), DEFAULT_SCALE_TABLE)
    edges = DEFAULT_SCALE_TABLE.values()
    near_edge = np.min(np.abs(sigma[:, None].astype(np.float64) / edges[None, :] - 1.0), axis=1) < 1e-6
    assert np.array_equal(ours[~near_edge], reference[~near_edge])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=50))
def test_never_raises_is_clamped_and_monotone(scales):
    sigma = torch.tensor(scales, dtype=torch.float64)
    indices = DEFAULT_SCALE_TABLE.index(sigma)
    assert indices.shape == sigma.shape and indices.dtype == torch.int64
    assert int(indices.min()) >= 0 and int(indices.max()) <= 255
    finite = sigma[~torch.isnan(sigma)]
    ordered = DEFAULT_SCALE_TABLE.index(torch.sort(finite).values)
    assert torch.all(ordered[1:] >= ordered[:-1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64])
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 0, 3), (1, 2, 3, 4)])
def test_any_dtype_and_shape(dtype, shape):
    sigma = (torch.rand(shape) * 100).to(dtype)
    indices = DEFAULT_SCALE_TABLE.index(sigma)
    assert indices.shape == sigma.shape and indices.dtype == torch.int64


def test_custom_table_and_validation():
    table = ScaleTable(min_scale=0.01, max_scale=64.0, levels=64)
    assert table.index(torch.tensor([0.01, 64.0, 1e9])).tolist() == [0, 63, 63]
    for bad in [dict(levels=1), dict(min_scale=0.0), dict(min_scale=5.0, max_scale=1.0), dict(max_scale=math.inf)]:
        with pytest.raises(ValueError):
            ScaleTable(**bad)

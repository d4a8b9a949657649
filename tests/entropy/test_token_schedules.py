"""The coding schedules of a token map (SYSTEMS.md 6.6.5)."""

from __future__ import annotations

import pytest
import torch

from latentcodec.entropy.token_schedules import (
    SCHEDULES,
    coding_order,
    halton_order,
    schedule_groups,
    schedule_passes,
)
from latentcodec.errors import ConfigError

SIZES = [(1, 1), (1, 7), (3, 5), (8, 8), (12, 8), (16, 16), (5, 33)]


def sizes_of(name: str, rows: int, cols: int) -> list[int]:
    return torch.bincount(schedule_groups(name, rows, cols).flatten()).tolist()


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_every_schedule_gives_every_position_one_non_empty_group(name):
    for rows, cols in SIZES:
        groups = schedule_groups(name, rows, cols)
        assert groups.shape == (rows, cols) and groups.dtype == torch.int64
        counts = torch.bincount(groups.flatten())
        assert groups.min() == 0 and bool((counts > 0).all()), (name, rows, cols, counts)
        assert schedule_passes(name, rows, cols) == len(counts)
        order = coding_order(groups)
        assert sorted(order.tolist()) == list(range(rows * cols))
        assert bool((groups.flatten()[order].diff() >= 0).all())


def test_group_sizes_on_an_8x8_map_are_those_of_the_specification():
    assert sizes_of("single-pass", 8, 8) == [64]
    assert sizes_of("checkerboard", 8, 8) == [32, 32]
    assert sizes_of("quincunx", 8, 8) == [4, 4, 8, 16, 32]
    assert sizes_of("hierarchical", 8, 8) == [1, 3, 12, 48]
    assert sizes_of("hierarchical", 16, 16) == [1, 3, 12, 48, 192]
    assert sizes_of("hierarchical-split", 8, 8) == [1, 3, 12, 16, 32]
    qlds = sizes_of("qlds", 8, 8)
    assert len(qlds) == 8 and sum(qlds) == 64 and qlds[0] < qlds[-1]


def test_quincunx_alternates_diagonal_and_square_refinements():
    groups = schedule_groups("quincunx", 8, 8)
    assert {(r, c) for r in range(8) for c in range(8) if groups[r, c] == 0} == {(0, 0), (0, 4), (4, 0), (4, 4)}
    assert {(r, c) for r in range(8) for c in range(8) if groups[r, c] == 1} == {(2, 2), (2, 6), (6, 2), (6, 6)}
    assert bool((groups[1::2, 1::2] == 3).all())  # the diagonal step at stride 2: (odd, odd)


def test_hierarchical_groups_are_coarse_lattices_anchored_at_the_origin():
    groups = schedule_groups("hierarchical", 16, 16)
    for s in range(5):
        stride = 2 ** (4 - s)
        lattice = torch.zeros(16, 16, dtype=torch.bool)
        lattice[::stride, ::stride] = True
        assert torch.equal(groups <= s, lattice)


def test_halton_order_spreads_the_first_positions():
    order = halton_order(8, 8)
    assert sorted(order) == list(range(64))
    first = [(i // 8, i % 8) for i in order[:6]]
    # Low discrepancy: the first few positions already visit every quadrant (a raster order would not).
    assert {(r // 4, c // 4) for r, c in first} == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_unknown_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown token schedule 'zigzag'"):
        schedule_groups("zigzag", 4, 4)

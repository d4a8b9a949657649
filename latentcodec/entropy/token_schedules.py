"""Coding schedules of a 2-D token map: in which pass each position is coded (SYSTEMS.md 6.6.5).

A schedule is a function ``(rows, cols) -> (rows, cols) int64`` giving every position its group;
group s is coded in pass s, seeing the tokens of every earlier group. Groups are numbered 0, 1, ...
with none empty, and a schedule depends on the map's size only, so encoder and decoder agree on it
without any side information. Every schedule is computed in integer arithmetic, so it is the same
on every machine.

* ``single-pass``: every token in one pass, each predicted from the prior's marginal at its
  position (no token context; the learned counterpart of fixed-length coding).
* ``checkerboard``: two passes, the two colours of a checkerboard.
* ``quincunx``: a sparse square lattice, then alternating diagonal (quincunx) and square refinements
  down to stride 1: groups 4, 4, 8, 16, 32 on an 8x8 map.
* ``qlds``: M2T-style. Positions in the order a quantised 2-D Halton sequence (bases 2 and 3) first
  visits them, cut into 2*(ceil(log2(longest side)) + 1) passes of quadratically growing size (the early
  part of a cosine schedule, in integers): few tokens first, most last.
* ``hierarchical`` (the default): implicit hierarchical. Group s is the stride-2^(L-s) lattice
  anchored at (0, 0) minus every coarser lattice, L = ceil(log2(longest side)): 1, 3, 12, 48 on 8x8.
* ``hierarchical-split``: the same with the last group split into its two checkerboard halves.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import torch

from latentcodec.errors import ConfigError

Schedule = Callable[[int, int], torch.Tensor]


def _levels(rows: int, cols: int) -> int:
    return max(0, math.ceil(math.log2(max(rows, cols, 1))))


def _coordinates(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.arange(rows)[:, None].expand(rows, cols)
    c = torch.arange(cols)[None, :].expand(rows, cols)
    return r, c


def _renumber(group: torch.Tensor) -> torch.Tensor:
    """Drop empty groups (small or thin maps leave some lattices empty), keeping the order."""
    used = torch.unique(group)
    return torch.searchsorted(used, group)


def single_pass(rows: int, cols: int) -> torch.Tensor:
    return torch.zeros(rows, cols, dtype=torch.int64)


def checkerboard(rows: int, cols: int) -> torch.Tensor:
    r, c = _coordinates(rows, cols)
    return _renumber(((r + c) % 2).to(torch.int64))


def hierarchical(rows: int, cols: int) -> torch.Tensor:
    levels = _levels(rows, cols)
    r, c = _coordinates(rows, cols)
    group = torch.full((rows, cols), levels, dtype=torch.int64)
    # From the finest lattice to the coarsest, each overwriting the positions it holds.
    for s in range(levels - 1, -1, -1):
        stride = 2 ** (levels - s)
        group[(r % stride == 0) & (c % stride == 0)] = s
    return group


def hierarchical_split(rows: int, cols: int) -> torch.Tensor:
    group = hierarchical(rows, cols)
    r, c = _coordinates(rows, cols)
    last = group == group.max()
    # The last group's positions off the checkerboard colour of (0, 0) go one pass later.
    return _renumber(torch.where(last & ((r + c) % 2 == 1), group + 1, group))


def quincunx(rows: int, cols: int) -> torch.Tensor:
    levels = _levels(rows, cols)
    r, c = _coordinates(rows, cols)
    group = torch.full((rows, cols), -1, dtype=torch.int64)

    def claim(where: torch.Tensor, index: int) -> None:
        group[where & (group < 0)] = index

    stride = 2 ** max(0, levels - 1)
    claim((r % stride == 0) & (c % stride == 0), 0)
    index = 1
    while stride >= 2:
        half = stride // 2
        claim((r % stride == half) & (c % stride == half), index)  # lattice centres: the diagonal step
        claim((r % half == 0) & (c % half == 0), index + 1)  # the square lattice at half the stride
        index += 2
        stride = half
    return _renumber(group)


def _radical_inverse(n: int, base: int) -> tuple[int, int]:
    """The van der Corput value of n in ``base`` as an exact fraction (numerator, denominator)."""
    numerator, denominator = 0, 1
    while n > 0:
        n, digit = divmod(n, base)
        numerator = numerator * base + digit
        denominator *= base
    return numerator, denominator


def halton_order(rows: int, cols: int) -> list[int]:
    """Raster indices in the order the quantised Halton(2, 3) sequence first visits them."""
    seen, order = set(), []
    n = 0
    # Every cell is visited within a bounded number of points; the bound is a safety net only.
    while len(order) < rows * cols and n < 64 * rows * cols + 64:
        y_num, y_den = _radical_inverse(n, 2)
        x_num, x_den = _radical_inverse(n, 3)
        cell = (y_num * rows // y_den) * cols + (x_num * cols // x_den)
        if cell not in seen:
            seen.add(cell)
            order.append(cell)
        n += 1
    order += [cell for cell in range(rows * cols) if cell not in seen]
    return order


def qlds(rows: int, cols: int, passes: int | None = None) -> torch.Tensor:
    total = rows * cols
    passes = min(total, passes or 2 * (_levels(rows, cols) + 1))
    # Cumulative tokens after pass s: ceil(total * (s / S)^2), at least one new token per pass.
    ends, previous = [], 0
    for s in range(1, passes + 1):
        end = max(previous + 1, -(-total * s * s // (passes * passes)))
        end = min(end, total - (passes - s))
        ends.append(end)
        previous = end
    group = torch.empty(total, dtype=torch.int64)
    order = torch.tensor(halton_order(rows, cols), dtype=torch.int64)
    start = 0
    for s, end in enumerate(ends):
        group[order[start:end]] = s
        start = end
    return group.view(rows, cols)


SCHEDULES: dict[str, Schedule] = {
    "single-pass": single_pass,
    "checkerboard": checkerboard,
    "quincunx": quincunx,
    "qlds": qlds,
    "hierarchical": hierarchical,
    "hierarchical-split": hierarchical_split,
}
DEFAULT_SCHEDULE = "hierarchical"


def schedule_groups(name: str, rows: int, cols: int) -> torch.Tensor:
    """(rows, cols) group of every position under schedule ``name``."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown token schedule {name!r}; known: {', '.join(SCHEDULES)}")
    return _cached_groups(name, rows, cols).clone()


@lru_cache(maxsize=64)
def _cached_groups(name: str, rows: int, cols: int) -> torch.Tensor:
    # Every pass of the prior asks for its map's groups; QLDS's Halton walk is Python-level work.
    return SCHEDULES[name](rows, cols)


def schedule_passes(name: str, rows: int, cols: int) -> int:
    return int(schedule_groups(name, rows, cols).max().item()) + 1 if rows * cols else 0


def coding_order(groups: torch.Tensor) -> torch.Tensor:
    """(rows * cols,) raster indices in coding order: group by group, raster order within a group."""
    return torch.sort(groups.flatten(), stable=True).indices

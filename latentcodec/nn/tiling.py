"""Tiled inference for the pixel-space conv nets (VQGAN encoder and generator) under a memory budget.

A chain of blocks is run tile by tile: each output tile's input region is found by walking the
chain backwards (every block states which input rows and columns its output region needs), the
chain is run forwards on that region with valid (unpadded) convolutions, zero padding added only
where the region touches the map's own border, and the result is cropped. Away from GroupNorm
this is the untiled computation up to float rounding.

GroupNorm normalises over the whole map, so a tile cannot compute it alone. Its statistics are
gathered exactly first: one pass over all tiles per GroupNorm in the chain, each pass running the
chain up to that norm (statistics of earlier norms already known) and summing in float64. The
cost is recomputation (a chain with k norms costs up to about k/2 times its untiled work), which
is paid only when the budget forbids holding a full-size map.

Blocks take part through three methods (see :class:`TileableBlock`): the input region an output
region needs, the output size, and the forward pass on a tile. ``nn.Conv2d`` (stride 1, odd
kernel, "same" padding) and ``nn.GroupNorm`` are handled here; the VQGAN's blocks implement the
protocol themselves. Blocks without it (attention) always run whole, so a chain is cut before them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.files import parse_byte_size
from latentcodec.runtime import release_freed_memory

BYTES_PER_ELEMENT = 4  # float32 activations
# A tile's activations: its input, a couple of intermediates and the float64 copy of a statistics
# pass; the estimate multiplies the largest block input + output by this.
TILE_WORKING_COPIES = 3
MIN_TILE_SIDE = 16
# The fraction of MemAvailable that the default budget takes (others may need the rest).
DEFAULT_BUDGET_FRACTION = 0.5
FALLBACK_AVAILABLE_BYTES = 4 * 10**9  # when the platform does not say

MIN_MEMORY_BUDGET = 64 * 10**6
# What a process holds besides the weights and the nets' activations: the interpreter, torch's
# libraries and allocator slack, the image itself (measured: about 230 MB after import), and
# oneDNN's cached primitives with their reordered copies of conv weights.
RUNTIME_OVERHEAD_BYTES = 500 * 10**6
# The share of what is left that the planner may spend: its estimates of a block's or a tile's
# working memory are close but not exact (a tiled chain measured up to 25 % above its estimate).
PLANNED_FRACTION = 7 / 8


def parse_memory_size(text: str) -> int:
    """'2GB', '1.5G', '512MiB', '800000000' -> bytes (see :func:`latentcodec.files.parse_byte_size`),
    at least MIN_MEMORY_BUDGET."""
    try:
        size = parse_byte_size(text)
    except ValueError:
        raise ValueError(f"cannot read memory size {text!r} (examples: 2GB, 1.5G, 512MiB)") from None
    if size < MIN_MEMORY_BUDGET:
        raise ValueError(f"memory size {text!r} is below the minimum of {MIN_MEMORY_BUDGET // 10**6} MB")
    return size


def available_memory() -> int:
    """Bytes of RAM available to new allocations (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return FALLBACK_AVAILABLE_BYTES


def default_memory_budget() -> int:
    return max(MIN_MEMORY_BUDGET, int(available_memory() * DEFAULT_BUDGET_FRACTION))


def activation_budget(total_bytes: int, model: nn.Module, other_bytes: int = 0) -> int:
    """The part of a whole-process budget left for activations once the weights, ``other_bytes``
    held beside them (integer twins) and the runtime are paid for (never below an eighth of the
    budget, so that a tight budget still tiles)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    left = total_bytes - weights - other_bytes - RUNTIME_OVERHEAD_BYTES
    return max(int(left * PLANNED_FRACTION), total_bytes // 8)


def inference_slices(length: int, step: int) -> list[slice]:
    """Consecutive slices of ``step`` covering ``length``, for inference that bounds its temporaries
    by size (the caller derives ``step`` from the shapes, never from a budget); one slice while
    gradients are on, where autograd keeps every slice's activations anyway."""
    if torch.is_grad_enabled():
        return [slice(0, length)]
    return [slice(start, min(length, start + step)) for start in range(0, length, step)]


class Region(NamedTuple):
    """Rows [top, bottom) and columns [left, right) of a map."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def area(self) -> int:
        return (self.bottom - self.top) * (self.right - self.left)

    def expand(self, margin: int, size: tuple[int, int]) -> "Region":
        height, width = size
        return Region(max(0, self.top - margin), max(0, self.left - margin),
                      min(height, self.bottom + margin), min(width, self.right + margin))


@dataclass
class Tile:
    """``data`` holds the rows and columns ``region`` of a map of spatial ``size``."""

    data: torch.Tensor
    region: Region
    size: tuple[int, int]

    def crop(self, region: Region) -> torch.Tensor:
        top, left = region.top - self.region.top, region.left - self.region.left
        if top < 0 or left < 0 or region.bottom > self.region.bottom or region.right > self.region.right:
            raise AssertionError(f"tile {self.region} does not cover {region}")
        return self.data[:, :, top : top + region.bottom - region.top, left : left + region.right - region.left]


class NormAffine(NamedTuple):
    """A GroupNorm with known statistics, as the per-channel affine map it then is."""

    scale: torch.Tensor  # (N, C, 1, 1)
    shift: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def group_norm_affine(norm: nn.GroupNorm, total: torch.Tensor, total_sq: torch.Tensor, count: int,
                      dtype: torch.dtype) -> NormAffine:
    """GroupNorm's per-channel scale and shift from float64 per-channel sums of x and x^2 over the
    whole map (``count`` elements per group)."""
    n, c = total.shape
    groups = norm.num_groups
    mean = total.view(n, groups, -1).sum(-1) / count
    var = (total_sq.view(n, groups, -1).sum(-1) / count - mean.square()).clamp_min(0)
    inv_std = (var + norm.eps).rsqrt()
    scale = (norm.weight.double().view(1, groups, -1) * inv_std.unsqueeze(-1)).view(n, c)
    shift = norm.bias.double().view(1, c) - (mean.unsqueeze(-1) * scale.view(n, groups, -1)).view(n, c)
    return NormAffine(scale.to(dtype).view(n, c, 1, 1), shift.to(dtype).view(n, c, 1, 1))


class NormStatistics:
    """Float64 running sums of one map's channels, fed tile by tile."""

    def __init__(self):
        self.total: torch.Tensor | None = None
        self.total_sq: torch.Tensor | None = None
        self.elements = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.double()
        total, total_sq = x.sum(dim=(2, 3)), x.square().sum(dim=(2, 3))
        self.total = total if self.total is None else self.total + total
        self.total_sq = total_sq if self.total_sq is None else self.total_sq + total_sq
        self.elements += x.shape[2] * x.shape[3]

    @classmethod
    def of_map(cls, x: torch.Tensor, band_elements: int) -> "NormStatistics":
        """The sums of a whole map, taken in row bands of about ``band_elements`` (so that its
        float64 copy never exists in full)."""
        statistics = cls()
        band = max(1, band_elements // max(1, x.shape[1] * x.shape[3]))
        for top in range(0, x.shape[2], band):
            statistics.add(x[:, :, top : top + band])
        return statistics

    def affine(self, norm: nn.GroupNorm, dtype: torch.dtype) -> NormAffine:
        channels_per_group = self.total.shape[1] // norm.num_groups
        return group_norm_affine(norm, self.total, self.total_sq, channels_per_group * self.elements, dtype)


def conv_on_tile(conv: nn.Conv2d, tile: Tile, out_region: Region) -> torch.Tensor:
    """A stride-1 'same'-padded conv on a tile: zero padding only at the map's own border, valid
    elsewhere, cropped to ``out_region``."""
    pad = conv.padding[0]
    region, (height, width) = tile.region, tile.size
    pads = (pad if region.left == 0 else 0, pad if region.right == width else 0,
            pad if region.top == 0 else 0, pad if region.bottom == height else 0)
    x = F.pad(tile.data, pads) if any(pads) else tile.data
    out = F.conv2d(x, conv.weight, conv.bias)
    covered = Region(region.top - pads[2] + pad, region.left - pads[0] + pad,
                     region.bottom + pads[3] - pad, region.right + pads[1] - pad)
    return Tile(out, covered, tile.size).crop(out_region)


@runtime_checkable
class TileableBlock(Protocol):
    def tile_input_region(self, region: Region, in_size: tuple[int, int], inner: bool = False) -> Region:
        """The input region that the output ``region`` needs (``inner``: the region of the
        block's first inner GroupNorm input instead of its output)."""

    def tile_output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(C, H, W) out for (C, H, W) in."""

    # Blocks with an inner GroupNorm also define tile_inner_channels() -> int, the channels of
    # the activation it normalises.

    def tile_norms(self) -> list[tuple[nn.GroupNorm, bool]]:
        """The GroupNorms in order, each with True when it normalises an inner activation (not
        the block input)."""

    def tile_forward(self, tile: Tile, out_region: Region, stats: dict[nn.GroupNorm, NormAffine],
                     inner: bool = False) -> torch.Tensor:
        """The block on ``tile``, cropped to ``out_region`` (``inner``: the inner activation)."""


def is_tileable(block: nn.Module) -> bool:
    if isinstance(block, nn.Conv2d):
        return block.stride == (1, 1) and block.kernel_size[0] == block.kernel_size[1] == 2 * block.padding[0] + 1 \
            and block.padding[0] == block.padding[1] and block.groups == 1
    return isinstance(block, (nn.GroupNorm, TileableBlock))


def _input_region(block: nn.Module, region: Region, in_size: tuple[int, int], inner: bool = False) -> Region:
    if isinstance(block, nn.Conv2d):
        return region.expand(block.padding[0], in_size)
    if isinstance(block, nn.GroupNorm):
        return region
    return block.tile_input_region(region, in_size, inner)


def _output_shape(block: nn.Module, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if isinstance(block, nn.Conv2d):
        return block.out_channels, shape[1], shape[2]
    if isinstance(block, nn.GroupNorm):
        return shape
    return block.tile_output_shape(shape)


def _norms(block: nn.Module) -> list[tuple[nn.GroupNorm, bool]]:
    if isinstance(block, nn.GroupNorm):
        return [(block, False)]
    if isinstance(block, nn.Conv2d):
        return []
    return block.tile_norms()


def _forward(block: nn.Module, tile: Tile, out_region: Region, stats: dict, inner: bool = False) -> torch.Tensor:
    if isinstance(block, nn.Conv2d):
        return conv_on_tile(block, tile, out_region)
    if isinstance(block, nn.GroupNorm):
        return stats[block].apply(tile.crop(out_region))
    return block.tile_forward(tile, out_region, stats, inner)


class _Site(NamedTuple):
    """Where a chain stops: before block ``index`` (inner False) or at its inner activation."""

    index: int
    inner: bool


class TiledChain:
    """Blocks run tile by tile from a whole source map to a whole output map."""

    def __init__(self, blocks: list[nn.Module], in_shape: tuple[int, int, int]):
        self.blocks = blocks
        self.shapes = [in_shape]
        for block in blocks:
            self.shapes.append(_output_shape(block, self.shapes[-1]))

    def _site_shape(self, site: _Site) -> tuple[int, int, int]:
        if not site.inner:
            return self.shapes[site.index]
        block = self.blocks[site.index]
        return block.tile_inner_channels(), *self.shapes[site.index][1:]

    def _regions(self, site: _Site, region: Region, unclipped: bool = False) -> list[Region]:
        """Input region of every block up to the site; the last entry is ``region`` itself."""
        def size(index: int) -> tuple[int, int]:
            return (2**62, 2**62) if unclipped else self.shapes[index][1:]

        regions = [region]
        if site.inner:
            regions.insert(0, _input_region(self.blocks[site.index], region, size(site.index), True))
        for index in reversed(range(site.index)):
            regions.insert(0, _input_region(self.blocks[index], regions[0], size(index)))
        return regions

    def _regions_unclipped(self, site: _Site, region: Region) -> list[Region]:
        return self._regions(site, region, unclipped=True)

    def _run(self, source: torch.Tensor, site: _Site, region: Region, stats: dict) -> torch.Tensor:
        regions = self._regions(site, region)
        tile = Tile(Tile(source, Region(0, 0, *source.shape[-2:]), tuple(source.shape[-2:])).crop(regions[0]),
                    regions[0], tuple(source.shape[-2:]))
        for index in range(site.index):
            out = _forward(self.blocks[index], tile, regions[index + 1], stats)
            tile = Tile(out, regions[index + 1], self.shapes[index + 1][1:])
        if site.inner:
            return _forward(self.blocks[site.index], tile, region, stats, inner=True)
        return tile.data

    def _tile_bytes(self, site: _Site, side: int) -> int:
        """Estimated working memory of one tile of ``side`` x ``side`` at the site's map."""
        # A tile away from the border, whose halo is not clipped (the map may be smaller).
        margin = 4 * side
        middle = Region(margin, margin, margin + side, margin + side)
        regions = self._regions_unclipped(site, middle)
        shapes = self.shapes[: site.index + 1] + ([self._site_shape(site)] if site.inner else [])
        largest = max(regions[i].area * shapes[i][0] + regions[i + 1].area * shapes[i + 1][0]
                      for i in range(len(regions) - 1)) if len(regions) > 1 else regions[0].area * shapes[0][0]
        return largest * BYTES_PER_ELEMENT * TILE_WORKING_COPIES

    def tile_side(self, site: _Site, budget: int) -> int:
        """The largest tile side (at the site's map) whose working memory fits ``budget``."""
        height, width = self._site_shape(site)[1:]
        low, high = MIN_TILE_SIDE, max(MIN_TILE_SIDE, height, width)
        if self._tile_bytes(site, high) <= budget:
            return high
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if self._tile_bytes(site, middle) <= budget else (low, middle)
        return low

    def _tiles(self, site: _Site, budget: int):
        height, width = self._site_shape(site)[1:]
        side = self.tile_side(site, budget)
        for top in range(0, height, side):
            for left in range(0, width, side):
                yield Region(top, left, min(height, top + side), min(width, left + side))

    def __call__(self, source: torch.Tensor, budget: int) -> torch.Tensor:
        stats: dict[nn.GroupNorm, NormAffine] = {}
        for index, block in enumerate(self.blocks):
            for norm, inner in _norms(block):
                site = _Site(index, inner)
                gathered = NormStatistics()
                for region in self._tiles(site, budget):
                    gathered.add(self._run(source, site, region, stats))
                stats[norm] = gathered.affine(norm, source.dtype)
        final = _Site(len(self.blocks), False)
        channels, height, width = self.shapes[-1]
        out = torch.empty((source.shape[0], channels, height, width), dtype=source.dtype, device=source.device)
        for region in self._tiles(final, budget):
            out[:, :, region.top : region.bottom, region.left : region.right] = self._run(source, final, region, stats)
        return out


def _map_bytes(shape: tuple[int, int, int], batch: int) -> int:
    return batch * math.prod(shape) * BYTES_PER_ELEMENT


def untiled_bytes(block: nn.Module, in_shape: tuple[int, int, int], out_shape: tuple[int, int, int], batch: int) -> int:
    """What running ``block`` whole holds at its peak: ``untiled_maps`` = (input-sized maps,
    output-sized maps), by default its input plus its output and one intermediate of that size
    (a res block's inner activation); a block that pads its input holds two input-sized maps."""
    inputs, outputs = getattr(block, "untiled_maps", (1, 2))
    return inputs * _map_bytes(in_shape, batch) + outputs * _map_bytes(out_shape, batch)


def run_blocks(blocks, x: torch.Tensor, budget: int | None, hold_next: bool = True) -> torch.Tensor:
    """``for block in blocks: x = block(x)``, with runs of blocks too large for ``budget`` bytes
    of activations computed tile by tile (inference only; ``None``: all whole). ``hold_next``
    False: a run may end on a map that the next run cannot hold beside its output (the plan
    before that rule existed, which the VQGAN encoder keeps: its tiling decides its files)."""
    blocks = list(blocks)
    if budget is None or torch.is_grad_enabled():
        for block in blocks:
            x = block(x)
        return x
    batch, index = x.shape[0], 0
    while index < len(blocks):
        shape = tuple(x.shape[1:])
        out_shape = _output_shape(blocks[index], shape) if is_tileable(blocks[index]) else shape
        if not is_tileable(blocks[index]) or untiled_bytes(blocks[index], shape, out_shape, batch) <= budget:
            x = blocks[index](x)
            index += 1
            continue
        # A tiled run, ended at the first block whose output can be held whole beside the run's
        # input with room left for tiles, and from which the next block can run (whole, or tiled
        # holding its own input and output): later blocks start from there instead of recomputing
        # the run in each of their statistics passes (a run costs about as many passes as it has
        # GroupNorms, so short runs are cheap). Without the second condition a run could end on
        # a map so large that the next run, holding it and its own output, overran the budget
        # (measured: 4.95 GB under a 4 GB budget, official preset at 3840x2160).
        # With hold_next, a run also goes on through a block that could run whole when the map
        # it would end on cannot be held beside the run's input with room for tiles (measured:
        # the official preset at 2304x1728 ended a run on the generator's last 128-channel
        # full-resolution map, 2.0 GB, to run the 3-channel output conv whole; its tiles then got
        # the 1/8-of-budget floor: 5.0 GB peak under a 4 GB budget and 7x the untiled time).
        end, end_shape = index + 1, out_shape
        holdable = budget - budget // 8 - _map_bytes(shape, batch)
        while end < len(blocks) and is_tileable(blocks[end]):
            next_shape = _output_shape(blocks[end], end_shape)
            if untiled_bytes(blocks[end], end_shape, next_shape, batch) <= budget and (
                    not hold_next or _map_bytes(end_shape, batch) <= holdable):
                break
            if _map_bytes(end_shape, batch) <= holdable and (
                    not hold_next or _map_bytes(end_shape, batch) + _map_bytes(next_shape, batch) <= budget - budget // 8):
                break
            end_shape, end = next_shape, end + 1
        # Too large to run whole: from here on memory matters more than allocation speed.
        release_freed_memory()
        chain = TiledChain(blocks[index:end], shape)
        tile_budget = max(budget - _map_bytes(shape, batch) - _map_bytes(chain.shapes[-1], batch), budget // 8)
        x = chain(x, tile_budget)
        index = end
    return x

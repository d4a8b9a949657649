"""A masked-token entropy model for discrete tokens, on the exact integer path.

Where a tokenizer's indices are usually sent at a fixed log2(K) bits each, this model predicts them.
A *unit* of tokens is coded in groups, one pass per group. It is either

* a fixed set of ``num_positions`` tokens with a learned embedding per position, in ``passes``
  interleaved groups (DLF: the 32 tokens of one 256x256 window), or
* with ``max_grid_side`` > 0, a 2-D token map of any size up to that many tokens per side, with
  factorised row + column embeddings, in the groups of a named schedule of
  :mod:`latentcodec.entropy.token_schedules` (PerCoV2: its hyper-latent token map, implicit
  hierarchical by default); ``passes`` then sizes the step-embedding table.

At pass g a bidirectional transformer sees

* ``condition`` vectors the decoder already has (DLF: the decoded detail latent of the window),
* the tokens of ``context_units`` already-decoded neighbouring units (DLF: left and top windows),
* the unit's tokens of groups < g (the rest replaced by a mask embedding),

and gives a categorical over the K codes for every position; the positions of group g are coded
with it. Training (:meth:`MaskedTokenPrior.loss`) draws the pass at random, as MaskGIT does.

For coding, :class:`IntegerTokenPrior` (built by :meth:`MaskedTokenPrior.integer_twin`) runs the same
network in exact integer arithmetic and turns logits into integer frequencies with an exact
exponential table, so encoder and decoder see bit-identical PMFs on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.entropy.token_schedules import schedule_groups, schedule_passes
from latentcodec.errors import ConfigError
from latentcodec.nn import integer
from latentcodec.nn.integer import IntegerLayerNorm, IntegerLinear
from latentcodec.nn.integer_transformer import IntegerResidualAttentionBlock
from latentcodec.nn.transformer import ResidualAttentionBlock

# PMF precision: exp(-d) for a logit gap d (in fixed point) is tabulated at 2**-30, up to d = 24,
# beyond which a code gets the coder's floor count. The table uses the platform-independent exp of
# _exact_math, so it is the same integer table everywhere.
PMF_BITS = 30
PMF_RANGE = 24

Grid = tuple[int, int]  # (rows, cols) of a token map, for grid-shaped units


@dataclass(frozen=True)
class TokenPriorConfig:
    vocab_size: int = 4096
    num_positions: int = 32
    condition_channels: int = 64
    num_condition_tokens: int = 64
    context_units: int = 2
    passes: int = 4
    width: int = 128
    layers: int = 3
    heads: int = 2
    # 0: a unit of num_positions tokens. > 0: a token map of up to this many tokens per side, coded
    # under ``schedule`` (a name in token_schedules.SCHEDULES).
    max_grid_side: int = 0
    schedule: str = "interleaved"

    def __post_init__(self) -> None:
        if self.max_grid_side:
            needed = schedule_passes(self.schedule, self.max_grid_side, self.max_grid_side)
            if self.passes < needed:
                raise ConfigError(f"schedule {self.schedule!r} takes {needed} passes on a {self.max_grid_side}-token "
                                  f"side, but the prior has a step embedding for {self.passes}")

    def group_of(self) -> torch.Tensor:
        """(num_positions,) pass index of every position: interleaved, position i in pass i % passes."""
        return torch.arange(self.num_positions) % self.passes

    def groups(self, grid: Grid | None = None) -> torch.Tensor:
        """(positions,) pass of every position of a unit: the interleaved passes, or for a token map of
        ``grid`` = (rows, cols) its schedule's groups in raster order."""
        if grid is None:
            return self.group_of()
        rows, cols = grid
        if not self.max_grid_side:
            raise ConfigError("this token prior codes fixed units, not token maps")
        if not (1 <= rows <= self.max_grid_side and 1 <= cols <= self.max_grid_side):
            raise ConfigError(f"a {rows}x{cols} token map is outside this prior's {self.max_grid_side}-token table")
        return schedule_groups(self.schedule, rows, cols).flatten()

    def step_offset(self, grid: Grid | None = None) -> int:
        """Where a map's passes start in the step table: aligned at the end, so that the last (finest)
        pass of a small map uses the same step embedding as that of the largest map (for the
        hierarchical schedule, equal steps are then equal lattice strides whatever the map size)."""
        if grid is None:
            return 0
        return self.passes - schedule_passes(self.schedule, *grid)


def visible_at_pass(tokens: torch.Tensor, group: torch.Tensor, step, mask_index: int):
    """(the unit's tokens as pass ``step`` sees them, the hidden positions): every position of pass
    ``step`` or later replaced by the mask index. ``step`` is an int or one pass per unit, (N,)."""
    step = torch.as_tensor(step, device=tokens.device).reshape(-1, 1)
    hidden = group[None, :] >= step
    return torch.where(hidden, torch.full_like(tokens, mask_index), tokens), hidden


class TokenPriorInputs(NamedTuple):
    """One batch of units: what the decoder knows before the unit's tokens."""

    condition: torch.Tensor  # (N, num_condition_tokens, condition_channels) float, or fixed point for the twin
    context_tokens: torch.Tensor  # (N, context_units, num_positions) int64, -1 where the neighbour is absent


# Grid-shaped units have neither condition tokens nor neighbours: their inputs are None.


class MaskedTokenPrior(nn.Module):
    def __init__(self, config: TokenPriorConfig):
        super().__init__()
        self.config = config
        c = config.width
        if config.num_condition_tokens:
            self.condition_proj = nn.Linear(config.condition_channels, c)
            self.condition_pos = nn.Parameter(torch.randn(config.num_condition_tokens, c) * 0.02)
        # Token embeddings; row vocab_size is the mask, vocab_size + 1 an absent neighbour.
        self.token_embedding = nn.Embedding(config.vocab_size + 2, c)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        if config.max_grid_side:
            self.row_embedding = nn.Parameter(torch.randn(config.max_grid_side, c) * 0.02)
            self.column_embedding = nn.Parameter(torch.randn(config.max_grid_side, c) * 0.02)
        else:
            self.position_embedding = nn.Parameter(torch.randn(config.num_positions, c) * 0.02)
        self.unit_embedding = nn.Parameter(torch.randn(config.context_units + 1, c) * 0.02)
        self.pass_embedding = nn.Parameter(torch.randn(config.passes, c) * 0.02)
        self.blocks = nn.ModuleList(ResidualAttentionBlock(c, config.heads) for _ in range(config.layers))
        self.ln_out = nn.LayerNorm(c)
        self.head = nn.Linear(c, config.vocab_size)

    @property
    def mask_index(self) -> int:
        return self.config.vocab_size

    @property
    def absent_index(self) -> int:
        return self.config.vocab_size + 1

    def positions(self, grid: Grid | None = None) -> torch.Tensor:
        """(positions, width) position embeddings of a unit, or of a (rows, cols) token map, raster order."""
        if grid is None:
            return self.position_embedding
        rows, cols = grid
        return (self.row_embedding[:rows, None] + self.column_embedding[None, :cols]).reshape(rows * cols, -1)

    def sequence(self, inputs: TokenPriorInputs | None, visible: torch.Tensor, step: torch.Tensor,
                 grid: Grid | None = None) -> torch.Tensor:
        """Embedded (L, N, width) sequence: condition, neighbours, then the unit (masked where unseen)."""
        cfg = self.config
        position = self.positions(grid)
        parts = []
        if cfg.num_condition_tokens:
            parts.append(self.condition_proj(inputs.condition) + self.condition_pos)
        if cfg.context_units:
            context = inputs.context_tokens.clamp(min=-1)
            context = torch.where(context < 0, torch.full_like(context, self.absent_index), context)
            neighbours = self.token_embedding(context) + position + self.unit_embedding[1:, None]
            parts.append(neighbours.flatten(1, 2))
        unit = self.token_embedding(visible) + position + self.unit_embedding[0]
        parts.append(unit + self.pass_embedding[step + cfg.step_offset(grid)][:, None])
        return torch.cat(parts, dim=1).transpose(0, 1)

    def features(self, inputs: TokenPriorInputs | None, visible: torch.Tensor, step: torch.Tensor,
                 grid: Grid | None = None) -> torch.Tensor:
        """(N, positions, width) normalised outputs at the unit's positions (before the head)."""
        x = self.sequence(inputs, visible, step, grid)
        for block in self.blocks:
            x = block(x)
        return self.ln_out(x[-visible.shape[1]:].transpose(0, 1))

    def logits(self, inputs: TokenPriorInputs | None, visible: torch.Tensor, step: torch.Tensor,
               grid: Grid | None = None) -> torch.Tensor:
        """(N, positions, vocab) logits for every position of the unit."""
        return self.head(self.features(inputs, visible, step, grid))

    def loss(self, inputs: TokenPriorInputs | None, tokens: torch.Tensor, generator: torch.Generator | None = None,
             grid: Grid | None = None):
        """Mean cross-entropy in bits per token over the masked positions at a random pass per unit. The
        positions of later passes are masked too but carry no loss: the loss is the code length of the
        sampled pass's group (SYSTEMS.md 6.6.4, stage B) for grids; for fixed units, as DLF trained it,
        of every still-hidden position."""
        n = tokens.shape[0]
        group = self.config.groups(grid).to(tokens.device)
        passes = int(group.max().item()) + 1
        step = torch.randint(0, passes, (n,), generator=generator, device=tokens.device)
        visible, hidden = visible_at_pass(tokens, group, step, self.mask_index)
        if grid is None:
            # The vocabulary head (the largest matmul) only where there is a loss.
            logits = self.head(self.features(inputs, visible, step)[hidden])
            return F.cross_entropy(logits, tokens[hidden]) / math.log(2.0)
        # The sampled pass's group only, summed and scaled by the number of passes: in expectation over
        # the pass, exactly the map's code length per token.
        coded = group[None, :] == step[:, None]
        logits = self.head(self.features(inputs, visible, step, grid)[coded])
        nats = F.cross_entropy(logits, tokens[coded], reduction="sum") * passes / tokens.numel()
        return nats / math.log(2.0)

    @torch.no_grad()
    def bits(self, inputs: TokenPriorInputs | None, tokens: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        """(N,) float estimate of the bits of each unit under the pass schedule (teacher-forced)."""
        group = self.config.groups(grid).to(tokens.device)
        total = torch.zeros(tokens.shape[0], device=tokens.device)
        for g in range(int(group.max().item()) + 1):
            visible, _ = visible_at_pass(tokens, group, g, self.mask_index)
            step = torch.full((tokens.shape[0],), g, dtype=torch.long, device=tokens.device)
            log_probs = F.log_softmax(self.logits(inputs, visible, step, grid), dim=-1)
            picked = log_probs.gather(-1, tokens[..., None])[..., 0]
            total -= (picked * (group == g)).sum(-1) / math.log(2.0)
        return total

    def integer_twin(self) -> "IntegerTokenPrior":
        return IntegerTokenPrior(self)


@lru_cache(maxsize=2)
def _exp_table() -> torch.Tensor:
    """round(exp(-i / 2**12) * 2**PMF_BITS) for i = 0 .. PMF_RANGE * 2**12, as exact float64 integers."""
    from latentcodec.entropy._exact_math import exact_exp

    gaps = np.arange(PMF_RANGE * integer.ONE + 1, dtype=np.float64) / integer.ONE
    return torch.from_numpy(np.floor(exact_exp(-gaps) * 2.0**PMF_BITS + 0.5))


def integer_frequencies(logits_fixed: torch.Tensor) -> torch.Tensor:
    """Fixed-point logits (..., K) -> integer-valued float64 frequencies exp(logit - max) * 2**30."""
    gaps = (logits_fixed.amax(dim=-1, keepdim=True) - logits_fixed).clamp(max=PMF_RANGE * integer.ONE)
    table = _exp_table().to(logits_fixed.device)
    return table[gaps.to(torch.int64)]


class IntegerTokenPrior(nn.Module):
    """The exact twin: same inputs (condition in fixed point), integer frequencies out. Grid-shaped units
    pass None for the condition and the neighbours, and their ``grid``."""

    def __init__(self, prior: MaskedTokenPrior):
        super().__init__()
        config = self.config = prior.config
        if config.num_condition_tokens:
            self.condition_proj = IntegerLinear(prior.condition_proj)
            self.register_buffer("condition_pos", integer.to_fixed(prior.condition_pos.detach().cpu()))
        self.register_buffer("token_embedding", integer.to_fixed(prior.token_embedding.weight.detach().cpu()))
        if config.max_grid_side:
            self.register_buffer("row_embedding", integer.to_fixed(prior.row_embedding.detach().cpu()))
            self.register_buffer("column_embedding", integer.to_fixed(prior.column_embedding.detach().cpu()))
        else:
            self.register_buffer("position_embedding", integer.to_fixed(prior.position_embedding.detach().cpu()))
        self.register_buffer("unit_embedding", integer.to_fixed(prior.unit_embedding.detach().cpu()))
        self.register_buffer("pass_embedding", integer.to_fixed(prior.pass_embedding.detach().cpu()))
        self.blocks = nn.ModuleList(IntegerResidualAttentionBlock(b) for b in prior.blocks)
        self.ln_out = IntegerLayerNorm(prior.ln_out)
        self.head = IntegerLinear(prior.head)
        self.mask_index, self.absent_index = prior.mask_index, prior.absent_index

    def positions(self, grid: Grid | None = None) -> torch.Tensor:
        if grid is None:
            return self.position_embedding
        rows, cols = grid
        return (self.row_embedding[:rows, None] + self.column_embedding[None, :cols]).reshape(rows * cols, -1)

    def frequencies(self, condition_fixed: torch.Tensor | None, context_tokens: torch.Tensor | None,
                    visible: torch.Tensor, step: int, grid: Grid | None = None) -> torch.Tensor:
        """(N, positions, K) integer frequencies for every position at pass ``step``."""
        sat = integer.saturate
        position = self.positions(grid)
        parts = []
        if self.config.num_condition_tokens:
            parts.append(sat(self.condition_proj(condition_fixed) + self.condition_pos))
        if self.config.context_units:
            context = torch.where(context_tokens < 0, torch.full_like(context_tokens, self.absent_index),
                                  context_tokens)
            neighbours = sat(self.token_embedding[context] + position + self.unit_embedding[1:, None])
            parts.append(neighbours.flatten(1, 2))
        unit = self.token_embedding[visible] + position + self.unit_embedding[0]
        parts.append(sat(unit + self.pass_embedding[step + self.config.step_offset(grid)]))
        x = torch.cat(parts, dim=1).transpose(0, 1)
        for block in self.blocks:
            x = block(x)
        unit_out = x[-visible.shape[1]:].transpose(0, 1)
        return integer_frequencies(self.head(self.ln_out(unit_out)))

    def teacher_forced(self, condition_fixed: torch.Tensor | None, context_tokens: torch.Tensor | None,
                       tokens: torch.Tensor, grid: Grid | None = None):
        """Yield (pass, that pass's positions (P,) bool, frequencies (N, P, K)) with every earlier pass's
        true tokens revealed: exactly what the decoder sees when it decodes ``tokens``."""
        group = self.config.groups(grid).to(tokens.device)
        for g in range(int(group.max().item()) + 1):
            visible, _ = visible_at_pass(tokens, group, g, self.mask_index)
            yield g, group == g, self.frequencies(condition_fixed, context_tokens, visible, g, grid)

    @torch.no_grad()
    def exact_bits(self, condition_fixed: torch.Tensor | None, context_tokens: torch.Tensor | None,
                   tokens: torch.Tensor, grid: Grid | None = None, transmitted: int | None = None) -> float:
        """The information content of ``tokens`` (N, positions) under the exact PMFs the coder uses
        (before its own quantisation of them), teacher-forced pass by pass; with ``transmitted``, of the
        first that many passes only (hybrid mode)."""
        bits = 0.0
        for g, coded, frequencies in self.teacher_forced(condition_fixed, context_tokens, tokens, grid):
            if transmitted is not None and g >= transmitted:
                break
            picked = frequencies.gather(-1, tokens[..., None])[..., 0]
            share = (picked / frequencies.sum(-1)).clamp_min(2.0**-24)
            bits -= (torch.log2(share) * coded).sum().item()
        return bits

    def code(self, condition_fixed: torch.Tensor | None, context_tokens: torch.Tensor | None,
             tokens: torch.Tensor | None, coder, decode: bool, grid: Grid | None = None,
             transmitted: int | None = None) -> torch.Tensor:
        """Encode ``tokens`` (N, positions) into ``coder``, or decode them (``decode``), pass by pass.
        Units are coded jointly per pass, so ``context_tokens`` must not depend on this batch's tokens.
        With ``transmitted`` = k, only the first k passes are coded; both sides fill the later passes,
        one at a time, with the most probable code under the integer frequencies (the first on a tie),
        so the returned map is the decoder's on both sides. Grid units code one map: N = 1."""
        group = self.config.groups(grid)
        known_of = context_tokens if context_tokens is not None else tokens
        n = 1 if known_of is None else known_of.shape[0]
        device = self.token_embedding.device
        group = group.to(device)
        known = torch.full((n, group.numel()), self.mask_index, dtype=torch.int64, device=device)
        for g in range(int(group.max().item()) + 1):
            frequencies = self.frequencies(condition_fixed, context_tokens, known, g, grid)
            columns = (group == g).nonzero().flatten()
            rows = frequencies[:, columns].reshape(-1, frequencies.shape[-1])
            if transmitted is not None and g >= transmitted:
                values = rows.argmax(dim=-1).view(n, -1)
            elif decode:
                values = coder.decode_categorical(rows).to(torch.int64).view(n, -1)
            else:
                values = tokens[:, columns]
                coder.encode_categorical(values.reshape(-1), rows)
            known[:, columns] = values
        return known

"""A masked-token entropy model for discrete tokens, on the exact integer path.

Where a tokenizer's indices are usually sent at a fixed log2(K) bits each, this model predicts them.
A *unit* of ``num_positions`` tokens (DLF: the 32 tokens of one 256x256 window; PerCoV2: a token map)
is coded in ``passes`` groups. At pass g a bidirectional transformer sees

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

from latentcodec.nn import integer
from latentcodec.nn.integer import IntegerLayerNorm, IntegerLinear
from latentcodec.nn.integer_transformer import IntegerResidualAttentionBlock
from latentcodec.nn.transformer import ResidualAttentionBlock

# PMF precision: exp(-d) for a logit gap d (in fixed point) is tabulated at 2**-30, up to d = 24,
# beyond which a code gets the coder's floor count. The table uses the platform-independent exp of
# _exact_math, so it is the same integer table everywhere.
PMF_BITS = 30
PMF_RANGE = 24


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

    def group_of(self) -> torch.Tensor:
        """(num_positions,) pass index of every position: interleaved, position i in pass i % passes."""
        return torch.arange(self.num_positions) % self.passes


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


class MaskedTokenPrior(nn.Module):
    def __init__(self, config: TokenPriorConfig):
        super().__init__()
        self.config = config
        c = config.width
        self.condition_proj = nn.Linear(config.condition_channels, c)
        self.condition_pos = nn.Parameter(torch.randn(config.num_condition_tokens, c) * 0.02)
        # Token embeddings; row vocab_size is the mask, vocab_size + 1 an absent neighbour.
        self.token_embedding = nn.Embedding(config.vocab_size + 2, c)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
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

    def sequence(self, inputs: TokenPriorInputs, visible: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """Embedded (L, N, width) sequence: condition, neighbours, then the unit (masked where unseen)."""
        cfg = self.config
        condition = self.condition_proj(inputs.condition) + self.condition_pos
        context = inputs.context_tokens.clamp(min=-1)
        context = torch.where(context < 0, torch.full_like(context, self.absent_index), context)
        neighbours = self.token_embedding(context) + self.position_embedding + self.unit_embedding[1:, None]
        neighbours = neighbours.flatten(1, 2)
        unit = self.token_embedding(visible) + self.position_embedding + self.unit_embedding[0]
        unit = unit + self.pass_embedding[step][:, None]
        return torch.cat([condition, neighbours, unit], dim=1).transpose(0, 1)

    def features(self, inputs: TokenPriorInputs, visible: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """(N, num_positions, width) normalised outputs at the unit's positions (before the head)."""
        x = self.sequence(inputs, visible, step)
        for block in self.blocks:
            x = block(x)
        return self.ln_out(x[-self.config.num_positions:].transpose(0, 1))

    def logits(self, inputs: TokenPriorInputs, visible: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """(N, num_positions, vocab) logits for every position of the unit."""
        return self.head(self.features(inputs, visible, step))

    def loss(self, inputs: TokenPriorInputs, tokens: torch.Tensor, generator: torch.Generator | None = None):
        """Mean cross-entropy in bits per token over the masked positions at a random pass per unit."""
        n = tokens.shape[0]
        step = torch.randint(0, self.config.passes, (n,), generator=generator, device=tokens.device)
        visible, hidden = visible_at_pass(tokens, self.config.group_of().to(tokens.device), step, self.mask_index)
        # The vocabulary head (the largest matmul) only where there is a loss.
        logits = self.head(self.features(inputs, visible, step)[hidden])
        nats = F.cross_entropy(logits, tokens[hidden])
        return nats / math.log(2.0)

    @torch.no_grad()
    def bits(self, inputs: TokenPriorInputs, tokens: torch.Tensor) -> torch.Tensor:
        """(N,) float estimate of the bits of each unit under the pass schedule (teacher-forced)."""
        group = self.config.group_of().to(tokens.device)
        total = torch.zeros(tokens.shape[0], device=tokens.device)
        for g in range(self.config.passes):
            visible, _ = visible_at_pass(tokens, group, g, self.mask_index)
            step = torch.full((tokens.shape[0],), g, dtype=torch.long, device=tokens.device)
            log_probs = F.log_softmax(self.logits(inputs, visible, step), dim=-1)
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
    """The exact twin: same inputs (condition in fixed point), integer frequencies out."""

    def __init__(self, prior: MaskedTokenPrior):
        super().__init__()
        self.config = prior.config
        self.condition_proj = IntegerLinear(prior.condition_proj)
        self.register_buffer("condition_pos", integer.to_fixed(prior.condition_pos.detach().cpu()))
        self.register_buffer("token_embedding", integer.to_fixed(prior.token_embedding.weight.detach().cpu()))
        self.register_buffer("position_embedding", integer.to_fixed(prior.position_embedding.detach().cpu()))
        self.register_buffer("unit_embedding", integer.to_fixed(prior.unit_embedding.detach().cpu()))
        self.register_buffer("pass_embedding", integer.to_fixed(prior.pass_embedding.detach().cpu()))
        self.blocks = nn.ModuleList(IntegerResidualAttentionBlock(b) for b in prior.blocks)
        self.ln_out = IntegerLayerNorm(prior.ln_out)
        self.head = IntegerLinear(prior.head)
        self.mask_index, self.absent_index = prior.mask_index, prior.absent_index

    def frequencies(self, condition_fixed: torch.Tensor, context_tokens: torch.Tensor, visible: torch.Tensor,
                    step: int) -> torch.Tensor:
        """(N, num_positions, K) integer frequencies for every position at pass ``step``."""
        sat = integer.saturate
        condition = sat(self.condition_proj(condition_fixed) + self.condition_pos)
        context = torch.where(context_tokens < 0, torch.full_like(context_tokens, self.absent_index), context_tokens)
        neighbours = sat(self.token_embedding[context] + self.position_embedding + self.unit_embedding[1:, None])
        unit = self.token_embedding[visible] + self.position_embedding + self.unit_embedding[0]
        unit = sat(unit + self.pass_embedding[step])
        x = torch.cat([condition, neighbours.flatten(1, 2), unit], dim=1).transpose(0, 1)
        for block in self.blocks:
            x = block(x)
        unit_out = x[-self.config.num_positions:].transpose(0, 1)
        return integer_frequencies(self.head(self.ln_out(unit_out)))

    @torch.no_grad()
    def exact_bits(self, condition_fixed: torch.Tensor, context_tokens: torch.Tensor, tokens: torch.Tensor) -> float:
        """The information content of ``tokens`` (N, num_positions) under the exact PMFs the coder uses
        (before its own quantisation of them), teacher-forced pass by pass."""
        group = self.config.group_of().to(tokens.device)
        bits = 0.0
        for g in range(self.config.passes):
            visible, _ = visible_at_pass(tokens, group, g, self.mask_index)
            frequencies = self.frequencies(condition_fixed, context_tokens, visible, g)
            picked = frequencies.gather(-1, tokens[..., None])[..., 0]
            share = (picked / frequencies.sum(-1)).clamp_min(2.0**-24)
            bits -= (torch.log2(share) * (group == g)).sum().item()
        return bits

    def code(self, condition_fixed: torch.Tensor, context_tokens: torch.Tensor, tokens: torch.Tensor | None,
             coder, decode: bool) -> torch.Tensor:
        """Encode ``tokens`` (N, num_positions) into ``coder``, or decode them (``decode``), pass by pass.
        Units are coded jointly per pass, so ``context_tokens`` must not depend on this batch's tokens."""
        n, positions = context_tokens.shape[0], self.config.num_positions
        group = self.config.group_of().to(context_tokens.device)
        known = torch.full((n, positions), self.mask_index, dtype=torch.int64, device=context_tokens.device)
        for g in range(self.config.passes):
            frequencies = self.frequencies(condition_fixed, context_tokens, known, g)
            columns = (group == g).nonzero().flatten()
            rows = frequencies[:, columns].reshape(-1, frequencies.shape[-1])
            if decode:
                values = coder.decode_categorical(rows).to(torch.int64).view(n, -1)
            else:
                values = tokens[:, columns]
                coder.encode_categorical(values.reshape(-1), rows)
            known[:, columns] = values
        return known

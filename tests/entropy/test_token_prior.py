"""The masked-token prior: training signal, exact integer twin, lossless coding."""

from __future__ import annotations

import math

import torch

from latentcodec.entropy.coder import EntropyDecoder, EntropyEncoder
from latentcodec.entropy.token_prior import (
    MaskedTokenPrior,
    TokenPriorConfig,
    TokenPriorInputs,
    integer_frequencies,
)
from latentcodec.nn import integer

CONFIG = TokenPriorConfig(vocab_size=64, num_positions=8, condition_channels=8, num_condition_tokens=4,
                          context_units=2, passes=4, width=32, layers=2, heads=2)


def batch(n: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    condition = torch.randn(n, 4, 8, generator=generator)
    context = torch.randint(-1, 64, (n, 2, 8), generator=generator)
    # Tokens are a function of the condition: a prior that learns it codes far below 6 bits.
    tokens = (condition[:, :, :2].flatten(1) > 0).long() * 7 + torch.arange(8) % 3
    return TokenPriorInputs(condition, context), tokens


def test_every_position_is_coded_in_exactly_one_pass():
    groups = CONFIG.group_of()
    assert sorted(groups.tolist()) == sorted([g for g in range(4) for _ in range(2)])


def test_training_lowers_the_bits_well_below_fixed_length():
    torch.manual_seed(0)
    prior = MaskedTokenPrior(CONFIG)
    inputs, tokens = batch(64)
    before = prior.bits(inputs, tokens).mean().item()
    optimiser = torch.optim.Adam(prior.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(150):
        optimiser.zero_grad()
        prior.loss(inputs, tokens, generator).backward()
        optimiser.step()
    after = prior.bits(inputs, tokens).mean().item()
    assert before > 8 * 5.5  # about log2(64) = 6 bits per token untrained
    assert after < 0.5 * before


def test_integer_frequencies_follow_the_float_softmax():
    torch.manual_seed(2)
    prior = MaskedTokenPrior(CONFIG).eval()
    inputs, tokens = batch(6, seed=3)
    twin = prior.integer_twin()
    visible = torch.full_like(tokens, prior.mask_index)
    step = torch.zeros(6, dtype=torch.long)
    with torch.no_grad():
        float_probs = torch.softmax(prior.logits(inputs, visible, step), dim=-1)
    frequencies = twin.frequencies(integer.to_fixed(inputs.condition), inputs.context_tokens, visible, 0)
    probs = frequencies / frequencies.sum(-1, keepdim=True)
    assert (probs - float_probs.double()).abs().max() < 2e-2
    assert frequencies.dtype == torch.float64 and torch.equal(frequencies, frequencies.floor())


def test_exp_table_frequencies_are_exact_integers_of_the_gap():
    logits = torch.tensor([[0.0, -1.0, -100.0]], dtype=torch.float64) * integer.ONE
    frequencies = integer_frequencies(logits)
    assert frequencies[0, 0] == 2.0**30
    assert frequencies[0, 1].item() == round(2.0**30 * math.exp(-1.0))
    assert frequencies[0, 2] >= 0  # far below the table: the coder's floor count takes over


def test_tokens_round_trip_through_the_coder_and_cost_what_the_prior_says():
    torch.manual_seed(4)
    prior = MaskedTokenPrior(CONFIG).eval()
    inputs, tokens = batch(12, seed=5)
    twin = prior.integer_twin()
    condition = integer.to_fixed(inputs.condition)
    encoder = EntropyEncoder()
    twin.code(condition, inputs.context_tokens, tokens, encoder, decode=False)
    data = encoder.finish()
    decoder = EntropyDecoder(data)
    decoded = twin.code(condition, inputs.context_tokens, None, decoder, decode=True)
    decoder.finish()
    assert torch.equal(decoded, tokens)
    estimate = prior.bits(inputs, tokens).sum().item()
    assert abs(len(data) * 8 - estimate) < 0.05 * estimate + 16

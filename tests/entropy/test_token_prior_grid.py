"""The masked-token prior over 2-D token maps (PerCoV2's hyper-latent tokens): any map size, every
schedule, exact coding, hybrid mode, and PMFs that are the same under every arithmetic."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from functools import lru_cache

import pytest
import torch

from latentcodec.entropy.coder import EntropyDecoder, EntropyEncoder
from latentcodec.entropy.token_prior import MaskedTokenPrior, TokenPriorConfig
from latentcodec.entropy.token_schedules import SCHEDULES, schedule_passes
from latentcodec.errors import ConfigError
from latentcodec.evaluation.portability import ARITHMETIC_CONFIGURATIONS


def grid_config(schedule: str = "hierarchical", side: int = 8, **changes) -> TokenPriorConfig:
    shape = dict(vocab_size=16, num_positions=0, condition_channels=0, num_condition_tokens=0, context_units=0,
                 max_grid_side=side, schedule=schedule, passes=schedule_passes(schedule, side, side), width=16,
                 layers=1, heads=2)
    return TokenPriorConfig(**{**shape, **changes})


def smooth_maps(n: int, rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """(n, rows * cols) maps of 16 codes that vary slowly across the map: neighbours predict each other."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, rows // 4 + 1, cols // 4 + 1, generator=generator)
    fine = torch.nn.functional.interpolate(coarse, size=(rows, cols), mode="bilinear", align_corners=False)
    return (fine * 15.99).long().clamp(0, 15).flatten(1)


@lru_cache(maxsize=1)  # trained once for the module's tests
def code_map(twin, tokens: torch.Tensor | None, grid, transmitted: int | None = None) -> tuple[bytes, torch.Tensor]:
    """Encode ``tokens`` (1, positions) -> (the stream, the encoder's map)."""
    encoder = EntropyEncoder()
    known = twin.code(None, None, tokens, encoder, decode=False, grid=grid, transmitted=transmitted)
    return encoder.finish(), known


def decode_map(twin, data: bytes, grid, transmitted: int | None = None) -> torch.Tensor:
    decoder = EntropyDecoder(data)
    decoded = twin.code(None, None, None, decoder, decode=True, grid=grid, transmitted=transmitted)
    decoder.finish()
    return decoded


def trained_prior(schedule: str, steps: int = 200) -> MaskedTokenPrior:
    torch.manual_seed(0)
    prior = MaskedTokenPrior(grid_config(schedule))
    maps = smooth_maps(128, 8, 8)
    optimiser = torch.optim.Adam(prior.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        optimiser.zero_grad()
        prior.loss(None, maps, generator, grid=(8, 8)).backward()
        optimiser.step()
    return prior.eval()


def test_the_config_checks_its_step_table_and_map_size():
    with pytest.raises(ConfigError, match="takes 4 passes"):
        grid_config(passes=3)
    config = grid_config()
    with pytest.raises(ConfigError, match="outside this prior's 8-token table"):
        config.groups((9, 2))
    assert torch.bincount(config.groups((8, 8))).tolist() == [1, 3, 12, 48]
    # A smaller map's passes take the last step embeddings: its finest pass shares the 8x8 map's.
    assert config.step_offset((8, 8)) == 0 and config.step_offset((3, 3)) == 1 and config.step_offset((1, 1)) == 3


def test_training_learns_the_maps_below_fixed_length():
    prior = trained_prior("hierarchical")
    test_maps = smooth_maps(16, 8, 8, seed=5)
    bits = prior.bits(None, test_maps, grid=(8, 8)).mean().item() / 64
    assert bits < 0.6 * 4  # log2(16) = 4 bits per token at fixed length
    # Any smaller map works with the same weights.
    assert prior.bits(None, smooth_maps(2, 5, 7), grid=(5, 7)).shape == (2,)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_every_schedule_round_trips_and_costs_what_the_exact_pmfs_say(schedule):
    torch.manual_seed(3)
    prior = MaskedTokenPrior(grid_config(schedule)).eval()
    twin = prior.integer_twin()
    tokens = smooth_maps(1, 6, 8, seed=2)
    data, known = code_map(twin, tokens, (6, 8))
    assert torch.equal(known, tokens) and torch.equal(decode_map(twin, data, (6, 8)), tokens)
    exact = twin.exact_bits(None, None, tokens, grid=(6, 8))
    assert 8 * len(data) <= 1.01 * exact + 16


def test_a_trained_prior_codes_within_one_percent_of_its_estimate():
    prior = trained_prior("hierarchical")
    twin = prior.integer_twin()
    tokens = smooth_maps(1, 8, 8, seed=7)
    data, _ = code_map(twin, tokens, (8, 8))
    exact = twin.exact_bits(None, None, tokens, grid=(8, 8))
    float_estimate = prior.bits(None, tokens, grid=(8, 8)).item()
    assert exact < 0.8 * 64 * 4
    assert 8 * len(data) <= 1.01 * exact + 16
    assert abs(exact - float_estimate) < 0.05 * float_estimate + 4  # the twin follows the float model


def test_hybrid_mode_sends_the_first_passes_and_both_sides_fill_the_same_map():
    prior = trained_prior("hierarchical")
    twin = prior.integer_twin()
    tokens = smooth_maps(1, 8, 8, seed=9)
    full_bytes, _ = code_map(twin, tokens, (8, 8))
    group = prior.config.groups((8, 8))
    for k in (1, 2, 3):
        data, filled = code_map(twin, tokens, (8, 8), transmitted=k)
        sent = group < k
        assert torch.equal(filled[0, sent], tokens[0, sent])
        assert torch.equal(decode_map(twin, data, (8, 8), transmitted=k), filled)
        assert len(data) < len(full_bytes)
        assert 8 * len(data) <= 1.01 * twin.exact_bits(None, None, tokens, (8, 8), transmitted=k) + 16
    # The fill is the argmax of each pass's frequencies given the passes before it.
    _, filled = code_map(twin, tokens, (8, 8), transmitted=3)
    visible = torch.where(group[None] < 3, filled, torch.full_like(filled, prior.mask_index))
    argmax = twin.frequencies(None, None, visible, 3, (8, 8)).argmax(-1)
    assert torch.equal(filled[0, group == 3], argmax[0, group == 3])


PMF_SCRIPT = """
import hashlib, sys, torch
from latentcodec.entropy.coder import EntropyEncoder
from latentcodec.entropy.token_prior import MaskedTokenPrior, TokenPriorConfig
from latentcodec.config import config_from_dict
import json
config = config_from_dict(TokenPriorConfig, json.loads(sys.argv[1]))
prior = MaskedTokenPrior(config).eval()
prior.load_state_dict(torch.load(sys.argv[2]))
tokens = torch.load(sys.argv[3])
twin = prior.integer_twin()
digest = hashlib.sha256()
for _, _, frequencies in twin.teacher_forced(None, None, tokens, (8, 8)):
    digest.update(frequencies.numpy().tobytes())
encoder = EntropyEncoder()
twin.code(None, None, tokens, encoder, decode=False, grid=(8, 8))
digest.update(encoder.finish())
print(digest.hexdigest())
"""


@pytest.mark.slow
def test_pmfs_and_coded_bytes_are_the_same_under_every_arithmetic(tmp_path):
    """Fresh processes under the emulated machines of evaluation.portability (one thread, oneDNN limited
    to AVX2 or SSE4.1, ATen's scalar kernels) give the same frequencies and bytes, bit for bit."""
    from latentcodec.config import config_to_dict

    prior = trained_prior("hierarchical")
    torch.save(prior.state_dict(), tmp_path / "prior.pt")
    torch.save(smooth_maps(1, 8, 8, seed=11), tmp_path / "tokens.pt")
    arguments = [json.dumps(config_to_dict(prior.config)), str(tmp_path / "prior.pt"), str(tmp_path / "tokens.pt")]
    digests = {}
    for name, (extra_env, _) in ARITHMETIC_CONFIGURATIONS.items():
        if name == "nchw":
            continue  # a convolution layout: the prior has no convolutions
        done = subprocess.run([sys.executable, "-c", PMF_SCRIPT, *arguments], env={**os.environ, **extra_env},
                              capture_output=True, text=True, timeout=600, check=True)
        digests[name] = done.stdout.strip()
    assert len(set(digests.values())) == 1, digests
    assert len(next(iter(digests.values()))) == len(hashlib.sha256().hexdigest())

"""PerCoV2 token sections under the masked-token prior (tiny preset): round trip, the coded length
against the exact estimate, hybrid mode, `latentcodec info`, persistence, and the same decoded tokens
and PMFs under every arithmetic."""

from __future__ import annotations

import json

import pytest
import torch

from latentcodec.bitstream.container import read_image_file
from latentcodec.cli import main
from latentcodec.entropy.token_prior import MaskedTokenPrior
from latentcodec.errors import ConfigError
from latentcodec.evaluation.portability import ARITHMETIC_CONFIGURATIONS, arithmetic_matrix, decode_fingerprint
from latentcodec.models.percov2 import PerCoV2, PerCoV2Config
from latentcodec.models.percov2_streams import TokenDescriptor

# Every byte that is not the token stream: 5 header bytes, the caption length, the CRC, the descriptor.
OVERHEAD_BYTES = 8


@pytest.fixture(scope="module")
def tiny() -> PerCoV2:
    torch.manual_seed(0)
    model = PerCoV2(PerCoV2Config.tiny()).eval()
    with torch.no_grad():
        # A prior with sharp opinions: random logits spread wide, so the PMFs are far from uniform.
        model.token_prior.head.weight.normal_(0.0, 2.0)
    return model


def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, height // 8 + 1, width // 8 + 1, generator=generator)
    return torch.nn.functional.interpolate(base, size=(height, width), mode="bilinear", align_corners=False)


def test_the_tiny_preset_codes_under_the_implicit_hierarchical_prior(tiny):
    config = tiny.config.token_prior
    assert config.schedule == "hierarchical" and config.max_grid_side == 16 and config.vocab_size == 256
    result = tiny.encode(image(64, 96), fixed_length=False)
    section = read_image_file(result.data, tiny.layout, expected_model_id=4).sections[1]
    assert TokenDescriptor.from_byte(section[0]) == TokenDescriptor(32, 256, True, 0)
    streams = tiny.decode_streams(result.data)
    assert torch.equal(streams.token_indices, result.token_indices)
    assert result.token_indices.shape == (4, 6)
    # The coded stream is within 1 % of the exact information content, plus the coder's flush.
    assert 8 * (len(result.data) - OVERHEAD_BYTES) <= 1.01 * result.estimated_token_bits + 16
    assert result.estimated_bits == result.estimated_token_bits + 8
    # The rate estimate is the float prior's, capped at the fixed length that compress falls back to; this
    # prior's random opinions cost more than that.
    float_bits = tiny.token_prior.bits(None, result.token_indices.flatten()[None], (4, 6)).item()
    assert float_bits > 4 * 6 * 8 and result.estimated_token_bits > 4 * 6 * 8
    assert tiny.estimate_bits(image(64, 96)) == 4 * 6 * 8


def test_fixed_length_coding_stays_available_and_both_decode(tiny):
    x = image(64, 96, seed=1)
    prior_file, fixed_file = tiny.encode(x, fixed_length=False).data, tiny.encode(x, fixed_length=True).data
    assert prior_file != fixed_file
    # By default the shorter of the two: this prior's random opinions cost more than fixed length.
    assert len(prior_file) > len(fixed_file) and tiny.compress(x) == fixed_file
    assert torch.equal(tiny.decode_streams(prior_file).token_indices, tiny.decode_streams(fixed_file).token_indices)
    without = PerCoV2(PerCoV2Config.tiny()).attach_token_prior(None)
    with pytest.raises(Exception, match="coded under a masked-token prior, and this model has none"):
        without.decode_streams(prior_file)


def test_hybrid_mode_sends_k_passes_and_the_decoder_fills_the_rest(tiny):
    x = image(64, 96, seed=2)
    full = tiny.encode(x, fixed_length=False)
    group = tiny.config.token_prior.groups((4, 6)).view(4, 6)
    passes = int(group.max()) + 1
    sizes = []
    for k in range(1, passes):
        result = tiny.encode(x, transmitted_passes=k)
        section = read_image_file(result.data, tiny.layout).sections[1]
        assert TokenDescriptor.from_byte(section[0]).transmitted == k
        decoded = tiny.decode_streams(result.data).token_indices
        assert torch.equal(decoded, result.token_indices)
        assert torch.equal(decoded[group < k], full.token_indices[group < k])
        assert 8 * (len(result.data) - OVERHEAD_BYTES) <= 1.01 * result.estimated_token_bits + 16
        sizes.append(len(result.data))
        assert torch.equal(tiny.decompress(result.data), tiny.decompress(result.data))
    assert sizes == sorted(sizes) and sizes[-1] < len(full.data)
    # k at or beyond the schedule's passes is the full file, spelled one way.
    assert tiny.encode(x, transmitted_passes=passes, fixed_length=False).data == full.data
    with pytest.raises(ConfigError, match="hybrid mode"):
        tiny.encode(x, transmitted_passes=0)
    with pytest.raises(ConfigError, match="hybrid mode"):
        tiny.encode(x, transmitted_passes=2, fixed_length=True)


def test_info_reports_the_token_section_and_its_fixed_length_cost(tiny, tmp_path, capsys):
    for name, data in (("prior", tiny.encode(image(64, 96), fixed_length=False).data),
                       ("hybrid", tiny.compress(image(64, 96), transmitted_passes=2))):
        path = tmp_path / f"{name}.lci"
        path.write_bytes(data)
        capsys.readouterr()
        assert main(["info", str(path), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        (section,) = info["token_sections"]
        assert section["bytes"] == info["section_bytes"][1] == len(data) - 7
        assert (section["rows"], section["cols"], section["codebook_size"]) == (4, 6, 256)
        assert section["fixed_length_bits"] == 4 * 6 * 8
        assert section["coding"] == "prior" and section["transmitted_passes"] == (2 if name == "hybrid" else 0)


def test_save_load_keeps_the_prior_and_wrong_priors_are_refused(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "m")
    loaded = PerCoV2.from_pretrained(tmp_path / "m")
    assert loaded.config.token_prior == tiny.config.token_prior
    data = tiny.compress(image(48, 64))
    assert loaded.compress(image(48, 64)) == data
    assert torch.equal(loaded.decode_streams(data).token_indices, tiny.decode_streams(data).token_indices)
    config = tiny.config.default_token_prior(width=16, layers=1, heads=2)
    with pytest.raises(ConfigError, match="codes"):
        PerCoV2(PerCoV2Config.tiny()).attach_token_prior(MaskedTokenPrior(config.__class__(
            **{**config.__dict__, "vocab_size": 1024})))
    with pytest.raises(ConfigError, match="covers 8 tokens per side"):
        PerCoV2(PerCoV2Config.tiny()).attach_token_prior(MaskedTokenPrior(config.__class__(
            **{**config.__dict__, "max_grid_side": 8, "passes": 4})))


@pytest.mark.slow
def test_files_decode_to_the_same_tokens_and_pmfs_under_every_arithmetic(tiny, tmp_path):
    """Fresh processes emulating other machines (evaluation.portability) decode every file to the same
    token map and the same integer frequencies in every pass."""
    tiny.save_pretrained(tmp_path / "weights")
    paths, references = [], []
    for name, k in (("full", None), ("hybrid", 2)):
        data = tiny.compress(image(64, 96, seed=3), transmitted_passes=k)
        path = tmp_path / f"{name}.lci"
        path.write_bytes(data)
        paths.append(path)
        references.append(decode_fingerprint(data, tiny))
    assert len(references[0].latent_hashes) == 1 + 4  # the tokens and the four passes' frequencies
    configurations = {name: value for name, value in ARITHMETIC_CONFIGURATIONS.items() if name != "nchw"}
    entries = arithmetic_matrix(paths, references, ["--model", "percov2", "--weights", str(tmp_path / "weights")],
                                configurations)
    assert len(entries) == 2 * len(configurations)
    # The tokens and PMFs are exact; the picture is the float MMDiT's and is not compared here.
    assert all(entry.ok and entry.latents_equal for entry in entries), entries

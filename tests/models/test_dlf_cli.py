"""DLF through the public API and the command line (tiny preset weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import latentcodec
from latentcodec.cli import main
from latentcodec.models.dlf import DLF, DLFConfig


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = DLF(DLFConfig.tiny()).attach_token_prior(None)  # fixed-length tokens, as the reference
    with torch.no_grad():
        model.hybrid_codec.quantize_feat.factorized_prior_vec.normal_(0.0, 3.0)
    path = tmp_path_factory.mktemp("dlf") / "weights"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)).resize((150, 100), Image.BILINEAR)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    image.save(path)
    return path


def test_api_load_compresses_at_every_quality(weights, photo):
    image = Image.open(photo).convert("RGB")
    codec = latentcodec.load("dlf", quality=1, weights=str(weights))
    assert codec.num_qualities == 2
    data = codec.compress(image)
    assert codec.decompress(data).size == image.size
    assert codec.estimate_bits(image) > 0


def test_cli_compress_info_streams_and_decompress(weights, photo, tmp_path, capsys):
    lci, png = tmp_path / "photo.lci", tmp_path / "photo.png"
    assert main(["compress", str(photo), "--model", "dlf", "--weights", str(weights), "-o", str(lci), "--quiet"]) == 0
    assert main(["compress", str(photo), "--model", "dlf", "--weights", str(weights), "-o", str(lci), "--quiet"]) == 1
    capsys.readouterr()
    assert main(["info", str(lci), "--json", "--streams", "--weights", str(weights)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_name"] == "dlf" and info["header_bytes"] == 6
    streams = dict(info["streams"])
    assert set(streams) == {"detail", "semantic"}
    # Semantic tokens: 2x2 windows of 8 tokens at log2(64) = 6 bits, and the section holds both streams.
    assert streams["semantic"] == 4 * 8 * 6
    assert abs(sum(streams.values()) - 8 * info["section_bytes"][0]) < 16 + 0.01 * 8 * info["section_bytes"][0]
    assert main(["decompress", str(lci), "--weights", str(weights), "-o", str(png), "--quiet"]) == 0
    assert Image.open(png).size == (150, 100)


def test_cli_refuses_a_token_prior_for_glc(photo, tmp_path, capsys):
    from latentcodec.entropy.token_prior import MaskedTokenPrior, TokenPriorConfig
    from latentcodec.training.token_prior_fit import save_token_prior

    save_token_prior(MaskedTokenPrior(TokenPriorConfig(width=16, layers=1)), tmp_path / "prior")
    code = main(["compress", str(photo), "--token-prior", str(tmp_path / "prior"), "-o", str(tmp_path / "x.lci"),
                 "--quiet"])
    assert code == 1
    assert "applies to dlf only" in capsys.readouterr().err
    assert not (tmp_path / "x.lci").exists()


def test_eval_runs_dlf_beside_a_baseline(weights, photo, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--model", "dlf", "--weights", str(weights), "--data", str(photo), "--out", str(out),
                 "--qualities", "0,1", "--baselines", "jpeg", "--metrics", "psnr", "--workers", "1",
                 "--no-progress"]) == 0
    results = list(out.glob("*.json"))
    assert results
    text = " ".join(p.read_text() for p in results)
    assert "dlf" in text and "jpeg" in text.lower()

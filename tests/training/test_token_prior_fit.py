"""Fitting DLF's semantic-token prior to a frozen model, end to end on the tiny preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import latentcodec
from latentcodec.cli import main
from latentcodec.errors import WeightsError
from latentcodec.models.dlf import DLF, DLFConfig
from latentcodec.training.token_prior_fit import (
    TokenPriorFitConfig,
    extract,
    load_token_prior,
    save_token_prior,
)


@pytest.fixture(scope="module")
def frozen_dlf(tmp_path_factory):
    torch.manual_seed(0)
    model = DLF(DLFConfig.tiny()).eval()
    model.attach_token_prior(None)  # as the official model: fixed-length tokens
    path = tmp_path_factory.mktemp("dlf") / "weights"
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(3):
        base = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(base).resize((160, 150), Image.BILINEAR).save(folder / f"{i}.png")
    return folder


def test_extraction_resumes_where_it_stopped(frozen_dlf, images, tmp_path):
    model, _ = frozen_dlf
    first = extract(model, [images], tmp_path, TokenPriorFitConfig(crops=4, chunk_crops=2), progress=False)
    assert len(first) == 4 * 4  # 2x2 windows per crop
    resumed = extract(model, [images], tmp_path, TokenPriorFitConfig(crops=6, chunk_crops=2), progress=False)
    fresh = extract(model, [images], tmp_path / "fresh", TokenPriorFitConfig(crops=6, chunk_crops=2), progress=False)
    assert torch.equal(resumed.tokens, fresh.tokens) and torch.equal(resumed.condition, fresh.condition)
    # Neighbours: the top-left window of every crop has none, the bottom-right one has both.
    assert (resumed.context.view(6, 4, 2, -1)[:, 0] == -1).all()
    assert (resumed.context.view(6, 4, 2, -1)[:, 3] >= 0).all()


def test_fit_token_prior_command_writes_a_prior_that_codes_files(frozen_dlf, images, tmp_path):
    model, weights = frozen_dlf
    out = tmp_path / "prior"
    argv = ["fit-token-prior", str(out), "--weights", str(weights), "--images", str(images), "--run-dir",
            str(tmp_path / "run"), "--crops", "6", "--steps", "40", "--width", "16", "--layers", "1"]
    assert main(argv) == 0
    assert main(argv) == 1  # exists: no overwrite without --force
    prior = load_token_prior(out)
    assert prior.config.vocab_size == model.config.network.titok.codebook_size
    codec = latentcodec.load("dlf", weights=str(weights), token_prior=str(out))
    image = Image.open(next(images.iterdir())).convert("RGB")
    data = codec.compress(image)
    assert codec.decompress(data).size == image.size
    plain = latentcodec.load("dlf", weights=str(weights))
    assert np.array_equal(np.asarray(codec.decompress(data)), np.asarray(plain.decompress(plain.compress(image))))
    # --save-model: the same prior inside a model folder codes identical files with no --token-prior.
    assert main([*argv, "--force", "--save-model", str(tmp_path / "with_prior")]) == 0
    inside = latentcodec.load("dlf", weights=str(tmp_path / "with_prior"))
    refit = latentcodec.load("dlf", weights=str(weights), token_prior=str(out))
    assert inside.compress(image) == refit.compress(image)
    # --dtype float16: half the file; the weights load back into float32 as stored, and the model codes.
    assert main([*argv, "--force", "--save-model", str(tmp_path / "half"), "--dtype", "float16"]) == 0
    full_bytes = (tmp_path / "with_prior" / "model.safetensors").stat().st_size
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.6 * full_bytes
    half = latentcodec.load("dlf", weights=str(tmp_path / "half"))
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    some = next(iter(inside.model.state_dict()))
    assert torch.equal(half.model.state_dict()[some], inside.model.state_dict()[some].half().float())
    assert half.decompress(half.compress(image)).size == image.size
    # --max-shard-size: the same model in shards of at most 100 kB, loaded through the public API.
    assert main([*argv, "--force", "--save-model", str(tmp_path / "shards"), "--max-shard-size", "100kB"]) == 0
    shards = sorted((tmp_path / "shards").glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and not (tmp_path / "shards" / "model.safetensors").exists()
    sharded = latentcodec.load("dlf", weights=str(tmp_path / "shards"))
    assert sharded.compress(image) == inside.compress(image)


def test_a_prior_of_another_shape_is_refused(frozen_dlf, tmp_path):
    model, weights = frozen_dlf
    from latentcodec.entropy.token_prior import MaskedTokenPrior

    wrong = MaskedTokenPrior(model.config.default_token_prior(vocab_size=32, width=16, layers=1))
    save_token_prior(wrong, tmp_path / "wrong")
    with pytest.raises(WeightsError, match="vocab_size"):
        latentcodec.load("dlf", weights=str(weights), token_prior=str(tmp_path / "wrong"))


def test_a_run_folder_resumes_only_its_own_fit(frozen_dlf, images, tmp_path, capsys):
    model, weights = frozen_dlf
    run = tmp_path / "run"
    argv = ["fit-token-prior", "--weights", str(weights), "--images", str(images), "--run-dir", str(run),
            "--crops", "2", "--steps", "4", "--width", "16", "--layers", "1", "--force"]
    assert main([*argv, str(tmp_path / "a")]) == 0
    # Other weights in the same folder: their tokens would be stale, so the folder is refused.
    torch.manual_seed(1)
    retrained = tmp_path / "retrained"
    DLF(DLFConfig.tiny()).save_pretrained(retrained)
    other = [*argv, str(tmp_path / "b")]
    other[other.index(str(weights))] = str(retrained)
    capsys.readouterr()
    assert main(other) == 1
    assert "weights" in capsys.readouterr().err
    # Another prior shape: its checkpoint would not load.
    assert main([*argv, str(tmp_path / "c"), "--width", "32"]) == 1
    assert "width" in capsys.readouterr().err
    assert main([*other, "--restart"]) == 0
    # A folder with a cache but no record (written before records existed) is refused too.
    (run / "fit.json").unlink()
    assert main([*other, "--restart"]) == 0
    (run / "fit.json").unlink()
    assert main(other) == 1
    assert "no record" in capsys.readouterr().err


def test_restart_discards_both_token_caches(tmp_path):
    """Held-out tokens of earlier weights would pick the prior by another model's tokens."""
    from latentcodec.training.token_prior_fit import CACHE_FILE, VALIDATION_FILE, claim_run_dir

    record = {"weights": "abc", "width": 16}
    claim_run_dir(tmp_path, record)
    for name in (CACHE_FILE, VALIDATION_FILE):
        (tmp_path / name).write_bytes(b"stale")
    with pytest.raises(WeightsError, match="weights"):
        claim_run_dir(tmp_path, {**record, "weights": "def"})
    claim_run_dir(tmp_path, {**record, "weights": "def"}, restart=True)
    assert not (tmp_path / CACHE_FILE).exists() and not (tmp_path / VALIDATION_FILE).exists()
    # A held-out cache alone, with no record of its weights, is refused as well.
    (tmp_path / "fit.json").unlink()
    (tmp_path / VALIDATION_FILE).write_bytes(b"stale")
    with pytest.raises(WeightsError, match="no record"):
        claim_run_dir(tmp_path, record)

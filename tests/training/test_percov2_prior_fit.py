"""PerCoV2's training stage B (SYSTEMS.md 6.6.4): the token-map prior fitted to a frozen tiny model with
`latentcodec fit-token-prior --model percov2`, resumable, and plugged into the codec."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import latentcodec
from latentcodec.cli import main
from latentcodec.entropy.token_prior import MaskedTokenPrior
from latentcodec.models.percov2 import PerCoV2, PerCoV2Config
from latentcodec.training import token_prior_fit as fitting
from latentcodec.training.token_prior_fit import (
    CHECKPOINT_FILE,
    TokenPriorFitConfig,
    extract,
    fit,
    load_token_prior,
    token_maps_of,
)


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    torch.manual_seed(0)
    model = PerCoV2(PerCoV2Config.tiny()).attach_token_prior(None).eval()  # stage A's result: no prior yet
    path = tmp_path_factory.mktemp("percov2") / "weights"
    model.save_pretrained(path)
    return model, path


def test_extraction_and_fit_resume_where_they_stopped(frozen, image_folder, tmp_path, monkeypatch):
    model, _ = frozen
    config = TokenPriorFitConfig(crops=4, chunk_crops=2, fit_steps=6, checkpoint_every=3, batch_windows=4)
    first = extract(model, [image_folder], tmp_path, config, progress=False, crop_side=64, encode_crop=token_maps_of)
    assert first.tokens.shape == (4, 16) and first.context.shape == (4, 0, 16)  # 4x4 tokens of 16 pixels
    more = TokenPriorFitConfig(crops=6, chunk_crops=2, fit_steps=6, checkpoint_every=3, batch_windows=4)
    resumed = extract(model, [image_folder], tmp_path, more, progress=False, crop_side=64, encode_crop=token_maps_of)
    fresh = extract(model, [image_folder], tmp_path / "fresh", more, progress=False, crop_side=64, encode_crop=token_maps_of)
    assert torch.equal(resumed.tokens, fresh.tokens)

    prior_config = model.config.default_token_prior(width=16, layers=1, heads=2)
    whole = fit(resumed, prior_config, tmp_path / "whole", more, progress=False, grid=(4, 4)).prior
    # Killed right after the first checkpoint (step 3), then resumed to step 6: the same weights.
    write = fitting.atomic_write

    def write_then_stop(path, save):
        write(path, save=save)
        raise KeyboardInterrupt

    monkeypatch.setattr(fitting, "atomic_write", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        fit(resumed, prior_config, tmp_path / "split", more, progress=False, grid=(4, 4))
    monkeypatch.undo()
    assert torch.load(tmp_path / "split" / CHECKPOINT_FILE, weights_only=False)["step"] == 3
    split = fit(resumed, prior_config, tmp_path / "split", more, progress=False, grid=(4, 4)).prior
    for (name, a), b in zip(whole.state_dict().items(), split.state_dict().values()):
        assert torch.equal(a, b), name


def test_fitting_lowers_the_bits_of_the_token_maps(frozen, image_folder, tmp_path):
    model, _ = frozen
    config = TokenPriorFitConfig(crops=8, chunk_crops=8, fit_steps=60, batch_windows=8, lr=1e-2)
    cache = extract(model, [image_folder], tmp_path, config, progress=False, crop_side=64, encode_crop=token_maps_of)
    prior_config = model.config.default_token_prior(width=16, layers=1, heads=2)
    torch.manual_seed(config.seed)
    untrained = MaskedTokenPrior(prior_config).eval()  # fit's starting point: the same seed
    before = untrained.bits(None, cache.tokens, (4, 4)).mean().item()
    prior = fit(cache, prior_config, tmp_path, config, progress=False, grid=(4, 4)).prior
    after = prior.bits(None, cache.tokens, (4, 4)).mean().item()
    assert after < 0.7 * before


def test_fit_token_prior_command_for_percov2(frozen, image_folder, tmp_path, capsys):
    _, weights = frozen
    out = tmp_path / "prior"
    argv = ["fit-token-prior", str(out), "--model", "percov2", "--weights", str(weights), "--images", str(image_folder),
            "--run-dir", str(tmp_path / "run"), "--crops", "4", "--crop-size", "64", "--steps", "5", "--width", "16",
            "--layers", "1", "--schedule", "quincunx"]
    assert main(argv) == 0
    assert "token maps" in capsys.readouterr().out
    assert main(argv) == 1  # exists: no overwrite without --force
    prior = load_token_prior(out, "percov2")
    assert prior.config.schedule == "quincunx" and prior.config.vocab_size == 256
    image = Image.open(next(image_folder.iterdir())).convert("RGB")
    # the top quality: every token (lower qualities are hybrid points, which need the prior)
    codec = latentcodec.load("percov2", weights=str(weights), token_prior=str(out), quality=3)
    assert codec.model.config.token_prior.schedule == "quincunx"
    data = codec.compress(image)
    plain = latentcodec.load("percov2", weights=str(weights))
    assert data != plain.compress(image)  # fixed length without the prior
    assert torch.equal(codec.model.decode_streams(data).token_indices,
                       plain.model.decode_streams(plain.compress(image)).token_indices)
    # --save-model: the prior inside the model folder.
    assert main([*argv, "--force", "--save-model", str(tmp_path / "with_prior")]) == 0
    inside = latentcodec.load("percov2", weights=str(tmp_path / "with_prior"), quality=3)
    assert inside.compress(image) == data
    # --dtype float16: stored narrow, loaded into float32 parameters (from_pretrained assigns tensors).
    assert main([*argv, "--force", "--save-model", str(tmp_path / "half"), "--dtype", "float16"]) == 0
    half = latentcodec.load("percov2", weights=str(tmp_path / "half"), quality=3)
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    assert next(iter(half.model.state_dict().values())).dtype == torch.float32
    data_half = half.compress(image)
    assert half.model.decode_streams(data_half).token_indices.shape == inside.model.decode_streams(data).token_indices.shape
    assert half.decompress(data_half).size == image.size
    assert main([*argv[:-2], "--schedule", "zigzag", "--force"]) == 1  # a one-line error
    assert main([*argv, "--force", "--crop-size", "4096"]) == 1


def test_the_fit_keeps_the_weights_that_generalise_best(frozen, image_folder, tmp_path):
    model, _ = frozen
    # Few crops and a high learning rate: the prior memorises them, and the held-out bits turn up again.
    config = TokenPriorFitConfig(crops=2, chunk_crops=2, fit_steps=40, batch_windows=2, lr=3e-2, validate_every=4,
                                 validation_crops=4)
    training, withheld = fitting.split_images([image_folder], config)
    assert len(withheld) == 1 and not set(training) & set(withheld)  # 1 in 8, never trained on
    cache = extract(model, [image_folder], tmp_path, config, progress=False, crop_side=64, encode_crop=token_maps_of)
    validation = extract(model, [image_folder], tmp_path, config, progress=False, crop_side=64,
                         encode_crop=token_maps_of, validation=True)
    assert len(cache) == 2 and len(validation) == 4
    prior_config = model.config.default_token_prior(width=16, layers=1, heads=2)
    result = fit(cache, prior_config, tmp_path, config, progress=False, grid=(4, 4), validation=validation)
    steps = [point.step for point in result.history]
    assert steps == list(range(4, 41, 4))
    best = min(result.history, key=lambda point: point.bits_per_token)
    assert (result.step, result.validation_bits_per_token) == (best.step, best.bits_per_token)
    assert best.step < 40 and result.history[-1].bits_per_token > best.bits_per_token  # it did overfit
    # The returned weights are that step's, not the last ones.
    assert fitting.validation_bits(result.prior, validation, (4, 4)) == pytest.approx(best.bits_per_token, rel=1e-5)
    # Resuming a finished fit returns the same choice.
    again = fit(cache, prior_config, tmp_path, config, progress=False, grid=(4, 4), validation=validation)
    assert again.step == result.step and again.history == result.history
    # Without withheld images (a folder of fewer than 8) the last weights are kept.
    assert extract(model, [image_folder], tmp_path / "none", TokenPriorFitConfig(validation_images=0),
                   progress=False, crop_side=64, encode_crop=token_maps_of, validation=True) is None

"""Stage II's low-pass term (losses.lowpass_latent) on a preset with the VQGAN's low-pass path."""

import dataclasses

import pytest
import torch

from latentcodec.errors import ConfigError
from latentcodec.models.glc_image import PRESETS, GLCImageConfig
from latentcodec.training.config import load_config
from latentcodec.training.stages import lowpass_error
from latentcodec.training.trainer import Trainer
from training_helpers import tiny_config, write_config


def tiny_lowpass() -> GLCImageConfig:
    tiny = GLCImageConfig.tiny()
    return dataclasses.replace(tiny, vqgan=dataclasses.replace(tiny.vqgan, lowpass_path=True))


def test_lowpass_term_needs_the_lowpass_path(tmp_path, image_folder):
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, image_folder, "latent", **{"losses.lowpass_latent": 5.0}))
    with pytest.raises(ConfigError, match="low-pass path"):
        load_config(path)


def test_lowpass_term_pulls_the_decoded_latent_towards_the_low_pass_image(tmp_path, image_folder, monkeypatch):
    monkeypatch.setitem(PRESETS, "tiny", tiny_lowpass)  # the one dict that config checks and the trainer read
    config = load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path, image_folder, "latent",
                                                                        **{"losses.lowpass_latent": 5.0})))
    trainer = Trainer(config)
    lowpass = trainer.model.vqgan.generator.lowpass
    latent = torch.randn(2, lowpass.in_channels, 4, 4)
    assert torch.equal(lowpass_error(trainer.model.vqgan.generator, latent, latent), torch.zeros(2))
    moved = latent.clone().requires_grad_(True)
    shifted = moved + 0.5 * torch.nn.functional.one_hot(torch.tensor(0), lowpass.in_channels).view(1, -1, 1, 1)
    error = lowpass_error(trainer.model.vqgan.generator, shifted, latent)
    expected = ((lowpass(shifted) - lowpass(latent)) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(error, expected)
    error.sum().backward()
    assert moved.grad.abs().sum() > 0 and lowpass.weight.grad is None  # the map itself is not trained by it
    batch = trainer.stream.next_batch()
    before = float(trainer.objective(batch, torch.tensor([0, 3]), trainer.lambdas, None).total.detach())
    trainer.close()
    assert torch.isfinite(torch.tensor(before))


def test_lowpass_floor_adds_the_same_weighted_error_at_every_rate(tmp_path, image_folder, monkeypatch):
    """losses.lowpass_latent_floor sits outside lambda: with every lambda at zero it still adds exactly
    floor x the batch's mean low-pass error, so the lowest rate cannot trade colour and layout away."""
    monkeypatch.setitem(PRESETS, "tiny", tiny_lowpass)
    config = load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path, image_folder, "latent",
                                                                        **{"losses.lowpass_latent_floor": 7.0})))
    trainer = Trainer(config)
    objective = trainer.objective.module if hasattr(trainer.objective, "module") else trainer.objective
    objective.eval()  # rounding, not noise: the same batch gives the same symbols twice
    batch, rates, no_lambda = trainer.stream.next_batch(), torch.tensor([0, 3]), torch.zeros_like(trainer.lambdas)
    with torch.no_grad():
        with_floor = objective(batch, rates, no_lambda, None)
        objective.config = dataclasses.replace(config, losses=dataclasses.replace(config.losses, lowpass_latent_floor=0.0))
        without = objective(batch, rates, no_lambda, None)
        x = objective.model.pad(batch)
        encoded = objective.model.analyse(x, rates)
        error = lowpass_error(objective.model.vqgan.generator, encoded.latent_hat, encoded.latent)
    trainer.close()
    assert float(error.mean()) > 0
    assert torch.allclose(with_floor.total - without.total, 7.0 * error.mean(), rtol=1e-4, atol=1e-6)

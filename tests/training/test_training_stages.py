"""Each stage's objective goes down on a fixed batch after a few optimiser steps."""

import pytest
import torch

from latentcodec.training.config import load_config
from latentcodec.training.trainer import Trainer, export_inference_model
from training_helpers import tiny_config, write_config


def fixed_batch_trainer(tmp_path, image_folder, stage, **extra) -> tuple[Trainer, torch.Tensor]:
    config = load_config(write_config(tmp_path / f"{stage}.yaml", tiny_config(tmp_path, image_folder, stage, **extra)))
    trainer = Trainer(config)
    batch = trainer.stream.next_batch()
    trainer.stream.next_batch = lambda: batch
    return trainer, batch


def objective_value(trainer: Trainer, batch: torch.Tensor) -> float:
    rates = torch.tensor([0, 3])
    torch.manual_seed(0)
    return float(trainer.objective(batch, rates, trainer.lambdas, trainer.discriminator).total.detach())


@pytest.mark.parametrize(
    "stage, extra",
    [
        ("vqgan", {"gan.start_step": 0}),
        ("latent", {}),
        ("joint", {"losses.code_pix_ce": 0.1}),
    ],
)
def test_stage_lowers_its_loss(tmp_path, image_folder, stage, extra):
    trainer, batch = fixed_batch_trainer(tmp_path, image_folder, stage, **extra)
    before = objective_value(trainer, batch)
    for _ in range(8):
        trainer.train_step()
    after = objective_value(trainer, batch)
    assert after < before, (stage, before, after)


def test_stage_trains_only_its_modules(tmp_path, image_folder):
    trainer, _ = fixed_batch_trainer(tmp_path, image_folder, "latent")
    frozen = {k: v.clone() for k, v in trainer.model.state_dict().items() if k.startswith("vqgan.")}
    trained = trainer.model.hyper_enc[1].weight.clone()
    trainer.train_step()
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert not torch.equal(trainer.model.hyper_enc[1].weight, trained)


def test_rate_targets_move_lambdas(tmp_path, image_folder):
    trainer, _ = fixed_batch_trainer(tmp_path, image_folder, "latent",
                                     **{"rates.target_bpp": [1e-3, 1e-3, 1e3, 1e3], "rates.adapt_rate": 0.1})
    start = trainer.lambdas.clone()
    for _ in range(3):
        trainer.train_step()
    moved = trainer.lambdas / start
    # Far above target: lambda shrinks; far below: it grows (only for rates drawn in the batch).
    assert (moved[:2] <= 1).all() and (moved[2:] >= 1).all() and not torch.equal(moved, torch.ones(4))


def test_validation_and_export(tmp_path, image_folder, validation_folder):
    trainer, _ = fixed_batch_trainer(tmp_path, image_folder, "latent",
                                     **{"validation.image_dir": str(validation_folder), "validation.images": 1,
                                        "validation.rate_indices": [0, 3]})
    trainer.train_step()
    results = trainer.validate()
    assert set(results) == {"0", "3"}
    for values in results.values():
        assert values["bpp"] > 0 and 0 < values["psnr"] < 100 and -1 <= values["ms_ssim"] <= 1
    trainer.save_checkpoint()
    from latentcodec.models.glc_image import GLCImage

    exported = export_inference_model(trainer.run_dir, tmp_path / "exported")
    model = GLCImage.from_pretrained(exported)
    assert model.code_pred_loss is None and model.vqgan.quantize is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, trainer.model.state_dict()[key])


def test_initial_gains_spread_the_rates(tmp_path, image_folder):
    trainer, _ = fixed_batch_trainer(tmp_path, image_folder, "latent",
                                     **{"rates.initial_gains": [0.25, 0.5, 1.0, 2.0], "optim.rate_gain_lr_scale": 10.0})
    gains = trainer.model.q_enc[:, 0, 0, 0]
    assert torch.allclose(gains, torch.tensor([0.25, 0.5, 1.0, 2.0]))
    assert torch.allclose(trainer.model.q_dec[:, 0, 0, 0] * gains, torch.ones(4))
    lrs = sorted(group["lr"] for group in trainer.optimizer.param_groups)
    assert lrs[-1] == pytest.approx(10 * lrs[0])

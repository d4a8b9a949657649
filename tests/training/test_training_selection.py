"""Checkpoint selection (DLF's rule, rec_loss + 2 lambda bpp): best.pt holds the best validated weights."""

import math

import pytest
import torch

from latentcodec.training.config import load_config
from latentcodec.training.selection import BEST_FILE, improves, selection_score
from latentcodec.training.trainer import Trainer, export_inference_model
from training_helpers import tiny_config, write_config


def test_score_is_the_mean_of_l1_plus_twice_lambda_bpp():
    results = {"0": {"bpp": 0.01, "l1": 0.3}, "3": {"bpp": 0.04, "l1": 0.2}}
    expected = ((0.3 + 2 * 0.5 * 0.01) + (0.2 + 2 * 4.0 * 0.04)) / 2
    assert selection_score(results, [0.5, 1.0, 2.0, 4.0]) == pytest.approx(expected)
    assert selection_score({"12": {"bpp": 0.1, "psnr": 30.0}}, [1.0]) is None  # video: no L1, no selection
    assert selection_score({"0": {"bpp": math.nan, "l1": 0.1}}, [1.0]) is None


def test_fit_keeps_the_best_validated_weights_and_resume_remembers_the_score(tmp_path, image_folder,
                                                                             validation_folder):
    config = tiny_config(tmp_path, image_folder, "latent", steps=4,
                         **{"validation.every": 2, "validation.image_dir": str(validation_folder),
                            "validation.images": 1, "validation.rate_indices": [0, 3], "data.crop_size": 64})
    path = write_config(tmp_path / "c.yaml", config)
    trainer = Trainer(load_config(path))
    trainer.fit()
    best = torch.load(trainer.run_dir / BEST_FILE, map_location="cpu", weights_only=False)
    assert best["step"] in (2, 4) and best["selection_score"] == trainer.best_score < math.inf
    # the stored weights are those of the chosen step: at step 4 they equal the live model's
    if best["step"] == 4:
        assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in best["model"].items())
    exported = export_inference_model(trainer.run_dir / BEST_FILE, tmp_path / "exported")
    assert (exported / "model.safetensors").is_file()
    trainer.close()

    resumed = Trainer(load_config(write_config(tmp_path / "c2.yaml", {**config, "steps": 6})), resume=True)
    assert resumed.best_score == trainer.best_score
    resumed.close()


def test_holdout_images_are_withheld_from_training_and_read_by_validation(tmp_path, image_folder):
    config = tiny_config(tmp_path, image_folder, "latent", steps=2,
                         **{"validation.every": 2, "validation.image_dir": "holdout", "data.holdout": 2,
                            "validation.images": 1, "validation.rate_indices": [0], "data.crop_size": 64})
    trainer = Trainer(load_config(write_config(tmp_path / "c.yaml", config)))
    trained = set(trainer.stream.dataset.files)
    assert len(trainer.holdout) == 2 and len(trained) == 6 and not trained & set(trainer.holdout)
    results = trainer.validate()
    assert results is not None and results["0"]["bpp"] > 0  # validated on a held-out image
    trainer.close()


def test_kept_weights_are_rescored_under_the_current_lambdas():
    # The first DLF pixel run's validations at steps 500 and 2000 (rates 0 and 3), and its lambdas then.
    step500 = {"0": {"bpp": 0.0255, "l1": 0.2405}, "3": {"bpp": 0.0327, "l1": 0.2398}}
    step2000 = {"0": {"bpp": 0.0193, "l1": 0.2263}, "3": {"bpp": 0.0264, "l1": 0.2094}}
    early, late = [90.5, 8.0, 0.71, 0.25], [256.0, 8.0, 0.5, 0.125]
    # Each under its own step's lambdas, the dominated step-500 weights would look better ...
    assert selection_score(step500, early) < selection_score(step2000, late)
    # ... under the same lambdas they do not, and the later weights replace them.
    assert improves(step2000, step500, late) == pytest.approx(selection_score(step2000, late))
    assert improves(step500, step2000, late) is None
    # Without recorded results (a run from before this rule) the stored score is the bar.
    assert improves(step2000, None, late, kept_score=0.1) is None
    assert improves(step2000, None, late) is not None

"""PerCoV2 stage runs as processes: SIGKILL + --resume repeats the uninterrupted run exactly (stage A,
and the VAE stage with its discriminator), and a 2-process torchrun keeps every parameter identical
across ranks."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from training_helpers import (
    kill_and_resume,
    logged_steps,
    run_two_process_training,
    tiny_config,
    write_config,
)

from latentcodec.models.percov2 import PerCoV2, PerCoV2Config

STEPS = 6


def run_config(tmp_path: Path, image_folder: Path, stage: str, **extra) -> dict:
    return tiny_config(tmp_path, image_folder, stage, **{"percov2.scaling_crops": 4, "perceptual": "fallback",
                                                         "losses.feature_matching": 0.0, "losses.gan": 0.0, **extra})


def straight_and_killed(tmp_path: Path, image_folder: Path, stage: str, **extra) -> dict[str, Path]:
    """The same run's config twice (own folders), checkpointing every 3 steps: one runs straight
    through, the other is killed and resumed."""
    return {name: write_config(tmp_path / f"{name}.yaml", run_config(
        tmp_path / name, image_folder, stage, steps=STEPS, **{"runtime.checkpoint_every": 3, **extra}))
        for name in ("straight", "killed")}


def test_flow_sigkill_then_resume_matches_uninterrupted_run(tmp_path, image_folder):
    configs = straight_and_killed(tmp_path, image_folder, "percov2_flow", **{"percov2.dead_code_every": 3,
                                                                            "losses.latent_probe": 1.0})
    a, b, run_dir = kill_and_resume(configs, "test-percov2_flow", tmp_path, STEPS, straight_in_process=True)
    # The measured latent normalisation travels in the checkpoint: the resumed run rebuilt the same codec.
    assert a["model_config"] == b["model_config"] and a["model_config"]["vae"]["scaling_factor"] != \
        PerCoV2Config.tiny().vae["scaling_factor"]
    assert logged_steps(run_dir / "metrics.jsonl") == list(range(1, STEPS + 1))
    assert "step 6: " in (run_dir / "train.log").read_text()  # the resumed part restarted codes too
    flows = [json.loads(line)["flow"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(value > 0 for value in flows)


def test_vae_sigkill_then_resume_with_a_discriminator(tmp_path, image_folder):
    configs = straight_and_killed(tmp_path, image_folder, "percov2_vae", **{"losses.gan": 0.1})
    a, _, _ = kill_and_resume(configs, "test-percov2_vae", tmp_path, STEPS, straight_in_process=True)
    assert a["discriminator"] is not None and a["disc_optimizer"]["state"]


def test_flow_two_process_gloo_run_keeps_ranks_identical(tmp_path, image_folder):
    # With a dead-code restart at step 3: usage summed over the ranks, rank 0's codebook broadcast.
    config = run_config(tmp_path, image_folder, "percov2_flow", steps=3, **{"runtime.checkpoint_every": 3,
                                                                           "percov2.dead_code_every": 3})
    result = run_two_process_training(write_config(tmp_path / "ddp.yaml", config), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])
    for key, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][key]), f"model.{key} differs across ranks"
    torch.manual_seed(config["seed"])
    start = PerCoV2(PerCoV2Config.tiny()).state_dict()
    for key in ("hyper_encoder.layers.1.weight", "quantizer.vq.embedding.weight", "transformer.proj_out.weight"):
        assert not torch.equal(start[key], ranks[0]["model"][key]), f"{key} did not train"
    assert torch.equal(start["vae.decoder.conv_out.weight"], ranks[0]["model"]["vae.decoder.conv_out.weight"])
    checkpoint = torch.load(tmp_path / "runs" / "test-percov2_flow" / "checkpoint.pt", weights_only=False)
    assert len(checkpoint["streams"]) == 2 and checkpoint["step"] == 3

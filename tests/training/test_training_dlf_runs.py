"""DLF stage runs as processes: SIGKILL + --resume repeats the uninterrupted run exactly, and a
2-process torchrun keeps every parameter and lambda identical across ranks."""

import json
from pathlib import Path

import torch

from latentcodec.models.dlf import DLF, DLFConfig
from training_helpers import kill_and_resume, run_two_process_training, tiny_dlf_config, write_config

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 6


def training_steps(metrics: Path) -> list[int]:
    """Steps of the per-step loss lines (validation and lambda-control lines left out)."""
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if '"loss"' in line]


def pixel_run_config(tmp_path: Path, image_folder: Path, validation_folder: Path, **extra) -> dict:
    # The pixel stage has every piece of state: discriminator and its optimiser, GAN, lambda control.
    return tiny_dlf_config(tmp_path, image_folder, "dlf_pixel", **{
        "validation.image_dir": str(validation_folder), "dlf.control_every": 2,
        "dlf.bpp_bounds": [[0.0, 1e-6], [1e3, 1e4]], "dlf.lambda_start": [2, 3], **extra})


def test_dlf_sigkill_then_resume_matches_uninterrupted_run(tmp_path, image_folder, validation_folder):
    configs = {name: write_config(tmp_path / f"{name}.yaml", pixel_run_config(
        tmp_path / name, image_folder, validation_folder, steps=STEPS, **{"runtime.checkpoint_every": 3}))
        for name in ("straight", "killed")}
    a, b, run_dir = kill_and_resume(configs, "test-dlf_pixel", tmp_path, STEPS)
    # Three controls over 6 steps with unreachable bounds: rate 0 climbed 2 -> 5, rate 1 fell 3 -> 0.
    assert a["lambda_indices"] == b["lambda_indices"] == [5, 0]
    assert training_steps(run_dir / "metrics.jsonl") == list(range(1, STEPS + 1))


def test_dlf_two_process_gloo_run_keeps_ranks_identical(tmp_path, image_folder, validation_folder):
    config = pixel_run_config(tmp_path, image_folder, validation_folder, steps=3,
                              **{"runtime.checkpoint_every": 3, "dlf.control_every": 1})
    result = run_two_process_training(write_config(tmp_path / "ddp.yaml", config), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])
    for part in ("model", "discriminator"):
        for key, value in ranks[0][part].items():
            if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
                continue  # the discriminator's BatchNorm statistics are per rank between DDP's broadcasts
            assert torch.equal(value, ranks[1][part][key]), f"{part}.{key} differs across ranks"
    # Rank 0 measured and broadcast: three controls, rate 0 up 2 -> 5, rate 1 down 3 -> 0 (ladder 0.25..8).
    assert ranks[0]["lambdas"].tolist() == ranks[1]["lambdas"].tolist() == [8.0, 0.25]
    # The trainer seeds torch with config.seed before building the model: the same build is the start.
    torch.manual_seed(config["seed"])
    start = DLF(DLFConfig.tiny(), with_training_modules=True).state_dict()
    assert torch.equal(start["vqgan.encoder.conv_in.weight"], ranks[0]["model"]["vqgan.encoder.conv_in.weight"])
    for key in ("hybrid_codec.latent_tokens", "prior_fusion.ffn.3.weight", "vqgan.decoder.conv_out.weight"):
        assert not torch.equal(start[key], ranks[0]["model"][key]), f"{key} did not train"
    checkpoint = torch.load(tmp_path / "runs" / "test-dlf_pixel" / "checkpoint.pt", weights_only=False)
    assert len(checkpoint["streams"]) == 2 and checkpoint["step"] == 3
    assert checkpoint["lambda_indices"] == [5, 0]

"""A 2-process torchrun (gloo, CPU) run keeps every parameter identical across ranks."""

import subprocess
import sys
from pathlib import Path

import torch

from latentcodec.models.glc_image import GLCImage, PRESETS
from training_helpers import run_two_process_training, tiny_config, write_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_two_process_gloo_run_keeps_ranks_identical(tmp_path, image_folder):
    config = tiny_config(tmp_path, image_folder, "joint", steps=3, **{
        "losses.code_pix_ce": 0.1,
        "rates.target_bpp": [0.05, 0.1, 0.2, 0.4],
        "runtime.checkpoint_every": 3,
    })
    config_path = write_config(tmp_path / "ddp.yaml", config)
    result = run_two_process_training(config_path, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    # The ranks saw different data, yet ended with the same weights.
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])
    for part in ("model", "discriminator"):
        for key, value in ranks[0][part].items():
            if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
                continue  # BatchNorm statistics are per rank between DDP's buffer broadcasts
            assert torch.equal(value, ranks[1][part][key]), f"{part}.{key} differs across ranks"
    assert torch.equal(ranks[0]["lambdas"], ranks[1]["lambdas"])
    fresh = GLCImage(PRESETS["tiny"](), with_training_modules=True).state_dict()
    assert not torch.equal(fresh["hyper_enc.1.weight"], ranks[0]["model"]["hyper_enc.1.weight"])
    # Rank 0's checkpoint records both ranks' data positions, for --resume.
    checkpoint = torch.load(tmp_path / "runs" / "test-joint" / "checkpoint.pt", weights_only=False)
    assert len(checkpoint["streams"]) == 2 and checkpoint["step"] == 3


def test_train_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "latentcodec.train", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--resume" in result.stdout

"""SIGKILL a training process, --resume it, and get bit-identical weights to an uninterrupted run."""

import os
import signal
import subprocess
import time
from pathlib import Path

import torch

from training_helpers import logged_steps, tiny_config, train_command, write_config

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 10


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, image_folder):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    configs = {}
    for name in ("straight", "killed"):
        config = tiny_config(tmp_path / name, image_folder, "joint", steps=STEPS, **{
            "runtime.checkpoint_every": 3, "rates.target_bpp": [0.05, 0.1, 0.2, 0.4], "losses.code_pix_ce": 0.1,
        })
        configs[name] = write_config(tmp_path / f"{name}.yaml", config)
    straight = subprocess.run(train_command(configs["straight"]), cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=240)
    assert straight.returncode == 0, straight.stderr[-2000:]

    run_dir = tmp_path / "killed" / "runs" / "test-joint"
    process = subprocess.Popen(train_command(configs["killed"]), cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and max(logged_steps(run_dir / "metrics.jsonl"), default=0) < 4:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"]
    assert 3 <= killed_at < STEPS, "the process must die mid-run, after its first checkpoint"

    resumed = subprocess.run(train_command(configs["killed"], resume=True), cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed at step {killed_at}" in resumed.stderr

    a = torch.load(tmp_path / "straight" / "runs" / "test-joint" / "checkpoint.pt", weights_only=False)
    b = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == STEPS
    for part in ("model", "discriminator"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key} differs after resume"
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg_sq"], b["optimizer"]["state"][key]["exp_avg_sq"])
    assert torch.equal(a["lambdas"], b["lambdas"])
    assert a["streams"] == b["streams"]
    # The metrics log holds each step once, even though the killed run logged some twice.
    steps = [s for s in logged_steps(run_dir / "metrics.jsonl")]
    assert steps == list(range(1, STEPS + 1))


def test_existing_run_needs_resume(tmp_path, image_folder):
    config = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, image_folder, "latent", steps=1))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    first = subprocess.run(train_command(config), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run(train_command(config), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert "--resume" in second.stderr.strip().splitlines()[-1]

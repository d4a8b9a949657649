"""SIGKILL a training process, --resume it, and get bit-identical weights to an uninterrupted run."""

import os
import subprocess
from pathlib import Path

from training_helpers import kill_and_resume, logged_steps, tiny_config, train_command, write_config

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 10


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, image_folder):
    configs = {}
    for name in ("straight", "killed"):
        config = tiny_config(tmp_path / name, image_folder, "joint", steps=STEPS, **{
            "runtime.checkpoint_every": 3, "rates.target_bpp": [0.05, 0.1, 0.2, 0.4], "losses.code_pix_ce": 0.1,
        })
        configs[name] = write_config(tmp_path / f"{name}.yaml", config)
    _, _, run_dir = kill_and_resume(configs, "test-joint", tmp_path, STEPS)
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

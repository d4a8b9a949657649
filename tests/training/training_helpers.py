"""Helpers for the training tests: small synthetic photo folders and tiny-preset configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image


def write_images(folder: Path, count: int, size: tuple[int, int] = (96, 80), seed: int = 0) -> Path:
    """Smooth random colour fields plus edges: compressible, but not constant."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    for i in range(count):
        coarse = rng.uniform(0, 255, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        array = np.asarray(image).copy()
        array[rng.integers(0, height), :] = 255
        Image.fromarray(array).save(folder / f"img_{i:02d}.png")
    return folder


def tiny_config(tmp_path: Path, image_folder: Path, stage: str, **extra) -> dict:
    """A tiny-preset config dict (64x64 crops, batch 2, 1 thread, no validation, no progress bar)."""
    config = {
        "name": f"test-{stage}",
        "stage": stage,
        "preset": "tiny",
        "steps": 6,
        "seed": 3,
        "data": {"train_dirs": [str(image_folder)], "crop_size": 64, "batch_size": 2, "num_workers": 0},
        "validation": {"every": 0},
        "optim": {"lr": 1e-3, "disc_lr": 1e-3, "warmup_steps": 0, "min_lr_ratio": 1.0},
        "rates": {"lambdas": [0.5, 1.0, 2.0, 4.0]},
        "gan": {"start_step": 0, "discriminator": {"base_channels": 8}},
        "runtime": {"threads": 1, "checkpoint_every": 2, "log_every": 1, "run_root": str(tmp_path / "runs"),
                    "progress": False},
    }
    for key, value in extra.items():
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def train_command(config_path: Path, resume: bool = False) -> list[str]:
    return [sys.executable, "-m", "latentcodec.cli", "train", str(config_path)] + (["--resume"] if resume else [])


def logged_steps(metrics: Path) -> list[int]:
    """The training steps of a metrics.jsonl (validation and lambda-control lines included)."""
    if not metrics.exists():
        return []
    steps = []
    for line in metrics.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            pass  # a line being written
    return steps


def run_two_process_training(config_path: Path, out_dir: Path) -> subprocess.CompletedProcess:
    """torchrun with 2 gloo processes running ddp_worker.py (each saves out_dir/rank<r>.pt)."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(__file__).with_name("ddp_worker.py")), str(config_path), str(out_dir)]
    return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=240)


def tiny_dlf_config(tmp_path: Path, image_folder: Path, stage: str, **extra) -> dict:
    """tiny_config for the DLF stages: the tiny DLF preset has 2 rates, one lambda ladder index
    each, no lambda control unless asked for (dlf.control_every)."""
    dlf = {"dlf.lambda_ladder": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0], "dlf.lambda_start": [3, 1],
           "dlf.bpp_bounds": [[0.01, 0.05], [0.05, 0.2]], "dlf.control_every": 0, "dlf.control_images": 1,
           "losses.code_ce": 0.25, "validation.rate_indices": [0, 1], "rates.lambdas": [1.0, 1.0]}
    return tiny_config(tmp_path, image_folder, stage, **{**dlf, **extra})


def kill_and_resume(configs: dict[str, Path], run_name: str, tmp_path: Path, steps: int,
                    straight_in_process: bool = False) -> tuple[dict, dict, Path]:
    """Train ``configs["straight"]`` to the end; start ``configs["killed"]``, SIGKILL it after its first
    checkpoint (mid-run), ``--resume`` it; check both final checkpoints hold the same step, model,
    discriminator, Adam state, lambdas and data streams. Returns (straight, resumed, killed run dir).
    ``straight_in_process``: the uninterrupted run in this process (saves a process start where imports
    are slow, e.g. diffusers'; the runs use one thread either way)."""
    import signal
    import time

    import torch

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    if straight_in_process:
        from latentcodec.training.config import load_config
        from latentcodec.training.trainer import run_training

        threads = torch.get_num_threads()
        try:
            run_training(load_config(configs["straight"]))
        finally:
            torch.set_num_threads(threads)
    else:
        straight = subprocess.run(train_command(configs["straight"]), cwd=repo, env=env, capture_output=True,
                                  text=True, timeout=240)
        assert straight.returncode == 0, straight.stderr[-2000:]
    run_dir = tmp_path / "killed" / "runs" / run_name
    # Slowed steps: a tiny run can otherwise finish between two polls on a fast machine.
    slowed = [sys.executable, str(Path(__file__).with_name("slowed_train.py")), str(configs["killed"])]
    process = subprocess.Popen(slowed, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and max(logged_steps(run_dir / "metrics.jsonl"), default=0) < 4:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"]
    assert 3 <= killed_at < steps, "the process must die mid-run, after its first checkpoint"
    resumed = subprocess.run(train_command(configs["killed"], resume=True), cwd=repo, env=env, capture_output=True,
                             text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed at step {killed_at}" in resumed.stderr
    a = torch.load(tmp_path / "straight" / "runs" / run_name / "checkpoint.pt", weights_only=False)
    b = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == steps
    assert (a["discriminator"] is None) == (b["discriminator"] is None)
    for part in ("model", "discriminator"):
        for key, value in (a[part] or {}).items():
            assert torch.equal(value, b[part][key]), f"{part}.{key} differs after resume"
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg_sq"], b["optimizer"]["state"][key]["exp_avg_sq"])
    assert torch.equal(a["lambdas"], b["lambdas"])
    assert a["streams"] == b["streams"]
    return a, b, run_dir

"""Autoencoder progress on Kodak, no coding: a GLC run's VQGAN (E then G; stage I) or a PerCoV2 VAE
run's AutoencoderKL (posterior mode, then the decoder: the ceiling of what PerCoV2 can reconstruct).

    python -m latentcodec.training.autoencoder_eval RUN_DIR_OR_CHECKPOINT [--images 6] [--json out.json]

Reports mean PSNR, MS-SSIM and thumbnail PSNR (1/16 scale, box filter: the low-pass fidelity that
colour and layout depend on) and the mean colour shift, so stage-I recipes can be compared per
CPU-hour before any coding is trained. The checkpoint's step and its run's logged wall time are
reported with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from latentcodec.evaluation.metrics.pixel import PSNR, ThumbnailPSNR
from latentcodec.models.glc_image import PRESETS, GLCImage


class AutoencoderQuality(NamedTuple):
    step: int
    train_hours: float  # wall time of the run up to this checkpoint, from its metrics log
    images: int
    psnr: float
    ms_ssim: float
    thumbnail_psnr: float
    mean_colour_error: float  # mean over images of |mean RGB of x_hat - mean RGB of x|, 8-bit units


Reconstruct = Callable[[torch.Tensor], torch.Tensor]  # (1, 3, H, W) in [0, 1] -> same, inference mode


def load_checkpoint(path: Path) -> tuple[Reconstruct, int, dict]:
    """The autoencoder of a GLC or ``percov2_vae`` run as a reconstruct function, its step and payload."""
    if path.is_dir():
        path = path / "checkpoint.pt"
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("stage") == "percov2_vae":
        from latentcodec.models.percov2_config import PRESETS as PERCOV2_PRESETS
        from latentcodec.training.percov2_stages import PerCoV2VAE, reconstruct_with_vae

        vae_model = PerCoV2VAE(PERCOV2_PRESETS[payload["preset"]]())
        vae_model.load_state_dict(payload["model"], strict=True)
        vae, factor = vae_model.vae.eval(), vae_model.config.vae_factor
        return (lambda x: reconstruct_with_vae(vae, x, factor)[0]), int(payload["step"]), payload
    model = GLCImage(PRESETS[payload["preset"]](), with_training_modules=False)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in payload["model"].items() if k in own}, strict=True)
    model.eval()

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        x_hat = model.vqgan.generator(model.vqgan.encoder(model.pad(x)))[..., : x.shape[-2], : x.shape[-1]]
        return (x_hat.clamp(-1, 1) + 1) / 2

    return reconstruct, int(payload["step"]), payload


def run_hours(run_dir: Path, step: int) -> float:
    """Training wall hours up to ``step`` from the run's metrics log: the sum of gaps between
    consecutive log records, leaving out gaps of a stopped run (over 30 minutes) before a resume."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return float("nan")
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    times = [r["time"] for r in records if "time" in r and r.get("step", 0) <= step]
    gaps = np.diff(times) if len(times) > 1 else np.zeros(0)
    return float(gaps[gaps < 1800].sum()) / 3600


def evaluate(reconstruct: Reconstruct, kodak: Path, images: int) -> tuple[float, float, float, float]:
    from PIL import Image

    from latentcodec.data.images import pil_to_tensor
    from latentcodec.evaluation.metrics.pixel import MSSSIM

    psnr, msssim, thumbnail_psnr = PSNR(), MSSSIM(), ThumbnailPSNR()
    rows = []
    for path in tqdm(sorted(kodak.glob("*.png"))[:images], desc="autoencoder", unit="image"):
        with Image.open(path) as image:
            x = pil_to_tensor(image)
        with torch.inference_mode():
            x_hat = torch.round(reconstruct(x) * 255) / 255
        colour = float((x_hat.mean(dim=(2, 3)) - x.mean(dim=(2, 3))).abs().mean() * 255)
        rows.append((psnr(x, x_hat), msssim(x[0], x_hat[0]), thumbnail_psnr(x[0], x_hat[0]), colour))
    return tuple(float(np.mean(column)) for column in zip(*rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--images", type=int, default=6, help="the first N Kodak images")
    parser.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="append the result as one JSON line")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reconstruct, step, _ = load_checkpoint(args.checkpoint)
    run_dir = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
    quality = AutoencoderQuality(step, run_hours(run_dir, step), args.images, *evaluate(reconstruct, args.kodak, args.images))
    record = {"run": run_dir.name, **quality._asdict()}
    print(json.dumps(record))
    if args.json is not None:
        with open(args.json, "a") as handle:
            handle.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Kodak figures for the model card of a trained GLC-image (docs/models.md).

``python -m latentcodec.training.model_card WEIGHTS_DIR KODAK_DIR OUT.json`` writes, per image and
rate: the actual file size of ``compress`` (bpp = 8 x bytes / H x W), the model's own bit estimate,
PSNR and MS-SSIM of the decoded 8-bit image, and for JPEG, WebP and AVIF (Pillow) the best-PSNR
file not larger than the model's, searched over quality and downscale factors (downscale, code,
upscale back), then prints the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentcodec.evaluation import baselines as classical
from latentcodec.evaluation.metrics.pixel import MSSSIM, PSNR
from latentcodec.models.glc_image import GLCImage

CODECS = ("jpeg", "webp", "avif")
SCALES = (1, 2, 4, 8)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)


def best_classical_at_most(codec_name: str, image: Image.Image, max_bytes: int, psnr: PSNR) -> dict | None:
    """Per downscale factor the largest file not above ``max_bytes``; keep the best PSNR among them."""
    codec = classical.get_baseline(codec_name)
    best = None
    for scale in SCALES:
        search = classical.encode_at_most(codec, image, max_bytes, (scale,))
        if search.best is None:
            continue
        decoded = classical.decode_scaled(codec, search.best.data, scale, image.size)
        value = psnr(image, decoded)
        if best is None or value > best["psnr"]:
            best = {"bytes": len(search.best.data), "scale": scale, "value": search.best.value, "psnr": value,
                    "decoded": decoded}
    return best


def evaluate(weights: Path, kodak: Path, rates: tuple[int, ...]) -> list[dict]:
    model = GLCImage.from_pretrained(weights)
    psnr, msssim = PSNR(), MSSSIM()
    records = []
    for path in sorted(kodak.glob("*.png")):
        image = Image.open(path).convert("RGB")
        x = _to_tensor(image)
        pixels = x.shape[2] * x.shape[3]
        for q in rates:
            start = time.perf_counter()
            data = model.compress(x, q)
            encode_s = time.perf_counter() - start
            start = time.perf_counter()
            x_hat = model.decompress(data)
            decode_s = time.perf_counter() - start
            decoded = Image.fromarray((x_hat[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            estimated_bits = model.estimate_bits(x, q)
            record = {
                "image": path.stem, "rate": q, "bytes": len(data), "bpp": 8 * len(data) / pixels,
                "estimated_bits": estimated_bits, "file_bits": 8 * len(data),
                "psnr": psnr(image, decoded), "ms_ssim": msssim(image, decoded),
                "encode_s": encode_s, "decode_s": decode_s, "classical": {},
            }
            for codec in CODECS:
                best = best_classical_at_most(codec, image, len(data), psnr)
                if best is None:
                    record["classical"][codec] = None
                    continue
                decoded_classical = best.pop("decoded")
                best["ms_ssim"] = msssim(image, decoded_classical)
                best["bpp"] = 8 * best["bytes"] / pixels
                record["classical"][codec] = best
            records.append(record)
            print(f"{path.stem} q{q}: {record['bpp']:.4f} bpp {record['psnr']:.2f} dB", file=sys.stderr, flush=True)
    return records


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def markdown_tables(records: list[dict]) -> str:
    rates = sorted({r["rate"] for r in records})
    lines = ["| rate | bpp (file) | PSNR | MS-SSIM | best classical PSNR at ≤ same bytes | JPEG | WebP | AVIF |",
             "|---|---|---|---|---|---|---|---|"]
    for q in rates:
        rows = [r for r in records if r["rate"] == q]
        per_codec = {}
        for codec in CODECS:
            hits = [r["classical"][codec] for r in rows if r["classical"][codec] is not None]
            reached = len(hits)
            per_codec[codec] = (f"{_mean([h['psnr'] for h in hits]):.2f} dB / {_mean([h['ms_ssim'] for h in hits]):.4f}"
                                f" / {_mean([h['bpp'] for h in hits]):.4f} bpp" + (f" ({reached}/{len(rows)} reached)"
                                                                                   if reached < len(rows) else ""))
        best = [max((c["psnr"] for c in r["classical"].values() if c is not None), default=math.nan) for r in rows]
        lines.append(f"| {q} | {_mean([r['bpp'] for r in rows]):.4f} | {_mean([r['psnr'] for r in rows]):.2f} | "
                     f"{_mean([r['ms_ssim'] for r in rows]):.4f} | {np.nanmean(best):.2f} | "
                     f"{per_codec['jpeg']} | {per_codec['webp']} | {per_codec['avif']} |")
    overhead = [r["file_bits"] - r["estimated_bits"] for r in records]
    share = [100 * (r["file_bits"] - r["estimated_bits"]) / r["file_bits"] for r in records]
    lines.append("")
    lines.append(f"File minus estimated bits: mean {_mean(overhead):.1f} bits per image "
                 f"({_mean(share):.2f}% of the file); max {max(overhead):.1f} bits.")
    lines.append(f"Encode {_mean([r['encode_s'] for r in records]):.2f} s, decode "
                 f"{_mean([r['decode_s'] for r in records]):.2f} s per image (mean).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("kodak")
    parser.add_argument("out")
    parser.add_argument("--rates", default="0,1,2,3")
    args = parser.parse_args(argv)
    records = evaluate(Path(args.weights), Path(args.kodak), tuple(int(v) for v in args.rates.split(",")))
    Path(args.out).write_text(json.dumps(records, indent=1))
    print(markdown_tables(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Semantic bits spent on padding: DLF's reference (replicate-pad to whole 256x256 windows) against
our files (resample each side to the nearest whole number of windows).

    python benchmarks/dlf_window_fit.py [--out docs/results/dlf_window_fit.json]

For common photo sizes it counts windows and semantic bits (32 tokens x 12 bits per window under
fixed-length coding) both ways and the share of the reference's semantic bits that describe padded
pixels. On Kodak crops of sizes that are not multiples of 256 it also measures what resampling alone
costs: the PSNR of resampling down/up to the coded size and back, the ceiling on fidelity that the
resampled path imposes before any coding (the padded path has none, but spends its extra windows on
replicated border pixels).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from latentcodec.data.images import load_rgb, pil_to_tensor
from latentcodec.evaluation.metrics.pixel import PSNR
from latentcodec.models.dlf import DLFConfig, resample

WINDOW = DLFConfig.official().window_pixels
BITS_PER_WINDOW = 32 * 12
SIZES = [(512, 768), (1080, 1920), (1365, 2048), (2048, 1365), (667, 1000), (3000, 4000), (2160, 3840), (300, 400),
         (100, 150)]
KODAK_CROPS = [(450, 700), (400, 600), (300, 500), (384, 640), (480, 720)]


def windows(height: int, width: int, rounding) -> int:
    return rounding(height) * rounding(width)


def padded(side: int) -> int:
    return math.ceil(side / WINDOW)


def resampled(side: int) -> int:
    return max(1, math.floor(side / WINDOW + 0.5))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kodak", default="../shared/data/kodak")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    print(f"{'size':>11} {'pad windows':>11} {'our windows':>11} {'pad bits':>9} {'our bits':>9} {'padding share':>13}")
    for height, width in SIZES:
        reference, ours = windows(height, width, padded), windows(height, width, resampled)
        padded_area = padded(height) * padded(width) * WINDOW * WINDOW
        share = 1 - height * width / padded_area
        rows.append({"height": height, "width": width, "reference_windows": reference, "our_windows": ours,
                     "reference_semantic_bits": reference * BITS_PER_WINDOW, "our_semantic_bits": ours * BITS_PER_WINDOW,
                     "reference_padding_share": share})
        print(f"{height:>5}x{width:<5} {reference:>11} {ours:>11} {reference * BITS_PER_WINDOW:>9} "
              f"{ours * BITS_PER_WINDOW:>9} {share:>12.1%}")
    crops = []
    kodak = sorted(Path(args.kodak).glob("*.png"))[:6]
    for height, width in KODAK_CROPS:
        values = []
        for path in kodak:
            image = pil_to_tensor(load_rgb(path))
            if image.shape[-2] < height or image.shape[-1] < width:  # portrait Kodak images
                image = image.transpose(-1, -2)
            x = image[..., :height, :width]
            coded = (WINDOW * resampled(height), WINDOW * resampled(width))
            back = resample(resample(x, coded), (height, width))
            values.append(PSNR()(x, torch.round(back * 255) / 255))
        mean = sum(values) / len(values)
        crops.append({"height": height, "width": width, "coded": coded, "resample_psnr": mean})
        print(f"Kodak crops {height}x{width} coded at {coded[0]}x{coded[1]}: resampling alone {mean:.2f} dB "
              f"(mean of {len(values)})")
    if args.out:
        Path(args.out).write_text(json.dumps({"sizes": rows, "kodak_crops": crops}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

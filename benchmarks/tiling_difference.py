"""Largest 8-bit difference between tiled and untiled decoding of the same file, over Kodak.

The file is written once; it is decoded with the generator whole and again under a small
activation budget that makes it run in tiles (the smallest tile side used is reported), and
the two PNG-ready images are compared.

    python benchmarks/tiling_difference.py --json docs/results/tiling_difference_kodak.json
    python benchmarks/tiling_difference.py --images kodim23 --resize 4000x3000 --json tiling_12mp.json
    python benchmarks/tiling_difference.py --precision bf16 --json docs/results/tiling_difference_kodak_bf16.json

``--resize`` enlarges each image (bicubic) first, for the large-image case.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "kodak")
    parser.add_argument("--images", default="", help="comma-separated stems (default: every image in --data)")
    parser.add_argument("--weights", default=None, help="default: the shipped weights")
    parser.add_argument("--quality", type=int, default=0)
    parser.add_argument("--resize", default="", help="WxH: enlarge each image to this size first (bicubic)")
    parser.add_argument("--activation-budget", type=int, default=20 * 10**6,
                        help="bytes of generator activations in the tiled decode")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="arithmetic of the generator in both decodes (bf16: what --precision auto picks with AMX)")
    parser.add_argument("--json", type=Path, default=Path("tiling_difference.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from latentcodec.api import load_model
    from latentcodec.data.images import load_rgb, pil_to_tensor, tensor_to_uint8
    from latentcodec.nn import tiling
    from PIL import Image

    sides: list[int] = []
    tile_side = tiling.TiledChain.tile_side

    def recording_tile_side(self, site, budget):
        side = tile_side(self, site, budget)
        sides.append(side)
        return side

    tiling.TiledChain.tile_side = recording_tile_side
    model, _, source = load_model("glc-image", args.weights)
    model.eval().set_precision(args.precision)
    paths = sorted(args.data.glob("*.png"))
    if args.images:
        paths = [args.data / f"{stem}.png" for stem in args.images.split(",")]
    results = {}
    for path in tqdm(paths, desc="images"):
        image = load_rgb(path)
        if args.resize:
            image = image.resize(tuple(int(v) for v in args.resize.lower().split("x")), Image.BICUBIC)
        data = model.compress(pil_to_tensor(image), args.quality)
        model.vqgan.generator.memory_budget = None
        whole = tensor_to_uint8(model.decompress(data)).astype(np.int16)
        model.vqgan.generator.memory_budget = args.activation_budget
        sides.clear()
        tiled = tensor_to_uint8(model.decompress(data)).astype(np.int16)
        difference = np.abs(tiled - whole)
        results[path.stem + (f"@{args.resize}" if args.resize else "")] = {"max_difference": int(difference.max()),
                              "fraction_differing": float((difference > 0).mean()),
                              "smallest_tile_side": min(sides) if sides else None}
        tqdm.write(f"{path.stem}: max |tiled - untiled| {difference.max()}, "
                   f"{100 * (difference > 0).mean():.2f}% of values differ, tiles down to {min(sides)} px")
    worst = max(result["max_difference"] for result in results.values())
    summary = {"weights": source, "precision": args.precision, "quality": args.quality, "resize": args.resize or None, "activation_budget": args.activation_budget,
               "command": " ".join(sys.argv), "max_difference": worst, "images": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"largest difference over {len(results)} images: {worst}; wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

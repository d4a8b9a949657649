"""The cross-arithmetic matrix on Kodak: files written in this process (2 threads, NHWC, this CPU)
decoded in fresh processes that emulate other machines, for the portable path and the float path.

    python benchmarks/portability_matrix.py [--images 24] [--json out.json]
    python benchmarks/portability_matrix.py --model dlf --images 6 --portable-only --json out.json

Prints, per arithmetic and per path, how many files decoded to exactly the encoder's latents (DLF: the
fixed-point detail latent and the semantic tokens; PerCoV2: the token map, whose picture is then
sampled in float, so only its tokens must match exactly).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import latentcodec  # noqa: E402
from latentcodec.data.images import pil_to_tensor  # noqa: E402
from latentcodec.evaluation.portability import arithmetic_matrix, decode_fingerprint  # noqa: E402

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--model", default="glc-image", choices=("glc-image", "dlf", "percov2"))
    parser.add_argument("--weights", default=None, help="image weights (default: the shipped default)")
    parser.add_argument("--portable-only", action="store_true", help="skip the float (v1) files")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    codec = latentcodec.load(args.model, weights=args.weights)
    files = sorted(KODAK.glob("*.png"))[: args.images]
    summary = {}
    with tempfile.TemporaryDirectory() as folder:
        for portable in (True,) if args.portable_only else (True, False):
            codec.model.set_portable(portable)
            paths, references = [], []
            for image_path in files:
                with Image.open(image_path) as image:
                    x = pil_to_tensor(image)
                for rate in range(codec.model.num_rates):
                    data = codec.model.compress(x, rate)
                    path = Path(folder) / f"{image_path.stem}_q{rate}_{int(portable)}.lci"
                    path.write_bytes(data)
                    paths.append(path)
                    references.append(decode_fingerprint(data, codec.model))
            model_args = ["--model", args.model] + (["--weights", args.weights] if args.weights else [])
            entries = arithmetic_matrix(paths, references, model_args)
            label = "portable (v2)" if portable else "float (v1)"
            counts = Counter()
            for entry in entries:
                counts[(entry.configuration, "total")] += 1
                counts[(entry.configuration, "exact")] += entry.ok and entry.latents_equal
                counts[(entry.configuration, "failed")] += not entry.ok
                counts[(entry.configuration, "pixels<=1")] += entry.ok and entry.max_pixel_difference <= 1
            table = {}
            for configuration in dict.fromkeys(e.configuration for e in entries):
                row = {k: counts[(configuration, k)] for k in ("total", "exact", "failed", "pixels<=1")}
                table[configuration] = row
                print(f"{label:14s} {configuration:14s} exact latents {row['exact']}/{row['total']}, "
                      f"decode errors {row['failed']}, pixels within 1: {row['pixels<=1']}", flush=True)
            summary[label] = table
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PerCoV2 decode time against the number of sampling steps (issue 12), on one image.

Compresses the image once, then decodes the same file with each ``--steps`` count (median of ``--runs``
after a warm-up) and fits seconds = fixed + per_step x steps, so the cost of one MMDiT evaluation and
the fixed part (token decoding, VAE decoder) can be read off. Without ``--weights`` the ``small``
preset runs with random weights (timing does not depend on the weights; the pictures are noise).

    python benchmarks/bench_percov2.py --threads 2 --steps 1,4,8,20,28 --json out.json
    python benchmarks/bench_percov2.py --weights MODEL_DIR --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="a PerCoV2 save_pretrained folder (default: small, random)")
    parser.add_argument("--image", type=Path, default=REPO.parent / "shared" / "data" / "kodak" / "kodim23.png")
    parser.add_argument("--steps", default="1,4,8,20,28")
    parser.add_argument("--cfg", type=float, default=None, help="guidance scale (only used with a caption)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np
    import torch

    from latentcodec.data.images import load_rgb, pil_to_tensor
    from latentcodec.models.percov2 import PerCoV2, PerCoV2Config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.weights:
        model, source = PerCoV2.from_pretrained(args.weights, device=args.device), args.weights
    else:
        model, source = PerCoV2(PerCoV2Config.small()).to(args.device), "small preset, random weights"
    model.eval()
    x = pil_to_tensor(load_rgb(args.image)).to(args.device)

    def synchronise():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    started = time.perf_counter()
    data = model.compress(x)
    synchronise()
    compress_seconds = time.perf_counter() - started
    rows = []
    for steps in (int(v) for v in args.steps.split(",")):
        times = []
        for run in range(args.runs + 1):
            started = time.perf_counter()
            model.decompress(data, steps=steps, cfg_scale=args.cfg)
            synchronise()
            if run:  # the first run warms up
                times.append(time.perf_counter() - started)
        rows.append({"steps": steps, "decompress_s": statistics.median(times), "runs": times})
        print(f"{steps:3d} steps: {statistics.median(times):7.2f} s", flush=True)
    per_step, fixed = np.polyfit([r["steps"] for r in rows], [r["decompress_s"] for r in rows], 1)
    print(f"compress {compress_seconds:.2f} s ({len(data)} bytes); decode = {fixed:.2f} s + {per_step:.3f} s per step")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    summary = {"weights": source, "image": args.image.name, "threads": args.threads, "device": args.device,
               "command": " ".join(sys.argv), "bytes": len(data), "compress_s": compress_seconds,
               "decode_fixed_s": float(fixed), "decode_per_step_s": float(per_step), "peak_rss_gib": peak,
               "decompress": rows}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

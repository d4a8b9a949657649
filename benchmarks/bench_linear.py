"""nn.Linear through torch's BLAS against :func:`latentcodec.nn.functional.onednn_linear`, same process.

Shapes are those of DLF's official preset on kodim23 (6 windows of 257 + 32 tokens, ViT-L widths)
and of the small presets. Prints the median time of each, GFLOP/s and the ratio.

    python benchmarks/bench_linear.py --threads 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from latentcodec.nn.functional import onednn_linear

SHAPES = [(1734, 1024, 4096), (1734, 4096, 1024), (1734, 1024, 3072), (1734, 1024, 1024), (1024, 512, 2048),
          (384, 256, 256)]


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'rows x in -> out':>22} {'F.linear':>10} {'oneDNN':>10} {'ratio':>6}")
    with torch.no_grad():
        for n, c, o in SHAPES:
            x, w, b = torch.randn(n, c), torch.randn(o, c), torch.randn(o)
            blas = median_seconds(lambda: F.linear(x, w, b), args.repeats)
            onednn = median_seconds(lambda: onednn_linear(x, w, b), args.repeats)
            flops = 2 * n * c * o
            rows.append({"rows": n, "in": c, "out": o, "blas_s": blas, "onednn_s": onednn,
                         "blas_gflops": flops / blas / 1e9, "onednn_gflops": flops / onednn / 1e9,
                         "ratio": onednn / blas})
            print(f"{f'{n} x {c} -> {o}':>22} {blas * 1e3:8.1f}ms {onednn * 1e3:8.1f}ms {onednn / blas:5.2f}x"
                  f"   ({flops / blas / 1e9:.0f} vs {flops / onednn / 1e9:.0f} GFLOP/s)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"threads": args.threads, "torch": torch.__version__, "shapes": rows}, handle, indent=2)


if __name__ == "__main__":
    main()

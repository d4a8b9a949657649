"""Peak RSS of PerCoV2's VAE decoder on one large latent, tiled under a budget and untiled (issue 13).

Each configuration runs in a fresh process (ru_maxrss), with random weights of the chosen VAE layout:
``sd3`` is SD3-medium's AutoencoderKL (widths 128/256/512/512), ``small`` the shipped preset's. The
sampling loop is left out: its MMDiT works at latent resolution, the VAE decoder at full resolution.

    python benchmarks/percov2_vae_memory.py --vae sd3 --size 2304x1728 --max-memory 2GB --json out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def child(args) -> None:
    import torch

    from latentcodec.models import percov2_sd3 as sd3
    from latentcodec.models.percov2 import small_vae_config
    from latentcodec.models.percov2_tiling import vae_decode
    from latentcodec.nn.tiling import activation_budget, parse_memory_size
    from latentcodec.runtime import release_freed_memory

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = sd3.sd3_medium_vae_config() if args.vae == "sd3" else small_vae_config()
    vae = sd3.build_vae(config).eval()
    vae.memory_budget = None
    if args.max_memory:
        release_freed_memory()
        vae.memory_budget = activation_budget(parse_memory_size(args.max_memory), vae)
    width, height = (int(v) for v in args.size.lower().split("x"))
    z = torch.randn(1, 16, height // 8, width // 8)
    started = time.perf_counter()
    with torch.inference_mode():
        image = vae_decode(vae, z)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak, "shape": list(image.shape)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", choices=("sd3", "small"), default="sd3")
    parser.add_argument("--size", default="2304x1728")
    parser.add_argument("--max-memory", default="2GB", help="the tiled run's budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    results = {}
    for mode, budget in (("tiled", args.max_memory), ("untiled", "")):
        command = [sys.executable, __file__, "--child", "--vae", args.vae, "--size", args.size,
                   "--threads", str(args.threads), "--max-memory", budget]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
        print(f"{mode:>8}: peak RSS {results[mode]['peak_rss_bytes'] / 1e9:.2f} GB, {results[mode]['seconds']:.1f} s",
              flush=True)
    summary = {"vae": args.vae, "size": args.size, "max_memory": args.max_memory, "threads": args.threads,
               "command": " ".join(sys.argv), **results}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

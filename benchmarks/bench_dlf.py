"""DLF encode/decode time and peak memory on one image, each configuration in a fresh process.

    python benchmarks/bench_dlf.py --weights ~/.cache/latentcodec/dlf_synthetic/dlf_qp0.pth --threads 2
    python benchmarks/bench_dlf.py --preset small --threads 2            # the default's architecture

Per configuration: one warm-up compress + decompress, then ``--runs`` timed ones (median), and the
process's peak RSS. ``compress`` is the whole file (network + entropy coding), ``decompress`` the
whole picture. The baseline, run in the same invocation, is the same model with the reference's
operator choices (NCHW VQGAN; explicit softmax attention instead of fused scaled-dot-product
attention; linear layers through torch's BLAS, not oneDNN), so the ratio isolates what our implementation choices buy. The official
implementation's network-only times (README of ../shared/reference/dlf, section 6: 34.4 s encode,
62.0 s decode for kodim23 on 2 threads, 8.05 GiB peak, on an earlier 2-core AMD EPYC VM) are printed
beside them for reference; they were not measured on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

OFFICIAL_SECONDS = {"compress": 34.4, "decompress": 62.0}
OFFICIAL_PEAK_GIB = 8.05


def child(args) -> dict:
    import torch

    import latentcodec.nn.swin as swin
    import latentcodec.tokenizers.vqgan as vqgan_blocks
    from latentcodec.api import load_model
    from latentcodec.data.images import load_rgb, pil_to_tensor
    from latentcodec.models.dlf import DLF, PRESETS
    from latentcodec.nn.functional import use_onednn_linears

    torch.set_num_threads(args.threads)
    if args.reference_ops:
        swin.FUSED_ATTENTION = False
        vqgan_blocks.FUSED_ATTENTION = False
    started = time.perf_counter()
    if args.weights:
        model = load_model("dlf", args.weights)[0]
    else:
        torch.manual_seed(0)
        model = DLF(PRESETS[args.preset]())
    model.eval().set_portable(not args.float)
    if hasattr(model, "set_memory_format"):
        model.set_memory_format(torch.contiguous_format if args.reference_ops else torch.channels_last)
    use_onednn_linears(model, not args.reference_ops)
    load_seconds = time.perf_counter() - started
    x = pil_to_tensor(load_rgb(args.image))
    times = {"compress": [], "decompress": []}
    data = b""
    for run in range(args.runs + 1):
        started = time.perf_counter()
        data = model.compress(x, 0)
        middle = time.perf_counter()
        model.decompress(data)
        done = time.perf_counter()
        if run:  # the first run warms up
            times["compress"].append(middle - started)
            times["decompress"].append(done - middle)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"load_seconds": load_seconds, "bytes": len(data), "peak_rss_gib": peak,
            **{k: statistics.median(v) for k, v in times.items()}, "runs": times}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="DLF weights (an official .pth or a save_pretrained folder)")
    parser.add_argument("--preset", default="small", help="without --weights: random weights of this preset")
    parser.add_argument("--image", default="../shared/data/kodak/kodim23.png")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--float", action="store_true", help="float entropy parameters (format version 1)")
    parser.add_argument("--reference-ops", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="JSON to write")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    results = {}
    for name, extra in (("ours", []), ("baseline", ["--reference-ops"])):
        command = [sys.executable, __file__, "--child", "--image", args.image, "--threads", str(args.threads),
                   "--runs", str(args.runs), "--preset", args.preset, *extra]
        if args.weights:
            command += ["--weights", args.weights]
        if args.float:
            command.append("--float")
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return 1
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    ours, base = results["ours"], results["baseline"]
    print(f"{'':>11} {'ours':>9} {'baseline':>9} {'ratio':>6}   official (other machine)")
    for key in ("compress", "decompress"):
        official = f"{OFFICIAL_SECONDS[key]:.1f} s ({ours[key] / OFFICIAL_SECONDS[key]:.2f}x)" if args.weights else "-"
        print(f"{key:>11} {ours[key]:>8.2f}s {base[key]:>8.2f}s {ours[key] / base[key]:>6.2f}   {official}")
    print(f"{'peak RSS':>11} {ours['peak_rss_gib']:>6.2f}GiB {base['peak_rss_gib']:>6.2f}GiB "
          f"{ours['peak_rss_gib'] / base['peak_rss_gib']:>6.2f}   {OFFICIAL_PEAK_GIB} GiB")
    print(f"file: {ours['bytes']} bytes; load {ours['load_seconds']:.1f} s")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"threads": args.threads, "weights": args.weights, "preset": None if args.weights else args.preset,
                       "official_seconds": OFFICIAL_SECONDS, "official_peak_gib": OFFICIAL_PEAK_GIB, **results},
                      handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

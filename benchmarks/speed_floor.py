"""The fastest GLC-image's compress and decompress could be on this machine, against the NCHW
baseline of ``bench_codec.py --baseline`` measured in the same run: is a speed-ratio target
reachable at this precision at all, or only with fewer or cheaper multiply-adds?

Counts the matrix FLOPs of one compress and one decompress (torch's flop formulas, under a
dispatch mode that splits them by dtype): the pixel nets' convolutions (float32, or bfloat16
with ``--precision bf16``) and the exact integer nets' float64 matrix products. Measures this
machine's rate for each on a large, representative product (a 128-channel 3x3 conv on a 768x512
map, channels_last, the VQGAN's full-resolution layer; a 1536x512 @ 512x2048 float64 GEMM, the
context nets' widest layer on a Kodak latent), and prints

    floor = conv FLOPs / conv rate + float64 FLOPs / float64 rate

the time with every elementwise operation, the entropy coder and Python free of charge, beside
our measured time and the baseline's, and the floor's ratio to the baseline. A floor above the
target ratio means the target needs another algorithm or arithmetic, not more tuning.

    python benchmarks/speed_floor.py --threads 2
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/speed_floor.py --threads 2
    python benchmarks/speed_floor.py --threads 2 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_codec import baseline_row, load_model, measure, set_allocator, timed  # noqa: E402
from profile_codec import add_run_arguments  # noqa: E402

from latentcodec.data.images import load_rgb, pil_to_tensor  # noqa: E402


aten = torch.ops.aten


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def matrix_flops(func, args, kwargs, out) -> float | None:
    """FLOPs of one matrix operation, or None for any other. Under inference mode torch dispatches
    conv2d, conv_transpose2d, linear and matmul before decomposing them, so those are counted here
    (a multiply-add is 2 FLOPs); mm, bmm and convolution by torch's own formulas."""
    packet = func._overloadpacket
    if packet in flop_registry:
        return flop_registry[packet](*args, **kwargs, out_val=out)
    if packet is aten.conv2d:  # weight (out, in / groups, kh, kw): each output sums weight[0] products
        return 2 * out.numel() * args[1][0].numel()
    if packet is aten.conv_transpose2d:  # weight (in, out / groups, kh, kw): each input feeds weight[0]
        return 2 * args[0].numel() * args[1][0].numel()
    if packet in (aten.matmul, aten.linear):
        return 2 * out.numel() * args[0].shape[-1]
    return None


class FlopsByDtype(TorchDispatchMode):
    """Matrix FLOPs (convolutions and matrix products) per operand dtype. Attention kernels and
    every elementwise op count nothing, so the totals are lower bounds."""

    def __init__(self):
        super().__init__()
        self.flops: dict[str, float] = defaultdict(float)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flops = matrix_flops(func, args, kwargs, out)
        if flops:
            self.flops[dtype_name(args[0].dtype)] += flops
        return out


@torch.no_grad()
def conv_rate(dtype: torch.dtype, repeats: int) -> float:
    """FLOP/s of the VQGAN's full-resolution 3x3 conv (128 channels, 768x512) in the codec's
    memory format, in float32 or under autocast to ``dtype`` as the pixel nets run."""
    x = torch.randn(1, 128, 512, 768).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(128, 128, 3, 3), torch.randn(128)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        _, seconds = timed(lambda: F.conv2d(x, weight, bias, padding=1), repeats, 1)
    return 2 * 128 * 128 * 9 * 512 * 768 / seconds


def float64_gemm_rate(repeats: int) -> float:
    a, b = torch.randn(1536, 512, dtype=torch.float64), torch.randn(512, 2048, dtype=torch.float64)
    _, seconds = timed(lambda: torch.mm(a, b), repeats, 1)
    return 2 * 1536 * 512 * 2048 / seconds


def count_flops(run) -> dict[str, float]:
    with torch.no_grad(), FlopsByDtype() as counter:
        run()
    return dict(counter.flops)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--target", type=float, default=0.6, help="the ratio to the baseline asked for")
    parser.add_argument("--json", type=Path, default=Path("speed_floor.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, source = load_model(args.weights, args.shared)
    model.set_precision(args.precision)
    pixels = pil_to_tensor(load_rgb(args.data / f"{args.image}.png"))
    # bench_codec's own settings for the baseline child and the allocator of ours
    args.synthetic, args.as_official, args.max_memory, args.warmup = None, False, None, 1
    set_allocator(args, pixels.shape[-1] * pixels.shape[-2])
    pixel_dtype = dtype_name(model.compute_dtype)
    print(f"model: {source}; {args.image}, q{args.quality}, {args.threads} threads, {pixel_dtype} pixel nets")

    data = model.compress(pixels, args.quality)
    flops = {"compress": count_flops(lambda: model.compress(pixels, args.quality)),
             "decompress": count_flops(lambda: model.decompress(data))}
    # float32 too when the pixel nets run lower: the analysis transform and hyper nets stay float32
    rates = {dtype_name(dtype): conv_rate(dtype, args.repeats)
             for dtype in dict.fromkeys((model.compute_dtype, torch.float32))}
    rates["float64"] = float64_gemm_rate(args.repeats)
    print("rates: " + ", ".join(f"{dtype} {rate / 1e9:.0f} GFLOP/s" for dtype, rate in rates.items())
          + " (3x3 conv; float64: GEMM)")
    ours = measure(model, pixels, args.quality, args.repeats, args.warmup)
    base = baseline_row(args, args.image, args.quality)

    rows = {}
    for direction, key in (("compress", "encode_s"), ("decompress", "decode_s")):
        counted = flops[direction]
        unrated = sorted(set(counted) - set(rates))
        if unrated:
            sys.exit(f"speed_floor: no measured rate for {unrated} FLOPs")
        floor = sum(counted[dtype] / rates[dtype] for dtype in counted)
        rows[direction] = {
            "gflop": {dtype: value / 1e9 for dtype, value in counted.items()},
            "floor_s": floor, "ours_s": ours[key], "baseline_s": base[key],
            "floor_ratio": floor / base[key], "ours_ratio": ours[key] / base[key],
        }
        spelled = ", ".join(f"{value / 1e9:.0f} GFLOP {dtype}" for dtype, value in counted.items())
        print(f"{direction}: {spelled}; floor {floor:.2f} s, ours {ours[key]:.2f} s, baseline {base[key]:.2f} s; "
              f"floor/baseline {floor / base[key]:.2f}x, ours/baseline {ours[key] / base[key]:.2f}x "
              f"({'reachable' if floor / base[key] <= args.target else 'out of reach'} at {args.target}x)")
    args.json.write_text(json.dumps({
        "model": source, "image": args.image, "threads": args.threads, "pixel_dtype": pixel_dtype,
        "rates_gflops": {dtype: rate / 1e9 for dtype, rate in rates.items()}, "target_ratio": args.target,
        **rows}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

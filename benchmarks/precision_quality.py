"""What bfloat16 pixel nets (``--precision bf16``, "auto" on CPUs with AMX) cost in quality and buy in time.

For every image, with the model's pixel-space nets in float32 and then in bfloat16:

* **decode only**: the float32 file decoded both ways; the largest and mean 8-bit difference between
  the two pictures (the entropy path is integer, so both decode the same symbols) and their PSNR;
* **whole codec**: a file written in bfloat16 and decoded in bfloat16 against the float32 round trip:
  bytes and PSNR (the encoder in bfloat16 may round a latent to a neighbouring symbol);
* encode and decode wall time of each (one run after a warm-up on the first image).

    python benchmarks/precision_quality.py --model glc-image --threads 2 --json docs/results/precision_glc_image_default.json

Bits and pixels are only comparable on one machine; bfloat16 is several times faster only on CPUs
with AMX (elsewhere it runs, slower than float32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


def to_u8(image) -> torch.Tensor:
    from latentcodec.data.images import pil_to_tensor

    tensor = pil_to_tensor(image)
    return (tensor * 255).round()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(255.0**2 / mse)).item()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="glc-image")
    parser.add_argument("--weights", default=None, help="default: the shipped weights")
    parser.add_argument("--quality", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="first N images only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import latentcodec
    from latentcodec.data.images import load_rgb

    codecs = {p: latentcodec.load(args.model, quality=args.quality, weights=args.weights, precision=p)
              for p in ("fp32", "bf16")}
    paths = sorted(args.data.glob("*.png"))[: args.limit or None]
    first = load_rgb(paths[0])
    for codec in codecs.values():  # warm-up
        codec.decompress(codec.compress(first))
    rows = []
    for path in tqdm(paths, desc=f"{args.model} fp32 vs bf16", unit="image"):
        original = load_rgb(path)
        reference = to_u8(original)
        row = {"image": path.name}
        data32, row["encode_s_fp32"] = timed(lambda: codecs["fp32"].compress(original))
        data16, row["encode_s_bf16"] = timed(lambda: codecs["bf16"].compress(original))
        pixels32, row["decode_s_fp32"] = timed(lambda: to_u8(codecs["fp32"].decompress(data32)))
        same_file16, row["decode_s_bf16"] = timed(lambda: to_u8(codecs["bf16"].decompress(data32)))
        own16 = to_u8(codecs["bf16"].decompress(data16))
        difference = (same_file16 - pixels32).abs()
        row.update(
            bytes_fp32=len(data32), bytes_bf16=len(data16), same_file=data32 == data16,
            psnr_fp32=psnr(pixels32, reference), psnr_bf16_decode=psnr(same_file16, reference),
            psnr_bf16_codec=psnr(own16, reference),
            decode_max_diff=int(difference.max()), decode_mean_diff=difference.mean().item(),
            decode_share_over_1=(difference > 1).float().mean().item(),
        )
        rows.append(row)

    def mean(key):
        return statistics.fmean(r[key] for r in rows)

    summary = {key: mean(key) for key in rows[0] if key not in ("image", "same_file")}
    summary["decode_max_diff"] = max(r["decode_max_diff"] for r in rows)
    summary["same_files"] = sum(r["same_file"] for r in rows)
    print(f"{args.model} q{args.quality}, {len(rows)} images, {args.threads} threads, "
          f"bf16 matrix units here: {codecs['bf16'].model.compute_dtype}")
    print(f"  decode of the float32 file in bf16: largest difference {summary['decode_max_diff']} levels, "
          f"mean {summary['decode_mean_diff']:.3f}, {100 * summary['decode_share_over_1']:.2f} % of values over 1; "
          f"PSNR {summary['psnr_fp32']:.3f} -> {summary['psnr_bf16_decode']:.3f} dB")
    print(f"  whole codec in bf16: {summary['bytes_fp32']:.1f} -> {summary['bytes_bf16']:.1f} bytes, "
          f"PSNR {summary['psnr_fp32']:.3f} -> {summary['psnr_bf16_codec']:.3f} dB, "
          f"{summary['same_files']} of {len(rows)} files identical")
    print(f"  time: encode {summary['encode_s_fp32']:.3f} -> {summary['encode_s_bf16']:.3f} s "
          f"(x{summary['encode_s_bf16'] / summary['encode_s_fp32']:.2f}), decode {summary['decode_s_fp32']:.3f} -> "
          f"{summary['decode_s_bf16']:.3f} s (x{summary['decode_s_bf16'] / summary['decode_s_fp32']:.2f})")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "weights": args.weights, "quality": args.quality,
                                         "threads": args.threads, "summary": summary, "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

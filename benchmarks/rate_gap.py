"""Where the file's bits differ from GLC's estimate: a per-element breakdown for one image.

The official estimate clamps sigma at 1e-5 and floors every likelihood at 1e-5 (so no symbol
costs more than 16.6 bits), while the real coder snaps sigma to a table starting at 0.11, uses
24-bit integer frequencies and escapes symbols beyond about 4 sigma. This script splits y's
elements by predicted sigma and by whether the symbol is zero, and sums both costs per group,
then adds the z section, the container header and the range coder's termination.

    python benchmarks/rate_gap.py --weights official-deterministic --image kodim23 --quality 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_codec import DEFAULT_SHARED, load_model  # noqa: E402

from latentcodec.bitstream import read_image_file  # noqa: E402
from latentcodec.data.images import load_rgb, pil_to_tensor  # noqa: E402
from latentcodec.entropy import DEFAULT_SCALE_TABLE, gaussian_code_bits, gaussian_residual_bits  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--image", default="kodim23")
    parser.add_argument("--quality", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, source = load_model(args.weights, args.shared)
    x = pil_to_tensor(load_rgb(args.shared / "data" / "kodak" / f"{args.image}.png"))
    result = model.encode(x, args.quality)
    with torch.inference_mode():
        encoded = model.analyse(model.pad(x), args.quality)
    symbols, scales = encoded.steps.symbols, encoded.steps.scales
    estimate = gaussian_residual_bits(symbols, scales)
    index = DEFAULT_SCALE_TABLE.index(scales)
    lo, hi = DEFAULT_SCALE_TABLE.min_scale, DEFAULT_SCALE_TABLE.max_scale
    groups = {
        f"sigma < {lo}, r = 0": (scales < lo) & (symbols == 0),
        f"sigma < {lo}, r != 0": (scales < lo) & (symbols != 0),
        f"{lo} <= sigma <= {hi}": (scales >= lo) & (scales <= hi),
        f"sigma > {hi}": scales > hi,
    }
    print(f"model: {source}; {args.image} q{args.quality}; {symbols.numel()} y elements")
    print(f"{'group':<24}{'elements':>10}{'estimate bits':>15}{'coder bits':>13}{'difference':>12}")
    total_estimate = total_coded = 0.0
    for name, mask in groups.items():
        est = float(estimate[mask].double().sum())
        coded = gaussian_code_bits(symbols[mask], index[mask])
        total_estimate += est
        total_coded += coded
        print(f"{name:<24}{int(mask.sum()):>10}{est:>15.0f}{coded:>13.0f}{coded - est:>12.0f}")
    height, width = x.shape[-2:]
    z_bits = model.z_bits_per_image(height, width)
    file_bits = 8 * len(result.data)
    parsed = read_image_file(result.data, model.layout)
    z_section_bits = 8 * len(parsed.sections[0])
    header_bits = file_bits - 8 * sum(len(s) for s in parsed.sections)
    termination = 8 * len(parsed.sections[1]) - total_coded
    print(f"{'y total':<24}{symbols.numel():>10}{total_estimate:>15.0f}{total_coded:>13.0f}{total_coded - total_estimate:>12.0f}")
    print(f"z: estimate {z_bits} bits, section {z_section_bits} bits (byte-rounded)")
    print(f"container header + CRC: {header_bits} bits; range-coder termination and rounding: {termination:.0f} bits")
    print(f"file {file_bits} bits vs official estimate {result.estimated_bits:.0f} bits: "
          f"+{file_bits - result.estimated_bits:.0f} bits ({100 * (file_bits - result.estimated_bits) / file_bits:.2f} % of the file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

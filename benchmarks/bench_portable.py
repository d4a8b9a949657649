"""The cost of the portable integer path against the float path, measured side by side.

    python benchmarks/bench_portable.py                                   # shipped default, all Kodak
    python benchmarks/bench_portable.py --weights official-deterministic --images 6

Prints and writes (``--json``):
* rate: per rate index, the mean relative size difference of the portable file against the float
  file of the same image (every byte counted), over the chosen Kodak images;
* speed on one image (kodim23 by default): compress and decompress time for both paths,
  alternating runs in this process, and the share of portable decode time spent in the integer nets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_codec import DEFAULT_SHARED, load_model  # noqa: E402

from latentcodec.data.images import pil_to_tensor  # noqa: E402
from latentcodec.errors import LatentCodecError  # noqa: E402


def image_tensor(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return pil_to_tensor(image)


class NetTimer:
    """Wall time inside the top-level integer twins (forward hooks)."""

    def __init__(self, nets: torch.nn.Module):
        self.seconds = 0.0
        self._start: list[float] = []
        for module in nets.children():
            module.register_forward_pre_hook(lambda *_: self._start.append(time.perf_counter()))
            module.register_forward_hook(lambda *_: self._stop())

    def _stop(self) -> None:
        self.seconds += time.perf_counter() - self._start.pop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="as bench_codec.py: none (shipped default), a folder, "
                                                        "or official-deterministic")
    parser.add_argument("--images", type=int, default=24, help="first N Kodak images for the rate comparison (0: speed only)")
    parser.add_argument("--speed-image", default="kodim23.png")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-speed", dest="speed", action="store_false", help="rate comparison only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, source = load_model(args.weights, args.shared)
    kodak = args.shared / "data" / "kodak"
    files = sorted(kodak.glob("*.png"))[: args.images]

    sizes = {q: [] for q in range(model.num_rates)}
    skipped: list[str] = []
    with torch.inference_mode():
        for path in tqdm(files, desc="rate", unit="image"):
            x = image_tensor(path)
            for q in range(model.num_rates):
                try:
                    portable = len(model.set_portable(True).compress(x, q))
                    floating = len(model.set_portable(False).compress(x, q))
                except LatentCodecError as exc:  # synthetic weights do not code every image
                    skipped.append(f"{path.name} q{q}: {str(exc)[:80]}")
                    continue
                sizes[q].append((portable, floating))
    rate = {}
    for q, pairs in sizes.items():
        if not pairs:
            continue
        differences = [p / f - 1 for p, f in pairs]
        rate[q] = {"mean_relative_difference": statistics.mean(differences), "max": max(differences),
                   "min": min(differences), "portable_bytes": statistics.mean(p for p, _ in pairs),
                   "float_bytes": statistics.mean(f for _, f in pairs)}
        print(f"rate {q}: portable {rate[q]['portable_bytes']:.1f} B, float {rate[q]['float_bytes']:.1f} B, "
              f"mean {100 * rate[q]['mean_relative_difference']:+.3f} % "
              f"(range {100 * rate[q]['min']:+.2f} .. {100 * rate[q]['max']:+.2f} %) over {len(pairs)} images")

    for line in skipped:
        print(f"skipped (not codable by these weights): {line}")
    speed, share = {}, None
    if args.speed:
        speed, share = measure_speed(model, image_tensor(kodak / args.speed_image), args)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": source, "images": len(files), "rate": rate, "skipped": skipped,
                                               "speed": speed, "speed_image": args.speed_image,
                                               "integer_net_share_of_decode": share, "threads": args.threads},
                                              indent=2) + "\n")
    return 0


def measure_speed(model, x: torch.Tensor, args) -> tuple[dict, float]:
    times = {"compress": {True: [], False: []}, "decompress": {True: [], False: []}}
    nets = model.integer_decoder_side()
    timer = NetTimer(nets)
    net_share = []
    with torch.inference_mode():
        for _ in range(args.repeats + 1):  # the first round warms up
            for portable in (True, False):
                model.set_portable(portable)
                start = time.perf_counter()
                data = model.compress(x, 0)
                middle = time.perf_counter()
                timer.seconds = 0.0
                model.decompress(data)
                end = time.perf_counter()
                times["compress"][portable].append(middle - start)
                times["decompress"][portable].append(end - middle)
                if portable:
                    net_share.append(timer.seconds / (end - middle))
    speed = {}
    for phase, by_path in times.items():
        portable, floating = (statistics.median(v[1:]) for v in (by_path[True], by_path[False]))
        speed[phase] = {"portable_s": portable, "float_s": floating, "ratio": portable / floating}
        print(f"{phase}: portable {portable:.3f} s, float {floating:.3f} s, ratio {portable / floating:.3f}")
    share = statistics.median(net_share[1:])
    print(f"integer nets: {100 * share:.1f} % of portable decode time ({args.speed_image}, {args.threads} threads)")
    return speed, share


if __name__ == "__main__":
    sys.exit(main())

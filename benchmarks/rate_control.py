"""Rate control measured on Kodak with the shipped default (issue 14).

Two parts, each writing one JSON file (and printing a summary):

* ``targets``: per image and target size (bytes), the target-size search (``compress_to_target``,
  with ``--allow-downscale`` by default since most Kodak files are above 1000 bytes at the lowest
  rate): achieved bytes / target, real encodes, estimates, the coding scale, and the search's wall
  time against one plain compress of the same image at quality 0 (timed in the same process).
* ``grid``: real file bytes on a grid of ``--grid`` qualities from 0 to the highest, per image,
  and the worst inversion (the largest drop in bytes from one quality to the next higher one).

    python benchmarks/rate_control.py targets --out docs/results/rate_control_targets.json
    python benchmarks/rate_control.py grid --images kodim01,kodim05,kodim14,kodim23 \\
        --out docs/results/rate_control_grid.json
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

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "data" / "kodak"


def kodak_images(names: str | None) -> list[Path]:
    paths = sorted(KODAK.glob("kodim*.png"))
    if names:
        wanted = set(names.split(","))
        paths = [p for p in paths if p.stem in wanted]
    if not paths:
        sys.exit(f"no Kodak images found in {KODAK}")
    return paths


def measure_targets(codec, paths: list[Path], targets: list[int], allow_downscale: bool, save=None) -> dict:
    from latentcodec.ratecontrol import TargetUnreachable

    rows = []
    for path in tqdm(paths, desc="images", unit="image", file=sys.stderr):
        picture = Image.open(path).convert("RGB")
        start = time.perf_counter()
        single = codec.compress(picture)
        single_s = time.perf_counter() - start
        for target in targets:
            start = time.perf_counter()
            try:
                result = codec.compress_to_target(picture, target_bytes=target, allow_downscale=allow_downscale)
            except TargetUnreachable as exc:
                rows.append({"image": path.stem, "target_bytes": target, "reachable": False,
                             "smallest_bytes": exc.smallest_bytes, "encodes": exc.encodes,
                             "search_s": time.perf_counter() - start, "single_compress_s": single_s})
                continue
            search_s = time.perf_counter() - start
            decoded = codec.decompress(result.data)
            assert decoded.size == picture.size
            rows.append({"image": path.stem, "target_bytes": target, "reachable": True, "bytes": result.size,
                         "fraction": result.size / target, "rate": result.rate, "scale": result.scale,
                         "encodes": result.encodes, "estimates": result.estimates, "search_s": search_s,
                         "single_compress_s": single_s, "single_compress_bytes": len(single),
                         "time_ratio": search_s / single_s, "trials": [list(t) for t in result.trials]})
            tqdm.write(f"{path.stem} {target}: {result.size} B (rate {result.rate:g}, scale {result.scale}), "
                       f"{result.encodes} encodes, {search_s:.1f} s vs {single_s:.1f} s", file=sys.stderr)
        if save is not None:
            save({"summary": target_summary(rows, targets), "rows": rows})
    return {"summary": target_summary(rows, targets), "rows": rows}


def target_summary(rows: list[dict], targets: list[int]) -> dict:
    summary = {}
    for target in targets:
        ok = [r for r in rows if r["target_bytes"] == target and r["reachable"]]
        if not ok:
            summary[str(target)] = {"reachable_images": 0}
            continue
        summary[str(target)] = {
            "reachable_images": len(ok),
            "images": sum(r["target_bytes"] == target for r in rows),
            "downscaled_images": sum(r["scale"] != 0 for r in ok),
            "mean_fraction": statistics.fmean(r["fraction"] for r in ok),
            "min_fraction": min(r["fraction"] for r in ok),
            "max_fraction": max(r["fraction"] for r in ok),
            "mean_encodes": statistics.fmean(r["encodes"] for r in ok),
            "max_encodes": max(r["encodes"] for r in ok),
            "mean_estimates": statistics.fmean(r["estimates"] for r in ok),
            "mean_search_s": statistics.fmean(r["search_s"] for r in ok),
            "mean_single_compress_s": statistics.fmean(r["single_compress_s"] for r in ok),
            "mean_time_ratio": statistics.fmean(r["time_ratio"] for r in ok),
        }
    return summary


def measure_grid(codec, paths: list[Path], points: int, save=None) -> dict:
    from latentcodec.data.images import pil_to_tensor
    from latentcodec.ratecontrol import rate_from_code

    model = codec.model
    rows = []
    for path in tqdm(paths, desc="images", unit="image", file=sys.stderr):
        picture = Image.open(path).convert("RGB")
        trials = model.rate_trials(pil_to_tensor(picture).to(codec.device))
        codes = sorted({round(i * trials.max_code / (points - 1)) for i in range(points)})
        sizes = [len(trials.encode(code)) for code in tqdm(codes, desc=path.stem, leave=False, file=sys.stderr)]
        rows.append(grid_row(path.stem, [rate_from_code(c) for c in codes], sizes, picture.width * picture.height))
        if save is not None:
            save(grid_result(rows, points))
    return grid_result(rows, points)


def grid_row(name: str, qualities: list, sizes: list[int], pixels: int) -> dict:
    """File sizes over a quality grid and their inversions (a drop in bytes from one quality to the
    next higher one); ``pixels`` counts every coded pixel (all frames of a clip)."""
    drops = [(sizes[i] - sizes[i + 1], i) for i in range(len(sizes) - 1)]
    worst, at = max(drops)
    row = {"image": name, "qualities": qualities, "bytes": sizes, "bpp": [8 * s / pixels for s in sizes],
           "inversions": sum(d > 0 for d, _ in drops), "worst_inversion_bytes": max(worst, 0),
           "worst_inversion_at": [qualities[at], qualities[at + 1]] if worst > 0 else None,
           "worst_inversion_fraction": max(worst, 0) / sizes[at]}
    tqdm.write(f"{name}: {sizes[0]}..{sizes[-1]} B, {row['inversions']} inversions, worst "
               f"{row['worst_inversion_bytes']} B", file=sys.stderr)
    return row


def grid_result(rows: list[dict], points: int) -> dict:
    return {"points": points, "rows": rows,
            "summary": {"images": len(rows), "inversions": sum(r["inversions"] for r in rows),
                        "steps": sum(len(r["bytes"]) - 1 for r in rows),
                        "worst_inversion_bytes": max(r["worst_inversion_bytes"] for r in rows),
                        "worst_inversion_fraction": max(r["worst_inversion_fraction"] for r in rows)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("targets", "grid"))
    parser.add_argument("--images", help="comma-separated Kodak ids (default all 24)")
    parser.add_argument("--targets", default="500,1000,2000", help="target sizes in bytes")
    parser.add_argument("--no-downscale", action="store_true", help="targets: never downscale")
    parser.add_argument("--grid", type=int, default=50, help="grid: number of qualities")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()

    import latentcodec

    torch.set_num_threads(args.threads)
    codec = latentcodec.load("glc-image")
    paths = kodak_images(args.images)
    started = time.time()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(partial: dict, complete: bool = False) -> dict:
        # Rewritten after every image, so an interrupted run keeps what it measured.
        payload = {"command": " ".join(["python", *sys.argv]), "weights": codec.weights_source,
                   "threads": args.threads, "complete": complete, "wall_s": time.time() - started, **partial}
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(out)
        return payload

    if args.part == "targets":
        result = measure_targets(codec, paths, [int(t) for t in args.targets.split(",")], not args.no_downscale, save)
    else:
        result = measure_grid(codec, paths, args.grid, save)
    print(json.dumps(save(result, complete=True)["summary"], indent=2))


if __name__ == "__main__":
    main()

"""Every codec at the same byte budgets: a markdown table from a ``latentcodec eval --target-bpp`` folder.

Per target bpp and codec, over the images: how many files fit the budget (the others are
unreachable even downscaled), the mean bpp, the mean fraction of the budget used (file bytes over
floor(target x H x W / 8)), how many were coded downscaled, and the mean of each metric. Also
writes the target records alone as JSON (``--json``), so the per-image figures can be kept without
the whole eval folder.

    python benchmarks/target_bpp_table.py OUT --json docs/results/rate_control_eval_kodak24.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from latentcodec.evaluation.runner import MODE_TARGET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dir", type=Path, help="the --out folder of latentcodec eval")
    parser.add_argument("--json", type=Path, default=None, help="also write the target records here")
    args = parser.parse_args()

    records = [r for r in json.loads((args.eval_dir / "per_image.json").read_text()) if r["mode"] == MODE_TARGET]
    if not records:
        raise SystemExit(f"{args.eval_dir}: no --target-bpp records")
    run = json.loads((args.eval_dir / "run.json").read_text())
    metrics = [m for m in run.get("metrics", []) if any(m in r["metrics"] for r in records)]
    codecs = sorted({r["codec"] for r in records}, key=lambda c: (c != run.get("model"), c))  # the model first
    lines = ["| target bpp | codec | files within budget | mean bpp | mean bytes / budget | downscaled | "
             + " | ".join(f"mean {m}" for m in metrics) + " |",
             "|---" * (6 + len(metrics)) + "|"]
    for target in sorted({r["target_bpp"] for r in records}):
        for codec in codecs:
            rows = [r for r in records if r["target_bpp"] == target and r["codec"] == codec]
            ok = [r for r in rows if r["status"] == "ok"]
            if not ok:
                lines.append(f"| {target:g} | {codec} | 0/{len(rows)} |" + " – |" * (3 + len(metrics)))
                continue
            used = [r["bytes"] / math.floor(target * r["height"] * r["width"] / 8) for r in ok]
            means = [statistics.fmean(r["metrics"][m] for r in ok) for m in metrics]
            lines.append(f"| {target:g} | {codec} | {len(ok)}/{len(rows)} | {statistics.fmean(r['bpp'] for r in ok):.5f} "
                         f"| {statistics.fmean(used):.4f} | {sum(downscaled(r) for r in ok)} | "
                         + " | ".join(f"{v:.4f}" if v < 1 else f"{v:.2f}" for v in means) + " |")
    print("\n".join(lines))
    if args.json is not None:
        keep = ("image", "codec", "target_bpp", "status", "height", "width", "bytes", "bpp", "value", "scale",
                "metrics", "search_s", "note")
        slim = [{k: r.get(k) for k in keep if k in r} for r in records]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"eval_run": "run.json in the eval folder (model, data, baselines, scales, targets)", "records": slim}, indent=1) + "\n")


def downscaled(record: dict) -> bool:
    """Coded smaller than the original: a classical scale factor above 1, or the learned codec's
    rate control coding at n/64 (its note says so)."""
    return (record.get("scale") or 1) != 1 or "coded at" in (record.get("note") or "")


if __name__ == "__main__":
    main()

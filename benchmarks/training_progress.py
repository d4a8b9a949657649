"""Quality per CPU-hour of training runs: every validation a run logged, against the CPU time its
training steps had used by then.

    python benchmarks/training_progress.py ~/.cache/latentcodec/runs/dlf-small-align \\
        --json docs/results/dlf_small_progress.json --png docs/results/dlf_small_progress.png

CPU-hours are the logged step times (``metrics.jsonl`` logs one step in ``log_every``; each stands
for the steps since the previous log line) times the run's thread count, so time spent paused,
validating or checkpointing is not counted. Step times are wall clock, so on a shared machine
they overstate the CPU time (the development VM runs two trainings and benchmarks on 2 cores). Validation scores are the trainer's own: PSNR and bpp
per rate on the held-out training images (``validation.image_dir``), the crop it configures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def progress(run_dir: Path) -> dict:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    threads = int(config.get("runtime", {}).get("threads") or 1)
    seconds, last_step, points = 0.0, 0, []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "step_seconds" in record:
            seconds += record["step_seconds"] * (record["step"] - last_step)
            last_step = record["step"]
        elif "validation" in record:
            points.append({"step": record["step"], "cpu_hours": seconds * threads / 3600,
                           "rates": {q: {k: float(v) for k, v in r.items()} for q, r in record["validation"].items()}})
    return {"run": run_dir.name, "stage": config.get("stage"), "threads": threads, "steps_logged": last_step,
            "cpu_hours": seconds * threads / 3600, "validations": points}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        rates = sorted({q for point in run["validations"] for q in point["rates"]}, key=int)
        for q in rates:
            points = [(p["cpu_hours"], p["rates"][q]["psnr"]) for p in run["validations"] if q in p["rates"]]
            axis.plot(*zip(*points), marker="o", label=f"{run['run']} q{q}")
    axis.set_xlabel("training CPU-hours")
    axis.set_ylabel("validation PSNR (dB)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (with metrics.jsonl and config.yaml)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    runs = []
    for run_dir in args.runs:
        if not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "config.yaml").is_file():
            raise SystemExit(f"training_progress: {run_dir} holds no metrics.jsonl and config.yaml")
        runs.append(progress(run_dir))
    for run in runs:
        print(f"{run['run']} ({run['stage']}): {run['steps_logged']} steps, {run['cpu_hours']:.2f} CPU-hours")
        for point in run["validations"]:
            scores = ", ".join(f"q{q} {r['bpp']:.4f} bpp {r['psnr']:.2f} dB" for q, r in point["rates"].items())
            print(f"  step {point['step']:>6}  {point['cpu_hours']:6.2f} h  {scores}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    if args.png:
        plot(runs, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

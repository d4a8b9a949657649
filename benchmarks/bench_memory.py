"""Peak memory of compress and decompress against image size, tiled and untiled.

Each run is a fresh process (its peak RSS is the figure), reading a PNG and writing the file, then
reading the file and writing a PNG, as the CLI does. "tiled" runs under ``--max-memory`` with the
CLI's allocator setting for it (``latentcodec/runtime.py``: freed memory released); "untiled" is
the behaviour without a budget (every net on whole maps, the encoder too, glibc's default
allocator), measured in the same
invocation as the baseline. The images are Kodak's kodim23 upscaled to each size (4:3), written to
a temporary folder outside the repository. Besides RSS and time, it reports whether the tiled and
untiled files are identical and the largest 8-bit difference between the tiled and untiled
decodings of the same file.

``--work-dir DIR`` keeps the images, files and each phase's figures there instead of in a temporary
folder, and a rerun with the same DIR skips the phases already measured: a 16 MP official run takes
hours here, longer than a session's processes live.

    python benchmarks/bench_memory.py --sizes 1,4,8,12,16 --max-memory 1.5GB --json docs/results/memory_default.json
    python benchmarks/bench_memory.py --weights official-deterministic --sizes 3840x2160 --max-memory 4GB \\
        --modes tiled --json docs/results/memory_official.json
    python benchmarks/bench_memory.py --model dlf --weights DIR --sizes 1,4,8,16 --max-memory 1.5GB
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared"


def size_of(text: str) -> tuple[int, int]:
    """'12' -> a 4:3 image of about 12 MP (sides multiples of 16); '3840x2160' -> exactly that."""
    if "x" in text:
        width, height = (int(part) for part in text.split("x"))
        return width, height
    pixels = float(text) * 1e6
    height = round(math.sqrt(pixels * 3 / 4) / 16) * 16
    return round(height * 4 / 3 / 16) * 16, height


def make_image(source: Path, width: int, height: int, path: Path) -> None:
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB").resize((width, height), Image.BICUBIC).save(path)


# -- one phase in a fresh process ----------------------------------------------------------------
def child(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    from latentcodec.data.images import load_rgb, pil_to_tensor, tensor_to_pil
    from latentcodec.nn import tiling
    from latentcodec.runtime import release_freed_memory

    if args.mode == "tiled":
        release_freed_memory()  # as the CLI under --max-memory (runtime.allocator_for_image)
    if args.weights == "official-deterministic" and args.model == "glc-image":
        sys.path.insert(0, str(REPO / "benchmarks"))
        from bench_codec import official_deterministic_model

        model = official_deterministic_model(args.shared)
    else:
        from latentcodec.api import load_model

        model = load_model(args.model, args.weights)[0].eval()
    if args.mode == "tiled":
        model.set_memory_budget(tiling.parse_memory_size(args.max_memory))
    else:
        model.set_memory_budget(None)
        for module in model.modules():
            if hasattr(module, "memory_budget"):
                module.memory_budget = None
    start = time.perf_counter()
    if args.phase == "compress":
        data = model.compress(pil_to_tensor(load_rgb(args.image)), args.quality)
        args.file.write_bytes(data)
    else:
        tensor_to_pil(model.decompress(args.file.read_bytes())).save(args.image)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000}))
    return 0


def run_child(args, phase: str, mode: str, image: Path, file: Path) -> dict:
    command = [sys.executable, __file__, "--child", phase, "--mode", mode, "--image", str(image), "--file", str(file),
               "--max-memory", args.max_memory, "--threads", str(args.threads), "--quality", str(args.quality),
               "--shared", str(args.shared), "--model", args.model] + (["--weights", args.weights] if args.weights else [])
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench_memory: {phase} {mode} {image.name} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def max_difference(first: Path, second: Path) -> int:
    from PIL import Image

    with Image.open(first) as a, Image.open(second) as b:
        return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="glc-image", help="codec (glc-image, dlf, percov2)")
    parser.add_argument("--weights", default=None,
                        help="save_pretrained dir, 'official-deterministic' (glc-image), or none (shipped default)")
    parser.add_argument("--sizes", default="1,4,8,16", help="megapixels (4:3) or WxH, comma-separated")
    parser.add_argument("--modes", default="tiled,untiled")
    parser.add_argument("--max-memory", default="1.5GB", help="the budget of the tiled runs")
    parser.add_argument("--quality", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--source", type=Path, default=DEFAULT_SHARED / "data" / "kodak" / "kodim23.png")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--json", type=Path, default=Path("bench_memory.json"))
    parser.add_argument("--work-dir", type=Path, help="keep images, files and per-phase figures here; resume from them")
    parser.add_argument("--child", choices=("compress", "decompress"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("tiled", "untiled"), help=argparse.SUPPRESS)
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.phase = args.child
        return child(args)

    modes = args.modes.split(",")
    sizes = [size_of(text) for text in args.sizes.split(",")]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        folder = Path(tmp) if args.work_dir is None else args.work_dir
        folder.mkdir(parents=True, exist_ok=True)
        progress = tqdm(total=len(sizes) * len(modes) * 2, desc="runs")

        def measured(phase: str, mode: str, image: Path, file: Path, stem: str) -> dict:
            """One phase in a fresh process, or its figures from an earlier invocation's work dir."""
            done = folder / f"{stem}_{mode}_{phase}.json"
            progress.set_postfix_str(f"{stem} {mode} {phase}")
            if done.is_file():
                figures = json.loads(done.read_text())
            else:
                figures = run_child(args, phase, mode, image, file)
                done.write_text(json.dumps(figures) + "\n")
            progress.update()
            return figures

        for width, height in sizes:
            stem = f"{width}x{height}"
            source = folder / f"{stem}.png"
            if not source.is_file():
                make_image(args.source, width, height, source)
            record = {"width": width, "height": height, "megapixels": width * height / 1e6}
            for mode in modes:
                file = folder / f"{stem}_{mode}.lci"
                record[f"compress_{mode}"] = dict(measured("compress", mode, source, file, stem),
                                                  file_bytes=file.stat().st_size)
                # Both modes decode the tiled file (or the only one), so their outputs compare.
                decoded_from = folder / f"{stem}_{modes[0]}.lci"
                record[f"decompress_{mode}"] = measured("decompress", mode, folder / f"{stem}_{mode}.png",
                                                        decoded_from, stem)
            if set(modes) >= {"tiled", "untiled"}:
                record["same_file"] = (folder / f"{stem}_tiled.lci").read_bytes() == (
                    folder / f"{stem}_untiled.lci").read_bytes()
                record["max_pixel_difference"] = max_difference(folder / f"{stem}_tiled.png",
                                                                folder / f"{stem}_untiled.png")
            runs.append(record)
            line = f"{width}x{height} ({record['megapixels']:.1f} MP):"
            for phase in ("compress", "decompress"):
                for mode in modes:
                    figures = record[f"{phase}_{mode}"]
                    line += f" {phase} {mode} {figures['peak_rss_mb']:.0f} MB {figures['seconds']:.0f} s;"
            if "max_pixel_difference" in record:
                line += f" same file: {record['same_file']}, max |tiled - untiled| {record['max_pixel_difference']}"
            tqdm.write(line)
            write_summary(args, modes, runs)  # after every size, so an interrupted run keeps what it measured
        progress.close()
    write_summary(args, modes, runs, report=True)
    return 0


def write_summary(args, modes: list[str], runs: list[dict], report: bool = False) -> None:
    summary = {"model": args.model, "weights": args.weights or "shipped default", "max_memory": args.max_memory, "threads": args.threads,
               "quality": args.quality, "source": args.source.name, "command": " ".join(sys.argv), "runs": runs}
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        area_ratio = last["megapixels"] / first["megapixels"]
        for phase in ("compress", "decompress"):
            for mode in modes:
                ratio = last[f"{phase}_{mode}"]["peak_rss_mb"] / first[f"{phase}_{mode}"]["peak_rss_mb"]
                summary[f"{phase}_{mode}_growth"] = {"area_ratio": area_ratio, "peak_rss_ratio": ratio}
                if report:
                    print(f"{phase} {mode}: area x{area_ratio:.1f} -> peak RSS x{ratio:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if report:
        print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())

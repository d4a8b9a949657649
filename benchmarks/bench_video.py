"""GLC-video speed and memory: per-frame encode/decode time, bits per I/P frame, and peak RSS of
streaming decode against the number of frames decoded.

    python benchmarks/bench_video.py --video ../shared/data/video/carphone_qcif/carphone_qcif.y4m
    python benchmarks/bench_video.py --weights official-deterministic --frames 4 --quality 0
    python benchmarks/bench_video.py --video ../shared/data/video/bikes_640x272/bikes_640x272.y4m \
        --frames 64 --rss-frames 16,32,64

Clips shorter than ``--frames`` are played forwards then backwards until long enough (bikes has 32
frames; the 64-frame measurement plays it there and back). Peak RSS is measured in a fresh process
per count, each decoding the first N frames of the same file, so the figures compare like with
like; the ratio of the largest count to the smallest is the growth with sequence length (1.0 =
bounded memory). ``--weights official-deterministic`` builds the official-shape I and P models
with the reference folder's deterministic synthetic weights (../shared/reference/glc).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_codec import current_rss_mib, peak_rss_mib  # the script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared"
DEFAULT_VIDEO = DEFAULT_SHARED / "data" / "video" / "carphone_qcif" / "carphone_qcif.y4m"




def official_deterministic_video(shared: Path):
    from latentcodec.models.glc_video import GLCVideo

    folder = shared / "reference" / "glc"
    spec = importlib.util.spec_from_file_location("make_weights", folder / "make_weights.py")
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    intra = make_weights.make_state_dict(make_weights.load_spec(folder / "image_keys.tsv"))
    inter = make_weights.make_state_dict(make_weights.load_spec(folder / "video_keys.tsv"))
    return GLCVideo.from_official_state_dicts(intra, inter).eval()


def load_video_model(weights: str | None, shared: Path):
    if weights == "official-deterministic":
        return official_deterministic_video(shared), "official preset, deterministic synthetic weights"
    from latentcodec.api import load_model

    model, _, source = load_model("glc-video", weights)
    return model.eval(), source


def read_clip(path: Path, frames: int) -> list[torch.Tensor]:
    """``frames`` frames as (1, 3, H, W) tensors, the clip played there and back if it is shorter."""
    from latentcodec.data.video import read_frames

    source = read_frames(path)
    order = source + source[-2:0:-1] if len(source) > 1 else source
    clip = [order[i % len(order)] for i in range(frames)]
    return [torch.from_numpy(f.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0) for f in clip]


def decode_first(model, path: Path, count: int, rss_samples: list[float] | None = None) -> list[float]:
    """Decode the first ``count`` frames of the file (streaming), returning seconds per frame;
    ``rss_samples`` collects the resident set after each frame."""
    times = []
    with open(path, "rb") as stream:
        frames = model.decode_sequence(stream)
        for _ in range(count):
            start = time.perf_counter()
            next(frames)
            times.append(time.perf_counter() - start)
            if rss_samples is not None:
                rss_samples.append(current_rss_mib())
        frames.close()
    return times


def run_rss_child(args) -> int:
    model, _ = load_video_model(args.weights, args.shared)
    loaded = current_rss_mib()
    samples: list[float] = []
    with torch.inference_mode():
        decode_first(model, args.file, args.frames, samples)
    print(json.dumps({"frames": args.frames, "peak_rss_mib": peak_rss_mib(), "after_load_mib": loaded,
                      "max_rss_while_decoding_mib": max(samples), "rss_after_first_frame_mib": samples[0],
                      "rss_after_last_frame_mib": samples[-1]}))
    return 0


def summarise(values: list[float]) -> dict:
    return {"median": statistics.median(values), "mean": statistics.fmean(values), "count": len(values)} if values else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="save_pretrained dir, 'image.pth,video.pth', "
                        "'official-deterministic', or none for the shipped default")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--quality", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rss-frames", default="", help="comma-separated frame counts for the peak-RSS runs")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--phase", choices=("all", "rss-child"), default="all", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.phase == "rss-child":
        return run_rss_child(args)

    model, source = load_video_model(args.weights, args.shared)
    frames = read_clip(args.video, args.frames)
    height, width = frames[0].shape[-2:]
    stats, stamps = [], [time.perf_counter()]

    def on_frame(frame_stats) -> None:
        stats.append(frame_stats)
        stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "clip.lcv"
        with open(path, "wb") as stream, torch.inference_mode():
            model.encode_sequence(frames, stream, args.quality, frame_count=len(frames), on_frame=on_frame)
        encode_times = [b - a for a, b in zip(stamps, stamps[1:])]
        with torch.inference_mode():
            decode_times = decode_first(model, path, len(frames))
        file_bytes = path.stat().st_size
        rss = []
        for count in [int(c) for c in args.rss_frames.split(",") if c]:
            command = [sys.executable, __file__, "--phase", "rss-child", "--file", str(path), "--frames", str(count),
                       "--threads", str(args.threads), "--shared", str(args.shared)]
            if args.weights:
                command += ["--weights", args.weights]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            rss.append(json.loads(result.stdout.strip().splitlines()[-1]))

    intra = [s.intra for s in stats]
    bits = [8 * s.unit_bytes for s in stats]
    report = {
        "weights": source,
        "video": str(args.video),
        "size": [width, height],
        "frames": len(frames),
        "quality": args.quality,
        "threads": torch.get_num_threads(),
        "file_bytes": file_bytes,
        "bpp": 8 * file_bytes / (width * height * len(frames)),
        "bits_i_frames": summarise([b for b, i in zip(bits, intra) if i]),
        "bits_p_frames": summarise([b for b, i in zip(bits, intra) if not i]),
        "encode_seconds_i": summarise([t for t, i in zip(encode_times, intra) if i]),
        "encode_seconds_p": summarise([t for t, i in zip(encode_times, intra) if not i]),
        "decode_seconds_i": summarise([t for t, i in zip(decode_times, intra) if i]),
        "decode_seconds_p": summarise([t for t, i in zip(decode_times, intra) if not i]),
        "peak_rss_decode": rss,
    }
    if len(rss) > 1:
        report["rss_growth_ratio"] = rss[-1]["peak_rss_mib"] / rss[0]["peak_rss_mib"]
    print(f"{source}: {width}x{height}, {len(frames)} frames at q{args.quality}, {report['threads']} threads")
    print(f"  file {file_bytes} B = {report['bpp']:.5f} bpp; I-frame {report['bits_i_frames'].get('median', 0):.0f} bits, "
          f"P-frames median {report['bits_p_frames'].get('median', 0):.0f} bits")
    for side in ("encode", "decode"):
        i, p = report[f"{side}_seconds_i"], report[f"{side}_seconds_p"]
        print(f"  {side}: I {i.get('median', float('nan')):.3f} s, P median {p.get('median', float('nan')):.3f} s "
              f"(mean {p.get('mean', float('nan')):.3f} s over {p.get('count', 0)})")
    for entry in rss:
        print(f"  decode of {entry['frames']} frames: peak RSS {entry['peak_rss_mib']:.0f} MiB; resident "
              f"{entry['after_load_mib']:.0f} MiB after loading, {entry['rss_after_first_frame_mib']:.0f} after "
              f"frame 1, {entry['rss_after_last_frame_mib']:.0f} after the last, "
              f"{entry['max_rss_while_decoding_mib']:.0f} at most")
    if "rss_growth_ratio" in report:
        print(f"  peak RSS ratio {rss[-1]['frames']} vs {rss[0]['frames']} frames: {report['rss_growth_ratio']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Video target bitrate against achieved bitrate, per clip, with the shipped GLC-video default (issue 14).

Per clip (the first ``--frames`` frames of each .y4m under ../shared/data/video) and per target,
given as a bpp-equivalent (target bit/s = bpp x W x H x frame rate, so the targets mean the same
on every resolution), ``latentcodec.video_ratecontrol.compress_to_bitrate``: the achieved bit/s
of the file, and per GOP its rate, bytes, share of the target, allowance (share plus the bit
reservoir carried in), probes and encodes; and the wall time. ``--intra-period`` overrides the
model's GOP length, so that a short clip holds several GOPs.

    python benchmarks/video_rate_control.py --out docs/results/rate_control_video.json

With ``--grid N`` it measures monotonicity instead: the sequence file's bytes at N rates from 0 to
63 (on the 1/256 grid, most of them fractional) per clip, and the worst inversion.

    python benchmarks/video_rate_control.py --grid 50 --frames 8 --out docs/results/rate_control_video_grid.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "video"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--bpp", default="0.015,0.03", help="targets as bpp-equivalents")
    parser.add_argument("--clips", default=None, help="comma-separated clip stems (default: every .y4m)")
    parser.add_argument("--intra-period", type=int, default=None, help="default: the model's (96)")
    parser.add_argument("--grid", type=int, default=None, help="measure bytes at this many rates instead")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import latentcodec
    from latentcodec.data.video import open_video
    from latentcodec.errors import LatentCodecError
    from latentcodec.video_ratecontrol import compress_to_bitrate

    torch.set_num_threads(args.threads)
    codec = latentcodec.load("glc-video")
    if args.intra_period is not None:
        from latentcodec.models.glc_video import GOPConfig

        gop = GOPConfig(args.intra_period, codec.model.config.gop.reset_interval)
        codec.model.config = dataclasses.replace(codec.model.config, gop=gop)
    clips = sorted(VIDEOS.glob("*/*.y4m"))
    if args.clips:
        clips = [c for c in clips if c.stem in args.clips.split(",")]
    rows = []
    out = Path(args.out)
    if args.grid:
        return measure_grid(codec, clips, args, out)
    for clip in tqdm(clips, desc="clips", file=sys.stderr):
        with open_video(clip) as reader:
            info = reader.info
            frames = list(itertools.islice(reader, args.frames))
        for bpp in (float(b) for b in args.bpp.split(",")):
            target = bpp * info.width * info.height * float(info.frame_rate)
            start = time.perf_counter()
            row = {"clip": clip.stem, "size": [info.width, info.height], "frame_rate": str(info.frame_rate),
                   "frames": len(frames), "target_bpp_equivalent": bpp, "target_bps": target}
            try:
                result = compress_to_bitrate(codec, frames, target, info.frame_rate)
            except LatentCodecError as exc:
                row.update(reachable=False, error=str(exc), wall_s=time.perf_counter() - start)
            else:
                row.update(reachable=True, rates=list(result.rates), achieved_bps=result.achieved_bps,
                           achieved_over_target=result.achieved_bps / target, bytes=len(result.data),
                           probes=result.probes, encodes=result.encodes, passes=result.passes, wall_s=time.perf_counter() - start,
                           gops=[g._asdict() for g in result.gops])
            rows.append(row)
            tqdm.write(json.dumps({k: v for k, v in row.items() if k != "gops"}), file=sys.stderr)
            payload = {"command": " ".join(["python", *sys.argv]), "weights": codec.weights_source,
                       "threads": args.threads, "intra_period": codec.model.config.gop.intra_period, "rows": rows}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.with_suffix(".tmp").write_text(json.dumps(payload, indent=2) + "\n")
            out.with_suffix(".tmp").replace(out)


def measure_grid(codec, clips: list[Path], args, out: Path) -> None:
    from rate_control import grid_result, grid_row

    from latentcodec.bitstream import RATE_FRACTION_STEPS, SequenceReader
    from latentcodec.data.video import frame_to_tensor, open_video

    top = (codec.num_qualities - 1) * RATE_FRACTION_STEPS
    codes = sorted({round(i * top / (args.grid - 1)) for i in range(args.grid)})
    rows = []
    for clip in tqdm(clips, desc="clips", file=sys.stderr):
        with open_video(clip) as reader:
            info = reader.info
            frames = [frame_to_tensor(f) for f in itertools.islice(reader, args.frames)]
        sizes = []
        for code in tqdm(codes, desc=clip.stem, leave=False, file=sys.stderr):
            data = codec.model.compress_frames(frames, code / RATE_FRACTION_STEPS, frame_rate=info.frame_rate)
            assert SequenceReader(data).header.inter_rate == code / RATE_FRACTION_STEPS  # stored exactly
            sizes.append(len(data))
        rows.append(grid_row(clip.stem, [c / RATE_FRACTION_STEPS for c in codes], sizes,
                             info.width * info.height * len(frames)))
        payload = {"command": " ".join(["python", *sys.argv]), "weights": codec.weights_source,
                   "threads": args.threads, "frames": args.frames, **grid_result(rows, len(codes))}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(grid_result(rows, len(codes))["summary"], indent=2))


if __name__ == "__main__":
    main()

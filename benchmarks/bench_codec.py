"""Codec speed, rate accuracy and memory over an image folder.

For each image: encode and decode wall time (median of --repeats runs after --warmup), the actual
file bpp against the model's estimated bpp, and the process's peak RSS. With --baseline, the same
run also times the way the official implementation runs, in a child process (``--as-official``):
NCHW maps (its memory layout), upsampling as nearest x2 then a 3x3 conv, and glibc's default
allocator; and prints our speed-up over it. Ours runs as the CLI does: channels_last, upsampling as
one transposed conv, the CLI's allocator setting per image (``latentcodec/runtime.py``). Both run the same portable
integer entropy path and write the same file.

    python benchmarks/bench_codec.py --weights official-deterministic --limit 1 --threads 2
    python benchmarks/bench_codec.py --weights official-deterministic --synthetic 3840x2160 --repeats 1 --warmup 0
    python benchmarks/bench_codec.py                       # the shipped default over Kodak
    python benchmarks/bench_codec.py --weights official-deterministic --synthetic 3840x2160 --phase encode --file 4k.lci
    python benchmarks/bench_codec.py --weights official-deterministic --phase decode --file 4k.lci --max-memory 4GB

``--phase`` runs only compression (writing ``--file``) or only decompression (reading it) of one
image in this process, so that each phase's own peak RSS is measured.

``--weights official-deterministic`` builds the official-shape model with the reference folder's
deterministic synthetic weights (../shared/reference/glc/make_weights.py), so full-size speed can
be measured without the real checkpoint.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentcodec.errors import LatentCodecError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def official_deterministic_model(shared: Path):
    from latentcodec.models.glc_image import GLCImage, GLCImageConfig

    spec = importlib.util.spec_from_file_location("make_weights", shared / "reference" / "glc" / "make_weights.py")
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    model = GLCImage(GLCImageConfig.official())
    # Generate tensor by tensor straight into the model, so the full 164M-parameter state dict
    # (with the training-only heads) is never resident at once.
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            tensor.copy_(torch.from_numpy(make_weights.make_tensor(key, tuple(tensor.shape))))
    return model.eval()


def load_model(weights: str | None, shared: Path):
    if weights == "official-deterministic":
        return official_deterministic_model(shared), "official preset, deterministic synthetic weights"
    from latentcodec.api import load_model as load_registered

    model, _, source = load_registered("glc-image", weights)
    return model.eval(), source


def timed(fn, repeats: int, warmup: int):
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def images_to_run(args) -> list[tuple[str, torch.Tensor]]:
    from latentcodec.data.images import list_images, load_rgb, pil_to_tensor

    if args.synthetic:
        width, height = (int(v) for v in args.synthetic.lower().split("x"))
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        pattern = np.stack([np.sin(xx / 37) * np.cos(yy / 23), np.cos((xx + yy) / 51), np.sin(yy / 71)], -1)
        pixels = ((pattern * 0.5 + 0.5) * 255).round().astype(np.uint8)
        return [(f"synthetic_{width}x{height}", pil_to_tensor(Image.fromarray(pixels)))]
    paths = list_images(args.data)
    if args.images:
        wanted = set(args.images.split(","))
        paths = [p for p in paths if p.name in wanted or p.stem in wanted]
    if args.limit:
        paths = paths[: args.limit]
    if not paths:
        sys.exit(f"bench_codec: no images selected in {args.data}")
    return [(p.name, pil_to_tensor(load_rgb(p))) for p in paths]


def measure(model, x: torch.Tensor, quality: int, repeats: int, warmup: int, decode: bool = True) -> dict:
    encoded, encode_s = timed(lambda: model.encode(x, quality), repeats, warmup)
    data, estimate = encoded.data, encoded.estimated_bits
    pixels = x.shape[-1] * x.shape[-2]
    if decode:
        decoded, decode_s = timed(lambda: model.decompress(data), repeats, warmup)
        mse = torch.mean((torch.round(decoded * 255) - torch.round(x * 255)) ** 2).item()
    else:
        decode_s, mse = float("nan"), float("nan")
    return {
        "encode_s": encode_s,
        "decode_s": decode_s,
        "bytes": len(data),
        "bpp": 8 * len(data) / pixels,
        "estimated_bpp": estimate / pixels,
        "file_minus_estimate_bits": 8 * len(data) - estimate,
        "psnr": 10 * np.log10(255**2 / mse) if mse > 0 else (float("inf") if mse == 0 else float("nan")),
        "peak_rss_mib": peak_rss_mib(),
    }


def run_phase(model, args) -> int:
    if args.file is None:
        sys.exit("bench_codec: --phase needs --file")
    start = time.perf_counter()
    from latentcodec.bitstream import read_image_header

    if args.phase == "encode":
        name, x = images_to_run(args)[0]
        set_allocator(args, x.shape[-1] * x.shape[-2])
        data = model.compress(x, int(args.qualities.split(",")[0]))
        args.file.write_bytes(data)
        what = f"{name}: {len(data)} bytes"
    else:
        data = args.file.read_bytes()
        header, _ = read_image_header(data)
        set_allocator(args, header.width * header.height)
        decoded = model.decompress(data)
        what = f"{args.file}: decoded {decoded.shape[-1]}x{decoded.shape[-2]}"
    seconds = time.perf_counter() - start
    print(f"{args.phase} {what} in {seconds:.1f} s; peak RSS {peak_rss_mib():.0f} MiB")
    args.json.write_text(json.dumps({"phase": args.phase, "seconds": seconds, "peak_rss_mib": peak_rss_mib()}, indent=2))
    return 0


def set_allocator(args, pixels: int) -> None:
    """The CLI's allocator setting for an image of ``pixels`` (latentcodec/runtime.py); the official
    way keeps glibc's default."""
    if not args.as_official:
        from latentcodec.runtime import allocator_for_image

        allocator_for_image(pixels, args.max_memory is not None)


def baseline_row(args, image: str, quality: int) -> dict:
    """The same measurement run the official implementation's way (NCHW, glibc's default allocator),
    in a fresh process: the allocator setting is process-wide and cannot be undone in this one."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "baseline.json"
        command = [sys.executable, __file__, "--as-official", "--json", str(out),
                   "--qualities", str(quality), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                   "--threads", str(args.threads), "--shared", str(args.shared), "--data", str(args.data)]
        command += ["--synthetic", args.synthetic] if args.synthetic else ["--images", image]
        if args.weights:
            command += ["--weights", args.weights]
        if args.max_memory:
            command += ["--max-memory", args.max_memory]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["rows"][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="save_pretrained dir, official .pth, 'official-deterministic', or none for the shipped default")
    parser.add_argument("--data", type=Path, default=DEFAULT_SHARED / "data" / "kodak")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--images", help="comma-separated file names or stems to run")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--synthetic", help="WxH: run one synthetic image of this size instead of a folder")
    parser.add_argument("--qualities", default="0")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-decode", action="store_true", help="rate figures only: skip decoding")
    parser.add_argument("--baseline", action="store_true",
                        help="also time the official implementation's way (NCHW, default allocator) in a child process")
    parser.add_argument("--as-official", action="store_true",
                        help="run the way the official implementation does: NCHW maps, nearest upsampling then "
                             "conv, glibc's default allocator (what --baseline runs in its child process)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="arithmetic of our VQGAN, as the CLI's --precision (default fp32; auto: bf16 on CPUs "
                             "with AMX); the official way always runs float32")
    parser.add_argument("--json", type=Path, default=Path("bench_codec.json"))
    parser.add_argument("--phase", choices=("encode", "decode"), help="one phase only, through --file")
    parser.add_argument("--file", type=Path, help="the compressed file written (encode) or read (decode) by --phase")
    parser.add_argument("--max-memory", help="memory budget of the decoder's tiling, as on the CLI (e.g. 4GB); "
                        "default: none, every net on whole maps")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(args.threads)
    model, source = load_model(args.weights, args.shared)
    if args.as_official:
        from latentcodec.tokenizers.vqgan import Upsample

        model.set_memory_format(torch.contiguous_format)
        Upsample.transposed = False
    else:
        model.set_precision(args.precision)
    way = "as the official implementation" if args.as_official else f"ours, {str(model.compute_dtype)[6:]} VQGAN"
    if args.max_memory:
        from latentcodec.nn.tiling import parse_memory_size

        model.set_memory_budget(parse_memory_size(args.max_memory))
    rss_after_load = current_rss_mib()
    print(f"model: {source}; {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; "
          f"RSS after load {rss_after_load:.0f} MiB; {args.threads} threads; {way}")
    if args.phase:
        return run_phase(model, args)
    qualities = [int(q) for q in args.qualities.split(",")]
    rows = []
    header = f"{'image':<24}{'q':>2}{'encode s':>10}{'decode s':>10}{'bytes':>8}{'bpp':>9}{'est bpp':>9}{'PSNR':>7}{'peak MiB':>10}"
    print(header)
    for name, x in images_to_run(args):
        set_allocator(args, x.shape[-1] * x.shape[-2])
        for quality in qualities:
            row = {"image": name, "quality": quality, "height": x.shape[-2], "width": x.shape[-1]}
            try:
                row.update(measure(model, x, quality, args.repeats, args.warmup, decode=not args.no_decode))
            except LatentCodecError as exc:
                print(f"{name:<24}{quality:>2}  not codable: {exc}")
                rows.append({**row, "error": str(exc)})
                continue
            if args.baseline:
                base = baseline_row(args, name, quality)
                row["baseline_encode_s"], row["baseline_decode_s"] = base["encode_s"], base["decode_s"]
            rows.append(row)
            print(f"{name:<24}{quality:>2}{row['encode_s']:>10.2f}{row['decode_s']:>10.2f}{row['bytes']:>8}"
                  f"{row['bpp']:>9.5f}{row['estimated_bpp']:>9.5f}{row['psnr']:>7.2f}{row['peak_rss_mib']:>10.0f}")
            if args.baseline:
                print(f"{'  NCHW baseline':<26}{row['baseline_encode_s']:>10.2f}{row['baseline_decode_s']:>10.2f}"
                      f"   speed-up encode x{row['baseline_encode_s'] / row['encode_s']:.2f}, "
                      f"decode x{row['baseline_decode_s'] / row['decode_s']:.2f}")
    coded = [r for r in rows if "error" not in r]
    summary = {key: float(np.mean([r[key] for r in coded])) for key in
               ("encode_s", "decode_s", "bpp", "estimated_bpp", "file_minus_estimate_bits", "psnr")}
    summary["not_codable"] = len(rows) - len(coded)
    summary["peak_rss_mib"] = peak_rss_mib()
    summary["rss_after_load_mib"] = rss_after_load
    print("mean: " + ", ".join(f"{k} {v:.5g}" for k, v in summary.items()))
    args.json.write_text(json.dumps({"model": source, "threads": args.threads, "as_official": args.as_official,
                                     "compute_dtype": str(model.compute_dtype), "rows": rows, "summary": summary}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

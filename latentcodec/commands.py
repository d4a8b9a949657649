"""Codec subcommands: compress, decompress, roundtrip, info, models."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from latentcodec.errors import InputError, LatentCodecError

IMAGE_FILE_SUFFIX = ".lci"


# -- output files ------------------------------------------------------------------------
def atomic_write(path: Path, data: bytes | None = None, save=None, force: bool = False) -> None:
    """Write ``data`` (or call ``save(tmp_path)``) to a temp file beside ``path``, then rename,
    so that an interrupted or failed run never leaves a partial output."""
    if path.exists() and not force:
        raise InputError(f"{path} exists (use --force to overwrite)")
    if path.is_dir():
        raise InputError(f"{path} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part" + path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            if data is not None:
                f.write(data)
        if save is not None:
            save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    return path.read_bytes()


def expand_inputs(inputs: list[str], suffixes: tuple[str, ...]) -> list[tuple[Path, Path]]:
    """(file, root) pairs; folders expand to the files inside with one of ``suffixes``."""
    files = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise InputError(f"{path}: no {'/'.join(suffixes)} files in this folder")
            files += [(p, path) for p in found]
        elif path.exists():
            files.append((path, path.parent))
        else:
            raise InputError(f"{path}: no such file or directory")
    return files


def output_path(source: Path, root: Path, output: str | None, suffix: str, many: bool) -> Path:
    if output is None:
        return source.with_suffix(suffix)
    out = Path(output)
    if many or out.is_dir() or output.endswith(os.sep):
        return (out / source.relative_to(root)).with_suffix(suffix)
    return out


def run_files(files, work, description: str) -> int:
    """Run ``work(path, root)`` per file with a progress bar for more than one file; one line per failure."""
    from tqdm import tqdm

    failures = 0
    progress = tqdm(files, desc=description, unit="file", disable=len(files) < 2, file=sys.stderr)
    for path, root in progress:
        try:
            work(path, root)
        except LatentCodecError as exc:
            failures += 1
            if len(files) == 1:
                raise
            progress.write(f"latentcodec: error: {path}: {exc}")
    return 1 if failures else 0


# -- commands ------------------------------------------------------------------------------
def _add_model_options(parser: argparse.ArgumentParser, with_model: bool = True) -> None:
    if with_model:
        parser.add_argument("--model", default="glc-image", help="registered codec name (see `latentcodec models`)")
        parser.add_argument("--quality", type=int, default=0, help="rate index, 0 = lowest rate")
    parser.add_argument("--weights", default=None, help="save_pretrained directory or official checkpoint; default: shipped weights")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def _load_codec(args, name=None, quality=None):
    from latentcodec.api import load

    return load(name or args.model, quality=args.quality if quality is None else quality, weights=args.weights, device=args.device)


def cmd_compress(args) -> int:
    from latentcodec.data.images import IMAGE_SUFFIXES, load_rgb

    files = expand_inputs(args.inputs, IMAGE_SUFFIXES)
    codec = _load_codec(args)
    many = len(files) > 1

    def work(path: Path, root: Path) -> None:
        target = output_path(path, root, args.output, IMAGE_FILE_SUFFIX, many)
        if target.exists() and not args.force:
            raise InputError(f"{target} exists (use --force to overwrite)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = load_rgb(path)
        for warning in caught:
            print(f"latentcodec: warning: {path}: {warning.message}", file=sys.stderr)
        data = codec.compress(image)
        atomic_write(target, data, force=args.force)
        if not many:
            bpp = 8 * len(data) / (image.width * image.height)
            print(f"{target}: {len(data)} bytes, {bpp:.5f} bpp")

    return run_files(files, work, "compress")


def cmd_decompress(args) -> int:
    from latentcodec.api import load_model
    from latentcodec.bitstream import read_image_header
    from latentcodec.data.images import tensor_to_pil
    from latentcodec.errors import BitstreamError
    from latentcodec.zoo.registry import get_entry_by_id

    files = expand_inputs(args.inputs, (IMAGE_FILE_SUFFIX,))
    many = len(files) > 1
    models: dict[int, object] = {}

    def work(path: Path, root: Path) -> None:
        target = output_path(path, root, args.output, ".png", many)
        if target.exists() and not args.force:
            raise InputError(f"{target} exists (use --force to overwrite)")
        data = read_bytes(path)
        header, _ = read_image_header(data)
        try:
            entry = get_entry_by_id(header.model_id)
        except LatentCodecError:
            raise BitstreamError(f"file names model id {header.model_id}, which no registered codec has") from None
        if header.model_id not in models:
            models[header.model_id] = load_model(entry.name, args.weights, args.device)[0].eval()
        image = tensor_to_pil(models[header.model_id].decompress(data))
        fmt = (target.suffix.lstrip(".") or "png").upper().replace("JPG", "JPEG")
        atomic_write(target, save=lambda tmp: image.save(tmp, format=fmt), force=args.force)
        if not many:
            print(f"{target}: {image.width}x{image.height}")

    return run_files(files, work, "decompress")


def cmd_roundtrip(args) -> int:
    """Compress, write the file, read it back, decompress; print bytes, bpp and PSNR."""
    import numpy as np

    from latentcodec.data.images import load_rgb

    source = Path(args.image)
    image = load_rgb(source)
    codec = _load_codec(args)
    start = time.perf_counter()
    data = codec.compress(image)
    encode_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        file_path = Path(args.output_dir or tmp) / (source.stem + IMAGE_FILE_SUFFIX)
        atomic_write(file_path, data, force=True)
        start = time.perf_counter()
        decoded = codec.decompress(read_bytes(file_path))
        decode_seconds = time.perf_counter() - start
        if args.output_dir:
            atomic_write(file_path.with_suffix(".png"), save=lambda tmp_path: decoded.save(tmp_path, format="PNG"), force=True)
    original = np.asarray(image, dtype=np.float64)
    reconstruction = np.asarray(decoded, dtype=np.float64)
    mse = float(np.mean((original - reconstruction) ** 2))
    psnr = float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)
    pixels = image.width * image.height
    result = {
        "image": str(source),
        "model": codec.name,
        "weights": codec.weights_source,
        "quality": codec.quality,
        "width": image.width,
        "height": image.height,
        "bytes": len(data),
        "bpp": 8 * len(data) / pixels,
        "estimated_bpp": codec.estimate_bits(image) / pixels,
        "psnr": psnr,
        "encode_seconds": encode_seconds,
        "decode_seconds": decode_seconds,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{source.name} {image.width}x{image.height} {codec.name} q{codec.quality}: {len(data)} bytes, "
            f"bpp {result['bpp']:.5f} (estimate {result['estimated_bpp']:.5f}), PSNR {psnr:.2f} dB, "
            f"encode {encode_seconds:.2f} s, decode {decode_seconds:.2f} s"
        )
    return 0


def cmd_info(args) -> int:
    from latentcodec.bitstream import describe_image_file

    info = describe_image_file(read_bytes(Path(args.file)))
    if args.json:
        print(json.dumps(dataclasses.asdict(info), indent=2))
    else:
        for key, value in dataclasses.asdict(info).items():
            print(f"{key:>14}: {value}")
    return 0


def cmd_models(args) -> int:
    from latentcodec.zoo.registry import REGISTRY

    rows = []
    for entry in REGISTRY:
        default = entry.default_weights_path
        rows.append({"name": entry.name, "id": entry.model_id, "kind": entry.kind,
                     "default_weights": str(default) if default else None, "description": entry.description})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            shipped = "default shipped" if row["default_weights"] else "no default weights"
            print(f"{row['name']:<12} id {row['id']:<3} {row['kind']:<6} {shipped:<19} {row['description']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compress", help="compress images to .lci files")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("-o", "--output", help="output file (one input) or folder")
    _add_model_options(p)
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=cmd_compress)

    p = subparsers.add_parser("decompress", help="decompress .lci files to images")
    p.add_argument("inputs", nargs="+", help=".lci files or folders")
    p.add_argument("-o", "--output", help="output image (one input; format from suffix) or folder")
    _add_model_options(p, with_model=False)
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=cmd_decompress)

    p = subparsers.add_parser("roundtrip", help="compress and decompress one image; print bpp and PSNR")
    p.add_argument("image")
    _add_model_options(p)
    p.add_argument("--output-dir", help="keep the .lci file and decoded .png here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_roundtrip)

    p = subparsers.add_parser("info", help="header fields, section sizes and bpp of a compressed file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser("models", help="list registered codecs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

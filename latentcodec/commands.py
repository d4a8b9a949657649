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
from latentcodec.cli_io import atomic_write, expand_inputs, output_path, read_bytes, run_files
from latentcodec.runtime import allocator_for_image

IMAGE_FILE_SUFFIX = ".lci"
VIDEO_FILE_SUFFIX = ".lcv"


# -- commands ------------------------------------------------------------------------------
def _add_model_options(parser: argparse.ArgumentParser, with_model: bool = True) -> None:
    if with_model:
        parser.add_argument("--model", default=None,
                            help="registered codec name (see `latentcodec models`); default glc-image for images, "
                                 "glc-video for videos")
        parser.add_argument("--quality", type=_quality_number, default=None,
                            help="rate, 0 = lowest; images: any number in the codec's range, e.g. 1.37 (GLC-image "
                                 "0..3, snapped to 1/256); videos: a level 0..63, or any number between, e.g. 20.5; default 0")
    parser.add_argument("--weights", default=None, help="save_pretrained directory or official checkpoint; default: shipped weights")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--token-prior", default=None, metavar="DIR",
                        help="dlf: a semantic-token prior folder from `latentcodec fit-token-prior` (files written "
                             "with one must be decoded with the same one)")
    # Parsed by api.memory_budget, whose LatentCodecError is the one-line error a bad size gives.
    parser.add_argument("--max-memory", default=None, metavar="SIZE",
                        help="memory budget of the process, e.g. 2GB or 512MiB: the generator then runs in tiles "
                             "(within one 8-bit level of untiled; files do not depend on it); default: half of "
                             "the available RAM")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="arithmetic of the pixel-space nets (default fp32); bf16 runs them on bfloat16 matrix "
                             "units, several times faster on CPUs with AMX (pixels move by a few levels, symbols "
                             "never); auto: bf16 where the CPU has AMX, else fp32")
    parser.add_argument("--no-portable", dest="portable", action="store_false",
                        help="write float-arithmetic files (format version 1: reproduce official numbers, but decode "
                             "reliably only on the machine kind that wrote them); default: portable integer path")


def _load_codec(args, name=None, quality=None):
    from latentcodec.api import load

    return load(name or args.model or "glc-image", quality=_quality(args) if quality is None else quality,
                weights=args.weights, device=args.device, portable=args.portable,
                token_prior=getattr(args, "token_prior", None), max_memory=args.max_memory,
                precision=args.precision)


def _is_video_job(args) -> bool:
    """Videos: any input is a video file, the model is a video codec, or the output is a .lcv file
    (then a folder input is one video of PNG frames)."""
    from latentcodec.data.video import is_video_path
    from latentcodec.zoo.registry import get_entry

    if args.model is not None and get_entry(args.model).kind == "video":
        return True
    if args.output is not None and args.output.lower().endswith(VIDEO_FILE_SUFFIX):
        return True
    return any(is_video_path(name) for name in args.inputs)


def _allocator_for(args, width: int, height: int) -> None:
    """The allocator setting for a width x height image or frame (latentcodec/runtime.py)."""
    allocator_for_image(width * height, getattr(args, "max_memory", None) is not None)


def _progress_enabled(args) -> bool | None:
    # None lets tqdm show bars on a terminal only, so logs and captured stderr stay one line per error.
    return False if getattr(args, "quiet", False) else None


def _tqdm_disable(args) -> bool | None:
    return True if getattr(args, "quiet", False) else None


def cmd_compress_video(args) -> int:
    from latentcodec.api import load_video
    from latentcodec.data.video import open_video

    sources = [Path(name) for name in args.inputs]
    many = len(sources) > 1
    if getattr(args, "target_bytes", None) is not None or getattr(args, "target_bpp", None) is not None:
        raise InputError("--target-bytes/--target-bpp apply to images; for videos use --target-bitrate")
    if args.target_bitrate is not None:
        from latentcodec.video_ratecontrol import parse_bitrate

        parse_bitrate(args.target_bitrate)  # a bad value fails before the model loads
        if args.quality is not None or args.intra_quality is not None:
            raise InputError("give either --quality/--intra-quality or --target-bitrate, not both")
    codec = load_video(args.model or "glc-video", quality=_quality(args), weights=args.weights, device=args.device,
                       portable=args.portable, intra_quality=args.intra_quality, max_memory=args.max_memory,
                       precision=args.precision)

    def work(path: Path, root: Path) -> None:
        target = output_path(path, root, args.output, VIDEO_FILE_SUFFIX, many)
        if path.is_dir() and not many and args.output is None:
            target = path.with_suffix(VIDEO_FILE_SUFFIX)
        if target.exists() and not args.force:
            raise InputError(f"{target} exists (use --force to overwrite)")
        with open_video(path, frame_rate=args.frame_rate) as reader:
            info = reader.info
        _allocator_for(args, info.width, info.height)
        if args.target_bitrate is not None:
            return _compress_video_to_bitrate(codec, path, target, args)
        frames = 0

        def save(tmp: str) -> None:
            nonlocal frames
            with open(tmp, "wb") as stream:
                frames = codec.compress_video_to(path, stream, args.frame_rate, _progress_enabled(args))

        atomic_write(target, save=save, force=args.force)
        size = target.stat().st_size
        bpp = 8 * size / (frames * info.width * info.height)
        print(f"{target}: {frames} frames {info.width}x{info.height}, {size} bytes, {bpp:.5f} bpp")

    for source in sources:
        if not source.exists():
            raise InputError(f"{source}: no such file or directory")
    return run_files([(p, p.parent) for p in sources], work, "compress")


def _quality_number(text: str) -> int | float:
    """A --quality value: an int when whole (video levels, old scripts), else a float rate."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return int(value) if value == int(value) else value


def _quality(args) -> int | float:
    return 0 if args.quality is None else args.quality


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {'whole ' if kind is int else ''}number: {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value

    return parse


def _non_negative_float(text: str) -> float:
    value = _quality_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text!r}")
    return float(value)


def _size_target(args) -> dict | None:
    """The target-size options as compress_to_target keywords, or None for a fixed quality."""
    if args.target_bytes is None and args.target_bpp is None:
        if args.allow_downscale:
            raise InputError("--allow-downscale needs --target-bytes or --target-bpp")
        return None
    if args.target_bytes is not None and args.target_bpp is not None:
        raise InputError("give --target-bytes or --target-bpp, not both")
    if args.quality is not None:
        raise InputError("give either --quality or a target size (--target-bytes/--target-bpp), not both")
    return dict(target_bytes=args.target_bytes, target_bpp=args.target_bpp, allow_downscale=args.allow_downscale)


def _compress_to_target(codec, image, target: dict) -> tuple[bytes, str]:
    """The file for a target size and the report line's tail (rate, scale, encodes)."""
    result = codec.compress_to_target(image, **target)
    scale = f", coded at {result.scale}/64 scale" if result.scale else ""
    return result.data, (f" (target {result.target_bytes} bytes: quality {result.rate:g}{scale}, "
                         f"{result.encodes} encodes, {result.estimates} estimates)")


def _compress_video_to_bitrate(codec, path: Path, target: Path, args) -> None:
    """--target-bitrate: the controller of latentcodec.video_ratecontrol; one line per GOP."""
    from latentcodec.video_ratecontrol import compress_to_bitrate, parse_bitrate

    result = compress_to_bitrate(codec, path, parse_bitrate(args.target_bitrate), args.frame_rate)
    atomic_write(target, result.data, force=args.force)
    print(f"{target}: {result.frames} frames, {len(result.data)} bytes, {result.achieved_bps / 1000:.2f} kbit/s "
          f"(target {result.target_bps / 1000:.2f} kbit/s: {len(result.gops)} GOPs, {result.probes} probes, "
          f"{result.encodes} GOP encodes, {result.passes} pass{'es' if result.passes > 1 else ''})")
    for gop in result.gops:
        print(f"  GOP frames {gop.first_frame}-{gop.first_frame + gop.frames - 1}: quality {gop.rate:g}, "
              f"{gop.bytes} bytes of {gop.allowance_bytes:.0f} allowed ({gop.budget_bytes:.0f} its share), "
              f"{gop.bits_per_second / 1000:.2f} kbit/s")


def cmd_compress(args) -> int:
    from latentcodec.data.images import IMAGE_SUFFIXES, load_rgb

    if _is_video_job(args):
        return cmd_compress_video(args)
    if args.target_bitrate is not None:
        raise InputError("--target-bitrate applies to videos; for images use --target-bytes or --target-bpp")
    files = expand_inputs(args.inputs, IMAGE_SUFFIXES)
    size_target = _size_target(args)
    captioner = None
    if args.captioner is not None:  # before the codec: a wrong folder fails fast
        if args.caption is not None:
            raise InputError("--caption and --captioner exclude each other")
        from latentcodec.models.percov2_captioner import LocalCaptioner

        captioner = LocalCaptioner(args.captioner)
    codec = _load_codec(args)
    percov2_options = args.caption is not None or args.captioner is not None or args.passes is not None
    if percov2_options and codec.name != "percov2":
        raise InputError("--caption, --captioner and --passes apply to percov2 only")
    if percov2_options and size_target is not None:
        raise InputError("--caption, --captioner and --passes do not combine with a size target")
    if args.passes is not None and args.quality is not None:
        raise InputError("give either --quality (a hybrid point) or --passes, not both")
    if captioner is not None:
        captioner.to(codec.model.device)
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
        _allocator_for(args, image.width, image.height)
        if percov2_options:
            caption = captioner(image) if captioner is not None else args.caption
            # --passes chooses the hybrid point itself; otherwise the quality does (percov2 num_rates)
            rate = None if args.passes is not None else codec.quality
            data = codec.model.compress(codec._tensor(image), rate, caption, args.passes)
            note = f' (caption "{caption}")' if captioner is not None else ""
        elif size_target is None:
            data, note = codec.compress(image), ""
        else:
            data, note = _compress_to_target(codec, image, size_target)
        atomic_write(target, data, force=args.force)
        if not many or size_target is not None:
            bpp = 8 * len(data) / (image.width * image.height)
            line = f"{target}: {len(data)} bytes, {bpp:.5f} bpp{note}"
            if many:  # beside the progress bar, not through it
                from tqdm import tqdm

                tqdm.write(line, file=sys.stdout)
            else:
                print(line)

    return run_files(files, work, "compress")


def _model_for_file(model_id: int, args, models: dict):
    """The registry entry and (loaded once per command) model that a file's header names."""
    from latentcodec.api import load_model, memory_budget
    from latentcodec.errors import BitstreamError
    from latentcodec.zoo.registry import get_entry_by_id

    try:
        entry = get_entry_by_id(model_id)
    except LatentCodecError:
        raise BitstreamError(f"file names model id {model_id}, which no registered codec has") from None
    if model_id not in models:
        token_prior = getattr(args, "token_prior", None)
        model = load_model(entry.name, args.weights, args.device, token_prior)[0].eval()
        model.set_memory_budget(memory_budget(getattr(args, "max_memory", None)))
        models[model_id] = model.set_precision(getattr(args, "precision", "fp32"))
    return entry, models[model_id]


def cmd_decompress(args) -> int:
    from latentcodec.bitstream import read_image_header
    from latentcodec.data.images import tensor_to_pil

    files = expand_inputs(args.inputs, (IMAGE_FILE_SUFFIX, VIDEO_FILE_SUFFIX))
    many = len(files) > 1
    models: dict[int, object] = {}

    def work(path: Path, root: Path) -> None:
        if _is_sequence_file(path):
            return _decompress_video(path, root, args, many, models)
        target = output_path(path, root, args.output, ".png", many)
        if target.exists() and not args.force:
            raise InputError(f"{target} exists (use --force to overwrite)")
        data = read_bytes(path)
        header, _ = read_image_header(data)
        _allocator_for(args, header.width, header.height)
        entry, model = _model_for_file(header.model_id, args, models)
        image = tensor_to_pil(_decompress_image(model, entry.name, data, args, many))
        fmt = (target.suffix.lstrip(".") or "png").upper().replace("JPG", "JPEG")
        atomic_write(target, save=lambda tmp: image.save(tmp, format=fmt), force=args.force)
        if not many:
            print(f"{target}: {image.width}x{image.height}")

    return run_files(files, work, "decompress")


def _decompress_image(model, name: str, data: bytes, args, many: bool):
    """Decode one image file; PerCoV2 takes --steps and --cfg and shows a bar over its sampling steps."""
    if name != "percov2":
        if args.steps is not None or args.cfg is not None:
            raise InputError(f"--steps and --cfg apply to percov2 files, not {name}")
        return model.decompress(data)
    from tqdm import tqdm

    steps = model.config.sampling.steps if args.steps is None else args.steps
    with tqdm(total=steps, desc="sampling", unit="step", disable=args.quiet or many, leave=False) as bar:
        return model.decompress(data, steps=steps, cfg_scale=args.cfg, progress=lambda done: bar.update(done - bar.n))


def _is_sequence_file(path: Path) -> bool:
    from latentcodec.bitstream import FileKind, parse_lead_byte

    with open(read_path(path), "rb") as f:
        first = f.read(1)
    return parse_lead_byte(first) is FileKind.VIDEO_SEQUENCE


def read_path(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    return path


def _video_target(path: Path, root: Path, output: str | None, many: bool) -> Path:
    """out.y4m / out.mp4 / out.mkv, or a folder of PNG frames (a name without a video suffix)."""
    if output is None:
        return path.with_suffix(".y4m")
    out = Path(output)
    if many:
        return (out / path.relative_to(root)).with_suffix(".y4m")
    return out  # a video file by its suffix, otherwise a folder of PNG frames


def _decompress_video(path: Path, root: Path, args, many: bool, models: dict) -> None:
    from latentcodec.api import VideoCodec
    from latentcodec.bitstream import SequenceReader
    from latentcodec.data.video import VIDEO_SUFFIXES, open_video_writer, tensor_to_frame

    target = _video_target(path, root, args.output, many)
    to_folder = target.suffix.lower() not in VIDEO_SUFFIXES or (args.output or "").endswith(os.sep)
    if to_folder:
        if target.exists() and not target.is_dir():
            raise InputError(f"{target} exists and is not a folder")
        if target.is_dir() and any(target.glob("frame_*.png")) and not args.force:
            raise InputError(f"{target} already holds frame_*.png files (use --force to overwrite)")
    elif target.exists() and not args.force:
        raise InputError(f"{target} exists (use --force to overwrite)")
    with open(path, "rb") as stream:
        header = SequenceReader(stream).header
    _allocator_for(args, header.width, header.height)
    entry, model = _model_for_file(header.model_id, args, models)
    codec = VideoCodec(model, entry, header.inter_rate, args.weights or "default")
    count = 0

    def write_frames(destination) -> None:
        nonlocal count
        from tqdm import tqdm

        with open(path, "rb") as stream, open_video_writer(destination, header.width, header.height,
                                                          header.frame_rate, lossless=args.lossless) as writer:
            bar = tqdm(total=header.frame_count or None, unit="frame", desc=path.name, file=sys.stderr,
                       disable=_tqdm_disable(args))
            with bar:
                for frame in codec.model.decode_sequence(stream):
                    writer.write(tensor_to_frame(frame))
                    bar.update(1)
                    count += 1

    if to_folder:
        # Frames go to a hidden sibling folder and are moved in only once the whole video decoded,
        # so a corrupt file leaves no partial frames; other files in the target folder are untouched.
        import shutil

        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part"))
        try:
            write_frames(staging)
            target.mkdir(exist_ok=True)
            for frame_file in sorted(staging.glob("frame_*.png")):
                os.replace(frame_file, target / frame_file.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        atomic_write(target, save=write_frames, force=args.force)
    if not many:
        print(f"{target}: {count} frames {header.width}x{header.height}")


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
    from latentcodec.bitstream import describe_image_file, describe_sequence_file

    path = Path(args.file)
    if _is_sequence_file(path):
        with open(path, "rb") as stream:
            info = describe_sequence_file(stream)
    else:
        data = read_bytes(path)
        info = describe_image_file(data)
        token_sections = _token_sections_of(info.model_id, data)
        if token_sections:
            info = dataclasses.replace(info, token_sections=token_sections)
        if args.streams:
            _, model = _model_for_file(info.model_id, args, {})
            if hasattr(model, "stream_bits"):
                info = dataclasses.replace(info, streams=model.stream_bits(data))
    if args.json:
        print(json.dumps(dataclasses.asdict(info), indent=2))
    else:
        for key, value in dataclasses.asdict(info).items():
            print(f"{key:>14}: {value}")
    return 0


def _token_sections_of(model_id: int, data: bytes) -> tuple:
    """What a codec whose files hold token maps says about them from the file alone (no weights)."""
    from latentcodec.zoo.registry import get_entry_by_id

    try:
        model_class = get_entry_by_id(model_id).load_class()
    except LatentCodecError:
        return ()
    describe = getattr(model_class, "token_sections", None)
    return describe(data) if describe is not None else ()


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


def _fraction(text: str):
    from fractions import Fraction

    try:
        value = Fraction(text.replace(":", "/"))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a frame rate: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the frame rate must be positive, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compress", help="compress images to .lci files, videos to .lcv files")
    p.add_argument("inputs", nargs="+",
                   help="image files or folders; videos (.y4m, .mp4, .mkv, ...) or folders of PNG frames with -o x.lcv")
    p.add_argument("-o", "--output", help="output file (one input) or folder")
    _add_model_options(p)
    p.add_argument("--intra-quality", type=_quality_number, default=None,
                   help="videos: I-frame rate, 0..63 or any number between (default: --quality)")
    p.add_argument("--target-bytes", type=_positive(int), default=None,
                   help="images: the largest file not above this many bytes (searched over the continuous rate)")
    p.add_argument("--target-bpp", type=_positive(float), default=None,
                   help="images: the largest file not above this bpp (8 x bytes / original H x W)")
    p.add_argument("--target-bitrate", default=None, metavar="BITS_PER_SECOND",
                   help="videos: stay within this bitrate, e.g. 50k or 1.2M, one continuous rate per GOP with a bit "
                        "reservoir carrying unspent bytes to the next GOP (latentcodec/video_ratecontrol.py); "
                        "prints the rate of every GOP")
    p.add_argument("--allow-downscale", action="store_true",
                   help="with a target: when even the lowest rate is too large, code a downscaled image (the scale "
                        "is in the header; decoding upsamples to the original size)")
    p.add_argument("--frame-rate", type=_fraction, default=None,
                   help="videos: frame rate, e.g. 25 or 30000/1001 (default: from the input; 25 for PNG frames)")
    p.add_argument("--caption", default=None, metavar="TEXT",
                   help="percov2: the caption to code with the image (needs a model with text encoders)")
    p.add_argument("--captioner", default=None, metavar="DIR",
                   help="percov2: caption each image with this local transformers image-to-text model (BLIP, GIT, "
                        "... saved with save_pretrained); the caption is coded in the file")
    p.add_argument("--passes", type=_positive(int), default=None, metavar="K",
                   help="percov2 hybrid mode: send only the first K passes of the token prior's schedule; the "
                        "decoder fills the rest with the prior's most probable codes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=cmd_compress)

    p = subparsers.add_parser("decompress", help="decompress .lci files to images, .lcv files to videos")
    p.add_argument("inputs", nargs="+", help=".lci/.lcv files or folders")
    p.add_argument("-o", "--output",
                   help="output image (one input; format from suffix) or folder; for a video: out.y4m, out.mp4, "
                        "out.mkv, or a folder (PNG frames)")
    _add_model_options(p, with_model=False)
    p.add_argument("--lossless", action="store_true", help="videos to .mp4/.mkv: lossless RGB H.264 instead of CRF 12")
    p.add_argument("--steps", type=_positive(int), default=None,
                   help="percov2: sampling steps (default: the model's, 20 for sd3)")
    p.add_argument("--cfg", type=_non_negative_float, default=None,
                   help="percov2: classifier-free guidance scale (default: the model's, 3.0 for sd3)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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
    p.add_argument("--streams", action="store_true",
                   help="also split a section that holds several streams (dlf: detail symbols and semantic tokens) "
                        "by decoding its entropy layer; needs the weights that wrote the file")
    p.add_argument("--weights", default=None, help="with --streams: the weights (default: shipped)")
    p.add_argument("--token-prior", default=None, metavar="DIR", help="with --streams: dlf token prior")
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser("models", help="list registered codecs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

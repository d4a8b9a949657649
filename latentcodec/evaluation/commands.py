"""Evaluation subcommands: eval, bdrate, plot, report, gallery."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentcodec.errors import InputError, LatentCodecError


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_eval(subparsers)
    _register_bdrate(subparsers)
    _register_plot(subparsers)
    _register_report(subparsers)
    _register_gallery(subparsers)


# -- eval ----------------------------------------------------------------------------------


def _register_eval(subparsers: argparse._SubParsersAction) -> None:
    from latentcodec.evaluation.baselines import BASELINES

    from latentcodec.evaluation.video_baselines import VIDEO_BASELINES

    parser = subparsers.add_parser(
        "eval",
        help="rate-distortion evaluation of an image or video codec and classical baselines on real files",
        description=(
            "Compress every image to a real file (OUT/bitstreams/), count bpp = 8 x file bytes / (H x W), "
            "decompress from the file and score the 8-bit reconstruction. Writes OUT/results/<curve>.json "
            "(CompressAI layout), OUT/per_image.json and .csv. An interrupted run resumes where it stopped. "
            "Runs under torchrun too (images sharded by rank). Videos (a video model such as glc-video, "
            "video data, or the x264/x265 baselines): bpp = 8 x file bytes / (H x W x frames), every frame "
            "scored; writes OUT/per_sequence.json/.csv and OUT/per_frame.json/.csv."
        ),
    )
    parser.add_argument("--model", help=f"codec to evaluate: a registered model (glc-image, glc-video), a baseline ({', '.join([*BASELINES, *VIDEO_BASELINES])}) or module:factory")
    parser.add_argument("--weights", help="weights folder (save_pretrained) or official checkpoint of --model")
    parser.add_argument("--compare", action="append", default=[], type=_model_and_weights, metavar="MODEL[=WEIGHTS]",
                        help="another learned codec to score at all its qualities on the same images in the same run "
                             "(repeatable; its shipped default unless =WEIGHTS), e.g. --model dlf --compare glc-image")
    parser.add_argument("--qualities", type=_floats, help="model quality indices (e.g. 0,1,2,3; continuous-rate models take any number in range, e.g. 1.5), or a baseline's parameter values; default: all (videos: 4 spread levels, 0,21,42,63 of 64) / the baseline's grid")
    parser.add_argument("--data", required=True, help="folder of images (not recursive) or one image file; videos: a .y4m/.mp4/... file, a folder of PNG frames, or a folder of those")
    parser.add_argument("--out", required=True, help="output folder (reused to resume)")
    parser.add_argument("--baselines", type=_names, default=(), help=f"comma-separated classical codecs: {','.join(BASELINES)} (images), {','.join(VIDEO_BASELINES)} (videos) or 'all'")
    parser.add_argument("--baseline-values", action="append", default=[], metavar="CODEC=V1,V2,...",
                        help="parameter grid of one baseline (repeatable), e.g. jpeg=1,5,10, hevc=51,45,40 or x264=40,35,30 (crf)")  # fmt: skip
    parser.add_argument("--frames", type=int, default=None, help="videos: evaluate the first N frames of each sequence (default all)")
    parser.add_argument("--intra-period", type=int, default=None,
                        help="videos: I-frame period of the model and x264/x265 (default: the model's, else 96; 0 = first frame only)")  # fmt: skip
    parser.add_argument("--scales", type=_ints, default=(1, 2, 4, 8), help="baseline downscale factors (default 1,2,4,8)")
    parser.add_argument("--target-bpp", type=_floats, default=(), help="target rates: per image, every codec's largest file not above each (the model through its rate control, if it has continuous rates)")
    parser.add_argument("--no-matched", action="store_true", help="skip the baselines at the model's file sizes")
    parser.add_argument("--metrics", type=_names, default=None, help="comma-separated metric names (default: every available standard metric)")
    parser.add_argument("--patch-size", type=int, default=256, help="patch size of patch FID/KID (default 256; GLC used 64 on Kodak)")
    parser.add_argument("--workers", type=int, default=0, help="processes (image shards); 0 = one per available core on CPU, 1 on GPU")
    parser.add_argument("--device", default="cpu", help="torch device of the model and metrics (cpu, cuda, cuda:1)")
    parser.add_argument("--keep-reconstructions", choices=("none", "model", "all"), default="model",
                        help="which decoded images to keep as PNG (the report shows the model's)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--captions", metavar="FILE", help="percov2: JSON object mapping image names (or stems) to the "
                        "caption coded with each image")
    parser.add_argument("--captioner", metavar="DIR", help="percov2: caption each image with this local "
                        "transformers image-to-text model folder (as `latentcodec compress --captioner`)")
    parser.set_defaults(func=run_eval_command)


def run_eval_command(args: argparse.Namespace) -> int:
    from latentcodec.evaluation.baselines import BASELINES, get_baseline
    from latentcodec.evaluation.runner import EvalConfig, run_evaluation

    if args.weights is not None and not Path(args.weights).exists():
        raise InputError(f"--weights {args.weights}: no such file or directory")
    if _is_video_evaluation(args):
        return _run_video_eval(args)
    if args.frames is not None or args.intra_period is not None:
        raise InputError("--frames and --intra-period apply to video evaluations only")
    for _, weights in args.compare:
        if weights is not None and not Path(weights).exists():
            raise InputError(f"--compare weights {weights}: no such file or directory")
    if args.captions is not None and args.captioner is not None:
        raise InputError("--captions and --captioner exclude each other")
    if (args.captions is not None or args.captioner is not None) and args.target_bpp:
        raise InputError("--captions and --captioner do not combine with --target-bpp")
    baselines = tuple(BASELINES) if args.baselines == ("all",) else tuple(args.baselines)
    if args.workers < 0:
        raise InputError("--workers must be 0 (auto) or positive")
    if args.patch_size < 8:
        raise InputError("--patch-size must be at least 8")
    config = EvalConfig(
        **_common_config(args),
        baselines=baselines,
        scales=args.scales,
        baseline_values=_baseline_values(args.baseline_values, get_baseline),
        patch_size=args.patch_size,
        workers=args.workers,
        keep_reconstructions=args.keep_reconstructions,
        captions=args.captions,
        captioner=args.captioner,
        compare=tuple(args.compare),
    )
    summary = run_evaluation(config)
    if not summary.curves:  # a torchrun rank other than 0
        return 0
    _print_summary(summary)
    return 0


def _is_video_evaluation(args: argparse.Namespace) -> bool:
    """A video model, an x264/x265 baseline, or video data (a folder of PNGs alone reads as images)."""
    from latentcodec.evaluation.baselines import BASELINES
    from latentcodec.evaluation.video_baselines import VIDEO_BASELINES
    from latentcodec.evaluation.videos import looks_like_video_data
    from latentcodec.zoo.registry import get_entry

    if {args.model, *args.baselines} & set(VIDEO_BASELINES):
        return True
    if args.model and ":" not in args.model and args.model not in BASELINES:
        try:
            if get_entry(args.model).kind == "video":
                return True
        except LatentCodecError:
            pass  # an unknown name: the loader below says so
    return looks_like_video_data(args.data)


def _run_video_eval(args: argparse.Namespace) -> int:
    from latentcodec.evaluation.video_baselines import VIDEO_BASELINES, get_video_baseline
    from latentcodec.evaluation.video_runner import VideoEvalConfig, run_video_evaluation

    if args.captions is not None or args.captioner is not None:
        raise InputError("--captions and --captioner apply to percov2 image evaluations only")
    if args.compare:
        raise InputError("--compare applies to image evaluations only")

    config = VideoEvalConfig(
        **_common_config(args),
        baselines=tuple(VIDEO_BASELINES) if args.baselines == ("all",) else tuple(args.baselines),
        baseline_values=_baseline_values(args.baseline_values, get_video_baseline),
        frames=args.frames,
        intra_period=args.intra_period,
    )
    _print_summary(run_video_evaluation(config), unit="sequence")
    return 0


def _common_config(args: argparse.Namespace) -> dict:
    """The EvalConfig fields images and videos take from the same flags."""
    return dict(
        data=args.data, out=args.out, model=args.model, weights=args.weights, qualities=args.qualities,
        target_bpp=args.target_bpp, matched=not args.no_matched, metrics=args.metrics, device=args.device,
        progress=not args.no_progress,
    )  # fmt: skip


def _print_summary(summary, unit: str = "image") -> None:
    print(f"{summary.new_items} items evaluated, {summary.resumed_items} resumed from {summary.out_dir}")
    for curve in summary.curves:
        print(f"{curve.name}:")
        for point in curve.points:
            values = "  ".join(
                f"{k}={v:.4g}" for k, v in point.values.items() if k not in _QUIET_KEYS
            )
            print(f"  {point.point:>14}  {values}")
        if curve.incomplete_points:
            print(f"  (not on every {unit}: {', '.join(curve.incomplete_points)})")
    print(f"results: {summary.out_dir / 'results'}")


_QUIET_KEYS = ("encoding_time", "decoding_time", "metrics_time", "search_time", "quality", "qp", "distance", "crf", "target_bpp")


def _baseline_values(entries: list[str], get_codec) -> dict[str, tuple[float, ...]]:
    values: dict[str, tuple[float, ...]] = {}
    for entry in entries:
        name, sep, numbers = entry.partition("=")
        if not sep:
            raise InputError(f"--baseline-values {entry!r}: expected CODEC=V1,V2,...")
        get_codec(name.strip())
        values[name.strip()] = _floats(numbers)
    return values


# -- bdrate --------------------------------------------------------------------------------


def _register_bdrate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bdrate",
        help="Bjontegaard delta rate of B against anchor A (PCHIP on log-rate)",
        description="BD-rate of results B against anchor A on one metric: negative means B needs fewer bits.",
    )
    parser.add_argument("anchor", help="anchor results JSON (CompressAI layout)")
    parser.add_argument("test", help="test results JSON")
    parser.add_argument("--metric", required=True, help="metric key in the results (psnr, lpips_alex, dists, ssimulacra2, butteraugli, ...)")
    parser.add_argument("--rate", default="bpp", help="rate key (default bpp; estimated_bpp for GLC's own accounting)")
    parser.set_defaults(func=run_bdrate_command)


def run_bdrate_command(args: argparse.Namespace) -> int:
    from latentcodec.evaluation.bdrate import bd_rate_curves
    from latentcodec.evaluation.results import load_results

    anchor, test = load_results(args.anchor), load_results(args.test)
    result = bd_rate_curves(anchor, test, args.metric, rate_key=args.rate)
    print(
        f"BD-rate of {test.name} against {anchor.name} on {args.metric}: {result.percent:+.2f} % "
        f"(over {args.metric} {result.low:.6g}..{result.high:.6g}; {result.anchor_points} and {result.test_points} points)"
    )
    return 0


# -- plot ----------------------------------------------------------------------------------


def _register_plot(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plot", help="RD curves of results JSON files as a PNG")
    parser.add_argument("results", nargs="+", help="results JSON files (or folders of them)")
    parser.add_argument("--metric", required=True, help="metric on the y axis")
    parser.add_argument("--rate", default="bpp", help="rate key on the x axis (default bpp)")
    parser.add_argument("--logx", action="store_true", help="logarithmic rate axis")
    parser.add_argument("-o", "--output", default="rd.png", help="PNG to write (default rd.png)")
    parser.set_defaults(func=run_plot_command)


def run_plot_command(args: argparse.Namespace) -> int:
    from latentcodec.evaluation.plots import write_plot
    from latentcodec.evaluation.results import load_results

    files: list[Path] = []
    for entry in args.results:
        path = Path(entry)
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise InputError(f"{path}: no results JSON files in this folder")
            files += found
        else:
            files.append(path)
    curves = [load_results(path) for path in files]
    output = write_plot(curves, args.metric, args.output, rate_key=args.rate, log_rate=args.logx)
    print(f"wrote {output}")
    return 0


# -- report --------------------------------------------------------------------------------


def _register_report(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="self-contained offline HTML report of an evaluation folder")
    parser.add_argument("results_dir", help="the --out folder of latentcodec eval")
    parser.add_argument("-o", "--output", help="HTML file to write (default RESULTS_DIR/report.html)")
    parser.add_argument("--images", type=_names, default=None, help="image ids to compare side by side (default: the first two)")
    parser.add_argument("--crop", type=int, default=256, help="side of the centre crops in pixels (default 256)")
    parser.set_defaults(func=run_report_command)


def run_report_command(args: argparse.Namespace) -> int:
    from latentcodec.evaluation.report import build_report

    output = build_report(args.results_dir, args.output, images=args.images, crop=args.crop)
    print(f"wrote {output}")
    return 0


# -- gallery -------------------------------------------------------------------------------


def _register_gallery(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gallery", help="one PNG per operating point: original | ours | best classical codec at no more bytes")
    parser.add_argument("results_dir", help="the --out folder of latentcodec eval (with the model's reconstructions)")
    parser.add_argument("-o", "--output", required=True, help="folder for gallery-<point>.png")
    parser.add_argument("--images", type=_names, required=True, help="image ids, one row each (e.g. kodim01,kodim23)")
    parser.add_argument("--metric", default="ms_ssim", help="picks the best classical file per image (default ms_ssim)")
    parser.add_argument("--max-bytes", type=int, default=1_000_000, help="largest PNG; pictures shrink to fit")
    parser.add_argument("--force", action="store_true", help="overwrite existing gallery PNGs")
    parser.set_defaults(func=run_gallery_command)


def run_gallery_command(args: argparse.Namespace) -> int:
    from latentcodec.evaluation.gallery import build_gallery

    for page in build_gallery(args.results_dir, args.output, args.images, metric=args.metric,
                              max_bytes=args.max_bytes, force=args.force):
        print(f"wrote {page.path} ({page.bytes} bytes, pictures {page.tile_width} px wide)")
    return 0


# -- argument types ------------------------------------------------------------------------


def _model_and_weights(text: str) -> tuple[str, str | None]:
    """'dlf' -> ('dlf', None); 'dlf=path/to/weights' -> ('dlf', 'path/to/weights')."""
    model, separator, weights = text.partition("=")
    if not model.strip() or (separator and not weights.strip()):
        raise argparse.ArgumentTypeError(f"expected MODEL or MODEL=WEIGHTS, got {text!r}")
    return model.strip(), weights.strip() if separator else None


def _names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


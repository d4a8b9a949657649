"""``latentcodec fit-token-prior``: fit a masked-token prior to a frozen model: DLF's semantic tokens,
or PerCoV2's hyper-latent token maps (its training stage B)."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentcodec.files import parse_byte_size
from latentcodec.models.weight_files import DEFAULT_MAX_SHARD_SIZE

DEFAULT_RUNS = Path.home() / ".cache" / "latentcodec" / "runs"


def register(subparsers: argparse._SubParsersAction) -> None:
    fit = subparsers.add_parser(
        "fit-token-prior",
        help="fit a learned token prior to a frozen DLF (semantic tokens) or PerCoV2 model (stage B: token maps)",
        description="Encode training crops with a frozen model, cache its tokens (DLF: with the decoded detail "
        "latents they are coded against), then train the masked-token prior on them by cross-entropy. Both phases "
        "resume from the run folder.",
    )
    fit.add_argument("--model", choices=("dlf", "percov2"), default="dlf", help="whose tokens (default dlf)")
    fit.add_argument("output", help="folder to write the prior to (config.json + model.safetensors)")
    fit.add_argument("--weights", default=None, help="the frozen model: a save_pretrained folder (DLF also an "
                     "official .pth; default: the shipped default)")
    fit.add_argument("--images", action="append", default=None, metavar="DIR",
                     help="training image folder (repeatable; default ../shared/data/train)")
    fit.add_argument("--run-dir", default=None, help=f"where the cache and checkpoints go (default {DEFAULT_RUNS}/"
                     "dlf-token-prior-<output name>)")
    fit.add_argument("--crops", type=int, default=256, help="training crops to encode (default 256)")
    fit.add_argument("--crop-windows", type=int, default=2, help="dlf: crop side in windows (default 2)")
    fit.add_argument("--crop-size", type=int, default=512, help="percov2: crop side in pixels (default 512)")
    fit.add_argument("--schedule", default="hierarchical", help="percov2: the coding schedule (default "
                     "hierarchical; also single-pass, checkerboard, quincunx, qlds, hierarchical-split)")
    fit.add_argument("--steps", type=int, default=2000, help="prior training steps (default 2000)")
    fit.add_argument("--validation-images", type=int, default=48, help="evenly spaced training images withheld "
                     "to pick the best weights on, at most 1 in 8 (default 48; 0: keep the last weights)")
    fit.add_argument("--validation-crops", type=int, default=64, help="crops of the withheld images (default 64)")
    fit.add_argument("--width", type=int, default=128, help="transformer width (default 128)")
    fit.add_argument("--layers", type=int, default=3, help="transformer layers (default 3)")
    fit.add_argument("--passes", type=int, default=4, help="dlf: masked-token passes per window (default 4)")
    fit.add_argument("--save-model", default=None, metavar="DIR",
                     help="also write the model with the fitted prior inside it (a save_pretrained folder that "
                          "codes its tokens under the prior with no --token-prior; how a default ships)")
    fit.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                     help="storage type of --save-model's weights (float16 halves the file)")
    fit.add_argument("--max-shard-size", type=parse_byte_size, default=DEFAULT_MAX_SHARD_SIZE, metavar="SIZE",
                     help="split --save-model's weights into files of at most SIZE, e.g. 45MiB "
                          f"(default {DEFAULT_MAX_SHARD_SIZE}; shipped defaults stay under git hosts' file limits)")
    fit.add_argument("--force", action="store_true", help="overwrite existing output folders")
    fit.add_argument("--restart", action="store_true", help="discard the run folder's token cache and checkpoint "
                     "and start over (a folder holding a fit of other weights or settings is refused otherwise)")
    fit.set_defaults(func=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    import torch

    from latentcodec.api import load_model
    from latentcodec.errors import LatentCodecError
    from latentcodec.training import token_prior_fit as fitting

    output = Path(args.output)
    for path in (output, Path(args.save_model) if args.save_model else None):
        if path is not None and path.exists() and not args.force:
            raise LatentCodecError(f"{path} exists (use --force to overwrite)")
    for name in ("crops", "crop_windows", "crop_size", "steps", "width", "layers", "passes"):
        if getattr(args, name) < 1:
            raise LatentCodecError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("validation_images", "validation_crops"):
        if getattr(args, name) < 0:
            raise LatentCodecError(f"--{name.replace('_', '-')} must be at least 0")
    model, _, source = load_model(args.model, args.weights)
    model.eval()
    run_dir = Path(args.run_dir) if args.run_dir else DEFAULT_RUNS / f"{args.model}-token-prior-{output.name}"
    config = fitting.TokenPriorFitConfig(crops=args.crops, crop_windows=args.crop_windows, fit_steps=args.steps,
                                         validation_images=args.validation_images,
                                         validation_crops=args.validation_crops)
    images = args.images or ["../shared/data/train"]
    shape = dict(width=args.width, layers=args.layers, heads=max(1, args.width // 64))
    if args.model == "percov2":
        if not model.fits(args.crop_size, args.crop_size):
            raise LatentCodecError(f"--crop-size {args.crop_size} is larger than this model takes")
    crop = dict(crop_size=args.crop_size, schedule=args.schedule) if args.model == "percov2" else \
        dict(crop_windows=args.crop_windows, passes=args.passes)
    fitting.claim_run_dir(run_dir, dict(model=args.model, weights=fitting.weights_digest(model),
                                        images=[str(Path(folder).resolve()) for folder in images],
                                        width=args.width, layers=args.layers,
                                        validation_images=args.validation_images, **crop), restart=args.restart)
    if args.model == "percov2":
        grid = model.token_grid(args.crop_size, args.crop_size)
        crop_kind = dict(crop_side=args.crop_size, encode_crop=fitting.token_maps_of)
        prior_config = model.config.default_token_prior(args.schedule, **shape)
        fixed = grid[0] * grid[1] * model.config.hyper.token_bits
    else:
        grid = None
        crop_kind = {}  # DLF's windows, extract's default
        prior_config = model.config.default_token_prior(passes=args.passes, **shape)
        fixed = prior_config.num_positions * model.config.token_bits
    with torch.inference_mode():
        cache = fitting.extract(model, images, run_dir, config, **crop_kind)
        validation = fitting.extract(model, images, run_dir, config, **crop_kind, validation=True)
    result = fitting.fit(cache, prior_config, run_dir, config, grid=grid, validation=validation)
    prior = result.prior
    sample = slice(0, min(512, len(cache)))
    bits = fitting.validation_bits(prior, fitting.TokenCache(*(column[sample] for column in cache)), grid)
    tokens = cache.tokens.shape[1]
    unit = "token_map" if grid else "window"
    metadata = {"weights": source, f"{unit}s": len(cache), "steps": args.steps, "chosen_step": result.step,
                "train_bits_per_token": bits, "fixed_bits_per_token": fixed / tokens}
    held_out = ""
    if result.validation_bits_per_token is not None:
        metadata.update(validation_bits_per_token=result.validation_bits_per_token,
                        validation_units=len(validation))
        held_out = (f", {result.validation_bits_per_token:.2f} on {len(validation)} held-out "
                    f"{unit.replace('_', ' ')}s (step {result.step} of {args.steps})")
    fitting.save_token_prior(prior, output, metadata, args.model)
    print(f"{output}: {len(cache)} {unit.replace('_', ' ')}s, {bits:.2f} bits/token on training data{held_out} "
          f"(fixed length {fixed / tokens:.0f})")
    if args.save_model:
        model.attach_token_prior(prior).save_pretrained(args.save_model, metadata={"token_prior": str(output)},
                                                        max_shard_size=args.max_shard_size,
                                                        dtype=getattr(torch, args.dtype))
        print(f"{args.save_model}: the model with its token prior")
    return 0

"""``latentcodec fit-token-prior``: fit DLF's semantic-token prior to a frozen model."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_RUNS = Path.home() / ".cache" / "latentcodec" / "runs"


def register(subparsers: argparse._SubParsersAction) -> None:
    fit = subparsers.add_parser(
        "fit-token-prior",
        help="fit DLF's learned semantic-token prior to a frozen DLF model (the official one included)",
        description="Encode training crops with a frozen DLF model, cache its tokens and decoded detail latents, "
        "then train the masked-token prior on them. Both phases resume from the run folder.",
    )
    fit.add_argument("output", help="folder to write the prior to (config.json + model.safetensors)")
    fit.add_argument("--weights", default=None, help="DLF weights: a save_pretrained folder or an official .pth "
                     "(default: the shipped DLF default)")
    fit.add_argument("--images", action="append", default=None, metavar="DIR",
                     help="training image folder (repeatable; default ../shared/data/train)")
    fit.add_argument("--run-dir", default=None, help=f"where the cache and checkpoints go (default {DEFAULT_RUNS}/"
                     "dlf-token-prior-<output name>)")
    fit.add_argument("--crops", type=int, default=256, help="training crops to encode (default 256)")
    fit.add_argument("--crop-windows", type=int, default=2, help="crop side in windows (default 2)")
    fit.add_argument("--steps", type=int, default=2000, help="prior training steps (default 2000)")
    fit.add_argument("--width", type=int, default=128, help="transformer width (default 128)")
    fit.add_argument("--layers", type=int, default=3, help="transformer layers (default 3)")
    fit.add_argument("--passes", type=int, default=4, help="masked-token passes per window (default 4)")
    fit.add_argument("--save-model", default=None, metavar="DIR",
                     help="also write the DLF model with the fitted prior inside it (a save_pretrained folder that "
                          "codes its tokens under the prior with no --token-prior; how a default ships)")
    fit.add_argument("--force", action="store_true", help="overwrite existing output folders")
    fit.set_defaults(func=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    import torch

    from latentcodec.api import load_model
    from latentcodec.errors import LatentCodecError
    from latentcodec.training.token_prior_fit import TokenPriorFitConfig, extract, fit, save_token_prior

    output = Path(args.output)
    for path in (output, Path(args.save_model) if args.save_model else None):
        if path is not None and path.exists() and not args.force:
            raise LatentCodecError(f"{path} exists (use --force to overwrite)")
    for name in ("crops", "crop_windows", "steps", "width", "layers", "passes"):
        if getattr(args, name) < 1:
            raise LatentCodecError(f"--{name.replace('_', '-')} must be at least 1")
    model, _, source = load_model("dlf", args.weights)
    model.eval()
    run_dir = Path(args.run_dir) if args.run_dir else DEFAULT_RUNS / f"dlf-token-prior-{output.name}"
    config = TokenPriorFitConfig(crops=args.crops, crop_windows=args.crop_windows, fit_steps=args.steps)
    images = args.images or ["../shared/data/train"]
    with torch.inference_mode():
        cache = extract(model, images, run_dir, config)
    prior_config = model.config.default_token_prior(width=args.width, layers=args.layers, passes=args.passes,
                                                    heads=max(1, args.width // 64))
    prior = fit(cache, prior_config, run_dir, config)
    fixed = prior_config.num_positions * model.config.token_bits
    bits = prior.bits(*_sample(cache, 512)).mean().item()
    save_token_prior(prior, output, {"weights": source, "windows": len(cache), "steps": args.steps,
                                     "train_bits_per_window": bits, "fixed_bits_per_window": fixed})
    print(f"{output}: {len(cache)} windows, {bits / prior_config.num_positions:.2f} bits/token on training windows "
          f"(fixed length {model.config.token_bits})")
    if args.save_model:
        model.attach_token_prior(prior).save_pretrained(args.save_model, metadata={"token_prior": str(output)})
        print(f"{args.save_model}: the model with its token prior")
    return 0


def _sample(cache, count: int):
    from latentcodec.entropy.token_prior import TokenPriorInputs

    picked = slice(0, min(count, len(cache)))
    return TokenPriorInputs(cache.condition[picked], cache.context[picked]), cache.tokens[picked]

"""``latentcodec train CONFIG [--override key=value ...] [--resume]`` and ``latentcodec export-weights``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a GLC-image, GLC-video, DLF or PerCoV2 stage from a YAML config",
        description="Train one stage (GLC-image: vqgan, latent or joint; GLC-video: video; DLF: dlf_align or "
        "dlf_pixel; PerCoV2: percov2_vae or percov2_flow, whose token prior is then fitted by fit-token-prior) "
        "from a YAML config. "
        "For several processes use: torchrun --nproc_per_node N -m latentcodec.train CONFIG",
    )
    train.add_argument("config", help="YAML training config (see latentcodec/training/configs/)")
    train.add_argument("--override", "-o", action="append", default=[], metavar="KEY=VALUE",
                       help="change a config value, e.g. --override optim.lr=2e-4 (repeatable)")
    train.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    train.set_defaults(func=run_train)

    export = subparsers.add_parser(
        "export-weights",
        help="write an inference model (config.json + model.safetensors) from a training checkpoint",
    )
    export.add_argument("checkpoint", help="a run folder or its checkpoint.pt")
    export.add_argument("output", help="folder to write")
    export.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="storage type of the weights (float16 halves the file)")
    export.set_defaults(func=run_export)


def run_train(args: argparse.Namespace) -> int:
    from latentcodec.training.config import load_config
    from latentcodec.training.trainer import run_training

    config = load_config(args.config, args.override)
    run_training(config, resume=args.resume)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from latentcodec.training.trainer import export_inference_model

    import torch

    dtype = None if args.dtype == "float32" else getattr(torch, args.dtype)
    path = export_inference_model(args.checkpoint, args.output, dtype=dtype)
    print(path)
    return 0

"""PerCoV2's Table-1 analogue (SYSTEMS.md 6.6.5): bits per token of each coding schedule of the
masked-token entropy model at g = 8, 16, 32, on Kodak token maps, against fixed-length log2 K.

    python benchmarks/percov2_token_schedules.py --out docs/results/percov2_token_schedules.json
    python benchmarks/percov2_token_schedules.py --weights PERCOV2_DIR --out docs/results/percov2_token_schedules_model.json

With ``--weights`` (a PerCoV2 save_pretrained folder, e.g. the trained small model) the token maps are that
model's own (its hyper-encoder and VQ over its VAE latent, at its one g and K) instead of the stand-in below.

Where the tokens come from. PerCoV2's tokens are a cosine VQ of a hyper-encoder over SD3's latent; we
have neither SD3's VAE nor a trained PerCoV2, so this script builds token maps of the same kind from a
trained encoder it can run: the VQGAN encoder of the first shipped GLC-image default, glc-image-v1 (f16, 64 channels),
average-pooled to one vector per token (512/g pixels per side: 4x4, 2x2 or 1x1 latent positions at
g = 8, 16, 32), unit-normalised, and quantised to the nearest of K codes by cosine. The codebook is a
spherical k-means (scipy's kmeans2 on unit vectors, k-means++ seeding) of the training images' vectors.
Every image is resampled to 768x512 (portrait ones rotated to landscape first), so every map is
12x8, 24x16 or 48x32 tokens, as Kodak's are (the training images, mostly BSDS500 at 481x321, are
upsampled for that).

For each grid and schedule a prior is fitted on the training maps with the shared stage-B machinery
(training/token_prior_fit.fit: AdamW, cosine decay, cross-entropy on the sampled pass), resumable
from ``--cache``. Reported per schedule: the number of passes, the cross-entropy bits per token on the
24 Kodak maps (float model, teacher-forced: the expected code length), the saving against log2 K, and
for the first ``--coded-images`` images the real range-coded length under the exact integer twin.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from latentcodec.api import load_model
from latentcodec.zoo.registry import SHIPPED_WEIGHTS_DIR
from latentcodec.data.crops import find_images
from latentcodec.data.images import list_images, load_rgb, pil_to_tensor
from latentcodec.entropy.coder import EntropyEncoder
from latentcodec.entropy.token_prior import MaskedTokenPrior, TokenPriorConfig
from latentcodec.entropy.token_schedules import SCHEDULES, schedule_passes
from latentcodec.training.token_prior_fit import TokenCache, TokenPriorFitConfig, fit

SIZE = (768, 512)  # landscape Kodak
LATENT_FACTOR = 16  # the GLC-image VQGAN's downsampling


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="append", default=None, help="training image folder(s) (default "
                        "../shared/data/train)")
    parser.add_argument("--max-train", type=int, default=400, help="training images used (a seeded random subset)")
    parser.add_argument("--kodak", default="../shared/data/kodak")
    parser.add_argument("--weights", default=None, help="a PerCoV2 model folder: its own token maps (its g and K) "
                        "instead of the stand-in")
    parser.add_argument("--grids", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES))
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 200, 120],
                        help="fit steps per grid, in --grids order")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 8, 4], help="maps per step, per grid")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--coded-images", type=int, default=4, help="Kodak images also range-coded exactly")
    parser.add_argument("--cache", default=str(Path.home() / ".cache/latentcodec/benchmarks/percov2_token_schedules"),
                        help="features, and each prior's resumable fit")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="JSON to write (and a .md table beside it)")
    return parser.parse_args(argv)


def landscape(path: Path) -> torch.Tensor:
    image = load_rgb(path)
    if image.height > image.width:
        image = image.transpose(Image.Transpose.ROTATE_90)
    if image.size != SIZE:
        image = image.resize(SIZE, Image.Resampling.BICUBIC)
    return pil_to_tensor(image)


@torch.inference_mode()
def per_image(compute, paths: list[Path], cache: Path, desc: str) -> torch.Tensor:
    """``compute`` of every image at 768x512 (landscape), concatenated along dim 0, cached in ``cache``."""
    if cache.is_file():
        return torch.load(cache)
    result = torch.cat([compute(landscape(path)) for path in tqdm(paths, desc=desc, unit="image")])
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result, cache)
    return result


def token_vectors(features: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, C, rows, cols) unit vectors, one per token of grid g."""
    pool = (512 // grid) // LATENT_FACTOR
    return F.normalize(F.avg_pool2d(features, pool) if pool > 1 else features, dim=1)


def spherical_codebook(vectors: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    from scipy.cluster.vq import kmeans2

    flat = vectors.permute(0, 2, 3, 1).reshape(-1, vectors.shape[1]).double().numpy()
    rng = np.random.default_rng(seed)
    sample = flat[rng.permutation(len(flat))[:60000]]
    centroids, _ = kmeans2(sample, size, iter=30, minit="++", seed=seed)
    return F.normalize(torch.from_numpy(centroids).float(), dim=1)


def tokens_of(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, rows * cols) nearest codes by cosine, raster order."""
    return torch.einsum("nchw,kc->nhwk", vectors, codebook).argmax(-1).flatten(1)


def coded_bits(prior: MaskedTokenPrior, tokens: torch.Tensor, grid: tuple[int, int]) -> float:
    twin = prior.integer_twin()
    total = 0
    for row in tokens:
        encoder = EntropyEncoder()
        twin.code(None, None, row[None], encoder, decode=False, grid=grid)
        total += 8 * len(encoder.finish())
    return total


def weights_key(folder: str) -> str:
    """A short digest of a model folder's weights, so caches never mix two models' tokens."""
    digest = hashlib.sha256()
    for name in sorted(p.name for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".json")):
        digest.update((Path(folder) / name).read_bytes())
    return digest.hexdigest()[:12]


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.weights:  # one grid, the model's: the first --steps and --batch values
        args.steps, args.batch = args.steps[:1], args.batch[:1]
    elif not (len(args.steps) == len(args.batch) == len(args.grids)):
        print("--steps and --batch need one value per grid", file=sys.stderr)
        return 1
    cache = Path(args.cache)
    train_paths = find_images(args.train or ["../shared/data/train"])
    subset = torch.randperm(len(train_paths), generator=torch.Generator().manual_seed(0))[: args.max_train]
    train_paths = [train_paths[i] for i in sorted(subset.tolist())]
    kodak_paths = list_images(args.kodak)
    if args.weights:
        model, _, weights_source = load_model("percov2", args.weights)
        model.eval()
        hyper = model.config.hyper
        args.grids, args.codebook_size = [hyper.grid], hyper.codebook_size
        key = weights_key(args.weights)
        def token_map(image: torch.Tensor) -> torch.Tensor:  # (1, rows * cols), raster order
            return model.tokens(model.pad(image))[1].indices.flatten(1)

        model_maps = (per_image(token_map, train_paths, cache / f"model-{key}-train.pt", "train tokens"),
                      per_image(token_map, kodak_paths, cache / f"model-{key}-kodak.pt", "kodak tokens"))
        model_grid = model.token_grid(SIZE[1], SIZE[0])
        tokens_from = (f"The token maps of the PerCoV2 model {weights_source} (g = {hyper.grid}, "
                       f"K = {hyper.codebook_size}); images resampled to 768x512 landscape")
    else:
        # The first shipped image default, whose encoder the committed results used (kept as glc-image-v1).
        glc, _, glc_source = load_model("glc-image", str(SHIPPED_WEIGHTS_DIR / "glc-image-v1"))
        encoder = glc.eval().vqgan.encoder
        # (N, 64, 32, 48) VQGAN features
        train_features = per_image(encoder, train_paths, cache / "train_features.pt", "train features")
        kodak_features = per_image(encoder, kodak_paths, cache / "kodak_features.pt", "kodak features")
        tokens_from = f"cosine VQ (spherical k-means, K={args.codebook_size}) of avg-pooled VQGAN encoder features " \
                      f"of the shipped GLC-image default ({glc_source}); images resampled to 768x512 landscape"
    fixed = math.log2(args.codebook_size)
    rows_out = []
    for grid, steps, batch in zip(args.grids, args.steps, args.batch):
        if args.weights:
            (train_tokens, kodak_tokens), map_grid = model_maps, model_grid
        else:
            train_vectors, kodak_vectors = token_vectors(train_features, grid), token_vectors(kodak_features, grid)
            map_grid = tuple(train_vectors.shape[-2:])
            codebook = spherical_codebook(train_vectors, args.codebook_size)
            train_tokens, kodak_tokens = tokens_of(train_vectors, codebook), tokens_of(kodak_vectors, codebook)
        used = int(torch.unique(kodak_tokens).numel())
        counts = torch.bincount(kodak_tokens.flatten(), minlength=args.codebook_size).double()
        empirical = float(-(counts[counts > 0] / counts.sum() * torch.log2(counts[counts > 0] / counts.sum())).sum())
        train_cache = TokenCache(train_tokens, train_tokens.new_empty(len(train_tokens), 0, train_tokens.shape[1]),
                                 torch.zeros(len(train_tokens), 0, 1))
        for schedule in args.schedules:
            side = max(map_grid)
            config = TokenPriorConfig(vocab_size=args.codebook_size, num_positions=0, condition_channels=0,
                                      num_condition_tokens=0, context_units=0, max_grid_side=side, schedule=schedule,
                                      passes=schedule_passes(schedule, side, side), width=args.width,
                                      layers=args.layers, heads=args.heads)
            fit_config = TokenPriorFitConfig(fit_steps=steps, batch_windows=batch, lr=args.lr, checkpoint_every=50)
            started = time.perf_counter()
            # The run folder is keyed by the training maps too: a fit resumes only on the same tokens.
            tokens_key = hashlib.sha256(train_tokens.numpy().tobytes()).hexdigest()[:12]
            prior = fit(train_cache, config, cache / f"g{grid}-{schedule}-{tokens_key}", fit_config, grid=map_grid).prior
            fit_seconds = time.perf_counter() - started
            kodak_bits = prior.bits(None, kodak_tokens, map_grid)
            train_bits = prior.bits(None, train_tokens[:64], map_grid)
            positions = kodak_tokens.shape[1]
            bits_per_token = kodak_bits.mean().item() / positions
            row = {"grid": grid, "map": list(map_grid), "schedule": schedule,
                   "passes": schedule_passes(schedule, *map_grid), "bits_per_token": bits_per_token,
                   "saving_vs_uniform": 1.0 - bits_per_token / fixed,
                   "train_bits_per_token": train_bits.mean().item() / positions,
                   "fit_seconds": fit_seconds}
            if args.coded_images:
                subset = kodak_tokens[: args.coded_images]
                row["coded_bits_per_token"] = coded_bits(prior, subset, map_grid) / subset.numel()
                row["cross_entropy_bits_per_token_same_images"] = kodak_bits[: args.coded_images].mean().item() / positions
            rows_out.append(row)
            print(f"g={grid} {schedule:>18}: {row['passes']:2d} passes, {bits_per_token:.3f} bits/token "
                  f"({100 * row['saving_vs_uniform']:.1f} % below {fixed:.0f})", flush=True)
        rows_out.append({"grid": grid, "map": list(map_grid), "schedule": "fixed-length (uniform)", "passes": 0,
                         "bits_per_token": fixed, "saving_vs_uniform": 0.0,
                         "kodak_codes_used": used, "kodak_unigram_entropy": empirical})
    result = {
        "what": "PerCoV2 Table-1 analogue: masked-token prior schedules on Kodak token maps",
        "tokens_from": tokens_from, "tokens_of_a_percov2_model": bool(args.weights),
        "train_images": len(train_paths), "kodak_images": len(kodak_paths),
        "prior": {"width": args.width, "layers": args.layers, "heads": args.heads, "lr": args.lr,
                  "steps": dict(zip(map(str, args.grids), args.steps)),
                  "batch": dict(zip(map(str, args.grids), args.batch))},
        "command": "python benchmarks/percov2_token_schedules.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "rows": rows_out,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def markdown(result: dict) -> str:
    prior = result["prior"]
    lines = [
        "# PerCoV2 token schedules: the Table-1 analogue (SYSTEMS.md 6.6.5)",
        "",
        f"Command: `{result['command']}` (JSON beside this file).",
        "",
        f"**Where the tokens come from.** {result['tokens_from']}." if result.get("tokens_of_a_percov2_model") else
        "**Where the tokens come from.** Not from PerCoV2: there is no trained PerCoV2 and no SD3 VAE here. "
        f"The maps are a stand-in of the same kind: {result['tokens_from']}. Each token is the cosine-nearest "
        "code of the encoder's features pooled over the token's 512/g-pixel square, so neighbouring tokens "
        "are correlated as a learned hyper-latent's are, but the statistics (and so the absolute bits) are "
        "those of this stand-in, not of PerCoV2's stage-A hyper-encoder; the comparison between schedules "
        "is the point.",
        "",
        f"**Priors.** One per grid and schedule, {prior['layers']} layers, width {prior['width']}, "
        f"{prior['heads']} heads, fitted on {result['train_images']} training images with "
        "training/token_prior_fit.fit (AdamW lr "
        f"{prior['lr']}, cosine decay; steps {prior['steps']}, maps per step {prior['batch']}): small and "
        "briefly trained on one CPU core, far below SYSTEMS.md 6.6.5's 12x512 network, so every saving "
        "here is a lower bound. Bits per token: the float prior's cross-entropy on the "
        f"{result['kodak_images']} Kodak maps (teacher-forced pass by pass: the expected code length). "
        "Last column: the real range-coded length under the exact integer twin on the first images, with "
        "the cross-entropy of the same images in brackets.",
        "",
        "| g | map | schedule | passes | bits/token (Kodak) | saving vs uniform | coded bits/token (first images) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        coded = f"{row['coded_bits_per_token']:.3f} (CE {row['cross_entropy_bits_per_token_same_images']:.3f})" \
            if "coded_bits_per_token" in row else "–"
        lines.append(f"| {row['grid']} | {row['map'][0]}x{row['map'][1]} | {row['schedule']} | {row['passes']} | "
                     f"{row['bits_per_token']:.3f} | {100 * row['saving_vs_uniform']:.1f} % | {coded} |")
    unigram = [row for row in result["rows"] if "kodak_unigram_entropy" in row]
    if unigram:
        lines += ["", "For reference, the entropy of the Kodak tokens' own code histogram (position-blind and "
                  "with the histogram known in advance; the single-pass prior can go below it because its "
                  "marginal depends on the position): "
                  + ", ".join(f"g = {row['grid']}: {row['kodak_unigram_entropy']:.3f} bits "
                              f"({row['kodak_codes_used']} of the codes used)" for row in unigram) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""Semantic bits per token of a DLF model on Kodak: the learned token prior against fixed length.

    python benchmarks/dlf_semantic_bits.py --weights DIR_OR_PTH [--token-prior DIR] \
        --images ../shared/data/kodak --out docs/results/dlf_semantic_bits.json

Every image is encoded once (resampled to whole windows, as files are) and its windows' tokens and
decoded detail latents are cached next to the output (``--cache``), so other priors can be measured
on the same tokens without re-running the encoder. Per image it reports the fixed-length bits
(log2 K per token, the reference's cost), the exact information content under the prior's integer
PMFs, the real coded length of the semantic tokens alone in a range-coded stream (termination
included), and what a file spends on them: one bit for the choice, then the prior's coding or fixed
length, whichever is shorter. The reconstruction does not change: the prior is lossless.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from latentcodec.api import load_model
from latentcodec.data.images import list_images, load_rgb, pil_to_tensor
from latentcodec.entropy.coder import EntropyEncoder
from latentcodec.models import dlf_tokens
from latentcodec.nn import integer
from latentcodec.training.token_prior_fit import windows_of


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="DLF weights (default: shipped)")
    parser.add_argument("--token-prior", default=None, help="prior folder (default: the model's own)")
    parser.add_argument("--images", default="../shared/data/kodak")
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--rate", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON to write")
    parser.add_argument("--cache", default=None, help="token cache (default: OUT with .tokens.pt)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-only", action="store_true", help="only encode and cache the tokens (no prior needed)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _, source = load_model("dlf", args.weights, token_prior=args.token_prior)
    model.eval()
    if model.token_prior is None and not args.cache_only:
        print("the model has no token prior; pass --token-prior", file=sys.stderr)
        return 1
    out = Path(args.out)
    cache_path = Path(args.cache) if args.cache else out.with_suffix(".tokens.pt")
    cache = torch.load(cache_path, weights_only=False) if cache_path.is_file() else {}
    files = list_images(args.images)[: args.limit]
    prior = None if args.cache_only else model.integer_token_prior()
    rows = []
    for path in tqdm(files, desc="semantic bits", unit="image"):
        key = f"{path.name}@{args.rate}"
        if key not in cache:
            started = time.perf_counter()
            x = model.fit_to_windows(pil_to_tensor(load_rgb(path)))
            windows = windows_of(model, x, args.rate)
            cache[key] = {"tokens": windows.tokens, "condition": windows.condition,
                          "grid": model.window_grid(*x.shape[-2:]), "seconds": time.perf_counter() - started}
            torch.save(cache, cache_path)
        if args.cache_only:
            continue
        entry = cache[key]
        tokens, grid = entry["tokens"], tuple(entry["grid"])
        positions = model.config.window_positions
        # Back from per-window vectors to the (1, C, h, w) latent the coder conditions on.
        y_hat_fixed = integer.to_fixed(dlf_tokens.latent_from_windows(entry["condition"], *grid))
        exact = dlf_tokens.exact_token_bits(prior, y_hat_fixed, tokens, *grid, positions)
        encoder = EntropyEncoder()
        dlf_tokens.code_tokens(prior, y_hat_fixed, *grid, positions, encoder, tokens)
        coded_bits = 8 * len(encoder.finish())
        fixed = tokens.numel() * model.config.token_bits
        # A file spends one bit on the choice, then the prior's coding or fixed length, whichever the
        # information content says is shorter (DLF.semantic_coding).
        file_bits = 1 + (coded_bits if exact < fixed else fixed)
        rows.append({"image": path.name, "windows": tokens.shape[0], "tokens": tokens.numel(), "fixed_bits": fixed,
                     "prior_bits": exact, "coded_bits": coded_bits, "file_bits": file_bits,
                     "saving": 1 - coded_bits / fixed,
                     "unique_tokens": int(tokens.unique().numel())})
    if args.cache_only:
        print(f"{len(cache)} images cached in {cache_path}")
        return 0
    total_tokens = sum(r["tokens"] for r in rows)
    summary = {
        "weights": source, "token_prior": args.token_prior or "model's own", "rate": args.rate,
        "images": len(rows), "tokens": total_tokens,
        "fixed_bits_per_token": sum(r["fixed_bits"] for r in rows) / total_tokens,
        "prior_bits_per_token": sum(r["prior_bits"] for r in rows) / total_tokens,
        "coded_bits_per_token": sum(r["coded_bits"] for r in rows) / total_tokens,
        "file_bits_per_token": sum(r["file_bits"] for r in rows) / total_tokens,
        "images_at_fixed_length": sum(r["file_bits"] == 1 + r["fixed_bits"] for r in rows),
    }
    summary["saving"] = 1 - summary["coded_bits_per_token"] / summary["fixed_bits_per_token"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "per_image": rows}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Largest relative error per tensor of our GLC-image against the official reference vectors.

Builds the official preset with the reference folder's deterministic weights, runs every stored
case and rate, and prints, per tensor name, max |ours - reference| / std(reference) over all
cases (encoder side from our own analysis; decoder side teacher-forced from the stored z indices
and y symbols), plus exact-match counts for z indices and y symbols and the bit-estimate error.

    python benchmarks/reference_errors.py [--memory-format nchw|nhwc] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from latentcodec.entropy import gaussian_residual_bits
from latentcodec.entropy.masked_gaussian import run_masked_steps, split_prior
from latentcodec.models.glc_image import GLCImage

REPO = Path(__file__).resolve().parents[1]


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours.double() - reference.double()).abs().max() / reference.double().std()).item()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--memory-format", choices=("nchw", "nhwc"), default="nchw")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.shared / "reference" / "glc"
    spec = importlib.util.spec_from_file_location("make_weights", folder / "make_weights.py")
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    model = GLCImage.from_official_state_dict(make_weights.make_state_dict(make_weights.load_spec(folder / "image_keys.tsv")))
    model.set_memory_format(torch.channels_last if args.memory_format == "nhwc" else torch.contiguous_format)
    vectors = load_file(str(folder / "image_vectors.safetensors"))
    worst: dict[str, float] = defaultdict(float)
    counts = {"z_index_mismatches": 0, "y_symbol_flips": 0, "y_symbols": 0, "max_bit_y_relative_error": 0.0}
    cases = sorted({k.split("/")[0] for k in vectors})
    for case in cases:
        x = vectors[f"{case}/x_u8"].permute(2, 0, 1).unsqueeze(0).float() / 255.0
        rates = sorted({int(k.split("/")[1][1:]) for k in vectors if k.startswith(case + "/q")})
        for q in rates:
            prefix = f"{case}/q{q}/"
            with torch.inference_mode():
                enc = model.analyse(model.pad(x), q)
                z_hat = model.z_vq.lookup(vectors[prefix + "z_index"])
                hyper_params, prior_params = model.prior_from_z_hat(z_hat)
                stored = vectors[prefix + "y_q"].float()
                steps = run_masked_steps(split_prior(prior_params), model.masks(enc.y), model.context_fn(prior_params),
                                         lambda k, mask, s, r: stored * mask, None)
                latent_hat = model.dec(steps.y_hat, model.q_dec[q : q + 1])
                x_hat = model.vqgan.generator(latent_hat)
            encoder_side = {"latent_ori": enc.latent, "y": enc.y, "z": enc.z}
            decoder_side = {"hyper_params": hyper_params, "prior_params": prior_params, "quant_step": steps.quant_step,
                            "scales_hat": steps.scales, "means_hat": steps.means, "y_hat": steps.y_hat,
                            "l_hat": latent_hat, "x_hat": x_hat}
            for name, ours in {**encoder_side, **decoder_side}.items():
                key = f"{case}/{name}" if name == "latent_ori" else prefix + name
                if key in vectors:
                    worst[name] = max(worst[name], relative_error(ours, vectors[key]))
            counts["z_index_mismatches"] += int((enc.z_indices != vectors[prefix + "z_index"]).sum())
            counts["y_symbol_flips"] += int((enc.steps.symbols != stored).sum())
            counts["y_symbols"] += stored.numel()
            bits = gaussian_residual_bits(steps.symbols, steps.scales).sum().item()
            reference_bits = vectors[prefix + "bit_y"].item()
            counts["max_bit_y_relative_error"] = max(counts["max_bit_y_relative_error"], abs(bits - reference_bits) / reference_bits)
    print(f"memory format {args.memory_format}, {args.threads} thread(s), cases {', '.join(cases)}")
    print(f"{'tensor':<14}{'max |diff| / std(ref)':>24}")
    for name, value in worst.items():
        print(f"{name:<14}{value:>24.2e}")
    for name, value in counts.items():
        print(f"{name}: {value}")
    if args.json:
        args.json.write_text(json.dumps({"max_relative_error": worst, **counts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

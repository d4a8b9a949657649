"""How well DLF's soft codebook latent can do against each alignment target, before any training.

For one image, with the VQGAN of a DLF run (the GLC-image default's for the ``small`` preset): the
PSNR of the generator decoding the encoder's continuous latent and its nearest codewords, and of
soft mixtures of codewords fitted directly to a target (Adam on free per-position logits), with and
without a code cross-entropy term beside the MSE, as the stage-1 loss has them.

    python benchmarks/dlf_latent_targets.py ~/.cache/latentcodec/runs/dlf-small-align --image kodim23 \\
        --json docs/results/dlf_latent_targets.json

With ``--codec-rates 0,3`` it also diagnoses the run's trained codec at those rates: the error of its
soft latent against the continuous target per channel group (GLC's low-pass colour channels 0-2 and
the rest, each beside the target's variance, so "error = variance" means nothing of it comes
through), the entropy and top weight of its codeword mixture, and the PSNR of its decoded picture,
also with the true colour channels swapped in (``psnr_true_colour_db``: what the texture channels
cost) and of the true latent with the codec's colour channels (``psnr_codec_colour_only_db``).

With ``--kmeans-crops 256`` the fitted rows use a codebook made by k-means over the VQGAN latents of
that many random training crops (``codebook_init_crops`` of the training config) instead of the run's
own, which shows how far the codebook bounds the soft latent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from latentcodec.data.crops import BatchStream, RandomCropDataset, find_images
from latentcodec.data.images import load_rgb, pil_to_tensor
from latentcodec.models.dlf import PRESETS, DLF
from latentcodec.models.dlf_networks import soft_codebook_latent
from latentcodec.training.codebook_init import encoder_vectors, kmeans_codebook

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"
TRAIN = KODAK.parent / "train"


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    a, b = (x_hat.clamp(0, 1) * 255).round(), (x * 255).round()
    return float(10 * torch.log10(255**2 / ((a - b) ** 2).mean()))


def to_unit(image: torch.Tensor) -> torch.Tensor:
    """A [-1, 1] VQGAN output -> [0, 1]."""
    return (image + 1) / 2


def fitted_mixture(codebook, target, indices, ce_weight: float, steps: int) -> torch.Tensor:
    logits = torch.zeros(1, codebook.shape[0], *target.shape[-2:], requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=0.3)
    for _ in range(steps):
        loss = ((soft_codebook_latent(logits, codebook) - target) ** 2).mean()
        if ce_weight:
            loss = loss + ce_weight * F.cross_entropy(logits, indices)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return soft_codebook_latent(logits.detach(), codebook)


@torch.no_grad()
def diagnose_codec(model: DLF, x: torch.Tensor, target: torch.Tensor, rate: int) -> dict[str, float]:
    """The trained codec's soft latent at ``rate`` against the continuous latent ``target``."""
    padded = model.pad(x)
    analysis = model.analyse(padded, rate, skip=False)
    synthesis = model.synthesise(analysis.codes, analysis.steps.y_hat, rate)
    soft = synthesis.soft_latent[..., : target.shape[-2], : target.shape[-1]]
    error = ((soft - target) ** 2).mean(dim=(0, 2, 3))
    variance = target.var(dim=(0, 2, 3))
    weights = torch.softmax(synthesis.logits.float(), dim=1)
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum(1).mean()
    x_hat = to_unit(synthesis.x_hat[..., : x.shape[-2], : x.shape[-1]])
    # Which channel group costs the picture: the codec's latent with the true colour channels put
    # back, and the true latent with the codec's colour channels.
    true_colour, codec_colour = soft.clone(), target.clone()
    true_colour[:, :3], codec_colour[:, :3] = target[:, :3], soft[:, :3]
    swapped = {name: psnr(to_unit(model.vqgan.decode(latent))[..., : x.shape[-2], : x.shape[-1]], x)
               for name, latent in (("psnr_true_colour_db", true_colour), ("psnr_codec_colour_only_db", codec_colour))}
    return {"psnr_db": psnr(x_hat, x), **swapped, "colour_error": float(error[:3].mean()), "colour_variance": float(variance[:3].mean()),
            "other_error": float(error[3:].mean()), "other_variance": float(variance[3:].mean()),
            "mixture_entropy_nats": float(entropy), "mixture_top_weight": float(weights.max(1).values.mean())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a DLF training run folder (its checkpoint.pt) or checkpoint file")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--image", default="kodim23")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--codec-rates", default="", help="also diagnose the trained codec at these rates, e.g. 0,3")
    parser.add_argument("--kmeans-crops", type=int, default=0,
                        help="replace the run's codebook by k-means over this many training crops' latents")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = args.run / "checkpoint.pt" if args.run.is_dir() else args.run
    if not checkpoint.is_file():
        sys.exit(f"dlf_latent_targets: no checkpoint at {checkpoint}")
    model = DLF(PRESETS[args.preset](), with_training_modules=True).eval()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
    x = pil_to_tensor(load_rgb(KODAK / f"{args.image}.png"))
    if args.kmeans_crops:
        stream = BatchStream(RandomCropDataset(find_images([TRAIN]), 256), 1, 0, 0, 1)
        vectors = encoder_vectors(lambda crop: model.vqgan.encode(crop * 2 - 1), stream, args.kmeans_crops, "cpu")
        kmeans = kmeans_codebook(vectors, model.vqgan.quantize.codebook_size, 20, torch.Generator().manual_seed(0))
        model.vqgan.quantize.embedding.weight.data.copy_(kmeans)
    codebook = model.vqgan.quantize.embedding.weight.detach()
    rows = {}
    with torch.no_grad():
        latent = model.vqgan.encode(x * 2 - 1)  # the VQGAN works on [-1, 1] images
        indices = model.vqgan.quantize.indices(latent)
        codewords = model.vqgan.quantize.lookup(indices)
        rows["continuous latent"] = psnr(to_unit(model.vqgan.decode(latent)), x)
        rows["nearest codewords"] = psnr(to_unit(model.vqgan.decode(codewords)), x)
        per_channel = ((latent - codewords) ** 2).mean(dim=(0, 2, 3))
    for name, target, ce in (("mixture fitted to codewords", codewords, 0.0),
                             ("mixture fitted to continuous", latent, 0.0),
                             ("mixture fitted to continuous + 0.05 CE", latent, 0.05),
                             ("mixture fitted to continuous + 0.25 CE", latent, 0.25)):
        mixture = fitted_mixture(codebook, target, indices, ce, args.steps)
        with torch.no_grad():
            rows[name] = psnr(to_unit(model.vqgan.decode(mixture)), x)
    codec_rows = {}
    for rate in [int(r) for r in args.codec_rates.split(",") if r.strip()]:
        codec_rows[f"q{rate}"] = diagnose_codec(model, x, latent, rate)
    for name, value in rows.items():
        print(f"{name:<42}{value:7.2f} dB")
    for name, row in codec_rows.items():
        print(f"codec {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
    print(f"codeword quantisation error per channel: channels 0-2 {per_channel[:3].tolist()}, "
          f"the rest {float(per_channel[3:].mean()):.4f} on average")
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(checkpoint), "image": args.image, "fit_steps": args.steps,
                                         "kmeans_crops": args.kmeans_crops,
                                         "psnr_db": rows, "codeword_error_per_channel": per_channel.tolist(),
                                         "codec": codec_rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

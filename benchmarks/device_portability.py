"""CPU <-> CUDA portability of the shipped defaults, as one short prepared run on a GPU machine.

    python benchmarks/device_portability.py --out DIR [--images 6]

Writes every Kodak image of the selection at every rate, and 8 frames of carphone, once on the CPU
and once on CUDA; decodes each file on the other device; prints per file whether the decoded
fixed-point latents are identical and the largest pixel difference, and saves a JSON summary plus
the CUDA-written files (``DIR/cuda/*.lci|lcv``) with their latent hashes, so that another CPU
machine can check them later with ``python -m latentcodec.evaluation.portability``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import latentcodec  # noqa: E402
from latentcodec.data.video import read_frames  # noqa: E402
from latentcodec.evaluation.portability import decode_fingerprint  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


def tensor_of(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)


def compare(data: bytes, writer, reader) -> dict:
    written, read = decode_fingerprint(data, writer), decode_fingerprint(data, reader)
    difference = int(np.abs(written.pixels.astype(np.int16) - read.pixels.astype(np.int16)).max())
    return {"latents_equal": written.latent_hashes == read.latent_hashes, "max_pixel_difference": difference,
            "latent_sha256": list(written.latent_hashes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=6)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to compare")
        return 1
    (args.out / "cuda").mkdir(parents=True, exist_ok=True)
    results = []
    image = {"cpu": latentcodec.load("glc-image"), "cuda": latentcodec.load("glc-image", device="cuda")}
    for path in sorted((SHARED / "data" / "kodak").glob("*.png"))[: args.images]:
        x = tensor_of(np.asarray(Image.open(path).convert("RGB"))).unsqueeze(0)
        for rate in range(image["cpu"].model.num_rates):
            for source, target in (("cpu", "cuda"), ("cuda", "cpu")):
                writer, reader = image[source].model, image[target].model
                data = writer.compress(x.to(source), rate)
                row = {"file": f"{path.stem}_q{rate}", "written_on": source, **compare(data, writer, reader)}
                if source == "cuda":
                    (args.out / "cuda" / f"{path.stem}_q{rate}.lci").write_bytes(data)
                results.append(row)
                print(row["file"], source, "->", target, row["latents_equal"], row["max_pixel_difference"], flush=True)
    frames = torch.stack([tensor_of(f) for f in read_frames(SHARED / "data/video/carphone_qcif/carphone_qcif.y4m",
                                                             limit=8)])
    video = {"cpu": latentcodec.load("glc-video", quality=32), "cuda": latentcodec.load("glc-video", quality=32,
                                                                                       device="cuda")}
    for source, target in (("cpu", "cuda"), ("cuda", "cpu")):
        data = video[source].model.compress(frames.to(source), 32)
        row = {"file": "carphone_8f_q32", "written_on": source, **compare(data, video[source].model,
                                                                          video[target].model)}
        if source == "cuda":
            (args.out / "cuda" / "carphone_8f_q32.lcv").write_bytes(data)
        results.append(row)
        print(row["file"], source, "->", target, row["latents_equal"], row["max_pixel_difference"], flush=True)
    exact = sum(r["latents_equal"] for r in results)
    summary = {"device": torch.cuda.get_device_name(0), "files": len(results), "exact": exact, "results": results}
    (args.out / "device_portability.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{exact}/{len(results)} decoded to identical latents on the other device")
    return 0 if exact == len(results) else 2


if __name__ == "__main__":
    sys.exit(main())

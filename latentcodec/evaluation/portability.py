"""Does a file decode to the same symbols and latents under other arithmetic? (docs/bitstream.md)

:func:`decode_fingerprint` decodes an image or sequence file and returns the SHA-256 of every
decoded fixed-point latent (a portable file's latents are a pure function of its symbols, so equal
hashes mean equal symbols and latents) plus the decoded 8-bit pixels. :func:`arithmetic_matrix`
decodes one file in fresh processes under emulated machines: one thread, oneDNN limited to AVX2 or
SSE4.1, ATen's scalar kernels, and NCHW instead of NHWC.

    python -m latentcodec.evaluation.portability FILE... [--model NAME] [--weights DIR] --out result.npz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

# name -> (extra environment, channels_last); each runs in its own process, since oneDNN and ATen
# read these variables once at start-up.
ARITHMETIC_CONFIGURATIONS: dict[str, tuple[dict[str, str], bool]] = {
    "default": ({}, True),
    "threads=1": ({"OMP_NUM_THREADS": "1"}, True),
    "onednn=avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, True),
    "onednn=sse41": ({"ONEDNN_MAX_CPU_ISA": "SSE41"}, True),
    "aten=default": ({"ATEN_CPU_CAPABILITY": "default"}, True),
    "nchw": ({}, False),
}


class Fingerprint(NamedTuple):
    latent_hashes: tuple[str, ...]  # one per decoded frame (one for an image)
    pixels: np.ndarray  # uint8 (frames, H, W, 3)


def _hash(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def decode_fingerprint(data: bytes, model) -> Fingerprint:
    """Latent hashes and pixels of an image (GLCImage, DLF) or sequence (GLCVideo) file."""
    from latentcodec.bitstream import FileKind, parse_lead_byte, read_image_file
    from latentcodec.nn.integer import from_fixed, to_fixed

    if hasattr(model, "decoded_fingerprint"):  # codecs that say what their decoded symbols are
        tensors, image = model.decoded_fingerprint(data)
        return Fingerprint(tuple(_hash(t) for t in tensors), _to_uint8(image))

    if parse_lead_byte(data[:1]) is FileKind.VIDEO_SEQUENCE:
        hashes, frames = [], []
        for decoded in model.decode_latents(data):
            fixed = decoded.latent_hat_fixed if decoded.latent_hat_fixed is not None else to_fixed(decoded.latent_hat)
            hashes.append(_hash(fixed))
            frames.append(model.generate(decoded.latent_hat, decoded.plan, decoded.header.height, decoded.header.width))
        return Fingerprint(tuple(hashes), _to_uint8(torch.cat(frames)))
    parsed = read_image_file(data, model.layout, expected_model_id=model.model_id)
    header = parsed.header
    # The coded size and exact rate (the original size and whole rate for every kind-0 file).
    size = (header.coded_height, header.coded_width)
    if header.portable:
        fixed = model.decode_sections_fixed(*parsed.sections, *size, header.rate)
        latent = from_fixed(fixed)
    else:
        latent = model.decode_sections(*parsed.sections, *size, header.rate)
        fixed = to_fixed(latent)
    image = model.generate(latent, *size)
    return Fingerprint((_hash(fixed),), _to_uint8(image))


class MatrixEntry(NamedTuple):
    configuration: str
    file: str
    ok: bool  # decoded without error
    latents_equal: bool
    max_pixel_difference: int
    error: str


def arithmetic_matrix(paths: list[Path], references: list[Fingerprint], model_args: list[str],
                      configurations: dict[str, tuple[dict[str, str], bool]] = ARITHMETIC_CONFIGURATIONS,
                      timeout: float = 900) -> list[MatrixEntry]:
    """Decode every file in one fresh process per configuration and compare with ``references``."""
    entries = []
    for name, (extra_env, channels_last) in configurations.items():
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "result.npz"
            command = [sys.executable, "-m", "latentcodec.evaluation.portability", *map(str, paths), "--out", str(out),
                       *model_args, *([] if channels_last else ["--nchw"])]
            done = subprocess.run(command, env={**os.environ, **extra_env}, capture_output=True, text=True,
                                  timeout=timeout)
            results = {}
            if done.returncode == 0 and out.is_file():
                with np.load(out) as saved:
                    results = {key: saved[key] for key in saved.files}
            for index, (path, reference) in enumerate(zip(paths, references)):
                if f"hashes_{index}" not in results:
                    message = str(results.get(f"error_{index}", "")) or (done.stderr.strip().splitlines() or ["?"])[-1]
                    entries.append(MatrixEntry(name, Path(path).name, False, False, 255, message))
                    continue
                hashes = tuple(json.loads(str(results[f"hashes_{index}"])))
                pixels = results[f"pixels_{index}"]
                difference = (int(np.abs(pixels.astype(np.int16) - reference.pixels.astype(np.int16)).max())
                              if pixels.shape == reference.pixels.shape else 255)
                entries.append(MatrixEntry(name, Path(path).name, True, hashes == reference.latent_hashes,
                                           difference, ""))
    return entries


def main(argv: list[str] | None = None) -> int:
    from latentcodec.api import load_model
    from latentcodec.errors import LatentCodecError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--out", required=True, help=".npz with hashes_i, pixels_i (or error_i) per file")
    parser.add_argument("--model", default="glc-image")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--nchw", action="store_true", help="run the VQGAN in NCHW instead of NHWC")
    args = parser.parse_args(argv)
    model = load_model(args.model, args.weights, "cpu")[0].eval()
    if hasattr(model, "set_memory_format"):
        model.set_memory_format(torch.contiguous_format if args.nchw else torch.channels_last)
    results = {}
    for index, name in enumerate(args.files):
        try:
            fingerprint = decode_fingerprint(Path(name).read_bytes(), model)
        except LatentCodecError as exc:
            results[f"error_{index}"] = str(exc)
            continue
        results[f"hashes_{index}"] = json.dumps(list(fingerprint.latent_hashes))
        results[f"pixels_{index}"] = fingerprint.pixels
    np.savez(args.out, **results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

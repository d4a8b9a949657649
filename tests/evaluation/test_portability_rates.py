"""Continuous rates and scaled files keep the portable guarantee: files at interpolated rates and a
downscaled file, written here, decode to the same latents (pixels within +-1) in fresh processes that
emulate other machines (one thread, oneDNN AVX2/SSE4.1, ATen's scalar kernels, NCHW)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import latentcodec
from latentcodec.bitstream import read_image_file
from latentcodec.evaluation.portability import ARITHMETIC_CONFIGURATIONS, arithmetic_matrix, decode_fingerprint

pytestmark = pytest.mark.slow


def test_interpolated_rate_and_scaled_files_decode_identically_under_every_arithmetic(kodak_dir, tmp_path):
    codec = latentcodec.load("glc-image")
    image = Image.open(kodak_dir / "kodim23.png").convert("RGB").crop((256, 128, 448, 256))
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    paths, references = [], []
    for name, rate, scale in (("r0.37", 95 / 256, 0), ("r2.5", 2.5, 0), ("r1.37-s40", 351 / 256, 40)):
        data = codec.model.compress(x, rate, scale=scale)
        header = read_image_file(data).header
        assert header.rate == rate and header.scale == scale
        path = tmp_path / f"{name}.lci"
        path.write_bytes(data)
        paths.append(path)
        references.append(decode_fingerprint(data, codec.model))
    entries = arithmetic_matrix(paths, references, ["--model", "glc-image"])
    assert len(entries) == len(ARITHMETIC_CONFIGURATIONS) * len(paths)
    failures = [e for e in entries if not (e.ok and e.latents_equal and e.max_pixel_difference <= 1)]
    assert not failures, failures

"""Shared fixtures of the evaluation tests."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # fake_codec_for_eval is imported by module name
    sys.path.insert(0, str(HERE))

from latentcodec.evaluation.runner import EvalConfig, run_evaluation  # noqa: E402


@pytest.fixture(scope="package")
def evaluated(tmp_path_factory, kodak_dir):
    """A small finished evaluation: a fake model, two baselines, one Kodak crop and one synthetic image."""
    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    data.mkdir()
    with Image.open(kodak_dir / "kodim23.png") as kodak:
        kodak.convert("RGB").crop((300, 100, 428, 196)).save(data / "kodim23-crop.png")
    y, x = np.mgrid[0:80, 0:96]
    synthetic = np.stack([x * 2, y * 3, 255 - x - y], axis=-1).clip(0, 255).astype(np.uint8)
    Image.fromarray(synthetic, "RGB").save(data / "ramp.png")
    config = EvalConfig(
        data=str(data), out=str(root / "out"), model="fake_codec_for_eval:make", qualities=(1, 2, 3),
        baselines=("jpeg", "webp"), scales=(1, 2), baseline_values={"jpeg": (5, 30, 80), "webp": (0, 30, 80)},
        metrics=("psnr",), workers=1, progress=False,
    )  # fmt: skip
    run_evaluation(config)
    return root

"""``latentcodec eval --target-bpp``: the learned codec at the same byte budgets as the baselines."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from test_api_rate_control import save_tiny_with_rate_gains  # noqa: E402

from latentcodec.evaluation.report import build_report  # noqa: E402
from latentcodec.evaluation.runner import EvalConfig, run_evaluation  # noqa: E402


def write_images(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for index, (width, height) in enumerate(((96, 64), (64, 80))):
        yy, xx = np.mgrid[0:height, 0:width]
        rgb = np.stack([128 + 100 * np.sin(xx / 7 + index), 128 + 90 * np.cos((xx + yy) / 13), (xx * 2 + yy) % 256], -1)
        Image.fromarray(rgb.round().clip(0, 255).astype(np.uint8)).save(folder / f"img{index}.png")
    return folder


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    weights = save_tiny_with_rate_gains(root / "weights")
    config = EvalConfig(data=str(write_images(root / "data")), out=str(root / "out"), model="glc-image",
                        weights=str(weights), qualities=(0,), baselines=("jpeg",), scales=(1, 2),
                        target_bpp=(0.3, 1.0), matched=False, metrics=("psnr",), workers=1, progress=False)
    return config, run_evaluation(config)


def test_every_codec_gets_a_target_curve_at_the_same_budgets(evaluation):
    config, summary = evaluation
    names = {c.name for c in summary.curves}
    assert {"glc-image-target", "jpeg-target"} <= names
    for record in summary.records:
        if record.mode == "target-bpp" and record.status == "ok":
            budget = int(record.target_bpp * record.width * record.height / 8)
            assert record.bytes <= budget, record
            data = (Path(config.out) / record.bitstream).read_bytes()
            assert len(data) == record.bytes
    learned = [r for r in summary.records if r.curve == "glc-image-target"]
    assert len(learned) == 4 and {r.point for r in learned} == {"bpp-0.3", "bpp-1"}
    reached = [r for r in learned if r.status == "ok"]
    assert {r.point for r in reached} == {"bpp-1"}  # between this toy model's lowest and highest rate
    assert all("encodes" in r.note and 0 <= r.value <= 3 for r in reached)
    unreachable = [r for r in learned if r.status != "ok"]  # below its smallest file, even downscaled
    assert unreachable and all("smallest glc-image file is" in r.note for r in unreachable)


def test_the_report_shows_the_matched_budget_tables(evaluation):
    config, _ = evaluation
    page = build_report(config.out).read_text()
    assert "At the same byte budgets (--target-bpp)" in page
    assert "<h3>target 1 bpp</h3>" in page  # 0.3 bpp: no codec reached it on every image


def test_fractional_qualities_of_a_continuous_rate_model(tmp_path):
    weights = save_tiny_with_rate_gains(tmp_path / "weights")
    config = EvalConfig(data=str(write_images(tmp_path / "data")), out=str(tmp_path / "out"), model="glc-image",
                        weights=str(weights), qualities=(0, 1.5, 2.37), metrics=("psnr",), workers=1, progress=False)
    records = run_evaluation(config).records
    assert sorted({r.point for r in records}) == ["q0", "q1.5", "q2.37109375"]  # snapped to the 1/256 grid
    sizes = {r.point: r.bytes for r in records if r.image == "img0"}
    assert sizes["q0"] < sizes["q1.5"] < sizes["q2.37109375"]

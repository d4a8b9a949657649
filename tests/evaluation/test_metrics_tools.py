"""SSIMULACRA 2 and Butteraugli: our wrappers give exactly what the tools print for the same PNGs.

The tools: ``butteraugli_main`` (Debian libjxl-devtools) and the ``ssimulacra2`` Python package (its
command line is ``python -m ssimulacra2.cli``). CI has both (.ci/apt-packages.txt, the eval extra);
elsewhere the tests that run a tool skip with the reason.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from latentcodec.cli import main  # noqa: E402
from latentcodec.errors import InputError  # noqa: E402
from latentcodec.evaluation.metrics import (  # noqa: E402
    HIGHER_IS_BETTER,
    SSIMULACRA2,
    Butteraugli,
    ButteraugliRunner,
    ImageMetric,
    MetricToolError,
    available_metrics,
    missing_tool_reason,
)
from latentcodec.evaluation.metrics.tools import parse_butteraugli_output  # noqa: E402
from latentcodec.evaluation.plots import lower_is_better  # noqa: E402
from latentcodec.evaluation.scoring import build_suite  # noqa: E402

BUTTERAUGLI_REASON = missing_tool_reason("butteraugli")
SSIMULACRA2_REASON = missing_tool_reason("ssimulacra2")
needs_butteraugli = pytest.mark.skipif(
    BUTTERAUGLI_REASON is not None, reason=f"{BUTTERAUGLI_REASON} (CI installs it: .ci/apt-packages.txt)"
)
needs_ssimulacra2 = pytest.mark.skipif(
    SSIMULACRA2_REASON is not None, reason=f"{SSIMULACRA2_REASON} (CI installs it with the eval extra)"
)

# (image, crop box, JPEG quality): two Kodak crops, strongly and mildly compressed.
PAIRS = [
    ("kodim01", (300, 200, 428, 296), 10),
    ("kodim01", (300, 200, 428, 296), 60),
    ("kodim23", (300, 100, 428, 196), 30),
]


def _crop(kodak_dir: Path, name: str, box: tuple[int, int, int, int]) -> np.ndarray:
    with Image.open(kodak_dir / f"{name}.png") as image:
        return np.asarray(image.convert("RGB").crop(box))


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


@pytest.fixture(scope="module")
def pairs(kodak_dir) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(_crop(kodak_dir, name, box), _jpeg(_crop(kodak_dir, name, box), q)) for name, box, q in PAIRS]


def _write_pngs(folder: Path, reference: np.ndarray, reconstruction: np.ndarray) -> tuple[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / "a.png", folder / "b.png")
    Image.fromarray(reference).save(paths[0])
    Image.fromarray(reconstruction).save(paths[1])
    return str(paths[0]), str(paths[1])


def _tool_output(command: list[str]) -> str:
    completed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    return completed.stdout


# ----------------------------------------------------------------------------- the tools' own numbers


@needs_butteraugli
@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_butteraugli_is_what_butteraugli_main_prints(pairs, index, tmp_path) -> None:
    reference, reconstruction = pairs[index]
    stdout = _tool_output(["butteraugli_main", *_write_pngs(tmp_path, reference, reconstruction)])
    lines = stdout.split("\n")
    printed_max = float(lines[0])
    (three_norm_line,) = [line for line in lines if line.startswith("3-norm:")]
    printed_three = float(three_norm_line.split(":")[1])

    runner = ButteraugliRunner()
    assert Butteraugli("max", runner)(reference, reconstruction) == printed_max
    assert Butteraugli("3", runner)(reference, reconstruction) == printed_three
    assert printed_max >= printed_three > 0  # the max norm bounds every p-norm of the same map


@needs_ssimulacra2
@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_ssimulacra2_is_what_its_command_line_prints(pairs, index, tmp_path) -> None:
    reference, reconstruction = pairs[index]
    stdout = _tool_output([sys.executable, "-m", "ssimulacra2.cli", *_write_pngs(tmp_path, reference, reconstruction)])
    printed = stdout.strip()  # the score with 8 decimals
    ours = SSIMULACRA2()(reference, reconstruction)
    assert f"{ours:.8f}" == printed
    assert abs(ours - float(printed)) <= 5e-9


# ----------------------------------------------------------------------------- properties


@needs_butteraugli
@needs_ssimulacra2
def test_identical_images_score_best(pairs) -> None:
    reference = pairs[0][0]
    assert SSIMULACRA2()(reference, reference.copy()) == 100.0
    assert Butteraugli("max")(reference, reference.copy()) == 0.0
    assert Butteraugli("3")(reference, reference.copy()) == 0.0


@needs_butteraugli
@needs_ssimulacra2
@pytest.mark.parametrize("name, box", [(name, box) for name, box, _ in PAIRS[1:]])
def test_stronger_compression_scores_worse(kodak_dir, name, box) -> None:
    reference = _crop(kodak_dir, name, box)
    metrics = [SSIMULACRA2(), Butteraugli("max"), Butteraugli("3")]
    for metric in metrics:
        values = [metric(reference, _jpeg(reference, quality)) for quality in (5, 10, 30, 90)]
        ordered = [-v for v in values] if metric.higher_is_better else values
        assert all(a > b for a, b in zip(ordered, ordered[1:])), (metric.name, values)


@needs_butteraugli
@needs_ssimulacra2
def test_images_under_8_pixels_are_nan_and_8_is_scored(pairs) -> None:
    reference, reconstruction = pairs[0]
    for metric in (SSIMULACRA2(), Butteraugli("max"), Butteraugli("3")):
        assert math.isnan(metric(reference[:7, :40], reconstruction[:7, :40])), metric.name
        assert math.isnan(metric(reference[:40, :5], reconstruction[:40, :5])), metric.name
        assert math.isfinite(metric(reference[:8, :8], reconstruction[:8, :8])), metric.name


@needs_butteraugli
@needs_ssimulacra2
def test_float_images_are_rounded_to_8_bits_and_sizes_must_agree(pairs) -> None:
    import torch

    reference, reconstruction = pairs[2]
    as_float = torch.from_numpy(reconstruction.copy()).permute(2, 0, 1).double() / 255.0
    assert SSIMULACRA2()(reference, as_float) == SSIMULACRA2()(reference, reconstruction)
    assert Butteraugli()(reference, as_float) == Butteraugli()(reference, reconstruction)
    for metric in (SSIMULACRA2(), Butteraugli()):
        with pytest.raises(InputError, match="differ in size"):
            metric(reference, reconstruction[:-1])


def test_directions_are_declared_for_plots_and_selection() -> None:
    assert HIGHER_IS_BETTER["ssimulacra2"] is True
    assert HIGHER_IS_BETTER["butteraugli"] is False and HIGHER_IS_BETTER["butteraugli_3norm"] is False
    assert not lower_is_better("ssimulacra2")
    assert lower_is_better("butteraugli") and lower_is_better("butteraugli_3norm")
    for metric in (SSIMULACRA2(), Butteraugli("max"), Butteraugli("3")):
        assert isinstance(metric, ImageMetric)
        assert metric.higher_is_better == HIGHER_IS_BETTER[metric.name]


# ----------------------------------------------------------------------------- output parsing, failures


def test_butteraugli_output_parsing() -> None:
    printed = "8.6494750977\n3-norm: 4.048553\n"
    assert parse_butteraugli_output(printed) == (8.6494750977, 4.048553)
    assert parse_butteraugli_output("0.0000000000\n") == (0.0, None)
    for bad in ("", "\n\n", "Usage: butteraugli_main <reference> <distorted>\n"):
        with pytest.raises(MetricToolError):
            parse_butteraugli_output(bad)


def _fake_tool(folder: Path, body: str) -> str:
    path = folder / "fake_butteraugli"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_one_run_serves_both_norms_and_tool_failures_are_one_line_errors(tmp_path) -> None:
    calls = tmp_path / "calls"
    tool = _fake_tool(tmp_path, f'echo run >> "{calls}"\necho 2.5\necho "3-norm: 1.25"\n')
    image = np.full((16, 16, 3), 100, np.uint8)
    other = image.copy()
    other[4:8, 4:8] = 200
    runner = ButteraugliRunner(tool)
    assert (Butteraugli("max", runner)(image, other), Butteraugli("3", runner)(image, other)) == (2.5, 1.25)
    assert calls.read_text().count("run") == 1
    Butteraugli("max", runner)(image, image)  # another pair: another run
    assert calls.read_text().count("run") == 2

    failing = _fake_tool(tmp_path, 'echo "first line" >&2\necho "Could not load reference image" >&2\nexit 1\n')
    with pytest.raises(MetricToolError, match=r"failed: Could not load reference image$"):
        Butteraugli("max", ButteraugliRunner(failing))(image, other)
    no_three = _fake_tool(tmp_path, "echo 1.5\n")
    assert Butteraugli("max", ButteraugliRunner(no_three))(image, other) == 1.5
    with pytest.raises(MetricToolError, match="3-norm"):
        Butteraugli("3", ButteraugliRunner(no_three))(image, other)
    with pytest.raises(MetricToolError, match="cannot run"):
        Butteraugli("max", ButteraugliRunner(str(tmp_path / "no_such_tool")))(image, other)


def test_a_missing_butteraugli_main_makes_both_norms_unavailable(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a folder without butteraugli_main
    reason = missing_tool_reason("butteraugli")
    assert reason == "butteraugli_main not found on PATH (Debian: apt-get install libjxl-devtools)"
    selection = available_metrics(["psnr", "butteraugli", "butteraugli_3norm"])
    assert [m.name for m in selection.per_image] == ["psnr"]
    assert dict(selection.unavailable) == {"butteraugli": reason, "butteraugli_3norm": reason}
    suite = build_suite(None)  # the default set: skipped with the reason, not an error
    assert suite.unavailable["butteraugli"] == reason and "psnr" in suite.image_metric_names


def test_a_missing_ssimulacra2_package_makes_it_unavailable(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ssimulacra2", None)  # import fails as if not installed
    reason = missing_tool_reason("ssimulacra2")
    assert reason is not None and "\n" not in reason
    assert reason == (
        "the ssimulacra2 Python package is not installed; pip install ssimulacra2 (part of latentcodec[eval])"
    )
    selection = available_metrics(["ssimulacra2", "psnr"])
    assert [m.name for m in selection.per_image] == ["psnr"]
    assert dict(selection.unavailable) == {"ssimulacra2": reason}


def test_missing_tools_are_skipped_by_eval_with_one_line_each(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "ssimulacra2", None)
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(data / "x.png")
    code = main([
        "eval", "--data", str(data), "--out", str(tmp_path / "out"), "--baselines", "jpeg", "--scales", "1",
        "--baseline-values", "jpeg=20,80", "--metrics", "psnr,ssimulacra2,butteraugli", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "latentcodec eval: skipping metric butteraugli: butteraugli_main not found on PATH" in err
    assert "latentcodec eval: skipping metric ssimulacra2: the ssimulacra2 Python package is not installed" in err
    results = json.loads((tmp_path / "out" / "results" / "jpeg.json").read_text())["results"]
    assert "psnr" in results and "ssimulacra2" not in results and "butteraugli" not in results


# ----------------------------------------------------------------------------- eval, BD-rate, report


@needs_butteraugli
@needs_ssimulacra2
def test_eval_results_bdrate_and_report_carry_the_new_metrics(kodak_dir, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(_crop(kodak_dir, "kodim23", (300, 100, 396, 172))).save(data / "kodim23-crop.png")
    out = tmp_path / "out"
    names = ("ssimulacra2", "butteraugli", "butteraugli_3norm")
    code = main([
        "eval", "--model", "fake_codec_for_eval:make", "--qualities", "1,2,3", "--data", str(data),
        "--out", str(out), "--baselines", "jpeg,webp", "--scales", "1", "--no-matched",
        "--baseline-values", "jpeg=5,20,50,90", "--baseline-values", "webp=0,20,50,90",
        "--metrics", "psnr," + ",".join(names), "--workers", "1", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    capsys.readouterr()

    # Result JSON: one value per point and metric, equal to the wrappers on the decoded files.
    jpeg = json.loads((out / "results" / "jpeg.json").read_text())["results"]
    for name in names:
        assert len(jpeg[name]) == 4 and all(math.isfinite(v) for v in jpeg[name])
    assert jpeg["ssimulacra2"] == sorted(jpeg["ssimulacra2"])  # quality up, SSIMULACRA 2 up
    assert jpeg["butteraugli"] == sorted(jpeg["butteraugli"], reverse=True)
    per_image = json.loads((out / "per_image.json").read_text())
    item = next(r for r in per_image if r["curve"] == "jpeg" and r["point"] == "quality-20")
    with Image.open(data / "kodim23-crop.png") as original:
        reference = np.asarray(original.convert("RGB"))
    decoded = np.asarray(Image.open(io.BytesIO((out / item["bitstream"]).read_bytes())).convert("RGB"))
    assert item["metrics"]["ssimulacra2"] == SSIMULACRA2()(reference, decoded)
    assert item["metrics"]["butteraugli"] == Butteraugli()(reference, decoded)
    run = json.loads((out / "run.json").read_text())
    assert run["metrics"] == ["psnr", *names]

    # BD-rate on each new metric from the command line.
    for name in names:
        assert main(["bdrate", str(out / "results" / "jpeg.json"), str(out / "results" / "webp.json"),
                     "--metric", name]) == 0  # fmt: skip
        printed = capsys.readouterr().out
        assert f"BD-rate of webp against jpeg on {name}: " in printed and "%" in printed

    # The report: an RD plot per metric, BD-rate columns and results-table columns.
    assert main(["report", str(out), "-o", str(tmp_path / "report.html")]) == 0
    text = (tmp_path / "report.html").read_text()
    for name in names:
        assert f'alt="{name} vs bpp"' in text
        assert text.count(f"<th>{name}</th>") == 2  # BD-rate table and results table

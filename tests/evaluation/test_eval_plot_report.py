"""RD plots and the offline HTML report, rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
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
from latentcodec.evaluation.plots import curve_style, write_plot  # noqa: E402
from latentcodec.evaluation.report import build_report  # noqa: E402
from latentcodec.evaluation.results import load_results  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _results(path: Path, name: str, bpp, psnr) -> Path:
    path.write_text(json.dumps({"name": name, "description": "", "results": {"bpp": bpp, "psnr": psnr}}))
    return path


def test_plot_writes_a_valid_png(tmp_path):
    a = _results(tmp_path / "a.json", "jpeg", [0.1, 0.2, 0.4], [24.0, 27.0, 30.0])
    b = _results(tmp_path / "b.json", "jpeg-down2", [0.05, 0.1, 0.2], [22.0, 24.5, 26.0])
    output = write_plot([load_results(a), load_results(b)], "psnr", tmp_path / "rd.png", log_rate=True)
    data = output.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(output) as image:
        image.load()
        assert image.size == (900, 500)
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # lines, text and markers were drawn
    assert curve_style("jpeg-down2").family == curve_style("jpeg-matched").family == "jpeg"


def test_plot_cli_and_its_errors(tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    _results(folder / "a.json", "a", [0.1, 0.2, 0.4], [24.0, 27.0, 30.0])
    assert main(["plot", str(folder), "--metric", "psnr", "-o", str(tmp_path / "out.png")]) == 0
    assert (tmp_path / "out.png").read_bytes().startswith(PNG_SIGNATURE)
    capsys.readouterr()
    assert main(["plot", str(folder / "a.json"), "--metric", "dists", "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'dists'" in err
    (tmp_path / "bad.json").write_text('{"name": "x"}')
    assert main(["plot", str(tmp_path / "bad.json"), "--metric", "psnr"]) == 1
    assert "CompressAI" in capsys.readouterr().err


def _chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "chromium is required (Debian package 'chromium', listed in .ci/apt-packages.txt)"
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *arguments,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_report_is_self_contained_and_renders_in_chromium(evaluated, tmp_path):
    output = build_report(evaluated / "out", tmp_path / "report.html", crop=64)
    text = output.read_text()

    # Offline: no external resource of any kind; every image inline.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text)
    assert "<link" not in text and "@import" not in text and "<script src" not in text
    sources = re.findall(r"<img [^>]*src='([^']*)'|<img [^>]*src=\"([^\"]*)\"", text)
    sources = [a or b for a, b in sources]
    assert len(sources) >= 1 + 2 * 3 * 4  # plot(s) + 2 images x 3 qualities x (original, ours, 2 baselines)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "Visual comparison at matched bytes" in text and "ours fake-glc q2" in text
    # The bytes under each baseline tile are those of its matched file, never above ours.
    per_image = json.loads((evaluated / "out" / "per_image.json").read_text())
    ours = {(r["image"], r["point"]): r["bytes"] for r in per_image if r["curve"] == "fake-glc"}
    for r in per_image:
        if r["mode"] == "matched" and r["status"] == "ok":
            assert r["bytes"] <= ours[(r["image"], r["point"])]
            assert f": {r['bytes']} B" in text

    profile = tmp_path / "profile"
    dom = _chromium("--dump-dom", output.as_uri(), profile=profile)
    assert dom.returncode == 0, dom.stderr[-2000:]
    marker = re.search(r'id="image-check" data-images="(\d+)" data-loaded="(\d+)"', dom.stdout)
    assert marker, "the inline check script did not run"
    assert int(marker.group(1)) == len(sources) == int(marker.group(2))

    screenshot = tmp_path / "shot.png"
    shot = _chromium("--window-size=1200,1600", f"--screenshot={screenshot}", output.as_uri(), profile=profile)
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 20  # not a blank page
    assert len(np.unique(pixels.reshape(-1, 3).astype(np.uint8), axis=0)) > 500  # plots and photo crops


def test_report_cli_and_bad_inputs(evaluated, tmp_path, capsys):
    assert main(["report", str(evaluated / "out"), "-o", str(tmp_path / "r.html"), "--images", "ramp"]) == 0
    text = (tmp_path / "r.html").read_text()
    assert "<h3>ramp" in text and "<h3>kodim23-crop" not in text
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["report", str(evaluated / "out"), "-o", str(tmp_path / "x.html"), "--images", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
    with pytest.raises(InputError):
        build_report(tmp_path)  # a folder without results/


def test_axis_direction_follows_the_metric_declarations():
    from latentcodec.evaluation.plots import lower_is_better

    assert not lower_is_better("psnr") and not lower_is_better("ms_ssim")
    assert lower_is_better("nlpd") and lower_is_better("lpips_alex") and lower_is_better("dists")

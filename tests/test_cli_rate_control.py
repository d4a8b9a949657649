"""The command line's target-size mode: --target-bytes / --target-bpp / --allow-downscale, --quality 1.37."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from latentcodec.cli import main

from test_api_rate_control import picture, save_tiny_with_rate_gains  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_tiny_with_rate_gains(tmp_path_factory.mktemp("weights") / "tiny-rates"))


@pytest.fixture
def photo(tmp_path, picture):  # noqa: F811
    path = tmp_path / "photo.png"
    picture.save(path)
    return path


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "latentcodec.cli", *map(str, args)], capture_output=True, text=True)


def sizes_at(photo, weights, tmp_path, *qualities):
    sizes = []
    for quality in qualities:
        out = tmp_path / f"q{quality}.lci"
        assert main(["compress", str(photo), "-o", str(out), "--weights", weights, "--quality", str(quality)]) == 0
        sizes.append(out.stat().st_size)
    return sizes


def info_of(path, capsys) -> dict:
    capsys.readouterr()
    assert main(["info", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_target_bytes_and_target_bpp(tmp_path, photo, weights, capsys):
    low, high = sizes_at(photo, weights, tmp_path, 0, 3)
    target = (low + high) // 2
    out = tmp_path / "target.lci"
    capsys.readouterr()
    assert main(["compress", str(photo), "-o", str(out), "--weights", weights, "--target-bytes", str(target)]) == 0
    line = capsys.readouterr().out
    assert f"(target {target} bytes: quality" in line and "encodes" in line
    assert low <= out.stat().st_size <= target
    info = info_of(out, capsys)
    assert 0 <= info["rate"] <= 3 and info["total_bytes"] == out.stat().st_size
    out_bpp = tmp_path / "bpp.lci"
    bpp = 8 * target / (96 * 128)
    assert main(["compress", str(photo), "-o", str(out_bpp), "--weights", weights, "--target-bpp", str(bpp)]) == 0
    assert out_bpp.stat().st_size <= target


def test_float_quality_on_the_command_line(tmp_path, photo, weights, capsys):
    out = tmp_path / "q.lci"
    assert main(["compress", str(photo), "-o", str(out), "--weights", weights, "--quality", "1.5"]) == 0
    assert info_of(out, capsys)["rate"] == 1.5


def test_unreachable_target_is_one_line_and_writes_nothing(tmp_path, photo, weights):
    out = tmp_path / "none.lci"
    result = run_cli("compress", photo, "-o", out, "--weights", weights, "--target-bytes", 12)
    assert result.returncode == 1 and not out.exists()
    assert result.stderr.startswith("latentcodec: error: target 12 bytes is unreachable: the smallest file is ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_allow_downscale_reaches_a_smaller_target_at_the_original_size(tmp_path, photo, weights, capsys):
    (low,) = sizes_at(photo, weights, tmp_path, 0)
    out, decoded = tmp_path / "small.lci", tmp_path / "small.png"
    target = low * 2 // 3
    assert main(["compress", str(photo), "-o", str(out), "--weights", weights, "--target-bytes", str(target),
                 "--allow-downscale"]) == 0
    assert out.stat().st_size <= target
    info = info_of(out, capsys)
    assert 0 < info["scale"] < 64 and (info["height"], info["width"]) == (96, 128)
    assert info["coded_height"] < 96
    assert main(["decompress", str(out), "-o", str(decoded), "--weights", weights]) == 0
    assert Image.open(decoded).size == (128, 96)


@pytest.mark.parametrize("extra, message", [
    (("--target-bytes", "100", "--target-bpp", "0.1"), "not both"),
    (("--target-bytes", "100", "--quality", "1"), "either --quality or a target size"),
    (("--allow-downscale",), "--allow-downscale needs --target-bytes or --target-bpp"),
])
def test_conflicting_options_are_one_line_errors(tmp_path, photo, weights, extra, message):
    out = tmp_path / "x.lci"
    result = run_cli("compress", photo, "-o", out, "--weights", weights, *extra)
    assert result.returncode == 1 and message in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "-5", "abc", "1.5"])
def test_absurd_target_values_are_refused_before_any_work(tmp_path, photo, weights, value):
    result = run_cli("compress", photo, "-o", tmp_path / "x.lci", "--weights", weights, "--target-bytes", value)
    assert result.returncode != 0 and "--target-bytes" in result.stderr and "Traceback" not in result.stderr


def test_an_existing_output_is_not_overwritten_without_force(tmp_path, photo, weights):
    out = tmp_path / "exists.lci"
    out.write_bytes(b"keep")
    result = run_cli("compress", photo, "-o", out, "--weights", weights, "--target-bytes", 10_000)
    assert result.returncode == 1 and "exists" in result.stderr and out.read_bytes() == b"keep"

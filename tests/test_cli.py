"""The command line: outputs, refusals, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from latentcodec.cli import main
from latentcodec.models.glc_image import GLCImage, GLCImageConfig


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny"
    GLCImage(GLCImageConfig.tiny()).save_pretrained(path)
    return str(path)


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(path)
    return path


def run_cli(*args):
    """Run as a user would, in a subprocess, to see exit codes and stderr exactly."""
    return subprocess.run([sys.executable, "-m", "latentcodec.cli", *map(str, args)], capture_output=True, text=True)


def test_compress_decompress_info_roundtrip(tmp_path, photo, weights, capsys):
    out = tmp_path / "photo.lci"
    assert main(["compress", str(photo), "-o", str(out), "--weights", weights, "--quality", "1"]) == 0
    assert out.stat().st_size > 8
    decoded = tmp_path / "decoded.png"
    assert main(["decompress", str(out), "-o", str(decoded), "--weights", weights]) == 0
    assert Image.open(decoded).size == (90, 70)


def test_info_json_reports_sizes(tmp_path, photo, weights, capsys):
    out = tmp_path / "photo.lci"
    main(["compress", str(photo), "-o", str(out), "--weights", weights])
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["total_bytes"] == out.stat().st_size
    assert (info["height"], info["width"], info["model_name"]) == (70, 90, "glc-image")
    assert info["bpp"] == pytest.approx(8 * out.stat().st_size / (70 * 90))


def test_folders_with_progress(tmp_path, weights):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    assert main(["compress", str(folder), "-o", str(tmp_path / "lci"), "--weights", weights]) == 0
    assert sorted(p.name for p in (tmp_path / "lci").iterdir()) == ["0.lci", "1.lci", "2.lci"]
    assert main(["decompress", str(tmp_path / "lci"), "-o", str(tmp_path / "png"), "--weights", weights]) == 0
    assert len(list((tmp_path / "png").glob("*.png"))) == 3


def test_refuses_to_overwrite_without_force(tmp_path, photo, weights):
    out = tmp_path / "photo.lci"
    out.write_bytes(b"keep me")
    result = run_cli("compress", photo, "-o", out, "--weights", weights)
    assert result.returncode == 1 and "--force" in result.stderr
    assert out.read_bytes() == b"keep me"
    assert main(["compress", str(photo), "-o", str(out), "--weights", weights, "--force"]) == 0
    assert out.read_bytes() != b"keep me"


@pytest.mark.parametrize(
    "make_input, expected",
    [
        (lambda d: d / "missing.png", "no such file"),
        (lambda d: (d / "text.png").write_text("hello") and d / "text.png", "not an image"),
    ],
)
def test_bad_images_give_one_line_errors(tmp_path, weights, make_input, expected):
    source = make_input(tmp_path)
    result = run_cli("compress", source, "-o", tmp_path / "out.lci", "--weights", weights)
    assert result.returncode == 1
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.lci").exists()


def test_bad_bitstreams_give_one_line_errors(tmp_path, photo, weights):
    good = tmp_path / "good.lci"
    main(["compress", str(photo), "-o", str(good), "--weights", weights])
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) - 5],
        "corrupt": data[:10] + bytes([data[10] ^ 0xFF]) + data[11:],
        "garbage": b"\x00garbage",
        "huge": bytes([data[0], data[1], data[2]]) + b"\xff\xff\xff\xff\x7f" * 2 + data[7:],
    }
    for name, payload in cases.items():
        path = tmp_path / f"{name}.lci"
        path.write_bytes(payload)
        result = run_cli("decompress", path, "-o", tmp_path / f"{name}.png", "--weights", weights)
        assert result.returncode == 1, name
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / f"{name}.png").exists()


def test_bad_max_memory_gives_one_line_error(tmp_path, photo, weights):
    for command, source in (("compress", photo), ("roundtrip", photo)):
        result = run_cli(command, source, "-o" if command == "compress" else "--output-dir",
                         tmp_path / "out", "--weights", weights, "--max-memory", "2 bananas")
        assert result.returncode == 1, command
        assert "memory size" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()


def test_max_memory_does_not_change_the_file(tmp_path, photo, weights):
    files = []
    for budget in ("100MB", "64GB"):
        out = tmp_path / f"{budget}.lci"
        assert main(["compress", str(photo), "-o", str(out), "--weights", weights, "--max-memory", budget]) == 0
        files.append(out.read_bytes())
        decoded = tmp_path / f"{budget}.png"
        assert main(["decompress", str(out), "-o", str(decoded), "--weights", weights, "--max-memory", budget]) == 0
    assert files[0] == files[1]


def test_a_file_decodes_to_close_pictures_in_either_precision(tmp_path, photo, weights):
    out = tmp_path / "photo.lci"
    assert main(["compress", str(photo), "-o", str(out), "--weights", weights, "--precision", "bf16"]) == 0
    pictures = []
    for precision in ("fp32", "bf16", "auto"):
        decoded = tmp_path / f"{precision}.png"
        assert main(["decompress", str(out), "-o", str(decoded), "--weights", weights, "--precision", precision]) == 0
        pictures.append(np.asarray(Image.open(decoded), dtype=np.int16))
    assert pictures[0].shape == (70, 90, 3)
    # bfloat16 moves pixels by a few levels (random tiny weights amplify it), never far
    assert np.abs(pictures[1] - pictures[0]).mean() < 2.0
    assert any(np.array_equal(pictures[2], picture) for picture in pictures[:2])  # auto is one of the two
    result = run_cli("decompress", out, "-o", tmp_path / "x.png", "--weights", weights, "--precision", "fp16")
    assert result.returncode == 2 and "invalid choice: 'fp16'" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_wrong_weights_give_one_line_error(tmp_path, photo, weights):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"model": "dlf", "config": {}}')
    result = run_cli("compress", photo, "-o", tmp_path / "x.lci", "--weights", other)
    assert result.returncode == 1 and "dlf" in result.stderr and "Traceback" not in result.stderr
    not_weights = tmp_path / "notweights.pth"
    not_weights.write_bytes(b"\x00" * 64)
    result = run_cli("compress", photo, "-o", tmp_path / "x.lci", "--weights", not_weights)
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_roundtrip_prints_bpp_and_psnr(photo, weights, capsys):
    assert main(["roundtrip", str(photo), "--weights", weights, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bytes"] > 0 and result["bpp"] == pytest.approx(8 * result["bytes"] / (70 * 90))
    assert 0 < result["psnr"] < 100


def test_models_lists_the_registry(capsys):
    assert main(["models", "--json"]) == 0
    names = {row["name"]: row["id"] for row in json.loads(capsys.readouterr().out)}
    assert names["glc-image"] == 1


def test_files_are_portable_unless_asked_and_info_says_which(tmp_path, photo, weights, capsys):
    portable, floating = tmp_path / "portable.lci", tmp_path / "float.lci"
    assert main(["compress", str(photo), "-o", str(portable), "--weights", weights]) == 0
    assert main(["compress", str(photo), "-o", str(floating), "--weights", weights, "--no-portable"]) == 0
    assert portable.read_bytes()[0] == 0xB2 and floating.read_bytes()[0] == 0xB1
    capsys.readouterr()
    versions = []
    for path in (portable, floating):
        capsys.readouterr()
        assert main(["info", str(path), "--json"]) == 0
        versions.append(json.loads(capsys.readouterr().out)["format_version"])
        assert main(["decompress", str(path), "-o", str(path.with_suffix(".png")), "--weights", weights]) == 0
    assert versions == [2, 1]

"""`latentcodec eval` from the command line: a clean run, and one-line errors for bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from latentcodec.cli import main  # noqa: E402


@pytest.fixture
def data_dir(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), "RGB").save(folder / "noise.png")
    return folder


def _one_line_error(capsys, code: int) -> str:
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith("latentcodec: error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err


def test_eval_cli_runs_and_prints_the_curves(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([
        "eval", "--model", "fake_codec_for_eval:make", "--qualities", "1,3", "--data", str(data_dir),
        "--out", str(out), "--baselines", "webp", "--scales", "1", "--baseline-values", "webp=20,70",
        "--metrics", "psnr", "--workers", "1", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    stdout = capsys.readouterr().out
    assert "fake-glc:" in stdout and "webp:" in stdout and "bpp=" in stdout
    payload = json.loads((out / "results" / "webp.json").read_text())
    assert payload["results"]["quality"] == [20, 70]
    assert (out / "bitstreams" / "webp" / "quality-20" / "noise.webp").is_file()


def test_eval_cli_compares_models_in_one_run_with_a_process_pool(data_dir, tmp_path, capsys):
    Image.fromarray(np.full((32, 40, 3), 90, np.uint8), "RGB").save(data_dir / "flat.png")
    out = tmp_path / "out"
    code = main([
        "eval", "--model", "fake_codec_for_eval:make", "--compare", "fake_codec_for_eval:make_other",
        "--qualities", "1", "--data", str(data_dir), "--out", str(out), "--baselines", "webp", "--scales", "1",
        "--baseline-values", "webp=20", "--metrics", "psnr", "--workers", "2", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    stdout = capsys.readouterr().out
    assert "fake-glc:" in stdout and "fake-other:" in stdout
    other = json.loads((out / "results" / "fake-other.json").read_text())
    assert other["results"]["point"] == ["q0", "q1", "q2", "q3"] and other["num_images"] == 2
    with pytest.raises(SystemExit) as usage_error:  # a malformed value is a usage error, as for every flag
        main(["eval", "--data", str(data_dir), "--out", str(out), "--compare", "glc-image="])
    assert usage_error.value.code == 2 and "MODEL=WEIGHTS" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--data", "{tmp}/missing", "--baselines", "jpeg"], "no such file or directory"),
        (["--data", "{tmp}/empty", "--baselines", "jpeg"], "no images"),
        (["--data", "{tmp}/notes.txt", "--baselines", "jpeg"], "not an image file"),
        (["--data", "{tmp}/broken", "--baselines", "jpeg"], "not a readable image"),
        (["--data", "{data}", "--baselines", "bpg"], "unknown baseline"),
        (["--data", "{data}", "--baselines", "jpeg", "--metrics", "psnr,sharpness"], "unknown metric"),
        (["--data", "{data}", "--model", "no_such_module:make"], "cannot import"),
        (["--data", "{data}", "--model", "fake_codec_for_eval:make", "--qualities", "7"], "qualities 0..3"),
        (["--data", "{data}", "--model", "jpeg", "--qualities", "150"], "outside"),
        (["--data", "{data}", "--model", "fake_codec_for_eval:make", "--weights", "{tmp}/nothing"], "--weights"),
        (["--data", "{data}"], "nothing to evaluate"),
        (["--data", "{data}", "--baselines", "jpeg", "--target-bpp", "-1"], "positive"),
        (["--data", "{data}", "--model", "fake_codec_for_eval:make", "--compare", "jpeg"], "--baselines"),
        (["--data", "{data}", "--model", "fake_codec_for_eval:make", "--compare", "fake_codec_for_eval:make"],
         "already in this run"),
        (["--data", "{data}", "--compare", "fake_codec_for_eval:make_other={tmp}/nothing"], "--compare weights"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(arguments, message, data_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    filled = [a.format(tmp=tmp_path, data=data_dir) for a in arguments]
    code = main(["eval", "--out", str(tmp_path / "out"), "--metrics", "psnr", "--no-progress", *filled])
    assert message in _one_line_error(capsys, code)

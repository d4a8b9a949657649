"""`latentcodec eval` on videos: a tiny random GLC-video model, x264/x265 through ffmpeg, real files."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from latentcodec.bitstream.sequence import describe_sequence_file
from latentcodec.cli import main
from latentcodec.data.video import BT709_FULL, FrameFolderWriter, Y4MWriter, read_frames, yuv420_to_rgb
from latentcodec.evaluation import baselines as classical
from latentcodec.evaluation.video_baselines import VIDEO_BASELINES, frame_sizes, pad_planes, padded_size
from latentcodec.evaluation.videos import SequenceRef, discover_sequences, iter_rgb_frames, probe_sequence

SIZE = 64
FRAMES = 3
MODEL_QUALITIES = (0, 63)
GRID = (40, 30, 20)


def _moving_pattern(width: int, height: int, frames: int, seed: int = 0) -> np.ndarray:
    """Smooth colour waves drifting by a few pixels a frame, with mild noise: compressible, not trivial."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    out = []
    for t in range(frames):
        phase = 2.0 * t
        base = np.stack([np.sin((xx + phase) / 6.0), np.cos((yy - phase) / 5.0), np.sin((xx + yy) / 9.0)], -1)
        pixels = 128 + 90 * base + rng.normal(0, 4, base.shape)
        out.append(np.clip(pixels, 0, 255).astype(np.uint8))
    return np.stack(out)


def _write_y4m(path: Path, frames: np.ndarray) -> Path:
    with Y4MWriter(path, frames.shape[2], frames.shape[1], frame_rate=25) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from latentcodec.models.glc_video import GLCVideo, GLCVideoConfig

    folder = tmp_path_factory.mktemp("tiny_glc_video")
    GLCVideo(GLCVideoConfig.tiny()).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _write_y4m(tmp_path_factory.mktemp("clip") / "clip.y4m", _moving_pattern(SIZE, SIZE, FRAMES))


@pytest.fixture(scope="module")
def run(weights, clip, tmp_path_factory) -> Path:
    """One evaluation: the model at two qualities, x264 and x265 on a grid and at the model's sizes."""
    out = tmp_path_factory.mktemp("eval") / "out"
    code = main([
        "eval", "--model", "glc-video", "--weights", str(weights), "--data", str(clip), "--out", str(out),
        "--qualities", ",".join(map(str, MODEL_QUALITIES)), "--baselines", "x264,x265",
        "--baseline-values", "x264=" + ",".join(map(str, GRID)), "--baseline-values", "x265=" + ",".join(map(str, GRID)),
        "--metrics", "psnr,ms_ssim", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    return out


def _per_sequence(out: Path) -> dict[tuple[str, str], dict]:
    return {(r["curve"], r["point"]): r for r in json.loads((out / "per_sequence.json").read_text())}


def _per_frame(out: Path) -> dict[tuple[str, str], list[dict]]:
    frames: dict[tuple[str, str], list[dict]] = {}
    for record in json.loads((out / "per_frame.json").read_text()):
        frames.setdefault((record["curve"], record["point"]), []).append(record)
    return frames


def test_ffmpeg_has_both_encoders_here():
    # CI installs ffmpeg with libx264 and libx265; a missing one must fail here, not skip silently.
    assert {name: codec.unavailable_reason() for name, codec in VIDEO_BASELINES.items()} == {"x264": None, "x265": None}


def test_sequence_bpp_is_file_bits_over_all_pixels_and_frames_add_up(run):
    sequences, frames = _per_sequence(run), _per_frame(run)
    curves = {curve for curve, _ in sequences}
    assert curves == {"glc-video", "x264", "x265", "x264-matched", "x265-matched"}
    for key, record in sequences.items():
        assert record["status"] == "ok", record
        file_bytes = (run / record["bitstream"]).stat().st_size
        assert record["bytes"] == file_bytes and record["frames"] == FRAMES
        assert record["bpp"] == pytest.approx(8 * file_bytes / (SIZE * SIZE * FRAMES), rel=1e-12)
        items = sorted(frames[key], key=lambda f: f["frame"])
        assert [f["frame"] for f in items] == list(range(FRAMES))
        assert sum(f["bytes"] for f in items) == file_bytes
        assert [f["type"] for f in items] == ["I"] + ["P"] * (FRAMES - 1)
        for f in items:
            assert f["bpp"] == pytest.approx(8 * f["bytes"] / (SIZE * SIZE), rel=1e-12)
        mean_psnr = sum(f["metrics"]["psnr"] for f in items) / FRAMES
        assert record["metrics"]["psnr"] == pytest.approx(mean_psnr, rel=1e-12)


def test_model_frame_bytes_are_its_units_with_the_header_in_frame_0(run):
    for quality in MODEL_QUALITIES:
        record = _per_sequence(run)[("glc-video", f"q{quality}")]
        info = describe_sequence_file((run / record["bitstream"]).read_bytes())
        frames = sorted(_per_frame(run)[("glc-video", f"q{quality}")], key=lambda f: f["frame"])
        assert frames[0]["bytes"] == info.unit_bytes[0] + info.header_bytes
        assert [f["bytes"] for f in frames[1:]] == list(info.unit_bytes[1:])
        assert all(f["estimated_bpp"] > 0 for f in frames)


def test_model_psnr_matches_a_direct_computation(run, clip, weights):
    import latentcodec

    codec = latentcodec.load("glc-video", weights=str(weights))
    originals = read_frames(clip)
    for quality in MODEL_QUALITIES:
        record = _per_sequence(run)[("glc-video", f"q{quality}")]
        decoded = codec.decompress_video((run / record["bitstream"]).read_bytes())
        expected = [_psnr(o, np.asarray(d)) for o, d in zip(originals, decoded, strict=True)]
        frames = sorted(_per_frame(run)[("glc-video", f"q{quality}")], key=lambda f: f["frame"])
        assert [f["metrics"]["psnr"] for f in frames] == pytest.approx(expected, abs=1e-9)


def test_x264_psnr_matches_an_ffmpeg_decode_of_the_raw_stream(run, clip):
    record = _per_sequence(run)[("x264", "crf-30")]
    path = run / record["bitstream"]
    assert path.suffix == ".264"
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "h264", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "yuvj420p", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    luma, chroma = SIZE * SIZE, (SIZE // 2) ** 2
    planes = np.frombuffer(raw, np.uint8).reshape(FRAMES, luma + 2 * chroma)
    expected = []
    for original, frame in zip(read_frames(clip), planes, strict=True):
        y = frame[:luma].reshape(SIZE, SIZE)
        u = frame[luma : luma + chroma].reshape(SIZE // 2, SIZE // 2)
        v = frame[luma + chroma :].reshape(SIZE // 2, SIZE // 2)
        expected.append(_psnr(original, yuv420_to_rgb(y, u, v, BT709_FULL)))
    frames = sorted(_per_frame(run)[("x264", "crf-30")], key=lambda f: f["frame"])
    assert [f["metrics"]["psnr"] for f in frames] == pytest.approx(expected, abs=1e-9)
    assert 25 < min(expected)  # a sane reconstruction, not garbage that happens to agree


def test_matched_files_are_the_largest_not_above_the_models(run, clip):
    sequences = _per_sequence(run)
    source = probe_sequence(SequenceRef("clip", clip), None)
    from latentcodec.evaluation.video_baselines import planes_folder, write_planes_file

    with planes_folder() as folder:
        planes = write_planes_file(source, folder)
        for name in ("x264", "x265"):
            codec = VIDEO_BASELINES[name]
            for quality in MODEL_QUALITIES:
                model = sequences[("glc-video", f"q{quality}")]
                matched = sequences[(f"{name}-matched", f"q{quality}")]
                assert 0 < matched["bytes"] <= model["bytes"]
                assert (run / matched["bitstream"]).stat().st_size == matched["bytes"]
                # The next larger rate factor step would not fit (the encoders are deterministic).
                if matched["value"] > 0:
                    larger = codec.encode(planes, matched["value"] - 0.5, 96)
                    assert len(larger) > model["bytes"]


def test_results_json_is_compressai_layout_with_video_fields(run):
    payload = json.loads((run / "results" / "x264.json").read_text())
    assert payload["kind"] == "video" and payload["num_sequences"] == 1 and payload["frames"] == {"clip": FRAMES}
    results = payload["results"]
    assert results["point"] == [f"crf-{v}" for v in GRID] and results["crf"] == list(GRID)
    sequences = _per_sequence(run)
    assert results["bpp"] == [sequences[("x264", f"crf-{v}")]["bpp"] for v in GRID]
    assert results["bpp"] == sorted(results["bpp"]) and results["psnr"] == sorted(results["psnr"])
    model = json.loads((run / "results" / "glc-video.json").read_text())["results"]
    assert model["quality"] == list(MODEL_QUALITIES) and "estimated_bpp" in model


def test_bdrate_and_plot_read_video_results(run, tmp_path, capsys):
    capsys.readouterr()
    x264, x265 = run / "results" / "x264.json", run / "results" / "x265.json"
    assert main(["bdrate", str(x264), str(x265), "--metric", "psnr"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("BD-rate of x265 against x264 on psnr: ") and "3 and 3 points" in line
    percent = float(line.split(": ")[1].split(" %")[0])
    assert math.isfinite(percent) and percent != 0.0
    output = tmp_path / "rd.png"
    assert main(["plot", str(run / "results"), "--metric", "ms_ssim", "-o", str(output)]) == 0
    assert output.read_bytes().startswith(b"\x89PNG")


def test_a_second_run_resumes_and_fewer_frames_redo_the_items(run, weights, clip, capsys):
    base = ["eval", "--model", "glc-video", "--weights", str(weights), "--data", str(clip), "--out", str(run),
            "--qualities", "0", "--metrics", "psnr,ms_ssim", "--no-progress"]  # fmt: skip
    capsys.readouterr()
    assert main(base) == 0
    assert capsys.readouterr().out.startswith("0 items evaluated, 1 resumed")
    assert main([*base, "--frames", "2"]) == 0
    assert capsys.readouterr().out.startswith("1 items evaluated, 0 resumed")
    record = _per_sequence(run)[("glc-video", "q0")]
    assert record["frames"] == 2
    assert record["bpp"] == pytest.approx(8 * (run / record["bitstream"]).stat().st_size / (SIZE * SIZE * 2))


def test_folders_of_videos_and_png_frames_with_odd_sizes(tmp_path, capsys):
    data = tmp_path / "videos"
    data.mkdir()
    _write_y4m(data / "odd.y4m", _moving_pattern(35, 27, 2, seed=1))
    frames = _moving_pattern(40, 24, 2, seed=2)
    with FrameFolderWriter(data / "pngs", 40, 24) as writer:
        for frame in frames:
            writer.write(frame)
    assert [ref.sequence_id for ref in discover_sequences(data)] == ["odd", "pngs"]
    assert [ref.sequence_id for ref in discover_sequences(data / "pngs")] == ["pngs"]
    out = tmp_path / "out"
    code = main(["eval", "--data", str(data), "--out", str(out), "--baselines", "x265",
                 "--baseline-values", "x265=10", "--metrics", "psnr", "--no-progress"])  # fmt: skip
    assert code == 0
    sequences = {r["image"]: r for r in json.loads((out / "per_sequence.json").read_text())}
    assert (sequences["odd"]["width"], sequences["odd"]["height"], sequences["odd"]["frames"]) == (35, 27, 2)
    for record in sequences.values():
        assert record["metrics"]["psnr"] > 35  # padding and cropping line up; colours round-trip
        assert record["bpp"] == pytest.approx(8 * record["bytes"] / (record["width"] * record["height"] * 2))


def test_lpips_is_scored_per_frame_when_its_weights_are_present(clip, tmp_path, monkeypatch):
    from latentcodec.evaluation.metrics import write_random_weights

    home = tmp_path / "torch_home"
    write_random_weights(home / "hub" / "checkpoints", ["lpips_alex"], seed=4)
    monkeypatch.setenv("TORCH_HOME", str(home))
    out = tmp_path / "out"
    code = main(["eval", "--data", str(clip), "--out", str(out), "--baselines", "x264", "--baseline-values",
                 "x264=51,20", "--metrics", "psnr,lpips_alex", "--frames", "2", "--no-progress"])  # fmt: skip
    assert code == 0
    frames = json.loads((out / "per_frame.json").read_text())
    assert len(frames) == 4 and all(set(f["metrics"]) == {"psnr", "lpips_alex"} for f in frames)
    by_point = {p: [f["metrics"]["lpips_alex"] for f in frames if f["point"] == p] for p in ("crf-51", "crf-20")}
    assert all(v >= 0 for values in by_point.values() for v in values)
    results = json.loads((out / "results" / "x264.json").read_text())["results"]
    assert results["lpips_alex"] == pytest.approx([sum(by_point[p]) / 2 for p in ("crf-51", "crf-20")])


def test_padding_reaches_even_sides_of_at_least_64():
    assert padded_size(35, 27) == (64, 64) and padded_size(177, 145) == (178, 146) and padded_size(64, 90) == (64, 90)
    y, u, v = pad_planes((np.arange(27 * 35, dtype=np.uint16).reshape(27, 35), np.ones((14, 18)), np.ones((14, 18))), 64, 64)
    assert y.shape == (64, 64) and u.shape == v.shape == (32, 32)
    assert (y[:27, :35] == np.arange(27 * 35).reshape(27, 35)).all() and (y[27:, 34] == y[26, 34]).all()  # edge copies


def test_frame_sizes_split_a_stream_into_access_units(clip):
    source = probe_sequence(SequenceRef("clip", clip), None)
    from latentcodec.evaluation.video_baselines import planes_folder, write_planes_file

    with planes_folder() as folder:
        data = VIDEO_BASELINES["x264"].encode(write_planes_file(source, folder), 35, 2)
    sizes = frame_sizes(VIDEO_BASELINES["x264"], data)
    assert sum(sizes.bytes) == len(data)
    assert sizes.types == ("I", "P", "I")  # intra period 2
    decoded = list(VIDEO_BASELINES["x264"].decode(data, source))
    assert len(decoded) == FRAMES and all(d.shape == (SIZE, SIZE, 3) for d in decoded)
    assert min(_psnr(o, d) for o, d in zip(iter_rgb_frames(source), decoded)) > 25


def test_missing_ffmpeg_skips_the_baseline_in_one_line(monkeypatch, weights, clip, tmp_path, capsys):
    monkeypatch.setattr(classical.shutil, "which", lambda tool: None)
    classical.ffmpeg_encoder_problem.cache_clear()
    try:
        code = main(["eval", "--model", "glc-video", "--weights", str(weights), "--data", str(clip), "--out",
                     str(tmp_path / "out"), "--qualities", "0", "--baselines", "x264", "--metrics", "psnr",
                     "--frames", "1", "--no-progress"])  # fmt: skip
        captured = capsys.readouterr()
        assert code == 0
        assert "latentcodec eval: skipping x264: ffmpeg not found on PATH" in captured.err
        assert "Traceback" not in captured.err and "x264" not in captured.out
        code = main(["eval", "--data", str(clip), "--out", str(tmp_path / "out2"), "--baselines", "x265",
                     "--no-progress"])  # fmt: skip
        assert code == 1 and "nothing to evaluate" in capsys.readouterr().err
    finally:
        classical.ffmpeg_encoder_problem.cache_clear()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--data", "{clip}", "--baselines", "x264", "--frames", "0"], "--frames must be a positive"),
        (["--data", "{clip}", "--baselines", "x264", "--intra-period", "-1"], "--intra-period"),
        (["--data", "{clip}", "--baselines", "x264,jpeg"], "unknown video baseline 'jpeg'"),
        (["--data", "{clip}", "--baselines", "x264", "--baseline-values", "x264=60"], "outside [0, 51]"),
        (["--data", "{clip}", "--baselines", "x264", "--metrics", "psnr,fid"], "set-level"),
        (["--data", "{tmp}/missing.y4m", "--baselines", "x264"], "no such file or directory"),
        (["--data", "{tmp}/notes.txt", "--baselines", "x264"], "not a video file"),
        (["--data", "{tmp}/empty", "--baselines", "x264"], "no videos"),
        (["--data", "{tmp}/image.png", "--baselines", "jpeg", "--frames", "3"], "video evaluations only"),
    ],
)
def test_bad_video_input_is_one_line_and_exit_1(arguments, message, clip, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "image.png")
    filled = [a.format(clip=clip, tmp=tmp_path) for a in arguments]
    code = main(["eval", "--out", str(tmp_path / "out"), "--no-progress", *filled])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith("latentcodec: error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err

"""GLC-video through the public API (latentcodec.load / load_video) and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

import latentcodec
from latentcodec.api import VideoCodec, load_video
from latentcodec.bitstream import SequenceReader
from latentcodec.cli import main
from latentcodec.data.video import Y4MWriter, read_frames
from latentcodec.errors import LatentCodecError, WeightsError
from latentcodec.models.glc_video import GLCVideo, GLCVideoConfig


@pytest.fixture(scope="module")
def weights(tmp_path_factory, make_weights):
    model = GLCVideo(GLCVideoConfig.tiny())
    state = {k: torch.from_numpy(make_weights.make_tensor(k, tuple(v.shape))) for k, v in model.state_dict().items()}
    model.load_state_dict_strict(state, source="deterministic")
    path = tmp_path_factory.mktemp("weights") / "tiny-video"
    model.save_pretrained(path)
    return path


def frames(count: int = 3, height: int = 48, width: int = 72) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = np.asarray(Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize(
        (width + count, height + count), Image.BILINEAR))
    return [np.ascontiguousarray(base[t : t + height, t : t + width]) for t in range(count)]


@pytest.fixture
def clip_y4m(tmp_path):
    path = tmp_path / "clip.y4m"
    with Y4MWriter(path, 72, 48, Fraction(30000, 1001)) as writer:
        for frame in frames():
            writer.write(frame)
    return path


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "latentcodec.cli", *map(str, args)], capture_output=True, text=True)


# -- API ------------------------------------------------------------------------------------------
def test_load_returns_a_video_codec(weights):
    codec = latentcodec.load("glc-video", quality=21, weights=weights)
    assert isinstance(codec, VideoCodec) and codec.num_qualities == 64 and codec.quality == 21
    pictures = [Image.fromarray(f) for f in frames()]
    data = codec.compress_video(pictures)
    header = SequenceReader(data).header
    assert (header.width, header.height, header.frame_count, header.inter_rate) == (72, 48, 3, 21)
    decoded = codec.decompress_video(data)
    assert len(decoded) == 3 and all(isinstance(d, Image.Image) and d.size == (72, 48) for d in decoded)
    assert [np.asarray(d) for d in codec.iter_decompress_video(data)][2].tolist() == np.asarray(decoded[2]).tolist()


def test_all_input_forms_give_the_same_file(weights, clip_y4m):
    codec = load_video("glc-video", quality=5, weights=weights, intra_quality=9)
    from_path = codec.compress_video(clip_y4m)
    read = read_frames(clip_y4m)
    assert codec.compress_video(read, frame_rate=Fraction(30000, 1001)) == from_path
    assert codec.compress_video(np.stack(read), frame_rate=Fraction(30000, 1001)) == from_path
    tensor = torch.from_numpy(np.stack(read)).permute(0, 3, 1, 2).float() / 255
    assert codec.compress_video(tensor, frame_rate=Fraction(30000, 1001)) == from_path
    header = SequenceReader(from_path).header
    assert (header.intra_rate, header.inter_rate, header.frame_rate) == (9, 5, Fraction(30000, 1001))


def test_api_errors(weights):
    with pytest.raises(LatentCodecError, match="quality 64"):
        latentcodec.load("glc-video", quality=64, weights=weights)
    with pytest.raises(LatentCodecError, match="image codec"):
        load_video("glc-image")
    with pytest.raises(WeightsError, match="i.pth not found"):
        load_video(weights="missing/i.pth,missing/p.pth")
    codec = load_video(weights=weights)
    with pytest.raises(LatentCodecError, match="frame 1"):
        codec.compress_video([Image.fromarray(frames()[0]), "not a frame"])
    with pytest.raises(LatentCodecError, match="expected a video path"):
        codec.compress_video(42)
    with pytest.raises(LatentCodecError):
        codec.decompress_video(b"\xb5garbage")


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_compress_and_decompress_to_every_output(tmp_path, clip_y4m, weights, capsys):
    lcv = tmp_path / "clip.lcv"
    assert main(["compress", str(clip_y4m), "-o", str(lcv), "--weights", str(weights), "--quality", "3"]) == 0
    assert "3 frames 72x48" in capsys.readouterr().out
    header = SequenceReader(lcv.read_bytes()).header
    assert (header.frame_count, header.inter_rate, header.frame_rate) == (3, 3, Fraction(30000, 1001))

    out_y4m = tmp_path / "out.y4m"
    assert main(["decompress", str(lcv), "-o", str(out_y4m), "--weights", str(weights)]) == 0
    decoded = read_frames(out_y4m)
    assert len(decoded) == 3 and decoded[0].shape == (48, 72, 3)
    assert out_y4m.read_bytes().startswith(b"YUV4MPEG2 W72 H48 F30000:1001")

    out_dir = tmp_path / "frames"
    assert main(["decompress", str(lcv), "-o", str(out_dir) + "/", "--weights", str(weights)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == [f"frame_{i:06d}.png" for i in range(3)]
    api_frames = load_video(weights=weights).decompress_video(lcv.read_bytes())
    assert np.array_equal(np.asarray(Image.open(out_dir / "frame_000001.png")), np.asarray(api_frames[1]))

    out_mp4 = tmp_path / "out.mp4"
    assert main(["decompress", str(lcv), "-o", str(out_mp4), "--lossless", "--weights", str(weights)]) == 0
    assert np.array_equal(read_frames(out_mp4)[2], np.asarray(api_frames[2]))

    capsys.readouterr()
    assert main(["info", str(lcv), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_name"] == "glc-video" and info["frame_count"] == 3 and info["total_bytes"] == lcv.stat().st_size
    assert info["header_bytes"] + sum(info["unit_bytes"]) == info["total_bytes"]


def test_cli_png_folder_input_and_default_output_name(tmp_path, weights):
    folder = tmp_path / "shots"
    folder.mkdir()
    for index, frame in enumerate(frames(2)):
        Image.fromarray(frame).save(folder / f"im{index + 1}.png")
    target = tmp_path / "shots.lcv"
    assert main(["compress", str(folder), "-o", str(target), "--weights", str(weights), "--frame-rate", "24"]) == 0
    assert SequenceReader(target.read_bytes()).header.frame_rate == 24
    assert main(["decompress", str(target), "--weights", str(weights), "--quiet"]) == 0
    assert len(read_frames(tmp_path / "shots.y4m")) == 2


def test_cli_refuses_to_overwrite(tmp_path, clip_y4m, weights):
    lcv = tmp_path / "clip.lcv"
    lcv.write_bytes(b"keep")
    result = run_cli("compress", clip_y4m, "-o", lcv, "--weights", weights)
    assert result.returncode == 1 and "--force" in result.stderr and lcv.read_bytes() == b"keep"


def test_cli_bad_inputs_give_one_line_errors(tmp_path, clip_y4m, weights, capsys):
    good = tmp_path / "good.lcv"
    assert main(["compress", str(clip_y4m), "-o", str(good), "--weights", str(weights), "--quiet"]) == 0
    data = good.read_bytes()
    units = list(SequenceReader(data))
    corrupt = bytearray(data)
    corrupt[units[1].offset + 4] ^= 0x10
    bad_y4m = tmp_path / "bad.y4m"
    bad_y4m.write_bytes(b"YUV4MPEG2 W8 H8 C444\nFRAME\n" + bytes(192))
    cases = [
        (("compress", tmp_path / "missing.y4m", "-o", tmp_path / "x.lcv"), "no such file", tmp_path / "x.lcv"),
        (("compress", bad_y4m, "-o", tmp_path / "y.lcv"), "C444", tmp_path / "y.lcv"),
        (("decompress", tmp_path / "corrupt.lcv", "-o", tmp_path / "c.y4m"), "frame 1", tmp_path / "c.y4m"),
        (("decompress", tmp_path / "corrupt.lcv", "-o", tmp_path / "cdir/"), "frame 1", tmp_path / "cdir"),
        (("decompress", tmp_path / "cut.lcv", "-o", tmp_path / "t.y4m"), "frame 2: truncated", tmp_path / "t.y4m"),
    ]
    (tmp_path / "corrupt.lcv").write_bytes(bytes(corrupt))
    (tmp_path / "cut.lcv").write_bytes(data[: units[2].offset + 3])
    # In-process: main() turns every LatentCodecError into one stderr line; anything else would raise here.
    for args, message, output in cases:
        capsys.readouterr()
        assert main([*map(str, args), "--weights", str(weights)]) == 1, args
        stderr = capsys.readouterr().err
        assert message in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert not output.exists() or not any(output.iterdir()), output
    # And once as a user runs it: exit code 1, one line, no traceback.
    result = run_cli("decompress", tmp_path / "corrupt.lcv", "-o", tmp_path / "d.y4m", "--weights", weights)
    assert result.returncode == 1 and "frame 1" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

"""latentcodec.video_ratecontrol: the --target-bitrate controller, on a synthetic codec and on the CLI."""

from __future__ import annotations

import io
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from latentcodec.cli import main
from latentcodec.errors import LatentCodecError
from latentcodec.models.glc_video import FrameStats
from latentcodec.video_ratecontrol import compress_to_bitrate, parse_bitrate

HEADER_BYTES = 10


class FakeVideoModel:
    """64 levels, intra period 4; a unit of a frame of difficulty d at level L has
    (200 for an I-frame, else 40 + d) * 2**(L/16) bytes."""

    num_rates = 64
    config = SimpleNamespace(gop=SimpleNamespace(intra_period=4))

    def encode_sequence(self, frames, stream, rate, intra_rate, frame_rate, count, on_frame=None):
        stream.write(bytes(HEADER_BYTES))
        for index, difficulty in enumerate(frames):
            intra = index % 4 == 0
            size = int((200 if intra else 40 + difficulty) * 2 ** (rate / 16))
            stream.write(bytes(size))
            on_frame(FrameStats(index, intra, size - 2, size, 0.0))
        return index + 1


class FakeVideoCodec:
    model = FakeVideoModel()

    def _frame_source(self, source, frame_rate):
        return iter(source), Fraction(25), len(source), None


def bitrate(data: bytes, frames: int) -> float:
    return 8 * len(data) * 25 / frames


@pytest.mark.parametrize("text, value", [("50k", 50_000), ("1.5M", 1_500_000), ("20000", 20_000), ("64 kbps", 64_000)])
def test_parse_bitrate(text, value):
    assert parse_bitrate(text) == value


@pytest.mark.parametrize("text", ["0", "-5k", "abc", "5 kg", "", "inf"])
def test_bad_bitrates_are_one_line_errors(text):
    with pytest.raises(LatentCodecError, match="bitrate"):
        parse_bitrate(text)


@pytest.mark.parametrize("target", [30_000, 60_000, 120_000])
def test_the_controller_stays_within_the_target_and_reports_every_gop(target):
    clip = [10] * 16
    result = compress_to_bitrate(FakeVideoCodec(), clip, target)
    assert result.achieved_bps == bitrate(result.data, 16) <= target
    one_level_up = FakeVideoModel().encode_sequence(clip, buffer := io.BytesIO(), result.level + 1, None, 25, 16,
                                                    lambda s: None)
    # The highest level below the target less the controller's 3 % margin: one level up crosses it.
    assert one_level_up == 16 and (result.level == 63 or bitrate(buffer.getvalue(), 16) > target * 0.97)
    assert [g.first_frame for g in result.gops] == [0, 4, 8, 12] and all(g.frames == 4 for g in result.gops)
    assert sum(g.bytes for g in result.gops) == len(result.data)
    assert result.passes == 1 and result.probes <= 6


def test_content_harder_than_the_probe_costs_another_pass_but_never_the_target():
    clip = [0] * 8 + [150] * 24  # the probe sees only the easy start
    result = compress_to_bitrate(FakeVideoCodec(), clip, 60_000)
    assert result.passes >= 2 and bitrate(result.data, 32) <= 60_000
    assert result.gops[-1].bits_per_second > result.gops[0].bits_per_second


def test_an_unreachable_bitrate_names_the_lowest_rate_reached():
    with pytest.raises(LatentCodecError, match=r"^target bitrate 1000 bit/s is unreachable: the lowest level tried "
                                               r"gives \d+ bit/s$"):
        compress_to_bitrate(FakeVideoCodec(), [10] * 8, 1000)


def test_cli_target_bitrate_on_a_tiny_model(tmp_path, make_weights, capsys):
    from latentcodec.data.video import Y4MWriter
    from latentcodec.models.glc_video import GLCVideo, GLCVideoConfig

    model = GLCVideo(GLCVideoConfig.tiny())
    state = {k: torch.from_numpy(make_weights.make_tensor(k, tuple(v.shape))) for k, v in model.state_dict().items()}
    model.load_state_dict_strict(state, source="deterministic")
    weights = model.save_pretrained(tmp_path / "weights")
    clip = tmp_path / "clip.y4m"
    rng = np.random.default_rng(0)
    base = np.asarray(Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize((80, 56)))
    with Y4MWriter(clip, 72, 48, Fraction(25)) as writer:
        for t in range(4):
            writer.write(np.ascontiguousarray(base[t : t + 48, t : t + 72]))
    out = tmp_path / "clip.lcv"
    args = ["compress", str(clip), "-o", str(out), "--weights", str(weights), "--quiet"]
    assert main([*args, "--target-bitrate", "1M"]) == 0
    printed = capsys.readouterr().out
    assert "kbit/s (target 1000.00 kbit/s: level" in printed and "GOP frames 0-3:" in printed
    assert 8 * out.stat().st_size * 25 / 4 <= 1_000_000
    capsys.readouterr()
    assert main([*args, "--target-bitrate", "10", "--force"]) == 1  # 10 bit/s: below any file
    assert main([*args, "--target-bitrate", "50k", "--quality", "3", "--force"]) == 1

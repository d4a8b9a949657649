"""latentcodec.video_ratecontrol: the --target-bitrate controller (one rate per GOP, a bit reservoir
between GOPs), on a synthetic codec, on a tiny GLC-video and on the CLI."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from latentcodec.bitstream import SequenceHeader, describe_sequence_file
from latentcodec.cli import main
from latentcodec.errors import LatentCodecError
from latentcodec.models.glc_video import EncodedFrame, GOPConfig, plan_frame
from latentcodec.video_ratecontrol import compress_to_bitrate, parse_bitrate

FPS = 25


class FakeVideoModel:
    """64 levels, intra period 4; the payload of a frame of difficulty d at rate r has
    (200 for an I-frame, else 40 + d) * 2**(r/16) bytes (continuous in r)."""

    num_rates = 64
    model_id = 2

    def __init__(self, intra_period: int = 4):
        self.config = dataclasses.make_dataclass("Config", ["gop"])(GOPConfig(intra_period, 0))

    def plan(self, index, gop):
        return plan_frame(index, gop)

    def encode_frame(self, frame, plan, rate, reference):
        size = int((200 if plan.intra else 40 + frame) * 2 ** (rate / 16))
        return EncodedFrame(bytes(size), None, 0.0, None)

    def sequence_header(self, height, width, rate, intra_rate, frame_count, frame_rate, gop, per_gop_rates):
        return SequenceHeader(self.model_id, intra_rate, rate, height, width, frame_count, frame_rate.numerator,
                              frame_rate.denominator, gop.intra_period, gop.reset_interval,
                              per_gop_rates=per_gop_rates)

    def _check_frame(self, frame, index, size):
        return _Frame(frame)


class _Frame(int):
    shape = (1, 3, 16, 16)


class FakeVideoCodec:
    def __init__(self, intra_period: int = 4):
        self.model = FakeVideoModel(intra_period)

    def _frame_source(self, source, frame_rate):
        return iter(source), Fraction(FPS), len(source), None


def bitrate(data: bytes, frames: int) -> float:
    return 8 * len(data) * FPS / frames


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
    assert result.achieved_bps >= 0.97 * target and result.passes == 1  # continuous rates: little is left unspent
    assert [g.first_frame for g in result.gops] == [0, 4, 8, 12] and all(g.frames == 4 for g in result.gops)
    assert sum(g.bytes for g in result.gops) == len(result.data)
    assert all(g.bytes <= g.allowance_bytes for g in result.gops)
    # The file records every GOP's rate; a reader needs nothing else.
    info = describe_sequence_file(result.data)
    assert info.gop_rates == tuple((g.first_frame, g.rate, g.rate) for g in result.gops)


def test_savings_of_an_easy_gop_are_spent_by_the_next():
    # GOP 0 is cheap even at the highest rate; GOP 1 is hard. Per GOP, 16 000 bytes (each GOP 4 frames).
    clip = [0] * 4 + [2000] * 4
    target = 16_000 * 8 * FPS / 4
    result = compress_to_bitrate(FakeVideoCodec(), clip, target)
    easy, hard = result.gops
    assert easy.rate == 63 and easy.bytes < easy.budget_bytes  # saturated: a surplus
    assert hard.allowance_bytes == pytest.approx(hard.budget_bytes + easy.budget_bytes - easy.bytes)
    assert hard.bytes > hard.budget_bytes  # it spends bytes GOP 0 did not
    assert result.achieved_bps <= target
    alone = compress_to_bitrate(FakeVideoCodec(), [2000] * 4, target)  # the hard GOP on its own budget
    assert hard.rate > alone.gops[0].rate


def test_a_gop_that_overspends_at_the_lowest_rate_is_paid_back_by_the_next():
    clip = [10] * 4 + [3000] * 4 + [0] * 8
    lowest_hard = 200 + 3 * 3040
    target = (lowest_hard - 2000) * 8 * FPS / 4  # the hard GOP cannot fit its own share at any rate
    result = compress_to_bitrate(FakeVideoCodec(), clip, target)
    assert result.gops[1].rate == 0 and result.gops[1].bytes > result.gops[1].allowance_bytes
    assert result.gops[2].allowance_bytes < result.gops[2].budget_bytes  # the deficit is paid back
    assert result.achieved_bps <= target


def test_a_short_last_gop_that_cannot_fit_its_share_gets_it_reserved_in_a_second_pass():
    clip = [10] * 5  # GOPs of 4 frames and of 1: the lone I-frame costs 200 bytes or more
    target = 150 * 8 * FPS  # 150 bytes per frame
    result = compress_to_bitrate(FakeVideoCodec(), clip, target)
    assert result.passes == 2 and result.achieved_bps <= target
    head, tail = result.gops
    lowest_unit = 2 + 200 + 2 + 1  # GOP rates 0/0, 200 payload bytes, length varint, CRC
    assert tail.budget_bytes == lowest_unit <= tail.bytes <= tail.allowance_bytes  # reserved up front
    assert head.budget_bytes == 5 * 150 - lowest_unit
    assert describe_sequence_file(result.data).gop_rates == ((0, head.rate, head.rate), (4, tail.rate, tail.rate))


def test_an_unreachable_bitrate_names_the_gop_and_the_bitrate_reached():
    with pytest.raises(LatentCodecError, match=r"^target bitrate 1000 bit/s is unreachable: frames 0-3 need \d+ "
                                               r"bytes at the lowest rate \(allowance \d+\), and the file would be "
                                               r"\d+ bit/s$"):
        compress_to_bitrate(FakeVideoCodec(), [10] * 8, 1000)


def test_one_gop_clips_have_no_per_gop_rates():
    result = compress_to_bitrate(FakeVideoCodec(intra_period=0), [10] * 6, 50_000)
    assert len(result.gops) == 1 and not describe_sequence_file(result.data).gop_rates[1:]
    from latentcodec.bitstream import SequenceReader

    assert not SequenceReader(result.data).header.per_gop_rates


def tiny_weights(tmp_path, make_weights, intra_period: int):
    from latentcodec.models.glc_video import GLCVideo, GLCVideoConfig

    model = GLCVideo(dataclasses.replace(GLCVideoConfig.tiny(), gop=GOPConfig(intra_period, 0)))
    state = {k: torch.from_numpy(make_weights.make_tensor(k, tuple(v.shape))) for k, v in model.state_dict().items()}
    model.load_state_dict_strict(state, source="deterministic")
    return model.eval(), model.save_pretrained(tmp_path / "weights")


def moving_frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = np.asarray(Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize((80, 64)))
    return [np.ascontiguousarray(base[t : t + 48, t : t + 72]) for t in range(count)]


def test_a_tiny_glc_video_with_three_gops_decodes_from_the_file_alone(tmp_path, make_weights):
    from latentcodec.api import VideoCodec
    from latentcodec.zoo.registry import get_entry

    model, _ = tiny_weights(tmp_path, make_weights, intra_period=2)
    codec = VideoCodec(model, get_entry("glc-video"), 0, "test")
    frames = np.stack(moving_frames(6))
    low, high = (len(codec.at_quality(q).compress_video(frames)) for q in (0, 63))
    target = 8 * (low + high) / 2 * FPS / 6
    result = compress_to_bitrate(codec, frames, target)
    assert [g.first_frame for g in result.gops] == [0, 2, 4]
    assert result.achieved_bps <= target and sum(g.bytes for g in result.gops) == len(result.data)
    for before, after in zip(result.gops, result.gops[1:]):  # what a GOP leaves unspent moves on
        assert after.allowance_bytes == pytest.approx(after.budget_bytes + before.allowance_bytes - before.bytes)
    assert describe_sequence_file(result.data).gop_rates == tuple((g.first_frame, g.rate, g.rate) for g in result.gops)
    # Every GOP decodes to exactly the latents its own rate gives.
    decoded = [d.latent_hat for d in model.decode_latents(result.data)]
    for gop in result.gops:
        alone = model.compress_frames([torch.from_numpy(f).permute(2, 0, 1).float().div(255).unsqueeze(0)
                                       for f in frames[gop.first_frame : gop.first_frame + gop.frames]], gop.rate)
        expected = [d.latent_hat for d in model.decode_latents(alone)]
        assert all(torch.equal(a, b) for a, b in zip(decoded[gop.first_frame:], expected))
    assert len(codec.decompress_video(result.data)) == 6


def test_cli_target_bitrate_on_a_tiny_model(tmp_path, make_weights, capsys):
    from latentcodec.data.video import Y4MWriter

    _, weights = tiny_weights(tmp_path, make_weights, intra_period=2)
    clip = tmp_path / "clip.y4m"
    with Y4MWriter(clip, 72, 48, Fraction(FPS)) as writer:
        for frame in moving_frames(4):
            writer.write(frame)
    out = tmp_path / "clip.lcv"
    args = ["compress", str(clip), "-o", str(out), "--weights", str(weights), "--quiet"]
    assert main([*args, "--target-bitrate", "1M"]) == 0
    printed = capsys.readouterr().out
    assert "kbit/s (target 1000.00 kbit/s: 2 GOPs" in printed
    assert "GOP frames 0-1: quality" in printed and "GOP frames 2-3: quality" in printed
    assert 8 * out.stat().st_size * FPS / 4 <= 1_000_000
    assert main(["decompress", str(out), "-o", str(tmp_path / "frames") + "/", "--weights", str(weights),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main([*args, "--target-bitrate", "10", "--force"]) == 1  # 10 bit/s: below any file
    assert main([*args, "--target-bitrate", "50k", "--quality", "3", "--force"]) == 1

"""Video I/O: y4m (streaming, BT.709 full range), PNG-frame folders, containers through PyAV."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from latentcodec.data.video import (
    BT601_LIMITED,
    BT709_FULL,
    BT709_LIMITED,
    ContainerWriter,
    FrameFolderWriter,
    Y4MReader,
    Y4MWriter,
    open_video,
    open_video_writer,
    read_frames,
    rgb_to_yuv420,
    upsample_chroma,
    yuv420_to_rgb,
)
from latentcodec.errors import InputError


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def smooth_frames(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
        (width + count, height + count), Image.BILINEAR))
    return [np.ascontiguousarray(base[t : t + height, t : t + width]) for t in range(count)]


@pytest.fixture(scope="module")
def carphone(shared_dir):
    return shared_dir / "data" / "video" / "carphone_qcif" / "carphone_qcif.y4m"


def test_carphone_conversion_reproduces_the_reference_frames(carphone, shared_dir):
    """README section 3: BT.709 full range, corner-aligned chroma; the vectors' frames exactly."""
    reference = load_file(str(shared_dir / "reference" / "glc" / "video_vectors.safetensors"))["frames_u8"].numpy()
    with open_video(carphone) as reader:
        assert (reader.info.width, reader.info.height) == (176, 144)
        assert reader.info.frame_rate == Fraction(30000, 1001) and reader.info.frame_count == 32
        frames = [frame for _, frame in zip(range(4), reader)]
    assert np.array_equal(np.stack(frames)[:, :128, :128], reference)


def test_chroma_upsampling_is_corner_aligned():
    plane = np.array([[0.0, 1.0], [2.0, 3.0]])
    up = upsample_chroma(plane, 3, 3)
    assert np.allclose(up, [[0.0, 0.5, 1.0], [1.0, 1.5, 2.0], [2.0, 2.5, 3.0]])
    up4 = upsample_chroma(plane, 4, 4)
    assert np.allclose(up4[0], [0.0, 1 / 3, 2 / 3, 1.0]) and up4.shape == (4, 4)


def test_grey_and_primaries_convert_exactly():
    grey = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (4, 1, 3))
    y, u, v = rgb_to_yuv420(grey)
    assert np.array_equal(y, grey[..., 0]) and (u == 128).all() and (v == 128).all()
    # Neutral chroma is 127.5 in the reference convention (U/255 - 1/2): 128 tints by at most one level.
    assert np.abs(yuv420_to_rgb(y, u, v).astype(int) - grey).max() <= 1
    assert np.array_equal(yuv420_to_rgb(y, u, v)[..., 1], grey[..., 1])
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    y, u, v = rgb_to_yuv420(red)
    assert y[0, 0] == round(0.2126 * 255) and v[0, 0] == 255  # Cr = 0.5 at full red
    assert np.abs(yuv420_to_rgb(y, u, v).astype(int) - red).max() <= 1
    limited_y, _, _ = rgb_to_yuv420(np.full((2, 2, 3), 255, np.uint8), BT601_LIMITED)
    assert limited_y[0, 0] == 235


@pytest.mark.parametrize("size", [(64, 96), (37, 53)])
def test_y4m_round_trip(tmp_path, size):
    frames = smooth_frames(3, *size)
    path = tmp_path / "clip.y4m"
    with Y4MWriter(path, size[1], size[0], Fraction(30000, 1001)) as writer:
        for frame in frames:
            writer.write(frame)
    assert path.read_bytes().startswith(b"YUV4MPEG2 W%d H%d F30000:1001 Ip A1:1 C420jpeg" % (size[1], size[0]))
    with open_video(path) as reader:
        assert reader.info.frame_count == 3 and reader.info.frame_rate == Fraction(30000, 1001)
        back = list(reader)
    assert len(back) == 3 and all(b.shape == (*size, 3) for b in back)
    assert min(psnr(a, b) for a, b in zip(frames, back)) > 40  # 4:2:0 chroma on smooth content


def test_y4m_colour_range_tag_selects_limited_range(tmp_path):
    frame = smooth_frames(1, 64, 64)[0]
    path = tmp_path / "limited.y4m"
    with Y4MWriter(path, 64, 64, conversion=BT709_LIMITED) as writer:
        writer.write(frame)
    assert b"XCOLORRANGE=LIMITED" in path.read_bytes()[:80]
    with Y4MReader(path) as reader:
        assert reader.conversion == BT709_LIMITED
        assert psnr(next(iter(reader)), frame) > 40
    with Y4MReader(path, BT709_FULL) as reader:  # an explicit conversion wins over the tag
        assert psnr(next(iter(reader)), frame) < 32


def test_y4m_from_a_stream_with_frame_parameters():
    width, height = 4, 2
    planes = bytes(range(8)) + bytes([128, 128]) + bytes([128, 128])
    data = b"YUV4MPEG2 W4 H2 F25:1 C420mpeg2 XYSCSS=420MPEG2\n" + b"FRAME Ixyz\n" + planes + b"FRAME\n" + planes
    reader = Y4MReader(io.BytesIO(data))
    assert reader.info.frame_count is None  # unknown from a stream
    frames = list(reader)
    assert len(frames) == 2 and frames[0].shape == (height, width, 3)
    assert np.array_equal(frames[0][..., 1], np.arange(8, dtype=np.uint8).reshape(2, 4))  # G: neutral chroma


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a video at all", "not a y4m file"),
        (b"YUV4MPEG2 W4 H2 F25:1 C444\nFRAME\n" + bytes(24), "C444"),
        (b"YUV4MPEG2 W4 H2 F25:1 Ib\nFRAME\n" + bytes(12), "interlaced"),
        (b"YUV4MPEG2 W4 F25:1\n", "W and H"),
        (b"YUV4MPEG2 W4 H2 F0:1\n", "frame rate"),
        (b"YUV4MPEG2 W0 H2\n", "frame size"),
        (b"YUV4MPEG2 W4 H2\nFRAME\n" + bytes(5), "truncated"),
        (b"YUV4MPEG2 W4 H2\nFRAMX\n" + bytes(12), "FRAME header"),
    ],
)
def test_bad_y4m_files_give_input_errors(tmp_path, content, message):
    path = tmp_path / "bad.y4m"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_frames(path)


def test_missing_and_unknown_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_video(tmp_path / "missing.y4m")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a video"):
        open_video(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no PNG frames"):
        open_video(tmp_path / "empty")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="broken.mp4"):
        read_frames(tmp_path / "broken.mp4")


def test_png_folders_in_natural_order(tmp_path):
    frames = smooth_frames(12, 20, 24)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"im{index + 1}.png")
    with open_video(tmp_path, frame_rate=Fraction(24)) as reader:
        assert reader.info.frame_count == 12 and reader.info.frame_rate == 24
        assert [p.name for p in reader.files][:3] == ["im1.png", "im2.png", "im3.png"]
        assert reader.files[-1].name == "im12.png"
        assert all(np.array_equal(a, b) for a, b in zip(reader, frames))
    Image.fromarray(smooth_frames(1, 10, 10)[0]).save(tmp_path / "im13.png")
    with pytest.raises(InputError, match="im13.png"):
        read_frames(tmp_path)


def test_png_writer(tmp_path):
    frames = smooth_frames(3, 16, 20)
    with open_video_writer(tmp_path / "out", 20, 16) as writer:
        assert isinstance(writer, FrameFolderWriter)
        for frame in frames:
            writer.write(frame)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"frame_{i:06d}.png" for i in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(read_frames(tmp_path / "out"), frames))
    with pytest.raises(ValueError, match="uint8"):
        writer.write(frames[0].astype(np.float32))


def test_mp4_lossless_and_high_quality(tmp_path, carphone):
    frames = read_frames(carphone, limit=3)
    lossless = tmp_path / "lossless.mp4"
    with ContainerWriter(lossless, 176, 144, Fraction(30000, 1001), lossless=True) as writer:
        for frame in frames:
            writer.write(frame)
    with open_video(lossless) as reader:
        assert reader.info.frame_count == 3 and reader.info.frame_rate == Fraction(30000, 1001)
        assert all(np.array_equal(a, b) for a, b in zip(reader, frames))
    high = tmp_path / "high.mkv"
    with open_video_writer(high, 176, 144, 25) as writer:
        for frame in frames:
            writer.write(frame)
    back = read_frames(high)
    assert len(back) == 3 and min(psnr(a, b) for a, b in zip(frames, back)) > 36
    odd = tmp_path / "odd.mp4"
    with ContainerWriter(odd, 53, 37) as writer:  # odd sides: 4:4:4
        writer.write(smooth_frames(1, 37, 53)[0])
    assert read_frames(odd)[0].shape == (37, 53, 3)


def test_reader_streams_without_loading_the_file(carphone):
    with Y4MReader(carphone, BT709_FULL) as reader:
        first = next(iter(reader))
        assert reader._stream.tell() < 2 * (176 * 144 * 3 // 2 + 100)
    assert first.shape == (144, 176, 3)

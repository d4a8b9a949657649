"""Training clips: real runs of consecutive frames and panned stills, deterministic per sample key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from latentcodec.data.clips import ClipDataset, build_clip_dataset, find_sequences
from latentcodec.data.crops import SampleKey
from latentcodec.data.video import open_video_writer
from latentcodec.errors import ConfigError


def moving_sequence(frames: int, height: int, width: int) -> np.ndarray:
    """Frame t is a horizontal ramp shifted by 3t pixels plus a per-frame level: frames are distinct."""
    x = np.arange(width + 3 * frames)
    rows = []
    for t in range(frames):
        ramp = (x[3 * t : 3 * t + width] * 255 // (width + 3 * frames)).astype(np.uint8)
        frame = np.broadcast_to(ramp[None, :, None], (height, width, 3)).copy()
        frame[..., 1] = (t * 20) % 256
        rows.append(frame)
    return np.stack(rows)


def test_real_clips_are_consecutive_frames_under_one_crop():
    sequence = moving_sequence(7, 40, 56)
    dataset = ClipDataset([sequence], [], clip_length=3, crop_size=32)
    assert len(dataset) == 1
    for seed in range(12):
        clip = dataset[SampleKey(0, seed)]
        assert clip.shape == (3, 3, 32, 32) and clip.dtype == torch.float32
        as_u8 = (clip * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        greens = as_u8[:, 0, 0, 1].astype(int)
        steps = np.diff(greens)
        assert np.all(steps == 20) or np.all(steps == -20)  # consecutive frames, maybe reversed
        start = min(greens) // 20
        for offset in range(3):  # every frame is the same window of its source frame (maybe mirrored)
            source = sequence[start + offset]
            target = as_u8[offset if steps[0] > 0 else 2 - offset]
            found = any(np.array_equal(source[top : top + 32, left : left + 32][:, ::flip], target)
                        for top in range(9) for left in range(25) for flip in (1, -1))
            assert found
        assert torch.equal(clip, dataset[SampleKey(0, seed)])  # a pure function of the key


def test_synthetic_clips_pan_across_a_still(tmp_path):
    rng = np.random.default_rng(0)
    still = Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).resize((240, 180), Image.BICUBIC)
    still.save(tmp_path / "still.png")
    dataset = ClipDataset([], [tmp_path / "still.png"], clip_length=4, crop_size=64, max_motion=4.0)
    clips = [dataset[SampleKey(0, seed)] for seed in range(6)]
    assert all(c.shape == (4, 3, 64, 64) for c in clips)
    differences = [float((c[1:] - c[:-1]).abs().mean()) for c in clips]
    assert max(differences) > 0.01  # the window moves
    assert torch.equal(clips[0], dataset[SampleKey(0, 0)])
    assert not torch.equal(clips[0], clips[1])


def test_real_share_sets_the_mix_and_sources_are_found(tmp_path):
    frames_dir = tmp_path / "videos" / "seq"
    frames_dir.mkdir(parents=True)
    for t, frame in enumerate(moving_sequence(5, 32, 48)):
        Image.fromarray(frame).save(frames_dir / f"im{t + 1}.png")
    for name, count in (("clip.y4m", 4), ("short.y4m", 2)):
        with open_video_writer(tmp_path / "videos" / name, 48, 32) as writer:
            for frame in moving_sequence(count, 32, 48):
                writer.write(frame)
    sequences = find_sequences([tmp_path / "videos"], clip_length=3)
    assert sorted(len(s) for s in sequences) == [4, 5]  # the 2-frame clip is too short
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        Image.fromarray(moving_sequence(1, 70, 70)[0]).save(photos / f"p{i}.png")
    dataset = build_clip_dataset([str(tmp_path / "videos")], [str(photos)], 3, 32, 0.25, 2.0, 0.01)
    assert dataset.real_items == 2 and len(dataset) == 8
    with pytest.raises(ConfigError):
        ClipDataset([], [], 3, 32)
    with pytest.raises(ConfigError):
        find_sequences([tmp_path / "missing"], 3)

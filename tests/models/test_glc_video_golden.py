"""A golden GLC-video sequence pins the portable format: its 8 decoded latents are pinned by SHA-256,
which the integer path makes identical on every machine, and its frames by pixels within +-1.

Tiny preset with the reference's per-key weight rules (independent of torch's RNG), a closed-form
moving pattern. Regenerate deliberately with
    python -m pytest tests/models/test_glc_video_golden.py --rewrite-golden
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentcodec.evaluation.portability import decode_fingerprint
from latentcodec.models.glc_video import GLCVideo, GLCVideoConfig, GOPConfig

GOLDEN = Path(__file__).parent / "golden"
RATE = 30
FRAMES = 8


@pytest.fixture(scope="module")
def tiny_video(make_weights) -> GLCVideo:
    model = GLCVideo(GLCVideoConfig.tiny())
    state = {k: torch.from_numpy(make_weights.make_tensor(k, tuple(v.shape))) for k, v in model.state_dict().items()}
    model.load_state_dict_strict(state, source="deterministic")
    return model.eval()


def golden_clip() -> torch.Tensor:
    yy, xx = np.mgrid[0:64, 0:96].astype(np.float64)
    frames = []
    for t in range(FRAMES):
        r = 0.5 + 0.4 * np.sin((xx + 2 * t) / 9.0) * np.cos(yy / 13.0)
        g = 0.5 + 0.35 * np.cos((xx + yy - 3 * t) / 17.0)
        b = ((xx * 2.5 + yy + 4 * t) % 256) / 255.0
        frames.append(np.stack([r, g, b]))
    return torch.from_numpy(np.round(np.stack(frames) * 255) / 255).float()


def test_portable_golden_sequence_decodes_to_the_pinned_latents(tiny_video, request):
    data_path, pin_path = GOLDEN / "glc_video_tiny_q30.lcv", GOLDEN / "glc_video_tiny_q30.json"
    pixels_path = GOLDEN / "glc_video_tiny_q30_decoded.png"
    if request.config.getoption("--rewrite-golden"):
        data = tiny_video.set_portable(True).compress_frames(list(golden_clip().unbind(0)), RATE,
                                                             gop=GOPConfig(intra_period=96, reset_interval=4))
        data_path.write_bytes(data)
        fingerprint = decode_fingerprint(data, tiny_video)
        pin_path.write_text(json.dumps({"latent_sha256": list(fingerprint.latent_hashes)}, indent=2) + "\n")
        Image.fromarray(np.concatenate(list(fingerprint.pixels), axis=0)).save(pixels_path)  # frames stacked
    pinned = json.loads(pin_path.read_text())
    fingerprint = decode_fingerprint(data_path.read_bytes(), tiny_video)
    assert list(fingerprint.latent_hashes) == pinned["latent_sha256"]
    assert len(set(pinned["latent_sha256"])) == FRAMES  # every frame decodes to its own latent
    stored = np.asarray(Image.open(pixels_path)).astype(np.int16).reshape(fingerprint.pixels.shape)
    assert np.abs(fingerprint.pixels.astype(np.int16) - stored).max() <= 1

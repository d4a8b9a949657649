"""save_pretrained(dtype=float16): half the bytes, loaded back into float32 exactly as stored."""

import torch

from latentcodec.models.glc_image import GLCImage, GLCImageConfig


def test_float16_storage_round_trips_as_stored(tmp_path):
    torch.manual_seed(0)
    model = GLCImage(GLCImageConfig.tiny())
    full = model.save_pretrained(tmp_path / "f32")
    half = model.save_pretrained(tmp_path / "f16", dtype=torch.float16)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    loaded = GLCImage.from_pretrained(half)
    for name, value in model.state_dict().items():
        if name.startswith(GLCImage.optional_prefixes):
            continue
        restored = loaded.state_dict()[name]
        assert restored.dtype == value.dtype
        if value.is_floating_point():
            assert torch.equal(restored, value.to(torch.float16).to(value.dtype)), name
        else:
            assert torch.equal(restored, value), name

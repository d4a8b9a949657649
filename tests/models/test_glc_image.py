"""GLC-image end to end on the tiny preset: real files, exact decoding, training forward."""

from __future__ import annotations

import pytest
import torch

from latentcodec.bitstream import read_image_file
from latentcodec.errors import BitstreamError, WeightsError
from latentcodec.models.glc_image import GLCImage, GLCImageConfig


def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=generator), size=(height, width),
                                             mode="bilinear", align_corners=False)
    return (smooth + 0.05 * torch.rand(1, 3, height, width, generator=generator)).clamp(0, 1)


@pytest.mark.parametrize("size", [(16, 16), (37, 53), (96, 64), (64, 1100)])
def test_file_decodes_to_exactly_the_encoder_latent(tiny_glc, size):
    x = image(*size)
    for rate in (0, 3):
        data, encoder_latent = tiny_glc.compress_with_latent(x, rate)
        header, decoder_latent = tiny_glc.decode_latent(data)
        assert (header.height, header.width, header.rate_index) == (*size, rate)
        assert torch.equal(encoder_latent, decoder_latent)
        assert tiny_glc.decompress(data).shape == (1, 3, *size)


def test_file_size_tracks_the_estimate(tiny_glc):
    x = image(128, 192)
    data = tiny_glc.compress(x, 0)
    estimate_bytes = tiny_glc.estimate_bits(x, 0) / 8
    # The coder's scale table floors sigma at 0.11 where the estimator clamps at 1e-5, so the
    # file can be somewhat larger than the estimate, but never wildly off.
    assert 0.5 * estimate_bytes < len(data) < 2.0 * estimate_bytes + 16


def test_file_layout_and_z_section(tiny_glc):
    x = image(100, 150)
    data = tiny_glc.compress(x, 2)
    parsed = read_image_file(data, tiny_glc.layout, expected_model_id=tiny_glc.model_id)
    assert len(parsed.sections[0]) == (2 * 3 * tiny_glc.config.z_index_bits + 7) // 8


def test_corrupt_and_foreign_files_are_rejected(tiny_glc):
    data = tiny_glc.compress(image(64, 64), 1)
    with pytest.raises(BitstreamError):
        tiny_glc.decompress(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    with pytest.raises(BitstreamError):
        tiny_glc.decompress(bytes(flipped))
    with pytest.raises(BitstreamError):
        tiny_glc.decompress(b"not a latentcodec file at all")
    with pytest.raises(BitstreamError):
        tiny_glc.decompress(b"")


def test_forward_is_differentiable_where_training_needs_it():
    torch.manual_seed(0)
    model = GLCImage(GLCImageConfig.tiny(), with_training_modules=True).train()
    x = torch.rand(2, 3, 64, 64)
    out = model(x, torch.tensor([0, 3]))
    assert out.x_hat.shape == (2, 3, 64, 64)
    assert out.y_bits.shape == out.latent.shape and (out.y_bits >= 0).all()
    assert out.code_logits.shape == (2, 16, model.config.vqgan.codebook_size)
    loss = (out.y_bits.sum() / (2 * 64 * 64) + (out.latent_hat - out.latent.detach()).pow(2).mean()
            + out.vq_loss + torch.nn.functional.cross_entropy(out.code_logits.flatten(0, 1), out.code_targets.flatten())
            + out.x_hat.abs().mean())
    loss.backward()
    for name in ("enc.enc_1.0.block.0.conv2.weight", "hyper_enc.0.block.0.conv2.weight", "q_enc", "q_dec",
                 "y_spatial_prior.0.block.1.conv_out.weight", "y_spatial_prior_adaptor_3.block.0.conv2.weight",
                 "z_vq.embedding.weight", "code_pred_loss.feat_emb.weight", "vqgan.generator.blocks.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_save_and_load_pretrained_reproduces_files(tiny_glc, tmp_path):
    tiny_glc.save_pretrained(tmp_path / "weights")
    loaded = GLCImage.from_pretrained(tmp_path / "weights")
    x = image(80, 48)
    assert loaded.compress(x, 1) == tiny_glc.compress(x, 1)


def test_wrong_weights_are_rejected(tiny_glc, tmp_path):
    tiny_glc.save_pretrained(tmp_path / "weights")
    config = (tmp_path / "weights" / "config.json").read_text()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(config.replace('"glc-image"', '"dlf"', 1))
    (tmp_path / "other" / "model.safetensors").write_bytes((tmp_path / "weights" / "model.safetensors").read_bytes())
    with pytest.raises(WeightsError, match="dlf"):
        GLCImage.from_pretrained(tmp_path / "other")
    bigger = GLCImage(GLCImageConfig.official())
    with pytest.raises(WeightsError):
        bigger.load_state_dict_strict(tiny_glc.state_dict(), source="tiny weights")

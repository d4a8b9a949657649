"""DLF end to end on the tiny preset: training forward, real files on both arithmetic paths,
persistence, and bad input."""

from __future__ import annotations

import pytest
import torch

from latentcodec.bitstream.container import read_image_file, read_image_header
from latentcodec.errors import BitstreamError, WeightsError
from latentcodec.models.dlf import DLF, DLFConfig, resample


def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, height // 8 + 1, width // 8 + 1, generator=generator)
    return torch.nn.functional.interpolate(base, size=(height, width), mode="bilinear", align_corners=False)


def test_training_forward_has_gradients_everywhere_that_matters():
    torch.manual_seed(1)
    model = DLF(DLFConfig.tiny(), with_training_modules=True).train()
    out = model(image(64, 128), rate_index=1)
    assert out.x_hat.shape == (1, 3, 64, 128)
    assert out.logits.shape == (1, 16, 4, 8)
    loss = out.x_hat.abs().mean() + out.detail_bits.sum() * 1e-3 + out.vq_loss
    loss.backward()
    for name in ("hybrid_codec.encoder.patch_embed.weight", "hybrid_codec.quantize_feat.enc_q",
                 "hybrid_codec.quantize_feat.factorized_prior_vec", "prior_fusion.ffn.3.weight",
                 "vqgan.decoder.conv_out.weight", "hybrid_codec.quantize.embedding.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # The feedback into the TiTok stream starts at exactly zero (ControlNet-style).
    assert model.hybrid_codec.encoder.inter_blocks["0"].zero_add.weight.abs().sum() == 0
    # 64x128 pixels = two 64-pixel windows of 8 tokens at log2(64) = 6 bits.
    assert out.semantic_bits.item() == 2 * 8 * 6


@pytest.mark.parametrize("with_prior", [True, False], ids=["token-prior", "fixed-length"])
@pytest.mark.parametrize("portable", [True, False])
def test_files_round_trip_and_decode_what_the_encoder_decided(tiny_dlf, portable, with_prior):
    tiny_dlf.set_portable(portable)
    prior = tiny_dlf.token_prior
    if not with_prior:
        tiny_dlf.attach_token_prior(None)
    try:
        x = image(70, 100)
        data = tiny_dlf.compress(x, rate_index=1)
        header, _ = read_image_header(data)
        assert (header.height, header.width, header.rate_index, header.portable) == (70, 100, 1, portable)
        decoded = tiny_dlf.decompress(data)
        assert decoded.shape == (1, 3, 70, 100)
        assert 0.0 <= decoded.min() and decoded.max() <= 1.0
        # The decoder's detail symbols are the encoder's: decoding twice gives the same picture, and the
        # picture equals the synthesis from the encoder-side latent.
        assert torch.equal(decoded, tiny_dlf.decompress(data))
        with torch.inference_mode():
            coded = tiny_dlf.fit_to_windows(x)  # 70x100 is coded at 64x128 (whole 64-pixel windows)
            assert coded.shape[-2:] == (64, 128)
            analysis = tiny_dlf.analyse(tiny_dlf.pad(coded), 1, portable=portable,
                                        encoder=_NullEncoder() if portable else None)
            pixels = tiny_dlf.synthesise(analysis.codes, analysis.steps.y_hat, 1).x_hat
        expected = resample((pixels.clamp(-1, 1) + 1) / 2, (70, 100))
        assert torch.allclose(decoded, expected, atol=1e-6)
        coded = int((analysis.steps.scales != 0).sum())
        assert 0 < coded < analysis.steps.scales.numel(), "the skip rule should leave some, not all, symbols"
        # One section, the 6-byte compact header (CRC included) around it.
        assert header.compact and len(read_image_file(data, tiny_dlf.layout).sections[0]) == len(data) - 6
    finally:
        tiny_dlf.set_portable(True)
        tiny_dlf.attach_token_prior(prior)


def test_a_prior_worse_than_fixed_length_falls_back_to_it(tiny_dlf):
    """A prior sure of the wrong token would cost far more than log2 K per token; the encoder then
    writes the one-bit choice and fixed length, and the file still decodes."""
    import copy

    prior = tiny_dlf.token_prior
    wrong = copy.deepcopy(prior)
    with torch.no_grad():
        wrong.head.weight.zero_()
        wrong.head.bias.zero_()
        wrong.head.bias[0] = 30.0  # certain of token 0 everywhere
    x = image(64, 128, seed=3)
    try:
        tiny_dlf.attach_token_prior(None)
        plain = tiny_dlf.compress(x)
        (plain_latent, plain_tokens), plain_picture = tiny_dlf.decoded_fingerprint(plain)
        assert int((plain_tokens != 0).sum()) > 0
        tiny_dlf.attach_token_prior(wrong)
        data = tiny_dlf.compress(x)
        streams = dict(tiny_dlf.stream_bits(data))
        fixed = tiny_dlf.semantic_bits_per_image(64, 128)
        assert streams["semantic"] == 1 + fixed
        assert len(data) <= len(plain) + 1
        (latent, tokens), picture = tiny_dlf.decoded_fingerprint(data)
        assert torch.equal(tokens, plain_tokens) and torch.equal(latent, plain_latent)
        assert torch.equal(picture, plain_picture)
    finally:
        tiny_dlf.attach_token_prior(prior)


class _NullEncoder:
    def encode_gaussian(self, symbols, scale_index):
        pass


def test_rates_change_the_detail_stream(tiny_dlf):
    x = image(64, 64, seed=3)
    with torch.no_grad():
        tiny_dlf.hybrid_codec.quantize_feat.enc_q[1].mul_(4.0)
    try:
        sizes = [len(tiny_dlf.compress(x, rate_index=r)) for r in range(2)]
    finally:
        with torch.no_grad():
            tiny_dlf.hybrid_codec.quantize_feat.enc_q[1].div_(4.0)
    assert sizes[1] > sizes[0]
    with pytest.raises(ValueError, match="rate index"):
        tiny_dlf.compress(x, rate_index=2)


def test_save_and_load_pretrained(tiny_dlf, tmp_path):
    tiny_dlf.save_pretrained(tmp_path / "dlf")
    loaded = DLF.from_pretrained(tmp_path / "dlf")
    x = image(64, 64, seed=5)
    data = tiny_dlf.compress(x, rate_index=0)
    assert loaded.compress(x, rate_index=0) == data
    assert torch.equal(loaded.decompress(data), tiny_dlf.decompress(data))
    (tmp_path / "dlf" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError):
        DLF.from_pretrained(tmp_path / "dlf")


def test_corrupt_and_truncated_files_are_clean_errors(tiny_dlf):
    data = tiny_dlf.compress(image(64, 64, seed=7), rate_index=0)
    with pytest.raises(BitstreamError):
        tiny_dlf.decompress(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    with pytest.raises(BitstreamError):
        tiny_dlf.decompress(bytes(flipped))


def test_official_loader_rejects_another_models_checkpoint():
    with pytest.raises(WeightsError, match="not a DLF checkpoint"):
        DLF.from_official_state_dict({"hyper_enc.0.weight": torch.zeros(1)}, "glc.pth")


@pytest.mark.parametrize("side", [1, 31, 32, 63, 64, 95, 96, 130, 700, 1365])
def test_coded_size_never_needs_more_windows_than_padding(tiny_dlf, side):
    window = tiny_dlf.config.window_pixels
    coded, _ = tiny_dlf.coded_size(side, window)
    padded, _ = tiny_dlf.padded_size(side, window)
    assert coded % window == 0 and window <= coded <= padded
    assert abs(coded - side) <= window // 2 or coded == window


def test_continuous_rates_and_target_sizes(tiny_dlf, tmp_path):
    import latentcodec
    from latentcodec.bitstream.container import read_image_header

    # Rate 1 = rate 0 with a 4x larger analysis gain, so sizes grow along the interpolated rates.
    bottleneck = tiny_dlf.hybrid_codec.quantize_feat
    saved = {name: getattr(bottleneck, name).detach().clone() for name in ("enc_q", "factorized_prior_vec")}
    with torch.no_grad():
        bottleneck.enc_q[1] = bottleneck.enc_q[0] * 4.0
        bottleneck.factorized_prior_vec[1] = bottleneck.factorized_prior_vec[0]
    try:
        tiny_dlf.save_pretrained(tmp_path / "w")
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                getattr(bottleneck, name).copy_(value)
    codec = latentcodec.load("dlf", weights=str(tmp_path / "w"))
    from PIL import Image

    photo = Image.fromarray((image(100, 130, seed=9)[0].permute(1, 2, 0) * 255).byte().numpy())
    sizes = {}
    for quality in (0, 0.5, 1):
        data = codec.at_quality(quality).compress(photo)
        header, _ = read_image_header(data)
        assert header.rate == quality  # the container records the exact grid rate
        assert codec.decompress(data).size == photo.size
        sizes[quality] = len(data)
    assert sizes[0] <= sizes[0.5] <= sizes[1] and sizes[0] < sizes[1]
    budget = (sizes[0] + sizes[1]) // 2
    result = codec.compress_to_target(photo, target_bytes=budget)
    assert result.size <= budget and result.encodes >= 1
    assert codec.decompress(result.data).size == photo.size


def test_codebook_distance_head_weights_the_codewords_near_the_predicted_point():
    from latentcodec.models.dlf_networks import soft_codebook_latent

    torch.manual_seed(3)
    merge = DLF(DLFConfig.tiny()).prior_fusion
    codebook = torch.randn(16, 8) * torch.tensor([3.0] + [0.2] * 7)  # one wide channel, as GLC's colour ones
    tau = merge.init_head_from_codebook(codebook)
    head = merge.ffn[-1]
    scale = 1.2 * codebook.abs().amax(dim=0)
    hidden = torch.zeros(16, head.in_features)
    hidden[:, :8] = codebook / scale  # tanh units that place u exactly on each codeword
    logits = head(hidden)
    assert torch.equal(logits.argmax(dim=1), torch.arange(16))  # the nearest codeword leads
    soft = soft_codebook_latent(logits.T[None, :, :, None], codebook)[0, :, :, 0].T
    flat = codebook.mean(dim=0, keepdim=True)
    assert ((soft - codebook) ** 2).mean() < 0.5 * ((flat - codebook) ** 2).mean()
    assert tau > 0
    with pytest.raises(ValueError, match="cannot hold"):
        merge.init_head_from_codebook(torch.randn(32, 8))  # a head of 16 logits for 32 codewords

"""The VQGAN's low-pass path: block means into latent channels 0-2, their bilinear upsampling out."""

import torch
import torch.nn.functional as F

from latentcodec.models.glc_image import GLCImage, GLCImageConfig
from latentcodec.tokenizers.vqgan import LOWPASS_GAIN, VQGAN, VQGANConfig

CONFIG = VQGANConfig(base_channels=16, channel_multipliers=(1, 2, 2), encoder_res_blocks=1, generator_res_blocks=1,
                     latent_channels=8, codebook_size=32, norm_groups=4, lowpass_path=True)


def test_initial_latent_carries_the_block_means_and_the_output_is_their_upsampling():
    torch.manual_seed(0)
    vqgan = VQGAN(CONFIG).eval()
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        latent = vqgan.encoder(x)
        block_means = F.avg_pool2d(x, 4)
        assert torch.allclose(latent[:, :3], LOWPASS_GAIN * block_means, atol=1e-6)
        # the learned channels are untouched by the path
        assert latent[:, 3:].abs().max() > 0
        x_hat = vqgan.generator(latent)
    expected = F.interpolate(block_means, scale_factor=4.0, mode="bilinear", align_corners=False)
    assert torch.allclose(x_hat, expected, atol=1e-5)


def test_path_learns_both_ways():
    """Both the learned nets and the path's 1x1 maps receive gradients from the first step."""
    torch.manual_seed(0)
    vqgan = VQGAN(CONFIG)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    (vqgan.generator(vqgan.encoder(x)) - x).square().mean().backward()
    assert vqgan.encoder.lowpass.weight.grad.abs().sum() > 0
    assert vqgan.generator.lowpass.weight.grad.abs().sum() > 0
    assert vqgan.generator.last_layer.weight.grad.abs().sum() > 0


def test_official_layout_has_no_lowpass_parameters():
    names = VQGAN(VQGANConfig(base_channels=16, channel_multipliers=(1, 2), latent_channels=8, codebook_size=32,
                              norm_groups=4)).state_dict()
    assert not any("lowpass" in name for name in names)


def test_small_lowpass_preset_round_trips_through_save_pretrained(tmp_path):
    config = GLCImageConfig.small_lowpass()
    assert config.vqgan.lowpass_path and not GLCImageConfig.small().vqgan.lowpass_path
    model = GLCImage(config)
    model.save_pretrained(tmp_path)
    loaded = GLCImage.from_pretrained(tmp_path)
    assert loaded.config == config
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name

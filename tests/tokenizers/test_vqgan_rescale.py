"""rescale_latent changes the latent's scale, not what the autoencoder computes."""

import pytest
import torch

from latentcodec.nn.vq import VectorQuantizer
from latentcodec.tokenizers.vqgan import VQGAN, VQGANConfig, rescale_latent


@pytest.mark.parametrize("lowpass_path", [False, True])
def test_rescaled_latent_is_smaller_and_the_reconstruction_and_indices_are_unchanged(lowpass_path):
    torch.manual_seed(0)
    config = VQGANConfig(base_channels=16, channel_multipliers=(1, 2), encoder_res_blocks=1, generator_res_blocks=1,
                         latent_channels=8, codebook_size=32, norm_groups=4, lowpass_path=lowpass_path)
    vqgan = VQGAN(config, with_codebook=True).eval()
    if lowpass_path:  # a trained state, not the identity initialisation
        with torch.no_grad():
            for parameter in list(vqgan.encoder.lowpass.parameters()) + list(vqgan.generator.parameters()):
                parameter.add_(0.05 * torch.randn_like(parameter))
    assert isinstance(vqgan.quantize, VectorQuantizer)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        latent = vqgan.encoder(x)
        vqgan.quantize.embedding.weight.copy_(latent.permute(0, 2, 3, 1).reshape(-1, 8)[:32] * 1.1)
        before, indices = vqgan.generator(latent), vqgan.quantize.indices(latent)
        rescale_latent(vqgan, 4.0)
        scaled = vqgan.encoder(x)
        after = vqgan.generator(scaled)
    assert torch.allclose(scaled * 4.0, latent, rtol=1e-5, atol=1e-6)
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-5)
    assert torch.equal(vqgan.quantize.indices(scaled), indices)

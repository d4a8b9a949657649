"""GLC-image at continuous rates and scales: real files on the tiny preset, and the default on Kodak."""

from __future__ import annotations

import pytest
import torch

from latentcodec.bitstream import FileKind, parse_lead_byte, read_image_file
from latentcodec.data.images import pil_to_tensor
from latentcodec.ratecontrol import RATE_FRACTION_STEPS, rate_from_code, search_rate



def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth random picture with a little noise (as in test_glc_image.py)."""
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=generator), size=(height, width),
                                             mode="bilinear", align_corners=False)
    return (smooth + 0.05 * torch.rand(1, 3, height, width, generator=generator)).clamp(0, 1)


def test_whole_rates_give_the_same_bytes_as_ints_and_a_kind0_header(tiny_glc):
    x = image(64, 96)
    data = tiny_glc.compress(x, 2)
    assert tiny_glc.compress(x, 2.0) == data
    assert parse_lead_byte(data) is FileKind.IMAGE and read_image_file(data).header.rate == 2
    assert torch.equal(tiny_glc._rate_gain(tiny_glc.q_enc, 2), tiny_glc.q_enc[2:3])


@pytest.mark.parametrize("portable", [True, False])
def test_fractional_rate_files_record_the_rate_and_decode_exactly(tiny_glc, portable):
    tiny_glc.set_portable(portable)
    try:
        x = image(70, 100, seed=1)
        data, encoder_latent = tiny_glc.compress_with_latent(x, 1.37109375)
        header, decoder_latent = tiny_glc.decode_latent(data)
        assert parse_lead_byte(data) is FileKind.IMAGE_EXTENDED
        assert (header.rate, header.rate_index, header.rate_fraction, header.portable) == (1.37109375, 1, 95, portable)
        assert torch.equal(encoder_latent, decoder_latent)
        assert tiny_glc.decompress(data).shape == (1, 3, 70, 100)
    finally:
        tiny_glc.set_portable(True)


def test_interpolated_gains_feed_the_integer_path_as_float64_then_float32(tiny_glc):
    gain = tiny_glc._rate_gain(tiny_glc.q_dec, 0.5)
    low, high = tiny_glc.q_dec[0].detach().double(), tiny_glc.q_dec[1].detach().double()
    assert gain.dtype == torch.float32 and torch.equal(gain[0], (low + (high - low) * 0.5).float())


def test_rates_off_the_grid_or_out_of_range_are_refused(tiny_glc):
    x = image(16, 16)
    for bad in (1.37, 3.5, -1, 4):
        with pytest.raises(ValueError):
            tiny_glc.compress(x, bad)


def test_downscaled_files_decode_to_the_original_size(tiny_glc):
    x = image(100, 150, seed=2)
    full = tiny_glc.compress(x, 1)
    data = tiny_glc.compress(x, 1, scale=32)
    header, latent = tiny_glc.decode_latent(data)
    assert (header.height, header.width, header.scale) == (100, 150, 32)
    assert (header.coded_height, header.coded_width) == (50, 75)
    assert torch.equal(latent, tiny_glc.encode(x, 1, scale=32).latent_hat)
    assert tiny_glc.decompress(data).shape == (1, 3, 100, 150)
    assert len(data) < len(full)


def test_rate_trials_reuse_the_latent_and_write_the_same_file_as_compress(tiny_glc):
    x = image(64, 128, seed=3)
    trials = tiny_glc.rate_trials(x)
    assert (trials.min_code, trials.max_code) == (0, 3 * RATE_FRACTION_STEPS)
    for code in (0, 300, 768):
        assert trials.encode(code) == tiny_glc.compress(x, rate_from_code(code))
    scaled = tiny_glc.rate_trials(x, scale=40)
    assert scaled.encode(100) == tiny_glc.compress(x, rate_from_code(100), scale=40)


def test_search_on_a_real_model_stays_within_the_target(tiny_glc):
    x = image(128, 192, seed=4)
    low, high = len(tiny_glc.compress(x, 0)), len(tiny_glc.compress(x, 3))
    target = (low + high) // 2
    result = search_rate(tiny_glc.rate_trials(x), target)
    assert result.size <= target and result.encodes >= 1
    assert tiny_glc.decompress(result.data).shape == (1, 3, 128, 192)


def test_default_model_bpp_rises_with_quality_on_kodak(kodak_dir):
    """bpp against quality on a 1/8 grid, on two Kodak crops with the shipped default: never
    falls by more than 1 % of the file (entropy-coding noise), and rises overall."""
    import latentcodec
    from PIL import Image

    model = latentcodec.load("glc-image").model
    for name in ("kodim05", "kodim23"):
        picture = Image.open(kodak_dir / f"{name}.png").convert("RGB")
        x = pil_to_tensor(picture)[..., 128:384, 256:512]
        trials = model.rate_trials(x)
        sizes = [len(trials.encode(code)) for code in range(0, trials.max_code + 1, 96)]
        for previous, current in zip(sizes, sizes[1:]):
            assert current >= previous * 0.99, sizes
        assert sizes[-1] > 1.3 * sizes[0], sizes

"""GLC-image's side of rate control (latentcodec.ratecontrol): trial encodes of one image.

The VQGAN encoder runs at full resolution and is most of an encode's cost, but its output does not
depend on the rate (the per-rate gain only enters at ``enc``), so it is computed once per image and
scale and every estimate and trial encode starts from it.
"""

from __future__ import annotations

import torch

from latentcodec.bitstream import RATE_FRACTION_STEPS, coded_side
from latentcodec.ratecontrol import rate_from_code, resize_image

# The estimate counts the payload; the header and CRC of a Kodak-size file add about 9 bytes.
ESTIMATED_HEADER_BYTES = 9


class GLCImageRateTrials:
    """``RateTrials`` of a GLCImage for one image (1, 3, H, W) in [0, 1] at coding scale ``scale``."""

    def __init__(self, model, x: torch.Tensor, scale: int = 0):
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"rate control expects one RGB image shaped (1, 3, H, W), got {tuple(x.shape)}")
        self.model = model
        self.height, self.width = int(x.shape[-2]), int(x.shape[-1])
        self.scale = scale
        self.coded_height, self.coded_width = coded_side(self.height, scale), coded_side(self.width, scale)
        self.min_code = 0
        self.max_code = (model.num_rates - 1) * RATE_FRACTION_STEPS
        with torch.inference_mode():
            coded = resize_image(x, self.coded_height, self.coded_width)
            self.latent = model.vqgan.encoder(model.pad(coded))

    def estimate_bytes(self, code: int) -> float:
        bits = self.model.estimate_bits_of_latent(self.latent, rate_from_code(code), self.coded_height,
                                                  self.coded_width)
        return bits / 8 + ESTIMATED_HEADER_BYTES

    def encode(self, code: int) -> bytes:
        header = self.model.image_header(self.height, self.width, rate_from_code(code), self.scale)
        return self.model.encode_latent(self.latent, header).data

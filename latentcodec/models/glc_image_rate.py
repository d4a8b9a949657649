"""GLC-image's side of rate control (latentcodec.ratecontrol): trial encodes of one image.

The VQGAN encoder runs at full resolution and is most of an encode's cost, but its output does not
depend on the rate (the per-rate gain only enters at ``enc``), so it is computed once per image and
scale and every estimate and trial encode starts from it.
"""

from __future__ import annotations

import torch

from latentcodec.ratecontrol import ImageRateTrials, rate_from_code

# The estimate counts the payload; the header and CRC of a Kodak-size file add about 9 bytes.
ESTIMATED_HEADER_BYTES = 9


class GLCImageRateTrials(ImageRateTrials):
    """``RateTrials`` of a GLCImage for one image (1, 3, H, W) in [0, 1] at coding scale ``scale``."""

    def prepare(self, coded: torch.Tensor) -> None:
        self.latent = self.model.vqgan.encoder(self.model.pad(coded))

    def estimate_bytes(self, code: int) -> float:
        bits = self.model.estimate_bits_of_latent(self.latent, rate_from_code(code), self.coded_height,
                                                  self.coded_width)
        return bits / 8 + ESTIMATED_HEADER_BYTES

    def encode(self, code: int) -> bytes:
        header = self.model.image_header(self.height, self.width, rate_from_code(code), self.scale)
        return self.model.encode_latent(self.latent, header).data

"""DLF's side of rate control (latentcodec.ratecontrol): trial encodes of one image.

The rate enters DLF only at the detail bottleneck (the per-rate gain ``enc_q`` and the prior
vector), so the tokenizer, the Interactive Transforms and the detail trunk, nearly all of an
encode's cost, run once per image and scale; every estimate and trial encode starts from their output.
"""

from __future__ import annotations

import torch

from latentcodec.bitstream import RATE_FRACTION_STEPS, coded_side
from latentcodec.entropy.estimate import gaussian_residual_bits
from latentcodec.ratecontrol import rate_from_code, resize_image

# The compact header and CRC; the extended header of a fractional rate is 2-3 bytes longer.
ESTIMATED_HEADER_BYTES = 8


class DLFRateTrials:
    """``RateTrials`` of a DLF model for one image (1, 3, H, W) in [0, 1] at coding scale ``scale``."""

    def __init__(self, model, x: torch.Tensor, scale: int = 0):
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"rate control expects one RGB image shaped (1, 3, H, W), got {tuple(x.shape)}")
        self.model = model
        self.height, self.width = int(x.shape[-2]), int(x.shape[-1])
        self.scale = scale
        self.min_code = 0
        self.max_code = (model.num_rates - 1) * RATE_FRACTION_STEPS
        with torch.inference_mode():
            scaled = resize_image(x, coded_side(self.height, scale), coded_side(self.width, scale))
            self.front = model.front_end(model.pad(model.fit_to_windows(scaled)))

    @torch.inference_mode()
    def estimate_bytes(self, code: int) -> float:
        rate = rate_from_code(code)
        analysis = self.model.analyse(None, rate, front=self.front)
        detail = gaussian_residual_bits(analysis.steps.symbols, analysis.steps.scales).sum().item()
        coded = self.model.coded_size(coded_side(self.height, self.scale), coded_side(self.width, self.scale))
        return (detail + self.model.semantic_bits(analysis, *coded)) / 8 + ESTIMATED_HEADER_BYTES

    def encode(self, code: int) -> bytes:
        return self.model.encode_front_end(self.front, self.height, self.width, rate_from_code(code), self.scale).data

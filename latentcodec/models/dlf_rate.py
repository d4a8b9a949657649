"""DLF's side of rate control (latentcodec.ratecontrol): trial encodes of one image.

The rate enters DLF only at the detail bottleneck (the per-rate gain ``enc_q`` and the prior
vector), so the tokenizer, the Interactive Transforms and the detail trunk, nearly all of an
encode's cost, run once per image and scale; every estimate and trial encode starts from their output.
"""

from __future__ import annotations

import torch

from latentcodec.entropy.estimate import gaussian_residual_bits
from latentcodec.ratecontrol import ImageRateTrials, rate_from_code

# The compact header and CRC; the extended header of a fractional rate is 2-3 bytes longer.
ESTIMATED_HEADER_BYTES = 8


class DLFRateTrials(ImageRateTrials):
    """``RateTrials`` of a DLF model for one image (1, 3, H, W) in [0, 1] at coding scale ``scale``."""

    def prepare(self, coded: torch.Tensor) -> None:
        self.front = self.model.image_front_end(coded)

    @torch.inference_mode()
    def estimate_bytes(self, code: int) -> float:
        rate = rate_from_code(code)
        analysis = self.model.analyse(None, rate, front=self.front)
        detail = gaussian_residual_bits(analysis.steps.symbols, analysis.steps.scales).sum().item()
        coded = self.model.coded_size(self.coded_height, self.coded_width)
        semantic = self.model.semantic_bits(analysis.steps, analysis.token_indices, *coded)
        return (detail + semantic) / 8 + ESTIMATED_HEADER_BYTES

    def encode(self, code: int) -> bytes:
        return self.model.encode_front_end(self.front, self.height, self.width, rate_from_code(code), self.scale).data

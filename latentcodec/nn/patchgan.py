"""PatchGAN discriminator (SYSTEMS.md 2.8): 4x4 convs, BatchNorm, LeakyReLU(0.2).

With the defaults (ndf 64, 3 strided layers): 3 -> 64 -> 128 -> 256 (stride 2), then a stride-1
512 conv and a 1-channel patch map. The intermediate activations are returned too, for the
feature-matching loss of the perceptual fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn


@dataclass(frozen=True)
class PatchGANConfig:
    base_channels: int = 64
    layers: int = 3  # strided layers after the first conv
    max_channel_multiplier: int = 8


class DiscriminatorOutput(NamedTuple):
    logits: torch.Tensor  # (B, 1, h, w) patch scores
    features: tuple[torch.Tensor, ...]  # activations after each LeakyReLU


class PatchGANDiscriminator(nn.Module):
    def __init__(self, config: PatchGANConfig = PatchGANConfig()):
        super().__init__()
        ndf = config.base_channels
        stages: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2))]
        multiplier = 1
        for layer in range(1, config.layers + 1):
            previous = multiplier
            multiplier = min(2**layer, config.max_channel_multiplier)
            stride = 2 if layer < config.layers else 1
            stages.append(
                nn.Sequential(
                    nn.Conv2d(ndf * previous, ndf * multiplier, 4, stride=stride, padding=1, bias=False),
                    nn.BatchNorm2d(ndf * multiplier),
                    nn.LeakyReLU(0.2),
                )
            )
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(ndf * multiplier, 1, 4, stride=1, padding=1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # The pix2pix/taming initialisation: N(0, 0.02) convs, N(1, 0.02) BatchNorm gains.
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return DiscriminatorOutput(self.head(x), tuple(features))

"""DCVC-family convolution blocks (SYSTEMS.md 1.1), shared by GLC-image, GLC-video and DLF.

Sub-module names follow the reference implementations so that official checkpoints map 1:1
(e.g. ``block.0.conv1.0.weight``). Every conv has a bias; a residual whose widths differ gets a
1x1 ``adaptor`` on the identity path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.nn import integer
from latentcodec.nn.integer import integer_twin, register_integer_twin


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)


def depthwise3x3(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels)


class DepthConv(nn.Module):
    """1x1 (in->in), LReLU(0.01), depthwise 3x3, 1x1 (in->out); plus identity."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Sequential(conv1x1(in_channels, in_channels), nn.LeakyReLU(0.01))
        self.depth_conv = depthwise3x3(in_channels)
        self.conv2 = conv1x1(in_channels, out_channels)
        self.adaptor = conv1x1(in_channels, out_channels) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.adaptor is None else self.adaptor(x)
        return self.conv2(self.depth_conv(self.conv1(x))) + identity


class DepthConv2(nn.Module):
    """Gated variant: out_conv(a(x) * b(x)) + identity, a = [1x1, LReLU(0.01), dw3x3], b = 1x1."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Sequential(
            conv1x1(in_channels, out_channels), nn.LeakyReLU(0.01), depthwise3x3(out_channels)
        )
        self.conv2 = conv1x1(in_channels, out_channels)
        self.out_conv = conv1x1(out_channels, out_channels)
        self.adaptor = conv1x1(in_channels, out_channels) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.adaptor is None else self.adaptor(x)
        return self.out_conv(self.conv1(x) * self.conv2(x)) + identity


class ConvFFN(nn.Module):
    """1x1 C->4C, split, x1 * LReLU(0.1)(x2), 1x1 2C->C; plus identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv1x1(channels, channels * 4)
        self.conv_out = conv1x1(channels * 2, channels)

    def gate(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return x1 * F.leaky_relu(x2, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.conv(x).chunk(2, 1)
        return self.conv_out(self.gate(x1, x2)) + x


class ConvFFN3(ConvFFN):
    """ConvFFN whose gate is additive: LReLU(0.1)(x1) + LReLU(0.01)(x2)."""

    def gate(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x1, 0.1) + F.leaky_relu(x2, 0.01)


class DepthConvBlock(nn.Module):
    """DCB: DepthConv then ConvFFN (hyper and prior networks)."""

    conv_class: type[nn.Module] = DepthConv
    ffn_class: type[nn.Module] = ConvFFN

    def __init__(self, in_channels: int, out_channels: int | None = None):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.block = nn.Sequential(self.conv_class(in_channels, out_channels), self.ffn_class(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DepthConvBlock2(DepthConvBlock):
    """DCB2: DepthConv2 then ConvFFN (GLC latent transforms)."""

    conv_class = DepthConv2


class DepthConvBlock3(DepthConvBlock):
    """DCB3: DepthConv then ConvFFN3 (GLC-video)."""

    ffn_class = ConvFFN3


class ResidualBlockUpsample(nn.Module):
    """x2 upsampling: LReLU(0.1)(conv3x3(LReLU(0.01)(PS(1x1(x))))) + PS(1x1'(x))."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.subpel_conv = nn.Sequential(conv1x1(in_channels, out_channels * 4), nn.PixelShuffle(2))
        self.conv = conv3x3(out_channels, out_channels)
        self.upsample = nn.Sequential(conv1x1(in_channels, out_channels * 4), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.subpel_conv(x), 0.01)
        out = F.leaky_relu(self.conv(out), 0.1)
        return out + self.upsample(x)


# -- integer twins (latentcodec.nn.integer): the same blocks in exact fixed-point arithmetic -----------
FFN_BAND_ELEMENTS = 2**22  # elements of an integer ConvFFN's widened activation per row band
class IntegerDepthConv(nn.Module):
    def __init__(self, block: DepthConv):
        super().__init__()
        self.conv1 = integer_twin(block.conv1)
        self.depth_conv = integer_twin(block.depth_conv)
        self.conv2 = integer_twin(block.conv2)
        self.adaptor = None if block.adaptor is None else integer_twin(block.adaptor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.adaptor is None else self.adaptor(x)
        return integer.saturate(self.conv2(self.depth_conv(self.conv1(x))) + identity)


class IntegerDepthConv2(nn.Module):
    def __init__(self, block: DepthConv2):
        super().__init__()
        self.conv1 = integer_twin(block.conv1)
        self.conv2 = integer_twin(block.conv2)
        self.out_conv = integer_twin(block.out_conv)
        self.adaptor = None if block.adaptor is None else integer_twin(block.adaptor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.adaptor is None else self.adaptor(x)
        gated = integer.fixed_multiply(self.conv1(x), self.conv2(x))
        return integer.saturate(self.out_conv(gated) + identity)


class IntegerConvFFN(nn.Module):
    def __init__(self, block: ConvFFN):
        super().__init__()
        self.additive = isinstance(block, ConvFFN3)
        self.conv = integer_twin(block.conv)
        self.conv_out = integer_twin(block.conv_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Row bands: the block is pointwise, and exact, so bands give the same integers, while
        # its four-fold widening never exists at full size (at a 12 MP image's latent, 4 x 192
        # float64 channels are 290 MB).
        _, channels, height, width = x.shape
        rows = max(1, FFN_BAND_ELEMENTS // max(1, 4 * channels * width))
        if rows >= height:
            return self._forward(x)
        out = torch.empty_like(x)
        for top in range(0, height, rows):
            out[:, :, top : top + rows] = self._forward(x[:, :, top : top + rows])
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.conv(x).chunk(2, 1)
        if self.additive:
            gated = integer.saturate(integer.leaky_relu(x1, 0.1) + integer.leaky_relu(x2, 0.01))
        else:
            gated = integer.fixed_multiply(x1, integer.leaky_relu(x2, 0.1))
        return integer.saturate(self.conv_out(gated) + x)


class IntegerResidualBlockUpsample(nn.Module):
    def __init__(self, block: ResidualBlockUpsample):
        super().__init__()
        self.subpel_conv = integer_twin(block.subpel_conv)
        self.conv = integer_twin(block.conv)
        self.upsample = integer_twin(block.upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = integer.leaky_relu(self.subpel_conv(x), 0.01)
        out = integer.leaky_relu(self.conv(out), 0.1)
        return integer.saturate(out + self.upsample(x))


register_integer_twin(DepthConv)(IntegerDepthConv)
register_integer_twin(DepthConv2)(IntegerDepthConv2)
register_integer_twin(ConvFFN)(IntegerConvFFN)
register_integer_twin(ResidualBlockUpsample)(IntegerResidualBlockUpsample)
register_integer_twin(DepthConvBlock)(lambda block: integer_twin(block.block))

"""Neural building blocks shared by the codecs."""

from latentcodec.nn.dcvc import (
    ConvFFN,
    ConvFFN3,
    DepthConv,
    DepthConv2,
    DepthConvBlock,
    DepthConvBlock2,
    DepthConvBlock3,
    ResidualBlockUpsample,
)
from latentcodec.nn.vq import VectorQuantizer, VQOutput, nearest_codewords

__all__ = [
    "ConvFFN",
    "ConvFFN3",
    "DepthConv",
    "DepthConv2",
    "DepthConvBlock",
    "DepthConvBlock2",
    "DepthConvBlock3",
    "ResidualBlockUpsample",
    "VectorQuantizer",
    "VQOutput",
    "nearest_codewords",
]

"""Pretrained feature networks for the metrics, written in plain torch (no torchvision).

Module and parameter names follow the published checkpoints exactly, so that they load unchanged:

* :class:`AlexNetFeatures` / :class:`VGG16Features`: ``features.<index>.weight|bias`` as in
  torchvision's ``alexnet`` / ``vgg16`` (IMAGENET1K_V1) state dicts; their ``classifier.*`` entries
  are not needed and are ignored when loading.
* :class:`FidInceptionV3`: the InceptionV3 of the TensorFlow 2015-12-05 graph that FID is defined
  with, in the layout of ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid, torch-fidelity,
  torchmetrics): ``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ...,
  ``fc.weight`` (1008 classes; only the 2048-d pool features are used).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.errors import WeightsError

# torchvision's VGG16 ("configuration D"): output channels of each 3x3 conv, "M" = 2x2 max pool.
_VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


class _TappedSequential(nn.Module):
    """A ``features`` Sequential whose intermediate outputs can be read at chosen indices."""

    features: nn.Sequential

    def taps(
        self,
        x: torch.Tensor,
        indices: Sequence[int],
        replacements: Mapping[int, nn.Module] | None = None,
    ) -> list[torch.Tensor]:
        """Outputs after each layer in ``indices``; ``replacements`` swaps layers (DISTS's L2 pooling)."""
        wanted = set(indices)
        outputs: list[torch.Tensor] = []
        for index in range(max(indices) + 1):
            layer = replacements.get(index, self.features[index]) if replacements else self.features[index]
            x = layer(x)
            if index in wanted:
                outputs.append(x)
        return outputs


class AlexNetFeatures(_TappedSequential):
    """torchvision's AlexNet convolutional trunk (``features.0`` ... ``features.12``)."""

    # Indices of the five ReLUs that LPIPS reads (relu1 ... relu5) and their channel counts.
    LPIPS_TAPS = (1, 4, 7, 9, 11)
    LPIPS_CHANNELS = (64, 192, 384, 256, 256)

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )


class VGG16Features(_TappedSequential):
    """torchvision's VGG16 convolutional trunk (``features.0`` ... ``features.30``)."""

    # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: read by LPIPS-VGG and DISTS.
    STAGE_TAPS = (3, 8, 15, 22, 29)
    STAGE_CHANNELS = (64, 128, 256, 512, 512)
    # The max pools in front of stages 2-5, which DISTS replaces by L2 pooling.
    POOL_INDICES = (4, 9, 16, 23)

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for entry in _VGG16_LAYOUT:
            if entry == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, int(entry), kernel_size=3, padding=1), nn.ReLU()]
                in_channels = int(entry)
        self.features = nn.Sequential(*layers)


def load_checkpoint(path: Path) -> Mapping[str, torch.Tensor]:
    """A tensor mapping from a torch checkpoint; unreadable files are a WeightsError."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"missing weights file {path}") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WeightsError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path}: expected a mapping of names to tensors")
    return loaded


def load_state_exactly(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: Path | str, prefix: str = ""
) -> None:
    """Load the entries of ``state`` under ``prefix`` into ``module``: every key and shape must match.

    Entries outside ``prefix`` (a classifier head) and BatchNorm ``num_batches_tracked`` counters
    are ignored; anything missing, extra or misshapen is a WeightsError naming ``source``.
    """
    selected = {
        key[len(prefix):]: value
        for key, value in state.items()
        if key.startswith(prefix) and not key.endswith("num_batches_tracked")
    }
    expected = module.state_dict()
    missing = sorted(set(expected) - set(selected))
    unexpected = sorted(set(selected) - set(expected))
    if missing or unexpected:
        keys = missing or unexpected
        listed = ", ".join(prefix + key for key in keys[:3]) + (", ..." if len(keys) > 3 else "")
        raise WeightsError(f"{source}: not the expected layout ({'missing' if missing else 'unexpected'} {listed})")
    for key, value in selected.items():
        if value.shape != expected[key].shape:
            raise WeightsError(
                f"{source}: {prefix}{key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
            )
    module.load_state_dict(selected, strict=True)


def load_torchvision_features(module: _TappedSequential, path: Path) -> None:
    """Load a torchvision AlexNet/VGG16 checkpoint (full or features-only) into ``module``."""
    load_state_exactly(module.features, load_checkpoint(path), path, prefix="features.")


class L2Pooling(nn.Module):
    """DISTS's anti-aliased pooling: sqrt(Hann-window blur of x^2), stride 2.

    The 3x3 window is the interior of a 5-tap Hann window, (0.5, 1, 0.5) outer itself, normalised.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor(np.hanning(5)[1:-1], dtype=torch.float32)
        window = taps[:, None] * taps[None, :]
        window = window / window.sum()
        self.register_buffer("window", window.expand(channels, 1, 3, 3).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = F.conv2d(x * x, self.window, stride=2, padding=1, groups=x.shape[1])
        return (blurred + 1e-12).sqrt()


# ----------------------------------------------------------------------------- FID InceptionV3


class FrozenBatchNorm2d(nn.Module):
    """Inference-only batch norm with the state-dict names of nn.BatchNorm2d minus its step counter."""

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class ConvBN(nn.Module):
    """Bias-free conv, batch norm (eps 1e-3 as in TensorFlow), ReLU: Inception's ``BasicConv2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = FrozenBatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_average_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's 3x3 SAME average pool divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b/5c/5d): 1x1, 5x5, double 3x3 and pooled 1x1 branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_tf_average_pool(x)),
            ],
            dim=1,
        )


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            dim=1,
        )


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b ... 6e)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
                double,
                self.branch_pool(_tf_average_pool(x)),
            ],
            dim=1,
        )


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat(
            [self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1
        )


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 outputs (Mixed_7b, Mixed_7c).

    The TensorFlow graph pools with an average in Mixed_7b but with a *max* in Mixed_7c; FID's
    reference features depend on reproducing that quirk.
    """

    def __init__(self, in_channels: int, max_pool_branch: bool) -> None:
        super().__init__()
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool_branch else _tf_average_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(single),
                self.branch3x3_2b(single),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            dim=1,
        )


def resize_bilinear_tf1(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize as TensorFlow 1.x computes it (align_corners=False, no half-pixel offset).

    Output pixel i samples the input at i * in/out, so the image is stretched from its top-left
    corner. FID features are defined with this resize, not PyTorch's half-pixel one.
    """

    def sample_positions(in_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position = torch.arange(size, dtype=torch.float32, device=images.device) * torch.tensor(
            in_size / size, dtype=torch.float32
        )
        low = position.long()
        high = (low + 1).clamp(max=in_size - 1)
        return low, high, position - low.float()

    rows_low, rows_high, row_frac = sample_positions(images.shape[2])
    cols_low, cols_high, col_frac = sample_positions(images.shape[3])
    top = images[:, :, rows_low, :]
    bottom = images[:, :, rows_high, :]
    vertical = top + (bottom - top) * row_frac.view(1, 1, -1, 1)
    left = vertical[:, :, :, cols_low]
    right = vertical[:, :, :, cols_high]
    return left + (right - left) * col_frac.view(1, 1, 1, -1)


class FidInceptionV3(nn.Module):
    """InceptionV3 of the TF 2015-12-05 graph, returning the 2048-d pool features used by FID/KID.

    Input: uint8 (N, 3, H, W) of any size; it is resized to 299x299 with :func:`resize_bilinear_tf1`
    and mapped to [-1, 1] by (x - 128) / 128, as in torch-fidelity/torchmetrics.
    """

    INPUT_SIZE = 299
    FEATURE_DIM = 2048

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool_branch=False)
        self.Mixed_7c = InceptionE(2048, max_pool_branch=True)
        # Kept only so that the checkpoint loads strictly; FID reads the features before it.
        self.fc = nn.Linear(2048, 1008)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"FidInceptionV3 expects uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        x = resize_bilinear_tf1(images.float(), self.INPUT_SIZE)
        x = (x - 128.0) / 128.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))

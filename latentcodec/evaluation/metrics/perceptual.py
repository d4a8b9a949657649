"""Learned perceptual distances: LPIPS v0.1 (AlexNet, VGG16) and DISTS, on our own backbones."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from latentcodec.errors import WeightsError
from latentcodec.evaluation.metrics.backbones import (
    AlexNetFeatures,
    L2Pooling,
    VGG16Features,
    load_checkpoint,
    load_state_exactly,
    load_torchvision_features,
)
from latentcodec.evaluation.metrics.base import image_pair
from latentcodec.evaluation.metrics.weights import (
    ALEXNET,
    DISTS_WEIGHTS,
    LPIPS_ALEX,
    LPIPS_VGG,
    VGG16,
    WeightsFile,
    checkpoint_dir,
)

LpipsVariant = Literal["alex", "vgg"]


def _require(directory: Path, weights: WeightsFile) -> Path:
    path = directory / weights.filename
    if not path.is_file():
        raise WeightsError(f"missing weights file {path} ({weights.origin})")
    return path


class _LpipsLinear(nn.Module):
    """A learned non-negative 1x1 weighting of one layer's channels.

    ``model`` mirrors the official (Dropout, Conv2d) Sequential so that ``model.1.weight`` loads
    from the lpips package's files; dropout is the identity at evaluation time.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LpipsNetwork(nn.Module):
    """LPIPS v0.1: distance between unit-normalised backbone activations, weighted per channel.

    Inputs are (N, 3, H, W) in [0, 1]; they are mapped to [-1, 1] (the ``normalize=True`` path of
    the lpips package) and then shifted/scaled by LPIPS's fixed input layer before the backbone.
    """

    def __init__(self, variant: LpipsVariant) -> None:
        super().__init__()
        if variant == "alex":
            self.backbone: AlexNetFeatures | VGG16Features = AlexNetFeatures()
            self.tap_indices, channels = AlexNetFeatures.LPIPS_TAPS, AlexNetFeatures.LPIPS_CHANNELS
        elif variant == "vgg":
            self.backbone = VGG16Features()
            self.tap_indices, channels = VGG16Features.STAGE_TAPS, VGG16Features.STAGE_CHANNELS
        else:
            raise ValueError(f"unknown LPIPS variant {variant!r} (alex or vgg)")
        self.heads = nn.Module()
        for k, c in enumerate(channels):
            self.heads.add_module(f"lin{k}", _LpipsLinear(c))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def forward(self, reference: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        both = torch.cat([reference, reconstruction]) * 2.0 - 1.0
        features = self.backbone.taps((both - self.shift) / self.scale, self.tap_indices)
        count = reference.shape[0]
        distance = reference.new_zeros(count)
        for head, feature in zip(self.heads.children(), features):
            unit = feature / (feature.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            difference = (unit[:count] - unit[count:]) ** 2
            distance = distance + head(difference).mean(dim=(1, 2, 3))
        return distance


class DistsNetwork(nn.Module):
    """DISTS (Ding et al. 2020): texture (mean) and structure (covariance) similarity of VGG16 features.

    The backbone's max pools in front of stages 2-5 become L2 pooling; the input image itself is
    the first of the six feature sets. ``alpha``/``beta`` weight the per-channel terms.
    """

    CHANNELS = (3, *VGG16Features.STAGE_CHANNELS)

    def __init__(self) -> None:
        super().__init__()
        self.backbone = VGG16Features()
        self.l2_pools = nn.ModuleList(L2Pooling(c) for c in VGG16Features.STAGE_CHANNELS[:4])
        self.alpha = nn.Parameter(torch.full((1, sum(self.CHANNELS), 1, 1), 0.1))
        self.beta = nn.Parameter(torch.full((1, sum(self.CHANNELS), 1, 1), 0.1))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        replacements = dict(zip(VGG16Features.POOL_INDICES, self.l2_pools))
        stages = self.backbone.taps((images - self.mean) / self.std, VGG16Features.STAGE_TAPS, replacements)
        return [images, *stages]

    def forward(self, reference: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        count = reference.shape[0]
        features = self._features(torch.cat([reference, reconstruction]))
        total = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / total, self.CHANNELS, dim=1)
        betas = torch.split(self.beta / total, self.CHANNELS, dim=1)
        c1 = c2 = 1e-6
        similarity = reference.new_zeros(count)
        for feature, alpha, beta in zip(features, alphas, betas):
            x, y = feature[:count], feature[count:]
            x_mean, y_mean = x.mean(dim=(2, 3), keepdim=True), y.mean(dim=(2, 3), keepdim=True)
            texture = (2 * x_mean * y_mean + c1) / (x_mean**2 + y_mean**2 + c1)
            x_var = ((x - x_mean) ** 2).mean(dim=(2, 3), keepdim=True)
            y_var = ((y - y_mean) ** 2).mean(dim=(2, 3), keepdim=True)
            covariance = (x * y).mean(dim=(2, 3), keepdim=True) - x_mean * y_mean
            structure = (2 * covariance + c2) / (x_var + y_var + c2)
            similarity = similarity + (alpha * texture + beta * structure).sum(dim=(1, 2, 3))
        return 1.0 - similarity


def load_lpips_network(variant: LpipsVariant, directory: Path | None = None) -> LpipsNetwork:
    """An LPIPS network with its backbone and linear-layer files loaded (WeightsError if missing)."""
    folder = checkpoint_dir() if directory is None else Path(directory)
    trunk_file, lin_file = (ALEXNET, LPIPS_ALEX) if variant == "alex" else (VGG16, LPIPS_VGG)
    network = LpipsNetwork(variant)
    load_torchvision_features(network.backbone, _require(folder, trunk_file))
    lin_path = _require(folder, lin_file)
    load_state_exactly(network.heads, load_checkpoint(lin_path), lin_path)
    return network.eval().requires_grad_(False)


def load_dists_network(directory: Path | None = None) -> DistsNetwork:
    """A DISTS network with VGG16 and alpha/beta loaded (WeightsError if missing)."""
    folder = checkpoint_dir() if directory is None else Path(directory)
    network = DistsNetwork()
    load_torchvision_features(network.backbone, _require(folder, VGG16))
    weights_path = _require(folder, DISTS_WEIGHTS)
    state = load_checkpoint(weights_path)
    for key in ("alpha", "beta"):
        value = state.get(key)
        expected = getattr(network, key).shape
        if value is None or value.shape != expected:
            found = "absent" if value is None else f"shape {tuple(value.shape)}"
            raise WeightsError(f"{weights_path}: '{key}' is {found}, expected shape {tuple(expected)}")
        getattr(network, key).data.copy_(value)
    return network.eval().requires_grad_(False)


class _NetworkMetric:
    """Shared call path: both images to the network's device, no autograd, a float back."""

    name: str
    higher_is_better = False

    def __init__(self, network: nn.Module, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.network = network.to(self.device)

    def __call__(self, reference: Any, reconstruction: Any) -> float:
        ref, rec = image_pair(reference, reconstruction, self.device)
        with torch.inference_mode():
            return float(self.network(ref, rec)[0])


class LPIPS(_NetworkMetric):
    """LPIPS v0.1 (``lpips_alex`` or ``lpips_vgg``); 0 for identical images, lower is better."""

    def __init__(self, variant: LpipsVariant = "alex", device: torch.device | str = "cpu",
                 directory: Path | None = None) -> None:
        super().__init__(load_lpips_network(variant, directory), device)
        self.name = f"lpips_{variant}"


class DISTS(_NetworkMetric):
    """DISTS on [0, 1] images (as DISTS_pytorch, no resizing); 0 for identical images, lower is better."""

    name = "dists"

    def __init__(self, device: torch.device | str = "cpu", directory: Path | None = None) -> None:
        super().__init__(load_dists_network(directory), device)

"""Where the metric networks' weights live, and random stand-ins in the same layouts for tests.

Every file is read from ``$TORCH_HOME/hub/checkpoints/`` (``TORCH_HOME`` defaults to
``~/.cache/torch``; this is ``torch.hub.get_dir()/checkpoints``, so ``torch.hub.set_dir`` moves it
too). Nothing is ever downloaded: a missing file makes its metric unavailable, with the path in
the reason.

=================================== ==================== ====================================================
file                                used by              what it is / where to get it
=================================== ==================== ====================================================
``alexnet-owt-7be5be79.pth``        lpips_alex           torchvision AlexNet, IMAGENET1K_V1 (``features.*``)
``vgg16-397923af.pth``              lpips_vgg, dists     torchvision VGG16, IMAGENET1K_V1 (``features.*``)
``lpips_v0.1_alex.pth``             lpips_alex           lpips package ``lpips/weights/v0.1/alex.pth``
                                                         (keys ``lin0.model.1.weight`` ... ``lin4``)
``lpips_v0.1_vgg.pth``              lpips_vgg            lpips package ``lpips/weights/v0.1/vgg.pth``
``dists_weights.pt``                dists                DISTS_pytorch package ``DISTS_pytorch/weights.pt``
                                                         (``{"alpha", "beta"}``, each 1x1475x1x1)
``pt_inception-2015-12-05-6726825d.pth`` fid, kid        pytorch-fid release file (identical to
                                                         torch-fidelity's
                                                         ``weights-inception-2015-12-05-6726825d.pth``)
=================================== ==================== ====================================================

``psnr``, ``ms_ssim`` and ``nlpd`` need no file; neither do ``ssimulacra2``, ``butteraugli`` and
``butteraugli_3norm``, which need their tools instead (:mod:`latentcodec.evaluation.metrics.tools`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from latentcodec.errors import ConfigError
from latentcodec.evaluation.metrics.backbones import AlexNetFeatures, FidInceptionV3, VGG16Features


class WeightsFile(NamedTuple):
    """One expected checkpoint file: its name in the checkpoint folder and where it comes from."""

    filename: str
    origin: str


ALEXNET = WeightsFile("alexnet-owt-7be5be79.pth", "torchvision AlexNet IMAGENET1K_V1 weights")
VGG16 = WeightsFile("vgg16-397923af.pth", "torchvision VGG16 IMAGENET1K_V1 weights")
LPIPS_ALEX = WeightsFile("lpips_v0.1_alex.pth", "LPIPS v0.1 AlexNet linear layers (lpips/weights/v0.1/alex.pth)")
LPIPS_VGG = WeightsFile("lpips_v0.1_vgg.pth", "LPIPS v0.1 VGG linear layers (lpips/weights/v0.1/vgg.pth)")
DISTS_WEIGHTS = WeightsFile("dists_weights.pt", "DISTS alpha/beta (DISTS_pytorch/weights.pt)")
INCEPTION = WeightsFile("pt_inception-2015-12-05-6726825d.pth", "FID InceptionV3 weights (pytorch-fid release)")

# The files each metric needs, in the order they are checked.
REQUIRED_WEIGHTS: dict[str, tuple[WeightsFile, ...]] = {
    "psnr": (),
    "thumbnail_psnr": (),
    "ms_ssim": (),
    "nlpd": (),
    "ssimulacra2": (),
    "butteraugli": (),
    "butteraugli_3norm": (),
    "lpips_alex": (ALEXNET, LPIPS_ALEX),
    "lpips_vgg": (VGG16, LPIPS_VGG),
    "dists": (VGG16, DISTS_WEIGHTS),
    "fid": (INCEPTION,),
    "kid": (INCEPTION,),
}


def checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints``, read at call time."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def missing_weights_reason(metric_name: str, directory: Path | None = None) -> str | None:
    """One line naming the first missing file of ``metric_name``, or None when all are present."""
    folder = checkpoint_dir() if directory is None else Path(directory)
    for weights in REQUIRED_WEIGHTS[metric_name]:
        path = folder / weights.filename
        if not path.is_file():
            return f"missing weights file {path} ({weights.origin}); put it there to enable {metric_name}"
    return None


def _randomise_convs(module: nn.Module, generator: torch.Generator) -> None:
    # He-normal keeps activations of a deep random trunk at a usable scale (PyTorch's default
    # init shrinks them layer after layer, which makes random-backbone tests meaningless).
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            fan_in = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            with torch.no_grad():
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if layer.bias is not None:
                    layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.01)


def write_random_weights(directory: Path, metric_names: Iterable[str] | None = None, seed: int = 0) -> list[Path]:
    """Write randomly initialised checkpoints, in the official file layouts, into ``directory``.

    For tests only (of the metrics and of anything that runs them): the files load through exactly
    the same path as the real ones. ``metric_names`` selects which metrics' files to write (default:
    all). Returns the written paths.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = list(REQUIRED_WEIGHTS) if metric_names is None else list(metric_names)
    unknown = [name for name in names if name not in REQUIRED_WEIGHTS]
    if unknown:
        raise ConfigError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(REQUIRED_WEIGHTS)}")
    needed = {weights for name in names for weights in REQUIRED_WEIGHTS[name]}
    generator = torch.Generator().manual_seed(seed)
    written: list[Path] = []

    def save(weights: WeightsFile, state: dict[str, torch.Tensor]) -> None:
        path = directory / weights.filename
        torch.save(state, path)
        written.append(path)

    if ALEXNET in needed:
        trunk = AlexNetFeatures()
        _randomise_convs(trunk, generator)
        save(ALEXNET, trunk.state_dict())
    if VGG16 in needed:
        trunk = VGG16Features()
        _randomise_convs(trunk, generator)
        save(VGG16, trunk.state_dict())
    # LPIPS's learned weights are non-negative (the training projects them onto >= 0).
    if LPIPS_ALEX in needed:
        save(LPIPS_ALEX, {
            f"lin{k}.model.1.weight": torch.rand((1, c, 1, 1), generator=generator)
            for k, c in enumerate(AlexNetFeatures.LPIPS_CHANNELS)
        })
    if LPIPS_VGG in needed:
        save(LPIPS_VGG, {
            f"lin{k}.model.1.weight": torch.rand((1, c, 1, 1), generator=generator)
            for k, c in enumerate(VGG16Features.STAGE_CHANNELS)
        })
    if DISTS_WEIGHTS in needed:
        total = 3 + sum(VGG16Features.STAGE_CHANNELS)
        save(DISTS_WEIGHTS, {
            "alpha": 0.1 + 0.01 * torch.randn((1, total, 1, 1), generator=generator),
            "beta": 0.1 + 0.01 * torch.randn((1, total, 1, 1), generator=generator),
        })
    if INCEPTION in needed:
        network = FidInceptionV3()
        _randomise_convs(network, generator)
        save(INCEPTION, network.state_dict())
    return written

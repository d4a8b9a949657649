"""Training losses: perceptual (LPIPS-VGG or a pretrained-free fallback), hinge GAN, adaptive GAN weight."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.nn.functional import lower_bound
from latentcodec.nn.patchgan import PatchGANDiscriminator


def lpips_vgg_status() -> tuple[str, str]:
    """('lpips_vgg' | 'vgg_uniform' | 'fallback', one line saying why), from the files present.

    LPIPS-VGG needs ``vgg16-397923af.pth`` (torchvision VGG16 IMAGENET1K_V1) and
    ``lpips_v0.1_vgg.pth`` in ``$TORCH_HOME/hub/checkpoints/``. With VGG16 alone, the LPIPS
    distance is used with uniform channel weights (LPIPS's "baseline" variant).
    """
    from latentcodec.evaluation.metrics.weights import LPIPS_VGG, VGG16, checkpoint_dir

    folder = checkpoint_dir()
    if not (folder / VGG16.filename).is_file():
        return "fallback", f"no {folder / VGG16.filename}: perceptual loss = D feature matching + (1 - MS-SSIM)"
    if not (folder / LPIPS_VGG.filename).is_file():
        return "vgg_uniform", f"{folder / VGG16.filename} found, no {LPIPS_VGG.filename}: LPIPS-VGG with uniform channel weights"
    return "lpips_vgg", f"LPIPS-VGG from {folder}"


def build_lpips(kind: str) -> nn.Module:
    from latentcodec.evaluation.metrics.backbones import load_torchvision_features
    from latentcodec.evaluation.metrics.perceptual import LpipsNetwork, load_lpips_network
    from latentcodec.evaluation.metrics.weights import VGG16, checkpoint_dir

    if kind == "lpips_vgg":
        return load_lpips_network("vgg")
    network = LpipsNetwork("vgg")
    load_torchvision_features(network.backbone, checkpoint_dir() / VGG16.filename)
    for head in network.heads.children():
        weight = head.model[1].weight
        nn.init.constant_(weight, 1.0 / weight.shape[1])
    return network.eval().requires_grad_(False)


def ms_ssim_per_sample(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MS-SSIM of [0, 1] batches, one value per sample, with as many scales as the crop allows.

    pytorch-msssim needs the short side above (window - 1) * 16 whatever the number of scales, so
    small training crops use a smaller Gaussian window (odd, at most 11).
    """
    from pytorch_msssim import ms_ssim

    side = min(x.shape[-2:])
    window = 11
    while window > 3 and side <= (window - 1) * 16:
        window -= 2
    scales = 5
    while scales > 1 and side // 2 ** (scales - 1) < window:
        scales -= 1
    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333][:scales]
    return ms_ssim(x.float(), y.float(), data_range=1.0, size_average=False, win_size=window, weights=weights)


class PerceptualTerms(NamedTuple):
    per_sample: torch.Tensor  # (B,) perceptual distance
    ms_ssim: torch.Tensor | None  # (B,), when the fallback computed it


class PerceptualLoss(nn.Module):
    """Per-sample perceptual distance between [-1, 1] images.

    ``lpips_vgg``/``vgg_uniform``: LPIPS on VGG16 features. ``fallback``: w_fm * L1 feature
    matching on the discriminator's activations (real side detached) + w_ssim * (1 - MS-SSIM).
    The discriminator is passed in because its features change as it trains.
    """

    def __init__(self, kind: str, feature_matching_weight: float = 1.0, ms_ssim_weight: float = 1.0):
        super().__init__()
        self.kind = kind
        self.feature_matching_weight = feature_matching_weight
        self.ms_ssim_weight = ms_ssim_weight
        self.lpips = build_lpips(kind) if kind in ("lpips_vgg", "vgg_uniform") else None

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, discriminator: PatchGANDiscriminator | None) -> PerceptualTerms:
        x01, x_hat01 = (x + 1) / 2, (x_hat + 1) / 2
        if self.lpips is not None:
            return PerceptualTerms(self.lpips(x01.float(), x_hat01.float()), None)
        total = x.new_zeros(x.shape[0], dtype=torch.float32)
        ssim = None
        if self.ms_ssim_weight:
            ssim = ms_ssim_per_sample(x_hat01.clamp(0, 1), x01)
            total = total + self.ms_ssim_weight * (1 - ssim)
        if self.feature_matching_weight and discriminator is not None:
            with torch.no_grad():
                real_features = discriminator(x).features
            fake_features = discriminator(x_hat).features
            for real, fake in zip(real_features, fake_features):
                total = total + self.feature_matching_weight * (fake - real).abs().float().mean(dim=(1, 2, 3)) / len(
                    fake_features
                )
        return PerceptualTerms(total, ssim)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def adaptive_gan_weight(
    reconstruction_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1.0
) -> torch.Tensor:
    """||grad(rec)|| / (||grad(gan)|| + 1e-4) on the generator's last conv weight, clamped, detached.

    Computed over the batch (one weight per step), as in taming-transformers' VQGAN loss.
    """
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (gan_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


def per_sample_mean(t: torch.Tensor) -> torch.Tensor:
    return t.float().flatten(1).mean(1)



def trainable_residual_bits(symbols: torch.Tensor, scales: torch.Tensor, scale_floor: float = 0.11) -> torch.Tensor:
    """Bits of each integer residual under N(0, sigma) on [r - 1/2, r + 1/2], with gradients everywhere.

    The official estimate (``gaussian_residual_bits``) clamps sigma at 1e-5 and adds 1e-5 to the
    likelihood: a residual far in the tail of a tiny sigma costs a flat 16.6 bits with zero
    gradient, and a freshly initialised prior puts ~10% of the elements there, where they stay
    (measured: 95% of the estimated rate after 250 stage-II steps). Here sigma is floored at the
    real coder's smallest table scale (0.11, SYSTEMS.md 1.3) with a gradient that may lift it,
    and the interval mass is computed in log space (log_ndtr), so tail residuals keep a gradient
    of the order of r^2 / sigma^2.
    """
    sigma = lower_bound(scales.float(), scale_floor)
    magnitude = symbols.float().abs()
    log_upper = torch.special.log_ndtr((0.5 - magnitude) / sigma)
    log_lower = torch.special.log_ndtr((-0.5 - magnitude) / sigma)
    gap = (log_lower - log_upper).clamp_max(-1e-7)
    log_likelihood = log_upper + torch.log1p(-torch.exp(gap))
    return -log_likelihood / math.log(2.0)

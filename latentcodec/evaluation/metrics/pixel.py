"""Metrics without learned weights: PSNR, MS-SSIM (pytorch-msssim) and NLPD."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from latentcodec.evaluation.metrics.base import image_pair


class PSNR:
    """Peak signal-to-noise ratio in dB over all RGB values in [0, 1] (peak 1).

    Identical images give ``math.inf`` (no cap): a lossy codec never produces them, so an infinite
    value is a signal worth seeing rather than a number to average.
    """

    name = "psnr"
    higher_is_better = True

    def __call__(self, reference: Any, reconstruction: Any) -> float:
        ref, rec = image_pair(reference, reconstruction, dtype=torch.float64)
        mse = float(torch.mean((ref - rec) ** 2))
        return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


# The thumbnail scale of the low-pass fidelity metric; training's thumbnail loss uses the same.
THUMBNAIL_FACTOR = 16


class ThumbnailPSNR:
    """PSNR of the 1/16-scale thumbnails (box filter: the mean of each 16x16 block; edge rows and
    columns that do not fill a block are left out). It measures the low-pass fidelity, colour and
    layout, that a generative codec must keep even where its texture is invented."""

    name = "thumbnail_psnr"
    higher_is_better = True
    factor = THUMBNAIL_FACTOR

    def __call__(self, reference: Any, reconstruction: Any) -> float:
        ref, rec = image_pair(reference, reconstruction, dtype=torch.float64)
        f = self.factor
        h, w = (ref.shape[-2] // f) * f, (ref.shape[-1] // f) * f
        if h == 0 or w == 0:
            return math.nan
        ref, rec = (t.reshape(-1, *t.shape[-3:])[..., :h, :w] for t in (ref, rec))
        return PSNR()(torch.nn.functional.avg_pool2d(ref, f), torch.nn.functional.avg_pool2d(rec, f))


# Wang, Simoncelli & Bovik (2003) scale weights, finest first; pytorch-msssim's defaults.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SSIM_WINDOW = 11


def ms_ssim_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales fit an image: 5 when the short side is >= 161 px.

    The coarsest scale must still hold the 11x11 Gaussian window after its halvings, i.e. the short
    side must exceed 10 * 2**(scales - 1): 5 scales from 161 px, 4 from 81, 3 from 41, 2 from 21,
    1 (plain SSIM) from 11, and 0 below (the metric is then undefined).
    """
    short = min(height, width)
    scales = 0
    while scales < len(MS_SSIM_WEIGHTS) and short > (_SSIM_WINDOW - 1) * 2**scales:
        scales += 1
    return scales


class MSSSIM:
    """MS-SSIM of pytorch-msssim (data_range 1, 11-px Gaussian window, sigma 1.5), averaged over RGB.

    Images with a short side >= 161 px get the standard 5-scale value from ``pytorch_msssim.ms_ssim``.
    Smaller images, which the standard definition cannot score, use as many scales as fit (see
    :func:`ms_ssim_scales`) with the first weights of :data:`MS_SSIM_WEIGHTS` rescaled to the total
    of all five (1.0001), computed with pytorch-msssim's own per-scale SSIM; below 11 px the result is NaN. Such
    values are not comparable with 5-scale ones; none of the evaluation sets has images that small.
    """

    name = "ms_ssim"
    higher_is_better = True

    def __call__(self, reference: Any, reconstruction: Any) -> float:
        ref, rec = image_pair(reference, reconstruction)
        scales = ms_ssim_scales(ref.shape[2], ref.shape[3])
        if scales == 0:
            return math.nan
        if scales == len(MS_SSIM_WEIGHTS):
            from pytorch_msssim import ms_ssim

            return float(ms_ssim(ref, rec, data_range=1.0, size_average=True))
        return multiscale_ssim(ref, rec, MS_SSIM_WEIGHTS[:scales])


def multiscale_ssim(ref: torch.Tensor, rec: torch.Tensor, weights: tuple[float, ...]) -> float:
    """MS-SSIM with ``len(weights)`` scales, mirroring pytorch-msssim's recursion.

    pytorch-msssim refuses images under 161 px whatever the number of scales, so the per-scale
    statistics come from its internal ``_ssim`` and the recursion (contrast-structure terms at the
    fine scales, full SSIM at the coarsest, 2x2 average pooling in between) is repeated here.
    """
    from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

    # Rescaled to the total of the standard five weights, so that 5 scales give the library's value.
    weight = torch.tensor(weights, dtype=ref.dtype, device=ref.device)
    weight = weight * (sum(MS_SSIM_WEIGHTS) / weight.sum())
    window = _fspecial_gauss_1d(_SSIM_WINDOW, 1.5).repeat(ref.shape[1], 1, 1, 1)
    terms = []
    for scale in range(len(weights)):
        ssim_per_channel, contrast_structure = _ssim(ref, rec, data_range=1.0, win=window, size_average=False)
        if scale < len(weights) - 1:
            terms.append(torch.relu(contrast_structure))
            padding = [size % 2 for size in ref.shape[2:]]
            ref = F.avg_pool2d(ref, kernel_size=2, padding=padding)
            rec = F.avg_pool2d(rec, kernel_size=2, padding=padding)
    terms.append(torch.relu(ssim_per_channel))
    value = torch.prod(torch.stack(terms) ** weight.view(-1, 1, 1), dim=0)
    return float(value.mean())


# ----------------------------------------------------------------------------- NLPD

# Laparra, Ballé, Berardino & Simoncelli, "Perceptual image quality assessment using a normalized
# Laplacian pyramid" (2016), reference implementation NLP_dist.m: 6 levels, Burt-Adelson 5-tap
# filter, and per-level divisive-normalisation constants and neighbour weights fitted on McGill.
NLPD_LEVELS = 6
_BURT_ADELSON = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
NLPD_SIGMAS = (0.0248, 0.0185, 0.0179, 0.0191, 0.0220, 0.2782)


def _dn_filter(rows: list[list[float]]) -> np.ndarray:
    """A 5x5 neighbour filter from its central 3x3 (the outer ring is zero except in level 1)."""
    kernel = np.zeros((5, 5))
    kernel[1:4, 1:4] = rows
    return kernel


NLPD_DN_FILTERS = (
    np.array([
        [0, 0, 0, 0, 0],
        [0, 0, 0.1011, 0, 0],
        [0, 0.1493, 0, 0.1460, 0.0072],
        [0, 0, 0.1015, 0, 0],
        [0, 0, 0, 0, 0],
    ]),
    _dn_filter([[0, 0.0757, 0], [0.1986, 0, 0.1846], [0, 0.0837, 0]]),
    _dn_filter([[0, 0.0477, 0], [0.2138, 0, 0.2243], [0, 0.0467, 0]]),
    _dn_filter([[0, 0, 0], [0.2503, 0, 0.2616], [0, 0, 0]]),
    _dn_filter([[0, 0, 0], [0.2598, 0, 0.2552], [0, 0, 0]]),
    _dn_filter([[0, 0, 0], [0.2215, 0, 0.0717], [0, 0, 0]]),
)

# MATLAB rgb2gray (ITU-R BT.601 luma), since NLPD is defined on grey images in [0, 1].
_LUMA = (0.298936021293775, 0.587043074451121, 0.114020904255103)


def _symmetric_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Half-sample symmetric padding (MATLAB 'symmetric', edge pixel repeated) of the last two dims."""
    def indices(size: int) -> torch.Tensor:
        return torch.from_numpy(np.pad(np.arange(size), pad, mode="symmetric")).to(x.device)

    return x[..., indices(x.shape[-2]), :][..., indices(x.shape[-1])]


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, kernel.view(1, 1, 5, 5))


def laplacian_pyramid(gray: torch.Tensor, levels: int = NLPD_LEVELS) -> list[torch.Tensor]:
    """Burt-Adelson Laplacian pyramid of (N, 1, H, W) images, finest band first, low-pass last.

    Each level: blur with symmetric borders and keep every other pixel; the band is the image
    minus the low-pass upsampled back (replicate border, zero-insertion, 4x the same filter).
    """
    kernel = torch.from_numpy(np.outer(_BURT_ADELSON, _BURT_ADELSON)).to(gray)
    pyramid = []
    current = gray
    for _ in range(levels - 1):
        low = _blur(_symmetric_pad(current, 2), kernel)[..., ::2, ::2]
        pyramid.append(current - _upsample(low, current.shape[-2:], kernel))
        current = low
    pyramid.append(current)
    return pyramid


def _upsample(low: torch.Tensor, target: torch.Size, kernel: torch.Tensor) -> torch.Tensor:
    padded = F.pad(low, (1, 1, 1, 1), mode="replicate")
    height, width = padded.shape[-2] * 2, padded.shape[-1] * 2
    sparse = low.new_zeros(*low.shape[:-2], height, width)
    sparse[..., ::2, ::2] = 4.0 * padded
    smooth = _blur(F.pad(sparse, (2, 2, 2, 2)), kernel)
    return smooth[..., 2 : 2 + target[0], 2 : 2 + target[1]]


def normalized_laplacian_pyramid(gray: torch.Tensor) -> list[torch.Tensor]:
    """Each band divided by (sigma + weighted sum of its neighbours' magnitudes), per level."""
    bands = laplacian_pyramid(gray, NLPD_LEVELS)
    normalised = []
    for band, sigma, neighbours in zip(bands, NLPD_SIGMAS, NLPD_DN_FILTERS):
        # MATLAB conv2 is a true convolution: flip the (asymmetric) kernel for conv2d's correlation.
        kernel = torch.from_numpy(neighbours[::-1, ::-1].copy()).to(band).view(1, 1, 5, 5)
        activity = F.conv2d(band.abs(), kernel, padding=2)
        normalised.append(band / (sigma + activity))
    return normalised


class NLPD:
    """Normalised Laplacian pyramid distance (Laparra et al. 2016); 0 for identical images.

    Needs no pretrained network: every filter and constant is fixed by the paper's reference code.
    RGB images are converted to grey with MATLAB's rgb2gray weights; the score is the mean over
    the 6 levels of the root-mean-square difference of the normalised bands. Lower is better.
    """

    name = "nlpd"
    higher_is_better = False

    def __call__(self, reference: Any, reconstruction: Any) -> float:
        ref, rec = image_pair(reference, reconstruction, dtype=torch.float64)
        luma = torch.tensor(_LUMA, dtype=torch.float64).view(1, 3, 1, 1)
        ref_bands = normalized_laplacian_pyramid((ref * luma).sum(1, keepdim=True))
        rec_bands = normalized_laplacian_pyramid((rec * luma).sum(1, keepdim=True))
        per_level = [torch.sqrt(torch.mean((a - b) ** 2)) for a, b in zip(ref_bands, rec_bands)]
        return float(torch.stack(per_level).mean())

"""The shared vocabulary of the metrics: protocols, result types and image conversion."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

from latentcodec.errors import InputError


class MetricScore(NamedTuple):
    """One named value, as the runner writes it (``name`` is the JSON key)."""

    name: str
    value: float


class UnavailableMetric(NamedTuple):
    """A requested metric that cannot run here; ``reason`` is one line (e.g. the missing file)."""

    name: str
    reason: str


@runtime_checkable
class ImageMetric(Protocol):
    """A full-reference metric scored image by image.

    ``metric(reference, reconstruction)`` takes two images of the same size in any of the forms
    :func:`to_float_image` accepts and returns a plain float.
    """

    name: str
    higher_is_better: bool

    def __call__(self, reference: Any, reconstruction: Any) -> float: ...


@runtime_checkable
class DatasetMetric(Protocol):
    """A set-level metric (FID, KID): images are fed one pair at a time, scored once at the end.

    ``names`` are the JSON keys that :meth:`compute` returns values for, in that order.
    """

    names: tuple[str, ...]
    higher_is_better: bool

    def update(self, reference: Any, reconstruction: Any) -> None: ...

    def compute(self) -> tuple[MetricScore, ...]: ...

    def reset(self, keep_reference: bool = False) -> None: ...


def _as_hwc_uint8_array(image: Any) -> np.ndarray | None:
    """PIL images and uint8 arrays/tensors in HWC layout; None when ``image`` is a float tensor."""
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            return None
        image = image.detach().cpu().numpy()
    elif not isinstance(image, np.ndarray):
        try:
            image = np.asarray(image)  # PIL.Image and nested sequences
        except Exception as exc:  # noqa: BLE001 - anything unconvertible is bad input
            raise InputError(f"cannot read an image from a {type(image).__name__} ({exc})") from None
    if image.dtype != np.uint8:
        raise InputError(
            f"images must be uint8 (H, W, 3) arrays or float tensors in [0, 1]; got a {image.dtype} array"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"a uint8 image must have shape (H, W, 3), got {tuple(image.shape)}")
    # torch cannot wrap read-only memory (np.asarray of a PIL image), nor strided views cheaply.
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.array(image, order="C")
    return image


def to_float_image(image: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An image as a float tensor (``dtype``) of shape (1, 3, H, W) with values in [0, 1].

    Accepted forms:

    * uint8 in HWC layout (numpy array, torch tensor or PIL RGB image): divided by 255;
    * a floating torch tensor of shape (3, H, W) or (1, 3, H, W), already in [0, 1]. It is used
      as given, not rounded to 8 bits (the protocol scores rounded PNGs; float frames are an
      explicit choice of the caller).
    """
    array = _as_hwc_uint8_array(image)
    if array is not None:
        return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(dtype) / 255.0
    tensor = image
    if not tensor.is_floating_point():
        raise InputError(f"a tensor image must be uint8 (H, W, 3) or floating (3, H, W); got {tensor.dtype}")
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4 or tensor.shape[0] != 1 or tensor.shape[1] != 3:
        raise InputError(f"a float image must have shape (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    return tensor.detach().to(dtype)


def to_uint8_image(image: Any) -> torch.Tensor:
    """An image as a uint8 tensor of shape (3, H, W); float images are scaled by 255 and rounded."""
    array = _as_hwc_uint8_array(image)
    if array is not None:
        return torch.from_numpy(array).permute(2, 0, 1)
    floats = to_float_image(image)[0].cpu()
    return (floats * 255.0).round().clamp(0, 255).to(torch.uint8)


def image_pair(
    reference: Any, reconstruction: Any, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images as (1, 3, H, W) float tensors in [0, 1] on ``device``; sizes must agree."""
    ref = to_float_image(reference, dtype)
    rec = to_float_image(reconstruction, dtype)
    if ref.shape != rec.shape:
        raise InputError(
            f"reference and reconstruction differ in size: {tuple(ref.shape[2:])} vs {tuple(rec.shape[2:])} (H, W)"
        )
    return ref.to(device), rec.to(device)

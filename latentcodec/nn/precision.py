"""The arithmetic of the pixel-space networks at inference: float32, or bfloat16 matrix units.

Every codec's analysis and synthesis nets (GLC's VQGAN encoder and generator, DLF's VQGAN
decoder, PerCoV2's VAE and the MMDiT that samples its latent) spend almost all of their time in
float32 convolutions and matrix products that already run at the CPU's float32 peak. CPUs with AMX
tiles (Intel Xeon since Sapphire Rapids) multiply bfloat16 matrices several times faster (a
128-channel 3x3 conv on a 768x512 map: 0.35 s in float32, 0.08 s in bfloat16, 2 threads).
``precision="bf16"`` runs those nets under ``torch.autocast`` at inference (convs and matrix
products in bfloat16 with float32 accumulation, as autocast's CPU policy has it) and hands each
net's output on in float32. None of them feeds an entropy coder's parameters.

Float32 is the default. ``"bf16"`` asks for bfloat16 anywhere; ``"auto"`` picks it only where it
is faster: a CPU with AMX whose oneDNN is allowed to use it. Without AMX, oneDNN's bfloat16 convs
are slower than float32 (measured under ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``: 0.53 s against
0.35 s), so "auto" keeps float32 on AMD, on laptops and on GPUs.

What bfloat16 changes: the entropy model never runs here (its integer nets are exact on every
machine), so a file still decodes to the same symbols anywhere. The decoded picture moves by a few
8-bit levels (the shipped GLC default on Kodak: docs/results/speed.md), which is why it is not the
default: in float32 a picture decoded on another machine, or in tiles, stays within one level of
the reference; in bfloat16 it stays within a few. An encoder in bfloat16 may round a latent to a
neighbouring symbol, which gives a different file of the same size and quality.
"""

from __future__ import annotations

import contextlib
import os

import torch

PRECISIONS = ("auto", "fp32", "bf16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def onednn_may_use_amx() -> bool:
    """False when ONEDNN_MAX_CPU_ISA (or its older name DNNL_MAX_CPU_ISA) caps oneDNN below AMX,
    as when another CPU is emulated."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return cap is None or cap.strip().upper() in ("", "ALL", "DEFAULT") or "AMX" in cap.upper()


def amx_bf16_available() -> bool:
    """True on a CPU with AMX tiles that PyTorch's oneDNN will use for bfloat16 convolutions."""
    is_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if is_amx is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(is_amx()) and onednn_may_use_amx() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(precision: str) -> str:
    """``precision`` if it is one of PRECISIONS; ValueError otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def compute_dtype(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """The dtype ``precision`` ("auto", "fp32" or "bf16") means for nets on ``device``."""
    if check_precision(precision) != "auto":
        return _DTYPES[precision]
    if torch.device(device).type == "cpu" and amx_bf16_available():
        return torch.bfloat16
    return torch.float32


def autocast_for(module: torch.nn.Module, device_type: str) -> contextlib.AbstractContextManager:
    """The autocast context a net that follows the codec's precision runs its inference in; nothing
    in training (gradients on) or in float32."""
    dtype = getattr(module, "compute_dtype", torch.float32)
    if dtype == torch.float32 or torch.is_grad_enabled():
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def run_in_precision(module: torch.nn.Module, function, x: torch.Tensor) -> torch.Tensor:
    """``function(x)`` under ``module``'s compute precision, returned in ``x``'s dtype."""
    with autocast_for(module, x.device.type):
        out = function(x)
    return out if out.dtype == x.dtype else out.to(x.dtype)

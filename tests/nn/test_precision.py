"""Which arithmetic the pixel-space nets get (latentcodec.nn.precision)."""

import pytest
import torch

from latentcodec.nn import precision
from latentcodec.nn.precision import compute_dtype, onednn_may_use_amx


@pytest.mark.parametrize("cap, allowed", [
    (None, True), ("ALL", True), ("avx512_core_amx", True), ("AVX10_1_512_AMX_FP16", True),
    ("AVX2", False), ("SSE41", False), ("AVX512_CORE_BF16", False), ("avx512_core", False),
])
def test_an_emulated_isa_below_amx_rules_bfloat16_out(monkeypatch, cap, allowed):
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert onednn_may_use_amx() is allowed


def test_auto_means_bfloat16_only_on_a_cpu_with_amx(monkeypatch):
    monkeypatch.setattr(precision, "amx_bf16_available", lambda: True)
    assert compute_dtype("auto", "cpu") == torch.bfloat16
    assert compute_dtype("auto", "cuda") == torch.float32  # GPUs keep float32
    monkeypatch.setattr(precision, "amx_bf16_available", lambda: False)
    assert compute_dtype("auto", "cpu") == torch.float32
    assert compute_dtype("bf16", "cpu") == torch.bfloat16
    assert compute_dtype("fp32", "cpu") == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        compute_dtype("fp16", "cpu")


def test_no_amx_is_reported_under_an_avx2_cap(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not precision.amx_bf16_available()
    assert compute_dtype("auto", "cpu") == torch.float32

"""Linear layers through oneDNN: the same function as nn.Linear, and only where it is safe."""

import pytest
import torch
from torch import nn

from latentcodec.nn import functional
from latentcodec.nn.functional import ONEDNN_LINEAR_MIN_ROWS, OneDNNLinear, onednn_linear, use_onednn_linears
from latentcodec.nn.integer import IntegerLinear, integer_twin


@pytest.fixture(autouse=True)
def onednn_calls(monkeypatch):
    """Small products take the oneDNN path here (the size floor would send them to F.linear); the
    list counts its products, so that a test can tell the path was taken."""
    monkeypatch.setattr(functional, "ONEDNN_LINEAR_MIN_MACS", 0)
    calls = []
    original = functional._onednn_matmul_t
    monkeypatch.setattr(functional, "_onednn_matmul_t", lambda *args: calls.append(1) or original(*args))
    return calls


@pytest.mark.parametrize("shape", [(300, 48), (3, 100, 48), (2, 5, 40, 48)])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_computes_linear(shape, bias, onednn_calls):
    torch.manual_seed(0)
    layer = nn.Linear(48, 80, bias=bias)
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = layer(x)
        got = onednn_linear(x, layer.weight, layer.bias)
    assert got.shape == expected.shape and got.is_contiguous()
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert onednn_calls == [1]


def test_small_products_stay_with_linear(monkeypatch, onednn_calls):
    monkeypatch.setattr(functional, "ONEDNN_LINEAR_MIN_MACS", 1 << 22)
    layer = nn.Linear(48, 80)
    x = torch.randn(300, 48)
    with torch.no_grad():
        assert torch.equal(onednn_linear(x, layer.weight, layer.bias), layer(x))
    assert onednn_calls == []


@pytest.mark.parametrize("shape", [(300, 48), (3, 100, 48), (2, 5, 40, 48)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_onednn_linear_gradients_are_linears(shape, bias, threads, onednn_calls):
    """Training through oneDNN: the same output and the same gradients for x, weight and bias as
    F.linear (within float summation order), on one thread and on two."""
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        layer = nn.Linear(48, 80, bias=bias)
        x = torch.randn(*shape, requires_grad=True)
        upstream = torch.randn(*shape[:-1], 80)
        parameters = (x, layer.weight) + ((layer.bias,) if bias else ())
        expected = torch.autograd.grad((layer(x) * upstream).sum(), parameters)
        got_out = onednn_linear(x, layer.weight, layer.bias)
        got = torch.autograd.grad((got_out * upstream).sum(), parameters)
    finally:
        torch.set_num_threads(before)
    assert got_out.shape == (*shape[:-1], 80) and got_out.grad_fn is not None
    assert len(onednn_calls) == 3  # forward, input gradient, weight gradient
    for a, b in zip(got, expected):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_non_contiguous_input():
    layer = nn.Linear(32, 16)
    x = torch.randn(32, 200).t()  # rows are strided
    with torch.no_grad():
        assert torch.allclose(onednn_linear(x, layer.weight, layer.bias), layer(x), rtol=1e-4, atol=1e-5)


def test_swapped_layers_keep_weights_and_train_through_autograd():
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    use_onednn_linears(model)
    assert all(type(m) is OneDNNLinear for m in (model[0], model[2]))
    assert model.state_dict().keys() == state.keys()
    model.load_state_dict(state, strict=True)
    x = torch.randn(ONEDNN_LINEAR_MIN_ROWS * 2, 8)
    model(x).sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    assert isinstance(integer_twin(model[0]), IntegerLinear)  # the exact twin still builds from it
    use_onednn_linears(model, False)
    assert all(type(m) is nn.Linear for m in (model[0], model[2]))


def test_codecs_run_their_linear_layers_through_onednn():
    from latentcodec.models.dlf import DLF, DLFConfig

    model = DLF(DLFConfig.tiny())
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is OneDNNLinear for m in linears if type(m) is not nn.modules.linear.NonDynamicallyQuantizableLinear)

import pytest
import torch

from latentcodec.models.dlf import DLF, DLFConfig
from latentcodec.models.glc_image import GLCImage, GLCImageConfig


def deterministic_state(model, make_weights) -> dict:
    """Weights for any model from the reference's per-key rules: independent of torch's RNG,
    so golden files stay valid across torch versions."""
    return {k: torch.from_numpy(make_weights.make_tensor(k, tuple(v.shape))) for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def tiny_glc(make_weights) -> GLCImage:
    model = GLCImage(GLCImageConfig.tiny())
    model.load_state_dict_strict(deterministic_state(model, make_weights), source="deterministic")
    return model.eval()


@pytest.fixture(scope="module")
def tiny_dlf() -> DLF:
    """DLF tiny with random weights (a fresh one per test module, as tests switch its modes)."""
    torch.manual_seed(0)
    model = DLF(DLFConfig.tiny())
    with torch.no_grad():
        # Push the constant prior's scales up so that a share of the detail symbols is really coded
        # (random weights put most predicted sigmas below the 0.12 skip threshold).
        model.hybrid_codec.quantize_feat.factorized_prior_vec.normal_(0.0, 3.0)
    return model.eval()

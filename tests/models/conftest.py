import pytest
import torch

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

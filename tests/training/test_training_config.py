from pathlib import Path

import pytest

from latentcodec.errors import ConfigError
from latentcodec.training.config import TrainConfig, load_config, parse_override
from training_helpers import tiny_config, write_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "latentcodec" / "training" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    assert config.stage in ("vqgan", "latent", "joint", "video", "dlf_align", "dlf_pixel")


def test_unknown_key_is_rejected(tmp_path, image_folder):
    config = tiny_config(tmp_path, image_folder, "vqgan")
    config["optim"]["learning_rate"] = 1e-3
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(write_config(tmp_path / "c.yaml", config))


def test_overrides_are_typed(tmp_path, image_folder):
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, image_folder, "latent"))
    config = load_config(path, ["optim.lr=2e-4", "rates.lambdas=[1, 2, 3, 4]", "optim.betas=[0.5, 0.9]"])
    assert config.optim.lr == pytest.approx(2e-4)
    assert config.rates.lambdas == (1.0, 2.0, 3.0, 4.0)
    assert config.optim.betas == (0.5, 0.9)
    with pytest.raises(ConfigError):
        load_config(path, ["optim.lr=fast"])
    with pytest.raises(ConfigError):
        load_config(path, ["optim.nope=1"])
    with pytest.raises(ConfigError):
        parse_override("no-equals-sign")


def test_code_head_needs_matching_crop(tmp_path, image_folder):
    config = tiny_config(tmp_path, image_folder, "latent")
    config["data"]["crop_size"] = 128  # tiny's code head reads 4x4 latents, i.e. 64x64 crops
    with pytest.raises(ConfigError, match="64x64"):
        load_config(write_config(tmp_path / "c.yaml", config))


def test_wrong_number_of_lambdas(tmp_path, image_folder):
    config = tiny_config(tmp_path, image_folder, "latent")
    config["rates"]["lambdas"] = [1.0, 2.0]
    with pytest.raises(ConfigError, match="lambdas"):
        load_config(write_config(tmp_path / "c.yaml", config))

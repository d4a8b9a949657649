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
    assert config.stage in ("vqgan", "latent", "joint", "video", "dlf_align", "dlf_pixel", "percov2_vae", "percov2_flow")


def test_percov2_config_checks(tmp_path, image_folder):
    config = tiny_config(tmp_path, image_folder, "percov2_flow")
    config["data"]["crop_size"] = 72  # tiny: 16 pixels per token
    with pytest.raises(ConfigError, match="multiple of 16"):
        load_config(write_config(tmp_path / "c.yaml", config))
    config["data"]["crop_size"] = 64
    path = write_config(tmp_path / "c.yaml", config)
    assert load_config(path).percov2.caption_dropout == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="caption_dropout"):
        load_config(path, ["percov2.caption_dropout=1.5"])
    with pytest.raises(ConfigError, match="one operating point"):
        load_config(path, ["rates.target_bpp=[0.1, 0.1, 0.1, 0.1]"])
    with pytest.raises(ConfigError, match="PerCoV2 preset"):
        load_config(path, ["preset=huge"])


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


@pytest.mark.parametrize("key", ["codebook_init_crops", "codebook_init_iterations"])
def test_codebook_init_counts_cannot_be_negative(tmp_path, image_folder, key):
    config = tiny_config(tmp_path, image_folder, "vqgan")
    config[key] = -1
    with pytest.raises(ConfigError, match="codebook_init_crops and codebook_init_iterations"):
        load_config(write_config(tmp_path / "c.yaml", config))

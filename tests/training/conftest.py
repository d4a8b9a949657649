from __future__ import annotations

from pathlib import Path

import pytest
from training_helpers import write_images


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("train_images"), 8)


@pytest.fixture(scope="session")
def validation_folder(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("val_images"), 1, size=(128, 64), seed=1)

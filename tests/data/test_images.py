import numpy as np
import pytest
import torch
from PIL import Image

from latentcodec.data.images import load_rgb, open_image, pil_to_tensor, tensor_to_uint8, to_rgb
from latentcodec.errors import InputError


def test_tensor_round_trip_is_exact():
    pixels = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    x = pil_to_tensor(Image.fromarray(pixels))
    assert x.shape == (1, 3, 9, 11) and x.dtype == torch.float32
    assert np.array_equal(tensor_to_uint8(x), pixels)


def test_16_bit_greyscale_keeps_its_range():
    image = Image.fromarray(np.array([[0, 65535], [32768, 1000]], dtype=np.uint16))
    with pytest.warns(UserWarning):
        rgb = to_rgb(image)
    values = np.asarray(rgb)[..., 0]
    assert values[0, 0] == 0 and values[0, 1] == 255 and values[1, 0] == 128


def test_missing_and_non_image_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(InputError):
        load_rgb(tmp_path / "bad.png")
    with pytest.raises(InputError, match="directory"):
        open_image(tmp_path)

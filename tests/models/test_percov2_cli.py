"""PerCoV2 through the command line (tiny preset weights): hybrid mode, captions, steps and CFG."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latentcodec.cli import main
from latentcodec.data.images import tensor_to_pil
from latentcodec.models.percov2 import PerCoV2, PerCoV2Config


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = PerCoV2(PerCoV2Config.tiny())
    with torch.no_grad():
        model.transformer.pos_embed.proj.weight[:, 16:].normal_(0.0, 0.5)  # let the tokens reach the picture
    path = tmp_path_factory.mktemp("percov2") / "weights"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    generator = torch.Generator().manual_seed(1)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 5, 7, generator=generator), size=(64, 96),
                                             mode="bilinear", align_corners=False)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    tensor_to_pil(smooth).save(path)
    return path


def test_compress_hybrid_info_and_decompress_with_steps_and_cfg(weights, photo, tmp_path, capsys):
    full, hybrid = tmp_path / "full.lci", tmp_path / "hybrid.lci"
    common = ["--model", "percov2", "--weights", str(weights), "--quiet"]
    assert main(["compress", str(photo), *common, "--quality", "3", "-o", str(full)]) == 0  # every token
    assert main(["compress", str(photo), *common, "--passes", "2", "-o", str(hybrid)]) == 0
    assert hybrid.stat().st_size < full.stat().st_size
    capsys.readouterr()
    assert main(["info", str(hybrid), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["token_sections"][0]["transmitted_passes"] == 2
    outputs = {}
    for name, options in (("default", []), ("steps", ["--steps", "1"]), ("cfg", ["--cfg", "1"])):
        png = tmp_path / f"{name}.png"
        assert main(["decompress", str(full), "--weights", str(weights), "-o", str(png), *options]) == 0
        outputs[name] = np.asarray(Image.open(png))
        assert outputs[name].shape == (64, 96, 3)
    assert not np.array_equal(outputs["default"], outputs["steps"])
    # No caption: both guidance branches are the same, so the scale cannot change the picture.
    assert np.array_equal(outputs["default"], outputs["cfg"])


def test_bad_percov2_options_are_one_line_errors(weights, photo, tmp_path, capsys):
    out = tmp_path / "x.lci"
    cases = [
        (["compress", str(photo), "--caption", "a red barn", "-o", str(out)], "apply to percov2 only"),
        (["compress", str(photo), "--model", "percov2", "--weights", str(weights), "--caption", "a red barn", "-o",
          str(out)], "no text encoders"),
        (["compress", str(photo), "--model", "percov2", "--weights", str(weights), "--passes", "2",
          "--target-bytes", "100", "-o", str(out)], "do not combine"),
        (["compress", str(photo), "--model", "percov2", "--weights", str(weights), "--passes", "2",
          "--quality", "1", "-o", str(out)], "not both"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
        assert not out.exists()
    glc = tmp_path / "glc.lci"
    assert main(["compress", str(photo), "-o", str(glc), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["decompress", str(glc), "--steps", "4", "-o", str(tmp_path / "glc.png")]) == 1
    assert "apply to percov2 files" in capsys.readouterr().err
    assert not (tmp_path / "glc.png").exists()

"""Captions from a local captioning model (a tiny random BLIP saved in the transformers layout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from latentcodec.cli import main
from latentcodec.errors import WeightsError
from latentcodec.models.percov2_captioner import LocalCaptioner
from test_percov2_sd3 import captioned_folder  # noqa: F401  (a module fixture: SD3 with text encoders)

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photo", "of", "two", "parrots", "house",
         "red", "green", "sky", "the", "with", "boat", "door", "barn"]


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory):
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip import BlipImageProcessor

    folder = tmp_path_factory.mktemp("blip")
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    torch.manual_seed(0)
    text = dict(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, encoder_hidden_size=32, max_position_embeddings=64, bos_token_id=5,
                pad_token_id=0, sep_token_id=3)
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
                  patch_size=16)
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    return folder


def test_a_local_model_captions_deterministically(blip_folder):
    captioner = LocalCaptioner(blip_folder, max_new_tokens=6)
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    caption = captioner(x)
    assert caption and set(caption.split()) <= set(WORDS[5:])
    assert caption == captioner(x)  # greedy decoding
    pil = Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    assert captioner(pil) == caption


def test_missing_or_wrong_captioning_models_are_named(tmp_path):
    with pytest.raises(WeightsError, match="config.json is missing"):
        LocalCaptioner(tmp_path / "nothing")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(WeightsError, match="cannot load a captioning model"):
        LocalCaptioner(tmp_path / "bert")


def test_cli_codes_the_captioner_caption_in_the_file(blip_folder, captioned_folder, tmp_path, capsys):  # noqa: F811
    import latentcodec

    _, weights = captioned_folder  # SD3 in the diffusers layout, with (tiny) text encoders
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(3).random((40, 56, 3)) * 255).astype(np.uint8)).save(photo)
    out = tmp_path / "photo.lci"
    argv = ["compress", str(photo), "--model", "percov2", "--weights", str(weights), "--captioner", str(blip_folder),
            "--quiet", "-o", str(out)]
    assert main(argv) == 0
    expected = LocalCaptioner(blip_folder)(Image.open(photo))
    assert f'caption "{expected}"' in capsys.readouterr().out
    assert latentcodec.load("percov2", weights=str(weights)).model.decode_streams(out.read_bytes()).caption == expected
    # --caption and --captioner exclude each other; a missing captioner is a one-line error, no file
    capsys.readouterr()
    assert main([*argv[:-2], "--caption", "x", "-o", str(tmp_path / "b.lci")]) == 1
    assert "exclude each other" in capsys.readouterr().err and not (tmp_path / "b.lci").exists()
    assert main([*argv[:6], "--captioner", str(tmp_path / "none"), "-o", str(tmp_path / "c.lci")]) == 1
    err = capsys.readouterr().err
    assert "config.json is missing" in err and err.count("\n") == 1 and not (tmp_path / "c.lci").exists()


def test_eval_codes_each_images_caption_from_a_file_or_a_captioner(blip_folder, captioned_folder,  # noqa: F811
                                                                    tmp_path, capsys):
    """`latentcodec eval --model percov2` with --captions (a JSON file) or --captioner: every file the
    evaluation writes carries that image's caption, and the results name it."""
    import json

    import latentcodec

    _, weights = captioned_folder
    data = tmp_path / "images"
    data.mkdir()
    for index, name in enumerate(("barn", "boat")):
        pixels = (np.random.default_rng(index).random((40, 56, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(data / f"{name}.png")
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"barn.png": "a red barn", "boat": "the boat with a green door"}))
    model = latentcodec.load("percov2", weights=str(weights)).model
    common = ["eval", "--model", "percov2", "--weights", str(weights), "--data", str(data), "--qualities", "0",
              "--metrics", "psnr", "--workers", "1", "--no-progress"]
    made = LocalCaptioner(blip_folder)
    for option, expected in ((["--captions", str(captions)], {"barn": "a red barn", "boat": "the boat with a green door"}),
                             (["--captioner", str(blip_folder)],
                              {name: made(Image.open(data / f"{name}.png")) for name in ("barn", "boat")})):
        out = tmp_path / option[0].strip("-")
        assert main([*common, "--out", str(out), *option]) == 0
        for name, caption in expected.items():
            stored = next(out.glob(f"bitstreams/*/*/{name}.lci")).read_bytes()
            assert model.decode_streams(stored).caption == caption
        items = [json.loads(line) for path in out.rglob("*.jsonl") for line in path.read_text().splitlines()]
        assert any(caption in json.dumps(item) for item in items for caption in expected.values())
    # a caption missing from the file, a wrong model, both sources: one-line errors
    captions.write_text(json.dumps({"barn": "a red barn"}))
    for argv, message in (([*common, "--out", str(tmp_path / "e1"), "--captions", str(captions)], "no caption for image 'boat'"),
                          ([*common[:2], "glc-image", *common[5:], "--out", str(tmp_path / "e2"), "--captions",
                            str(captions)], "apply to --model percov2 only"),
                          ([*common, "--out", str(tmp_path / "e3"), "--captions", str(captions), "--captioner",
                            str(blip_folder)], "exclude each other")):
        capsys.readouterr()
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err

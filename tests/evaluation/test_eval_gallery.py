"""latentcodec gallery: one PNG per operating point, original | ours | best classical at no more bytes."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from latentcodec.cli import main
from latentcodec.evaluation.gallery import best_matched, build_gallery
from latentcodec.evaluation.results import ItemRecord


def test_one_page_per_point_with_three_columns_per_image(evaluated, tmp_path):
    pages = build_gallery(evaluated / "out", tmp_path / "g", ["kodim23-crop", "ramp"], metric="psnr")
    assert [p.point for p in pages] == ["q1", "q2", "q3"]
    for page in pages:
        data = page.path.read_bytes()
        assert len(data) == page.bytes <= 1_000_000
        with Image.open(page.path) as image:
            pixels = np.asarray(image.convert("RGB"))
        width = page.tile_width
        assert pixels.shape[1] >= 3 * width  # original, ours, classical
        # each picture column holds an image, not the white background
        for column in range(3):
            left = 6 + column * (width + 6)
            assert pixels[6:40, left:left + width].std() > 1


def test_the_rival_is_the_best_matched_file_never_larger_than_ours(evaluated):
    records = [ItemRecord.from_dict(r) for r in json.loads((evaluated / "out" / "per_image.json").read_text())]
    ours = {(r.image, r.point): r for r in records if r.curve == "fake-glc"}
    for (image, point), mine in ours.items():
        rival = best_matched(records, image, point, "psnr")
        if rival is None:
            continue
        assert rival.bytes <= mine.bytes
        same_point = [r for r in records if r.mode == "matched" and r.image == image and r.point == point
                      and r.status == "ok"]
        assert rival.metrics["psnr"] == max(r.metrics["psnr"] for r in same_point)


def test_page_shrinks_to_the_byte_limit(evaluated, tmp_path):
    small = build_gallery(evaluated / "out", tmp_path / "s", ["kodim23-crop"], metric="psnr", max_bytes=20_000)
    assert all(p.bytes <= 20_000 or p.tile_width <= 96 for p in small)
    assert small[0].tile_width < 384


def test_cli_refuses_to_overwrite_and_bad_input(evaluated, tmp_path, capsys):
    args = ["gallery", str(evaluated / "out"), "-o", str(tmp_path / "g"), "--images", "ramp", "--metric", "psnr"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 1 and "--force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    capsys.readouterr()
    assert main(["gallery", str(evaluated / "out"), "-o", str(tmp_path / "h"), "--images", "nope",
                 "--metric", "psnr"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
    assert not (tmp_path / "h").exists()
    assert main(["gallery", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x"), "--images", "ramp"]) == 1
    capsys.readouterr()
    # a metric the evaluation did not score is an error, not rows of "no classical file"
    assert main(["gallery", str(evaluated / "out"), "-o", str(tmp_path / "m"), "--images", "ramp",
                 "--metric", "ms_ssim"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ms_ssim" in err and "psnr" in err
    assert not (tmp_path / "m").exists()

"""``latentcodec gallery``: one PNG per operating point that a person can judge at a glance.

Each PNG has one row per chosen image: the original, ours, and the best classical codec *at no more
bytes* (of the ``-matched`` curves of an evaluation folder, the one whose file scores best on
``metric`` for that image at that point), with the byte count and the metric under each picture.
Pictures are whole images scaled to a common width, never crops, so colour and layout can be
compared; the width shrinks until the PNG fits ``max_bytes``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageDraw

from latentcodec.errors import InputError
from latentcodec.evaluation.metrics import HIGHER_IS_BETTER
from latentcodec.evaluation.report import Tile, baseline_tile, find_original, model_tile, read_json
from latentcodec.evaluation.results import PER_IMAGE_JSON, RUN_JSON, STATUS_OK, ItemRecord

CAPTION_HEIGHT = 30  # two lines of the default font
GAP = 6
DEFAULT_MAX_BYTES = 1_000_000


class GalleryPage(NamedTuple):
    point: str
    path: Path
    bytes: int
    tile_width: int


def best_matched(records: Sequence[ItemRecord], image: str, point: str, metric: str) -> ItemRecord | None:
    """The classical file of the ``-matched`` curves that scores best on ``metric`` for one image and point."""
    candidates = [r for r in records if r.mode == "matched" and r.image == image and r.point == point
                  and r.status == STATUS_OK and metric in r.metrics]
    if not candidates:
        return None
    sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0
    return max(candidates, key=lambda r: sign * r.metrics[metric])


def _caption(tile: Tile, record: ItemRecord | None, metric: str) -> str:
    if record is None or metric not in record.metrics:
        return tile.caption
    return f"{tile.caption}, {metric} {record.metrics[metric]:.3f}"


def _wrapped(caption: str, width: int, lines: int = 2) -> str:
    """``caption`` on at most ``lines`` lines of ``width`` characters, broken at spaces."""
    import textwrap

    return "\n".join(textwrap.wrap(caption, max(8, width))[:lines])


def _render(rows: Sequence[Sequence[tuple[Tile, str]]], tile_width: int) -> Image.Image:
    heights = []
    for row in rows:
        sizes = [t.image.size for t, _ in row if t.image is not None]
        heights.append(max(round(h * tile_width / w) for w, h in sizes) if sizes else tile_width // 2)
    columns = max(len(row) for row in rows)
    page = Image.new("RGB", (columns * (tile_width + GAP) + GAP, sum(h + CAPTION_HEIGHT + GAP for h in heights) + GAP),
                     "white")
    draw = ImageDraw.Draw(page)
    top = GAP
    for row, height in zip(rows, heights):
        for column, (tile, caption) in enumerate(row):
            left = GAP + column * (tile_width + GAP)
            if tile.image is not None:
                w, h = tile.image.size
                page.paste(tile.image.resize((tile_width, round(h * tile_width / w)), Image.LANCZOS), (left, top))
            else:
                draw.rectangle((left, top, left + tile_width - 1, top + height - 1), outline="grey")
            draw.multiline_text((left + 2, top + height + 2), _wrapped(caption, tile_width // 6), fill="black",
                                spacing=2)
        top += height + CAPTION_HEIGHT + GAP
    return page


def _png_fitting(rows, widest: int, max_bytes: int) -> tuple[bytes, int]:
    width = widest
    while True:
        buffer = io.BytesIO()
        _render(rows, width).save(buffer, "PNG", optimize=True)
        if buffer.tell() <= max_bytes or width <= 96:
            return buffer.getvalue(), width
        width = int(width * 0.85)


def build_gallery(
    results_dir: str | Path,
    output_dir: str | Path,
    images: Sequence[str],
    metric: str = "ms_ssim",
    max_bytes: int = DEFAULT_MAX_BYTES,
    tile_width: int = 384,
    force: bool = False,
) -> list[GalleryPage]:
    """Write ``gallery-<point>.png`` per model operating point into ``output_dir``."""
    root = Path(results_dir)
    run = read_json(root / RUN_JSON, default=None)
    if run is None or not (root / PER_IMAGE_JSON).is_file():
        raise InputError(f"{root}: not an evaluation folder (no {RUN_JSON} / {PER_IMAGE_JSON})")
    records = [ItemRecord.from_dict(r) for r in read_json(root / PER_IMAGE_JSON, default=[])]
    model = run.get("model_curve")
    ours = [r for r in records if r.curve == model and r.status == STATUS_OK]
    if not ours:
        raise InputError(f"{root}: no model items (evaluate a model, with --keep-reconstructions model or all)")
    if not any(metric in r.metrics for r in ours):
        scored = sorted({name for r in ours for name in r.metrics})
        raise InputError(f"{metric}: not scored in the evaluation at {root} (it has {', '.join(scored)})")
    missing = [i for i in images if i not in {r.image for r in ours}]
    if missing:
        raise InputError(f"{', '.join(missing)}: not in the evaluation at {root}")
    out = Path(output_dir)
    points = list(dict.fromkeys(r.point for r in sorted(ours, key=lambda r: r.bpp or 0)))
    targets = {point: out / f"gallery-{point}.png" for point in points}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not force:
        raise InputError(f"{existing[0]} exists (use --force to overwrite)")
    data_root = Path(run.get("data", ""))
    originals = {}
    for image in images:
        originals[image] = find_original(data_root, image)
        if originals[image] is None:
            raise InputError(f"{image}: original not found under {data_root}")
    out.mkdir(parents=True, exist_ok=True)
    pages = []
    for point in points:
        rows = []
        for image in images:
            original = originals[image]
            whole = (0, 0, *original.size)
            mine = next(r for r in ours if r.image == image and r.point == point)
            rival = best_matched(records, image, point, metric)
            ours_tile = model_tile(root, mine, whole)
            row = [(Tile(f"{image} original", original), f"{image} original {original.size[0]}x{original.size[1]}"),
                   (ours_tile, _caption(ours_tile, mine, metric))]
            if rival is None:
                row.append((Tile("no classical file that small", None), "no classical file at no more bytes"))
            else:
                tile = baseline_tile(root, rival.curve, rival, original.size, whole)
                row.append((tile, _caption(tile, rival, metric)))
            rows.append(row)
        png, width = _png_fitting(rows, tile_width, max_bytes)
        targets[point].write_bytes(png)
        pages.append(GalleryPage(point, targets[point], len(png), width))
    return pages

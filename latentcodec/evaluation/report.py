"""``latentcodec report``: one self-contained, offline HTML page for an evaluation folder.

Everything is inside the file: images are PNG data URIs, the style sheet and the one small script
are inline, nothing is fetched. The page holds RD plots for every metric, BD-rates of the model
against each baseline curve, the results table, and side-by-side crops of chosen images: the
original, ours, and every classical codec *at matched bytes* (its largest file not above ours,
from the ``-matched`` curves), each with its size in bytes.

The inline script checks on load that every image decoded (non-zero natural size) and writes the
outcome into ``#image-check`` (``data-images``, ``data-loaded``), which a headless browser test reads.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from latentcodec.errors import InputError, LatentCodecError
from latentcodec.evaluation import baselines as classical
from latentcodec.evaluation.bdrate import bd_rate_curves
from latentcodec.evaluation.images import load_rgb
from latentcodec.evaluation.plots import plot_png
from latentcodec.evaluation.results import (
    PER_IMAGE_JSON,
    RESULTS_DIR,
    RUN_JSON,
    STATUS_OK,
    Curve,
    ItemRecord,
    load_results,
)

NON_METRIC_KEYS = {
    "bpp", "bytes", "estimated_bpp", "encoding_time", "decoding_time", "metrics_time", "search_time",
    "value", "target_bpp", "quality", "qp", "distance",
}  # fmt: skip

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f0f0f0; } td.name { text-align: left; }
.plots img { max-width: 100%; margin: 0 0 1em 0; border: 1px solid #ddd; }
.row { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 1.2em; }
figure { margin: 0; text-align: center; font-size: 0.8em; }
figure img { display: block; image-rendering: pixelated; border: 1px solid #999; }
.missing { width: 160px; height: 160px; display: flex; align-items: center; justify-content: center;
  border: 1px dashed #999; color: #666; padding: 4px; }
.meta { color: #555; font-size: 0.9em; }
"""

CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var images = document.querySelectorAll('img');
  var loaded = 0;
  images.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { loaded += 1; } });
  var marker = document.getElementById('image-check');
  marker.setAttribute('data-images', String(images.length));
  marker.setAttribute('data-loaded', String(loaded));
  marker.textContent = loaded + ' of ' + images.length + ' images loaded';
});
"""


class Tile(NamedTuple):
    caption: str
    image: Image.Image | None  # None: a placeholder with ``caption`` as the reason


def build_report(
    results_dir: str | Path,
    output: str | Path | None = None,
    images: Sequence[str] | None = None,
    crop: int = 256,
    max_images: int = 2,
) -> Path:
    """Write the HTML report of an evaluation folder; returns its path."""
    root = Path(results_dir)
    if not root.is_dir():
        raise InputError(f"{root}: no such evaluation folder")
    curve_files = sorted((root / RESULTS_DIR).glob("*.json"))
    if not curve_files:
        raise InputError(f"{root}: no {RESULTS_DIR}/*.json (is this the --out of latentcodec eval?)")
    if crop < 16:
        raise InputError("--crop must be at least 16 pixels")
    run = read_json(root / RUN_JSON, default={})
    curves = [load_results(path) for path in curve_files]
    records = [ItemRecord.from_dict(r) for r in read_json(root / PER_IMAGE_JSON, default=[])]
    model = run.get("model_curve")
    model_curve = next((c for c in curves if model and c.name == model), None)
    if model_curve is not None:  # the model first, so it keeps the first colour in every plot
        curves = [model_curve] + [c for c in curves if c is not model_curve]

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>latentcodec evaluation: {html.escape(root.name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>latentcodec evaluation: {html.escape(str(model or 'baselines'))}</h1>",
        _run_summary(run, curves),
        '<div id="image-check" data-images="0" data-loaded="0">(image check has not run)</div>',
        "<h2>Rate-distortion curves</h2>",
        _plots_section(curves),
    ]
    if model_curve is not None:
        parts += ["<h2>BD-rate of the model against each baseline curve</h2>", _bdrate_section(model_curve, curves)]
    target_section = _targets_section(curves)
    if target_section:
        parts += ["<h2>At the same byte budgets (--target-bpp)</h2>", target_section]
    parts += ["<h2>Results (means over images)</h2>", _results_table(curves)]
    parts += ["<h2>Visual comparison at matched bytes</h2>", _comparison_section(root, run, records, images, crop, max_images)]
    parts += [f"<script>{CHECK_SCRIPT}</script>", "</body></html>"]
    output = Path(output) if output is not None else root / "report.html"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(parts), encoding="utf-8")
    return output


# -- sections ------------------------------------------------------------------------------


def _run_summary(run: dict, curves: Sequence[Curve]) -> str:
    items = [
        ("model", run.get("model") or "(baselines only)"),
        ("weights", run.get("weights") or "(default)"),
        ("data", run.get("data", "?")),
        ("images", len(run.get("images", [])) or max((c.num_images for c in curves), default=0)),
        ("curves", len(curves)),
        ("rate", "bpp = 8 x whole-file bytes / original H x W"),
        ("written", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")),
    ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td class='name'>{html.escape(str(v))}</td></tr>" for k, v in items)
    return f"<table class='meta'>{rows}</table>"


def _metrics_of(curves: Sequence[Curve]) -> list[str]:
    names: list[str] = []
    for curve in curves:
        for point in curve.points:
            names += [k for k in point.values if k not in NON_METRIC_KEYS and k not in names]
    return names


def _plots_section(curves: Sequence[Curve]) -> str:
    figures = []
    for metric in _metrics_of(curves):
        png = plot_png(curves, metric, log_rate=True)
        figures.append(f'<img alt="{html.escape(metric)} vs bpp" src="{_data_uri(png)}">')
    if not figures:
        return "<p>No metric values in these results.</p>"
    return f"<div class='plots'>{''.join(figures)}</div>"


def _bdrate_section(model_curve: Curve, curves: Sequence[Curve]) -> str:
    metrics = [m for m in _metrics_of([model_curve])]
    header = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    rows = []
    for curve in curves:
        if curve is model_curve:
            continue
        cells = []
        for metric in metrics:
            try:
                result = bd_rate_curves(curve, model_curve, metric)
                cells.append(f"<td title='over {result.low:.4g}..{result.high:.4g}'>{result.percent:+.1f} %</td>")
            except LatentCodecError as exc:
                cells.append(f"<td title='{html.escape(str(exc))}'>&ndash;</td>")
        rows.append(f"<tr><td class='name'>{html.escape(curve.name)}</td>{''.join(cells)}</tr>")
    note = (
        "<p class='meta'>Negative: the model needs that much less rate for the same metric value "
        "(PCHIP on log-rate over the overlapping metric interval; &ndash; where there is no overlap or "
        "fewer than 3 points).</p>"
    )
    return f"{note}<table><tr><th>anchor</th>{header}</tr>{''.join(rows)}</table>"


def _results_table(curves: Sequence[Curve]) -> str:
    metrics = _metrics_of(curves)
    columns = ["bpp", "bytes", "estimated_bpp"] + metrics + ["encoding_time", "decoding_time"]
    header = "".join(f"<th>{html.escape(c)}</th>" for c in ["curve", "point"] + columns)
    rows = []
    for curve in curves:
        for point in curve.points:
            cells = "".join(f"<td>{_format(point.values.get(c))}</td>" for c in columns)
            rows.append(
                f"<tr><td class='name'>{html.escape(curve.name)}</td>"
                f"<td class='name'>{html.escape(point.point)}</td>{cells}</tr>"
            )
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _targets_section(curves: Sequence[Curve]) -> str:
    """One table per target bpp: every codec's ``-target`` curve (per image the largest file not
    above the same budget), the comparison at equal bytes; empty when there are none."""
    target_curves = [c for c in curves if c.name.endswith("-target")]
    if not target_curves:
        return ""
    metrics = _metrics_of(target_curves)
    columns = ["bpp", "bytes"] + metrics
    header = "".join(f"<th>{html.escape(c)}</th>" for c in ["codec"] + columns)
    labels = list(dict.fromkeys(p.point for c in target_curves for p in c.points))
    tables = []
    for label in labels:
        rows = []
        for curve in target_curves:
            point = next((p for p in curve.points if p.point == label), None)
            if point is None:
                continue
            name = curve.name.removesuffix("-target")
            note = " (not every image reached)" if label in curve.incomplete_points else ""
            cells = "".join(f"<td>{_format(point.values.get(c))}</td>" for c in columns)
            rows.append(f"<tr><td class='name'>{html.escape(name + note)}</td>{cells}</tr>")
        tables.append(f"<h3>{html.escape(label.replace('bpp-', 'target '))} bpp</h3>"
                      f"<table><tr>{header}</tr>{''.join(rows)}</table>")
    return ("<p class='meta'>Per image, each codec's largest file not above the target (classical codecs over "
            "their parameter and downscale factor, learned codecs over their continuous rate, downscaling "
            "allowed); means over the images that reached it.</p>" + "".join(tables))


def _comparison_section(
    root: Path, run: dict, records: Sequence[ItemRecord], chosen: Sequence[str] | None, crop: int, max_images: int
) -> str:
    model = run.get("model_curve")
    model_records = [r for r in records if r.curve == model and r.status == STATUS_OK]
    if not model or not model_records:
        return "<p>This evaluation has no model items, so there is nothing to match bytes against.</p>"
    available = list(dict.fromkeys(r.image for r in model_records))
    if chosen:
        unknown = [i for i in chosen if i not in available]
        if unknown:
            raise InputError(f"--images: {', '.join(unknown)} not in this evaluation (it has {', '.join(available[:8])}...)")
        image_ids = list(chosen)
    else:
        image_ids = available[:max_images]
    matched_curves = sorted({r.curve for r in records if r.mode == "matched"})
    data_root = Path(run.get("data", ""))
    sections = []
    for image_id in image_ids:
        original = find_original(data_root, image_id)
        if original is None:
            sections.append(f"<p>{html.escape(image_id)}: original not found under {html.escape(str(data_root))}.</p>")
            continue
        box = _centre_box(original.size, crop)
        sections.append(f"<h3>{html.escape(image_id)} (crop {box[2] - box[0]}x{box[3] - box[1]} at {box[0]},{box[1]})</h3>")
        for ours in sorted((r for r in model_records if r.image == image_id), key=lambda r: r.bytes or 0):
            tiles = [Tile(f"original ({original.size[0]}x{original.size[1]})", original.crop(box))]
            tiles.append(model_tile(root, ours, box))
            for curve in matched_curves:
                record = next(
                    (r for r in records if r.curve == curve and r.image == image_id and r.point == ours.point), None
                )
                tiles.append(baseline_tile(root, curve, record, original.size, box))
            sections.append(f"<p><b>{html.escape(ours.point)}</b>: ours {ours.bytes} B ({ours.bpp:.4f} bpp)</p>")
            sections.append(_tiles_row(tiles))
    if not matched_curves:
        sections.insert(0, "<p>No -matched baseline curves (run eval with --baselines and without --no-matched).</p>")
    return "\n".join(sections)


def model_tile(root: Path, record: ItemRecord, box: tuple[int, int, int, int]) -> Tile:
    label = f"ours {record.curve} {record.point}: {record.bytes} B"
    if not record.reconstruction or not (root / record.reconstruction).is_file():
        return Tile(f"{label} (reconstruction not kept)", None)
    return Tile(label, load_rgb(root / record.reconstruction).crop(box))


def baseline_tile(
    root: Path, curve: str, record: ItemRecord | None, size: tuple[int, int], box: tuple[int, int, int, int]
) -> Tile:
    codec_name = curve.removesuffix("-matched")
    if record is None:
        return Tile(f"{codec_name}: not evaluated", None)
    if record.status != STATUS_OK:
        return Tile(f"{codec_name}: no file that small ({record.note})", None)
    codec = classical.get_baseline(record.codec)
    data = (root / record.bitstream).read_bytes()
    reconstruction = classical.decode_scaled(codec, data, record.scale, size)
    setting = codec.format_value(record.value) + (f", down x{record.scale}" if record.scale != 1 else "")
    return Tile(f"{codec_name} {setting}: {len(data)} B", reconstruction.crop(box))


def _tiles_row(tiles: Sequence[Tile]) -> str:
    figures = []
    for tile in tiles:
        caption = html.escape(tile.caption)
        if tile.image is None:
            figures.append(f"<figure><div class='missing'>{caption}</div></figure>")
        else:
            uri = _data_uri(_png_bytes(tile.image))
            figures.append(f"<figure><img alt='{caption}' src='{uri}'><figcaption>{caption}</figcaption></figure>")
    return f"<div class='row'>{''.join(figures)}</div>"


# -- helpers -------------------------------------------------------------------------------


def find_original(data_root: Path, image_id: str) -> Image.Image | None:
    from latentcodec.evaluation.images import discover_images

    try:
        refs = discover_images(data_root)
    except LatentCodecError:
        return None
    for ref in refs:
        if ref.image_id == image_id:
            return load_rgb(ref.path)
    return None


def _centre_box(size: tuple[int, int], crop: int) -> tuple[int, int, int, int]:
    width, height = size
    crop_w, crop_h = min(crop, width), min(crop, height)
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _format(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "&ndash;" if value is None else html.escape(str(value))
    if value == int(value) and abs(value) >= 10:
        return f"{int(value)}"
    return f"{value:.4g}"


def read_json(path: Path, default):
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


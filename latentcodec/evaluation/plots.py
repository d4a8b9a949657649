"""Rate-distortion plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from latentcodec.errors import InputError
from latentcodec.evaluation.results import Curve

def lower_is_better(metric: str) -> bool:
    """From the metrics' own declarations; names they do not know (e.g. ``encoding_time``) count as
    lower-is-better only for the distance-like families."""
    from latentcodec.evaluation.metrics import HIGHER_IS_BETTER

    name = metric.lower()
    if name in HIGHER_IS_BETTER:
        return not HIGHER_IS_BETTER[name]
    return name.startswith(("lpips", "dists", "fid", "kid", "nlpd", "butteraugli")) or name.endswith("_time")


MODE_SUFFIXES = ("-matched", "-target")
SCALE_LINESTYLES = {1: "-", 2: "--", 4: ":", 8: "-."}


class CurveStyle(NamedTuple):
    family: str
    linestyle: str
    marker: str


def curve_style(name: str) -> CurveStyle:
    """Codec family (one colour each) and mode/scale (line style, marker) from a curve name.

    ``jpeg`` solid, ``jpeg-down2`` dashed, ``-down4`` dotted, ``-down8`` dash-dot; ``-matched``
    crosses and ``-target`` squares without lines, since their points are chosen per image.
    """
    for suffix, marker in zip(MODE_SUFFIXES, ("x", "s")):
        if name.endswith(suffix):
            return CurveStyle(name[: -len(suffix)], "none", marker)
    match = re.fullmatch(r"(.+)-down(\d+)", name)
    if match:
        scale = int(match.group(2))
        return CurveStyle(match.group(1), SCALE_LINESTYLES.get(scale, (0, (1, 3))), ".")
    return CurveStyle(name, "-", "o")


def plot_png(
    curves: Sequence[Curve], metric: str, rate_key: str = "bpp", log_rate: bool = False, title: str | None = None
) -> bytes:
    """A PNG (bytes) of ``metric`` against ``rate_key`` for every curve that has both.

    Curves of one codec family share a colour; the first curve given (the model, in the report)
    is drawn thicker.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.0, 5.0), dpi=100)
    axes = figure.add_subplot()
    colours = matplotlib.colormaps["tab10"].colors
    families: dict[str, tuple] = {}
    plotted = 0
    for index, curve in enumerate(curves):
        pairs = sorted(
            (p.values[rate_key], p.values[metric])
            for p in curve.points
            if rate_key in p.values and metric in p.values
        )
        if not pairs:
            continue
        style = curve_style(curve.name)
        colour = families.setdefault(style.family, colours[len(families) % len(colours)])
        xs, ys = zip(*pairs)
        axes.plot(
            xs, ys, color=colour, linestyle=style.linestyle, marker=style.marker, markersize=4,
            linewidth=2.6 if index == 0 else 1.3, label=curve.name,
        )  # fmt: skip
        plotted += 1
    if plotted == 0:
        names = ", ".join(c.name for c in curves)
        raise InputError(f"none of the results ({names}) has {metric!r} against {rate_key!r}")
    if log_rate:
        axes.set_xscale("log")
    axes.set_xlabel(f"{rate_key} (8 x file bytes / pixels)" if rate_key == "bpp" else rate_key)
    axes.set_ylabel(f"{metric} ({'lower' if lower_is_better(metric) else 'higher'} is better)")
    axes.set_title(title or f"{metric} vs {rate_key}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 if plotted <= 18 else 2)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_plot(
    curves: Sequence[Curve], metric: str, output: str | Path, rate_key: str = "bpp", log_rate: bool = False
) -> Path:
    output = Path(output)
    png = plot_png(curves, metric, rate_key=rate_key, log_rate=log_rate)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(png)
    return output

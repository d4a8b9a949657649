"""What ``latentcodec eval`` will do: its configuration, the operating points of every curve (the
model's qualities, the ``--compare`` codecs', each baseline's grid, target and matched modes) and
the curves' descriptions. :mod:`latentcodec.evaluation.runner` carries them out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from latentcodec.errors import InputError, WeightsError
from latentcodec.evaluation import baselines as classical
from latentcodec.evaluation.images import ImageRef
from latentcodec.evaluation.learned import LearnedCodec, load_learned
from latentcodec.evaluation.results import Curve, ItemRecord

MODE_QUALITY = "quality"
MODE_TARGET = "target-bpp"
MODE_MATCHED = "matched"
KEEP_CHOICES = ("none", "model", "all")


@dataclass(frozen=True)
class EvalConfig:
    """Everything ``latentcodec eval`` needs; ``model=None`` evaluates the baselines only."""

    data: str
    out: str
    model: str | None = None
    weights: str | None = None
    qualities: tuple[float, ...] | None = None
    baselines: tuple[str, ...] = ()
    scales: tuple[int, ...] = (1, 2, 4, 8)
    baseline_values: dict[str, tuple[float, ...]] | None = None
    target_bpp: tuple[float, ...] = ()
    matched: bool = True
    metrics: tuple[str, ...] | None = None
    patch_size: int = 256
    workers: int = 0
    device: str = "cpu"
    keep_reconstructions: str = "model"
    progress: bool = True
    captions: str | None = None  # percov2: JSON file {image: caption}
    captioner: str | None = None  # percov2: local captioning model folder
    # Further learned codecs, (model, weights or None for its default), scored beside ``model``.
    compare: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class OperatingPoint:
    """One point of one curve: a codec at a parameter and scale, or a size-limited search."""

    curve: str
    point: str
    codec: str
    mode: str
    learned: bool = False
    value: float | None = None
    scale: int = 1
    target_bpp: float | None = None
    matched_point: str | None = None


class ImageTask(NamedTuple):
    image: ImageRef
    points: tuple[OperatingPoint, ...]
    model_bytes: dict[str, int]  # model point -> file bytes, for matched points finished earlier


class EvalSummary(NamedTuple):
    out_dir: Path
    curves: list[Curve]
    records: list[ItemRecord]
    result_files: list[Path]
    skipped: dict[str, str]  # baseline or metric -> one-line reason
    new_items: int
    resumed_items: int


# -- planning ------------------------------------------------------------------------------


def plan_points(
    config: EvalConfig,
    learned: LearnedCodec | None,
    baseline_names: Sequence[str],
    get_codec: Callable[[str], Any] = classical.get_baseline,
    others: Sequence[LearnedCodec] = (),
) -> list[OperatingPoint]:
    """All operating points in curve order: model first, then the ``others`` (``--compare``, every
    quality), then each baseline's modes.

    ``get_codec`` looks a baseline up by name (the video runner passes its x264/x265 table).
    """
    points: list[OperatingPoint] = []
    model_points: list[OperatingPoint] = []
    if learned is not None:
        model_points = _quality_points(learned, config.qualities)
        points += model_points + _target_points(learned, config.target_bpp)
    for codec in others:
        points += _quality_points(codec, None) + _target_points(codec, config.target_bpp)
    for name in baseline_names:
        codec = get_codec(name)
        values = (config.baseline_values or {}).get(name) or codec.default_values
        values = tuple(codec.check_value(v) for v in values)
        for scale in config.scales:
            curve = name if scale == 1 else f"{name}-down{scale}"
            for value in values:
                label = codec.format_value(value)
                points.append(OperatingPoint(curve, label, name, MODE_QUALITY, value=value, scale=scale))
        for target in config.target_bpp:
            points.append(OperatingPoint(f"{name}-target", f"bpp-{target:g}", name, MODE_TARGET, target_bpp=target))
        if config.matched:
            for model_point in model_points:
                points.append(
                    OperatingPoint(
                        f"{name}-matched", model_point.point, name, MODE_MATCHED, matched_point=model_point.point
                    )
                )
    return points


def _quality_points(codec: LearnedCodec, qualities: Sequence[float] | None) -> list[OperatingPoint]:
    qualities = qualities if qualities is not None else tuple(range(codec.num_qualities))
    return [OperatingPoint(codec.name, f"q{q}", codec.name, MODE_QUALITY, learned=True, value=q)
            for q in (codec.check_quality(quality) for quality in qualities)]


def _target_points(codec: LearnedCodec, targets: Sequence[float]) -> list[OperatingPoint]:
    """The codec at the same byte budgets as the baselines' -target curves, if it has rate control."""
    if not codec.supports_targets:
        return []
    return [OperatingPoint(f"{codec.name}-target", f"bpp-{t:g}", codec.name, MODE_TARGET, learned=True, target_bpp=t)
            for t in targets]


def load_compared(config: EvalConfig, primary: LearnedCodec | None) -> list[LearnedCodec]:
    """The ``--compare`` codecs, loaded; each curve name once (the primary model's included)."""
    codecs: list[LearnedCodec] = []
    names = {primary.name} if primary is not None else set()
    for model, weights in config.compare:
        if ":" not in model and model in classical.BASELINES:
            raise InputError(f"--compare {model}: a classical codec; give it with --baselines")
        percov2 = model == "percov2"
        try:
            codec = load_learned(model, weights, config.device, config.captions if percov2 else None,
                                 config.captioner if percov2 else None)
        except WeightsError as error:
            raise InputError(f"--compare {model}: {error} (here: --compare {model}=WEIGHTS)") from None
        if codec.name in names:
            raise InputError(f"--compare {model}: the curve {codec.name!r} is already in this run")
        names.add(codec.name)
        codecs.append(codec)
    return codecs


def describe_curves(
    points: Sequence[OperatingPoint],
    learned: LearnedCodec | None,
    data: str,
    get_codec: Callable[[str], Any] = classical.get_baseline,
    unit: str = "image",
    rate: str = "bpp = 8 x whole-file bytes / original H x W",
) -> dict[str, str]:
    """Curve name -> description; ``unit`` names what the data set holds (the video runner: sequence)."""
    descriptions: dict[str, str] = {}
    for point in points:
        if point.curve in descriptions:
            continue
        if point.learned:
            text = f"{point.codec} (weights: see run.json)"
            if point.mode == MODE_TARGET:
                text += f", per {unit} the largest file not above the target bpp (rate control, downscaling allowed)"
        else:
            text = get_codec(point.codec).description
            if point.mode == MODE_QUALITY and point.scale != 1:
                text += f", downscaled x{point.scale} (bicubic) and upscaled back (bicubic)"
            elif point.mode == MODE_TARGET:
                text += f", per {unit} the largest file not above the target bpp (any parameter and scale)"
            elif point.mode == MODE_MATCHED:
                text += f", per {unit} the largest file not above {learned.name if learned else 'the model'}'s file"
        descriptions[point.curve] = f"{text}; {rate}; {unit}s: {data}"
    return descriptions

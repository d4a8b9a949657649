"""Evaluation records: the append-only progress log, per-image tables and CompressAI-style curves.

Layout of an evaluation folder ``OUT``:

* ``progress/items-<host>-<pid>.jsonl``: one line per finished (curve, point, image) item. Each
  process appends only to its own file, one ``write`` per line followed by ``fsync``, so a killed
  run leaves at most one torn last line, which the reader ignores; the item is then simply redone.
* ``bitstreams/<curve>/<point>/<image>.<ext>``: every file whose size is counted.
* ``results/<curve>.json``: one curve in CompressAI's results layout
  ``{"name", "description", "results": {"bpp": [...], "<metric>": [...], ...}}``: one entry per
  operating point, each a mean over the images.
* ``per_image.json`` / ``per_image.csv``: every item with its bytes, metrics and timings.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentcodec.errors import InputError
from latentcodec.files import atomic_write

PROGRESS_DIR = "progress"
RESULTS_DIR = "results"
BITSTREAMS_DIR = "bitstreams"
RECONSTRUCTIONS_DIR = "reconstructions"
PER_IMAGE_TABLE = "per_image"
PER_IMAGE_JSON = f"{PER_IMAGE_TABLE}.json"
PER_IMAGE_CSV = f"{PER_IMAGE_TABLE}.csv"
RUN_JSON = "run.json"

STATUS_OK = "ok"
STATUS_UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class ItemRecord:
    """One evaluated (curve, point, image) item.

    ``bytes`` is the size of the whole file and ``bpp = 8 * bytes / (height * width)`` over the
    original size. ``status`` is ``"unreachable"`` (and ``bytes`` is None) when a size-limited
    search found no file small enough; ``note`` then says how small the codec can go.
    """

    curve: str
    point: str
    image: str
    codec: str
    mode: str
    height: int
    width: int
    status: str = STATUS_OK
    parameter: str | None = None
    value: float | None = None
    scale: int = 1
    target_bpp: float | None = None
    matched_point: str | None = None
    bytes: int | None = None
    bpp: float | None = None
    estimated_bpp: float | None = None
    bitstream: str | None = None
    reconstruction: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    compress_s: float = 0.0
    decompress_s: float = 0.0
    metrics_s: float = 0.0
    search_s: float = 0.0
    note: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.curve, self.point, self.image)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), allow_nan=True)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ItemRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})


class ProgressLog:
    """This process's append-only JSONL file (opened on the first append).

    ``kind`` names the file family: ``items`` for ItemRecords, ``dataset`` for set-level scores.
    """

    def __init__(self, out_dir: str | Path, kind: str = "items"):
        self.directory = Path(out_dir) / PROGRESS_DIR
        self.path = self.directory / f"{kind}-{socket.gethostname()}-{os.getpid()}.jsonl"
        self._fd: int | None = None

    def append(self, record: ItemRecord) -> None:
        self.append_line(record.to_json())

    def append_line(self, text: str) -> None:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        line = (text + "\n").encode()
        written = os.write(self._fd, line)
        if written != len(line):  # a short write leaves a torn line: the reader drops it
            raise OSError(f"{self.path}: short write")
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_log_lines(out_dir: str | Path, kind: str) -> list[dict[str, Any]]:
    """The complete JSON lines of every ``kind`` log in ``out_dir``, oldest file first."""
    directory = Path(out_dir) / PROGRESS_DIR
    if not directory.is_dir():
        return []
    payloads = []
    for path in sorted(directory.glob(f"{kind}-*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name)):
        with open(path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    continue  # torn last line of a killed process
                try:
                    payload = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(payload, dict):
                    payloads.append(payload)
    return payloads


def load_finished(out_dir: str | Path) -> dict[tuple[str, str, str], ItemRecord]:
    """Every finished item in ``out_dir``'s progress logs (a later line wins over an earlier one)."""
    finished: dict[tuple[str, str, str], ItemRecord] = {}
    for payload in read_log_lines(out_dir, "items"):
        try:
            record = ItemRecord.from_dict(payload)
        except TypeError:
            continue
        finished[record.key] = record
    return finished


# -- aggregation -------------------------------------------------------------------------


@dataclass(frozen=True)
class CurvePoint:
    """Means over the images of one operating point (``values`` keyed like the JSON lists)."""

    point: str
    values: dict[str, float]


@dataclass(frozen=True)
class Curve:
    name: str
    description: str
    codec: str
    mode: str
    num_images: int
    points: tuple[CurvePoint, ...]
    incomplete_points: tuple[str, ...] = ()

    def to_compressai(self) -> dict[str, Any]:
        keys: list[str] = []
        for point in self.points:
            keys += [k for k in point.values if k not in keys]
        ordered = ["bpp"] + [k for k in keys if k != "bpp"]
        results: dict[str, Any] = {"point": [p.point for p in self.points]}
        for key in ordered:
            results[key] = [_json_number(p.values.get(key)) for p in self.points]
        payload: dict[str, Any] = {"name": self.name, "description": self.description, "results": results}
        payload["num_images"] = self.num_images
        if self.incomplete_points:
            payload["incomplete_points"] = list(self.incomplete_points)
        return payload


NUMERIC_RECORD_FIELDS = ("value", "scale", "target_bpp", "bpp", "estimated_bpp")
TIMING_KEYS = {"compress_s": "encoding_time", "decompress_s": "decoding_time", "metrics_s": "metrics_time"}


def aggregate(
    records: Iterable[ItemRecord],
    image_ids: Sequence[str],
    point_order: Sequence[tuple[str, str]],
    descriptions: dict[str, str],
    dataset_scores: dict[tuple[str, str], dict[str, float]] | None = None,
) -> list[Curve]:
    """Curves from item records: a point is averaged only when every image has an ``ok`` item.

    ``point_order`` lists (curve, point) in the order the curve should list them;
    ``dataset_scores`` adds set-level metrics (FID, KID) to their points.
    """
    wanted = set(image_ids)
    by_point: dict[tuple[str, str], list[ItemRecord]] = {}
    for record in records:
        if record.image in wanted:
            by_point.setdefault((record.curve, record.point), []).append(record)
    curves: list[Curve] = []
    curve_names = list(dict.fromkeys(curve for curve, _ in point_order))
    for curve_name in curve_names:
        points: list[CurvePoint] = []
        incomplete: list[str] = []
        codec = mode = ""
        for curve, point in point_order:
            if curve != curve_name:
                continue
            items = [r for r in by_point.get((curve, point), []) if r.status == STATUS_OK]
            if items:
                codec, mode = items[0].codec, items[0].mode
            if len({r.image for r in items}) != len(wanted):
                incomplete.append(point)
                continue
            values: dict[str, float] = {"bpp": _mean([r.bpp for r in items])}
            if all(r.estimated_bpp is not None for r in items):
                values["estimated_bpp"] = _mean([r.estimated_bpp for r in items])
            values["bytes"] = _mean([r.bytes for r in items])
            metric_names = [m for m in items[0].metrics if all(m in r.metrics for r in items)]
            for metric in metric_names:
                values[metric] = _mean([r.metrics[metric] for r in items])
            for name, value in (dataset_scores or {}).get((curve, point), {}).items():
                values[name] = value
            for attribute, key in TIMING_KEYS.items():
                values[key] = _mean([getattr(r, attribute) for r in items])
            if items[0].mode != "quality":
                values["search_time"] = _mean([r.search_s for r in items])
            if len({r.value for r in items}) == 1 and items[0].value is not None and items[0].parameter:
                values[items[0].parameter] = items[0].value  # e.g. "quality": 3, "qp": 37
            if items[0].target_bpp is not None:
                values["target_bpp"] = items[0].target_bpp
            points.append(CurvePoint(point, values))
        curves.append(
            Curve(
                name=curve_name,
                description=descriptions.get(curve_name, curve_name),
                codec=codec,
                mode=mode,
                num_images=len(wanted),
                points=tuple(points),
                incomplete_points=tuple(incomplete),
            )
        )
    return curves


def write_outputs(
    out_dir: str | Path,
    curves: Sequence[Curve],
    records: Sequence[ItemRecord],
    table: str = PER_IMAGE_TABLE,
    extra: dict[str, Any] | None = None,
) -> list[Path]:
    """``results/<curve>.json``, ``<table>.json`` and ``<table>.csv``; returns the curve files.

    ``extra`` adds top-level keys to every curve file (the video runner's frame counts).
    """
    out_dir = Path(out_dir)
    results_dir = out_dir / RESULTS_DIR
    results_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for curve in curves:
        path = results_dir / f"{curve.name}.json"
        atomic_write_text(path, json.dumps({**curve.to_compressai(), **(extra or {})}, indent=2) + "\n")
        written.append(path)
    write_records(out_dir, table, sorted(records, key=lambda r: r.key))
    return written


def write_records(out_dir: Path, table: str, records: Sequence[Any]) -> None:
    """Dataclass records (each with a ``metrics`` dict) as ``<table>.json`` and ``<table>.csv``."""
    atomic_write_text(
        out_dir / f"{table}.json",
        json.dumps([_finite(dataclasses.asdict(r)) for r in records], indent=1) + "\n",
    )
    write_per_image_csv(out_dir / f"{table}.csv", records)


def write_per_image_csv(path: Path, records: Sequence[Any]) -> None:
    """One row per record; the columns are the record class's fields, then one per metric."""
    metric_names = list(dict.fromkeys(m for r in records for m in r.metrics))
    record_type = type(records[0]) if records else ItemRecord
    columns = [f.name for f in dataclasses.fields(record_type) if f.name != "metrics"] + metric_names
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    for record in records:
        row = dataclasses.asdict(record)
        row.update(record.metrics)
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    atomic_write(path, text.getvalue())


def load_results(path: str | Path) -> Curve:
    """A CompressAI-layout results JSON (ours or any other) as a Curve."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such results file") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a JSON results file ({exc})") from None
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, dict) or "bpp" not in results or not isinstance(results["bpp"], list):
        raise InputError(f'{path}: not in CompressAI\'s results layout (no "results": {{"bpp": [...]}})')
    length = len(results["bpp"])
    lists = {k: v for k, v in results.items() if isinstance(v, list) and len(v) == length}
    labels = [str(p) for p in lists.pop("point", range(length))]
    points = []
    for index in range(length):
        values = {}
        for key, column in lists.items():
            value = column[index]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[key] = float(value)
        points.append(CurvePoint(labels[index], values))
    return Curve(
        name=str(payload.get("name") or path.stem),
        description=str(payload.get("description", "")),
        codec=str(payload.get("name") or path.stem),
        mode="",
        num_images=int(payload.get("num_images", 0) or 0),
        points=tuple(points),
    )


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, data)


def _mean(values: Sequence[float | None]) -> float:
    return math.fsum(float(v) for v in values) / len(values)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return _json_number(value)


def _json_number(value: Any) -> Any:
    # JSON has no NaN/inf; a metric that is undefined for a point (PSNR of a lossless item) is null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

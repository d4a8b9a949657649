"""``latentcodec eval`` on videos: a video codec and x264/x265 on real sequence files.

Every (curve, operating point, sequence) item is coded to a real file under ``OUT/bitstreams/``
(``.lcv`` for the model, raw ``.264``/``.265`` streams for the baselines), decoded *from that file*,
and every decoded frame is scored against the original frame. Rates:

* per sequence: ``bpp = 8 * file bytes / (H * W * frames)``, exactly;
* per frame: ``bpp = 8 * frame bytes / (H * W)``, where the model's frame bytes are its frame unit
  (length varint, payload, CRC-8) and the sequence header is counted in frame 0 (an open-ended
  file's one-byte end marker in the last frame); a baseline's are its access unit, with the
  parameter sets in frame 0. Per-frame bytes always add up to the file size.

Per-sequence metrics are means over the frames; a curve point is the mean over the sequences (of
bpp and of each metric), as CompressAI does for images. Finished items go to the progress log
(``progress/video-*.jsonl``, one line per item with its frames), so a killed run resumes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from latentcodec.errors import BitstreamError, InputError
from latentcodec.evaluation.baselines import search_at_most
from latentcodec.evaluation.learned import LearnedCodec, load_codec_object
from latentcodec.evaluation.results import (
    BITSTREAMS_DIR,
    RUN_JSON,
    STATUS_OK,
    STATUS_UNREACHABLE,
    ItemRecord,
    ProgressLog,
    aggregate,
    atomic_write_bytes,
    atomic_write_text,
    read_log_lines,
    write_outputs,
    write_records,
)
from latentcodec.evaluation.planning import (
    MODE_QUALITY,
    MODE_TARGET,
    EvalConfig,
    EvalSummary,
    OperatingPoint,
    describe_curves,
    plan_points,
)
from latentcodec.evaluation.run_state import run_identity
from latentcodec.evaluation.scoring import MetricSuite, build_suite
from latentcodec.evaluation.video_baselines import (
    VIDEO_BASELINES,
    PlanesFile,
    frame_sizes,
    get_video_baseline,
    planes_folder,
    write_planes_file,
)
from latentcodec.evaluation.videos import VideoSource, discover_sequences, iter_rgb_frames, probe_sequence

DEFAULT_INTRA_PERIOD = 96  # GLC-video's test setting (and the model's default GOP)
DEFAULT_QUALITY_POINTS = 4
VIDEO_LOG = "video"
PER_SEQUENCE_TABLE = "per_sequence"
PER_FRAME_TABLE = "per_frame"


@dataclass(frozen=True)
class VideoEvalConfig(EvalConfig):
    """:class:`EvalConfig` plus ``frames`` (the first N of each sequence; None: all) and
    ``intra_period`` (of the model and the baselines; None: the model's own, else 96; 0: only
    frame 0). Videos are coded at full size (``scales`` (1,)); ``patch_size``, ``workers`` and
    ``keep_reconstructions`` do not apply.
    """

    scales: tuple[int, ...] = (1,)
    frames: int | None = None
    intra_period: int | None = None


@dataclass(frozen=True)
class SequenceRecord(ItemRecord):
    """One (curve, point, sequence) item; ``image`` holds the sequence id.

    ``bytes`` is the whole file, ``bpp = 8 * bytes / (height * width * frames)`` and ``metrics`` are
    means over the frames. ``intra_period`` is the GOP the item was coded with.
    """

    frames: int = 0
    intra_period: int = 0


@dataclass(frozen=True)
class FrameRecord:
    """One frame of one item: ``bytes`` of this frame in the file, ``bpp = 8 * bytes / (H * W)``."""

    curve: str
    point: str
    sequence: str
    frame: int
    type: str  # "I" or "P"
    bytes: int
    bpp: float
    estimated_bpp: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class VideoItem(NamedTuple):
    sequence: SequenceRecord
    frames: tuple[FrameRecord, ...]


class VideoTask(NamedTuple):
    source: VideoSource
    points: tuple[OperatingPoint, ...]
    model_bytes: dict[str, int]  # model point -> file bytes, for matched points finished earlier


# -- the codec under test ------------------------------------------------------------------


class LearnedVideoCodec(LearnedCodec):
    """A video codec from ``latentcodec.load`` (a VideoCodec) or a ``module:factory`` with its API.

    Frames stream into the model one at a time (``model.encode_sequence``), so memory does not
    grow with the number of frames; decoding goes through ``iter_decompress_video``.
    """

    extension = "lcv"
    required_attributes = ("num_qualities", "at_quality", "model", "iter_decompress_video")

    @property
    def intra_period(self) -> int | None:
        gop = getattr(getattr(self._codec.model, "config", None), "gop", None)
        return getattr(gop, "intra_period", None)

    def encode_video(
        self,
        frames: Iterable[np.ndarray],
        quality: int,
        source: VideoSource,
        stream: io.BytesIO,
        intra_period: int | None = None,
        on_frame: Callable[[Any], None] | None = None,
    ) -> None:
        from latentcodec.data.video import frame_to_tensor

        codec = self._at(quality)
        model = codec.model
        gop = None if intra_period is None else dataclasses.replace(model.config.gop, intra_period=intra_period)
        model.encode_sequence(
            (frame_to_tensor(frame) for frame in frames), stream, rate_index=codec.quality,
            intra_rate_index=getattr(codec, "intra_quality", None), frame_rate=source.frame_rate,
            frame_count=source.frames, gop=gop, on_frame=on_frame,
        )  # fmt: skip

    def decode_video(self, path: Path) -> Iterator[np.ndarray]:
        for image in self._codec.iter_decompress_video(str(path)):
            yield np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_learned_video(model: str, weights: str | None, device: str) -> LearnedVideoCodec:
    name, codec = load_codec_object(model, weights, device)
    if not hasattr(codec, "iter_decompress_video"):
        raise InputError(f"--model {model} is not a video codec (videos need one, e.g. glc-video)")
    return LearnedVideoCodec(name, codec)


def default_qualities(num_qualities: int) -> tuple[int, ...]:
    """Four evenly spread rate levels (0, 21, 42, 63 of GLC-video's 64: its four anchor rates)."""
    last = num_qualities - 1
    steps = DEFAULT_QUALITY_POINTS - 1
    return tuple(sorted({round(i * last / steps) for i in range(DEFAULT_QUALITY_POINTS)}))


# -- evaluating one sequence ---------------------------------------------------------------


def model_frame_bytes(data: bytes) -> tuple[int, ...]:
    """Per-frame bytes of a sequence file: each frame's unit, the header in frame 0 and an
    end marker (open-ended files) in the last frame; they add up to ``len(data)``."""
    from latentcodec.bitstream.sequence import describe_sequence_file

    info = describe_sequence_file(data)
    sizes = list(info.unit_bytes)
    if not sizes:
        raise BitstreamError("the sequence file holds no frames")
    sizes[0] += info.header_bytes
    sizes[-1] += info.total_bytes - sum(sizes)
    if info.total_bytes != len(data):
        raise BitstreamError(f"the sequence file has {len(data)} bytes, its units account for {info.total_bytes}")
    return tuple(sizes)


class _VideoWorker:
    """Codes, decodes and scores the items of one sequence at a time, logging each when done."""

    def __init__(self, config: VideoEvalConfig, learned: LearnedVideoCodec | None, suite: MetricSuite,
                 intra_period: int, on_frame_scored: Callable[[], None]):  # fmt: skip
        self.config = config
        self.out_dir = Path(config.out)
        self.learned = learned
        self.suite = suite
        self.intra_period = intra_period
        self.on_frame_scored = on_frame_scored
        self.log = ProgressLog(self.out_dir, kind=VIDEO_LOG)

    def run(self, task: VideoTask) -> list[VideoItem]:
        model_bytes = dict(task.model_bytes)
        items: list[VideoItem] = []
        with planes_folder() as folder:
            planes: PlanesFile | None = None
            for point in task.points:
                if not point.learned and planes is None:
                    planes = write_planes_file(task.source, folder)
                item = self._evaluate(point, task.source, planes, model_bytes)
                payload = {"sequence": dataclasses.asdict(item.sequence),
                           "frames": [dataclasses.asdict(f) for f in item.frames]}  # fmt: skip
                self.log.append_line(json.dumps(payload))
                if point.learned and item.sequence.bytes is not None:
                    model_bytes[point.point] = item.sequence.bytes
                items.append(item)
        return items

    def _evaluate(self, point: OperatingPoint, source: VideoSource, planes: PlanesFile | None,
                  model_bytes: dict[str, int]) -> VideoItem:  # fmt: skip
        base = SequenceRecord(
            curve=point.curve, point=point.point, image=source.ref.sequence_id, codec=point.codec, mode=point.mode,
            height=source.height, width=source.width, value=point.value, target_bpp=point.target_bpp,
            matched_point=point.matched_point, frames=source.frames, intra_period=self.intra_period,
        )  # fmt: skip
        search_s = 0.0
        estimated_bits: list[float] | None = None
        if point.learned:
            assert self.learned is not None
            stats: list[Any] = []
            buffer = io.BytesIO()
            start = time.perf_counter()
            self.learned.encode_video(iter_rgb_frames(source), int(point.value), source, buffer,
                                      self.config.intra_period, on_frame=stats.append)  # fmt: skip
            compress_s = time.perf_counter() - start
            data, extension = buffer.getvalue(), self.learned.extension
            frame_types = tuple("I" if s.intra else "P" for s in stats)
            estimated_bits = [float(s.estimated_bits) for s in stats]
            base = replace(base, parameter="quality",
                           estimated_bpp=math.fsum(estimated_bits) / source.pixels)  # fmt: skip
        else:
            assert planes is not None
            codec = get_video_baseline(point.codec)
            extension = codec.extension
            if point.mode == MODE_QUALITY:
                start = time.perf_counter()
                data = codec.encode(planes, point.value, self.intra_period)
                compress_s = time.perf_counter() - start
            else:
                if point.mode == MODE_TARGET:
                    max_bytes = math.floor(point.target_bpp * source.pixels / 8)
                else:
                    if point.matched_point not in model_bytes:
                        raise RuntimeError(f"matched point {point.point} scheduled before its model item")
                    max_bytes = model_bytes[point.matched_point]
                search = search_at_most(lambda value, _scale: codec.encode(planes, value, self.intra_period),
                                        codec.search_values, max_bytes)  # fmt: skip
                search_s = search.search_s
                if search.best is None:
                    sequence = replace(
                        base, status=STATUS_UNREACHABLE, parameter=codec.parameter, search_s=search_s,
                        note=f"limit {max_bytes} B; smallest {point.codec} file is {search.smallest_bytes} B",
                    )  # fmt: skip
                    return VideoItem(sequence, ())
                data, compress_s = search.best.data, search.best.encode_s
                base = replace(base, value=search.best.value)
            base = replace(base, parameter=codec.parameter)
        relative = Path(BITSTREAMS_DIR) / point.curve / point.point / f"{source.ref.sequence_id}.{extension}"
        atomic_write_bytes(self.out_dir / relative, data)

        stored_path = self.out_dir / relative
        stored = stored_path.read_bytes()
        if point.learned:
            frame_bytes = model_frame_bytes(stored)
            decoded = self.learned.decode_video(stored_path)
        else:
            sizes = frame_sizes(codec, stored)
            frame_bytes, frame_types = sizes.bytes, sizes.types
            decoded = codec.decode(stored, source)
        if not len(frame_bytes) == len(frame_types) == source.frames:
            raise BitstreamError(f"{point.curve} {point.point}: {len(frame_bytes)} frames in the file, "
                                 f"{source.frames} were coded")  # fmt: skip
        scores, decompress_s, metrics_s = self._score(source, decoded)

        pixels = source.width * source.height
        frames = tuple(
            FrameRecord(
                curve=point.curve, point=point.point, sequence=source.ref.sequence_id, frame=index,
                type=frame_types[index], bytes=frame_bytes[index], bpp=8.0 * frame_bytes[index] / pixels,
                estimated_bpp=None if estimated_bits is None else estimated_bits[index] / pixels,
                metrics=scores[index],
            )  # fmt: skip
            for index in range(source.frames)
        )
        means = {name: math.fsum(s[name] for s in scores) / len(scores) for name in scores[0]}
        sequence = replace(
            base, bytes=len(stored), bpp=8.0 * len(stored) / source.pixels, bitstream=str(relative), metrics=means,
            compress_s=compress_s, decompress_s=decompress_s, metrics_s=metrics_s, search_s=search_s,
        )  # fmt: skip
        return VideoItem(sequence, frames)

    def _score(self, source: VideoSource, decoded: Iterator[np.ndarray]) -> tuple[list[dict[str, float]], float, float]:
        """Per-frame scores of the decoded frames against the originals; decoding and scoring seconds."""
        scores: list[dict[str, float]] = []
        decompress_s = metrics_s = 0.0
        originals = iter_rgb_frames(source)
        while True:
            start = time.perf_counter()
            reconstruction = next(decoded, None)
            decompress_s += time.perf_counter() - start
            original = next(originals, None)
            if reconstruction is None or original is None:
                break
            if reconstruction.shape != original.shape:
                raise BitstreamError(f"decoded frame {len(scores)} is {reconstruction.shape[1]}x"
                                     f"{reconstruction.shape[0]}, the original is {source.width}x{source.height}")
            start = time.perf_counter()
            scores.append(self.suite.score(original, reconstruction))
            metrics_s += time.perf_counter() - start
            self.on_frame_scored()
        if reconstruction is not None or original is not None:
            more = "more" if reconstruction is not None else "fewer"
            raise BitstreamError(f"{source.ref.sequence_id}: the file decodes to {more} than {source.frames} frames")
        return scores, decompress_s, metrics_s

    def close(self) -> None:
        self.log.close()


# -- the whole run -------------------------------------------------------------------------


def load_finished_video(out_dir: Path) -> dict[tuple[str, str, str], VideoItem]:
    """Every finished video item in ``out_dir``'s progress logs (a later line wins)."""
    finished: dict[tuple[str, str, str], VideoItem] = {}
    for payload in read_log_lines(out_dir, VIDEO_LOG):
        try:
            sequence = SequenceRecord.from_dict(payload["sequence"])
            frames = tuple(FrameRecord(**f) for f in payload.get("frames", ()))
        except (KeyError, TypeError):
            continue
        finished[sequence.key] = VideoItem(sequence, frames)
    return finished


def _check_config(config: VideoEvalConfig) -> None:
    from latentcodec.evaluation.metrics import PER_DATASET_NAMES

    if config.frames is not None and config.frames < 1:
        raise InputError("--frames must be a positive number of frames")
    if config.intra_period is not None and config.intra_period < 0:
        raise InputError("--intra-period must be 0 (only the first frame) or positive")
    if any(not (t > 0 and math.isfinite(t)) for t in config.target_bpp):
        raise InputError("--target-bpp values must be positive")
    set_level = [m for m in config.metrics or () if m in PER_DATASET_NAMES]
    if set_level:
        raise InputError(f"{', '.join(set_level)}: set-level image metrics are not computed on videos")


def run_video_evaluation(config: VideoEvalConfig, learned: LearnedVideoCodec | None = None) -> EvalSummary:
    """Run (or resume) a video evaluation; returns what it wrote."""
    _check_config(config)
    sequences = discover_sequences(config.data)

    requested = list(config.baselines)
    if config.model in VIDEO_BASELINES:  # --model x264: the baseline's grid is the curve under test
        requested = [config.model] + [b for b in requested if b != config.model]
        if config.qualities is not None:
            config = replace(config, baseline_values={**(config.baseline_values or {}), config.model: config.qualities})
    skipped: dict[str, str] = {}
    baseline_names: list[str] = []
    for name in requested:
        reason = get_video_baseline(name).unavailable_reason()
        if reason is None:
            baseline_names.append(name)
        else:
            skipped[name] = reason
            print(f"latentcodec eval: skipping {name}: {reason}", file=sys.stderr)
    if config.model in skipped:
        raise InputError(f"--model {config.model}: {skipped[config.model]}")
    if learned is None and config.model is not None and config.model not in VIDEO_BASELINES:
        learned = load_learned_video(config.model, config.weights, config.device)
    if learned is not None and config.qualities is None:
        config = replace(config, qualities=default_qualities(learned.num_qualities))
    points = plan_points(config, learned, baseline_names, get_codec=get_video_baseline)
    if not points:
        raise InputError("nothing to evaluate: give --model and/or --baselines (with at least one available)")
    suite = build_suite(config.metrics, config.device)
    for name, reason in suite.unavailable.items():
        skipped[name] = reason
        print(f"latentcodec eval: skipping metric {name}: {reason}", file=sys.stderr)
    if config.intra_period is not None:
        intra_period = config.intra_period
    elif learned is not None and learned.intra_period is not None:
        intra_period = learned.intra_period
    else:
        intra_period = DEFAULT_INTRA_PERIOD

    out_dir = Path(config.out)
    sources = [probe_sequence(ref, config.frames) for ref in sequences]
    _write_run_file(out_dir, config, sources, suite, intra_period, learned)
    finished = load_finished_video(out_dir)
    required = set(suite.image_metric_names)

    def done(point: OperatingPoint, source: VideoSource) -> VideoItem | None:
        item = finished.get((point.curve, point.point, source.ref.sequence_id))
        if item is None:
            return None
        record = item.sequence
        if record.frames != source.frames or record.intra_period != intra_period:
            return None
        if record.status == STATUS_OK and not required <= set(record.metrics):
            return None
        return item

    tasks: list[VideoTask] = []
    kept: list[VideoItem] = []
    for source in sources:
        pending: list[OperatingPoint] = []
        model_bytes: dict[str, int] = {}
        for point in points:
            item = done(point, source)
            if item is None:
                pending.append(point)
                continue
            kept.append(item)
            if point.learned and item.sequence.bytes is not None:
                model_bytes[point.point] = item.sequence.bytes
        if pending:
            tasks.append(VideoTask(source, tuple(pending), model_bytes))

    new_items = _execute(config, tasks, learned, suite, intra_period)
    items = kept + new_items
    point_order = [(p.curve, p.point) for p in points]
    rate = f"bpp = 8 x whole-file bytes / (H x W x frames), mean over sequences; intra period {intra_period}"
    descriptions = describe_curves(points, learned, config.data, get_video_baseline, "sequence", rate)
    sequence_ids = [s.ref.sequence_id for s in sources]
    records = [item.sequence for item in items]
    curves = aggregate(records, sequence_ids, point_order, descriptions)
    extra = {"kind": "video", "num_sequences": len(sources), "frames": {s.ref.sequence_id: s.frames for s in sources}}
    files = write_outputs(out_dir, curves, records, table=PER_SEQUENCE_TABLE, extra=extra)
    frame_records = sorted((f for item in items for f in item.frames),
                           key=lambda f: (f.curve, f.point, f.sequence, f.frame))  # fmt: skip
    write_records(out_dir, PER_FRAME_TABLE, frame_records)
    return EvalSummary(out_dir, curves, records, files, skipped, len(new_items), len(kept))


def _execute(config: VideoEvalConfig, tasks: list[VideoTask], learned: LearnedVideoCodec | None,
             suite: MetricSuite, intra_period: int) -> list[VideoItem]:  # fmt: skip
    from tqdm import tqdm

    total = sum(len(task.points) * task.source.frames for task in tasks)
    bar = tqdm(total=total, desc="eval", unit="frame", disable=not config.progress, file=sys.stderr)
    worker = _VideoWorker(config, learned, suite, intra_period, lambda: bar.update(1))
    items: list[VideoItem] = []
    try:
        for task in tasks:
            bar.set_postfix_str(task.source.ref.sequence_id, refresh=False)
            for item in worker.run(task):
                items.append(item)
                if item.sequence.status != STATUS_OK:  # no frames were scored
                    bar.update(task.source.frames)
    finally:
        worker.close()
        bar.close()
    return items


def _write_run_file(out_dir: Path, config: VideoEvalConfig, sources: list[VideoSource], suite: MetricSuite,
                    intra_period: int, learned: LearnedVideoCodec | None) -> None:  # fmt: skip
    model_curve = learned.name if learned else config.model
    payload = run_identity(out_dir, config.model, config.weights, config.data, model_curve)
    payload.update(
        kind="video",
        sequences={s.ref.sequence_id: str(s.ref.path) for s in sources},
        frames={s.ref.sequence_id: s.frames for s in sources},
        frame_limit=config.frames,
        intra_period=intra_period,
        qualities=list(config.qualities or ()),
        baselines=list(config.baselines),
        target_bpp=list(config.target_bpp),
        metrics=list(suite.image_metric_names),
        device=config.device,
    )
    atomic_write_text(out_dir / RUN_JSON, json.dumps(payload, indent=2) + "\n")


__all__ = [
    "FrameRecord", "LearnedVideoCodec", "SequenceRecord", "VideoEvalConfig", "default_qualities",
    "load_learned_video", "model_frame_bytes", "run_video_evaluation",
]

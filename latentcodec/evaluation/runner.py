"""``latentcodec eval``: rate-distortion evaluation of a codec and classical baselines.

Every (curve, operating point, image) item is compressed to a real file under
``OUT/bitstreams/``, its rate is ``bpp = 8 * file bytes / (H * W)`` of the original, it is
decompressed *from that file* and the 8-bit reconstruction is scored. Finished items are appended
to a progress log (see :mod:`latentcodec.evaluation.results`), so a killed run restarts where it
stopped.

Curves (one ``results/<curve>.json`` each):

* ``<model>``: the codec under test, one point per quality;
* ``<baseline>`` and ``<baseline>-down<s>``: a classical codec over its parameter grid, on the
  image downscaled by ``s`` and upscaled back (see :mod:`latentcodec.evaluation.baselines`);
* ``<baseline>-target``: per image and target bpp, the largest file not above the target, searched
  over the parameter and all scales;
* ``<baseline>-matched``: per image and model quality, the largest baseline file not above the
  model's file (the comparison the report shows side by side);
* ``<other model>``: each ``--compare`` model at every quality, on the same images in the same run
  (no matched baselines of their own: those follow ``--model``).

Parallelism: a process pool sharded by image (``--workers``), and under ``torchrun`` the images
are further sharded by ``torch.distributed`` rank; rank 0 gathers the records and writes the
results.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path

from PIL import Image

from latentcodec.errors import InputError, LatentCodecError
from latentcodec.evaluation import baselines as classical
from latentcodec.evaluation.images import ImageRef, discover_images, load_rgb
from latentcodec.evaluation.learned import LearnedCodec, load_learned
from latentcodec.evaluation.results import (
    BITSTREAMS_DIR,
    RECONSTRUCTIONS_DIR,
    RUN_JSON,
    STATUS_OK,
    STATUS_UNREACHABLE,
    ItemRecord,
    ProgressLog,
    aggregate,
    atomic_write_bytes,
    atomic_write_text,
    load_finished,
    read_log_lines,
    write_outputs,
)
from latentcodec.evaluation.run_state import (
    Distributed,
    distributed_from_env,
    gather_to_rank0,
    init_distributed,
    run_identity,
)
from latentcodec.evaluation.scoring import MetricSuite, build_suite, score_dataset_point

from latentcodec.evaluation.planning import (  # noqa: F401  (MODE_* and the types are re-exported)
    KEEP_CHOICES,
    MODE_MATCHED,
    MODE_QUALITY,
    MODE_TARGET,
    EvalConfig,
    EvalSummary,
    ImageTask,
    OperatingPoint,
    describe_curves,
    load_compared,
    plan_points,
)

# -- evaluating one image ------------------------------------------------------------------


class _Worker:
    """Per-process state: the loaded codec, the metrics and this process's progress log."""

    def __init__(self, config: EvalConfig, learned: LearnedCodec | None = None, suite: MetricSuite | None = None,
                 compared: Sequence[LearnedCodec] | None = None):
        self.config = config
        self.out_dir = Path(config.out)
        self.learned = learned
        if learned is None and config.model is not None and config.model not in classical.BASELINES:
            self.learned = load_learned(config.model, config.weights, config.device, config.captions, config.captioner)
        self.codecs = _by_name(self.learned, compared if compared is not None else load_compared(config, self.learned))
        self.suite = suite if suite is not None else build_suite(config.metrics, config.device, config.patch_size)
        self.log = ProgressLog(self.out_dir)

    def run(self, task: ImageTask, on_item: Callable[[ItemRecord], None] | None = None) -> list[ItemRecord]:
        original = load_rgb(task.image.path)
        model_bytes = dict(task.model_bytes)
        records = []
        for point in task.points:
            record = self._evaluate(point, task.image, original, model_bytes)
            self.log.append(record)
            if _is_primary(point, self.learned) and point.mode == MODE_QUALITY and record.bytes is not None:
                model_bytes[point.point] = record.bytes
            records.append(record)
            if on_item is not None:
                on_item(record)
        return records

    def _evaluate(
        self, point: OperatingPoint, ref: ImageRef, original: Image.Image, model_bytes: dict[str, int]
    ) -> ItemRecord:
        width, height = original.size
        base = ItemRecord(
            curve=point.curve, point=point.point, image=ref.image_id, codec=point.codec, mode=point.mode,
            height=height, width=width, value=point.value, scale=point.scale, target_bpp=point.target_bpp,
            matched_point=point.matched_point,
        )  # fmt: skip
        search_s = 0.0
        learned = self.codecs.get(point.codec) if point.learned else None
        if point.learned and point.mode == MODE_TARGET:
            max_bytes = math.floor(point.target_bpp * width * height / 8)
            start = time.perf_counter()
            found = learned.encode_at_most(original, max_bytes)
            compress_s = search_s = time.perf_counter() - start
            note = f"limit {max_bytes} B; {found.encodes} encodes"
            if found.data is None:
                return replace(base, status=STATUS_UNREACHABLE, parameter="quality", search_s=search_s,
                               note=f"{note}; smallest {point.codec} file is {found.smallest_bytes} B")
            data, extension = found.data, learned.extension
            base = replace(base, parameter="quality", value=found.rate,
                           note=f"{note}; rate {found.rate:g}" + (f", coded at {found.scale}/64" if found.scale else ""))
        elif point.learned:
            assert learned is not None
            start = time.perf_counter()
            quality = int(point.value) if point.value == int(point.value) else point.value  # continuous rates
            caption = learned.caption_for(ref.image_id, original)
            data = learned.encode(original, quality, caption)
            compress_s = time.perf_counter() - start
            extension = learned.extension
            estimated = learned.estimated_bpp(original, quality)
            base = replace(base, parameter="quality", estimated_bpp=estimated)
            if caption is not None:
                base = replace(base, note=f"caption {caption!r}")
        else:
            codec = classical.get_baseline(point.codec)
            extension = codec.extension
            if point.mode == MODE_QUALITY:
                start = time.perf_counter()
                data = classical.encode_scaled(codec, original, point.value, point.scale)
                compress_s = time.perf_counter() - start
            else:
                if point.mode == MODE_TARGET:
                    max_bytes = math.floor(point.target_bpp * width * height / 8)
                else:
                    if point.matched_point not in model_bytes:
                        raise RuntimeError(f"matched point {point.point} scheduled before its model item")
                    max_bytes = model_bytes[point.matched_point]
                search = classical.encode_at_most(codec, original, max_bytes, tuple(self.config.scales))
                search_s = search.search_s
                if search.best is None:
                    return replace(
                        base, status=STATUS_UNREACHABLE, parameter=codec.parameter, search_s=search_s,
                        note=f"limit {max_bytes} B; smallest {point.codec} file is {search.smallest_bytes} B",
                    )  # fmt: skip
                data, compress_s = search.best.data, search.best.encode_s
                base = replace(base, value=search.best.value, scale=search.best.scale)
            base = replace(base, parameter=codec.parameter)
        relative = Path(BITSTREAMS_DIR) / point.curve / point.point / f"{ref.image_id}.{extension}"
        atomic_write_bytes(self.out_dir / relative, data)

        start = time.perf_counter()
        stored = (self.out_dir / relative).read_bytes()
        if point.learned:
            reconstruction = learned.decode(stored, original.size)
        else:
            codec = classical.get_baseline(point.codec)
            reconstruction = classical.decode_scaled(codec, stored, base.scale, original.size)
        decompress_s = time.perf_counter() - start

        start = time.perf_counter()
        scores = self.suite.score(original, reconstruction)
        metrics_s = time.perf_counter() - start

        kept = None
        keep = self.config.keep_reconstructions
        if keep == "all" or (keep == "model" and point.learned):
            kept_path = Path(RECONSTRUCTIONS_DIR) / point.curve / point.point / f"{ref.image_id}.png"
            (self.out_dir / kept_path).parent.mkdir(parents=True, exist_ok=True)
            reconstruction.save(self.out_dir / kept_path, "PNG")
            kept = str(kept_path)
        return replace(
            base, bytes=len(stored), bpp=8.0 * len(stored) / (width * height), bitstream=str(relative),
            reconstruction=kept, metrics=scores, compress_s=compress_s, decompress_s=decompress_s,
            metrics_s=metrics_s, search_s=search_s,
        )  # fmt: skip

    def close(self) -> None:
        self.log.close()


_WORKER: _Worker | None = None


def _init_pool_worker(config: EvalConfig, threads: int) -> None:
    global _WORKER
    import torch

    torch.set_num_threads(threads)
    _WORKER = _Worker(config)


def _run_pool_task(task: ImageTask) -> list[ItemRecord]:
    assert _WORKER is not None
    return _WORKER.run(task)


# -- the whole run -------------------------------------------------------------------------


def run_evaluation(config: EvalConfig, learned: LearnedCodec | None = None) -> EvalSummary:
    """Run (or resume) an evaluation; returns what it wrote. ``learned`` bypasses ``--model`` loading."""
    if config.keep_reconstructions not in KEEP_CHOICES:
        raise InputError(f"--keep-reconstructions must be one of {', '.join(KEEP_CHOICES)}")
    if any(s < 1 for s in config.scales) or not config.scales:
        raise InputError("--scales must be positive integers")
    if any(not (t > 0 and math.isfinite(t)) for t in config.target_bpp):
        raise InputError("--target-bpp values must be positive")
    images = discover_images(config.data)
    dist = distributed_from_env()
    device = config.device
    if dist.world_size > 1 and device.startswith("cuda") and ":" not in device:
        device = f"cuda:{dist.local_rank}"
    config = replace(config, device=device)
    started_group = init_distributed(dist)

    skipped: dict[str, str] = {}
    baseline_names: list[str] = []
    requested = list(config.baselines)
    if config.model is not None and config.model in classical.BASELINES:
        requested = [config.model] + [b for b in requested if b != config.model]
        values = dict(config.baseline_values or {})
        if config.qualities is not None:
            values[config.model] = tuple(config.qualities)
        config = replace(config, baseline_values=values)
    for name in requested:
        reason = classical.get_baseline(name).unavailable_reason()
        if reason is None:
            baseline_names.append(name)
        else:
            skipped[name] = reason
            if dist.rank == 0:
                print(f"latentcodec eval: skipping {name}: {reason}", file=sys.stderr)
    if config.model is not None and config.model in skipped:
        raise InputError(f"--model {config.model}: {skipped[config.model]}")

    if learned is None and config.model is not None and config.model not in classical.BASELINES:
        learned = load_learned(config.model, config.weights, config.device, config.captions, config.captioner)
    compared = load_compared(config, learned)
    points = plan_points(config, learned, baseline_names, others=compared)
    if not points:
        raise InputError("nothing to evaluate: give --model and/or --baselines (with at least one available)")
    suite = build_suite(config.metrics, config.device, config.patch_size)  # fails early on a bad --metrics
    skipped.update(suite.unavailable)
    if dist.rank == 0:
        for name, reason in suite.unavailable.items():
            print(f"latentcodec eval: skipping metric {name}: {reason}", file=sys.stderr)
    config = replace(config, metrics=suite.image_metric_names + suite.dataset_metric_names)

    out_dir = Path(config.out)
    _check_or_write_run_file(out_dir, config, images, dist.rank, learned.name if learned else config.model,
                             [codec.name for codec in compared])
    finished = load_finished(out_dir)
    required = set(suite.image_metric_names)

    def done(point: OperatingPoint, image: ImageRef) -> ItemRecord | None:
        record = finished.get((point.curve, point.point, image.image_id))
        if record is None or (record.status == STATUS_OK and not required <= set(record.metrics)):
            return None
        return record

    my_images = images[dist.rank :: dist.world_size]
    tasks: list[ImageTask] = []
    kept: list[ItemRecord] = []
    for image in my_images:
        pending = []
        model_bytes = {}
        for point in points:
            record = done(point, image)
            if record is None:
                pending.append(point)
            else:
                kept.append(record)
                if _is_primary(point, learned) and point.mode == MODE_QUALITY and record.bytes is not None:
                    model_bytes[point.point] = record.bytes
        if pending:
            tasks.append(ImageTask(image, tuple(pending), model_bytes))

    new_records = _execute(config, tasks, learned, suite, dist, compared)
    my_records = kept + new_records
    parts = gather_to_rank0((my_records, len(new_records), len(kept)), dist)
    if started_group:
        import torch.distributed as torch_dist

        torch_dist.destroy_process_group()
    if dist.rank != 0:
        return EvalSummary(out_dir, [], my_records, [], skipped, len(new_records), len(kept))
    all_records = [r for records, _, _ in parts for r in records]
    new_count, kept_count = sum(p[1] for p in parts), sum(p[2] for p in parts)

    point_order = [(p.curve, p.point) for p in points]
    descriptions = describe_curves(points, learned, config.data)
    dataset_scores = _dataset_pass(config, suite, images, all_records, point_order, _by_name(learned, compared))
    curves = aggregate(all_records, [i.image_id for i in images], point_order, descriptions, dataset_scores)
    wanted = {(p.curve, p.point) for p in points}
    current = [r for r in all_records if (r.curve, r.point) in wanted]
    files = write_outputs(out_dir, curves, current)
    return EvalSummary(out_dir, curves, current, files, skipped, new_count, kept_count)


def _execute(
    config: EvalConfig, tasks: list[ImageTask], learned: LearnedCodec | None, suite: MetricSuite, dist: Distributed,
    compared: Sequence[LearnedCodec] = (),
) -> list[ItemRecord]:
    from tqdm import tqdm

    total = sum(len(t.points) for t in tasks)
    workers = _worker_count(config, len(tasks))
    records: list[ItemRecord] = []
    bar = tqdm(total=total, desc="eval", unit="item", disable=not config.progress or dist.rank != 0, file=sys.stderr)
    try:
        if workers <= 1 or len(tasks) <= 1:
            worker = _Worker(config, learned, suite, compared)
            try:
                for task in tasks:
                    records += worker.run(task, on_item=lambda _record: bar.update(1))
            finally:
                worker.close()
            return records
        threads = max(1, _available_cores() // workers)
        context = multiprocessing.get_context("spawn")  # fork after torch's thread pools is unsafe
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_pool_worker, initargs=(config, threads)
        )
        try:
            pending = {pool.submit(_run_pool_task, task) for task in tasks}
            while pending:
                completed, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in completed:
                    result = future.result()
                    records += result
                    bar.update(len(result))
        except BrokenProcessPool:
            raise LatentCodecError(
                "an evaluation worker process died (out of memory?); finished items are kept, run again to resume"
            ) from None
        finally:
            # On an error, drop the queued images instead of finishing them first.
            pool.shutdown(wait=True, cancel_futures=True)
        return records
    finally:
        bar.close()


def _dataset_pass(
    config: EvalConfig,
    suite: MetricSuite,
    images: list[ImageRef],
    records: list[ItemRecord],
    point_order: list[tuple[str, str]],
    codecs: dict[str, LearnedCodec],
) -> dict[tuple[str, str], dict[str, float]]:
    """Set-level metrics (patch FID/KID) of every complete point, cached per point in the logs."""
    if not suite.dataset_metrics:
        return {}
    from tqdm import tqdm

    out_dir = Path(config.out)
    names = set(suite.dataset_metric_names)
    signature = hashlib.sha1("\n".join(i.image_id for i in images).encode()).hexdigest()[:16]
    cached: dict[tuple[str, str], dict[str, float]] = {}
    for line in read_log_lines(out_dir, "dataset"):
        if line.get("images") == signature and line.get("patch_size") == suite.patch_size:
            scores = line.get("scores") or {}
            if names <= set(scores):
                cached[(line.get("curve"), line.get("point"))] = {k: float(v) for k, v in scores.items()}
    by_key = {r.key: r for r in records if r.status == STATUS_OK}
    originals = [lambda ref=ref: load_rgb(ref.path) for ref in images]
    log = ProgressLog(out_dir, kind="dataset")
    results: dict[tuple[str, str], dict[str, float]] = {}
    reference_ready = False
    try:
        bar = tqdm(point_order, desc="set-level metrics", unit="point", disable=not config.progress, file=sys.stderr)
        for curve, point in bar:
            if (curve, point) in cached:
                results[(curve, point)] = cached[(curve, point)]
                continue
            items = [by_key.get((curve, point, ref.image_id)) for ref in images]
            if any(item is None for item in items):
                continue
            loaders = [lambda item=item: _reconstruction(out_dir, item, codecs) for item in items]
            scores = score_dataset_point(suite, originals, loaders, reference_ready)
            reference_ready = True
            results[(curve, point)] = scores
            payload = {"curve": curve, "point": point, "images": signature, "patch_size": suite.patch_size}
            log.append_line(json.dumps({**payload, "scores": scores}))
    finally:
        log.close()
    return results


def _by_name(primary: LearnedCodec | None, compared: Sequence[LearnedCodec]) -> dict[str, LearnedCodec]:
    return {codec.name: codec for codec in ([primary] if primary is not None else []) + list(compared)}


def _is_primary(point: OperatingPoint, primary: LearnedCodec | None) -> bool:
    """A point of ``--model`` (whose file sizes the matched baselines follow), not of a ``--compare`` codec."""
    return point.learned and primary is not None and point.codec == primary.name


def _reconstruction(out_dir: Path, record: ItemRecord, codecs: dict[str, LearnedCodec]) -> Image.Image:
    """An item's 8-bit reconstruction: the kept PNG, else decoded again from its file."""
    if record.reconstruction and (out_dir / record.reconstruction).is_file():
        return load_rgb(out_dir / record.reconstruction)
    data = (out_dir / record.bitstream).read_bytes()
    size = (record.width, record.height)
    if record.codec in classical.BASELINES:
        return classical.decode_scaled(classical.get_baseline(record.codec), data, record.scale, size)
    if record.codec not in codecs:
        raise InputError(f"{record.bitstream}: decoding it needs --model {record.codec}")
    return codecs[record.codec].decode(data, size)


def _worker_count(config: EvalConfig, num_tasks: int) -> int:
    if config.workers > 0:
        return min(config.workers, max(1, num_tasks))
    if config.device.startswith("cuda"):
        return 1
    return max(1, min(_available_cores(), num_tasks))


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _check_or_write_run_file(
    out_dir: Path, config: EvalConfig, images: list[ImageRef], rank: int, model_curve: str | None,
    compared_curves: Sequence[str] = (),
) -> None:
    """Refuse to mix two models, weights or data sets in one ``OUT`` (items are keyed by name only)."""
    payload = run_identity(out_dir, config.model, config.weights, config.data, model_curve)
    compared = [{"model": model, "weights": str(Path(weights).resolve()) if weights else None, "curve": curve}
                for (model, weights), curve in zip(config.compare, compared_curves)]
    previous = _previous_compared(out_dir)
    for entry in compared:
        old = previous.get(entry["curve"])
        if old is not None and old != entry:
            raise InputError(f"{out_dir} holds {entry['curve']!r} items of {old['model']} with weights "
                             f"{old['weights']!r}, not {entry['weights']!r}; use another --out")
    payload["compare"] = list({**previous, **{e["curve"]: e for e in compared}}.values())
    if rank == 0:
        payload.update(
            images=[i.image_id for i in images],
            baselines=list(config.baselines),
            scales=list(config.scales),
            target_bpp=list(config.target_bpp),
            metrics=list(config.metrics or ()),
            patch_size=config.patch_size,
            device=config.device,
        )
        atomic_write_text(out_dir / RUN_JSON, json.dumps(payload, indent=2) + "\n")


def _previous_compared(out_dir: Path) -> dict[str, dict]:
    """Curve -> identity of the ``--compare`` codecs an earlier run into ``out_dir`` scored."""
    try:
        entries = json.loads((out_dir / RUN_JSON).read_text()).get("compare") or []
    except (OSError, ValueError, AttributeError):
        return {}
    return {e["curve"]: e for e in entries if isinstance(e, dict) and "curve" in e}

"""The eval runner with a fake learned codec and classical baselines: files, layout, resume, pools."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import fake_codec_for_eval  # noqa: E402

from latentcodec.evaluation import runner as runner_module  # noqa: E402
from latentcodec.evaluation.results import load_finished  # noqa: E402
from latentcodec.evaluation.runner import EvalConfig, run_evaluation  # noqa: E402
from latentcodec.evaluation.scoring import MetricSuite  # noqa: E402

FAKE = "fake_codec_for_eval:make"
REPO_ROOT = HERE.parents[1]


def _write_images(folder: Path, sizes=((48, 40), (40, 56))) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for index, (width, height) in enumerate(sizes):
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1) % 256
        pixels = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"img{index}.png")
    return folder


def _config(tmp_path: Path, **overrides) -> EvalConfig:
    settings = dict(
        data=str(_write_images(tmp_path / "data")),
        out=str(tmp_path / "out"),
        model=FAKE,
        qualities=(0, 2),
        baselines=("jpeg", "webp"),
        scales=(1, 2),
        baseline_values={"jpeg": (5, 60), "webp": (10, 80)},
        metrics=("psnr",),
        workers=1,
        progress=False,
    )
    settings.update(overrides)
    return EvalConfig(**settings)


def test_files_rates_layout_and_csv(tmp_path):
    # Tiny images: a JPEG's headers alone are ~300 B, so targets and matched sizes must be larger.
    config = _config(tmp_path, target_bpp=(2.0,), qualities=(2, 3))
    summary = run_evaluation(config)
    out = Path(config.out)

    curves = {c.name: c for c in summary.curves}
    assert set(curves) == {
        "fake-glc", "jpeg", "jpeg-down2", "jpeg-target", "jpeg-matched",
        "webp", "webp-down2", "webp-target", "webp-matched",
    }  # fmt: skip
    # 2 model + per baseline (2 values x 2 scales + 1 target + 2 matched) = 2 + 2 * 7, on 2 images.
    assert len(summary.records) == 2 * 16 == summary.new_items

    # Every item is a real file; bpp counts all of its bytes over the original size.
    for record in summary.records:
        assert record.status == "ok", record
        path = out / record.bitstream
        assert path.is_file() and path.stat().st_size == record.bytes
        assert record.bpp == pytest.approx(8 * record.bytes / (record.width * record.height))
        assert set(record.metrics) == {"psnr"}
        assert min(record.compress_s, record.decompress_s, record.metrics_s) >= 0.0
    model_records = [r for r in summary.records if r.curve == "fake-glc"]
    assert all(r.estimated_bpp is not None and r.reconstruction for r in model_records)

    # The model file is exactly what the codec writes, and the score is of its decoded 8-bit image.
    image = Image.open(Path(config.data) / "img0.png").convert("RGB")
    record = next(r for r in model_records if r.image == "img0" and r.point == "q2")
    codec = fake_codec_for_eval.make().at_quality(2)
    assert (out / record.bitstream).read_bytes() == codec.compress(image)
    decoded = np.asarray(codec.decompress(codec.compress(image)), np.float64)
    expected_psnr = 10 * math.log10(1.0 / np.mean((np.asarray(image, np.float64) / 255 - decoded / 255) ** 2))
    assert record.metrics["psnr"] == pytest.approx(expected_psnr, rel=1e-9)

    # Size-limited modes never exceed their limit.
    by_key = {r.key: r for r in summary.records}
    for r in summary.records:
        if r.mode == "target-bpp":
            assert r.bytes <= math.floor(r.target_bpp * r.width * r.height / 8)
        if r.mode == "matched":
            assert r.bytes <= by_key[("fake-glc", r.matched_point, r.image)].bytes

    # CompressAI layout: one entry per quality, each the mean over the images.
    payload = json.loads((out / "results" / "fake-glc.json").read_text())
    assert payload["name"] == "fake-glc" and isinstance(payload["description"], str)
    results = payload["results"]
    assert results["point"] == ["q2", "q3"] and results["quality"] == [2, 3]
    for key in ("bpp", "psnr", "estimated_bpp", "encoding_time", "decoding_time", "metrics_time"):
        assert len(results[key]) == 2
    for index, point in enumerate(("q2", "q3")):
        items = [r for r in model_records if r.point == point]
        assert len(items) == 2
        assert results["bpp"][index] == pytest.approx(np.mean([r.bpp for r in items]))
        assert results["psnr"][index] == pytest.approx(np.mean([r.metrics["psnr"] for r in items]))
    hevc_like = json.loads((out / "results" / "jpeg-down2.json").read_text())
    assert hevc_like["results"]["point"] == ["quality-5", "quality-60"]

    # Per-image CSV and JSON hold every item with its timings.
    with open(out / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(summary.records)
    for column in ("curve", "point", "image", "bytes", "bpp", "psnr", "compress_s", "decompress_s", "metrics_s"):
        assert column in rows[0]
    assert len(json.loads((out / "per_image.json").read_text())) == len(summary.records)


def test_classical_model_alone_and_unreachable_targets(tmp_path):
    config = _config(tmp_path, model="jpeg", qualities=(10, 90), baselines=(), target_bpp=(0.01,), scales=(1,))
    summary = run_evaluation(config)
    curves = {c.name: c for c in summary.curves}
    assert set(curves) == {"jpeg", "jpeg-target"}
    assert [p.point for p in curves["jpeg"].points] == ["quality-10", "quality-90"]
    # 0.01 bpp of a 48x40 image is 2 bytes: no JPEG is that small. The point is left off the curve.
    targets = [r for r in summary.records if r.curve == "jpeg-target"]
    assert targets and all(r.status == "unreachable" and r.bytes is None and "smallest" in r.note for r in targets)
    assert curves["jpeg-target"].points == () and curves["jpeg-target"].incomplete_points == ("bpp-0.01",)


def test_resume_after_a_kill_redoes_no_finished_item(tmp_path):
    config = _config(tmp_path, baselines=("jpeg",), scales=(1,))
    command = [
        sys.executable, "-m", "latentcodec.cli", "eval", "--model", FAKE, "--data", config.data,
        "--out", config.out, "--qualities", "0,1,2,3", "--baselines", "jpeg", "--scales", "1",
        "--baseline-values", "jpeg=5,60", "--metrics", "psnr", "--workers", "1", "--no-progress",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO_ROOT)]))
    # Each image: 4 model items + 2 jpeg + 4 matched = 10. The 7th compress call (image 2's
    # third model item) is SIGKILLed, after image 1's 10 items and image 2's first 2.
    killed = subprocess.run(
        command, env=dict(env, **{fake_codec_for_eval.KILL_AFTER_ENV: "7"}), capture_output=True, text=True
    )
    assert killed.returncode == -9, killed.stderr
    finished_before = load_finished(config.out)
    assert len(finished_before) == 12
    # A kill in the middle of a write leaves a torn line; the reader must skip it.
    log = next((Path(config.out) / "progress").glob("items-*.jsonl"))
    with open(log, "ab") as f:
        f.write(b'{"curve": "fake-glc", "point": "q3", "ima')
    logs_before = set((Path(config.out) / "progress").glob("items-*.jsonl"))

    resumed = subprocess.run(command, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "8 items evaluated, 12 resumed" in resumed.stdout
    new_logs = set((Path(config.out) / "progress").glob("items-*.jsonl")) - logs_before
    redone = [json.loads(line) for path in new_logs for line in path.read_text().splitlines()]
    redone_keys = {(r["curve"], r["point"], r["image"]) for r in redone}
    assert len(redone) == 8 and not redone_keys & set(finished_before)
    assert len(load_finished(config.out)) == 20
    results = json.loads((Path(config.out) / "results" / "fake-glc.json").read_text())["results"]
    assert results["point"] == ["q0", "q1", "q2", "q3"]


def test_resume_redoes_items_missing_a_newly_requested_metric(tmp_path, monkeypatch):
    config = _config(tmp_path, baselines=(), qualities=(1,))
    run_evaluation(config)

    class Constant:
        name = "constant"
        higher_is_better = True

        def __call__(self, reference, reconstruction):
            return 1.0

    def suite_with_constant(names, device="cpu", patch_size=256):
        from latentcodec.evaluation.metrics import PSNR

        return MetricSuite(image_metrics=[PSNR(), Constant()], patch_size=patch_size)

    monkeypatch.setattr(runner_module, "build_suite", suite_with_constant)
    again = run_evaluation(config)
    assert again.new_items == 2 and again.resumed_items == 0
    assert all(r.metrics["constant"] == 1.0 for r in again.records)
    unchanged = run_evaluation(config)
    assert unchanged.new_items == 0 and unchanged.resumed_items == 2


def test_process_pool_gives_the_same_results_as_one_process(tmp_path):
    serial = run_evaluation(_config(tmp_path / "a", baselines=("jpeg",), scales=(1,)))
    pooled = run_evaluation(_config(tmp_path / "b", baselines=("jpeg",), scales=(1,), workers=2))
    assert pooled.new_items == serial.new_items == 2 * 6
    logs = list((tmp_path / "b" / "out" / "progress").glob("items-*.jsonl"))
    # The items were written by pool processes (one log per process), not by this one.
    assert logs and all(not path.stem.endswith(f"-{os.getpid()}") for path in logs)

    def essentials(summary):
        return sorted((r.key, r.status, r.bytes, r.metrics.get("psnr")) for r in summary.records)

    assert essentials(pooled) == essentials(serial)


def test_set_level_metrics_run_once_per_point_and_are_cached(tmp_path, monkeypatch):
    calls = {"reference": 0, "reconstruction": 0, "compute": 0}

    class CountingSetMetric:
        names = ("setmean",)
        higher_is_better = False

        def __init__(self):
            self.real, self.fake = [], []

        def update_reference(self, reference):
            calls["reference"] += 1
            self.real.append(float(np.mean(reference)))

        def update_reconstruction(self, reconstruction):
            calls["reconstruction"] += 1
            self.fake.append(float(np.mean(reconstruction)))

        def update(self, reference, reconstruction):
            raise AssertionError("the runner should feed the two sides separately")

        def reset(self, keep_reference=False):
            self.fake = []
            if not keep_reference:
                self.real = []

        def compute(self):
            from latentcodec.evaluation.metrics import MetricScore

            calls["compute"] += 1
            assert len(self.real) == len(self.fake) == 2
            return (MetricScore("setmean", abs(np.mean(self.real) - np.mean(self.fake))),)

    metric = CountingSetMetric()

    def suite(names, device="cpu", patch_size=256):
        from latentcodec.evaluation.metrics import PSNR

        return MetricSuite(image_metrics=[PSNR()], dataset_metrics=[metric], patch_size=patch_size)

    monkeypatch.setattr(runner_module, "build_suite", suite)
    config = _config(tmp_path, baselines=("jpeg",), scales=(1,), qualities=(0, 3), matched=False)
    summary = run_evaluation(config)
    # 4 points x 2 images; the reference images are read once, not once per point.
    assert calls == {"reference": 2, "reconstruction": 8, "compute": 4}
    for curve in summary.curves:
        assert all(p.values["setmean"] >= 0 for p in curve.points)
    before = dict(calls)
    again = run_evaluation(config)
    assert calls == before  # nothing recomputed on resume
    assert [p.values["setmean"] for c in again.curves for p in c.points] == [
        p.values["setmean"] for c in summary.curves for p in c.points
    ]


def test_single_image_file_as_data(tmp_path):
    config = _config(tmp_path, baselines=(), qualities=(1,))
    config = EvalConfig(**{**config.__dict__, "data": str(Path(config.data) / "img1.png")})
    summary = run_evaluation(config)
    assert [r.image for r in summary.records] == ["img1"]
    assert summary.curves[0].num_images == 1


def test_another_model_into_the_same_out_is_refused(tmp_path):
    from latentcodec.errors import InputError

    config = _config(tmp_path, baselines=(), qualities=(0,))
    run_evaluation(config)
    with pytest.raises(InputError, match="another --out"):
        run_evaluation(EvalConfig(**{**config.__dict__, "model": "jpeg", "qualities": (50,)}))


def test_compared_models_are_scored_in_the_same_run_at_every_quality(tmp_path):
    """--compare: another learned codec on the same images, every quality, its own files and curve;
    the matched baselines follow --model's file sizes only."""
    from latentcodec.errors import InputError

    config = _config(tmp_path, baselines=("jpeg",), scales=(1,), compare=(("fake_codec_for_eval:make_other", None),))
    summary = run_evaluation(config)
    curves = {c.name: c for c in summary.curves}
    assert set(curves) == {"fake-glc", "fake-other", "jpeg", "jpeg-matched"}
    other = [r for r in summary.records if r.curve == "fake-other"]
    assert sorted({r.point for r in other}) == ["q0", "q1", "q2", "q3"] and len(other) == 8
    for record in other:  # a real file per item, decoded by the compared codec
        assert record.status == "ok" and record.bitstream.startswith("bitstreams/fake-other/")
        assert (Path(config.out) / record.bitstream).stat().st_size == record.bytes
    model_bytes = {(r.image, r.point): r.bytes for r in summary.records if r.curve == "fake-glc"}
    for record in (r for r in summary.records if r.curve == "jpeg-matched" and r.status == "ok"):
        assert record.bytes <= model_bytes[(record.image, record.matched_point)]
    assert {r.matched_point for r in summary.records if r.curve == "jpeg-matched"} == {"q0", "q2"}
    run = json.loads((Path(config.out) / "run.json").read_text())
    assert [e["curve"] for e in run["compare"]] == ["fake-other"]
    again = run_evaluation(config)  # resumes: nothing new
    assert again.new_items == 0
    with pytest.raises(InputError, match="already in this run"):
        run_evaluation(EvalConfig(**{**config.__dict__, "compare": (("fake_codec_for_eval:make", None),)}))
    with pytest.raises(InputError, match="another --out"):
        run_evaluation(EvalConfig(**{**config.__dict__, "compare": (("fake_codec_for_eval:make_other", str(tmp_path)),)}))


def test_torchrun_shards_images_by_rank_and_rank_0_gathers(tmp_path):
    config = _config(tmp_path, baselines=("jpeg",), scales=(1,))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "latentcodec.cli", "eval", "--model", FAKE, "--data", config.data, "--out", config.out,
        "--qualities", "2,3", "--baselines", "jpeg", "--scales", "1", "--baseline-values", "jpeg=5,60",
        "--metrics", "psnr", "--workers", "1", "--no-progress",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO_ROOT)]), OMP_NUM_THREADS="1")
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    # 2 images x (2 model + 2 jpeg + 2 matched): all counted once, on rank 0 only.
    assert completed.stdout.count("12 items evaluated, 0 resumed") == 1
    logs = list((Path(config.out) / "progress").glob("items-*.jsonl"))
    images_per_log = [{json.loads(line)["image"] for line in path.read_text().splitlines()} for path in logs]
    assert sorted(map(sorted, images_per_log)) == [["img0"], ["img1"]]  # one image shard per rank
    per_image = json.loads((Path(config.out) / "per_image.json").read_text())
    assert len(per_image) == 12
    results = json.loads((Path(config.out) / "results" / "fake-glc.json").read_text())
    assert results["num_images"] == 2 and results["results"]["point"] == ["q2", "q3"]


def test_registered_glc_image_through_the_public_api(tmp_path):
    """``--model glc-image --weights DIR`` drives latentcodec.load (tiny preset, untrained weights)."""
    import torch

    import latentcodec
    from latentcodec.models.glc_image import GLCImage, GLCImageConfig

    torch.manual_seed(0)
    weights = GLCImage(GLCImageConfig.tiny()).save_pretrained(tmp_path / "weights")
    config = _config(
        tmp_path, model="glc-image", weights=str(weights), qualities=(0, 3), baselines=("webp",), scales=(1,),
        baseline_values={"webp": (50,)}, matched=False,
    )  # fmt: skip
    summary = run_evaluation(config)
    glc = [r for r in summary.records if r.curve == "glc-image"]
    assert len(glc) == 4 and all(r.status == "ok" and r.estimated_bpp > 0 for r in glc)
    codec = latentcodec.load("glc-image", quality=0, weights=weights)
    for record in glc:
        data = (Path(config.out) / record.bitstream).read_bytes()
        assert len(data) == record.bytes
        kept = np.asarray(Image.open(Path(config.out) / record.reconstruction).convert("RGB"))
        assert np.array_equal(np.asarray(codec.decompress(data)), kept)
    assert {c.name for c in summary.curves} == {"glc-image", "webp"}

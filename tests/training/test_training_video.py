"""Stage "video": P-frame training over a frozen I-frame model, on the tiny preset, end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from training_helpers import run_two_process_training, tiny_config, write_config, write_images

from latentcodec.errors import ConfigError
from latentcodec.models.glc_image import GLCImage, GLCImageConfig
from latentcodec.models.glc_video import GLCVideo
from latentcodec.training.config import load_config
from latentcodec.training.trainer import CHECKPOINT_FILE, Trainer, export_inference_model, run_training


@pytest.fixture(scope="module")
def video_setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("video_training")
    torch.manual_seed(0)
    GLCImage(GLCImageConfig.tiny()).save_pretrained(root / "intra")
    write_images(root / "videos" / "seq", 5, size=(80, 72), seed=4)
    write_images(root / "photos", 4, size=(96, 96), seed=5)
    return {"root": root}


def video_config(root: Path, name: str, **extra) -> Path:
    config = tiny_config(root / name, root / "photos", "video", **{
        "name": name,
        "video.intra_weights": str(root / "intra"),
        "video.video_sources": [str(root / "videos")],
        "video.photo_dirs": [str(root / "photos")],
        "video.clip_length": 3,
        "validation.every": 3,
        "validation.video": str(root / "videos" / "seq"),
        "validation.frames": 3,
        "validation.rate_indices": [0, 3],
        "steps": 3,
        "rates.target_bpp": [0.1, 0.2, 0.3, 0.4],
        "rates.initial_gains": [0.5, 0.7, 0.85, 1.0],
        **extra,
    })
    config["gan"] = {}
    return write_config(root / f"{name}.yaml", config)


def test_video_stage_trains_only_the_p_model_and_exports(video_setup):
    root = video_setup["root"]
    config = load_config(video_config(root, "v1"))
    intra_before = GLCImage.from_pretrained(root / "intra").interpolate_rates(64).state_dict()
    trainer = Trainer(config)
    inter_before = {k: v.clone() for k, v in trainer.model.inter.state_dict().items()}
    trainer.fit()
    trainer.close()
    model = trainer.model
    for key, value in model.intra.state_dict().items():
        assert torch.equal(value.cpu(), intra_before[key]), f"frozen {key} changed"
    changed = [k for k, v in model.inter.state_dict().items() if not torch.equal(v, inter_before[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("y_spatial_prior.") for k in changed)
    gains = model.inter.y_q_enc[:, 0, 0, 0].detach()
    assert gains[0] != gains[63]  # initial_gains spread the anchors apart

    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3] and all(r["bpp"] > 0 for r in losses)
    validation = [r["validation"] for r in records if "validation" in r][-1]
    assert set(validation) == {"0", "63"}
    height, width = 72, 80
    for result in validation.values():
        assert result["bpp"] * height * width * 3 / 8 == pytest.approx(round(result["bpp"] * height * width * 3 / 8))

    out = export_inference_model(trainer.run_dir, root / "export", dtype=torch.float16)
    exported = GLCVideo.from_pretrained(out)
    anchors = exported.inter.y_q_enc[[0, 21, 42, 63], 0, 0, 0]
    middle = exported.inter.y_q_enc[10, 0, 0, 0]
    assert min(anchors[0], anchors[1]) <= middle <= max(anchors[0], anchors[1])
    frames = [torch.rand(1, 3, 40, 56) for _ in range(2)]
    data = exported.compress_frames(frames, 30)
    assert GLCVideo.from_pretrained(out).compress_frames(frames, 30) == data


def test_video_stage_resumes_where_it_stopped(video_setup):
    root = video_setup["root"]
    path = video_config(root, "v2", **{"validation.every": 0, "runtime.checkpoint_every": 2})
    run_training(load_config(path, ["steps=2"]))
    run_dir = root / "v2" / "runs" / "v2"
    assert torch.load(run_dir / CHECKPOINT_FILE, weights_only=False)["step"] == 2
    run_training(load_config(path, ["steps=4"]), resume=True)
    assert torch.load(run_dir / CHECKPOINT_FILE, weights_only=False)["step"] == 4
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("override, message", [
    ("rates.lambdas=[1.0, 2.0]", "anchor_levels"),
    ("video.anchor_levels=[0, 64, 2, 3]", "anchor_levels"),
    ("video.clip_length=1", "clip_length"),
    ("preset=huge", "preset"),
    ("data.crop_size=48", "multiple"),
    ("losses.lowpass_latent=5.0", "low-pass path"),
    ("losses.lowpass_latent_floor=5.0", "low-pass path"),
    ("losses.lowpass_floor_over_intra=true", "lowpass_floor_over_intra applies"),
])
def test_video_config_errors(video_setup, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(video_config(video_setup["root"], "bad"), [override])


def test_two_process_video_run_keeps_ranks_identical(video_setup, tmp_path):
    root = video_setup["root"]
    path = video_config(root, "ddp", **{"validation.every": 0, "data.batch_size": 1,
                                        "runtime.run_root": str(tmp_path / "runs")})
    result = run_two_process_training(path, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])
    assert ranks[0]["first_batch"].dim() == 5  # clips (B, T, 3, H, W)
    for key, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][key]), f"{key} differs across ranks"
    assert torch.equal(ranks[0]["lambdas"], ranks[1]["lambdas"])


def test_low_pass_term_weighs_every_p_frame_and_leaves_the_latent_mse_pure(video_setup, monkeypatch):
    """losses.lowpass_latent in stage "video": lambda weighs latent MSE + the low-pass error of each
    P-frame; the logged latent_mse stays the plain MSE."""
    from latentcodec.models import glc_video

    root = video_setup["root"]
    tiny = GLCImageConfig.tiny()
    lowpass_intra = dataclasses.replace(tiny, vqgan=dataclasses.replace(tiny.vqgan, lowpass_path=True))
    torch.manual_seed(1)
    GLCImage(lowpass_intra).save_pretrained(root / "intra_lowpass")
    monkeypatch.setitem(glc_video.PRESETS, "tiny", lambda: dataclasses.replace(
        glc_video.GLCVideoConfig.tiny(), intra=dataclasses.replace(lowpass_intra, num_rates=64)))
    results, unweighted = {}, {}  # the totals under the config's lambdas and under lambdas of zero
    runs = {"plain": {}, "weighted": {"losses.lowpass_latent": 50.0}, "floor": {"losses.lowpass_latent_floor": 50.0},
            "over_intra": {"losses.lowpass_latent_floor": 50.0, "losses.lowpass_floor_over_intra": True}}
    for name, losses in runs.items():
        config = load_config(video_config(root, f"lp-{name}", **{
            "video.intra_weights": str(root / "intra_lowpass"), **losses}))
        trainer = Trainer(config)
        torch.manual_seed(2)
        batch = trainer.stream.next_batch()
        rates = torch.zeros(batch.shape[0], dtype=torch.long)
        for lambdas, out in ((trainer.lambdas, results), (torch.zeros_like(trainer.lambdas), unweighted)):
            torch.manual_seed(3)
            out[name] = trainer.objective(batch, rates, lambdas, None)
        trainer.close()
    plain, weighted = results["plain"], results["weighted"]
    assert torch.equal(plain.latent_mse, weighted.latent_mse)
    assert torch.equal(plain.bpp, weighted.bpp)
    assert float(weighted.total.detach()) > float(plain.total.detach())
    # losses.lowpass_latent_floor sits outside lambda: with every lambda at zero it still adds to the
    # total, where the term under lambda adds nothing.
    assert torch.equal(unweighted["weighted"].total, unweighted["plain"].total)
    assert float(unweighted["floor"].total.detach()) > float(unweighted["plain"].total.detach())
    # Counted only above the I-frame's own low-pass error, the floor adds less (never below nothing).
    assert float(unweighted["plain"].total.detach()) <= float(unweighted["over_intra"].total.detach()) < float(unweighted["floor"].total.detach())

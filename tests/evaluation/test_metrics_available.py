"""available_metrics: what is built, what is reported unavailable, and why."""

from __future__ import annotations

import pytest
import torch

from latentcodec.errors import ConfigError
from latentcodec.evaluation.metrics import (
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    TOOL_METRIC_NAMES,
    DatasetMetric,
    ImageMetric,
    available_metrics,
    checkpoint_dir,
    missing_tool_reason,
    write_random_weights,
)

torch.set_num_threads(1)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    return tmp_path / "th"


def test_checkpoint_dir_follows_torch_home(empty_torch_home) -> None:
    assert checkpoint_dir() == empty_torch_home / "hub" / "checkpoints"


def test_missing_weights_make_metrics_unavailable_with_the_expected_path(empty_torch_home) -> None:
    selection = available_metrics(METRIC_NAMES)
    # The tool metrics depend on what is installed here, not on weights (test_metrics_tools.py).
    tools = [name for name in TOOL_METRIC_NAMES if missing_tool_reason(name) is None]
    assert [m.name for m in selection.per_image] == ["psnr", "thumbnail_psnr", "ms_ssim", "nlpd", *tools]
    assert selection.per_dataset == []
    reasons = dict(selection.unavailable)
    weight_metrics = [name for name in reasons if name not in TOOL_METRIC_NAMES]
    assert weight_metrics == ["lpips_alex", "lpips_vgg", "dists", "fid", "kid"]
    folder = empty_torch_home / "hub" / "checkpoints"
    assert str(folder / "alexnet-owt-7be5be79.pth") in reasons["lpips_alex"]
    assert str(folder / "vgg16-397923af.pth") in reasons["lpips_vgg"]
    assert str(folder / "vgg16-397923af.pth") in reasons["dists"]
    assert str(folder / "pt_inception-2015-12-05-6726825d.pth") in reasons["fid"]
    assert all("\n" not in reason for reason in reasons.values())


def test_the_second_file_of_a_metric_is_named_when_only_it_is_missing(empty_torch_home) -> None:
    folder = empty_torch_home / "hub" / "checkpoints"
    write_random_weights(folder, ["lpips_alex", "dists"])
    (folder / "lpips_v0.1_alex.pth").unlink()
    (folder / "dists_weights.pt").unlink()
    reasons = dict(available_metrics(["lpips_alex", "dists"]).unavailable)
    assert str(folder / "lpips_v0.1_alex.pth") in reasons["lpips_alex"]
    assert str(folder / "dists_weights.pt") in reasons["dists"]


def test_corrupt_or_foreign_files_are_unavailable_not_crashes(empty_torch_home) -> None:
    folder = empty_torch_home / "hub" / "checkpoints"
    write_random_weights(folder, ["lpips_alex", "dists"])
    (folder / "alexnet-owt-7be5be79.pth").write_bytes(b"not a checkpoint")
    torch.save({"alpha": torch.zeros(1, 3, 1, 1), "beta": torch.zeros(1, 3, 1, 1)}, folder / "dists_weights.pt")
    selection = available_metrics(["lpips_alex", "dists", "psnr"])
    reasons = dict(selection.unavailable)
    assert "alexnet-owt-7be5be79.pth: not a readable torch checkpoint" in reasons["lpips_alex"]
    assert "dists_weights.pt: 'alpha' is shape (1, 3, 1, 1), expected shape (1, 1475, 1, 1)" in reasons["dists"]
    assert [m.name for m in selection.per_image] == ["psnr"]


def test_unknown_names_are_config_errors(empty_torch_home) -> None:
    with pytest.raises(ConfigError, match="unknown metric.*lpips_squeeze"):
        available_metrics(["psnr", "lpips_squeeze"])


def test_selection_objects_follow_the_protocols(empty_torch_home) -> None:
    write_random_weights(empty_torch_home / "hub" / "checkpoints", ["lpips_alex", "fid"])
    selection = available_metrics(["psnr", "psnr", "lpips_alex", "fid", "nlpd"], patch_size=64)
    assert [m.name for m in selection.per_image] == ["psnr", "lpips_alex", "nlpd"]
    for metric in selection.per_image:
        assert isinstance(metric, ImageMetric)
        assert metric.higher_is_better == HIGHER_IS_BETTER[metric.name]
    (fid,) = selection.per_dataset
    assert isinstance(fid, DatasetMetric) and fid.names == ("fid",) and fid.patch_size == 64

"""Sharded save_pretrained folders: the split, the index, reading back, stale files and bad shards."""

from __future__ import annotations

import json

import pytest
import torch

from latentcodec.errors import WeightsError
from latentcodec.models.weight_files import (
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
    has_weights,
    plan_shards,
    read_folder_weights,
    shard_paths,
    weights_sha256,
    write_folder_weights,
)


def tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {f"block{i}.weight": torch.randn(64, 64, generator=generator) for i in range(5)}  # 16 KiB each


def test_plan_keeps_order_and_puts_an_oversized_tensor_alone():
    sizes = {"a": torch.zeros(10), "b": torch.zeros(10), "big": torch.zeros(100), "c": torch.zeros(5)}
    assert plan_shards(sizes, 80) == [["a", "b"], ["big"], ["c"]]
    assert plan_shards(sizes, 10**6) == [["a", "b", "big", "c"]]


def test_sharded_round_trip_and_switching_layouts_leaves_no_stale_files(tmp_path):
    state = tensors()
    written = write_folder_weights(tmp_path, state, max_shard_size="40KiB")
    assert [p.name for p in written] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert all(p.stat().st_size <= 40 * 1024 + 1024 for p in written)  # data + a small header
    index = json.loads((tmp_path / WEIGHTS_INDEX_FILE).read_text())
    assert set(index["weight_map"]) == set(state) and index["metadata"]["total_size"] == 5 * 64 * 64 * 4
    assert not (tmp_path / WEIGHTS_FILE).exists() and has_weights(tmp_path)
    back = read_folder_weights(tmp_path)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    sharded_digest = weights_sha256(tmp_path)

    write_folder_weights(tmp_path, state, max_shard_size="1MB")  # now small enough for one file
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIGHTS_FILE]
    assert weights_sha256(tmp_path) != sharded_digest
    write_folder_weights(tmp_path, state, max_shard_size=40 * 1024)
    write_folder_weights(tmp_path, state, max_shard_size=20 * 1024)  # 5 shards replace 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [WEIGHTS_INDEX_FILE] + [f"model-0000{i}-of-00005.safetensors" for i in range(1, 6)])
    assert len(shard_paths(tmp_path)) == 5


def test_missing_foreign_or_escaping_shards_are_named_errors(tmp_path):
    write_folder_weights(tmp_path, tensors(), max_shard_size="40KiB")
    index_path = tmp_path / WEIGHTS_INDEX_FILE
    index = json.loads(index_path.read_text())
    second = tmp_path / "model-00002-of-00003.safetensors"
    payload = second.read_bytes()
    second.unlink()
    with pytest.raises(WeightsError, match="model-00002-of-00003.safetensors not found"):
        read_folder_weights(tmp_path)
    (tmp_path / "model-00002-of-00003.safetensors").write_bytes((tmp_path / "model-00001-of-00003.safetensors").read_bytes())
    with pytest.raises(WeightsError, match="keys differ"):
        read_folder_weights(tmp_path)
    second.write_bytes(payload)
    index["weight_map"]["block0.weight"] = "../elsewhere.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(WeightsError, match="not a .safetensors file of this folder"):
        read_folder_weights(tmp_path)
    index_path.write_text("{")
    with pytest.raises(WeightsError, match="not valid JSON"):
        read_folder_weights(tmp_path)


def test_sizes_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        write_folder_weights(tmp_path, tensors(), max_shard_size="0")
    with pytest.raises(ValueError):
        write_folder_weights(tmp_path, tensors(), max_shard_size="lots")
    assert not has_weights(tmp_path)

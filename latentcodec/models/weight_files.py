"""The tensors of a save_pretrained folder: one ``model.safetensors``, or shards beside an index.

Large models are split the way transformers and diffusers split theirs, so that their folders can
be read by the same tools and no single file outgrows what a git host or package index accepts
(GitHub refuses files over 100 MB; the shipped defaults use shards of at most 45 MiB):

    model.safetensors.index.json   {"metadata": {"total_size": N}, "weight_map": {key: shard file}}
    model-00001-of-00003.safetensors
    ...

A folder holds either the single file or the index with its shards, never both: every write
removes what an earlier write of the other kind left.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch

from latentcodec.errors import WeightsError
from latentcodec.files import atomic_write, parse_byte_size

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
# transformers' default; a model of this project's sizes is one file unless a caller asks for less.
DEFAULT_MAX_SHARD_SIZE = "5GB"
_SHARD_NAME = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")


def has_weights(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return (folder / WEIGHTS_FILE).is_file() or (folder / WEIGHTS_INDEX_FILE).is_file()


def weights_location(folder: str | os.PathLike) -> Path:
    """The file that names the folder's tensors (the index when sharded), for messages and digests."""
    folder = Path(folder)
    index = folder / WEIGHTS_INDEX_FILE
    return index if index.is_file() else folder / WEIGHTS_FILE


def _read_index(index_path: Path) -> dict[str, str]:
    """The index's weight map, checked to name only shard files of this folder."""
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{index_path}: not valid JSON ({exc})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightsError(f"{index_path}: no weight_map")
    for key, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise WeightsError(f"{index_path}: key {key!r} maps to {shard!r}, not a .safetensors file of this folder")
    return weight_map


def shard_paths(folder: str | os.PathLike) -> list[Path]:
    """Every file holding the folder's tensors, in order (one path when not sharded)."""
    folder = Path(folder)
    location = weights_location(folder)
    if location.name == WEIGHTS_FILE:
        return [location]
    return [folder / name for name in sorted(set(_read_index(location).values()))]


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsError(f"{path} not found")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable safetensors file ({exc})") from None


def read_folder_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a save_pretrained folder, single-file or sharded. Each shard must hold exactly
    the keys the index assigns to it (a shard from another save is an error naming it)."""
    folder = Path(folder)
    location = weights_location(folder)
    if location.name == WEIGHTS_FILE:
        return _load_file(location)
    weight_map = _read_index(location)
    tensors: dict[str, torch.Tensor] = {}
    for name in sorted(set(weight_map.values())):
        shard = _load_file(folder / name)
        expected = {k for k, v in weight_map.items() if v == name}
        if set(shard) != expected:
            stray = sorted(set(shard) ^ expected)
            raise WeightsError(f"{folder / name}: its keys differ from {WEIGHTS_INDEX_FILE} (e.g. {stray[0]!r})")
        tensors.update(shard)
    return tensors


def plan_shards(tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> list[list[str]]:
    """Keys grouped into consecutive shards of at most ``max_shard_bytes`` of tensor data (a tensor
    larger than that gets a shard of its own)."""
    shards: list[list[str]] = [[]]
    filled = 0
    for key, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and filled + size > max_shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(key)
        filled += size
    return shards


def write_folder_weights(folder: str | os.PathLike, tensors: dict[str, torch.Tensor],
                         metadata: dict[str, str] | None = None,
                         max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> list[Path]:
    """Write ``tensors`` into ``folder`` as one file, or as shards of at most ``max_shard_size``
    (bytes, or '45MiB', '2GB') with an index; returns the written files. Each file is written
    atomically and the index last, so an interrupted write leaves the previous weights readable."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    max_bytes = parse_byte_size(max_shard_size)
    if max_bytes <= 0:
        raise ValueError(f"max_shard_size must be positive, not {max_shard_size!r}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    shards = plan_shards(tensors, max_bytes)
    previous = _sharded_files(folder)
    if len(shards) == 1:
        atomic_write(folder / WEIGHTS_FILE, save=lambda tmp: save_file(tensors, tmp, metadata=metadata))
        written = [folder / WEIGHTS_FILE]
        (folder / WEIGHTS_INDEX_FILE).unlink(missing_ok=True)
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        for name, keys in zip(names, shards):
            part = {k: tensors[k] for k in keys}
            atomic_write(folder / name, save=lambda tmp, part=part: save_file(part, tmp, metadata=metadata))
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total},
                 "weight_map": {k: name for name, keys in zip(names, shards) for k in keys}}
        atomic_write(folder / WEIGHTS_INDEX_FILE, json.dumps(index, indent=2) + "\n")
        (folder / WEIGHTS_FILE).unlink(missing_ok=True)
        written = [folder / name for name in names]
    for stale in previous - set(written):
        stale.unlink(missing_ok=True)
    return written


def _sharded_files(folder: Path) -> set[Path]:
    return {path for path in folder.glob("model-*-of-*.safetensors") if _SHARD_NAME.fullmatch(path.name)}


def weights_sha256(folder: str | os.PathLike) -> str:
    """A digest of the folder's tensors as stored: the SHA-256 of ``model.safetensors``, or of the
    shards' own digests in order when sharded."""
    paths = shard_paths(folder)
    if len(paths) == 1 and paths[0].name == WEIGHTS_FILE:
        return file_sha256(paths[0])
    digest = hashlib.sha256()
    for path in paths:
        if not path.is_file():
            raise WeightsError(f"{path} not found")
        digest.update(bytes.fromhex(file_sha256(path)))
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

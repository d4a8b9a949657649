"""Run bookkeeping of ``latentcodec eval`` shared by the image and video runners: torchrun sharding
(rank, gather to rank 0) and the identity of an output folder (one model, weights and data set per
``OUT``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

from latentcodec.errors import InputError
from latentcodec.evaluation.results import RUN_JSON


class Distributed(NamedTuple):
    rank: int
    world_size: int
    local_rank: int


def distributed_from_env() -> Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return Distributed(int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def gather_to_rank0(part: Any, dist: Distributed) -> list[Any]:
    """Rank 0 receives every rank's ``part`` (in rank order); other ranks get their own back."""
    if dist.world_size <= 1:
        return [part]
    import torch.distributed as torch_dist

    gathered: list[Any] | None = [None] * dist.world_size if dist.rank == 0 else None
    torch_dist.gather_object(part, gathered, dst=0)
    return gathered if gathered is not None else [part]


def init_distributed(dist: Distributed) -> bool:
    """Join the torchrun process group; True when this call created it (and must destroy it)."""
    if dist.world_size <= 1:
        return False
    import torch.distributed as torch_dist

    if torch_dist.is_initialized():
        return False
    # Only Python objects (the records) travel between ranks, so gloo serves CPU and GPU runs alike.
    torch_dist.init_process_group(backend="gloo")
    return True


def run_identity(
    out_dir: Path, model: str | None, weights: str | None, data: str, model_curve: str | None
) -> dict[str, Any]:
    """The identity part of ``OUT/run.json`` (model, weights, data, model_curve) for this run.

    An InputError when ``OUT`` already holds another model, weights or data set. A baselines-only
    run into a folder that holds a model's items keeps naming that model.
    """
    identity = {
        "model": model,
        "weights": str(Path(weights).resolve()) if weights else None,
        "data": str(Path(data).resolve()),
    }
    path = out_dir / RUN_JSON
    previous: dict = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = {}
        for key, value in identity.items():
            old = previous.get(key)
            if key in ("model", "weights") and (previous.get("model") is None or model is None):
                continue  # adding or dropping the model beside the same baselines is fine
            if old != value:
                raise InputError(
                    f"{out_dir} holds an evaluation with {key} {old!r}, not {value!r}; use another --out"
                )
    payload: dict[str, Any] = dict(identity, model_curve=model_curve)
    if model is None and previous.get("model") is not None:
        for key in ("model", "weights", "model_curve"):
            payload[key] = previous.get(key)
    return payload

"""Process topology of a training run: torchrun's environment -> rank, world size and device."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from latentcodec.errors import ConfigError
from latentcodec.training.config import TrainConfig


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str) -> DistributedContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        return DistributedContext(rank, world_size, local_rank, True)
    return DistributedContext(rank, world_size, local_rank, False)


def choose_device(config: TrainConfig, local_rank: int) -> torch.device:
    wanted = config.runtime.device
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("runtime.device asks for CUDA but no GPU is available")
        device = torch.device("cuda", local_rank if wanted == "cuda" else torch.device(wanted).index)
        torch.cuda.set_device(device)
        return device
    return torch.device(wanted)

"""The protocol every codec implements, and its save/load machinery.

A codec is an ``nn.Module`` with:

* ``forward(x, rate_index)`` for training, returning a NamedTuple/dataclass output;
* ``compress(x, rate_index) -> bytes`` (the whole file) and ``decompress(data) -> Tensor``;
* ``save_pretrained(dir)`` / ``from_pretrained(dir)``: ``config.json`` + ``model.safetensors`` (or its shards).

Images enter and leave ``compress``/``decompress`` as float tensors in [0, 1], shape (1, 3, H, W).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from latentcodec.config import config_from_dict, config_to_dict
from latentcodec.errors import ConfigError, WeightsError
from latentcodec.files import atomic_write
from latentcodec.models.weight_files import (
    DEFAULT_MAX_SHARD_SIZE,
    WEIGHTS_FILE,
    has_weights,
    read_folder_weights,
    weights_location,
    write_folder_weights,
)
from latentcodec.nn.integer import TwinCache

CONFIG_FILE = "config.json"


class LatentCodec(nn.Module):
    """Base class of all codecs. Subclasses set ``model_name`` and ``config_class``."""

    model_name: ClassVar[str]
    config_class: ClassVar[type]
    # Checkpoint prefixes that may be absent from the model (training-only heads) and are then
    # dropped on load; everything else must match exactly.
    optional_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any):
        super().__init__()
        self.config = config
        # Files are written in the portable format (exact integer entropy parameters) unless a
        # caller asks for the float arithmetic that reproduces official test vectors.
        self.portable = True
        self.compute_dtype = torch.float32  # of the pixel-space nets at inference: set_precision
        self._integer_twins = TwinCache()

    def set_portable(self, portable: bool) -> "LatentCodec":
        """Choose the arithmetic of the files ``compress`` writes: True (default) for the exact
        integer path (format version 2, decodes anywhere), False for float (version 1, reproduces
        the official numbers but decodes reliably only on the machine kind that wrote it).
        Decoding always follows what the file records."""
        self.portable = bool(portable)
        return self

    def set_memory_budget(self, total_bytes: int | None) -> "LatentCodec":
        """Bound the process's memory while decoding: the pixel-space generator runs tile by tile
        when a whole-map pass would not fit ``total_bytes`` (None: always whole). Only nets whose
        output never feeds an entropy coder follow the budget; the encoder's tiling depends on
        the image size alone (see ``latentcodec.tokenizers.vqgan.ENCODER_ACTIVATION_BUDGET``),
        so a file never depends on the budget of the process that wrote it."""
        from latentcodec.nn.tiling import activation_budget

        activations = None
        if total_bytes is not None:
            activations = activation_budget(total_bytes, self, self.integer_twin_bytes())
        for module in self.modules():
            if getattr(module, "follows_memory_budget", False):
                module.memory_budget = activations
        return self

    def set_precision(self, precision: str) -> "LatentCodec":
        """The arithmetic of the pixel-space nets at inference: "fp32" (the default of a constructed
        or ``from_pretrained`` model), "bf16" (autocast to bfloat16 matrix units), or "auto" (bf16
        on a CPU with AMX, fp32 elsewhere); see ``latentcodec.nn.precision``. The entropy model is
        untouched, so files decode to the same symbols whatever either side chose."""
        from latentcodec.nn.precision import compute_dtype

        parameter = next(self.parameters(), None)
        dtype = compute_dtype(precision, parameter.device if parameter is not None else "cpu")
        for module in self.modules():
            if getattr(module, "follows_precision", False):
                module.compute_dtype = dtype
        self.compute_dtype = dtype
        return self

    def integer_twin_bytes(self) -> int:
        """Bytes of the integer twins decoding holds beside the weights (float64 copies of the
        entropy model's nets, outside the state dict); models with twins override this."""
        return 0

    def integer_twin_of(self, name: str, build, source: nn.Module) -> nn.Module:
        """The integer version of ``source`` built by ``build(source)``, kept until ``source`` changes."""
        return self._integer_twins.get(name, build, source)

    # -- protocol -----------------------------------------------------------------
    @property
    def num_rates(self) -> int:
        raise NotImplementedError

    def compress(self, x: torch.Tensor, rate_index: int = 0) -> bytes:
        raise NotImplementedError

    def decompress(self, data: bytes) -> torch.Tensor:
        raise NotImplementedError

    # -- persistence -------------------------------------------------------------
    def state_dict_for_saving(self) -> dict[str, torch.Tensor]:
        """Tensors written by save_pretrained. Subclasses may drop training-only parts."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}

    def save_pretrained(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None,
                        dtype: torch.dtype | None = None, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> Path:
        """``dtype`` (e.g. torch.float16) stores floating tensors narrower; they load back into
        float32 parameters exactly as stored. Weights over ``max_shard_size`` (bytes, or '45MiB')
        are split into shards beside an index (see :mod:`latentcodec.models.weight_files`)."""
        return self.write_pretrained(path, narrow_floats(self.state_dict_for_saving(), dtype), metadata,
                                     max_shard_size=max_shard_size)

    def write_pretrained(self, path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                         metadata: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                         max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> Path:
        """Write ``config.json`` (model name, config, optional metadata and ``extra`` top-level
        entries a subclass reads back) and ``tensors`` as ``model.safetensors`` (or shards)."""
        return write_model_folder(path, self.model_name, self.config, tensors, metadata, extra, max_shard_size)

    @classmethod
    def read_payload(cls, path: str | os.PathLike) -> dict[str, Any]:
        """The parsed ``config.json`` of a save_pretrained folder, checked to be this model's."""
        return read_model_payload(path, cls.model_name)

    @staticmethod
    def read_weights(folder: Path) -> dict[str, torch.Tensor]:
        """Every tensor of a save_pretrained folder (one file or shards)."""
        return read_folder_weights(folder)

    @classmethod
    def read_config(cls, path: str | os.PathLike) -> Any:
        payload = cls.read_payload(path)
        try:
            return config_from_dict(cls.config_class, payload.get("config", {}))
        except ConfigError as exc:
            raise WeightsError(f"{Path(path) / CONFIG_FILE}: {exc}") from None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs: Any):
        path = Path(path)
        config = cls.read_config(path)
        if not has_weights(path):
            raise WeightsError(f"{path / WEIGHTS_FILE} not found")
        model = cls(config, **kwargs)
        state = cls.read_weights(path)
        model.load_state_dict_strict(state, source=str(weights_location(path)), ignored_prefixes=cls.optional_prefixes)
        return model.to(device).eval()

    def load_state_dict_strict(
        self, state: dict[str, torch.Tensor], source: str, ignored_prefixes: tuple[str, ...] = (),
        assign: bool = False,
    ) -> None:
        """Strict load: any missing/unexpected key or shape mismatch is a WeightsError naming it.

        ``ignored_prefixes`` is an explicit allow-list of checkpoint keys that are dropped
        (e.g. training-only heads that an inference build does not instantiate). ``assign`` adopts
        the given tensors instead of copying them (for a model built on the meta device).
        """
        load_strict(self, state, source, f"{self.model_name} weights for this config", ignored_prefixes, assign)

    @property
    def model_id(self) -> int:
        """The stable registry id written into every bitstream."""
        from latentcodec.zoo.registry import get_entry

        return get_entry(self.model_name).model_id


def narrow_floats(tensors: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Floating tensors cast to ``dtype`` (None: unchanged); integer buffers are kept as they are."""
    if dtype is None:
        return tensors
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def write_model_folder(path: str | os.PathLike, model_name: str, config: Any, tensors: dict[str, torch.Tensor],
                       metadata: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                       max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> Path:
    """The save_pretrained layout for any named module (codecs, DLF's token prior): ``config.json``
    with the name, the config, optional metadata and ``extra`` entries; ``model.safetensors``, or
    its shards and index when larger than ``max_shard_size``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    payload = {"model": model_name, "config": config_to_dict(config), **(extra or {})}
    if metadata:
        payload["metadata"] = metadata
    atomic_write(path / CONFIG_FILE, json.dumps(payload, indent=2) + "\n")
    write_folder_weights(path, tensors, {"model": model_name}, max_shard_size)
    return path


def read_model_payload(path: str | os.PathLike, model_name: str) -> dict[str, Any]:
    """The parsed ``config.json`` of a folder written by :func:`write_model_folder`, checked to hold ``model_name``."""
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise WeightsError(f"{config_path} not found (expected a directory written by save_pretrained)")
    try:
        payload = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(payload, dict) or payload.get("model") != model_name:
        found = payload.get("model") if isinstance(payload, dict) else None
        raise WeightsError(f"{path} holds weights of model {found!r}, not {model_name!r}")
    return payload


def load_strict(
    module: nn.Module, state: dict[str, torch.Tensor], source: str, what: str, ignored_prefixes: tuple[str, ...] = (),
    assign: bool = False,
) -> None:
    """Load ``state`` into ``module`` exactly: every missing or unexpected key (up to five of each
    are named) and every shape mismatch is a WeightsError; keys under ``ignored_prefixes`` that
    the module does not have are dropped."""
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignored_prefixes) or k in own}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                listed = ", ".join(repr(k) for k in keys[:5])
                parts.append(f"{len(keys)} {label} key(s): {listed}{' ...' if len(keys) > 5 else ''}")
        raise WeightsError(f"{source}: not {what}: " + "; ".join(parts))
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise WeightsError(f"{source}: {key} has shape {tuple(tensor.shape)}, the model expects {tuple(own[key].shape)}")
    module.load_state_dict(state, strict=True, assign=assign)

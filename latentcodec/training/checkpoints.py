"""Checkpoint files and weights of training runs: atomic saves, RNG state, initialisation from a
previous run or a save_pretrained folder, and the export of a finished run as an inference model.
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentcodec.config import config_from_dict
from latentcodec.errors import ConfigError, WeightsError
from latentcodec.models.glc_image import PRESETS, GLCImage
from latentcodec.models.glc_video import PRESETS as VIDEO_PRESETS
from latentcodec.models.glc_video import GLCVideo, load_inter_strict, resolve_intra_reference
from latentcodec.models.weight_files import has_weights, read_folder_weights
from latentcodec.training.config import DLF_STAGES, PERCOV2_STAGES, TrainConfig
from latentcodec.zoo.registry import SHIPPED_WEIGHTS_DIR

CHECKPOINT_FILE = "checkpoint.pt"


def read_run_state(source: str | os.PathLike, what: str) -> tuple[dict[str, torch.Tensor], Path]:
    """The model tensors of a run folder, a trainer checkpoint (or plain state-dict file) or a
    save_pretrained folder, and the path they came from."""
    path = Path(os.path.expanduser(os.path.expandvars(str(source))))
    if path.is_dir() and (path / CHECKPOINT_FILE).is_file():
        path = path / CHECKPOINT_FILE
    if path.is_file():
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(payload, dict):
            raise WeightsError(f"{what} {path}: not a checkpoint")
        return (payload["model"] if isinstance(payload.get("model"), dict) else payload), path
    if path.is_dir() and has_weights(path):
        return read_folder_weights(path), path
    raise WeightsError(f"{what} {path}: no {CHECKPOINT_FILE} or model.safetensors there")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_model_weights(model: GLCImage, source: str) -> str:
    """Initialise ``model`` from a run folder, a trainer checkpoint or a save_pretrained folder."""
    state, path = read_run_state(source, "init_from")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if unexpected or any(not k.startswith(GLCImage.optional_prefixes) for k in missing):
        raise WeightsError(f"init_from {path}: layout differs (missing {missing[:2]}, unexpected {unexpected[:2]})")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise WeightsError(f"init_from {path}: {key} has shape {tuple(tensor.shape)}, expected {tuple(own[key].shape)}")
    model.load_state_dict(state, strict=False)
    return f"initialised from {path}" + (f" ({len(missing)} training-only tensors fresh)" if missing else "")


def build_video_model(config: TrainConfig) -> tuple[GLCVideo, str]:
    """The GLC-video model of a stage "video" run: the frozen I-frame model read from
    ``video.intra_weights`` (rates interpolated to the video's levels), the P-model fresh or
    from ``init_from`` (a run folder, checkpoint or save_pretrained folder of GLC-video)."""
    video_config = VIDEO_PRESETS[config.preset]()
    intra_path = resolve_intra_reference(os.path.expanduser(config.video.intra_weights), Path.cwd())
    intra = GLCImage.from_pretrained(intra_path).interpolate_rates(video_config.num_rates)
    if intra.config != video_config.intra:
        raise ConfigError(f"video.intra_weights {intra_path} is not a GLC-image of preset {config.preset!r}'s "
                          f"I-frame configuration")
    model = GLCVideo(video_config, intra=intra)
    note = f"I-frame model {intra_path} (frozen)"
    if config.init_from:
        source = Path(os.path.expanduser(os.path.expandvars(config.init_from)))
        if source.is_dir() and (source / CHECKPOINT_FILE).is_file():
            source = source / CHECKPOINT_FILE
        if source.is_file():
            state = torch.load(source, map_location="cpu", weights_only=False)["model"]
        else:
            state = GLCVideo.from_pretrained(source).state_dict()
        inter = {k[len("inter."):]: v for k, v in state.items() if k.startswith("inter.")}
        load_inter_strict(model.inter, inter, str(source))
        note += f", P-model from {source}"
    return model, note


def export_inference_model(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                           metadata: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """A trainer checkpoint (or run folder) -> save_pretrained folder without training-only modules.

    A stage "video" run exports its P-model with the gains between anchors interpolated; when the
    frozen I-frame model is a shipped zoo folder the export references it instead of copying it."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload["stage"] in DLF_STAGES:
        from latentcodec.training.dlf_stages import export_dlf_model

        return export_dlf_model(payload, out_dir, source=str(path), metadata=metadata, dtype=dtype)
    if payload["stage"] in PERCOV2_STAGES:
        from latentcodec.training.percov2_stages import export_percov2_model

        return export_percov2_model(payload, out_dir, source=str(path), metadata=metadata, dtype=dtype)
    if payload["stage"] == "video":
        config = config_from_dict(TrainConfig, payload["config"])
        model, _ = build_video_model(dataclasses.replace(config, init_from=str(path)))
        model.interpolate_inter_rates(config.video.anchor_levels)
        reference = config.video.intra_weights
        shipped = has_weights(SHIPPED_WEIGHTS_DIR / reference) and "/" not in reference
        return model.save_pretrained(out_dir, metadata=metadata, intra_reference=reference if shipped else None,
                                     dtype=dtype)
    config = PRESETS[payload["preset"]]()
    model = GLCImage(config, with_training_modules=False)
    state = {k: v for k, v in payload["model"].items() if not k.startswith(GLCImage.optional_prefixes)}
    model.load_state_dict_strict(state, source=str(path))
    return model.save_pretrained(out_dir, metadata=metadata, dtype=dtype)

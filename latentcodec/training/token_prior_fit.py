"""Fit a masked-token prior to a frozen model: DLF's semantic tokens (the official model included),
or PerCoV2's hyper-latent token maps (SYSTEMS.md 6.6.4, stage B).

Two resumable phases, both under one run directory:

1. **Extract.** The frozen model encodes random crops of the training images at random rates.
   DLF (crops of several windows, so windows have neighbours): per window the 32 token indices, its
   left/top neighbours' tokens and its decoded detail latent, exactly what the coder conditions on.
   PerCoV2 (:func:`token_maps_of`): the crop's whole token map, which the prior sees alone.
   Extraction is the slow part for big models (the official encoder takes seconds per window on a
   CPU), so it appends to ``tokens.safetensors`` in chunks and picks up where it stopped.
2. **Fit.** A :class:`~latentcodec.entropy.token_prior.MaskedTokenPrior` trains on the cache with the
   masked-token cross-entropy (for token maps: on the sampled pass's group, so the loss is the
   expected code length); checkpoints every ``checkpoint_every`` steps, resumable.

Held-out validation. A prior of a few million parameters memorises a few hundred crops' tokens: the
first shipped-default fits reached 0.28 bits per token on their training crops and cost more than the
fixed length on Kodak. So evenly spaced training images (``validation_images``, as the trainer's
hold-out) are withheld, ``validation_crops`` crops of them are extracted like the training crops, and
the fit keeps the weights with the fewest teacher-forced bits on them (checked every
``validate_every`` steps): the prior that ships is the one that generalised best, not the last one.

The result is a folder (``config.json`` + ``model.safetensors``) that :func:`load_token_prior`
reads and the model's ``attach_token_prior`` plugs in.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from tqdm import tqdm

from latentcodec.config import config_from_dict
from latentcodec.data.crops import RandomCropDataset, SampleKey, find_images, split_holdout
from latentcodec.entropy.token_prior import MaskedTokenPrior, TokenPriorConfig, TokenPriorInputs
from latentcodec.errors import WeightsError
from latentcodec.files import atomic_write
from latentcodec.models import dlf_tokens
from latentcodec.nn import integer

CACHE_FILE = "tokens.safetensors"
VALIDATION_FILE = "validation_tokens.safetensors"
CHECKPOINT_FILE = "prior_checkpoint.pt"
RECORD_FILE = "fit.json"  # what the cache and checkpoint in a run folder were made from
PRIOR_KIND = "dlf-token-prior"
PRIOR_KINDS = {"dlf": PRIOR_KIND, "percov2": "percov2-token-prior"}  # the model a prior folder is for


@dataclass(frozen=True)
class TokenPriorFitConfig:
    crops: int = 256  # training crops to encode
    crop_windows: int = 2  # crop side in windows (2: 512x512 crops for 256-pixel windows)
    fit_steps: int = 2000
    batch_windows: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_every: int = 200
    chunk_crops: int = 8  # crops per appended cache chunk
    # Withheld for validation: at most this many evenly spaced images (never more than 1 in 8 of
    # them, so a small folder still trains on most of its images; none with fewer than 8 images).
    validation_images: int = 48
    validation_crops: int = 64
    validate_every: int = 100


class ValidationPoint(NamedTuple):
    step: int
    bits_per_token: float


class FitResult(NamedTuple):
    prior: MaskedTokenPrior  # the best validated weights (the last ones without a validation set)
    step: int  # the step those weights are from
    validation_bits_per_token: float | None  # on the held-out crops; None without a validation set
    history: tuple[ValidationPoint, ...]


class TokenCache(NamedTuple):
    tokens: torch.Tensor  # (N, T) int64
    context: torch.Tensor  # (N, 2, T) int64, -1 for absent neighbours (PerCoV2: (N, 0, T))
    condition: torch.Tensor  # (N, positions, C) float32: the decoded detail latent per window (PerCoV2: (N, 0, 1))

    def __len__(self) -> int:
        return self.tokens.shape[0]


def _read_cache(path: Path) -> tuple[TokenCache | None, int]:
    from safetensors.torch import load_file

    if not path.is_file():
        return None, 0
    data = load_file(str(path))
    cache = TokenCache(data["tokens"], data["context"], data["condition"])
    return cache, int(data["crops_done"].item())


def _write_cache(path: Path, cache: TokenCache, crops_done: int) -> None:
    from safetensors.torch import save_file

    tensors = {"tokens": cache.tokens.contiguous(), "context": cache.context.contiguous(),
               "condition": cache.condition.contiguous(), "crops_done": torch.tensor([crops_done])}
    atomic_write(path, save=lambda tmp: save_file(tensors, tmp))


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of a model's weights by content, not by path: a re-export to the same folder after more
    training is other weights, and its tokens are other tokens."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def claim_run_dir(run_dir: Path, record: dict, restart: bool = False) -> None:
    """Tie a run folder to one fit, so that a rerun resumes only the fit it started (the same weights,
    images, crop size and prior shape; more crops or steps continue it). ``restart`` discards the folder's
    token caches and checkpoint first. A folder holding another fit is refused, naming what differs."""
    # Both token caches belong to the weights that encoded them: held-out tokens of earlier weights
    # would choose the prior by the wrong model's tokens (session 20's DLF refit did).
    work = [run_dir / CACHE_FILE, run_dir / VALIDATION_FILE, run_dir / CHECKPOINT_FILE]
    if restart:
        for file in [*work, run_dir / RECORD_FILE]:
            file.unlink(missing_ok=True)
    record = json.loads(json.dumps(record))  # as it will read back: tuples become lists
    path = run_dir / RECORD_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = sorted(key for key in record.keys() | previous.keys() if record.get(key) != previous.get(key))
        if changed:
            raise WeightsError(f"{run_dir} holds a fit of other {', '.join(changed)}; pass --restart to discard "
                               "it, or another --run-dir")
    elif any(file.exists() for file in work):
        raise WeightsError(f"{run_dir} holds a fit with no record of its weights; pass --restart to discard it, "
                           "or another --run-dir")
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True))


@torch.inference_mode()
def windows_of(model, crop: torch.Tensor, rate_index: int) -> TokenCache:
    """One [0, 1] crop (1, 3, H, W), H and W whole windows -> its windows' coder inputs."""
    analysis = model.analyse(model.pad(crop), rate_index, portable=False)
    condition = model.condition_fixed(analysis.steps)
    grid = model.window_grid(*crop.shape[-2:])
    windows = dlf_tokens.detail_windows(condition, model.config.window_positions)
    # The float prior trains on what the exact twin will see: the fixed-point latent, back in float.
    condition_float = integer.from_fixed(windows)
    tokens = analysis.token_indices.view(-1, model.config.network.titok.num_tokens)
    return TokenCache(tokens, dlf_tokens.neighbour_tokens(tokens, *grid), condition_float)


@torch.inference_mode()
def token_maps_of(model, crop: torch.Tensor, rate_index: int = 0) -> TokenCache:
    """One [0, 1] crop (1, 3, H, W) -> its PerCoV2 token map as one cache row (no condition, no neighbours)."""
    _, tokens = model.tokens(model.pad(crop))
    indices = tokens.indices.flatten(1).cpu()
    return TokenCache(indices, indices.new_empty(1, 0, indices.shape[1]), torch.zeros(1, 0, 1))


def split_images(image_dirs, config: TokenPriorFitConfig) -> tuple[list[Path], list[Path]]:
    """(training images, validation images) of the folders: see ``validation_images``."""
    files = find_images(image_dirs)
    if not files:
        raise WeightsError(f"no training images found in {list(map(str, image_dirs))}")
    return split_holdout(files, min(config.validation_images, len(files) // 8))


def extract(model, image_dirs, run_dir: Path, config: TokenPriorFitConfig, progress: bool = True,
            crop_side: int | None = None, encode_crop: Callable[..., TokenCache] = windows_of,
            validation: bool = False) -> TokenCache | None:
    """Phase 1, resumable: encode ``config.crops`` crops of the training images (appending in chunks) ->
    the cache; ``validation``: ``config.validation_crops`` crops of the withheld images instead (None if
    none are withheld). ``crop_side`` (default: ``config.crop_windows`` DLF windows) and ``encode_crop``
    (model, crop, rate) -> cache rows (default: DLF's windows) say what a crop is for this model."""
    run_dir.mkdir(parents=True, exist_ok=True)
    training, withheld = split_images(image_dirs, config)
    files, crops, seed = (withheld, config.validation_crops, config.seed + 1) if validation else \
        (training, config.crops, config.seed)
    if not files or crops == 0:
        return None
    path = run_dir / (VALIDATION_FILE if validation else CACHE_FILE)
    cache, done = _read_cache(path)
    side = crop_side or model.config.window_pixels * config.crop_windows
    dataset = RandomCropDataset(files, side)
    generator = torch.Generator().manual_seed(seed)
    plan = [(int(torch.randint(len(dataset), (1,), generator=generator)),
             int(torch.randint(2**31 - 1, (1,), generator=generator)),
             int(torch.randint(model.num_rates, (1,), generator=generator))) for _ in range(crops)]
    parts = [] if cache is None else [cache]
    bar = tqdm(total=crops, initial=done, desc="extract validation tokens" if validation else "extract tokens",
               unit="crop", disable=not progress)
    for start in range(done, crops, config.chunk_crops):
        for index, crop_seed, rate in plan[start : start + config.chunk_crops]:
            crop = dataset[SampleKey(index, crop_seed)].unsqueeze(0)
            parts.append(encode_crop(model, crop, rate))
            bar.update(1)
        cache = TokenCache(*(torch.cat(column) for column in zip(*parts)))
        parts = [cache]
        _write_cache(path, cache, min(crops, start + config.chunk_crops))
    bar.close()
    if cache is None:
        raise WeightsError("token extraction produced no windows")
    return cache


def validation_bits(prior: MaskedTokenPrior, cache: TokenCache, grid: tuple[int, int] | None = None,
                    batch: int = 64) -> float:
    """Mean teacher-forced bits per token of the cache under the prior (its expected code length)."""
    was_training = prior.training
    prior.eval()
    total = 0.0
    for start in range(0, len(cache), batch):
        part = slice(start, start + batch)
        total += prior.bits(TokenPriorInputs(cache.condition[part], cache.context[part]), cache.tokens[part],
                            grid).sum().item()
    prior.train(was_training)
    return total / cache.tokens.numel()


def fit(cache: TokenCache, prior_config: TokenPriorConfig, run_dir: Path, config: TokenPriorFitConfig,
        progress: bool = True, grid: tuple[int, int] | None = None,
        validation: TokenCache | None = None) -> FitResult:
    """Phase 2, resumable: train the prior on the cache (of token maps of ``grid`` = (rows, cols), if given),
    keeping the weights with the fewest bits on ``validation`` (if given) as the result."""
    torch.manual_seed(config.seed)
    prior = MaskedTokenPrior(prior_config)
    optimiser = torch.optim.AdamW(prior.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed + 1)
    step = 0
    best: dict | None = None  # {"step", "bits", "prior"}: the best validated weights so far
    history: list[ValidationPoint] = []
    checkpoint = run_dir / CHECKPOINT_FILE
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        prior.load_state_dict(state["prior"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        step = state["step"]
        best = state.get("best")
        history = [ValidationPoint(*point) for point in state.get("history", [])]

    def validate() -> None:
        nonlocal best
        if validation is None or (history and history[-1].step == step):
            return
        bits = validation_bits(prior, validation, grid)
        history.append(ValidationPoint(step, bits))
        if best is None or bits < best["bits"]:
            best = {"step": step, "bits": bits, "prior": {k: v.clone() for k, v in prior.state_dict().items()}}

    bar = tqdm(total=config.fit_steps, initial=step, desc="fit token prior", unit="step", disable=not progress)
    prior.train()
    while step < config.fit_steps:
        # Cosine decay to 5 % of the learning rate.
        scale = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / max(1, config.fit_steps)))
        for group in optimiser.param_groups:
            group["lr"] = config.lr * scale
        picked = torch.randint(len(cache), (min(config.batch_windows, len(cache)),), generator=generator)
        inputs = TokenPriorInputs(cache.condition[picked], cache.context[picked])
        loss = prior.loss(inputs, cache.tokens[picked], generator, grid=grid)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        optimiser.step()
        step += 1
        bar.update(1)
        if step % config.validate_every == 0 or step == config.fit_steps:
            validate()
        held_out = f", held-out {history[-1].bits_per_token:.3f}" if history else ""
        bar.set_postfix_str(f"{loss.item():.3f} bits/token{held_out}", refresh=False)
        if step % config.checkpoint_every == 0 or step == config.fit_steps:
            state = {"prior": prior.state_dict(), "optimiser": optimiser.state_dict(),
                     "generator": generator.get_state(), "step": step, "best": best,
                     "history": [tuple(point) for point in history]}
            atomic_write(checkpoint, save=lambda tmp: torch.save(state, tmp))
    bar.close()
    validate()  # a checkpoint from before validation existed, or a fit resumed at its end
    if best is None:
        return FitResult(prior.eval(), step, None, tuple(history))
    prior.load_state_dict(best["prior"])
    return FitResult(prior.eval(), best["step"], best["bits"], tuple(history))


def save_token_prior(prior: MaskedTokenPrior, path: str | os.PathLike, metadata: dict | None = None,
                     model_name: str = "dlf") -> Path:
    from latentcodec.models.base import write_model_folder

    return write_model_folder(path, PRIOR_KINDS[model_name], prior.config, prior.state_dict(), metadata)


def load_token_prior(path: str | os.PathLike, model_name: str = "dlf") -> MaskedTokenPrior:
    """A prior folder written by :func:`save_token_prior` for ``model_name``'s tokens; strict."""
    from latentcodec.models.base import LatentCodec, load_strict, read_model_payload

    payload = read_model_payload(path, PRIOR_KINDS[model_name])
    prior = MaskedTokenPrior(config_from_dict(TokenPriorConfig, payload.get("config", {})))
    load_strict(prior, LatentCodec.read_weights(Path(path)), str(path), "a token prior of this shape")
    return prior.eval()


def check_prior_fits(model, prior: MaskedTokenPrior) -> None:
    """The prior must have been shaped for this model's tokens and detail latent."""
    expected = model.config.default_token_prior()
    got = prior.config
    for name in ("vocab_size", "num_positions", "condition_channels", "num_condition_tokens"):
        if getattr(got, name) != getattr(expected, name):
            raise WeightsError(f"token prior does not fit this model: {name} is {getattr(got, name)}, "
                               f"the model needs {getattr(expected, name)}")

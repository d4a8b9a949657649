"""PerCoV2's training stages on the tiny preset: the VAE stage and stage A (rectified flow + VQ) lower
their objective on a fixed batch and train only their modules; stage A starts from a VAE run with the
latent normalisation measured on data; caption dropout; export -> load -> compress -> decompress."""

from __future__ import annotations

import contextlib

import pytest
import torch
from PIL import Image
from torch import nn
from training_helpers import tiny_config, write_config

import latentcodec
from latentcodec.data.crops import BatchStream
from latentcodec.errors import ConfigError, WeightsError
from latentcodec.models.percov2 import PerCoV2, PerCoV2Config, small_vae_config
from latentcodec.models.percov2_sd3 import PromptEmbeddings
from latentcodec.training.config import (
    DataConfig,
    TrainConfig,
    check_config,
    load_config,
)
from latentcodec.training.percov2_stages import PerCoV2FlowObjective, drop_captions
from latentcodec.training.trainer import Trainer, export_inference_model


def percov2_trainer(tmp_path, image_folder, stage, name=None, **extra) -> Trainer:
    config = tiny_config(tmp_path, image_folder, stage, **{"percov2.scaling_crops": 4, "perceptual": "fallback",
                                                           "losses.feature_matching": 0.0, "losses.gan": 0.0,
                                                           **extra})
    if name:
        config["name"] = name
    return Trainer(load_config(write_config(tmp_path / f"{config['name']}.yaml", config)))


def fix_batch(trainer: Trainer) -> torch.Tensor:
    batch = trainer.stream.next_batch()
    trainer.stream.next_batch = lambda: batch
    return batch


def objective_value(trainer: Trainer, batch: torch.Tensor) -> float:
    """The objective at fixed draws (posterior sample, or flow time and noise)."""
    with torch.no_grad():
        losses = trainer.objective(batch, torch.zeros(2, dtype=torch.long), trainer.lambdas, None,
                                   generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(losses.total)
    return float(losses.total.detach())


def test_vae_stage_lowers_its_loss_and_trains_the_vae_only(tmp_path, image_folder, validation_folder):
    trainer = percov2_trainer(tmp_path, image_folder, "percov2_vae", **{"losses.mse": 1.0, "losses.kl": 1e-4,
                                                                        "validation.image_dir": str(validation_folder)})
    assert trainer.discriminator is None and trainer.perceptual is not None  # (1 - MS-SSIM), no D
    assert {k.split(".")[0] for k in trainer.model.state_dict()} == {"vae"}
    batch = fix_batch(trainer)
    before = objective_value(trainer, batch)
    for _ in range(8):
        losses = trainer.train_step()
    assert losses.kl is not None and float(losses.kl) > 0 and 0 < float(losses.ms_ssim) <= 1
    assert objective_value(trainer, batch) < before
    # Validation: reconstruction of the posterior mode, nothing coded; L1 for best.pt selection.
    scores = trainer.validate()["0"]
    assert scores["bpp"] == 0 and 0 < scores["psnr"] < 100 and 0 < scores["l1"] < 2 and scores["latent_std"] > 0


def test_flow_stage_lowers_its_loss_with_the_vae_frozen(tmp_path, image_folder):
    trainer = percov2_trainer(tmp_path, image_folder, "percov2_flow")
    model = trainer.model
    assert isinstance(model, PerCoV2) and model.token_prior is None  # stage B adds the prior
    vae = {k: v.clone() for k, v in model.vae.state_dict().items()}
    batch = fix_batch(trainer)
    before = objective_value(trainer, batch)
    for _ in range(8):
        losses = trainer.train_step()
    assert objective_value(trainer, batch) < before
    assert float(losses.flow) > 0 and float(losses.codebook) > 0 and float(losses.bpp.mean()) == pytest.approx(
        model.token_bits(64, 64) / 64**2)
    assert all(torch.equal(v, model.vae.state_dict()[k]) for k, v in vae.items())
    # The zero-initialised injection moved: the tokens now reach the velocity.
    assert model.transformer.pos_embed.proj.weight[:, 16:].abs().sum() > 0


def test_latent_probe_trains_the_tokens_towards_the_latent_and_never_ships(tmp_path, image_folder):
    trainer = percov2_trainer(tmp_path, image_folder, "percov2_flow", **{"losses.latent_probe": 1.0})
    model = trainer.model
    batch = fix_batch(trainer)
    trainer.model.zero_grad(set_to_none=True)
    losses = trainer.objective(batch, torch.zeros(2, dtype=torch.long), trainer.lambdas, None,
                               generator=torch.Generator().manual_seed(0))
    losses.total.backward()
    # The probe's loss reaches the hyper-encoder (through the straight-through tokens), not only the probe.
    for module in (model.latent_probe, model.hyper_encoder):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    probe_before = float(losses.latent_mse)
    assert probe_before > 0 and float(losses.total.detach()) > float(losses.flow) + float(losses.codebook) * 0.999
    for _ in range(8):
        trainer.train_step()
    with torch.no_grad():
        after = trainer.objective(batch, torch.zeros(2, dtype=torch.long), trainer.lambdas, None,
                                  generator=torch.Generator().manual_seed(0))
    assert float(after.latent_mse) < probe_before
    trainer.save_checkpoint()
    out = export_inference_model(trainer.run_dir, tmp_path / "exported")
    shipped = PerCoV2.from_pretrained(out)
    assert not hasattr(shipped, "latent_probe") and not any(k.startswith("latent_probe.") for k in shipped.state_dict())
    # Continuing with the probe keeps it; a run without it drops it; one from a probe-less model starts it fresh.
    again = percov2_trainer(tmp_path, image_folder, "percov2_flow", name="again", init_from=str(trainer.run_dir),
                            **{"losses.latent_probe": 1.0})
    assert torch.equal(again.model.latent_probe.layers[0].weight, model.latent_probe.layers[0].weight)
    plain = percov2_trainer(tmp_path, image_folder, "percov2_flow", name="plain", init_from=str(trainer.run_dir))
    assert not hasattr(plain.model, "latent_probe")
    fresh = percov2_trainer(tmp_path, image_folder, "percov2_flow", name="fresh", init_from=str(out),
                            **{"losses.latent_probe": 1.0})
    assert hasattr(fresh.model, "latent_probe")


def test_dead_code_restart(tmp_path, image_folder):
    trainer = percov2_trainer(tmp_path, image_folder, "percov2_flow", **{"percov2.dead_code_every": 2})
    batch = fix_batch(trainer)
    weight = trainer.model.quantizer.vq.embedding.weight
    seen = {}
    restart = trainer.objective.restart_dead_codes

    def spy(step: int, distributed: bool, dataset=None) -> str:
        seen["usage"], seen["weight"] = trainer.objective.dead_codes.usage.clone(), weight.detach().clone()
        return restart(step, distributed, dataset)

    trainer.objective.restart_dead_codes = spy
    trainer.train_step()
    assert int(trainer.objective.dead_codes.usage.sum()) == 2 * 4 * 4  # two 64-pixel crops of 4 x 4 tokens
    trainer.train_step()  # step 2: the restart
    used, before = seen["usage"], seen["weight"]
    assert int(used.sum()) == 2 * 2 * 4 * 4
    dead = (used == 0).nonzero().flatten()
    assert 200 < len(dead) < 256 and trainer.objective.dead_codes.usage is None
    # Each restarted code sits (up to the noise) on one of the batch's normalised token vectors ...
    with torch.no_grad():
        model = trainer.model
        codes = model.quantizer.down(model.hyper_encoder(model.tokens(batch)[0]))
        vectors = torch.nn.functional.normalize(codes.permute(0, 2, 3, 1).reshape(-1, codes.shape[1]), dim=1)
        similarity = torch.nn.functional.normalize(weight[dead], dim=1) @ vectors.T
    assert float(similarity.max(1).values.min()) > 0.95
    # ... and the codes the tokens chose are untouched.
    alive = (used > 0).nonzero().flatten()
    assert torch.equal(weight.detach()[alive], before[alive])


def test_dead_code_restart_on_fresh_crops_spreads_codes_over_distinct_vectors(tmp_path, image_folder):
    trainer = percov2_trainer(tmp_path, image_folder, "percov2_flow", **{"percov2.dead_code_every": 2,
                                                                         "percov2.restart_crops": 8})
    fix_batch(trainer)
    trainer.train_step()
    objective, weight = trainer.objective, trainer.model.quantizer.vq.embedding.weight
    counts = objective.dead_codes
    counts.usage = torch.ones_like(counts.usage)
    counts.usage[:50] = 0  # 50 dead codes, fewer than the 8 crops' 128 token vectors
    seed = trainer.config.seed * 1_000_003 + 2
    with torch.no_grad():
        images = BatchStream(trainer.stream.dataset, 8, seed, 0, 1, 0).next_batch()
        assert not torch.equal(images[:2], counts.last_batch)
        model = trainer.model
        codes = model.quantizer.down(model.hyper_encoder(model.tokens(images)[0]))
        vectors = torch.nn.functional.normalize(codes.permute(0, 2, 3, 1).reshape(-1, codes.shape[1]), dim=1)
    objective.restart_dead_codes(2, False, trainer.stream.dataset)
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(vectors), generator=generator)[:50]  # without replacement: no two codes share one
    noise = torch.randn(50, vectors.shape[1], generator=generator)
    assert torch.allclose(weight.detach()[:50], vectors[picks] + 0.1 * noise / vectors.shape[1] ** 0.5, atol=1e-5)
    with pytest.raises(ConfigError, match="restart_crops"):
        percov2_trainer(tmp_path, image_folder, "percov2_flow", name="bad", **{"percov2.restart_crops": -1})


def test_position_shift_reads_a_shifted_window_of_the_positional_table_in_training_only(tmp_path, image_folder):
    from latentcodec.models.percov2_sd3 import shifted_positions

    trainer = percov2_trainer(tmp_path, image_folder, "percov2_flow", **{"percov2.position_shift": 3})
    embed = trainer.model.transformer.pos_embed
    size, patch = embed.pos_embed_max_size, embed.patch_size
    table = embed.pos_embed.reshape(size, size, -1)
    centred = embed.cropped_pos_embed(4 * patch, 4 * patch)
    top = (size - 4) // 2
    assert torch.equal(centred[0], table[top:top + 4, top:top + 4].reshape(16, -1))
    with shifted_positions(trainer.model.transformer, 2, -100):  # clamped to the table's left edge
        shifted = embed.cropped_pos_embed(4 * patch, 4 * patch)
    assert torch.equal(shifted[0], table[top + 2:top + 6, 0:4].reshape(16, -1))
    assert torch.equal(embed.cropped_pos_embed(4 * patch, 4 * patch), centred)  # restored after the block
    # The objective draws one shift per batch from the step's generator: the loss at fixed draws depends on it.
    batch = fix_batch(trainer)
    seen = []
    original = shifted_positions.__wrapped__ if hasattr(shifted_positions, "__wrapped__") else None
    assert original is not None

    def spy(transformer, rows, cols):
        seen.append((rows, cols))
        return original(transformer, rows, cols)

    import latentcodec.models.percov2_sd3 as sd3_module
    sd3_module.shifted_positions, saved = contextlib.contextmanager(spy), sd3_module.shifted_positions
    try:
        for seed in range(4):
            trainer.objective(batch, torch.zeros(2, dtype=torch.long), trainer.lambdas, None,
                              generator=torch.Generator().manual_seed(seed))
        trainer.objective.eval()
        trainer.objective(batch, torch.zeros(2, dtype=torch.long), trainer.lambdas, None,
                          generator=torch.Generator().manual_seed(0))
    finally:
        sd3_module.shifted_positions = saved
        trainer.objective.train()
    assert all(-3 <= r <= 3 and -3 <= c <= 3 for r, c in seen[:4]) and len(set(seen[:4])) > 1
    assert seen[4] == (0, 0)  # evaluation reads the centred window, as inference does


def test_flow_run_from_a_vae_run_measures_the_latent_normalisation(tmp_path, image_folder):
    vae_run = percov2_trainer(tmp_path, image_folder, "percov2_vae", name="vae-run")
    vae_run.train_step()
    vae_run.save_checkpoint()
    flow = percov2_trainer(tmp_path, image_folder, "percov2_flow", init_from=str(vae_run.run_dir))
    for key, value in vae_run.model.vae.state_dict().items():
        assert torch.equal(flow.model.vae.state_dict()[key], value)
    # The normalised latent of the measuring crops has mean 0 and std 1, in both configs the codec reads.
    scale, shift = flow.model.config.vae["scaling_factor"], flow.model.config.vae["shift_factor"]
    assert (scale, shift) == (flow.model.vae.config.scaling_factor, flow.model.vae.config.shift_factor)
    assert scale != PerCoV2Config.tiny().vae["scaling_factor"]
    crops = torch.stack([flow.stream.dataset[key] for key in _first_keys(flow, 4)])
    with torch.no_grad():
        latent = (flow.model.vae.encode(crops * 2 - 1).latent_dist.mode() - shift) * scale
    assert abs(float(latent.mean())) < 1e-3 and float(latent.std()) == pytest.approx(1.0, abs=1e-3)


def test_autoencoder_eval_reads_a_vae_run_and_reconstructs_with_its_decoder(tmp_path, image_folder):
    """python -m latentcodec.training.autoencoder_eval RUN reads a percov2_vae run too: its reconstruct
    function is the run's VAE (posterior mode, decoder), padded to the VAE's factor and cropped back."""
    from latentcodec.training.autoencoder_eval import evaluate, load_checkpoint

    vae_run = percov2_trainer(tmp_path, image_folder, "percov2_vae", name="vae-run")
    vae_run.train_step()
    vae_run.save_checkpoint()
    reconstruct, step, payload = load_checkpoint(vae_run.run_dir)
    assert step == 1 and payload["stage"] == "percov2_vae"
    x = torch.rand(1, 3, 21, 35)
    with torch.inference_mode():
        x_hat = reconstruct(x)
        vae = vae_run.model.vae.eval()
        padded = torch.nn.functional.pad(x, (0, 5, 0, 3), mode="replicate")
        expected = ((vae.decode(vae.encode(padded * 2 - 1).latent_dist.mode()).sample + 1) / 2).clamp(0, 1)
    assert x_hat.shape == x.shape and torch.allclose(x_hat, expected[..., :21, :35], atol=1e-6)
    psnr, ms_ssim, thumbnail_psnr, colour = evaluate(reconstruct, image_folder, 2)
    assert 0 < psnr < 100 and 0 < thumbnail_psnr < 100 and colour >= 0


def _first_keys(trainer: Trainer, count: int):
    """The samples of the measuring batch: the stream the trainer probes (seed + 1, rank 0 of 1)."""
    from latentcodec.data.crops import ResumableDistributedSampler

    sampler = ResumableDistributedSampler(len(trainer.stream.dataset), trainer.config.seed + 1)
    keys = iter(sampler)
    return [next(keys) for _ in range(count)]


class ConstantEncoder(nn.Module):
    """A text encoder for tests: the caption's length in every token embedding."""

    def forward(self, captions: list[str]) -> PromptEmbeddings:
        lengths = torch.tensor([float(len(c)) for c in captions]).view(-1, 1, 1)
        return PromptEmbeddings(lengths.expand(-1, 4, 16).clone(), lengths[:, 0].expand(-1, 16).clone())


def test_caption_dropout(tmp_path, image_folder):
    captions = ["a red barn", "two boats", "a lighthouse", "a parrot"] * 8
    generator = torch.Generator().manual_seed(0)
    dropped = drop_captions(captions, generator, 0.5)
    assert 0 < dropped.count("") < len(captions) and all(d in ("", c) for c, d in zip(captions, dropped))
    assert drop_captions(captions, None, 0.0) == captions and drop_captions(captions, None, 1.0) == [""] * 32
    trainer = percov2_trainer(tmp_path, image_folder, "percov2_flow", **{"percov2.caption_dropout": 0.5})
    objective: PerCoV2FlowObjective = trainer.objective
    # No text encoder and no captions: the model's own empty caption (None), dropout or not.
    assert objective.prompts(None, 2, torch.Generator().manual_seed(0)) is None
    with pytest.raises(ConfigError, match="no text encoders"):
        objective.prompts(["a red barn"] * 8, 8, torch.Generator().manual_seed(0))
    trainer.model.attach_prompt_encoder(ConstantEncoder())
    prompt = objective.prompts(captions, 32, torch.Generator().manual_seed(0))
    lengths = prompt.pooled[:, 0].tolist()
    expected = [float(len(c)) for c in drop_captions(captions, torch.Generator().manual_seed(0), 0.5)]
    assert lengths == expected and 0.0 in lengths
    losses = objective(trainer.stream.next_batch(), torch.zeros(2, dtype=torch.long), trainer.lambdas,
                       generator=torch.Generator().manual_seed(0), captions=captions[:2])
    assert torch.isfinite(losses.total)


def test_export_load_compress_decompress(tmp_path, image_folder, validation_folder):
    trainer = percov2_trainer(tmp_path, image_folder, "percov2_flow",
                              **{"validation.image_dir": str(validation_folder), "validation.rate_indices": [0, 3]})
    for _ in range(2):
        trainer.train_step()
    # Validation codes real files at the one operating point (whatever rate_indices says).
    results = trainer.validate()
    assert set(results) == {"0"} and results["0"]["bpp"] > 0 and 0 < results["0"]["psnr"] < 100
    trainer._select(results)  # the first validation is the best so far: best.pt, which exports too
    best = PerCoV2.from_pretrained(export_inference_model(trainer.run_dir / "best.pt", tmp_path / "best"))
    assert best.config == trainer.model.config
    trainer.save_checkpoint()
    out = export_inference_model(trainer.run_dir, tmp_path / "exported")
    model = PerCoV2.from_pretrained(out)
    assert model.config == trainer.model.config and model.token_prior is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, trainer.model.state_dict()[key]), key
    codec = latentcodec.load("percov2", weights=str(out))
    image = Image.open(min(image_folder.iterdir())).convert("RGB").crop((0, 0, 40, 56))
    data = codec.compress(image)
    assert len(data) < 40
    decoded = codec.decompress(data)
    assert decoded.size == (40, 56) and codec.decompress(data).tobytes() == decoded.tobytes()
    # A flow run may continue from the exported codec: everything loaded, the normalisation included.
    again = percov2_trainer(tmp_path, image_folder, "percov2_flow", name="again", init_from=str(out))
    assert again.model.config == model.config
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(WeightsError, match="hyper-encoder"):
        percov2_trainer(tmp_path, image_folder, "percov2_flow", name="other", preset="sd3", init_from=str(out))
    with pytest.raises(ConfigError, match="percov2_vae run"):
        vae_run = percov2_trainer(tmp_path, image_folder, "percov2_vae")
        vae_run.save_checkpoint()
        export_inference_model(vae_run.run_dir, tmp_path / "vae_export")


def test_small_preset_has_its_own_sd3_layout_vae():
    config = PerCoV2Config.small()
    assert config.vae == small_vae_config() and config.vae_factor == 8 and config.vae["latent_channels"] == 16
    # Operating point E1 (g = 16, K = 1024): one token per 32 x 32 pixels, 10 bits each.
    assert not config.vae["use_quant_conv"] and config.token_pixels == 32 and config.hyper.token_bits == 10
    with pytest.raises(ConfigError, match="multiple of 32"):
        check_config(TrainConfig(name="x", stage="percov2_flow", steps=1, preset="small", data=DataConfig(crop_size=80)))
    assert check_config(TrainConfig(name="x", stage="percov2_vae", steps=1, preset="small", data=DataConfig(crop_size=96)))


def test_flow_stage_over_a_diffusers_sd3_folder(tmp_path, image_folder):
    """The sd3 preset trains over the user's SD3 copy: init_from names the diffusers folder (here a tiny
    random one in the real layout); its VAE and its latent normalisation are kept."""
    from latentcodec.models import percov2_sd3 as sd3
    from latentcodec.models.percov2 import tiny_transformer_config, tiny_vae_config

    folder = tmp_path / "sd3"
    torch.manual_seed(0)
    vae = sd3.build_vae(tiny_vae_config())
    vae.save_pretrained(folder / "vae")
    sd3.build_transformer(tiny_transformer_config()).save_pretrained(folder / "transformer")
    sd3.build_scheduler(sd3.sd3_scheduler_config()).save_pretrained(folder / "scheduler")
    trainer = percov2_trainer(tmp_path, image_folder, "percov2_flow", preset="sd3", init_from=str(folder))
    model = trainer.model
    assert model.config.vae["scaling_factor"] == tiny_vae_config()["scaling_factor"]
    assert model.config.transformer["in_channels"] == 16 + model.config.hyper.adapter_channels
    for key, value in vae.state_dict().items():
        assert torch.equal(model.vae.state_dict()[key], value)
    losses = trainer.train_step()
    assert torch.isfinite(losses.total)
    trainer.save_checkpoint()
    exported = PerCoV2.from_pretrained(export_inference_model(trainer.run_dir, tmp_path / "exported"))
    assert exported.config == model.config
    assert torch.equal(exported.transformer.pos_embed.proj.weight, model.transformer.pos_embed.proj.weight)


def test_shipped_tiny_configs_run_in_sequence(tmp_path, image_folder):
    """percov2_tiny_vae.yaml, then percov2_tiny_flow.yaml from that run (as the small configs chain)."""
    from pathlib import Path

    from latentcodec.training.trainer import run_training

    configs = Path(latentcodec.__file__).parent / "training" / "configs"
    common = [f"data.train_dirs=[{image_folder}]", f"runtime.run_root={tmp_path}", "steps=2", "percov2.scaling_crops=4"]
    threads = torch.get_num_threads()
    try:
        vae_run = run_training(load_config(configs / "percov2_tiny_vae.yaml", common[:-1]))
        flow_run = run_training(load_config(configs / "percov2_tiny_flow.yaml", [*common, f"init_from={vae_run}"]))
    finally:
        torch.set_num_threads(threads)
    assert "VAE from" in (flow_run / "train.log").read_text()
    model = PerCoV2.from_pretrained(export_inference_model(flow_run, tmp_path / "exported"))
    vae_state = torch.load(vae_run / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(v, vae_state[f"vae.{k}"]) for k, v in model.vae.state_dict().items())

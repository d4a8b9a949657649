"""DLF's two training stages on the tiny preset: losses, frozen parts, lambda ladder, VQGAN init, export."""

import pytest
import torch

from latentcodec.errors import ConfigError, WeightsError
from latentcodec.models.dlf import DLF, DLFConfig
from latentcodec.training.config import load_config
from latentcodec.training.dlf_stages import LambdaLadder, is_semantic_parameter, load_vqgan_weights
from latentcodec.training.trainer import Trainer, export_inference_model
from training_helpers import tiny_dlf_config, write_config


def dlf_trainer(tmp_path, image_folder, stage, fixed_batch=True, **extra) -> tuple[Trainer, torch.Tensor]:
    config = load_config(write_config(tmp_path / f"{stage}.yaml", tiny_dlf_config(tmp_path, image_folder, stage, **extra)))
    trainer = Trainer(config)
    batch = trainer.stream.next_batch()
    if fixed_batch:
        trainer.stream.next_batch = lambda: batch
    return trainer, batch


def objective(trainer: Trainer, batch: torch.Tensor, rates=(0, 1)):
    torch.manual_seed(0)
    return trainer.objective(batch, torch.tensor(rates), trainer.lambdas, trainer.discriminator)


@pytest.mark.parametrize("stage", ["dlf_align", "dlf_pixel"])
def test_dlf_stage_lowers_its_loss(tmp_path, image_folder, stage):
    trainer, batch = dlf_trainer(tmp_path, image_folder, stage)
    before = objective(trainer, batch)
    for _ in range(6):
        trainer.train_step()
    after = objective(trainer, batch)
    before_total, after_total = before.total.item(), after.total.item()
    assert torch.isfinite(before.total) and torch.isfinite(after.total)
    assert after_total < before_total, (stage, before_total, after_total)
    if stage == "dlf_align":
        # Each alignment term goes down on its own, not only their sum.
        assert float(after.latent_mse) < float(before.latent_mse)
        assert float(after.code_ce) < float(before.code_ce)
        assert before.x_hat is None  # the frozen decoder does not run in this stage
    else:
        assert float(after.l1) < float(before.l1)


@pytest.mark.parametrize("stage", ["dlf_align", "dlf_pixel"])
def test_dlf_stage_gradients_reach_only_its_parts(tmp_path, image_folder, stage):
    trainer, batch = dlf_trainer(tmp_path, image_folder, stage)
    trainer.model.zero_grad(set_to_none=True)
    objective(trainer, batch).total.backward()
    grads = {name: p.grad for name, p in trainer.model.named_parameters()}
    trained = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert not any(grads[n] is not None for n in grads if n not in trained)
    for name in ("hybrid_codec.encoder.transformer.0.attn.in_proj_weight",
                 "hybrid_codec.quantize_feat.enc_q", "hybrid_codec.quantize_feat.factorized_prior_vec",
                 "prior_fusion.ffn.3.weight", "hybrid_codec.quantize.embedding.weight"):
        assert grads[name] is not None and torch.isfinite(grads[name]).all() and grads[name].abs().sum() > 0, name
    assert all(n not in trained for n in grads if n.startswith(("vqgan.encoder.", "vqgan.quant_conv.")))
    decoder_side = [n for n in grads if n.startswith(("vqgan.decoder.", "vqgan.post_quant_conv.", "vqgan.quantize."))]
    if stage == "dlf_align":
        assert not any(n in trained for n in decoder_side)
    else:
        assert all(n in trained for n in decoder_side)
        assert grads["vqgan.decoder.conv_out.weight"].abs().sum() > 0
        assert grads["vqgan.quantize.embedding.weight"].abs().sum() > 0


def test_dlf_frozen_parts_stay_put_and_semantic_freezing(tmp_path, image_folder):
    trainer, _ = dlf_trainer(tmp_path, image_folder, "dlf_align", **{"dlf.freeze_semantic": True})
    state = trainer.model.state_dict()
    frozen = {k: v.clone() for k, v in state.items() if k.startswith("vqgan.") or is_semantic_parameter(k)}
    assert "hybrid_codec.encoder.transformer.0.attn.in_proj_weight" in frozen
    assert "hybrid_codec.encoder.inter_blocks.0.zero_add.weight" not in frozen
    detail = {k: v.clone() for k, v in state.items() if k.startswith("hybrid_codec.quantize_feat.")}
    trainer.train_step()
    after = trainer.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert any(not torch.equal(after[k], v) for k, v in detail.items())


def test_lambda_ladder_steps_towards_the_bounds():
    ladder = LambdaLadder([1.0, 2.0, 4.0, 8.0], start=[1, 1, 0, 3], bounds=[(0.01, 0.02)] * 4)
    assert ladder.values() == [2.0, 2.0, 1.0, 8.0]
    # Above the range -> one rung up (rate costs more); below -> one down; inside -> stays;
    # the ends of the ladder hold.
    assert ladder.update([0.05, 0.001, 0.001, 0.05]) == [2, 0, 0, 3]
    assert ladder.update([0.015, 0.015, 0.015, 0.015]) == [2, 0, 0, 3]
    assert ladder.update([0.03, 0.03, 0.03, 0.005]) == [3, 1, 1, 2]
    assert ladder.update([0.03, 0.02, 0.01, 0.005]) == [3, 1, 1, 1]  # the bounds themselves are inside
    assert ladder.values() == [8.0, 2.0, 2.0, 2.0]


def test_lambda_control_in_the_trainer(tmp_path, image_folder, validation_folder):
    # Bounds no model can meet: rate 0 must climb (too many bits), rate 1 must descend.
    trainer, _ = dlf_trainer(tmp_path, image_folder, "dlf_align", **{
        "validation.image_dir": str(validation_folder), "dlf.control_every": 2,
        "dlf.bpp_bounds": [[0.0, 1e-6], [1e3, 1e4]], "dlf.lambda_start": [1, 2]})
    assert trainer.lambdas.tolist() == [0.5, 1.0]
    trainer.train_step()
    assert trainer.lambda_ladder.indices == [1, 2]  # not due yet
    trainer.train_step()
    assert trainer.lambda_ladder.indices == [2, 1]
    assert trainer.lambdas.tolist() == [1.0, 0.5]
    # The lambdas weight the rate: the same batch costs more with a larger lambda.
    batch = trainer.stream.next_batch()
    base = objective(trainer, batch, rates=(0, 0))
    trainer.lambdas.mul_(2)
    doubled = objective(trainer, batch, rates=(0, 0))
    assert float((doubled.total - base.total).detach()) == pytest.approx(float(base.bpp.mean()) * 1.0, rel=1e-3)


def test_rate_free_opening_prices_the_rate_at_rate_free_lambda_and_holds_control(tmp_path, image_folder,
                                                                                 validation_folder):
    trainer, _ = dlf_trainer(tmp_path, image_folder, "dlf_align", **{
        "validation.image_dir": str(validation_folder), "dlf.control_every": 1, "dlf.rate_free_steps": 2,
        "dlf.rate_free_lambda": 1e-3, "dlf.bpp_bounds": [[0.0, 1e-6], [1e3, 1e4]], "dlf.lambda_start": [1, 2]})
    seen = []
    forward = trainer.objective_ddp.forward
    trainer.objective_ddp.forward = lambda batch, rates, lambdas, *a, **k: (
        seen.append(lambdas.tolist()), forward(batch, rates, lambdas, *a, **k))[1]
    for _ in range(3):
        trainer.train_step()
    assert seen[0] == seen[1] == pytest.approx([1e-3, 1e-3]) and seen[2] == [0.5, 1.0]
    assert trainer.lambda_ladder.indices == [2, 1]  # control held through the opening, then ran once


def test_dlf_config_checks(tmp_path, image_folder):
    def load(**extra):
        return load_config(write_config(tmp_path / "c.yaml", tiny_dlf_config(tmp_path, image_folder, "dlf_align", **extra)))

    with pytest.raises(ConfigError, match="multiple of"):
        load(**{"data.crop_size": 96})
    with pytest.raises(ConfigError, match="lambda_start"):
        load(**{"dlf.lambda_start": [0, 1, 2]})
    with pytest.raises(ConfigError, match="ascending"):
        load(**{"dlf.lambda_ladder": [1.0, 1.0, 2.0]})
    with pytest.raises(ConfigError, match="bpp_bounds"):
        load(**{"dlf.bpp_bounds": [[0.1, 0.05], [0.1, 0.2]]})
    with pytest.raises(ConfigError, match="target_bpp"):
        load(**{"rates.target_bpp": [0.1, 0.2]})
    with pytest.raises(ConfigError, match="latent_target"):
        load(**{"dlf.latent_target": "codewords"})


@pytest.mark.parametrize("latent_target", ["quantized", "continuous"])
def test_alignment_target_is_the_codewords_or_the_continuous_latent(tmp_path, image_folder, latent_target):
    trainer, batch = dlf_trainer(tmp_path, image_folder, "dlf_align", **{"dlf.latent_target": latent_target})
    rates = torch.tensor((0, 1))
    losses = objective(trainer, batch, rates.tolist())
    model = trainer.model
    torch.manual_seed(0)
    with torch.no_grad():
        x = model.pad(batch)
        analysis = model.analyse(x, rates, skip=False)
        soft = model.synthesise(analysis.codes, analysis.steps.y_hat, rates, decode=False).soft_latent
        latent = model.vqgan.encode(x)
        target = latent if latent_target == "continuous" else model.vqgan.quantize.lookup(
            model.vqgan.quantize.indices(latent))
        assert not torch.equal(target, latent if latent_target == "quantized" else model.vqgan.quantize.lookup(
            model.vqgan.quantize.indices(latent)))
    assert torch.allclose(losses.latent_mse.detach(), ((soft - target) ** 2).mean(), rtol=1e-5)


@torch.no_grad()
def weighted_latent_mse(model, batch, rates, channel_weights):
    """The stage-1 latent MSE to the continuous latent, each channel's error times its weight."""
    torch.manual_seed(0)  # as objective() draws
    x = model.pad(batch)
    analysis = model.analyse(x, rates, skip=False)
    soft = model.synthesise(analysis.codes, analysis.steps.y_hat, rates, decode=False).soft_latent
    return (((soft - model.vqgan.encode(x)) ** 2) * channel_weights.view(1, -1, 1, 1)).mean()


def test_channel_variance_weighting_divides_each_channels_error_by_the_codebooks_variance(tmp_path, image_folder):
    from latentcodec.training.dlf_stages import codebook_channel_variance

    trainer, batch = dlf_trainer(tmp_path, image_folder, "dlf_align", **{
        "dlf.latent_target": "continuous", "dlf.latent_weighting": "channel_variance"})
    model = trainer.model
    with torch.no_grad():  # a codebook whose channels differ in spread, as GLC's low-pass VQGAN's do
        model.vqgan.quantize.embedding.weight[:, 0] *= 30.0
    rates = torch.tensor((0, 1))
    losses = objective(trainer, batch, rates.tolist())
    variance = model.vqgan.quantize.embedding.weight.detach().var(dim=0)
    assert torch.allclose(codebook_channel_variance(model), variance)
    assert torch.allclose(losses.latent_mse.detach(), weighted_latent_mse(model, batch, rates, 1 / variance), rtol=1e-5)
    with pytest.raises(ConfigError, match="latent_weighting"):
        dlf_trainer(tmp_path, image_folder, "dlf_align", **{"name": "bad", "dlf.latent_weighting": "whiten"})


class LinearGenerator(torch.nn.Module):
    """A stand-in VQGAN whose picture is a fixed gain per latent channel, summed."""

    def __init__(self, gains):
        super().__init__()
        self.gains = torch.tensor(gains).view(1, -1, 1, 1)

    def encode(self, x):
        return x.repeat(1, self.gains.shape[1] // x.shape[1], 1, 1)

    def decode(self, latent):
        return (latent * self.gains).sum(1, keepdim=True)


def test_generator_sensitivity_is_the_squared_gain_of_each_channel_normalised_to_mean_one():
    from latentcodec.training.dlf_stages import generator_channel_sensitivity

    gains = [4.0, 1.0, 0.5, 0.0]
    images = torch.rand(2, 2, 8, 8)
    weights = generator_channel_sensitivity(LinearGenerator(gains), images, torch.Generator().manual_seed(0))
    expected = torch.tensor([16.0, 1.0, 0.25, 16e-3])  # a dead channel is floored at 1e-3 of the largest
    assert torch.allclose(weights, expected / expected.mean(), rtol=1e-4)


def test_generator_sensitivity_weighting_is_measured_at_start_and_weighs_the_latent_mse(tmp_path, image_folder):
    trainer, batch = dlf_trainer(tmp_path, image_folder, "dlf_align", **{
        "dlf.latent_target": "continuous", "dlf.latent_weighting": "generator_sensitivity"})
    weights = trainer.objective.channel_weights
    model = trainer.model
    assert weights is not None and weights.shape == (model.vqgan.quantize.embedding.weight.shape[1],)
    assert abs(float(weights.mean()) - 1.0) < 1e-5 and float(weights.max() / weights.min()) > 1.01
    rates = torch.tensor((0, 1))
    losses = objective(trainer, batch, rates.tolist())
    assert torch.allclose(losses.latent_mse.detach(), weighted_latent_mse(model, batch, rates, weights), rtol=1e-5)
    # A resumed run measures the same weights again (fixed probe batch and noise).
    trainer.save_checkpoint()
    config = load_config(tmp_path / "dlf_align.yaml")
    assert torch.equal(Trainer(config, resume=True).objective.channel_weights, weights)


def test_generator_sensitivity_weighting_starts_at_its_step(tmp_path, image_folder):
    trainer, batch = dlf_trainer(tmp_path, image_folder, "dlf_align", **{
        "dlf.latent_target": "continuous", "dlf.latent_weighting": "generator_sensitivity",
        "dlf.latent_weighting_from_step": 1})
    model, weights = trainer.model, trainer.objective.channel_weights
    trainer.train_step()  # step 0: the plain mean
    assert trainer.objective.weighting_active is False
    rates = torch.tensor((0, 1))
    plain = objective(trainer, batch, rates.tolist()).latent_mse.detach()
    assert torch.allclose(plain, weighted_latent_mse(model, batch, rates, torch.ones_like(weights)), rtol=1e-5)
    trainer.step = 1
    trainer.train_step()
    assert trainer.objective.weighting_active is True
    weighted = objective(trainer, batch, rates.tolist()).latent_mse.detach()
    assert torch.allclose(weighted, weighted_latent_mse(model, batch, rates, weights), rtol=1e-5)
    with pytest.raises(ConfigError, match="latent_weighting_from_step"):
        dlf_trainer(tmp_path, image_folder, "dlf_align", **{"name": "bad", "dlf.latent_weighting_from_step": -1})


def test_merge_head_init_replaces_the_init_from_head(tmp_path, image_folder):
    source, _ = dlf_trainer(tmp_path, image_folder, "dlf_align", **{"name": "source"})
    source.save_checkpoint()
    fresh, _ = dlf_trainer(tmp_path, image_folder, "dlf_align", **{
        "name": "distance", "init_from": str(source.run_dir), "dlf.merge_head_init": "codebook_distance"})
    head, old_head = fresh.model.prior_fusion.ffn[-1], source.model.prior_fusion.ffn[-1]
    codebook = fresh.model.vqgan.quantize.embedding.weight
    assert not torch.equal(head.weight, old_head.weight)
    assert head.weight[:, codebook.shape[1]:].abs().sum() == 0  # logits read only the first C hidden units
    inverse_tau = head.bias / -codebook.pow(2).sum(dim=1)  # the bias is -||e_k||^2 / tau
    assert inverse_tau.min() > 0 and torch.allclose(inverse_tau, inverse_tau[0].expand_as(inverse_tau), rtol=1e-4)
    with pytest.raises(ConfigError, match="merge_head_init"):
        dlf_trainer(tmp_path, image_folder, "dlf_align", **{"name": "bad", "dlf.merge_head_init": "zeros"})


def test_semantic_dead_codes_restart_on_fresh_crops_one_code_per_vector(tmp_path, image_folder):
    trainer, _ = dlf_trainer(tmp_path, image_folder, "dlf_align", **{
        "dlf.semantic_restart_every": 2, "dlf.semantic_restart_crops": 4, "runtime.checkpoint_every": 4})
    weight = trainer.model.hybrid_codec.quantize.embedding.weight
    logged, restart = [], trainer.objective.restart_dead_codes

    def spy(step, distributed, dataset=None):
        logged.append((trainer.objective.dead_codes.usage.clone(), weight.detach().clone()))
        return restart(step, distributed, dataset)

    trainer.objective.restart_dead_codes = spy
    trainer.train_step()
    trainer.train_step()  # step 2: the restart
    (usage, before), = logged
    assert trainer.objective.dead_codes.usage is None and int(usage.sum()) == 2 * 2 * trainer.model.config.network.titok.num_tokens
    dead, alive = (usage == 0).nonzero().flatten(), (usage > 0).nonzero().flatten()
    moved = (weight.detach() != before).any(dim=1).nonzero().flatten()
    tokens_per_crop = trainer.model.config.network.titok.num_tokens  # one 64-pixel window per crop
    assert len(moved) == min(len(dead), 4 * tokens_per_crop) and set(moved.tolist()) <= set(dead.tolist())
    assert torch.equal(weight.detach()[alive], before[alive])
    # Each moved code sits near its own normalised vector: unit length up to the 10 % noise.
    norms = weight.detach()[moved].norm(dim=1)
    assert float((norms - 1).abs().max()) < 0.5
    with pytest.raises(ConfigError, match="semantic_restart_every"):
        dlf_trainer(tmp_path, image_folder, "dlf_align", **{"name": "bad", "dlf.semantic_restart_every": 3,
                                                             "runtime.checkpoint_every": 4})


def vqgan_source(tmp_path, drop=()) -> str:
    source = DLF(DLFConfig.tiny(), with_training_modules=True)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(tuple(drop))}
    path = tmp_path / "source.pt"
    torch.save({"model": state}, path)
    return str(path), source


def test_init_vqgan_copies_strictly(tmp_path):
    path, source = vqgan_source(tmp_path)
    model = DLF(DLFConfig.tiny(), with_training_modules=True)
    note, seed = load_vqgan_weights(model, path)
    assert not seed and str(path) in note
    for key, value in source.vqgan.state_dict().items():
        assert torch.equal(model.vqgan.state_dict()[key], value)
    # Everything but the VQGAN stays as it was built.
    assert not torch.equal(model.hybrid_codec.latent_tokens, source.hybrid_codec.latent_tokens)


def test_init_vqgan_errors_name_what_is_wrong(tmp_path):
    model = DLF(DLFConfig.tiny(), with_training_modules=True)
    path, _ = vqgan_source(tmp_path, drop=["vqgan.decoder.conv_out.weight"])
    with pytest.raises(WeightsError, match="decoder.conv_out.weight"):
        load_vqgan_weights(model, path)
    path, _ = vqgan_source(tmp_path, drop=["vqgan.encoder.", "vqgan.quant_conv."])
    with pytest.raises(WeightsError, match="without the VQGAN encoder"):
        load_vqgan_weights(model, path)
    path, _ = vqgan_source(tmp_path, drop=["vqgan."])
    with pytest.raises(WeightsError, match="no vqgan"):
        load_vqgan_weights(model, path)
    # A GLC-image VQGAN (another layout and size) is refused, naming keys.
    from latentcodec.models.glc_image import GLCImage, GLCImageConfig

    glc = GLCImage(GLCImageConfig.tiny(), with_training_modules=True)
    glc_dir = glc.save_pretrained(tmp_path / "glc")
    with pytest.raises(WeightsError, match="not this preset's VQGAN layout"):
        load_vqgan_weights(model, str(glc_dir))


def test_init_vqgan_without_codebook_seeds_it_from_the_encoder(tmp_path, image_folder):
    path, source = vqgan_source(tmp_path, drop=["vqgan.quantize."])
    trainer, _ = dlf_trainer(tmp_path, image_folder, "dlf_align", **{"dlf.init_vqgan": path})
    vqgan = trainer.model.vqgan
    assert torch.equal(vqgan.encoder.conv_in.weight, source.vqgan.encoder.conv_in.weight)
    codebook = vqgan.quantize.embedding.weight
    assert not torch.equal(codebook, source.vqgan.quantize.embedding.weight)
    # Seeded codewords live where the encoder's latents are (the fresh init is ~1/K uniform).
    latent = vqgan.encode(trainer.model.pad(trainer.stream.next_batch()))
    assert codebook.std() > 0.3 * latent.std()


def test_codebook_init_crops_runs_kmeans_over_that_many_crops(tmp_path, image_folder):
    from latentcodec.training.codebook_init import assign

    path, _ = vqgan_source(tmp_path, drop=["vqgan.quantize."])
    errors = {}
    for crops in (0, 8):
        (tmp_path / f"crops{crops}").mkdir()
        trainer, _ = dlf_trainer(tmp_path / f"crops{crops}", image_folder, "dlf_align",
                                 **{"dlf.init_vqgan": path, "codebook_init_crops": crops})
        # The same crops for both codebooks: those k-means saw (the probe stream, seed + 1).
        latents = trainer._probe_latents(4)
        _, error = assign(latents, trainer.model.vqgan.quantize.embedding.weight.detach())
        errors[crops] = float(error.mean())
    assert errors[8] < 0.7 * errors[0]


def test_merge_head_init_follows_a_codebook_seeded_from_data(tmp_path, image_folder):
    """With a VQGAN source that has no codebook, the head is built from the codebook k-means gives."""
    path, _ = vqgan_source(tmp_path, drop=["vqgan.quantize."])
    trainer, _ = dlf_trainer(tmp_path, image_folder, "dlf_align", **{
        "dlf.init_vqgan": path, "codebook_init_crops": 8, "dlf.merge_head_init": "codebook_distance"})
    head, codebook = trainer.model.prior_fusion.ffn[-1], trainer.model.vqgan.quantize.embedding.weight
    inverse_tau = head.bias / -codebook.pow(2).sum(dim=1)  # -||e_k||^2 / tau for the seeded codewords
    assert inverse_tau.min() > 0 and torch.allclose(inverse_tau, inverse_tau[0].expand_as(inverse_tau), rtol=1e-4)
    assert "FeatMerge head from the codebook" in (trainer.run_dir / "train.log").read_text()


def test_dlf_export_loads_as_inference_model(tmp_path, image_folder):
    trainer, _ = dlf_trainer(tmp_path, image_folder, "dlf_align")
    trainer.train_step()
    trainer.save_checkpoint()
    exported = export_inference_model(trainer.run_dir, tmp_path / "exported")
    model = DLF.from_pretrained(exported)
    assert model.vqgan.encoder is None
    trained = trainer.model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    x = torch.rand(1, 3, 64, 64)
    data = model.compress(x, 1)
    assert model.decompress(data).shape == x.shape
    # float16 storage (export-weights --dtype float16): float32 parameters holding the rounded values.
    half = DLF.from_pretrained(export_inference_model(trainer.run_dir, tmp_path / "half", dtype=torch.float16))
    for key, value in half.state_dict().items():
        expected = trained[key].half().float() if trained[key].is_floating_point() else trained[key]
        assert value.dtype == trained[key].dtype and torch.equal(value, expected), key
    # The export lacks the VQGAN encoder: fine for a pixel stage without latent targets, an
    # error (naming the way out) for a stage that needs them.
    pixel, _ = dlf_trainer(tmp_path, image_folder, "dlf_pixel", **{
        "init_from": str(exported), "losses.latent_mse": 0.0, "losses.code_ce": 0.0})
    assert torch.equal(pixel.model.prior_fusion.ffn[3].weight, trained["prior_fusion.ffn.3.weight"])
    with pytest.raises(WeightsError, match="dlf.init_vqgan"):
        dlf_trainer(tmp_path, image_folder, "dlf_align", **{"name": "again", "init_from": str(exported)})


def test_pixel_stage_inherits_lambdas_from_the_alignment_run(tmp_path, image_folder):
    align, _ = dlf_trainer(tmp_path, image_folder, "dlf_align")
    align.lambda_ladder.indices = [4, 0]
    align.train_step()
    align.save_checkpoint()
    pixel, _ = dlf_trainer(tmp_path, image_folder, "dlf_pixel", **{
        "name": "test-pixel-from-align", "init_from": str(align.run_dir), "dlf.inherit_lambdas": True})
    assert pixel.lambda_ladder.indices == [4, 0]
    assert pixel.lambdas.tolist() == [4.0, 0.25]
    assert torch.equal(pixel.model.hybrid_codec.latent_tokens.detach(), align.model.hybrid_codec.latent_tokens.detach())


def test_init_vqgan_reads_glc_image_folders_and_checkpoints(tmp_path):
    """A DLF on GLC's VQGAN layout (as the small preset) takes the VQGAN of a GLC-image
    save_pretrained folder (no codebook: seeded later) or of a GLC training checkpoint."""
    import dataclasses

    from latentcodec.models.glc_image import GLCImage, GLCImageConfig

    glc_config = GLCImageConfig.tiny()
    dlf_config = dataclasses.replace(DLFConfig.tiny(), vqgan=glc_config.vqgan, vqgan_layout="glc")
    glc = GLCImage(glc_config, with_training_modules=True)
    model = DLF(dlf_config, with_training_modules=True)
    inference = GLCImage(glc_config)  # as exported and shipped: no codebook
    inference.load_state_dict(glc.state_dict(), strict=False)
    note, seed = load_vqgan_weights(model, str(inference.save_pretrained(tmp_path / "glc-export")))
    assert seed and "seeded" in note
    assert torch.equal(model.vqgan.generator.blocks[0].weight, glc.vqgan.generator.blocks[0].weight)
    run = tmp_path / "glc-run"
    run.mkdir()
    torch.save({"model": glc.state_dict(), "step": 1}, run / "checkpoint.pt")
    note, seed = load_vqgan_weights(model, str(run))
    assert not seed
    assert torch.equal(model.vqgan.quantize.embedding.weight, glc.vqgan.quantize.embedding.weight)
    state = {k: v for k, v in glc.state_dict().items() if k != "vqgan.generator.blocks.0.weight"}
    torch.save({"model": state}, run / "checkpoint.pt")
    with pytest.raises(WeightsError, match="generator.blocks.0.weight"):
        load_vqgan_weights(model, str(run))


def test_per_sample_rates_match_one_rate_at_a_time():
    """A (B,) tensor of rates codes each sample exactly as its own int rate does (gains and prior rows)."""
    torch.manual_seed(0)
    model = DLF(DLFConfig.tiny(), with_training_modules=True).eval()
    with torch.no_grad():
        table = model.hybrid_codec.quantize_feat.enc_q
        table.copy_(torch.rand_like(table) + 0.5)  # rates that differ, unlike the all-ones init
        x = model.pad(torch.rand(2, 3, 64, 64))
        both = model.analyse(x, torch.tensor([1, 0]), skip=False)
        decoded = model.synthesise(both.codes, both.steps.y_hat, torch.tensor([1, 0]), decode=False)
        for i, q in enumerate((1, 0)):
            alone = model.analyse(x[i:i + 1], q, skip=False)
            assert torch.allclose(both.y[i:i + 1], alone.y, atol=1e-5, rtol=1e-4)
            assert torch.allclose(both.prior[i:i + 1], alone.prior, atol=1e-5, rtol=1e-4)
            codes = alone.codes
            one = model.synthesise(codes, alone.steps.y_hat, q, decode=False)
            assert torch.allclose(decoded.logits[i:i + 1], one.logits, atol=1e-4, rtol=1e-3)
            assert one.x_hat is None
        other = model.analyse(x[:1], 0, skip=False)
        assert not torch.allclose(both.y[:1], other.y)  # the rate matters, so the check above means something
    with pytest.raises(ValueError, match="rate indices"):
        model.analyse(x, torch.tensor([0, 2]))


def test_shipped_tiny_config_trains(tmp_path, image_folder, validation_folder):
    """dlf_tiny_align.yaml as shipped (data and run folders redirected): steps, controls, checkpoints."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "latentcodec" / "training" / "configs" / "dlf_tiny_align.yaml"
    config = load_config(path, [f"data.train_dirs=[{image_folder}]", f"validation.image_dir={validation_folder}",
                                f"runtime.run_root={tmp_path / 'runs'}", "steps=5"])
    trainer = Trainer(config)
    trainer.fit()
    checkpoint = torch.load(trainer.run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 5 and checkpoint["stage"] == "dlf_align"
    assert checkpoint["lambda_indices"] == trainer.lambda_ladder.indices
    assert torch.equal(checkpoint["lambdas"], torch.tensor(trainer.lambda_ladder.values()))
    assert '"lambda_control"' in (trainer.run_dir / "metrics.jsonl").read_text()


def test_shipped_pixel_configs_inherit_from_an_alignment_run_with_their_ladder():
    """inherit_lambdas refuses a run with another ladder, so each dlf_*_pixel.yaml must repeat its
    alignment config's ladder (a mismatch would only surface hours later, when stage 2 starts)."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "latentcodec" / "training" / "configs"
    configs = [load_config(path) for path in sorted(folder.glob("dlf_*.yaml"))]
    runs = {config.name: config for config in configs if config.stage == "dlf_align"}
    pixel_configs = [config for config in configs if config.stage == "dlf_pixel"]
    assert pixel_configs
    # Every config that inherits lambdas (stage 2, or a continued alignment) starts from an alignment run.
    for config in (c for c in configs if c.dlf.inherit_lambdas):
        source = runs[config.init_from.rstrip("/").split("/")[-1]]
        assert config.dlf.lambda_ladder == source.dlf.lambda_ladder and config.dlf.bpp_bounds == source.dlf.bpp_bounds
    assert all(pixel.dlf.inherit_lambdas for pixel in pixel_configs)


def test_detail_dropout_zeroes_the_detail_of_the_drawn_samples_only(tmp_path, image_folder):
    trainer, batch = dlf_trainer(tmp_path, image_folder, "dlf_align", **{"dlf.detail_dropout": 0.5})
    model, seen = trainer.model, {}
    analyse, synthesise = model.analyse, model.synthesise

    def spy_analyse(*args, **kwargs):
        seen["analysis"] = analyse(*args, **kwargs)
        return seen["analysis"]

    def spy_synthesise(codes, y_hat, *args, **kwargs):
        seen["y_hat"] = y_hat
        return synthesise(codes, y_hat, *args, **kwargs)

    model.analyse, model.synthesise = spy_analyse, spy_synthesise
    batch = torch.cat([batch] * 4)  # 8 samples: both outcomes are drawn with this seed
    generator = torch.Generator().manual_seed(3)
    kept = torch.rand(8, generator=torch.Generator().manual_seed(3)) >= 0.5
    assert 0 < int(kept.sum()) < 8
    trainer.objective(batch, torch.zeros(8, dtype=torch.long), trainer.lambdas, None, generator=generator)
    full = seen["analysis"].steps.y_hat
    assert full[~kept].abs().sum() > 0 and seen["y_hat"][~kept].abs().sum() == 0
    assert torch.equal(seen["y_hat"][kept], full[kept])
    trainer.objective.eval()  # no dropout outside training
    trainer.objective(batch, torch.zeros(8, dtype=torch.long), trainer.lambdas, None, generator=generator)
    assert torch.equal(seen["y_hat"], seen["analysis"].steps.y_hat)
    with pytest.raises(ConfigError, match="detail_dropout"):
        dlf_trainer(tmp_path, image_folder, "dlf_align", **{"name": "bad", "dlf.detail_dropout": 1.0})


def test_window_token_similarity_and_the_diversity_term_push_windows_apart(tmp_path, image_folder):
    from latentcodec.training.dlf_stages import window_token_similarity

    same = torch.randn(1, 12, 1, 32).expand(3, -1, -1, -1)
    assert window_token_similarity(same).shape == (6, 32) and torch.allclose(window_token_similarity(same), torch.ones(6, 32))
    assert window_token_similarity(same[:1]).numel() == 0
    opposite = torch.cat([same[:1], -same[:1]])
    assert torch.allclose(window_token_similarity(opposite), -torch.ones(2, 32))

    # Only the diversity weight differs: the term adds relu(similarity - margin) to the loss, and its
    # gradient reaches the tokenizer's encoder.
    losses = {}
    for weight in (0.0, 1.0):
        trainer, batch = dlf_trainer(tmp_path, image_folder, "dlf_align", name=f"w{weight}", **{
            "losses.token_diversity": weight, "dlf.token_similarity_margin": -1.0})
        trainer.model.zero_grad()
        out = objective(trainer, batch)
        out.total.backward()
        encoder_grad = trainer.model.hybrid_codec.encoder.latent_token_positional_embedding.grad
        losses[weight] = (out.total.item(), out.token_similarity.item(), encoder_grad.clone())
    similarity = losses[0.0][1]
    assert -1 <= similarity <= 1
    assert abs(losses[1.0][0] - losses[0.0][0] - (similarity + 1.0)) < 1e-4
    assert not torch.allclose(losses[1.0][2], losses[0.0][2])
    with pytest.raises(ConfigError, match="token_similarity_margin"):
        dlf_trainer(tmp_path, image_folder, "dlf_align", **{"name": "bad", "dlf.token_similarity_margin": 1.0})

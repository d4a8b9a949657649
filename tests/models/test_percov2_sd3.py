"""PerCoV2's diffusers side: a tiny randomly initialised SD3 pipeline saved with ``save_pretrained`` into
the real diffusers layout is loaded through our code (no network), and with its untrained (zero)
condition our decoder must reproduce StableDiffusion3Pipeline (SYSTEMS.md 6.6.3's acceptance test)."""

from __future__ import annotations

import shutil

import pytest
import torch

from latentcodec.errors import WeightsError
from latentcodec.models import percov2_sd3 as sd3
from latentcodec.models.percov2 import PerCoV2, PerCoV2Config, file_seed, tiny_transformer_config, tiny_vae_config
from latentcodec.models.percov2_sd3 import PromptEmbeddings

diffusers = pytest.importorskip("diffusers")

TINY_HYPER = PerCoV2Config.tiny().hyper


def tiny_pipeline() -> "diffusers.StableDiffusion3Pipeline":
    torch.manual_seed(0)
    vae = sd3.build_vae(tiny_vae_config())
    transformer = sd3.build_transformer(tiny_transformer_config())
    scheduler = sd3.build_scheduler(sd3.sd3_scheduler_config())
    no_text = dict.fromkeys(("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3",
                             "tokenizer_3"))
    pipe = diffusers.StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler, vae=vae, **no_text)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    pipe = tiny_pipeline()
    folder = tmp_path_factory.mktemp("sd3") / "tiny-sd3"
    pipe.save_pretrained(folder)
    return pipe, folder


@pytest.fixture(scope="module")
def codec(pipeline_folder) -> PerCoV2:
    return PerCoV2.from_diffusers(pipeline_folder[1], hyper=TINY_HYPER)


def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, height, width, generator=generator)


def test_loads_the_saved_pipeline_components(pipeline_folder, codec):
    pipe, folder = pipeline_folder
    assert (folder / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert codec.transformer.config.in_channels == 16 + TINY_HYPER.adapter_channels
    assert codec.config.transformer["in_channels"] == 24 and codec.config.vae["latent_channels"] == 16
    for name, tensor in pipe.vae.state_dict().items():
        assert torch.equal(codec.vae.state_dict()[name], tensor), name
    base = pipe.transformer.state_dict()
    wide = codec.transformer.state_dict()
    assert base.keys() == wide.keys()
    for name in base:
        if name == "pos_embed.proj.weight":
            assert torch.equal(wide[name][:, :16], base[name]) and wide[name][:, 16:].abs().sum() == 0
        else:
            assert torch.equal(wide[name], base[name]), name


def test_zero_initialised_injection_equals_the_base_transformer(pipeline_folder, codec):
    pipe, _ = pipeline_folder
    generator = torch.Generator().manual_seed(2)
    noisy = torch.randn(2, 16, 4, 6, generator=generator)
    condition = torch.randn(2, TINY_HYPER.adapter_channels, 4, 6, generator=generator) * 10
    prompt = PromptEmbeddings(torch.randn(2, 4, 16, generator=generator), torch.randn(2, 16, generator=generator))
    t = torch.tensor([900.0, 250.0])
    with torch.no_grad():
        base = pipe.transformer(hidden_states=noisy, timestep=t, encoder_hidden_states=prompt.tokens,
                                pooled_projections=prompt.pooled, return_dict=False)[0]
        ours = codec.velocity(noisy, condition, t, prompt)
        assert torch.allclose(ours, base, atol=1e-5, rtol=1e-5)
        # ... and only because the new inputs are zero: move them and the condition shows.
        moved = sd3.widen_patch_embedding(pipe.transformer, TINY_HYPER.adapter_channels)
        moved.pos_embed.proj.weight[:, 16:].normal_(0.0, 0.1)
        shifted = moved(hidden_states=torch.cat([noisy, condition], 1), timestep=t,
                        encoder_hidden_states=prompt.tokens, pooled_projections=prompt.pooled, return_dict=False)[0]
    assert not torch.allclose(shifted, base, atol=1e-3)


@pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
def test_zero_condition_decode_equals_stable_diffusion_3_pipeline(pipeline_folder, codec, cfg_scale):
    """The acceptance test of SYSTEMS.md 6.6.3: same caption embeddings, seed, steps and CFG."""
    pipe, _ = pipeline_folder
    generator = torch.Generator().manual_seed(7)
    prompt = PromptEmbeddings(torch.randn(1, 4, 16, generator=generator), torch.randn(1, 16, generator=generator))
    negative = PromptEmbeddings(torch.zeros(1, 4, 16), torch.zeros(1, 16))
    seed, steps = 1234, 4
    expected = pipe(prompt_embeds=prompt.tokens, pooled_prompt_embeds=prompt.pooled,
                    negative_prompt_embeds=negative.tokens, negative_pooled_prompt_embeds=negative.pooled,
                    height=32, width=48, num_inference_steps=steps, guidance_scale=cfg_scale,
                    generator=torch.Generator().manual_seed(seed), output_type="pt").images
    latent = codec.sample(None, (4, 6), prompt, negative, seed, steps, cfg_scale)
    ours = sd3.decode_latent(codec.vae, latent)
    assert ours.shape == expected.shape == (1, 3, 32, 48)
    assert torch.allclose(ours, expected, atol=1e-4)
    # The comparison can fail: another seed gives another picture.
    other = sd3.decode_latent(codec.vae, codec.sample(None, (4, 6), prompt, negative, seed + 1, steps, cfg_scale))
    assert (other - expected).abs().max() > 1e-3


def test_a_whole_file_decodes_to_the_pipeline_picture_before_training(pipeline_folder, codec):
    """A file's decode = the pipeline with the empty (no-text) caption, the file's seed and the steps:
    before stage A the tokens cannot change the picture, because the injected inputs are zero."""
    pipe, _ = pipeline_folder
    data = codec.compress(image(32, 48))
    length = codec.config.sampling.prompt_length
    zeros = dict(prompt_embeds=torch.zeros(1, length, 16), pooled_prompt_embeds=torch.zeros(1, 16))
    expected = pipe(**zeros, height=32, width=48, num_inference_steps=2, guidance_scale=1.0,
                    generator=torch.Generator().manual_seed(file_seed(data)), output_type="pt").images
    assert torch.allclose(codec.decompress(data, steps=2), expected, atol=1e-4)


def test_latent_normalisation_uses_the_mode_and_both_factors(codec):
    vae = codec.vae
    x = image(32, 32)
    with torch.no_grad():
        z = sd3.encode_latent(vae, x)
        mode = vae.encode(x * 2 - 1).latent_dist.mode()
        assert torch.allclose(z, (mode - 0.0609) * 1.5305, atol=1e-6)
        assert torch.equal(z, sd3.encode_latent(vae, x))  # the mode, not a sample: deterministic
        decoded = sd3.decode_latent(vae, z)
        raw = vae.decode(mode).sample
        assert torch.allclose(decoded, ((raw + 1) / 2).clamp(0, 1), atol=1e-5)


def test_missing_weights_name_the_missing_file(pipeline_folder, tmp_path):
    _, folder = pipeline_folder
    with pytest.raises(WeightsError, match="not found") as info:
        PerCoV2.from_diffusers(tmp_path / "nowhere")
    assert "\n" not in str(info.value)
    weights = "transformer/diffusion_pytorch_model.safetensors"
    cases = {weights: f"{weights} not found", "scheduler": "sd3-1/scheduler not found",
             "vae/config.json": "vae/config.json not found"}
    for i, (missing, message) in enumerate(cases.items()):
        copy = tmp_path / f"sd3-{i}"
        shutil.copytree(folder, copy)
        target = copy / missing
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        with pytest.raises(WeightsError, match=message) as info:
            PerCoV2.from_diffusers(copy)
        assert "\n" not in str(info.value)


def test_a_vae_with_other_latent_channels_is_refused(tmp_path):
    vae = sd3.build_vae(dict(tiny_vae_config(), latent_channels=4))
    vae.save_pretrained(tmp_path / "sd" / "vae")
    sd3.build_transformer(tiny_transformer_config()).save_pretrained(tmp_path / "sd" / "transformer")
    sd3.build_scheduler(sd3.sd3_scheduler_config()).save_pretrained(tmp_path / "sd" / "scheduler")
    with pytest.raises(WeightsError, match="4 latent channels"):
        PerCoV2.from_diffusers(tmp_path / "sd")


def test_save_pretrained_of_a_diffusers_built_codec_round_trips(codec, tmp_path):
    codec.save_pretrained(tmp_path / "m")
    loaded = PerCoV2.from_pretrained(tmp_path / "m")
    assert loaded.config == codec.config
    data = codec.compress(image(32, 48, seed=3))
    assert loaded.compress(image(32, 48, seed=3)) == data
    # The same weights in other memory (diffusers' loader vs ours) may sum in another order inside oneDNN's
    # float products (onednn_linear), so the pictures agree to float rounding, not bit for bit.
    assert torch.allclose(loaded.decompress(data, steps=2), codec.decompress(data, steps=2), atol=1e-5)


def test_api_and_cli_accept_a_diffusers_folder_as_weights(pipeline_folder, tmp_path, capsys):
    import latentcodec
    from PIL import Image

    from latentcodec.cli import main

    _, folder = pipeline_folder
    codec = latentcodec.load("percov2", weights=str(folder))
    picture = Image.fromarray((image(40, 56).numpy()[0].transpose(1, 2, 0) * 255).astype("uint8"))
    data = codec.compress(picture)
    assert data[:2] == bytes([0xBE, 0x40])  # compact header: model id 4, rate 0
    assert codec.decompress(data).size == (56, 40)
    picture.save(tmp_path / "in.png")
    assert main(["compress", str(tmp_path / "in.png"), "-o", str(tmp_path / "in.lci"), "--model", "percov2",
                 "--weights", str(folder)]) == 0
    assert (tmp_path / "in.lci").read_bytes() == data
    assert main(["decompress", str(tmp_path / "in.lci"), "-o", str(tmp_path / "out.png"), "--weights",
                 str(folder)]) == 0
    assert Image.open(tmp_path / "out.png").size == (56, 40)


def tiny_clip(vocab_size: int, token_ids: dict[str, int]):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(1)
    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                            num_attention_heads=2, projection_dim=8, max_position_embeddings=77,
                            bos_token_id=token_ids["<|startoftext|>"], eos_token_id=token_ids["<|endoftext|>"],
                            pad_token_id=token_ids["<|endoftext|>"])
    return CLIPTextModelWithProjection(config).eval()


def tiny_clip_tokenizer(folder):
    """A byte-level CLIP BPE tokenizer with no merges: one token per character (the 256 byte symbols of
    the usual byte-to-unicode map, each also as a word end), plus the two specials."""
    import json

    from transformers import CLIPTokenizer

    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    extra = iter(range(256, 512))
    symbols = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77), vocab


@pytest.fixture(scope="module")
def captioned_folder(tmp_path_factory):
    """The tiny pipeline with two tiny CLIP text encoders (8 + 8 hidden = the MMDiT's 16-wide joint
    attention, 8 + 8 pooled = its 16-wide pooled projection) and no T5."""
    root = tmp_path_factory.mktemp("sd3-text")
    tokenizer, vocab = tiny_clip_tokenizer(root / "tokenizer-files")
    pipe = tiny_pipeline()
    pipe = diffusers.StableDiffusion3Pipeline(
        transformer=pipe.transformer, scheduler=pipe.scheduler, vae=pipe.vae, text_encoder=tiny_clip(len(vocab), vocab),
        tokenizer=tokenizer, text_encoder_2=tiny_clip(len(vocab), vocab), tokenizer_2=tokenizer, text_encoder_3=None,
        tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(root / "sd3")
    return pipe, root / "sd3"


def test_a_captioned_file_decodes_to_the_pipeline_picture_for_that_caption(captioned_folder):
    pipe, folder = captioned_folder
    codec = PerCoV2.from_diffusers(folder, hyper=TINY_HYPER)
    assert codec.prompt_encoder is not None
    data = codec.compress(image(32, 48), caption="a red barn in the snow")
    assert codec.decode_streams(data).caption == "a red barn in the snow"
    expected = pipe(prompt="a red barn in the snow", height=32, width=48, num_inference_steps=3, guidance_scale=4.0,
                    generator=torch.Generator().manual_seed(file_seed(data)), output_type="pt").images
    ours = codec.decompress(data, steps=3, cfg_scale=4.0)
    assert torch.allclose(ours, expected, atol=1e-4)
    other = pipe(prompt="a blue boat", height=32, width=48, num_inference_steps=3, guidance_scale=4.0,
                 generator=torch.Generator().manual_seed(file_seed(data)), output_type="pt").images
    assert (other - expected).abs().max() > 1e-3  # the caption matters


@pytest.mark.slow  # ~6 s: diffusers computes the 192 x 192 sin-cos table even on the meta device
def test_the_sd3_preset_builds_the_sd3_medium_geometry():
    """Built on the meta device (no memory): SD3-Medium's MMDiT (~2.03 B parameters) with the patch
    embedding widened to 16 + 64 inputs, its f8 VAE, and the ~11 M hyper-encoder of g = 8."""
    with torch.device("meta"):
        model = PerCoV2(PerCoV2Config.sd3())
    millions = lambda module: sum(p.numel() for p in module.parameters()) / 1e6  # noqa: E731
    assert 2000 < millions(model.transformer) < 2060 and 80 < millions(model.vae) < 90
    assert 10 < millions(model.hyper_encoder) < 12
    assert tuple(model.transformer.pos_embed.proj.weight.shape) == (1536, 80, 2, 2)
    assert model.config.max_latent_side * model.config.vae_factor == 3072

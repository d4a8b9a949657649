"""GLC-video end to end on the tiny preset: GOP logic, real sequence files decoded to exactly the
encoder's latents, corrupt units named by frame, the training forward, and save/load."""

from __future__ import annotations

import pytest
import torch

from latentcodec.bitstream import FrameUnitError, SequenceReader
from latentcodec.errors import BitstreamError, ConfigError, InputError, WeightsError
from latentcodec.models.glc_image import GLCImage, GLCImageConfig
from latentcodec.models.glc_video import (
    FEATURE_ADAPTOR_PATTERN,
    GLCVideo,
    GLCVideoConfig,
    GOPConfig,
    plan_frame,
)


def deterministic(model: torch.nn.Module, make_weights) -> torch.nn.Module:
    """The reference's per-key weight rules: well-scaled, independent of torch's RNG."""
    state = {k: torch.from_numpy(make_weights.make_tensor(k, tuple(v.shape))) for k, v in model.state_dict().items()}
    model.load_state_dict_strict(state, source="deterministic")
    return model.eval()


@pytest.fixture(scope="module")
def tiny_video(make_weights) -> GLCVideo:
    return deterministic(GLCVideo(GLCVideoConfig.tiny()), make_weights)


def clip(frames: int, height: int, width: int, seed: int = 0) -> list[torch.Tensor]:
    """A smooth moving pattern: consecutive frames are similar, as in real video."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=generator), size=(height + 8, width + 8),
                                           mode="bilinear", align_corners=False)
    return [(base[..., t : t + height, 2 * t % 8 : 2 * t % 8 + width]
             + 0.03 * torch.rand(1, 3, height, width, generator=generator)).clamp(0, 1) for t in range(frames)]


def encoder_latents(model: GLCVideo, frames: list[torch.Tensor], rate: int, gop: GOPConfig) -> list[torch.Tensor]:
    latents, ref = [], None
    for index, frame in enumerate(frames):
        encoded = model.encode_frame(frame, plan_frame(index, gop), rate, ref)
        latents.append(encoded.latent_hat)
        ref = encoded.reference
    return latents


# -- GOP ---------------------------------------------------------------------------------------------
def test_reference_gop_structure():
    gop = GOPConfig(intra_period=96, reset_interval=32)
    plans = [plan_frame(t, gop) for t in range(200)]
    assert [p.index for p in plans if p.intra] == [0, 96, 192]
    assert [p.index for p in plans if p.after_intra] == [1, 33, 65, 97, 129, 161, 193]
    assert all(p.adaptor_index == FEATURE_ADAPTOR_PATTERN[p.index % 96 % 8] for p in plans)
    # feature_adaptor.1 is used at positions 9, 17, 25 (t % 8 == 1 but no reset)
    assert {p.index for p in plans[:32] if not p.intra and not p.after_intra and p.adaptor_index == 1} == {9, 17, 25}


def test_gop_edge_settings():
    single_intra = GOPConfig(intra_period=0, reset_interval=0)
    assert [plan_frame(t, single_intra).intra for t in range(5)] == [True, False, False, False, False]
    assert [plan_frame(t, single_intra).after_intra for t in range(100)].count(True) == 1
    every_frame_reset = GOPConfig(intra_period=0, reset_interval=1)
    assert all(plan_frame(t, every_frame_reset).after_intra for t in range(1, 10))
    assert all(plan_frame(t, GOPConfig(intra_period=1)).intra for t in range(5))
    with pytest.raises(ConfigError):
        GOPConfig(intra_period=-1)


def test_config_checks():
    with pytest.raises(ConfigError, match="rate levels"):
        GLCVideoConfig(intra=GLCImageConfig.tiny())  # 4 rates, not the video's 64
    assert GLCVideoConfig.official().weight_map_channels == 128
    assert GLCVideoConfig.official().z_section_bytes == 28


# -- the intra model's 64 levels ---------------------------------------------------------------------
def test_interpolated_rate_levels_keep_the_four_image_gains(make_weights):
    image = deterministic(GLCImage(GLCImageConfig.tiny()), make_weights)
    original = image.q_enc.detach().clone()
    image.interpolate_rates(64)
    assert image.num_rates == 64 and image.q_enc.shape[0] == 64 and image.q_dec.shape[0] == 64
    # Rows 0, 21, 42, 63 sit exactly on the four original levels (positions i * 3 / 63).
    assert torch.equal(image.q_enc.detach()[[0, 21, 42, 63]], original)
    middle = image.q_enc.detach()[10]
    assert torch.allclose(middle, original[0] + (original[1] - original[0]) * (10 * 3 / 63), atol=1e-6)


# -- real coding --------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, gop", [((64, 64), GOPConfig()),
                                       ((37, 53), GOPConfig(intra_period=3, reset_interval=2))])
def test_decoder_reproduces_the_encoder_latents_exactly(tiny_video, size, gop):
    frames = clip(5, *size)
    for rate in (0, 63):
        data = tiny_video.compress_frames(frames, rate, gop=gop)
        expected = encoder_latents(tiny_video, frames, rate, gop)
        decoded = list(tiny_video.decode_latents(data))
        assert [d.plan.intra for d in decoded] == [plan_frame(t, gop).intra for t in range(5)]
        assert len(decoded) == 5 and all(torch.equal(d.latent_hat, e) for d, e in zip(decoded, expected))
        pixels = list(tiny_video.decode_sequence(data))
        assert all(p.shape == (1, 3, *size) and 0 <= p.min() and p.max() <= 1 for p in pixels)


def test_sequence_file_layout_and_rates(tiny_video):
    frames = clip(4, 64, 64)
    stats = []
    data = tiny_video.compress_frames(frames, 5, intra_rate_index=9, frame_rate=30, on_frame=stats.append)
    reader = SequenceReader(data)
    header = reader.header
    assert (header.model_id, header.intra_rate, header.inter_rate) == (2, 9, 5)
    assert (header.height, header.width, header.frame_count, header.frame_rate) == (64, 64, 4, 30)
    units = list(reader)
    assert [len(u.payload) for u in units] == [s.payload_bytes for s in stats]
    assert sum(u.size for u in units) + reader.header_bytes == len(data)
    for unit, stat in zip(units[1:], stats[1:]):
        assert not stat.intra and len(unit.payload) >= tiny_video.config.z_section_bytes
        # framing: a 1-2 byte length and the CRC-8, at most 3 bytes for payloads up to 16511 bytes
        assert unit.size - len(unit.payload) == (2 if len(unit.payload) < 128 else 3)
        assert stat.estimated_bits > tiny_video.inter_z_bits() == 224


def test_file_size_tracks_the_estimate(tiny_video):
    stats = []
    tiny_video.compress_frames(clip(3, 64, 96), 0, on_frame=stats.append)
    for stat in stats:
        assert 0.5 * stat.estimated_bits / 8 < stat.payload_bytes < 2.0 * stat.estimated_bits / 8 + 32


def test_corrupt_units_are_reported_with_their_frame_index(tiny_video):
    data = tiny_video.compress_frames(clip(4, 64, 64), 3)
    units = list(SequenceReader(data))
    for index in (0, 2, 3):
        broken = bytearray(data)
        broken[units[index].offset + units[index].size // 2] ^= 0x04
        with pytest.raises(FrameUnitError, match=f"^frame {index}: ") as caught:
            list(tiny_video.decode_sequence(bytes(broken)))
        assert caught.value.frame_index == index
    truncated = data[: units[3].offset + 5]
    with pytest.raises(FrameUnitError, match="frame 3: truncated"):
        list(tiny_video.decode_sequence(truncated))
    # A dropped unit makes the next one fail at the dropped index (the CRC is seeded with it).
    dropped = data[: units[1].offset] + data[units[2].offset :]
    with pytest.raises(FrameUnitError, match="frame 1: checksum"):
        list(tiny_video.decode_sequence(dropped))


def test_frames_before_a_corrupt_unit_still_stream_out(tiny_video):
    data = tiny_video.compress_frames(clip(3, 64, 64), 0)
    units = list(SequenceReader(data))
    broken = bytearray(data)
    broken[units[2].offset + 3] ^= 0xFF
    decoded = tiny_video.decode_sequence(bytes(broken))
    assert next(decoded).shape == next(decoded).shape == (1, 3, 64, 64)
    with pytest.raises(FrameUnitError):
        next(decoded)


def test_wrong_files_and_inputs(tiny_video, make_weights):
    image = deterministic(GLCImage(GLCImageConfig.tiny()), make_weights)
    image_file = image.compress(clip(1, 64, 64)[0], 0)
    with pytest.raises(BitstreamError, match="not a video sequence"):
        list(tiny_video.decode_sequence(image_file))
    video_file = tiny_video.compress_frames(clip(2, 64, 64), 0)
    with pytest.raises(BitstreamError, match="not an image file"):
        image.decompress(video_file)
    with pytest.raises(InputError, match="no frames"):
        tiny_video.compress_frames([], 0)
    with pytest.raises(InputError, match="frame 1 is"):
        tiny_video.compress_frames([clip(1, 64, 64)[0], clip(1, 32, 64)[0]], 0)
    with pytest.raises(InputError, match="frame 0"):
        tiny_video.compress_frames([torch.rand(1, 1, 64, 64)], 0)
    with pytest.raises(Exception, match="rate index 64"):
        tiny_video.compress_frames(clip(1, 64, 64), 64)


def test_streaming_encode_to_a_file_object(tiny_video, tmp_path):
    frames = clip(3, 64, 64)
    path = tmp_path / "clip.lcv"
    with open(path, "wb") as stream:
        assert tiny_video.encode_sequence(iter(frames), stream, rate_index=2) == 3
    data = path.read_bytes()
    assert SequenceReader(data).header.frame_count == 0  # a generator has no length: open-ended
    assert data[-1] == 0  # the end marker
    with open(path, "rb") as stream:
        decoded = [d.latent_hat for d in tiny_video.decode_latents(stream)]
    assert all(torch.equal(a, b) for a, b in zip(decoded, encoder_latents(tiny_video, frames, 2, GOPConfig())))


def test_save_and_load_pretrained_reproduces_files(tiny_video, tmp_path):
    frames = clip(3, 64, 64)
    data = tiny_video.compress_frames(frames, 7)
    tiny_video.save_pretrained(tmp_path / "video")
    loaded = GLCVideo.from_pretrained(tmp_path / "video")
    assert loaded.config == tiny_video.config and loaded.inter.vqgan is None
    assert loaded.compress_frames(frames, 7) == data


# -- training -----------------------------------------------------------------------------------------
def test_training_forward_is_differentiable_through_the_p_chain():
    torch.manual_seed(0)
    model = GLCVideo(GLCVideoConfig.tiny()).train()
    frames = torch.rand(2, 3, 3, 64, 64)
    out = model(frames, torch.tensor([0, 40]))
    assert out.x_hat.shape == (2, 3, 3, 64, 64) and out.latent_hats.shape[:2] == (2, 3)
    assert out.y_bits.shape == out.latents.shape and (out.y_bits >= 0).all()
    assert out.z_bits[:, 1:].eq(224).all() and out.num_pixels == 64 * 64
    loss = (out.y_bits[:, 1:].sum() / (2 * 64 * 64) + (out.latent_hats - out.latents.detach()).pow(2).mean()
            + out.vq_loss + out.x_hat.abs().mean())
    loss.backward()
    params = dict(model.named_parameters())
    for name in ("inter.encoder.enc_1.0.block.0.conv2.weight", "inter.feature_adaptor_I.weight",
                 "inter.feature_adaptor.0.weight", "inter.hyper_tokenizer.out_proj.weight",
                 "inter.hyper_tokenizer.enhancement.2.block.1.conv_out.weight",
                 "inter.weight_generator.conv.6.weight", "inter.prior_fusion_adaptor_0.conv2.weight",
                 "inter.prior_fusion_adaptor_1.conv2.weight", "inter.y_spatial_prior.conv.2.block.1.conv_out.weight",
                 "inter.decoder.dec_2.1.block.1.conv_out.weight", "inter.y_q_enc", "inter.y_q_dec",
                 "inter.z_vq.embedding.weight"):
        grad = params[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # The intra model is frozen by default; gradients reach the shared generator only via P-frames.
    assert params["intra.enc.enc_1.0.block.0.conv2.weight"].grad is None
    assert params["intra.vqgan.generator.blocks.0.weight"].grad is not None


def test_training_forward_can_train_the_intra_model_too():
    torch.manual_seed(0)
    model = GLCVideo(GLCVideoConfig.tiny()).train()
    out = model(torch.rand(1, 2, 3, 64, 64), 3, decode_pixels=False, train_intra=True)
    assert out.x_hat is None
    out.y_bits.sum().backward()
    assert model.intra.enc.enc_1[0].block[0].conv2.weight.grad.abs().sum() > 0


# -- shipped-weights machinery: referenced I-frame model, narrow storage, rate interpolation -------------
@pytest.fixture()
def referenced_pair(tmp_path, make_weights):
    """A tiny GLC-image saved on its own, and a GLC-video whose I-frame model is that image model."""
    image = deterministic(GLCImage(GLCImageConfig.tiny()), make_weights)
    image.save_pretrained(tmp_path / "image")
    intra = GLCImage.from_pretrained(tmp_path / "image").interpolate_rates(64)
    video = GLCVideo(GLCVideoConfig.tiny(), intra=intra)
    inter_only = {k: v for k, v in deterministic(GLCVideo(GLCVideoConfig.tiny()), make_weights).state_dict().items()
                  if k.startswith("inter.")}
    video.load_state_dict(inter_only, strict=False)
    return tmp_path / "image", video.eval()


def test_referenced_intra_model_saves_only_the_p_model_and_reproduces_files(referenced_pair, tmp_path):
    image_dir, video = referenced_pair
    out = video.save_pretrained(tmp_path / "video", intra_reference=image_dir, dtype=torch.float16)
    from safetensors.torch import load_file

    stored = load_file(str(out / "model.safetensors"))
    assert stored and all(k.startswith("inter.") for k in stored)
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    loaded = GLCVideo.from_pretrained(out)
    # The loaded P-model holds exactly the float16 values, in float32 parameters.
    for key, value in stored.items():
        assert torch.equal(loaded.state_dict()[key], value.float())
    frames = clip(3, 64, 48)
    data = loaded.compress_frames(frames, 40)
    again = GLCVideo.from_pretrained(out)
    assert again.compress_frames(frames, 40) == data
    decoded = torch.cat(list(again.decode_sequence(data)))
    assert decoded.shape == (3, 3, 64, 48)


def test_referenced_intra_model_must_be_the_one_trained_over(referenced_pair, tmp_path):
    image_dir, video = referenced_pair
    out = video.save_pretrained(tmp_path / "video", intra_reference=image_dir)
    # Another image model under the same folder: the recorded SHA-256 no longer matches.
    other = GLCImage(GLCImageConfig.tiny())
    other.save_pretrained(image_dir)
    with pytest.raises(WeightsError, match="SHA-256"):
        GLCVideo.from_pretrained(out)
    with pytest.raises(WeightsError, match="differs"):
        video.save_pretrained(tmp_path / "again", intra_reference=image_dir)


def test_referenced_intra_model_missing_or_weights_mixed(referenced_pair, tmp_path):
    import json
    import shutil

    image_dir, video = referenced_pair
    out = video.save_pretrained(tmp_path / "video", intra_reference=image_dir)
    full = video.save_pretrained(tmp_path / "full")
    shutil.copy(full / "model.safetensors", out / "model.safetensors")
    with pytest.raises(WeightsError, match="non-P-model key"):
        GLCVideo.from_pretrained(out)
    payload = json.loads((out / "config.json").read_text())
    payload["intra_weights"]["weights"] = str(tmp_path / "nowhere")
    (out / "config.json").write_text(json.dumps(payload))
    with pytest.raises(WeightsError, match="nowhere.*not found"):
        GLCVideo.from_pretrained(out)


def test_inter_rate_levels_between_anchors_are_interpolated():
    model = GLCVideo(GLCVideoConfig.tiny())
    anchors = (0, 21, 42, 63)
    values = torch.tensor([0.4, 0.7, 1.3, 2.0])
    with torch.no_grad():
        model.inter.y_q_enc.zero_()
        model.inter.y_q_enc[list(anchors)] = values.view(-1, 1, 1, 1)
        model.inter.y_q_dec.fill_(3.0)
    model.interpolate_inter_rates(anchors)
    table = model.inter.y_q_enc[:, 0, 0, 0].detach()
    assert torch.allclose(table[list(anchors)], values)
    assert torch.allclose(table[7], torch.tensor(0.4 + (0.7 - 0.4) * 7 / 21))
    assert torch.all(table[1:] - table[:-1] > 0)  # monotone between increasing anchors
    assert torch.all(model.inter.y_q_dec == 3.0)
    with pytest.raises(ValueError):
        model.interpolate_inter_rates((0, 64))
    shifted = GLCVideo(GLCVideoConfig.tiny())
    with torch.no_grad():
        shifted.inter.y_q_enc[10] = 5.0
    shifted.interpolate_inter_rates((10, 20))
    assert torch.all(shifted.inter.y_q_enc[:10] == 5.0)  # below the first anchor: its gains

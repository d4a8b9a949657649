"""PerCoV2 on the tiny preset: real files, the file-derived seed, training forward, persistence, the
hierarchical token order, and bad input. The diffusers-facing checks (loading a saved SD3 folder, the
zero-initialised injection, the acceptance test against StableDiffusion3Pipeline) are in
test_percov2_sd3.py."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from latentcodec.bitstream.container import ImageHeader, read_image_file, read_image_header, write_image_file
from latentcodec.config import config_from_dict, config_to_dict
from latentcodec.errors import BitstreamError, ConfigError, InputError, WeightsError
from latentcodec.models.percov2 import (
    MAX_CAPTION_BYTES,
    PerCoV2,
    PerCoV2Config,
    decode_caption,
    encode_caption,
    file_seed,
    normalise_caption,
)
from latentcodec.models.percov2_networks import HyperConfig, hierarchical_groups, hierarchical_order
from latentcodec.models.percov2_sd3 import PromptEmbeddings
from latentcodec.entropy.caption_coder import encode_text
from latentcodec.models.percov2_streams import TokenDescriptor, deflate_caption, encode_uniform_tokens
from latentcodec.zoo.registry import get_entry


class BytePromptEncoder(nn.Module):
    """A tiny real text encoder for tests: embeddings of the caption's UTF-8 bytes, padded to a fixed
    length, and their mean as the pooled vector."""

    def __init__(self, width: int = 16, pooled: int = 16, length: int = 4):
        super().__init__()
        self.length = length
        self.embedding = nn.Embedding(257, width)  # 256 = padding
        self.pool = nn.Linear(width, pooled)

    def forward(self, captions: list[str]) -> PromptEmbeddings:
        rows = []
        for caption in captions:
            ids = list(caption.encode("utf-8"))[: self.length]
            rows.append(ids + [256] * (self.length - len(ids)))
        states = self.embedding(torch.tensor(rows))
        return PromptEmbeddings(states, self.pool(states.mean(1)))


@pytest.fixture(scope="module")
def tiny() -> PerCoV2:
    torch.manual_seed(0)
    model = PerCoV2(PerCoV2Config.tiny()).eval()
    with torch.no_grad():
        # Make the injected condition matter (it starts at exactly zero), so that the tests can see
        # the tokens reach the picture.
        model.transformer.pos_embed.proj.weight[:, 16:].normal_(0.0, 0.5)
    return model


def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, height // 8 + 1, width // 8 + 1, generator=generator)
    return torch.nn.functional.interpolate(base, size=(height, width), mode="bilinear", align_corners=False)


def test_registry_entry_and_missing_default(monkeypatch):
    import dataclasses

    import latentcodec
    from latentcodec.zoo import registry

    entry = get_entry("percov2")
    assert entry.model_id == 4 and entry.kind == "image"
    assert entry.default_weights_path is not None and entry.default_weights_path.name == "percov2-default"
    entries = tuple(dataclasses.replace(e, default_weights=None) if e.name == "percov2" else e
                    for e in registry.REGISTRY)
    monkeypatch.setattr(registry, "REGISTRY", entries)
    with pytest.raises(WeightsError, match="no default weights are shipped for percov2"):
        latentcodec.load("percov2")


def test_file_round_trip_tokens_and_layout(tiny):
    x = image(40, 72)
    result = tiny.encode(x, fixed_length=True)
    header, _ = read_image_header(result.data)
    assert (header.model_id, header.rate_index, header.height, header.width) == (4, 0, 40, 72)
    assert result.data[0] == 0xBE  # compact header, portable
    # 40x72 is coded at 48x80: 3x5 tokens of log2(256) = 8 bits, in one range-coded section after the
    # descriptor byte (g = 32, K = 256, fixed length).
    assert result.token_indices.shape == (3, 5)
    parsed = read_image_file(result.data, tiny.layout, expected_model_id=4)
    assert parsed.sections[0] == b""  # no caption
    assert TokenDescriptor.from_byte(parsed.sections[1][0]) == TokenDescriptor(32, 256, False, 0)
    assert len(parsed.sections[1]) <= 1 + 15  # never more than the fixed-length 120 bits (trailing zeros dropped)
    assert len(result.data) == 5 + 1 + len(parsed.sections[1]) + 1  # header, caption length, tokens, CRC
    streams = tiny.decode_streams(result.data)
    assert torch.equal(streams.token_indices, result.token_indices) and streams.caption is None
    out = tiny.decompress(result.data)
    assert out.shape == (1, 3, 40, 72) and 0.0 <= out.min() and out.max() <= 1.0
    assert result.estimated_token_bits == 120.0 and result.estimated_bits == 128.0


def test_a_file_always_decodes_to_the_same_picture(tiny):
    data = tiny.compress(image(32, 48))
    first, second = tiny.decompress(data), tiny.decompress(data)
    assert torch.equal(first, second)
    assert file_seed(data) == file_seed(bytes(data)) and 0 <= file_seed(data) < 2**63
    other = tiny.compress(image(32, 48, seed=5))
    assert other != data and file_seed(other) != file_seed(data)
    # The decode options change the sampler's path, and so the picture.
    assert not torch.allclose(tiny.decompress(data, steps=1), first, atol=1e-4)
    # The tokens reach the picture: the same seed with another token map gives another image.
    streams = tiny.decode_streams(data)
    latent = tiny.sample(tiny.quantizer.dequantize(streams.token_indices[None]), (4, 6),
                         tiny.prompt_embeddings(""), None, streams.seed, tiny.config.sampling.steps, 1.0)
    zero = tiny.sample(None, (4, 6), tiny.prompt_embeddings(""), None, streams.seed, tiny.config.sampling.steps, 1.0)
    assert not torch.allclose(latent, zero, atol=1e-4)


def test_caption_coding_and_guidance_with_a_text_encoder(tiny):
    torch.manual_seed(3)
    x = image(32, 32)
    with pytest.raises(ConfigError, match="no text encoders"):
        tiny.compress(x, caption="a red barn")
    tiny.attach_prompt_encoder(BytePromptEncoder().eval())
    try:
        assert not any(key.startswith("prompt_encoder") for key in tiny.state_dict())  # not the codec's weights
        data = tiny.compress(x, caption="  a red   barn in snow ")
        streams = tiny.decode_streams(data)
        assert streams.caption == "a red barn in snow"
        assert len(read_image_file(data, tiny.layout).sections[0]) == len(encode_caption("a red barn in snow"))
        guided = tiny.decompress(data, cfg_scale=5.0)
        assert torch.equal(guided, tiny.decompress(data, cfg_scale=5.0))
        assert not torch.allclose(guided, tiny.decompress(data, cfg_scale=1.0), atol=1e-4)
    finally:
        tiny.attach_prompt_encoder(None)
    with pytest.raises(ConfigError, match="carries a caption"):
        tiny.decompress(data)


@pytest.mark.parametrize("caption", ["", "a lighthouse on a rocky coast at dusk", "café, naïve ☃ 東京",
                                     "a " * 40])
def test_caption_section_round_trip(caption):
    caption = normalise_caption(caption)
    coded = encode_caption(caption)
    assert decode_caption(coded) == (caption or None)
    if caption.startswith("a lighthouse"):  # common English words cost a few bits each: below UTF-8 and zlib
        assert len(coded) < len(caption.encode()) / 2 and len(coded) < len(deflate_caption(caption)) / 2
    elif caption.startswith("a a"):  # a static model does not learn repetition (DEFLATE does), but each
        assert len(coded) < len(caption.encode()) / 2  # "a" and space is still cheap
    elif caption:  # other scripts are escaped byte by byte: no gain, but close to their UTF-8 size
        assert len(coded) <= len(caption.encode()) + 4
    else:
        assert coded == b""


def test_caption_errors():
    with pytest.raises(InputError, match="longer than"):
        normalise_caption("x" * (MAX_CAPTION_BYTES + 1))
    with pytest.raises(InputError, match="must be text"):
        normalise_caption(b"bytes")
    with pytest.raises(BitstreamError, match="corrupt caption section"):
        decode_caption(encode_caption("hello") + b"\x00")
    # An efficient code has little redundancy: arbitrary bytes decode to some caption or fail cleanly (in
    # a file, the container's CRC catches damage).
    for bad in (b"\xff\xff\xff", encode_caption("hello")[:-2], bytes(range(40))):
        try:
            caption = decode_caption(bad)
        except BitstreamError as exc:
            assert str(exc).startswith("corrupt caption section")
        else:
            assert caption == normalise_caption(caption)
    for bad_caption in ("a " * MAX_CAPTION_BYTES, " leading space", "two  spaces"):
        with pytest.raises(BitstreamError, match="corrupt caption section"):
            decode_caption(encode_text(bad_caption))  # well-formed streams of what no encoder writes


def test_corrupt_and_truncated_files_give_one_line_errors(tiny):
    data = tiny.compress(image(40, 72))
    for cut in range(len(data)):
        with pytest.raises(BitstreamError) as info:
            tiny.decode_streams(data[:cut])
        assert "\n" not in str(info.value)
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        with pytest.raises(BitstreamError) as info:
            tiny.decode_streams(bytes(flipped))
        assert "\n" not in str(info.value)
    with pytest.raises(BitstreamError):
        tiny.decompress(data + b"\x00")


def crafted(sections: list[bytes], height: int = 40, width: int = 72, model_id: int = 4, rate: int = 0) -> bytes:
    """A file with a valid CRC around arbitrary sections: what a damaged-but-checksummed file would be."""
    header = ImageHeader(model_id=model_id, rate_index=rate, height=height, width=width, compact=True)
    return write_image_file(header, sections, PerCoV2.section_layout)


def test_well_formed_files_with_bad_contents(tiny):
    # (A token section has no redundancy: with K a power of two every byte string decodes to some
    # token map, so only the container's CRC-8 can catch damage there.)
    uniform = bytes([TokenDescriptor(32, 256, False, 0).to_byte()])
    tokens = uniform + encode_uniform_tokens(torch.zeros(3, 5, dtype=torch.int64) + 7, 256)
    assert torch.equal(tiny.decode_streams(crafted([b"", tokens])).token_indices, torch.full((3, 5), 7))
    cases = {
        "rate 1 is out of range": crafted([b"", tokens], rate=1),
        "corrupt caption section": crafted([encode_text("two  spaces"), tokens]),
        "exceeds this model's positional table": crafted([b"", tokens], height=4000),
        "wrong model": crafted([b"", tokens], model_id=3),
        "token section is for g = 8": crafted([b"", bytes([TokenDescriptor(8, 256, False, 0).to_byte()]) + tokens[1:]]),
        "grid code 3 is not defined": crafted([b"", b"\x03" + tokens[1:]]),
        "hybrid mode needs the prior": crafted([b"", bytes([0x10]) + tokens[1:]]),
        "not fewer than the schedule's": crafted([b"", bytes([TokenDescriptor(32, 256, True, 4).to_byte()])]),
        "it is empty": crafted([b"", b""]),
    }
    for message, data in cases.items():
        with pytest.raises(BitstreamError, match=message):
            tiny.decode_streams(data)


def test_bad_images(tiny):
    with pytest.raises(ValueError, match="one RGB image"):
        tiny.compress(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="rate index"):
        tiny.compress(image(32, 32), rate_index=tiny.num_rates)
    with pytest.raises(ConfigError, match="not both"):  # a hybrid quality already chooses the passes
        tiny.compress(image(32, 32), rate_index=0, transmitted_passes=1)
    with pytest.raises(InputError, match="positional table"):
        tiny.compress(torch.rand(1, 3, 300, 32))


def test_sharded_save_without_the_positional_table_loads_the_same_codec(tiny, tmp_path):
    from safetensors import safe_open

    tiny.save_pretrained(tmp_path / "m", max_shard_size=60_000)
    shards = sorted((tmp_path / "m").glob("model-*.safetensors"))
    assert len(shards) > 2 and not (tmp_path / "m" / "model.safetensors").exists()
    stored = set()
    for shard in shards:
        with safe_open(str(shard), "pt") as handle:
            stored |= set(handle.keys())
    # The sin-cos table is computed again on load, not stored.
    assert "transformer.pos_embed.pos_embed" not in stored and "transformer.pos_embed.proj.weight" in stored
    loaded = PerCoV2.from_pretrained(tmp_path / "m")
    own, back = tiny.state_dict(), loaded.state_dict()
    assert own.keys() == back.keys() and all(torch.equal(own[k], back[k]) for k in own)


def test_save_load_round_trip_and_strict_loading(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "m")
    loaded = PerCoV2.from_pretrained(tmp_path / "m")
    own, back = tiny.state_dict(), loaded.state_dict()
    assert own.keys() == back.keys() and all(torch.equal(own[k], back[k]) for k in own)
    assert loaded.config == tiny.config
    data = tiny.compress(image(32, 48))
    assert loaded.compress(image(32, 48)) == data
    assert torch.allclose(loaded.decompress(data), tiny.decompress(data), atol=1e-6)

    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    missing = dict(state)
    missing.pop("quantizer.vq.embedding.weight")
    save_file(missing, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(WeightsError, match="1 missing key.*quantizer.vq.embedding.weight"):
        PerCoV2.from_pretrained(tmp_path / "m")
    save_file({**state, "extra.weight": torch.zeros(1)}, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(WeightsError, match="1 unexpected key"):
        PerCoV2.from_pretrained(tmp_path / "m")
    payload = json.loads((tmp_path / "m" / "config.json").read_text())
    payload["model"] = "dlf"
    (tmp_path / "m" / "config.json").write_text(json.dumps(payload))
    with pytest.raises(WeightsError, match="not 'percov2'"):
        PerCoV2.from_pretrained(tmp_path / "m")


def test_training_forward_trains_the_codec_not_the_vae():
    torch.manual_seed(1)
    model = PerCoV2(PerCoV2Config.tiny()).train()
    out = model(image(32, 48), generator=torch.Generator().manual_seed(0))
    assert out.velocity.shape == out.target.shape == (1, 16, 4, 6)
    assert out.token_indices.shape == (1, 2, 3) and out.token_bits.tolist() == [48.0]
    (out.flow_loss + out.vq_loss).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    # The new patch-embedding inputs start at zero but get a gradient; the VQ and hyper-encoder learn
    # from the VQ loss at once, the adapter (behind the zero weights) only once they move, as with
    # ControlNet's zero convolutions. The VAE stays frozen.
    injected = model.transformer.pos_embed.proj.weight
    assert injected[:, 16:].abs().sum() == 0
    assert grads["transformer.pos_embed.proj.weight"][:, 16:].abs().sum() > 0
    assert grads["adapter.proj.weight"].abs().sum() == 0
    assert grads["hyper_encoder.layers.1.weight"].abs().sum() > 0
    assert grads["quantizer.vq.embedding.weight"].abs().sum() > 0
    assert all(grads[name] is None for name in grads if name.startswith("vae."))
    with torch.no_grad():
        injected -= 0.1 * injected.grad
    model.zero_grad()
    model(image(32, 48), generator=torch.Generator().manual_seed(0)).flow_loss.backward()
    assert model.adapter.proj.weight.grad.abs().sum() > 0


def test_hierarchical_token_order():
    for side, sizes in ((8, [1, 3, 12, 48]), (16, [1, 3, 12, 48, 192])):
        groups = hierarchical_groups(side, side)
        assert torch.bincount(groups.flatten()).tolist() == sizes
    groups = hierarchical_groups(3, 5)  # any size: coarse lattices anchored at (0, 0)
    assert groups[0, 0] == 0 and groups[0, 4] == 1 and groups[2, 2] == 2 and groups[1, 1] == 3
    order = hierarchical_order(3, 5)
    assert sorted(order.tolist()) == list(range(15))
    assert torch.all(groups.flatten()[order][1:] >= groups.flatten()[order][:-1])
    # The token section holds the map in exactly this order (docs/bitstream.md, "PerCoV2 files").
    from latentcodec.entropy.coder import EntropyDecoder

    raster = torch.arange(15).view(3, 5)
    in_file = EntropyDecoder(encode_uniform_tokens(raster, 256)).decode_uniform(15, 256)
    assert in_file.tolist() == order.tolist() == [0, 4, 2, 10, 12, 14] + [1, 3, 5, 6, 7, 8, 9, 11, 13]


def test_config_validation_and_presets():
    with pytest.raises(ConfigError, match="grid"):
        HyperConfig(grid=12)
    with pytest.raises(ConfigError, match="codebook_size"):
        HyperConfig(codebook_size=512)
    with pytest.raises(ConfigError, match="transformer must take"):
        PerCoV2Config(hyper=HyperConfig(adapter_channels=32), transformer=PerCoV2Config.sd3().transformer)
    tiny = PerCoV2Config.tiny()
    assert config_from_dict(PerCoV2Config, json.loads(json.dumps(config_to_dict(tiny)))) == tiny
    sd3 = PerCoV2Config.sd3()
    assert sd3.transformer["in_channels"] == 80 and sd3.token_pixels == 64 and sd3.hyper.down_steps == 3
    # Operating points of SYSTEMS.md 6.6.7 at 512x512: U1 512 bits, E1 2560, E2 8192.
    for grid, k, bits in ((8, 256, 512), (8, 1024, 640), (16, 1024, 2560), (32, 256, 8192)):
        config = PerCoV2Config.sd3(grid, k)
        tokens = (512 // config.token_pixels) ** 2
        assert tokens * config.hyper.token_bits == bits
    assert PerCoV2Config.small().transformer["num_layers"] == 6


def test_a_model_with_a_prior_serves_hybrid_qualities(tiny):
    """Quality q < top sends the fewest first passes holding >= 4**-(top - q) of the tokens; the top one
    every token. More passes, more bytes and the decoder's map closer to the encoder's; every file decodes."""
    from latentcodec.models.percov2 import HYBRID_QUALITIES

    assert tiny.token_prior is not None and tiny.num_rates == HYBRID_QUALITIES
    x = image(96, 128, seed=5)
    results = [tiny.encode(x, q) for q in range(tiny.num_rates)]
    full = results[-1].token_indices
    passes = int(tiny.token_prior.config.groups(tuple(full.shape)).max()) + 1
    transmitted = [TokenDescriptor.from_byte(read_image_file(r.data, tiny.layout, expected_model_id=4).sections[1][0])
                   .transmitted for r in results]
    groups = tiny.token_prior.config.groups(tuple(full.shape))
    expected = []
    for q in range(HYBRID_QUALITIES):
        share = 4.0 ** (q + 1 - HYBRID_QUALITIES)
        expected.append(next(p for p in range(1, passes + 1) if (groups < p).sum() >= share * groups.numel()))
    assert [t or passes for t in transmitted] == expected and transmitted[-1] == 0
    sizes = [len(r.data) for r in results]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    wrong = [int((r.token_indices != full).sum()) for r in results]
    assert wrong == sorted(wrong, reverse=True) and wrong[-1] == 0
    for r in results:
        assert torch.equal(tiny.decode_streams(r.data).token_indices, r.token_indices)
    estimates = [tiny.estimate_bits(x, q) for q in range(tiny.num_rates)]
    assert estimates[0] < estimates[-1]
    from dataclasses import replace

    assert PerCoV2(replace(PerCoV2Config.tiny(), token_prior=None)).num_rates == 1

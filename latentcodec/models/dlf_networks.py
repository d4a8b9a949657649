"""DLF's networks (SYSTEMS.md 5.2-5.7): hybrid encoder/decoder, Interactive Transform, detail
bottleneck with its four-step prior, and the FeatMerge latent adaptor.

Module names are those of the official ``Codec`` state dict (``hybrid_codec.encoder.inter_blocks.3``,
``quantize_feat.y_spatial_prior_adaptor_1`` ...), so an official checkpoint loads strictly.
Parameter-free reshapes (:class:`ChannelsLast`) sit where the reference has them, because they hold
indices in its Sequentials.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.nn.dcvc import DepthConvBlock3
from latentcodec.nn.swin import ChannelsFirst, ChannelsLast, ConvNeXtBlock, heads_for, swin_blocks, swin_stack
from latentcodec.nn.transformer import ResidualAttentionBlock, over_window_groups
from latentcodec.nn.vq import CosineVectorQuantizer
from latentcodec.tokenizers.titok import TiTokConfig, TiTokDecoder, TiTokEncoder, map_to_windows, windows_to_map


@dataclass(frozen=True)
class DLFNetworkConfig:
    titok: TiTokConfig = TiTokConfig()
    detail_width: int = 768
    interactive_layers: tuple[int, ...] = (3, 7, 11, 15, 19)
    interactive_blocks: int = 2
    feat_in_depth: int = 4
    feat_out_depth: int = 2
    init_up_depth: int = 4
    detail_channels: int = 64  # y_d
    num_rates: int = 1
    merge_hidden: int = 2048
    merge_width: int = 1024
    merge_depth: int = 4
    merge_in_depth: int = 2
    window: int = 16  # Swin window, in 1/16-scale positions: the same tiling as TiTok's windows


class InteractiveTransform(nn.Module):
    """Joint attention over one window's TiTok stream and its detail tokens (SYSTEMS.md 5.5).

    The detail stream gets ``feat_add`` of the attended detail rows; the TiTok stream gets a
    ControlNet-style ``zero_add`` (zero at initialisation, so a pretrained TiTok starts unperturbed).
    """

    def __init__(self, titok_width: int, sequence_length: int, detail_width: int, window: int, blocks: int):
        super().__init__()
        self.window = window
        self.titok_pos_emb = nn.Parameter(torch.randn(sequence_length, 1, titok_width) * titok_width**-0.5)
        self.feat_pos_emb = nn.Parameter(torch.randn(window * window, 1, detail_width) * detail_width**-0.5)
        self.titok_compress_proj = nn.Linear(titok_width, detail_width)
        self.attn = nn.Sequential(*(ResidualAttentionBlock(detail_width, heads_for(detail_width)) for _ in range(blocks)))
        self.titok_decompress_proj = nn.Sequential(
            nn.Linear(detail_width, 2 * detail_width), nn.LayerNorm(2 * detail_width), nn.SiLU())
        self.feat_add = nn.Sequential(nn.LayerNorm(detail_width), nn.Linear(detail_width, detail_width))
        self.zero_add = nn.Linear(2 * detail_width, titok_width)
        nn.init.zeros_(self.zero_add.weight)
        nn.init.zeros_(self.zero_add.bias)

    def forward(self, sequence: torch.Tensor, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sequence (L, B*nH*nW, titok width), feat (B, detail width, H, W) -> both updated."""
        b, _, h, w = feat.shape
        detail = map_to_windows(feat, self.window).transpose(0, 1)  # (window², N, C)
        sequence, update = over_window_groups(self._joint, sequence, detail)
        return sequence, feat + windows_to_map(update.transpose(0, 1), b, h // self.window, w // self.window)

    def _joint(self, sequence: torch.Tensor, detail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows' TiTok sequences and detail tokens (window², N, C) -> (new sequences, detail update)."""
        joint = torch.cat([self.titok_compress_proj(sequence + self.titok_pos_emb), detail + self.feat_pos_emb])
        joint = self.attn(joint)
        length = sequence.shape[0]
        return sequence + self.zero_add(self.titok_decompress_proj(joint[:length])), self.feat_add(joint[length:])


def _feat_block(width: int, window: int) -> nn.Sequential:
    """The detail trunk after each IT: Swin x2, then ConvNeXt x2."""
    return nn.Sequential(swin_stack(width, 2, window), ConvNeXtBlock(width), ConvNeXtBlock(width))


def _interleaved(config: DLFNetworkConfig) -> tuple[nn.ModuleDict, nn.ModuleDict]:
    t = config.titok
    inter = nn.ModuleDict({str(i): InteractiveTransform(t.width, t.sequence_length, config.detail_width,
                                                        config.window, config.interactive_blocks)
                           for i in config.interactive_layers})
    feat = nn.ModuleDict({str(i): _feat_block(config.detail_width, config.window) for i in config.interactive_layers})
    return inter, feat


def _run_layers(module, sequence: torch.Tensor, feat: torch.Tensor, record: dict | None):
    for i, layer in enumerate(module.transformer):
        sequence = over_window_groups(layer, sequence)
        key = str(i)
        if key in module.inter_blocks:
            sequence, feat = module.inter_blocks[key](sequence, feat)
            if record is not None and not record.get("first_interactive"):
                record["first_interactive"] = (sequence, feat)
            feat = module.feat_blocks[key](feat)
    return sequence, feat


class HybridEncoder(TiTokEncoder):
    """TiTok encoder with the detail trunk interleaved: image in [0, 1] -> (tokens, h)."""

    def __init__(self, config: DLFNetworkConfig):
        super().__init__(config.titok)
        d, t = config.detail_width, config.titok
        self.pix_emb_proj = nn.Conv2d(t.width, d, 1)
        self.feat_in = swin_stack(d, config.feat_in_depth, config.window)
        self.inter_blocks, self.feat_blocks = _interleaved(config)
        self.feat_out = nn.Sequential(
            swin_stack(d, config.feat_out_depth, config.window), nn.Conv2d(d, d, 2, stride=2), ChannelsLast(),
            nn.LayerNorm(d), nn.Linear(d, d), ChannelsFirst())

    def forward(self, x01: torch.Tensor, latent_tokens: torch.Tensor, record: dict | None = None):
        """(B, 3, H, W), H and W multiples of the window in pixels -> ((N, token_dim, 1, T), (B, d, H/32, W/32))."""
        return self.from_patches(self.patch_embed(x01), latent_tokens, record)

    def from_patches(self, patches: torch.Tensor, latent_tokens: torch.Tensor, record: dict | None = None):
        """:meth:`forward` from the patch embedding (B, width, H/16, W/16) on, so that inference can
        drop the image before the trunk runs."""
        feat = self.feat_in(self.pix_emb_proj(patches))
        sequence = self.embed(map_to_windows(patches, self.config.grid), latent_tokens)
        if record is not None:
            record.update(patch_embed=patches, feat_in=feat)
        sequence, feat = _run_layers(self, sequence, feat, record)
        return self.tokens(sequence), self.feat_out(feat)


class HybridDecoder(TiTokDecoder):
    """TiTok decoder with the detail trunk interleaved: (codes, h_hat) -> (semantic map, detail map) at 1/16."""

    def __init__(self, config: DLFNetworkConfig):
        super().__init__(config.titok)
        d = config.detail_width
        self.init_feat_up = nn.Sequential(nn.Conv2d(d, 4 * d, 1), nn.PixelShuffle(2),
                                          swin_stack(d, config.init_up_depth, config.window))
        self.inter_blocks, self.feat_blocks = _interleaved(config)

    def forward(self, codes: torch.Tensor, h_hat: torch.Tensor, record: dict | None = None):
        feat = self.init_feat_up(h_hat)
        if record is not None:
            record["init_feat_up"] = feat
        b, _, h, w = feat.shape
        grid = self.config.grid
        sequence, feat = _run_layers(self, self.embed(codes), feat, None)
        semantic = windows_to_map(self.features(sequence), b, h // grid, w // grid)
        return semantic, feat


class DetailBottleneck(nn.Module):
    """``quantize_feat``: 768 -> 64 analysis/synthesis with per-rate channel gains, and the learned
    constant prior with its four-step spatial context (SYSTEMS.md 5.4, 5.7)."""

    def __init__(self, config: DLFNetworkConfig):
        super().__init__()
        d, c, r = config.detail_width, config.detail_channels, config.num_rates
        self.enc_trans_0 = nn.Sequential(DepthConvBlock3(d), DepthConvBlock3(d))
        self.enc_q = nn.Parameter(torch.ones(r, d, 1, 1))
        self.enc_trans_1 = nn.Sequential(DepthConvBlock3(d), DepthConvBlock3(d, c))
        self.dec_trans_0 = nn.Sequential(DepthConvBlock3(c, d), DepthConvBlock3(d))
        self.dec_q = nn.Parameter(torch.ones(r, d, 1, 1))
        self.dec_trans_1 = nn.Sequential(DepthConvBlock3(d), DepthConvBlock3(d))
        self.factorized_prior_vec = nn.Parameter(torch.ones(r, c, 1, 1))
        self.y_prior_fusion = nn.Sequential(DepthConvBlock3(c, 2 * c), DepthConvBlock3(2 * c, 3 * c))
        self.y_spatial_prior_reduction = nn.Conv2d(3 * c, c, 1)
        for k in (1, 2, 3):
            setattr(self, f"y_spatial_prior_adaptor_{k}", DepthConvBlock3(2 * c, 2 * c))
        self.y_spatial_prior = nn.Sequential(*(DepthConvBlock3(2 * c) for _ in range(3)))

    @property
    def adaptors(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """The step 1, 2, 3 context adaptors."""
        return tuple(getattr(self, f"y_spatial_prior_adaptor_{step}") for step in (1, 2, 3))

    def analysis(self, h: torch.Tensor, enc_gain: torch.Tensor) -> torch.Tensor:
        return self.enc_trans_1(self.enc_trans_0(h) * enc_gain)

    def synthesis(self, y_hat: torch.Tensor, dec_gain: torch.Tensor) -> torch.Tensor:
        return self.dec_trans_1(self.dec_trans_0(y_hat) * dec_gain)

    def prior(self, prior_vector: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        """The (B, 3C, h, w) prior: (quant step, step-0 scales, step-0 means); constant but for borders."""
        return self.y_prior_fusion(prior_vector.expand(batch, -1, height, width))


class FeatMerge(nn.Module):
    """``prior_fusion``: semantic (TiTok width) + detail features -> logits over the VQGAN codebook."""

    def __init__(self, config: DLFNetworkConfig, codebook_size: int):
        super().__init__()
        t, d, m, w = config.titok.width, config.detail_width, config.merge_width, config.window
        self.titok_in = nn.Sequential(ChannelsLast(), nn.Sequential(*swin_blocks(t, config.merge_in_depth, w)))
        self.feat_in = nn.Sequential(ChannelsLast(), nn.Sequential(*swin_blocks(d, config.merge_in_depth, w)))
        self.merge = nn.Sequential(
            nn.Linear(t + d, config.merge_hidden), nn.LayerNorm(config.merge_hidden), nn.SiLU(),
            nn.Linear(config.merge_hidden, m), nn.Sequential(*swin_blocks(m, config.merge_depth, w)))
        self.ffn = nn.Sequential(nn.LayerNorm(m), nn.Linear(m, config.merge_hidden), nn.Tanh(),
                                 nn.Linear(config.merge_hidden, codebook_size))

    @torch.no_grad()
    def init_head_from_codebook(self, codebook: torch.Tensor) -> float:
        """Re-initialise the last layer so that its logits are -||u - e_k||^2 / tau, u a point in the
        latent space read from the first C hidden units (u_c = s_c * tanh unit c, s_c covering the
        codebook's range along channel c): the soft mix is then a kernel smoother over codewords near
        u, whose gradient moves u, where a random head's near-flat logits give every codeword ~1/K of
        a gradient. tau is a quarter of the median squared distance from a codeword to its nearest
        neighbour: with u at the true latent, GLC's default VQGAN decodes kodim23 at 23.5 dB for that
        tau (entropy 1.4 nats), 21.4 dB at the full median (too smooth) and 22.6 dB as tau -> 0 (the
        nearest codeword, where the gradient vanishes). Returns tau."""
        head = self.ffn[-1]
        codebook = codebook.detach().float()
        size, channels = codebook.shape
        if head.out_features != size or head.in_features < channels:
            raise ValueError(f"a head of {head.in_features}->{head.out_features} cannot hold a {size}x{channels} codebook")
        distances = torch.cdist(codebook, codebook).pow(2)
        distances.fill_diagonal_(float("inf"))
        tau = float(distances.min(dim=1).values.median().clamp_min(1e-6)) / 4
        scale = 1.2 * codebook.abs().amax(dim=0).clamp_min(1e-3)
        weight = torch.zeros_like(head.weight, dtype=torch.float32)
        weight[:, :channels] = 2.0 * codebook * scale / tau
        head.weight.copy_(weight)
        head.bias.copy_(-codebook.pow(2).sum(dim=1) / tau)
        return tau

    def forward(self, semantic: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        """(B, t, H, W), (B, d, H, W) -> (B, codebook size, H, W) logits."""
        merged = self.merge(torch.cat([self.titok_in(semantic), self.feat_in(detail)], dim=-1))
        return self.ffn(merged).permute(0, 3, 1, 2)


def soft_codebook_latent(logits: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """softmax over the codebook axis, then the probability-weighted mix of codewords: (B, C, H, W)."""
    return torch.einsum("bkhw,kc->bchw", F.softmax(logits, dim=1), codebook)


class HybridCodec(nn.Module):
    """``hybrid_codec``: the two branches and their quantisers."""

    def __init__(self, config: DLFNetworkConfig):
        super().__init__()
        t = config.titok
        self.encoder = HybridEncoder(config)
        self.decoder = HybridDecoder(config)
        self.quantize = CosineVectorQuantizer(t.codebook_size, t.token_dim)
        self.latent_tokens = nn.Parameter(torch.randn(t.num_tokens, t.width) * t.width**-0.5)
        self.quantize_feat = DetailBottleneck(config)

"""The two payloads of a PerCoV2 file: the caption section and the token section (docs/bitstream.md,
"PerCoV2 files").

The token section starts with one descriptor byte, so that a file says how its tokens are coded and
``latentcodec info`` can read the token grid and the fixed-length cost without the model's weights:

    bits 0-1  the grid g (0: 8, 1: 16, 2: 32 tokens per side at 512x512)
    bit  2    the codebook size K (0: 256, 1: 1024)
    bit  3    the coding: 0 fixed length (every token uniform over K, in hierarchical order);
              1 the model's masked-token prior, pass by pass under its schedule
    bits 4-7  hybrid mode: k, the number of schedule passes transmitted (1-15); 0 = every pass

then one range-coded stream. Under hybrid mode the decoder fills the untransmitted passes with the
prior's most probable codes (:meth:`~latentcodec.entropy.token_prior.IntegerTokenPrior.code`).
"""

from __future__ import annotations

import math
import zlib
from typing import NamedTuple

import torch

from latentcodec.bitstream.container import TokenSectionInfo  # noqa: F401  (re-exported)
from latentcodec.entropy.caption_coder import decode_text, encode_text
from latentcodec.entropy.coder import EntropyDecoder, EntropyEncoder
from latentcodec.entropy.token_schedules import coding_order, hierarchical
from latentcodec.errors import BitstreamError, InputError
from latentcodec.models.percov2_networks import CODEBOOK_SIZES, GRIDS

MAX_CAPTION_BYTES = 1024  # UTF-8 bytes; captions are ~32 tokens, so this only bounds a corrupt section
CAPTION_LEVEL = 9  # the baseline: zlib level 9, PerCo's caption coder (SYSTEMS.md 6.3), as raw DEFLATE
MAX_TRANSMITTED_PASSES = 15  # the 4 bits of the descriptor; 0 there means every pass
REFERENCE_SIDE = 512  # g counts tokens per side of a 512x512 image: P = 512 / g pixels per token


# -- captions ------------------------------------------------------------------------------------
def normalise_caption(caption: str | None) -> str:
    """Whitespace collapsed and stripped; None is no caption."""
    if caption is None:
        return ""
    if not isinstance(caption, str):
        raise InputError(f"a caption must be text, got {type(caption).__name__}")
    caption = " ".join(caption.split())
    if len(caption.encode("utf-8")) > MAX_CAPTION_BYTES:
        raise InputError(f"the caption is longer than {MAX_CAPTION_BYTES} UTF-8 bytes")
    return caption


def encode_caption(caption: str) -> bytes:
    """The caption range-coded under the static English word model of :mod:`latentcodec.entropy.caption_coder`
    (an empty caption: an empty section)."""
    return encode_text(caption)


def decode_caption(section: bytes) -> str | None:
    if not section:
        return None
    try:
        caption = decode_text(section, MAX_CAPTION_BYTES)
    except BitstreamError as exc:
        message = str(exc)
        raise BitstreamError(message if message.startswith("corrupt caption section") else
                             f"corrupt caption section ({message})") from None
    if not caption or caption != " ".join(caption.split()):
        raise BitstreamError("corrupt caption section: not a normalised caption")
    return caption


def deflate_caption(caption: str) -> bytes:
    """The baseline coder: raw DEFLATE (zlib level 9, PerCo's caption coder, without the zlib wrapper's
    2-byte header and 4-byte Adler-32). Not used in files; for comparisons."""
    compressor = zlib.compressobj(CAPTION_LEVEL, zlib.DEFLATED, -15, 9)
    return compressor.compress(caption.encode("utf-8")) + compressor.flush()


# -- tokens ----------------------------------------------------------------------------------------
class TokenDescriptor(NamedTuple):
    grid: int  # g, tokens per side at 512x512
    codebook_size: int  # K
    prior: bool  # coded under the masked-token prior (else fixed length)
    transmitted: int  # hybrid mode: passes sent; 0 = all

    def to_byte(self) -> int:
        return (GRIDS.index(self.grid) | CODEBOOK_SIZES.index(self.codebook_size) << 2 | int(self.prior) << 3
                | self.transmitted << 4)

    @classmethod
    def from_byte(cls, value: int) -> "TokenDescriptor":
        grid_index = value & 3
        if grid_index >= len(GRIDS):
            raise BitstreamError(f"corrupt token section: grid code {grid_index} is not defined")
        prior, transmitted = bool(value >> 3 & 1), value >> 4
        if transmitted and not prior:
            raise BitstreamError("corrupt token section: hybrid mode needs the prior's coding")
        return cls(GRIDS[grid_index], CODEBOOK_SIZES[value >> 2 & 1], prior, transmitted)

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        pixels = REFERENCE_SIDE // self.grid
        return math.ceil(height / pixels), math.ceil(width / pixels)


def split_token_section(section: bytes) -> tuple[TokenDescriptor, bytes]:
    if not section:
        raise BitstreamError("corrupt token section: it is empty (no descriptor byte)")
    return TokenDescriptor.from_byte(section[0]), section[1:]


def encode_uniform_tokens(indices: torch.Tensor, codebook_size: int) -> bytes:
    """(gh, gw) token map -> one range-coded stream: hierarchical order, log2 K bits each."""
    rows, cols = indices.shape
    encoder = EntropyEncoder()
    encoder.encode_uniform(indices.flatten().cpu()[coding_order(hierarchical(rows, cols))], codebook_size)
    return encoder.finish()


def decode_uniform_tokens(stream: bytes, rows: int, cols: int, codebook_size: int) -> torch.Tensor:
    decoder = EntropyDecoder(stream)
    ordered = decoder.decode_uniform(rows * cols, codebook_size)
    decoder.finish()  # BitstreamError unless the stream is exactly the canonical stream of these tokens
    indices = torch.empty(rows * cols, dtype=torch.int64)
    indices[coding_order(hierarchical(rows, cols))] = ordered
    return indices.view(rows, cols)


def encode_prior_tokens(prior, indices: torch.Tensor, transmitted: int | None) -> tuple[bytes, torch.Tensor]:
    """(gh, gw) token map -> (the stream under the integer prior ``prior``, the decoder's map: equal to
    ``indices`` unless hybrid mode filled passes from ``transmitted`` on)."""
    rows, cols = indices.shape
    encoder = EntropyEncoder()
    tokens = indices.reshape(1, -1).to(torch.int64).to(prior.token_embedding.device)
    known = prior.code(None, None, tokens, encoder, decode=False, grid=(rows, cols), transmitted=transmitted)
    return encoder.finish(), known.view(rows, cols).cpu()


def decode_prior_tokens(prior, stream: bytes, rows: int, cols: int, transmitted: int | None) -> torch.Tensor:
    decoder = EntropyDecoder(stream)
    known = prior.code(None, None, None, decoder, decode=True, grid=(rows, cols), transmitted=transmitted)
    decoder.finish()
    return known.view(rows, cols).cpu()

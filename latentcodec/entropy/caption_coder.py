"""Lossless coding of short English text (PerCoV2's captions, SYSTEMS.md 6.6.6) under a static model.

The text is cut into pieces: maximal runs of lower-case letters and apostrophes, and single other
characters. Each piece is range-coded as one symbol of a 8 192-word table built from wordfreq's English
frequencies (``data/english_words.tsv``, shipped and frozen; :mod:`caption_vocabulary` rebuilds it)
plus the space and common punctuation, under one of three contexts: after a space (or at the start),
after a word, after any other character. A word outside the table is escaped and spelled letter by
letter under letter frequencies taken from the same table; any other character is escaped and sent as
its UTF-8 bytes. A final END symbol closes the text. Every probability is an integer computed from the
table with integer arithmetic, so every machine codes a caption to the same bytes.

Against zlib level 9 (PerCo's caption coder), which has no prior knowledge of English and spends
bytes on its own block headers, a 10-word caption costs a few bytes instead of tens
(docs/results/percov2_captions.md).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from latentcodec.entropy.caption_vocabulary import TABLE, WORD
from latentcodec.entropy.coder import EntropyDecoder, EntropyEncoder
from latentcodec.errors import BitstreamError

END, ESCAPE_WORD, ESCAPE_CHARACTER, SPACE = 0, 1, 2, 3
PUNCTUATION = (",", ".", "-", ":", ";", "!", "?", "(", ")", "/", "&", '"')
PUNCTUATION_WEIGHTS = (40, 25, 15, 2, 2, 2, 2, 2, 2, 2, 2, 2)
FIRST_PUNCTUATION = 4
FIRST_WORD = FIRST_PUNCTUATION + len(PUNCTUATION)
LETTERS = "abcdefghijklmnopqrstuvwxyz'"  # the escaped-word alphabet after END_OF_WORD = 0
PIECE = re.compile(r"[a-z']+|.", re.S)

AFTER_SPACE, AFTER_WORD, AFTER_OTHER = 0, 1, 2
# Relative mass of (END, escaped word, escaped character, space, punctuation, table words) per context:
# hand-set from how captions are written (a space after most words, a word after most spaces).
CLASS_WEIGHTS = {
    AFTER_SPACE: (1, 2500, 2500, 16, 1500, 59000),
    AFTER_WORD: (6000, 16, 1500, 50000, 8000, 16),
    AFTER_OTHER: (8000, 2000, 3000, 40000, 2000, 10000),
}
MASS = 1 << 40  # total integer frequency of a context's table (exact in float64)


class CaptionModel(NamedTuple):
    index: dict[str, int]  # piece -> symbol
    pieces: tuple[str, ...]  # symbol -> piece ("" for END and the escapes)
    contexts: torch.Tensor  # (3, symbols) float64 integer frequencies
    letters: torch.Tensor  # (1, 28) END_OF_WORD, then LETTERS
    bytes: torch.Tensor  # (1, 256) an escaped character's UTF-8 bytes


@lru_cache(maxsize=1)
def caption_model() -> CaptionModel:
    words, counts = [], []
    for line in TABLE.read_text().splitlines():
        word, count = line.split("\t")
        words.append(word)
        counts.append(int(count))
    pieces = ("", "", "", " ") + PUNCTUATION + tuple(words)
    total_count = sum(counts)
    contexts = []
    for context in (AFTER_SPACE, AFTER_WORD, AFTER_OTHER):
        weights = CLASS_WEIGHTS[context]
        unit = MASS // sum(weights)
        row = [weights[0] * unit, weights[1] * unit, weights[2] * unit, weights[3] * unit]
        punctuation_mass = weights[4] * unit
        row += [max(1, punctuation_mass * w // sum(PUNCTUATION_WEIGHTS)) for w in PUNCTUATION_WEIGHTS]
        word_mass = weights[5] * unit
        row += [max(1, word_mass * c // total_count) for c in counts]
        contexts.append(row)
    letter_counts = [0] * len(LETTERS)
    for word, count in zip(words, counts):
        for character in word:
            letter_counts[LETTERS.index(character)] += count
    letters = [total_count] + [max(1, c) for c in letter_counts]  # END_OF_WORD once per word
    byte_weights = [1] * 256
    for value in range(0x20, 0x7F):
        byte_weights[value] = 64 if chr(value).isalnum() else 16
    for value in range(0x80, 0x100):
        byte_weights[value] = 4
    as_tensor = lambda rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731
    return CaptionModel({piece: i for i, piece in enumerate(pieces) if i >= SPACE}, pieces, as_tensor(contexts),
                        as_tensor([letters]), as_tensor([byte_weights]))


def _next_context(symbol: int, piece: str) -> int:
    if symbol == ESCAPE_WORD or symbol >= FIRST_WORD:
        return AFTER_WORD
    return AFTER_SPACE if piece == " " else AFTER_OTHER


def encode_text(text: str) -> bytes:
    """Any text -> the range-coded stream (the empty text is b"")."""
    if not text:
        return b""
    model = caption_model()
    encoder = EntropyEncoder()

    def put(symbol: int, row: torch.Tensor) -> None:
        encoder.encode_categorical(torch.tensor([symbol]), row)

    context = AFTER_SPACE
    for piece in PIECE.findall(text):
        symbol = model.index.get(piece)
        if symbol is not None:
            put(symbol, model.contexts[context : context + 1])
        elif WORD.fullmatch(piece):
            symbol = ESCAPE_WORD
            put(symbol, model.contexts[context : context + 1])
            for character in piece:
                put(1 + LETTERS.index(character), model.letters)
            put(0, model.letters)
        else:
            symbol = ESCAPE_CHARACTER
            put(symbol, model.contexts[context : context + 1])
            for value in piece.encode("utf-8"):
                put(value, model.bytes)
        context = _next_context(symbol, piece)
    put(END, model.contexts[context : context + 1])
    return encoder.finish()


def _utf8_length(lead: int) -> int:
    for length, (low, high) in enumerate(((0x00, 0x7F), (0xC0, 0xDF), (0xE0, 0xEF), (0xF0, 0xF7)), start=1):
        if low <= lead <= high:
            return length
    raise BitstreamError(f"corrupt caption section: byte {lead:#04x} cannot start a UTF-8 character")


def decode_text(data: bytes, max_bytes: int) -> str:
    """The stream of :func:`encode_text` -> the text; BitstreamError when it is not such a stream or the
    text would exceed ``max_bytes`` UTF-8 bytes."""
    if not data:
        return ""
    model = caption_model()
    decoder = EntropyDecoder(data)

    def get(row: torch.Tensor) -> int:
        return int(decoder.decode_categorical(row)[0])

    parts: list[str] = []
    size = 0
    context = AFTER_SPACE
    while True:
        symbol = get(model.contexts[context : context + 1])
        if symbol == END:
            break
        if symbol == ESCAPE_WORD:
            letters = []
            while (letter := get(model.letters)) != 0:
                letters.append(LETTERS[letter - 1])
                if size + len(letters) > max_bytes:
                    break
            piece = "".join(letters)
        elif symbol == ESCAPE_CHARACTER:
            lead = get(model.bytes)
            raw = bytes([lead] + [get(model.bytes) for _ in range(_utf8_length(lead) - 1)])
            try:
                piece = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BitstreamError("corrupt caption section: an escaped character is not UTF-8") from None
        else:
            piece = model.pieces[symbol]
        parts.append(piece)
        size += len(piece.encode("utf-8"))
        if size > max_bytes:
            raise BitstreamError(f"corrupt caption section: the caption exceeds {max_bytes} bytes")
        context = _next_context(symbol, piece)
    decoder.finish()  # BitstreamError unless the data is exactly the stream of what was decoded
    return "".join(parts)


def information_bits(text: str) -> float:
    """The exact information content of ``text`` under the model (what encode_text approaches)."""
    model = caption_model()
    bits = 0.0

    def cost(symbol: int, row: torch.Tensor) -> float:
        return -float(np.log2(row[0, symbol].item() / row[0].sum().item()))

    context = AFTER_SPACE
    for piece in PIECE.findall(text):
        symbol = model.index.get(piece)
        row = model.contexts[context : context + 1]
        if symbol is not None:
            bits += cost(symbol, row)
        elif WORD.fullmatch(piece):
            symbol = ESCAPE_WORD
            bits += cost(symbol, row) + sum(cost(1 + LETTERS.index(c), model.letters) for c in piece)
            bits += cost(0, model.letters)
        else:
            symbol = ESCAPE_CHARACTER
            bits += cost(symbol, row) + sum(cost(v, model.bytes) for v in piece.encode("utf-8"))
        context = _next_context(symbol, piece)
    return bits + cost(END, model.contexts[context : context + 1])

"""The caption coder: a static English word model with escapes (SYSTEMS.md 6.6.6)."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import pytest

from latentcodec.entropy.caption_coder import decode_text, encode_text, information_bits
from latentcodec.entropy.caption_vocabulary import TABLE
from latentcodec.errors import BitstreamError

CAPTIONS = Path(__file__).resolve().parents[1] / "data" / "captions" / "kodak_captions.tsv"
# The word table is part of the file format: a changed table would misread every captioned file.
TABLE_SHA256 = "26dba207b7e14aec51333b8e835edfa0fd779f14e2c36408a1adb0bcc915fa0f"


def kodak_captions() -> list[str]:
    return [line.split("\t")[1] for line in CAPTIONS.read_text().splitlines()]


def test_the_shipped_word_table_is_frozen():
    assert hashlib.sha256(TABLE.read_bytes()).hexdigest() == TABLE_SHA256


def test_the_kodak_captions_round_trip_and_beat_zlib():
    captions = kodak_captions()
    assert len(captions) == 24
    for caption in captions:
        coded = encode_text(caption)
        assert decode_text(coded, 1024) == caption
        assert len(coded) < len(zlib.compress(caption.encode(), 9)) / 2
        # The range coder's stream is its information content, plus at most a few bytes of termination.
        assert 8 * len(coded) <= information_bits(caption) + 32


@pytest.mark.parametrize("text", ["Kodak 1991: a CAFÉ, naïve ☃ 東京!", "x", "qwzrtx zzyzx", "a\tb\nc", "'''", " "])
def test_any_text_round_trips_through_the_escapes(text):
    assert decode_text(encode_text(text), 1024) == text


def test_common_words_are_cheaper_than_rare_ones_and_escapes():
    assert information_bits("the dog") < information_bits("the wool") < information_bits("the wuzzle")
    assert encode_text("") == b"" and decode_text(b"", 10) == ""


def test_limits_and_damage_give_bitstream_errors():
    with pytest.raises(BitstreamError, match="exceeds 20 bytes"):
        decode_text(encode_text("a house with painted walls and flower boxes"), 20)
    with pytest.raises(BitstreamError):
        decode_text(encode_text("a red barn") + b"\x01", 1024)

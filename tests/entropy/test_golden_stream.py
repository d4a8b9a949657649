"""Bitstream regression (SYSTEMS.md 8.2): a fixed input must keep producing the same bytes.

Inputs come from integer arithmetic only (no RNG, no libm), so the digest depends on nothing but the
coder: scale-table values, Gaussian tables, escape code, categorical quantisation and termination.
A change here breaks every file written before; update the digest only for a deliberate format change.
"""

import hashlib

import numpy as np
import torch

from latentcodec.entropy import DEFAULT_SCALE_TABLE, EntropyDecoder, EntropyEncoder

GOLDEN_SHA256 = "fbd88eafc5f3423c918e65393ea31a9bdb4413b4442c07f1c2c91adddec1ac28"
GOLDEN_LENGTH = 5069


def golden_calls():
    i = np.arange(3000, dtype=np.int64)
    scale_index = torch.from_numpy((i * 37) % 256)
    symbols = (i * 7919) % 41 - 20
    symbols[::97] = 10**6
    symbols[5::131] = -(2**40)
    symbols = torch.from_numpy(symbols)
    sigma = torch.from_numpy(((i % 50) + 1) / 4.0).float()  # goes through ScaleTable.index
    j = np.arange(64)
    probabilities = torch.from_numpy(((i[:200, None] * 13 + j[None, :] * 7) % 17 + 1) / 17.0).float()
    probabilities[::7, ::3] = 0.0
    tokens = torch.from_numpy((i[:200] * 5) % 64)
    uniform = torch.from_numpy((i[:500] * 11) % 1000)
    return scale_index, symbols, sigma, probabilities, tokens, uniform


def encode_golden() -> bytes:
    scale_index, symbols, sigma, probabilities, tokens, uniform = golden_calls()
    encoder = EntropyEncoder()
    encoder.encode_gaussian(symbols[:1000], scale_index[:1000])
    encoder.encode_categorical(tokens, probabilities)
    encoder.encode_gaussian(symbols[1000:].reshape(4, 500), DEFAULT_SCALE_TABLE.index(sigma[1000:]).reshape(4, 500))
    encoder.encode_uniform(uniform, 1000)
    return encoder.finish()


def test_golden_stream_bytes_are_stable():
    data = encode_golden()
    assert len(data) == GOLDEN_LENGTH
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SHA256


def test_golden_stream_decodes():
    scale_index, symbols, sigma, probabilities, tokens, uniform = golden_calls()
    decoder = EntropyDecoder(encode_golden())
    assert torch.equal(decoder.decode_gaussian(scale_index[:1000]), symbols[:1000])
    assert torch.equal(decoder.decode_categorical(probabilities), tokens)
    second = decoder.decode_gaussian(DEFAULT_SCALE_TABLE.index(sigma[1000:]).reshape(4, 500))
    assert torch.equal(second, symbols[1000:].reshape(4, 500))
    assert torch.equal(decoder.decode_uniform(500, 1000), uniform)
    decoder.finish()

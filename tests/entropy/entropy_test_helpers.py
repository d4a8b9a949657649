"""Input generators and a round-trip driver shared by the entropy tests."""

import numpy as np
import torch

from latentcodec.entropy import DEFAULT_SCALE_TABLE, EntropyDecoder, EntropyEncoder, gaussian_tables

EDGE_SCALES = [0.0, -1.0, float("nan"), 1e-9, 0.11, 64.0, 1e6, float("inf")]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def edge_symbols(scale_index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Residuals mixing Gaussian draws with the support edges (+-R, +-(R+1)) and huge values."""
    tables = gaussian_tables(DEFAULT_SCALE_TABLE)
    half_width = tables.half_widths[scale_index]
    sigma = DEFAULT_SCALE_TABLE.values()[scale_index]
    choices = np.stack(
        [
            np.rint(rng.normal(0.0, sigma)).astype(np.int64),
            np.zeros_like(half_width),
            np.ones_like(half_width),
            -np.ones_like(half_width),
            half_width,
            -half_width,
            half_width + 1,
            -half_width - 1,
            np.full_like(half_width, 2**20),
            np.full_like(half_width, -(2**20)),
            np.full_like(half_width, 10**6),
            np.full_like(half_width, -(10**6)),
            np.full_like(half_width, INT64_MAX),
            np.full_like(half_width, INT64_MIN),
        ]
    )
    pick = rng.integers(0, len(choices), size=scale_index.shape)
    # Mostly ordinary draws, so that streams look like real latents with occasional extremes.
    pick = np.where(rng.random(scale_index.shape) < 0.6, 0, pick)
    return np.asarray(np.take_along_axis(choices, pick[None], axis=0)[0])


def random_scales(shape, rng: np.random.Generator) -> torch.Tensor:
    sigma = np.exp(rng.uniform(np.log(0.05), np.log(100.0), size=shape))
    edges = rng.choice(np.array(EDGE_SCALES), size=shape)
    return torch.from_numpy(np.where(rng.random(shape) < 0.2, edges, sigma))


def round_trip(operations, verify: bool = True):
    """Encode ("g"|"c"|"u", args) operations into one stream, decode them back, return both."""
    encoder = EntropyEncoder()
    for kind, args in operations:
        if kind == "g":
            encoder.encode_gaussian(args["symbols"], args["scale_index"])
        elif kind == "c":
            encoder.encode_categorical(args["indices"], args["probabilities"])
        else:
            encoder.encode_uniform(args["indices"], args["num_symbols"])
    data = encoder.finish()
    decoder = EntropyDecoder(data, verify=verify)
    decoded = []
    for kind, args in operations:
        if kind == "g":
            decoded.append(decoder.decode_gaussian(args["scale_index"]))
        elif kind == "c":
            decoded.append(decoder.decode_categorical(args["probabilities"]))
        else:
            decoded.append(decoder.decode_uniform(args["indices"].numel(), args["num_symbols"]))
    decoder.finish()
    return data, decoded

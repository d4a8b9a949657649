"""Throughput and size overhead of latentcodec.entropy against naive constriction and the ideal.

    python benchmarks/bench_entropy.py [--repeats 3]

Cases (single thread):
  * 400k Gaussian residuals in 4 calls, GLC-like (768x512 image: most scales near the 0.11 floor);
  * 1024 tokens of a 16384-way categorical (32x32 map, confident and diffuse predictions);
  * small streams (DLF's 32 semantic tokens of 4096, 100 Gaussian residuals) where the termination
    bytes matter most.
"overhead" = coded bits - information content under the same quantised model ("ideal");
the naive baseline is constriction with its own seal, words written as bytes, QuantizedGaussian with
per-symbol sigma for residuals; "estimate" is GLC's float rate estimate (gaussian_residual_bits).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, NamedTuple

import constriction
import numpy as np
import torch

from latentcodec.entropy import (
    DEFAULT_SCALE_TABLE,
    EntropyDecoder,
    EntropyEncoder,
    gaussian_code_bits,
    gaussian_residual_bits,
    gaussian_tables,
)
from latentcodec.entropy.coder import sanitize_probabilities

_queue = constriction.stream.queue
_model = constriction.stream.model


class Timing(NamedTuple):
    seconds: float
    result: object


def best_of(repeats: int, function: Callable[[], object]) -> Timing:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return Timing(best, result)


def glc_like_residuals(count: int, heavy_tails: bool, rng: np.random.Generator):
    """Most scales below the 0.11 table floor, like a low-rate GLC latent; Gaussian or Student-t(5) draws."""
    sigma = np.where(rng.random(count) < 0.7, rng.uniform(0.01, 0.15, count), np.exp(rng.uniform(-2.0, 3.5, count)))
    noise = rng.standard_t(5, count) if heavy_tails else rng.standard_normal(count)
    return torch.from_numpy(np.rint(noise * sigma).astype(np.int64)), torch.from_numpy(sigma).float()


def bench_gaussian(repeats: int, heavy_tails: bool) -> None:
    rng = np.random.default_rng(0)
    count, calls = 400_000, 4
    symbols, sigma = glc_like_residuals(count, heavy_tails, rng)
    scale_index = DEFAULT_SCALE_TABLE.index(sigma)
    parts = list(zip(symbols.chunk(calls), scale_index.chunk(calls)))

    def encode() -> bytes:
        encoder = EntropyEncoder()
        for part_symbols, part_index in parts:
            encoder.encode_gaussian(part_symbols, part_index)
        return encoder.finish()

    def decode(data: bytes, verify: bool):
        decoder = EntropyDecoder(data, verify=verify)
        out = [decoder.decode_gaussian(part_index) for _, part_index in parts]
        decoder.finish()
        return out

    encoded = best_of(repeats, encode)
    data = encoded.result
    decoded = best_of(repeats, lambda: decode(data, False))
    verified = best_of(repeats, lambda: decode(data, True))
    assert torch.equal(torch.cat(decoded.result), symbols)
    ideal = gaussian_code_bits(symbols, scale_index)
    estimate = float(gaussian_residual_bits(symbols.float(), sigma).sum())
    escapes = int((symbols.abs().numpy() > gaussian_tables(DEFAULT_SCALE_TABLE).half_widths[scale_index.numpy()]).sum())

    # Naive: per-symbol table sigma through constriction's QuantizedGaussian, default seal.
    table_sigma = DEFAULT_SCALE_TABLE.values()[scale_index.numpy()]
    bound = 400
    clipped = np.clip(symbols.numpy(), -bound, bound).astype(np.int32)
    means = np.zeros(count)

    def naive_encode():
        encoder = _queue.RangeEncoder()
        family = _model.QuantizedGaussian(-bound, bound)
        for part in np.array_split(np.arange(count), calls):
            encoder.encode(clipped[part], family, means[part], table_sigma[part])
        return encoder.get_compressed()

    def naive_decode(words):
        decoder = _queue.RangeDecoder(words)
        family = _model.QuantizedGaussian(-bound, bound)
        return [decoder.decode(family, means[part], table_sigma[part]) for part in np.array_split(np.arange(count), calls)]

    naive = best_of(repeats, naive_encode)
    naive_dec = best_of(repeats, lambda: naive_decode(naive.result))
    naive_bytes = len(naive.result.astype(">u4").tobytes())

    label = "Student-t(5) draws" if heavy_tails else "Gaussian draws"
    print(f"Gaussian residuals ({label}): {count} symbols in {calls} calls, {escapes} escapes")
    print(f"  ours : {len(data)} B | encode {count / encoded.seconds / 1e6:.2f} Msym/s ({encoded.seconds * 1e3:.0f} ms)"
          f" | decode {count / decoded.seconds / 1e6:.2f} Msym/s ({decoded.seconds * 1e3:.0f} ms),"
          f" with verify {verified.seconds * 1e3:.0f} ms")
    print(f"         ideal {ideal / 8:.1f} B under our integer tables -> overhead {8 * len(data) - ideal:.1f} bits"
          f" ({(8 * len(data) - ideal) / count:.2e} bit/symbol)")
    print(f"         GLC float estimate {estimate / 8:.1f} B (sigma unfloored, not rounded to the table)")
    print(f"  naive: {naive_bytes} B (clipped to +-{bound}: lossy if beyond) | encode {count / naive.seconds / 1e6:.2f} Msym/s"
          f" | decode {count / naive_dec.seconds / 1e6:.2f} Msym/s")


def peaked_probabilities(count: int, categories: int, confidence: float, rng: np.random.Generator):
    logits = rng.normal(0.0, 2.0, (count, categories)).astype(np.float32)
    logits[np.arange(count), rng.integers(0, categories, count)] += confidence
    probabilities = torch.softmax(torch.from_numpy(logits), dim=1)
    indices = torch.multinomial(probabilities, 1, generator=torch.Generator().manual_seed(0))[:, 0]
    return indices, probabilities


def bench_categorical(repeats: int, count: int, categories: int, confidence: float, label: str) -> None:
    rng = np.random.default_rng(1)
    indices, probabilities = peaked_probabilities(count, categories, confidence, rng)

    def encode() -> bytes:
        encoder = EntropyEncoder()
        encoder.encode_categorical(indices, probabilities)
        return encoder.finish()

    def decode(data: bytes):
        decoder = EntropyDecoder(data, verify=False)
        out = decoder.decode_categorical(probabilities)
        decoder.finish()
        return out

    encoded = best_of(repeats, encode)
    decoded = best_of(repeats, lambda: decode(encoded.result))
    assert torch.equal(decoded.result, indices)
    ideal = float(-torch.log2(probabilities.double()[torch.arange(count), indices]).sum())

    probs64 = sanitize_probabilities(probabilities.numpy())

    def naive_encode():
        encoder = _queue.RangeEncoder()
        encoder.encode(indices.numpy().astype(np.int32), _model.Categorical(perfect=False), probs64)
        return encoder.get_compressed()

    naive = best_of(repeats, naive_encode)
    data = encoded.result
    print(f"Categorical K={categories}, {count} tokens ({label}):")
    print(f"  ours : {len(data)} B | encode {count / encoded.seconds / 1e3:.1f} ktok/s | decode {count / decoded.seconds / 1e3:.1f} ktok/s"
          f" | ideal (float model) {ideal / 8:.1f} B -> overhead {8 * len(data) - ideal:+.1f} bits"
          f" ({(8 * len(data) - ideal) / count:+.4f} bit/token, incl. 24-bit quantisation)")
    print(f"  naive constriction seal: {len(naive.result.astype('>u4').tobytes())} B"
          f" | fixed-length: {count * int(np.ceil(np.log2(categories))) // 8} B")


def bench_small_streams(trials: int) -> None:
    rng = np.random.default_rng(2)
    ours_overhead, naive_overhead = [], []
    for _ in range(trials):
        indices, probabilities = peaked_probabilities(32, 4096, 6.0, rng)
        encoder = EntropyEncoder()
        encoder.encode_categorical(indices, probabilities)
        data = encoder.finish()
        naive = _queue.RangeEncoder()
        naive.encode(indices.numpy().astype(np.int32), _model.Categorical(perfect=False), sanitize_probabilities(probabilities.numpy()))
        # Both use the same quantised model, so the size difference is the termination alone.
        ours_overhead.append(len(data))
        naive_overhead.append(len(naive.get_compressed().astype(">u4").tobytes().rstrip(b"\0")))
    print(f"DLF-like 32 tokens of 4096, {trials} streams: ours {np.mean(ours_overhead):.2f} B,"
          f" constriction seal (trailing zeros stripped) {np.mean(naive_overhead):.2f} B")
    overheads = []
    for _ in range(trials):
        scale_index = rng.integers(0, 256, 100)
        symbols = np.rint(rng.normal(0.0, DEFAULT_SCALE_TABLE.values()[scale_index])).astype(np.int64)
        encoder = EntropyEncoder()
        encoder.encode_gaussian(torch.from_numpy(symbols), torch.from_numpy(scale_index))
        overheads.append(8 * len(encoder.finish()) - gaussian_code_bits(symbols, scale_index))
    print(f"100 Gaussian residuals, {trials} streams: overhead over the information content"
          f" mean {np.mean(overheads):.2f} bits, max {np.max(overheads):.2f} bits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench_gaussian(args.repeats, heavy_tails=False)
    bench_gaussian(args.repeats, heavy_tails=True)
    bench_categorical(args.repeats, 1024, 16384, 12.0, "confident")
    bench_categorical(args.repeats, 1024, 16384, 3.0, "diffuse")
    bench_small_streams(200)


if __name__ == "__main__":
    main()

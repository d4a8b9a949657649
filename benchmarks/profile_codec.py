"""Where the time of one GLC-image compress and decompress goes, stage by stage.

Times each stage of the codec with wall-clock hooks (VQGAN encoder, latent transforms, the integer
prior and context nets, entropy coding, the integer ``dec``, the VQGAN generator); whatever is left
is the masked-step loop's own tensor bookkeeping and Python. With ``--ops`` it also prints
torch.profiler's operator table of each direction (self CPU time), which splits the VQGAN's time
between convolutions, GroupNorm, SiLU and copies.

    python benchmarks/profile_codec.py --weights official-deterministic --image kodim23 --threads 2 --ops

Each stage is timed on the median of ``--repeats`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_codec import DEFAULT_SHARED, load_model  # noqa: E402

from latentcodec.data.images import load_rgb, pil_to_tensor  # noqa: E402
from latentcodec.entropy.coder import EntropyDecoder, EntropyEncoder  # noqa: E402


class StageClock:
    """Wall time per named stage, accumulated by forward hooks and wrapped functions. Stages must
    not nest (each hooked module is timed once, at its outermost call)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._started: dict[int, float] = {}

    def hook_module(self, name: str, module: torch.nn.Module) -> None:
        def before(mod, _inputs):
            self._started[id(mod)] = time.perf_counter()

        def after(mod, _inputs, _output):
            self.seconds[name] += time.perf_counter() - self._started.pop(id(mod))

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)

    def wrap(self, name: str, owner, attribute: str) -> None:
        function = getattr(owner, attribute)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        setattr(owner, attribute, timed)

    def take(self) -> dict[str, float]:
        taken, self.seconds = dict(self.seconds), defaultdict(float)
        return taken


def instrument(model) -> StageClock:
    clock = StageClock()
    clock.hook_module("VQGAN encoder", model.vqgan.encoder)
    clock.hook_module("VQGAN generator", model.vqgan.generator)
    for name in ("enc", "hyper_enc", "z_vq"):
        clock.hook_module("enc, hyper_enc, z VQ (float)", getattr(model, name))
    nets = model.integer_decoder_side()
    clock.hook_module("integer prior (hyper_dec, fusion)", nets.hyper_dec)
    clock.hook_module("integer prior (hyper_dec, fusion)", nets.y_prior_fusion)
    for module in (nets.y_spatial_prior_reduction, *nets.adaptors, nets.y_spatial_prior):
        clock.hook_module("integer context nets", module)
    clock.hook_module("integer dec", nets.dec)
    clock.wrap("entropy coding", EntropyEncoder, "encode_gaussian")
    clock.wrap("entropy coding", EntropyEncoder, "finish")
    clock.wrap("entropy coding", EntropyDecoder, "decode_gaussian")
    return clock


def profile_direction(clock: StageClock, run, repeats: int) -> tuple[dict[str, float], float]:
    run()  # warm-up: integer twins, oneDNN primitives
    clock.take()
    per_run, totals = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        totals.append(time.perf_counter() - start)
        per_run.append(clock.take())
    stages = {name: statistics.median(r.get(name, 0.0) for r in per_run) for name in per_run[0]}
    total = statistics.median(totals)
    stages["other (masked-step loop, padding, file, Python)"] = max(0.0, total - sum(stages.values()))
    return stages, total


def print_table(direction: str, stages: dict[str, float], total: float) -> None:
    print(f"\n{direction}: {total:.2f} s (median)")
    for name, seconds in sorted(stages.items(), key=lambda item: -item[1]):
        print(f"  {name:<50}{seconds:>8.2f} s{100 * seconds / total:>7.1f} %")


def operator_table(run, rows: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, image and timing options of a one-image GLC-image measurement (also speed_floor.py)."""
    parser.add_argument("--weights", default="official-deterministic")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--data", type=Path, default=DEFAULT_SHARED / "data" / "kodak")
    parser.add_argument("--image", default="kodim23")
    parser.add_argument("--quality", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="arithmetic of the VQGAN, as the CLI's --precision (auto: bf16 on CPUs with AMX)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--ops", action="store_true", help="also print torch.profiler's operator tables")
    parser.add_argument("--allocator", choices=("retain", "default"), default="retain",
                        help="retain: keep freed memory for reuse, as the CLI does; default: glibc's own behaviour")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.allocator == "retain":
        from latentcodec.runtime import retain_freed_memory

        retain_freed_memory()
    model, source = load_model(args.weights, args.shared)
    model.set_precision(args.precision)
    source += f", {str(model.compute_dtype)[6:]} VQGAN"
    x = pil_to_tensor(load_rgb(args.data / f"{args.image}.png"))
    print(f"model: {source}; {args.image} {x.shape[-1]}x{x.shape[-2]}, q{args.quality}, {args.threads} threads")
    data = model.compress(x, args.quality)
    clock = instrument(model)
    result = {}
    for direction, run in (("compress", lambda: model.compress(x, args.quality)),
                           ("decompress", lambda: model.decompress(data))):
        stages, total = profile_direction(clock, run, args.repeats)
        print_table(direction, stages, total)
        result[direction] = {"total_s": total, "stages_s": stages}
        if args.ops:
            operator_table(run, 20)
    if args.json:
        args.json.write_text(json.dumps({"model": source, "image": args.image, "threads": args.threads, **result},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

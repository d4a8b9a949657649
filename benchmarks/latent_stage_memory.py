"""Peak memory of GLC-image's portable latent stage alone (issue 13): everything between the VQGAN
encoder and the generator (the float analysis nets, the integer prior and context nets, the masked steps,
entropy coding, the integer ``dec``), which is not tiled and grows with the image's area.

Each phase runs in a fresh process on a random latent of an image of the given size (official-shape
deterministic weights by default): ``encode`` codes it into a file, ``decode`` reads the file back to the
decoded latent. A thread samples the process's resident set every 2 ms during the phase alone; the
figures are its base (weights and integer twins, before the phase) and its peak.

    python benchmarks/latent_stage_memory.py --sizes 4,16 --json latent_stage.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared"


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_codec import official_deterministic_model

    from latentcodec.runtime import release_freed_memory

    release_freed_memory()  # as the CLI does on images this large
    model = official_deterministic_model(args.shared)
    model.integer_decoder_side()  # the twins are part of the base, as in any decode
    width, height = args.width, args.height
    header = model.image_header(height, width, args.quality)
    if args.phase == "encode":
        pad = model.config.pad_multiple
        shape = (1, model.config.latent_channels, -(-height // pad) * pad // 16, -(-width // pad) * pad // 16)
        latent = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(0.002)

    base = resident_bytes()
    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    if args.phase == "encode":
        args.file.write_bytes(model.encode_latent(latent, header).data)
    else:
        model.decode_latent(args.file.read_bytes())
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    print(json.dumps({"base_mb": base / 1e6, "peak_mb": peak[0] / 1e6, "seconds": seconds}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4,16", help="megapixels (4:3) or WxH, comma-separated")
    parser.add_argument("--quality", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--json", type=Path, default=Path("latent_stage_memory.json"))
    parser.add_argument("--phase", choices=("encode", "decode"), help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        return child(args)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_memory import size_of

    runs = []
    with tempfile.TemporaryDirectory(prefix="latent_stage_") as tmp:
        for text in args.sizes.split(","):
            width, height = size_of(text)
            record = {"width": width, "height": height, "megapixels": width * height / 1e6}
            file = Path(tmp) / f"{width}x{height}.lci"
            for phase in ("encode", "decode"):
                command = [sys.executable, __file__, "--phase", phase, "--width", str(width), "--height", str(height),
                           "--file", str(file), "--quality", str(args.quality), "--threads", str(args.threads),
                           "--shared", str(args.shared)]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                record[phase] = json.loads(output.strip().splitlines()[-1])
            record["file_bytes"] = file.stat().st_size
            runs.append(record)
            print(f"{width}x{height}: encode {record['encode']['base_mb']:.0f} -> {record['encode']['peak_mb']:.0f} MB "
                  f"({record['encode']['seconds']:.0f} s), decode {record['decode']['base_mb']:.0f} -> "
                  f"{record['decode']['peak_mb']:.0f} MB ({record['decode']['seconds']:.0f} s)", flush=True)
    args.json.write_text(json.dumps({"command": " ".join(sys.argv), "threads": args.threads, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

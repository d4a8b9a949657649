"""Do a DLF model's semantic tokens describe the image? (The small model's jointly trained tokenizer
collapsed to one code per token position; docs/models.md, DLF sessions 12-13.)

For 256x256 centre windows of the given images: the mean and minimum cosine between two different
windows' continuous tokens at the same token position (1: the position alone decides the token), the
distinct codes chosen among all windows' tokens, and the largest number of distinct codes at one
position. Reads a training run folder or checkpoint (``checkpoint.pt``) or a save_pretrained folder.

    python benchmarks/dlf_token_diversity.py ~/.cache/latentcodec/runs/dlf-small-align --images ../shared/data/kodak
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
WINDOW = 256


def load_model(source: Path, preset: str):
    from latentcodec.models.dlf import DLF, PRESETS
    from latentcodec.training.checkpoints import read_run_state

    if (source / "config.json").is_file():
        return DLF.from_pretrained(source).eval()
    state, _ = read_run_state(str(source), "weights")
    model = DLF(PRESETS[preset](), with_training_modules=True)
    model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()}, strict=False)
    return model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path, help="run folder, checkpoint.pt or save_pretrained folder")
    parser.add_argument("--preset", default="small", help="the preset of a training checkpoint")
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared" / "data" / "kodak")
    parser.add_argument("--count", type=int, default=24, help="images (sorted by name) to read")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    from latentcodec.data.images import load_rgb, pil_to_tensor
    from latentcodec.training.dlf_stages import window_token_similarity

    model = load_model(args.weights.expanduser(), args.preset)
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.count]
    windows = []
    for file in files:
        image = pil_to_tensor(load_rgb(file))
        top, left = (image.shape[-2] - WINDOW) // 2, (image.shape[-1] - WINDOW) // 2
        windows.append(image[..., top : top + WINDOW, left : left + WINDOW])
    with torch.no_grad():
        front = model.front_end(torch.cat(windows) * 2 - 1, None)
    similarity = window_token_similarity(front.tokens)
    indices = front.vq.indices.flatten(1)  # (windows, tokens)
    result = {
        "weights": str(args.weights), "images": len(files), "tokens_per_window": indices.shape[1],
        "mean_cosine_between_windows": float(similarity.mean()), "min_cosine_between_windows": float(similarity.min()),
        "distinct_codes": int(indices.unique().numel()), "token_count": int(indices.numel()),
        "max_distinct_codes_at_one_position": max(int(indices[:, t].unique().numel()) for t in range(indices.shape[1])),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bytes per caption: PerCoV2's caption coder against zlib level 9 (PerCo's), on 24 Kodak captions.

    python benchmarks/percov2_captions.py --out docs/results/percov2_captions.json

The captions (tests/data/captions/kodak_captions.tsv) were written by hand for this comparison, one
per Kodak image, in the style of a BLIP-2 caption (lower case, 7-13 words). Reported per caption: the
UTF-8 size, zlib.compress at level 9 (the zlib stream, as PerCo stores it), raw DEFLATE level 9 (what
PerCoV2 files held before: no 2-byte header, no Adler-32), and latentcodec's static word-model coder
(latentcodec/entropy/caption_coder.py) with its exact information content.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

from latentcodec.entropy.caption_coder import decode_text, encode_text, information_bits
from latentcodec.models.percov2_streams import deflate_caption

CAPTIONS = Path(__file__).resolve().parents[1] / "tests" / "data" / "captions" / "kodak_captions.tsv"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", default=str(CAPTIONS))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    rows = []
    for line in Path(args.captions).read_text().splitlines():
        image, caption = line.split("\t")
        coded = encode_text(caption)
        assert decode_text(coded, 1024) == caption
        rows.append({"image": image, "caption": caption, "words": len(caption.split()),
                     "utf8_bytes": len(caption.encode()), "zlib9_bytes": len(zlib.compress(caption.encode(), 9)),
                     "deflate9_bytes": len(deflate_caption(caption)), "word_model_bytes": len(coded),
                     "word_model_information_bits": information_bits(caption)})
    mean = {key: sum(r[key] for r in rows) / len(rows)
            for key in ("words", "utf8_bytes", "zlib9_bytes", "deflate9_bytes", "word_model_bytes")}
    result = {"captions": len(rows), "mean": mean, "rows": rows,
              "command": "python benchmarks/percov2_captions.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| image | caption | UTF-8 | zlib -9 | raw DEFLATE -9 | word model |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['image']} | {r['caption']} | {r['utf8_bytes']} | {r['zlib9_bytes']} | {r['deflate9_bytes']} | "
              f"{r['word_model_bytes']} |" for r in rows]
    lines.append(f"| **mean** | {mean['words']:.1f} words | {mean['utf8_bytes']:.1f} | {mean['zlib9_bytes']:.1f} | "
                 f"{mean['deflate9_bytes']:.1f} | {mean['word_model_bytes']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"mean bytes per caption: zlib -9 {mean['zlib9_bytes']:.1f}, raw DEFLATE -9 {mean['deflate9_bytes']:.1f}, "
          f"word model {mean['word_model_bytes']:.1f} (UTF-8 {mean['utf8_bytes']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

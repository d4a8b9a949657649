"""Build the static word table of the caption coder from the `wordfreq` package (run once, the result
is shipped):

    pip install "latentcodec[captions]" && python -m latentcodec.entropy.caption_vocabulary

The coder reads only the shipped table (``data/english_words.tsv``), never wordfreq itself: a file's
probabilities must not change when a newer wordfreq changes its data.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

TABLE = Path(__file__).resolve().parent / "data" / "english_words.tsv"
WORDS = 8192
WORD = re.compile(r"[a-z']+")
COUNT_SCALE = 2**32  # word_frequency (a share of all words) -> an integer count


def build(path: Path = TABLE, words: int = WORDS) -> int:
    from wordfreq import top_n_list, word_frequency

    rows = []
    for word in top_n_list("en", 4 * words):
        if WORD.fullmatch(word):
            rows.append((word, max(1, round(word_frequency(word, "en") * COUNT_SCALE))))
        if len(rows) == words:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{word}\t{count}\n" for word, count in rows))
    return len(rows)


if __name__ == "__main__":
    count = build()
    print(f"{TABLE}: {count} words")
    sys.exit(0)

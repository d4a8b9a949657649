"""Entry point for distributed training: ``torchrun --nproc_per_node N -m latentcodec.train CONFIG``.

Takes the same arguments as ``latentcodec train``.
"""

from __future__ import annotations

import sys

from latentcodec.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

"""Codec subcommands: compress, decompress, info, models, roundtrip."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Filled in with the GLC-image codec."""

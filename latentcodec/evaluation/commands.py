"""Evaluation subcommands: eval, bdrate, plot, report."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Filled in by the evaluation harness."""

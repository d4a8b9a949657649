"""The ``latentcodec`` command line.

Subcommands live next to the code they drive; each such module exposes
``register(subparsers)`` which adds parsers whose ``func(args) -> int`` runs the command.
Every LatentCodecError (and a missing file) becomes one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from latentcodec.errors import LatentCodecError

COMMAND_MODULES = (
    "latentcodec.commands",
    "latentcodec.evaluation.commands",
    "latentcodec.training.commands",
    "latentcodec.training.token_prior_commands",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="latentcodec",
        description="Ultra-low-bitrate image and video compression in generative latent spaces.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from latentcodec.runtime import retain_freed_memory

    retain_freed_memory()  # large maps reuse freed memory instead of fresh page faults (runtime.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LatentCodecError as exc:
        print(f"latentcodec: error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"latentcodec: error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("latentcodec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`latentcodec info x.lcv | head`): stop quietly, and
        # point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

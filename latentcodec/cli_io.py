"""File handling of the codec subcommands: never overwrite without --force, never leave a partial
output, expand folders into their files, place outputs, and run a job per file with one line per
failure."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from latentcodec.errors import InputError, LatentCodecError
from latentcodec.files import atomic_write as write_atomically


def atomic_write(path: Path, data: bytes | None = None, save=None, force: bool = False) -> None:
    """Refuse to overwrite without --force, then write atomically (never a partial output)."""
    if path.exists() and not force:
        raise InputError(f"{path} exists (use --force to overwrite)")
    if path.is_dir():
        raise InputError(f"{path} is a directory")
    write_atomically(path, data, save)


def read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    return path.read_bytes()


def expand_inputs(inputs: list[str], suffixes: tuple[str, ...]) -> list[tuple[Path, Path]]:
    """(file, root) pairs; folders expand to the files inside with one of ``suffixes``."""
    files = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise InputError(f"{path}: no {'/'.join(suffixes)} files in this folder")
            files += [(p, path) for p in found]
        elif path.exists():
            files.append((path, path.parent))
        else:
            raise InputError(f"{path}: no such file or directory")
    return files


def output_path(source: Path, root: Path, output: str | None, suffix: str, many: bool) -> Path:
    if output is None:
        return source.with_suffix(suffix)
    out = Path(output)
    if many or out.is_dir() or output.endswith(os.sep):
        return (out / source.relative_to(root)).with_suffix(suffix)
    return out


def run_files(files, work, description: str) -> int:
    """Run ``work(path, root)`` per file with a progress bar for more than one file; one line per failure."""
    from tqdm import tqdm

    failures = 0
    progress = tqdm(files, desc=description, unit="file", disable=len(files) < 2, file=sys.stderr)
    for path, root in progress:
        try:
            work(path, root)
        except LatentCodecError as exc:
            failures += 1
            if len(files) == 1:
                raise
            progress.write(f"latentcodec: error: {path}: {exc}")
    return 1 if failures else 0

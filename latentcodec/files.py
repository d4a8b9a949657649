"""Atomic file output: write to a temporary file beside the target, then rename.

A crash or an error mid-write therefore never leaves a partial file under the final name.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, data: bytes | str | None = None,
                 save: Callable[[str], None] | None = None) -> Path:
    """Write ``data`` to ``path``, or let ``save(tmp_path)`` write it, atomically.

    The temporary name keeps the target's suffix, so writers that choose a format by suffix work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part" + path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            if data is not None:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        if save is not None:
            save(tmp)
        # mkstemp creates the file 0600; the result should get the permissions any new file gets.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_BYTE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_byte_size(text: str | int) -> int:
    """'2GB', '1.5G', '45MiB', '800000000' -> bytes. K/M/G/T(B) are decimal, KiB/MiB/GiB/TiB binary."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _BYTE_UNITS:
        raise ValueError(f"cannot read size {text!r} (examples: 2GB, 1.5G, 45MiB)")
    return int(float(match.group(1)) * _BYTE_UNITS[unit])

"""Atomic writes: no partial file under the final name, and ordinary permissions on the result."""

from __future__ import annotations

import os
import stat

import pytest

from latentcodec.files import atomic_write


def test_written_files_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.bin", b"abc")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        path = atomic_write(tmp_path / "b.bin", b"abc")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(previous)
    assert path.read_bytes() == b"abc"


def test_a_failing_writer_leaves_nothing(tmp_path):
    def broken(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "c.bin", save=broken)
    assert list(tmp_path.iterdir()) == []

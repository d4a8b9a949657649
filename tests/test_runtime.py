"""The allocator settings of latentcodec/runtime.py, each checked in a fresh process (they are
process-wide). What they promise: retain keeps freed large blocks resident for reuse, release gives
them back, the environment can opt out, and the CLI starts in retain."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the allocator settings apply to glibc only")

# Allocate and free a 256 MiB tensor, then print the resident size in MiB and the mode.
PROBE = """
import sys, torch
from latentcodec import runtime
getattr(runtime, sys.argv[1])()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
before = rss()
x = torch.ones(64 << 20)  # 256 MiB, touched
del x
print(round(rss() - before), runtime.allocator_mode())
"""


def child_env(**env: str) -> dict[str, str]:
    """This environment without the suite's opt-out (tests/conftest.py), plus ``env``."""
    return {**{k: v for k, v in os.environ.items() if k != "LATENTCODEC_MALLOC"}, **env}


def probe(setting: str, **env: str) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True,
                            env=child_env(**env))
    kept, mode = result.stdout.split()
    return int(kept), mode


def test_retain_keeps_freed_memory_and_release_gives_it_back():
    kept, mode = probe("retain_freed_memory")
    assert mode == "retain" and kept >= 200
    kept, mode = probe("release_freed_memory")
    assert mode == "release" and kept < 50


def test_environment_opts_out_of_retaining():
    kept, mode = probe("retain_freed_memory", LATENTCODEC_MALLOC="default")
    assert mode == "default" and kept < 50


def test_release_returns_what_retain_kept():
    code = PROBE.replace('print(round(rss() - before), runtime.allocator_mode())',
                         'runtime.release_freed_memory()\nprint(round(rss() - before), runtime.allocator_mode())')
    result = subprocess.run([sys.executable, "-c", code, "retain_freed_memory"], capture_output=True, text=True,
                            check=True, env=child_env())
    kept, mode = result.stdout.split()
    assert mode == "release" and int(kept) < 50


def test_cli_starts_in_retain(monkeypatch):
    code = ("import sys\nfrom latentcodec import cli, runtime\n"
            "cli.build_parser = lambda: (_ for _ in ()).throw(SystemExit(runtime.allocator_mode()))\n"
            "cli.main([])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env())
    assert result.stderr.strip().endswith("retain")


def test_the_cli_rule_retains_for_small_images_only_and_never_under_an_explicit_budget():
    code = ("from latentcodec import runtime\n"
            "print(runtime.allocator_for_image(768 * 512, False), runtime.allocator_for_image(3840 * 2160, False),"
            " runtime.allocator_for_image(768 * 512, False), runtime.allocator_for_image(768 * 512, True))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env=child_env())
    assert result.stdout.split() == ["retain", "release", "retain", "release"]

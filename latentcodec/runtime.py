"""How the process's memory allocator treats the large maps of the pixel networks. Results never
depend on it; speed and peak memory do.

glibc's malloc hands every block above its mmap threshold (at most 32 MB) to a fresh ``mmap`` and
returns it to the kernel on ``free``. The VQGAN, DLF and PerCoV2 pixel networks allocate and free
maps of tens to hundreds of megabytes per layer, so each one is page-faulted and zeroed by the
kernel again, layer after layer: on the development VM a third of the wall time of a Kodak decode
went there (sys time 23.6 s of 51.6 s; ``docs/results/speed.md``). Two settings:

* :func:`retain_freed_memory` (speed): large blocks come from the heap and freed memory stays for
  reuse, as with jemalloc or tcmalloc. The resident size then follows the peak of what was alive
  plus fragmentation, which can be large: the official preset decoding 3840x2160 reached 6.4 GB
  resident this way against 3.86 GB releasing. A long-lived program using the library can opt in;
  ``LATENTCODEC_MALLOC=default`` in the environment turns it off.
* :func:`release_freed_memory` (memory): every block of 1 MiB or more is mapped on its own and
  given back when freed, so the resident size tracks what is alive. By default glibc raises its
  threshold to the largest block freed so far, after which tiles and row bands stay in its heap
  (measured: 1.27 GB above the live tensors after a 12 MP image's latent analysis; 0.76 GB with
  this). The tiling of :mod:`latentcodec.nn.tiling` switches to it when an image is too large to
  run whole.

The CLI starts every command retaining and picks per image with :func:`allocator_for_image`:
retaining for images up to :data:`RETAIN_MAX_PIXELS` under the default memory budget, releasing
for larger ones and whenever the user set ``--max-memory``, where memory is what was asked for.

Elsewhere than glibc (macOS, Windows, musl) both do nothing and return False.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# retain: mallopt takes an int, so the largest free top of the heap kept is 2 GiB - 1; the heap
# grows in 64 MiB steps so a run of large allocations calls brk rarely.
_KEEP_FREE_BYTES = 2**31 - 1
_HEAP_GROWTH_BYTES = 64 << 20
# release: glibc's defaults for the number of mappings, trim threshold and top pad, and a fixed
# mmap threshold of 1 MiB.
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_BYTES = 128 << 10
_DEFAULT_TOP_PAD = 128 << 10
RELEASE_THRESHOLD_BYTES = 1 << 20
# Retaining pays where maps are large but the image is not: up to 2 MP (1920x1080) a decode of the
# official preset holds about 2.5 GB of live maps, so retained slack stays within a laptop's budget.
RETAIN_MAX_PIXELS = 1920 * 1088

_mode = "default"


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def retain_freed_memory() -> bool:
    """Speed: serve large allocations from malloc's heap and keep freed memory for reuse. Returns
    whether the setting is in effect. Idempotent."""
    global _mode
    if _mode == "retain":
        return True
    if os.environ.get("LATENTCODEC_MALLOC", "").lower() == "default":
        return False
    libc = _libc()
    if libc is None:
        return False
    # Without mmap, blocks too large for a helper thread's arena still fall back to mmap (glibc),
    # so nothing fails; the main thread, which allocates the maps, grows its heap instead.
    ok = (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREE_BYTES)
          and libc.mallopt(_M_TOP_PAD, _HEAP_GROWTH_BYTES))
    _mode = "retain" if ok else _mode
    return bool(ok)


def release_freed_memory() -> bool:
    """Memory: map every block of 1 MiB or more on its own and give it back when freed; free
    memory the heap kept so far goes back to the system now. Returns whether it is in effect."""
    global _mode
    if _mode == "release":
        return True
    libc = _libc()
    if libc is None:
        return False
    ok = (libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX) and libc.mallopt(_M_MMAP_THRESHOLD, RELEASE_THRESHOLD_BYTES)
          and libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_BYTES) and libc.mallopt(_M_TOP_PAD, _DEFAULT_TOP_PAD))
    libc.malloc_trim(0)
    _mode = "release" if ok else _mode
    return bool(ok)


def allocator_for_image(pixels: int, explicit_budget: bool) -> str:
    """Retain for an image of ``pixels`` up to RETAIN_MAX_PIXELS unless the user set a memory budget;
    release otherwise. Returns the mode now in effect."""
    if pixels <= RETAIN_MAX_PIXELS and not explicit_budget:
        retain_freed_memory()
    else:
        release_freed_memory()
    return _mode


def allocator_mode() -> str:
    """'retain', 'release', or 'default' (glibc's own behaviour, or not glibc)."""
    return _mode

"""The server's memory upkeep: what keeps a process that serves for days at the size it reached in its first minutes.

Two things grew without bound under the soak (about 2.4 MiB a minute together), neither of them Python objects:

- **Compiled kernels.** torch runs convolutions and LSTMs through oneDNN, which compiles a kernel for each new
  input shape and keeps up to 1,024. The WaveNet's conditioning network read utterances of every length and the
  text discriminator batches of every size, so nearly every spoken request and many classifications compiled one
  more (13 KiB to hundreds of KiB of machine code each, 35 MiB after 25 minutes). The models now see few shapes
  (the WaveNet's frames are matrix products, ``server/audio/features.py``; text windows come in power-of-two
  batches, ``server/engine/classify.py``), and :func:`bound_kernel_cache` keeps 32 kernels
  (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``; an operator's own value wins) for whatever shapes remain (images).
- **Free memory the C allocator keeps.** glibc's malloc gives a thread that finds the heap busy an arena of its
  own, up to eight per core, and hands freed memory back to the system only from the top of a heap. Threads that
  allocate and free buffers of every size (the engines' workers, gRPC's, torch's, the event loop) leave free memory
  spread over many arenas. :func:`limit_arenas` caps them at two before the server starts its threads (as
  ``MALLOC_ARENA_MAX=2`` would; an operator's own wins) and :class:`Trimmer` calls ``malloc_trim(0)`` from a worker
  thread once a minute, handing the free pages inside every arena back (a few milliseconds). Elsewhere than glibc
  (musl, macOS) neither applies.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import time
from functools import cache

log = logging.getLogger(__name__)

KERNEL_CACHE = 32  # oneDNN's compiled kernels kept (its default: 1,024)
M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
ARENAS = 2
TRIM_EVERY_S = 60.0


def bound_kernel_cache(capacity: int = KERNEL_CACHE) -> None:
    """Keep at most ``capacity`` of oneDNN's compiled kernels; call it before torch runs its first operation."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))


@cache
def _glibc() -> ctypes.CDLL | None:
    """glibc's C library, or None on another libc (musl, macOS) or where it cannot be loaded."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (call it before starting threads); False where it does nothing."""
    libc = _glibc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Hand the free memory of every arena back to the system; True when some was."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


class Trimmer:
    """Trims every ``every_s`` seconds on a worker thread while the server runs; ``start`` then ``stop``."""

    def __init__(self, every_s: float = TRIM_EVERY_S) -> None:
        self.every_s = every_s
        self.trims = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if _glibc() is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="malloc-trim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            started = time.perf_counter()
            released = await asyncio.to_thread(trim)
            self.trims += 1
            took_ms = 1e3 * (time.perf_counter() - started)
            log.debug("malloc_trim: %s in %.1f ms", "released memory" if released else "nothing to release", took_ms)

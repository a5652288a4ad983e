"""Large elementwise batches split over threads.

Every batch function of the C core is elementwise and releases the GIL, so a batch of
millions of entries can run as a few contiguous parts on a few threads at once (the
memory-bound operations are limited by one core's memory bandwidth, not the machine's).
``threads=None`` (the default of every batch API) means: one thread below
:data:`MIN_ELEMENTS`, else :func:`default_threads`.  ``PYKVMMU_THREADS=1`` in the
environment turns splitting off.

Errors stay exactly those of one pass over the whole batch: if any part fails, the whole
batch is run once more on the calling thread and that run's first bad element is the one
reported (output buffers hold unspecified data after a failed call, as for one pass).
"""
from __future__ import annotations

import operator
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from .errors import ConfigError, InputError

#: Batches of fewer elements run on the calling thread (a split costs ~20-50 us).
MIN_ELEMENTS = 1 << 20
#: Parts start on multiples of this many elements (keeps each part's stores aligned as
#: in one pass: a 48-byte decode record times 64 is a multiple of 64 bytes).
ALIGN = 64
#: No part is smaller than this.
MIN_PART = 1 << 16
MAX_THREADS = 64

T = TypeVar("T")
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _reset_after_fork() -> None:
    """A forked child has none of the parent's worker threads: start a pool of its own."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def default_threads() -> int:
    """``PYKVMMU_THREADS`` if set, else the CPUs this process may run on (at most 8)."""
    env = os.environ.get("PYKVMMU_THREADS", "").strip()
    if env:
        try:
            t = int(env, 10)
        except ValueError:
            raise ConfigError(f"PYKVMMU_THREADS={env!r}: expected a positive integer") from None
        if not 1 <= t <= MAX_THREADS:
            raise ConfigError(f"PYKVMMU_THREADS={t}: must be 1..{MAX_THREADS}")
        return t
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def threads_for(n: int, threads: int | None) -> int:
    """How many parts a batch of ``n`` elements runs as."""
    if threads is None:
        if n < MIN_ELEMENTS:
            return 1
        t = default_threads()
    else:
        if isinstance(threads, bool):
            raise InputError(f"threads={threads!r}: expected an integer 1..{MAX_THREADS} or None")
        try:
            t = operator.index(threads)
        except TypeError:
            raise InputError(f"threads={threads!r}: expected an integer 1..{MAX_THREADS} "
                             "or None") from None
        if not 1 <= t <= MAX_THREADS:
            raise InputError(f"threads={t}: must be 1..{MAX_THREADS} (or None for automatic)")
    return max(1, min(t, n // MIN_PART))


def bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous [lo, hi) ranges covering range(n), cut on multiples of ALIGN."""
    cuts = [0] + [(n * i // parts) // ALIGN * ALIGN for i in range(1, parts)] + [n]
    return [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]


def _executor() -> ThreadPoolExecutor:
    """The process's pool (threads start on demand, up to MAX_THREADS - 1 workers)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_THREADS - 1, thread_name_prefix="pykvmmu")
        return _pool


def map_parts(n: int, threads: int | None, part: Callable[[int, int], T]) -> list[T]:
    """``[part(lo, hi) for each part]``, the first part on the calling thread."""
    t = threads_for(n, threads)
    if t == 1:
        return [part(0, n)]
    rng = bounds(n, t)
    pool = _executor()
    futures = [pool.submit(part, lo, hi) for lo, hi in rng[1:]]
    try:
        first = part(*rng[0])
    finally:
        rest = [f.result() for f in futures]
    return [first] + rest


def run(n: int, threads: int | None, part: Callable[[int, int], tuple]) -> tuple:
    """Run ``part(lo, hi) -> (bad, ...)`` over the batch; ``bad`` != 0 is a failure with
    ``bad - 1`` the part-relative index.  Returns the whole-batch result: ``(0, ...)`` of
    the first part on success, else the result of one pass over the whole batch."""
    results = map_parts(n, threads, part)
    if len(results) == 1 or not any(r[0] for r in results):
        return results[0]
    return part(0, n)

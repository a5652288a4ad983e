"""Fuzz target ``trace``: the trace readers and the audit on damaged real traces.

A kvmmmu trace is evidence a user brings from a real host, and a damaged one (a truncated
copy, a flipped bit, a pasted fragment) must be refused with a pykvmmu error naming the
place, never a crash, a hang or a record that is not well-formed.  The fuzzer's bytes pick
one of the real captures shipped in ``pykvmmu/data/fuzz_traces`` (made on the project's
live KVM: pykvmmu capture, trace-cmd ``trace.dat`` v6 and v7, Linux perf's ``perf.data``
(file, pipe mode, callchains, -z), ``perf script`` and ``perf trace`` text, a tar of the CTF
directory ``perf data convert --to-ctf`` writes, the kernel print format, ftrace
fields with stack traces, ``trace-cmd report`` with and without ``-R``, the plugin and
perf-prof text) and a list of edits (overwrite, bit flip, truncate, insert, delete, an
interesting 32/64-bit value), sometimes compresses the result with gzip or xz (and may edit
that too), then reads it with ``open_trace`` and sometimes audits it.  Any exception other than a :class:`pykvmmu.errors.PykvmmuError` escapes as a crash.
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import importlib.util
import io
import lzma
import os
import re
import signal
import struct
import threading
import time

from .base import FuzzInput, check, target

#: The base traces (gzip files; ``fuzz/make_trace_bases.py`` lists where each comes from).
_BASES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                          "fuzz_traces")
#: CPU seconds one read (and audit) may take: the bases read in 5-20 ms here, and a binary
#: base damaged into text in about 1 s, so anything near this is a reader that loops on a
#: damaged length (CPU time: a fuzzer at low priority on a busy machine waits, wall time).
SLOW_S = 30.0
#: bases that need an optional package to be read (left out without it)
_NEEDS = {"demo.z.perf.data.gz": "zstandard"}
_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32,
                (1 << 63), (1 << 64) - 1, 4096, 4080, 4095, 4097)


@functools.lru_cache(maxsize=None)
def bases() -> tuple:
    """(name, bytes, era) of each base trace (gunzipped; text needs an era, binary carries
    its kernel version)."""
    out = []
    for n in sorted(os.listdir(_BASES_DIR)):
        if not n.endswith(".gz") or (n in _NEEDS and importlib.util.find_spec(_NEEDS[n]) is None):
            continue
        with gzip.open(os.path.join(_BASES_DIR, n)) as f:
            data = f.read()
        out.append((n[:-3], data, "v6.14" if n.endswith(".txt.gz") else None))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def base_count(i: int) -> int:
    """Records the undamaged base ``i`` holds (kvmmmu and other events)."""
    from ..trace import open_trace
    _, data, era = bases()[i]
    with open_trace(io.BytesIO(data), era=era, all_events=True) as st:
        return sum(1 for _ in st)


def _edit(fi: FuzzInput, b: bytearray) -> None:
    """One edit of ``b`` at a drawn place."""
    kind = fi.uint(8) % 6
    at = fi.uint(32) % (len(b) + 1)
    if kind == 0:                              # overwrite
        k = fi.int_in(1, 16)
        b[at:at + k] = fi.take(k)
    elif kind == 1 and b:                      # flip one bit
        at = min(at, len(b) - 1)
        b[at] ^= 1 << fi.int_in(0, 7)
    elif kind == 2:                            # truncate
        del b[at:]
    elif kind == 3:                            # insert
        b[at:at] = fi.take(fi.int_in(1, 16))
    elif kind == 4:                            # delete
        del b[at:at + fi.int_in(1, 4096)]
    else:                                      # an interesting length or offset
        v = fi.pick(_INTERESTING)
        w = fi.pick((4, 8))
        b[at:at + w] = struct.pack("<Q", v & ((1 << 64) - 1))[:w]


def _shape(msg: str) -> str:
    """A refusal's message without its numbers and names (a feature: which rule refused)."""
    return re.sub(r"0x[0-9a-fA-F]+|\d+|'[^']*'|\([^)]*\)", "#", msg.split(": ", 1)[-1])[:60]


def _well_formed(r) -> None:
    check(isinstance(r.event, str) and r.event != "", "record without an event name", r)
    check(isinstance(r.fields, dict) and all(isinstance(k, str) for k in r.fields),
          "record fields are not a dict of names", r.event, r.fields)
    check(isinstance(r.cpu, int) and r.cpu >= -1, "record cpu", r.event, r.cpu)
    check(r.ts_ns is None or isinstance(r.ts_ns, int) and r.ts_ns >= 0, "record ts_ns", r.event, r.ts_ns)
    if r.role is not None:
        check(isinstance(r.role.word, int) and 0 <= r.role.word < 1 << 32, "role word width",
              r.event, r.role.word)


class _Endless(Exception):
    """Raised by the CPU-time alarm of :func:`_cpu_bound` inside a read that does not end."""


@contextlib.contextmanager
def _cpu_bound(seconds: float):
    """Interrupt the block after ``seconds`` of the process's CPU time (SIGVTALRM; main
    thread only, elsewhere a no-op): a read that never ends becomes a finding with its
    input, instead of a fuzzer that hangs (the SLOW_S check runs only once a read ends)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(*_):
        raise _Endless()
    old = signal.signal(signal.SIGVTALRM, fire)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, old)


@target("trace", max_len=512)
def fuzz_trace(fi: FuzzInput) -> None:
    """open_trace over a real capture (pykvmmu capture, trace.dat v6/v7, perf.data file and
    pipe, perf -z, perf script, perf trace, CTF tar, print format, fields, trace-cmd report,
    plugin text) after drawn edits (overwrite, bit flip, truncate, insert, delete, interesting
    32/64-bit values): a PykvmmuError or well-formed records,
    never another exception or a hang; the undamaged trace gives all its records; sometimes
    audit_records over what was read (a PykvmmuError or a report, never a crash)."""
    from ..audit import audit_records, live_config
    from ..errors import PykvmmuError
    from ..trace import open_trace
    bs = bases()
    i = fi.int_in(0, len(bs) - 1)
    name, data, era = bs[i]
    b = bytearray(data)
    n_edits = fi.int_in(0, 6)
    for _ in range(n_edits):
        _edit(fi, b)
    if fi.chance(8):                           # the other kind of era argument
        era = None if era else "v6.14"
    all_events = fi.bool()
    audit = fi.chance(4)
    wrap = fi.pick((None, None, None, None, None, None, "gzip", "xz"))
    if wrap:                                   # compressed, and maybe damaged after that
        b = bytearray(gzip.compress(bytes(b), 1, mtime=0) if wrap == "gzip" else
                      lzma.compress(bytes(b), preset=0))
        if fi.bool():
            _edit(fi, b)
            n_edits += 1
    t0 = time.process_time()
    recs = []
    try:
        with _cpu_bound(2 * SLOW_S), open_trace(io.BytesIO(bytes(b)), era=era,
                                                all_events=all_events) as st:
            for r in st:
                _well_formed(r)
                recs.append(r)
            fi.feature("read", name, st.format, n_edits > 0, wrap, len(recs).bit_length())
    except PykvmmuError as e:
        fi.feature("refused", name, wrap, type(e).__name__, _shape(str(e)))
        check(str(e) != "", "a refusal without a message", name, type(e).__name__)
        check(n_edits or era != bs[i][2], "the undamaged trace is refused", name, str(e))
        return
    finally:                                   # also what an _Endless read ends in
        check(time.process_time() - t0 < SLOW_S, "a read this slow is a loop on damaged input",
              name, len(b), round(time.process_time() - t0, 1))
    if not n_edits and all_events and era == bs[i][2]:
        check(len(recs) == base_count(i) > 0, "the undamaged trace's records", name, len(recs))
    if audit and recs:
        try:
            rep = audit_records(recs, live_config(), era="v6.18")
        except PykvmmuError as e:
            fi.feature("audit refused", name, type(e).__name__, _shape(str(e)))
            return
        fi.feature("audit", name, any(c["disagreed"] for c in rep.counts.values()))

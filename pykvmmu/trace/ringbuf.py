"""The ftrace ring buffer's binary pages (``per_cpu/cpuN/trace_pipe_raw``, trace.dat CPU data).

Layout (kernel/trace/ring_buffer.c, ``events/header_page``, ``events/header_event``): a page
is ``u64 timestamp; long commit; data[]``.  ``commit`` is the number of data bytes, plus flag
bits: bit 31 (RB_MISSED_EVENTS) events were lost before this page, bit 30 (RB_MISSED_STORED)
the number lost is stored as a ``long`` right after the data.  Each entry starts with a u32
``type_len:5, time_delta:27`` (LSB first): type_len 1..28 is a data record of type_len*4
bytes; 0 is a data record whose length (+4) is in the next u32; 29 is padding (time_delta 0:
the rest of the page; else skip ``array[0] + 4`` bytes), 30 a time extend (delta =
``array[0] << 27 | time_delta``), 31 an absolute time stamp (59 bits; the top 5 bits come
from the running time).  Data records add time_delta to the running time; padding does not.
Pages are read one at a time, so memory stays constant; CPUs are merged by time.
"""
from __future__ import annotations

import heapq
import struct
from typing import Iterator

from .record import TraceFormatError
from .tpformat import HeaderPage

__all__ = ["iter_page", "iter_cpu", "merge_cpus", "RB_MISSED_EVENTS", "RB_MISSED_STORED"]

RB_MISSED_EVENTS = 1 << 31
RB_MISSED_STORED = 1 << 30
_COMMIT_MASK = (1 << 30) - 1
TYPE_PADDING, TYPE_TIME_EXTEND, TYPE_TIME_STAMP = 29, 30, 31
_TS_MSB = 0xF8 << 56


def _fix_abs_ts(abs_ts: int, prev: int) -> int:
    """A 59-bit absolute stamp completed with the running time's top bits (rb_fix_abs_ts)."""
    if prev & _TS_MSB:
        abs_ts |= prev & _TS_MSB
        if abs_ts < prev:
            abs_ts += 1 << 59
    return abs_ts


def iter_page(page, hp: HeaderPage, endian: str = "<", where: str = "page",
              lost: dict | None = None) -> Iterator[tuple]:
    """(ts_ns, record bytes) for every data record of one page.  ``lost`` (optional) counts
    ``pages_with_missed`` and ``missed_events`` (when the page stores the number)."""
    n = len(page)
    if n < hp.data_offset:
        raise TraceFormatError(f"{where}: {n} bytes, shorter than the page header ({hp.data_offset})")
    u32 = struct.Struct(endian + "I").unpack_from
    ts = struct.unpack_from(endian + "Q", page, hp.ts_offset)[0]
    commit = struct.unpack_from(endian + ("Q" if hp.commit_size == 8 else "I"), page,
                                hp.commit_offset)[0]
    length = commit & _COMMIT_MASK
    end = hp.data_offset + length
    if end > n:
        raise TraceFormatError(f"{where}: commit {length} runs past the page ({n} bytes)")
    if lost is not None and commit & RB_MISSED_EVENTS:
        lost["pages_with_missed"] = lost.get("pages_with_missed", 0) + 1
        if commit & RB_MISSED_STORED and end + hp.commit_size <= n:
            k = struct.unpack_from(endian + ("Q" if hp.commit_size == 8 else "I"), page, end)[0]
            lost["missed_events"] = lost.get("missed_events", 0) + k
    pos = hp.data_offset
    while pos + 4 <= end:
        hdr = u32(page, pos)[0]
        tl, delta = hdr & 0x1F, hdr >> 5
        if tl == TYPE_PADDING:
            if delta == 0:
                break
            if pos + 8 > end:
                raise TraceFormatError(f"{where}+{pos}: padding entry cut by the commit end")
            pos += u32(page, pos + 4)[0] + 4
        elif tl == TYPE_TIME_EXTEND:
            if pos + 8 > end:
                raise TraceFormatError(f"{where}+{pos}: time extend cut by the commit end")
            ts += (u32(page, pos + 4)[0] << 27) | delta
            pos += 8
        elif tl == TYPE_TIME_STAMP:
            if pos + 8 > end:
                raise TraceFormatError(f"{where}+{pos}: time stamp cut by the commit end")
            ts = _fix_abs_ts((u32(page, pos + 4)[0] << 27) | delta, ts)
            pos += 8
        else:
            if tl == 0:
                if pos + 8 > end:
                    raise TraceFormatError(f"{where}+{pos}: record length cut by the commit end")
                size = u32(page, pos + 4)[0]
                if size < 4:
                    raise TraceFormatError(f"{where}+{pos}: record length {size} < 4")
                start, stop = pos + 8, pos + 4 + size
            else:
                start, stop = pos + 4, pos + 4 + tl * 4
            if stop > end:
                raise TraceFormatError(f"{where}+{pos}: record of {stop - start} bytes runs past the "
                                       f"commit end ({end})")
            ts += delta
            yield ts, page[start:stop]
            pos = stop


def iter_cpu(read, hp: HeaderPage, cpu: int, endian: str = "<", lost: dict | None = None,
             name: str = "") -> Iterator[tuple]:
    """(ts_ns, cpu, record) over the pages ``read(page_size)`` returns until it returns b""."""
    size = hp.page_size
    k = 0
    while True:
        page = read(size)
        if not page:
            return
        where = f"{name or 'cpu%d' % cpu} page {k}"
        if len(page) < size and len(page) < hp.data_offset:
            raise TraceFormatError(f"{where}: truncated ({len(page)} of {size} bytes)")
        for ts, rec in iter_page(memoryview(page), hp, endian, where, lost):
            yield ts, cpu, rec
        k += 1


def merge_cpus(streams) -> Iterator[tuple]:
    """One time-ordered stream from per-CPU streams (each already ordered)."""
    return heapq.merge(*streams, key=lambda e: (e[0], e[1]))

"""Records from binary ring-buffer data: a :class:`RawSource` (format files + per-CPU page
streams, filled by the capture, tracefs-directory and trace.dat readers) decoded into
:class:`~pykvmmu.trace.record.TraceRecord` objects carrying every field of each event."""
from __future__ import annotations

import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .record import TraceFormatError, TraceRecord
from .ringbuf import iter_cpu, merge_cpus
from .tpformat import HeaderPage, check_header_event, parse_event_format, parse_header_page

__all__ = ["RawSource", "raw_records", "event_record"]


@dataclass
class RawSource:
    """What a binary reader found: page layout, event formats by id, per-CPU readers
    (``(cpu, read(n) -> bytes, name)``), saved command lines, kernel release."""
    header_page: HeaderPage
    formats: "FormatTable"                         # id -> EventFormat
    cpus: list                                     # [(cpu, read, name)]
    endian: str = "<"
    cmdlines: dict = field(default_factory=dict)   # pid -> comm
    kernel_release: str | None = None
    format: str = "ringbuf"
    lost: dict = field(default_factory=dict)       # "cpuN" -> {...}
    meta: dict = field(default_factory=dict)
    closers: list = field(default_factory=list)
    #: the timestamps are a trace clock's counts (counter, uptime, x86-tsc), not nanoseconds
    ts_counts: bool = False

    def close(self) -> None:
        close_all(self.closers)


#: trace clocks that do not count nanoseconds (the kernel's trace_clocks[].in_ns == 0)
COUNT_CLOCKS = ("counter", "uptime", "x86-tsc")


def stats_show_counts(texts) -> bool:
    """Whether per-CPU ``stats`` texts print a clock's counts: the kernel prints "now ts:"
    (and "oldest event ts:") as seconds.microseconds for a clock that counts ns, and as a
    bare integer for counter, uptime and x86-tsc (tracing_stats_read)."""
    for t in texts:
        for line in t.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("now ts", "oldest event ts") and v.strip().isdigit():
                return True
    return False


def clock_name(text: str | None) -> str | None:
    """The current clock of a ``trace_clock`` text: the bracketed one ("local [x86-tsc]"), or
    a lone name."""
    m = re.search(r"\[([\w-]+)\]", text or "") or re.fullmatch(r"\s*([\w-]+)\s*", text or "")
    return m[1] if m else None


def mark_counts(src: "RawSource", clocks=(), stats=(), stats_label: str = "per-CPU stats print counts",
                corrections=()) -> None:
    """Keep ``src``'s timestamps as counts (``ts_counts``, and the reasons in ``meta["ts"]``)
    when a named clock (``clocks``) does not count ns, the per-CPU ``stats`` texts print
    counts (:func:`stats_show_counts`), or a timestamp correction was not applied."""
    why = [f"clock {c}" for c in dict.fromkeys(clocks) if c in COUNT_CLOCKS]
    if stats_show_counts(stats):
        why.append(stats_label)
    why += [f"{c} not applied" for c in corrections]
    if why:
        src.ts_counts = True
        src.meta["ts"] = "trace clock counts, not nanoseconds (" + ", ".join(why) + ")"


def count_lost(lost: dict, cpu, key: str, n: int) -> None:
    """Add n lost events under ``lost[cpuN][key]`` (``lost["all"]`` when the CPU is unknown)."""
    d = lost.setdefault(f"cpu{cpu}" if cpu is not None else "all", {})
    d[key] = d.get(key, 0) + n


def close_all(closers: list) -> None:
    """Call and forget a source's closers (files, tar archives), ignoring OSError."""
    for c in closers:
        try:
            c()
        except OSError:
            pass
    closers.clear()


_ID = re.compile(r"^ID:\s*(\d+)\s*$", re.M)


class FormatTable:
    """Event formats by id, each parsed the first time a record of that id is met (a
    trace.dat carries the formats of every event on the system)."""

    def __init__(self, formats: list, endian: str):
        self._texts: dict = {}
        self._parsed: dict = {}
        self.endian = endian
        for system, text in formats:
            m = _ID.search(text)
            if m is None:
                raise TraceFormatError(f"format file of system {system!r} without an 'ID:' line")
            self._texts[int(m[1])] = (system, text)

    def get(self, id_: int):
        ef = self._parsed.get(id_)
        if ef is None and id_ in self._texts:
            system, text = self._texts[id_]
            ef = self._parsed[id_] = parse_event_format(text, system, self.endian)
        return ef

    def __len__(self) -> int:
        return len(self._texts)

    def __contains__(self, id_) -> bool:
        return id_ in self._texts


def build_source(header_page: str, header_event: str | None, formats: list, cpus: list,
                 endian: str = "<", **kw) -> RawSource:
    """A RawSource from texts: ``formats`` is [(system, format text)]."""
    hp = parse_header_page(header_page)
    check_header_event(header_event)
    return RawSource(hp, FormatTable(formats, endian), cpus, endian, **kw)


#: ftrace's stack-trace entries: they belong to the record before them on the same CPU.
STACK_EVENTS = ("kernel_stack", "user_stack")


def _stack_addresses(ef, data, endian: str, long_size: int) -> tuple:
    """The return addresses of a kernel_stack/user_stack entry (``int size`` entries of
    ``unsigned long caller[]`` at the caller field's offset; the format's [8] is nominal)."""
    off = next((f.offset for f in ef.fields if f.name == "caller"), 16)
    n = struct.unpack_from(endian + "i", data, 8)[0] if len(data) >= 12 else 0
    n = max(0, min(n, (len(data) - off) // long_size))
    code = "Q" if long_size == 8 else "I"
    return tuple(f"{a:#x}" for a in struct.unpack_from(f"{endian}{n}{code}", data, off))


def _pair_stacks(stream, fmts, type_of, endian, long_size):
    """One CPU's (ts, cpu, data) with the stack entries that follow each record attached."""
    pending = None
    for ts, cpu, data in stream:
        ef = fmts.get(type_of(data, 0)[0]) if len(data) >= 2 else None
        if ef is not None and ef.system == "ftrace" and ef.name in STACK_EVENTS:
            if pending is not None:
                pending[3] += _stack_addresses(ef, data, endian, long_size)
            continue
        if pending is not None:
            yield tuple(pending)
        pending = [ts, cpu, data, ()]
    if pending is not None:
        yield tuple(pending)


def raw_records(src: RawSource, *, all_events: bool = False, other: Counter | None = None,
                decorate: Callable | None = None) -> Iterator[TraceRecord]:
    """Every record, time-ordered across CPUs.  Only kvmmmu events unless ``all_events``;
    others are counted in ``other`` by name (unknown ids as ``id:N``).  ftrace stack entries
    (``options/stacktrace``) become the ``stack`` (return addresses) of the record before them."""
    u16 = "<H" if src.endian == "<" else ">H"
    type_of = struct.Struct(u16).unpack_from
    fmts = src.formats
    long_size = src.header_page.commit_size
    streams = []
    for cpu, read, name in src.cpus:
        lost = src.lost.setdefault(f"cpu{cpu}", {})
        streams.append(_pair_stacks(iter_cpu(read, src.header_page, cpu, src.endian, lost, name),
                                    fmts, type_of, src.endian, long_size))
    n = 0
    for ts, cpu, data, stack in merge_cpus(streams):
        n += 1
        if len(data) < 2:
            raise TraceFormatError(f"cpu{cpu} record {n}: {len(data)} bytes, no common_type")
        ef = fmts.get(type_of(data, 0)[0])
        if ef is None:
            if other is not None:
                other[f"id:{type_of(data, 0)[0]}"] += 1
            continue
        if ef.system != "kvmmmu" and not all_events:
            if other is not None:
                other[ef.name] += 1
            continue
        rec = event_record(n, ef, data, cpu, ts, src.cmdlines, src.format, stack, src.ts_counts)
        if decorate is not None:
            decorate(rec)
        yield rec


def event_record_fields(f: dict, full_name: str) -> tuple:
    """(pid, flags text, fields) of one event's decoded fields: ``common_pid``, then
    ``common_flags:common_preempt_count`` in hex, then the event's own fields (``f`` without
    its ``common_*`` fields; ``f`` is changed)."""
    pid = f.pop("common_pid", 0)
    f.pop("common_type", None)
    cflags = f.pop("common_flags", 0)
    preempt = f.pop("common_preempt_count", 0)
    for k, v in (("common_pid", pid), ("common_flags", cflags), ("common_preempt_count", preempt)):
        if not isinstance(v, int):
            raise TraceFormatError(f"{full_name}: {k} is not an integer field in its format "
                                   f"(a damaged format file?)")
    for k in [k for k in f if k.startswith("common_")]:
        del f[k]
    return pid, f"{cflags:#04x}:{preempt:x}", f


def event_record(n: int, ef, data, cpu: int, ts: int | None, comms: dict, source: str,
                 stack: tuple = (), ts_counts: bool = False) -> TraceRecord:
    """The TraceRecord of one raw event (``common_*`` fields + the event's, as the ring
    buffer and perf's PERF_SAMPLE_RAW store them) decoded with its format ``ef``; ``comms``
    maps ``common_pid`` to the task name.  ``ts_counts``: ``ts`` counts a clock that does not
    count ns (kept in ``ts`` as the count; ``ts_ns`` None)."""
    pid, flags, f = event_record_fields(ef.decode(data), ef.full_name)
    if ts is None:
        secs, ts_ns = 0.0, None
    else:
        secs, ts_ns = (float(ts), None) if ts_counts else (ts / 1e9, ts)
    return TraceRecord(n, comms.get(pid, ""), pid, cpu, flags, secs, ef.name, f, source=source,
                       ts_ns=ts_ns, system=ef.system, stack=stack)

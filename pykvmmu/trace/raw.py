"""Records from binary ring-buffer data: a :class:`RawSource` (format files + per-CPU page
streams, filled by the capture, tracefs-directory and trace.dat readers) decoded into
:class:`~pykvmmu.trace.record.TraceRecord` objects carrying every field of each event."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .record import TraceFormatError, TraceRecord
from .ringbuf import iter_cpu, merge_cpus
from .tpformat import (EventFormat, HeaderPage, check_header_event, parse_event_format,
                       parse_header_page)

__all__ = ["RawSource", "raw_records"]


@dataclass
class RawSource:
    """What a binary reader found: page layout, event formats by id, per-CPU readers
    (``(cpu, read(n) -> bytes, name)``), saved command lines, kernel release."""
    header_page: HeaderPage
    formats: dict                                  # id -> EventFormat
    cpus: list                                     # [(cpu, read, name)]
    endian: str = "<"
    cmdlines: dict = field(default_factory=dict)   # pid -> comm
    kernel_release: str | None = None
    format: str = "ringbuf"
    lost: dict = field(default_factory=dict)       # "cpuN" -> {...}
    meta: dict = field(default_factory=dict)
    closers: list = field(default_factory=list)

    def close(self) -> None:
        for c in self.closers:
            try:
                c()
            except OSError:
                pass
        self.closers.clear()


def build_source(header_page: str, header_event: str | None, formats: list, cpus: list,
                 endian: str = "<", **kw) -> RawSource:
    """A RawSource from texts: ``formats`` is [(system, format text)]."""
    hp = parse_header_page(header_page)
    check_header_event(header_event)
    by_id = {}
    for system, text in formats:
        ef = parse_event_format(text, system, endian)
        by_id[ef.id] = ef
    return RawSource(hp, by_id, cpus, endian, **kw)


def raw_records(src: RawSource, *, all_events: bool = False, other: Counter | None = None,
                decorate: Callable | None = None) -> Iterator[TraceRecord]:
    """Every record, time-ordered across CPUs.  Only kvmmmu events unless ``all_events``;
    others are counted in ``other`` by ``system:name`` (unknown ids as ``id:N``)."""
    streams = []
    for cpu, read, name in src.cpus:
        lost = src.lost.setdefault(f"cpu{cpu}", {})
        streams.append(iter_cpu(read, src.header_page, cpu, src.endian, lost, name))
    u16 = "<H" if src.endian == "<" else ">H"
    import struct
    type_of = struct.Struct(u16).unpack_from
    fmts: dict = src.formats
    n = 0
    for ts, cpu, data in merge_cpus(streams):
        n += 1
        if len(data) < 2:
            raise TraceFormatError(f"cpu{cpu} record {n}: {len(data)} bytes, no common_type")
        ef: EventFormat | None = fmts.get(type_of(data, 0)[0])
        if ef is None:
            if other is not None:
                other[f"id:{type_of(data, 0)[0]}"] += 1
            continue
        if ef.system != "kvmmmu" and not all_events:
            if other is not None:
                other[ef.name] += 1
            continue
        f = ef.decode(data)
        pid = f.pop("common_pid", 0)
        f.pop("common_type", None)
        cflags = f.pop("common_flags", 0)
        preempt = f.pop("common_preempt_count", 0)
        for k in [k for k in f if k.startswith("common_")]:
            del f[k]
        rec = TraceRecord(n, src.cmdlines.get(pid, ""), pid, cpu, f"{cflags:#04x}:{preempt:x}",
                          ts / 1e9, ef.name, f, source=src.format, ts_ns=ts, system=ef.system)
        if decorate is not None:
            decorate(rec)
        yield rec

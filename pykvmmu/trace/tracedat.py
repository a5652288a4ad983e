"""trace-cmd's ``trace.dat`` (file versions 6 and 7), read directly.

Layout (trace-cmd.dat.v6(5), trace-cmd.dat.v7(5)): ``\\x17\\x08\\x44`` ``tracing`` version
string, endianness byte, user-space long size, u32 page size.
v6 then stores, in order: ``header_page``/``header_event`` (name, u64 size, text), the ftrace
formats (u32 count, u64 size + text each), the event formats (u32 systems; name, u32 count,
u64 size + text each), kallsyms (u32 size), printk formats (u32 size), saved cmdlines (u64
size), u32 CPU count, optional ``options  `` (u16 id, u32 size, data; id 0 ends), then
``flyrecord`` and one (u64 offset, u64 size) per CPU.  A BUFFER option (id 3: u64 offset,
name) points to an instance's own ``flyrecord`` block.
v7 stores a compression header (``name\\0version\\0``), the u64 offset of the first OPTIONS
section, and sections (u16 id, u16 flags (1 = compressed: u32 compressed size, u32 size,
data), u32 string id, u64 size); options point to the HEADER_INFO (16), FTRACE_EVENTS (17),
EVENT_FORMATS (18), KALLSYMS (19), PRINTK (20), CMDLINES (21) sections; a BUFFER option
(u64 offset, name, clock, u32 page size, u32 CPUs, then u32 cpu, u64 offset, u64 size each)
locates each instance's per-CPU ring-buffer pages, which a compressed file stores as chunks
(u32 count; u32 compressed size, u32 size, data each).  ``none`` and ``zlib`` are read with
the standard library, ``zstd`` (trace-cmd 3's default) with the ``zstandard`` package when it
is installed (``pip install 'pykvmmu[trace]'``); anything else raises UnsupportedTraceError.
UNAME (id 5, ``uname`` text) gives the kernel release.
"""
from __future__ import annotations

import os
import threading
import zlib

from .raw import RawSource, build_source, clock_name, mark_counts
from .record import TraceFormatError, UnsupportedTraceError

__all__ = ["open_tracedat"]

_MAGIC = b"\x17\x08\x44tracing"
OPT_DONE, OPT_CPUSTAT, OPT_BUFFER, OPT_UNAME, OPT_BUFFER_TEXT = 0, 2, 3, 5, 22
OPT_TRACECLOCK = 4
#: options that correct timestamps (OFFSET, TIME_SHIFT, TSC2NSEC), which this reader does not
#: apply: a file with one has its timestamps read as counts, not nanoseconds
_TS_CORRECTIONS = {7: "OFFSET", 12: "TIME_SHIFT", 14: "TSC2NSEC"}
SEC_HEADER_INFO, SEC_FTRACE_EVENTS, SEC_EVENT_FORMATS, SEC_KALLSYMS, SEC_PRINTK, SEC_CMDLINES = (
    16, 17, 18, 19, 20, 21)


class _File:
    """Positional reads on one file (independent cursors for the per-CPU streams)."""

    def __init__(self, f, name):
        self.f, self.name = f, name
        self._lock = threading.Lock()
        try:
            self.fd = f.fileno()
            os.pread(self.fd, 0, 0)
        except (AttributeError, OSError, ValueError):
            self.fd = None
        f.seek(0, os.SEEK_END)
        self.size = f.tell()

    def read(self, off: int, n: int) -> bytes:
        if off < 0 or off + n > self.size:
            raise TraceFormatError(f"{self.name}: read of {n} bytes at offset {off} runs past the "
                                   f"end of the file ({self.size} bytes)")
        if self.fd is not None:
            b = os.pread(self.fd, n, off)
        else:
            with self._lock:
                self.f.seek(off)
                b = self.f.read(n)
        if len(b) != n:
            raise TraceFormatError(f"{self.name}: short read at offset {off}")
        return b


class _Cursor:
    """Sequential decoding of a bytes block (a section, or the v6 header) in file endianness."""

    def __init__(self, data: bytes, endian: str, where: str, base: int = 0):
        self.d, self.e, self.pos, self.where, self.base = data, endian, 0, where, base

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.d):
            raise TraceFormatError(f"{self.where}: {n} bytes needed at offset "
                                   f"{self.base + self.pos}, only {len(self.d) - self.pos} left")
        b = self.d[self.pos:self.pos + n]
        self.pos += n
        return b

    def u(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little" if self.e == "<" else "big")

    def cstr(self) -> str:
        end = self.d.find(b"\0", self.pos)
        if end < 0:
            raise TraceFormatError(f"{self.where}: unterminated string at offset {self.base + self.pos}")
        s = self.d[self.pos:end].decode("utf-8", "replace")
        self.pos = end + 1
        return s

    def expect(self, tag: bytes) -> None:
        got = self.take(len(tag))
        if got != tag:
            raise TraceFormatError(f"{self.where}: expected {tag!r} at offset "
                                   f"{self.base + self.pos - len(tag)}, found {got!r}")


class _FileCursor(_Cursor):
    """A _Cursor reading the file itself (the v6 header is sequential and may sit before
    gigabytes of pages: nothing is read that is not needed)."""

    def __init__(self, fh: _File, pos: int, endian: str, where: str):
        super().__init__(b"", endian, where)
        self.fh, self.pos = fh, pos

    def take(self, n: int) -> bytes:
        if self.pos + n > self.fh.size:
            raise TraceFormatError(f"{self.where}: {n} bytes needed at offset {self.pos}, the file "
                                   f"ends at {self.fh.size}")
        b = self.fh.read(self.pos, n)
        self.pos += n
        return b

    def skip(self, n: int) -> None:
        if self.pos + n > self.fh.size:
            raise TraceFormatError(f"{self.where}: {n} bytes at offset {self.pos} run past the end")
        self.pos += n

    def cstr(self) -> str:
        out = b""
        while True:
            chunk = self.fh.read(self.pos, min(256, self.fh.size - self.pos))
            if not chunk:
                raise TraceFormatError(f"{self.where}: unterminated string at offset {self.pos}")
            end = chunk.find(b"\0")
            if end >= 0:
                out += chunk[:end]
                self.pos += end + 1
                return out.decode("utf-8", "replace")
            out += chunk
            self.pos += len(chunk)


def _header_info(c: _Cursor) -> tuple:
    c.expect(b"header_page\0")
    hp = c.take(c.u(8)).decode("utf-8", "replace")
    c.expect(b"header_event\0")
    he = c.take(c.u(8)).decode("utf-8", "replace")
    return hp, he


def _ftrace_formats(c: _Cursor) -> list:
    return [("ftrace", c.take(c.u(8)).decode("utf-8", "replace")) for _ in range(c.u(4))]


def _event_formats(c: _Cursor) -> list:
    out = []
    for _ in range(c.u(4)):
        system = c.cstr()
        for _ in range(c.u(4)):
            out.append((system, c.take(c.u(8)).decode("utf-8", "replace")))
    return out


def _cmdlines(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        pid, _, comm = line.strip().partition(" ")
        if pid.isdigit():
            out[int(pid)] = comm
    return out


def _release(uname: str | None) -> str | None:
    parts = (uname or "").split()
    return parts[2] if len(parts) >= 3 else None


class _Options:
    def __init__(self):
        self.uname = None
        self.buffers = []          # v6: (offset, name); v7: (name, page_size, [(cpu, off, size)])
        self.sections = {}
        self.cpustat = []
        self.text_buffer = False
        self.clocks = []           # the TRACECLOCK option's current clock, each BUFFER's (v7)
        self.corrections = []      # names of timestamp-correcting options present


def _parse_options(c: _Cursor, opts: _Options, version: int) -> int | None:
    """Options until DONE; returns the next options-section offset (v7) or None."""
    while True:
        oid = c.u(2)
        if oid == OPT_DONE and version == 6:
            return None
        size = c.u(4)
        data = _Cursor(c.take(size), c.e, f"{c.where} option {oid}", c.base + c.pos - size)
        if oid == OPT_DONE:
            return data.u(8) if size >= 8 else 0
        if oid == OPT_UNAME:
            opts.uname = data.cstr()
        elif oid == OPT_TRACECLOCK:
            clock = clock_name(data.d.decode("ascii", "replace"))
            if clock:
                opts.clocks.append(clock)
        elif oid in _TS_CORRECTIONS:
            opts.corrections.append(_TS_CORRECTIONS[oid])
        elif oid == OPT_CPUSTAT:
            opts.cpustat.append(data.d.split(b"\0", 1)[0].decode("utf-8", "replace"))
        elif oid == OPT_BUFFER:
            off = data.u(8)
            name = data.cstr()
            if version == 6:
                opts.buffers.append((off, name))
            else:
                opts.clocks.append(data.cstr())     # the clock trace-cmd says the buffer used
                page = data.u(4)
                cpus = [(data.u(4), data.u(8), data.u(8)) for _ in range(data.u(4))]
                opts.buffers.append((name, page, cpus, off))
        elif oid == OPT_BUFFER_TEXT:
            opts.text_buffer = True
        elif 16 <= oid <= 21:
            opts.sections[oid] = data.u(8)


def _clock(src: RawSource, opts: _Options) -> RawSource:
    """Mark a source whose timestamps are not nanoseconds: a named clock that counts something
    else, per-CPU stats printed as counts (kept by trace-cmd even where its clock name is
    wrong: `trace-cmd extract -B` of an x86-tsc instance names the top buffer's "local"), or
    a timestamp correction this reader does not apply."""
    mark_counts(src, opts.clocks, opts.cpustat, "CPUSTAT prints counts", opts.corrections)
    return src


def _lost_from_cpustat(texts: list) -> dict:
    out: dict[str, dict] = {}
    for t in texts:
        cpu = None
        d = {}
        for line in t.splitlines():
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k == "CPU" and v.isdigit():
                cpu = int(v)
            elif k in ("overrun", "commit overrun", "dropped events") and v.isdigit():
                d[f"stats {k}"] = int(v)
        if cpu is not None and any(d.values()):
            out.setdefault(f"cpu{cpu}", {}).update(d)
    return out


def _stream(fh: _File, off: int, size: int):
    """read(n) over [off, off + size) of the file."""
    state = [off, off + size]

    def read(n):
        pos, end = state
        n = min(n, end - pos)
        if n <= 0:
            return b""
        b = fh.read(pos, n)
        state[0] = pos + n
        return b
    return read


_CODECS = ("zlib", "zstd")


def _codec_check(comp: str, name: str) -> None:
    """Refuse a compression this reader cannot inflate (before anything is read)."""
    if comp == "none" or comp == "zlib":
        return
    if comp == "zstd":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise UnsupportedTraceError(
                f"{name}: trace.dat compressed with 'zstd' needs the zstandard package (pip install "
                "'pykvmmu[trace]'), or convert it with `trace-cmd convert --compression none`") from None
        return
    raise UnsupportedTraceError(f"{name}: trace.dat compressed with {comp!r}; only uncompressed, zlib "
                                "and zstd files are read (convert with `trace-cmd convert "
                                "--compression none`)")


def _inflate(comp: str, raw: bytes, usize: int, where: str) -> bytes:
    """One compressed block of ``usize`` bytes (a section or a ring-buffer chunk)."""
    try:
        if comp == "zlib":
            data = zlib.decompress(raw)
        else:
            import zstandard
            data = zstandard.ZstdDecompressor().decompress(raw, max_output_size=usize)
    except Exception as e:          # zlib.error / zstandard.ZstdError: damaged input
        raise TraceFormatError(f"{where}: bad {comp} data ({e})") from None
    if len(data) != usize:
        raise TraceFormatError(f"{where}: inflates to {len(data)} bytes, header says {usize}")
    return data


def _chunked(fh: _File, off: int, size: int, endian: str, where: str, comp: str = "zlib"):
    """read(n) over compressed chunks (u32 count; u32 csize, u32 usize, data each)."""
    state = {"pos": off + 4, "left": None, "buf": b""}
    state["left"] = int.from_bytes(fh.read(off, 4), "little" if endian == "<" else "big") if size else 0
    bo = "little" if endian == "<" else "big"

    def read(n):
        while len(state["buf"]) < n and state["left"]:
            hdr = fh.read(state["pos"], 8)
            csize, usize = int.from_bytes(hdr[:4], bo), int.from_bytes(hdr[4:], bo)
            raw = fh.read(state["pos"] + 8, csize)
            state["buf"] += _inflate(comp, raw, usize, f"{where}: chunk at {state['pos']}")
            state["pos"] += 8 + csize
            state["left"] -= 1
        out, state["buf"] = state["buf"][:n], state["buf"][n:]
        return out
    return read


def open_tracedat(f, name: str = "trace.dat") -> RawSource:
    """A RawSource over a seekable binary trace.dat file object."""
    fh = _File(f, name)
    head = fh.read(0, min(fh.size, 64))
    if not head.startswith(_MAGIC):
        raise TraceFormatError(f"{name}: no trace.dat magic")
    c = _Cursor(head, "<", name)
    c.take(len(_MAGIC))
    vs = c.cstr()
    if vs not in ("6", "7"):
        raise UnsupportedTraceError(f"{name}: trace.dat file version {vs!r} (this reader knows 6 and 7)")
    version = int(vs)
    endian = "<" if c.u(1) == 0 else ">"
    c.u(1)                                           # user-space long size
    c.e = endian
    page_size = c.u(4)
    if version == 6:
        return _v6(fh, c.pos, endian, page_size, name)
    comp = c.cstr()
    c.cstr()                                         # compression version
    first_opts = c.u(8)
    return _v7(fh, endian, comp, first_opts, name)


def v6_metadata(c, cmdlines: bool = True) -> tuple:
    """The v6 metadata sequence at cursor ``c`` (a cursor with take/u/cstr/expect/skip):
    header_page/header_event, ftrace and event formats, kallsyms and printk formats
    (skipped), saved cmdlines (when ``cmdlines``) -> (header_page, header_event, formats,
    {pid: comm}).  perf's HEADER_TRACING_DATA (version "0.6") stores the same sequence."""
    hp, he = _header_info(c)
    formats = _ftrace_formats(c) + _event_formats(c)
    c.skip(c.u(4))                                   # kallsyms
    c.skip(c.u(4))                                   # printk formats
    comms = _cmdlines(c.take(c.u(8)).decode("utf-8", "replace")) if cmdlines else {}
    return hp, he, formats, comms


def _v6(fh, pos, endian, page_size, name) -> RawSource:
    c = _FileCursor(fh, pos, endian, name)
    hp, he, formats, cmdlines = v6_metadata(c)
    ncpu = c.u(4)
    opts = _Options()
    tag = c.take(10)
    if tag == b"options  \0":
        _parse_options(c, opts, 6)
        tag = c.take(10)
    if tag == b"latency  \0":
        raise UnsupportedTraceError(f"{name}: a latency-tracer trace.dat (text, not ring-buffer pages)")
    if tag != b"flyrecord\0":
        raise TraceFormatError(f"{name}: expected 'flyrecord' at offset {c.pos - 10}, found {tag!r}")
    cpus = []
    for cpu in range(ncpu):
        off, size = c.u(8), c.u(8)
        if size:
            cpus.append((cpu, _stream(fh, off, size), f"cpu{cpu}"))
    for off, bname in opts.buffers:
        bc = _FileCursor(fh, off, endian, f"{name} buffer {bname}")
        bc.expect(b"flyrecord\0")
        for cpu in range(ncpu):
            o, size = bc.u(8), bc.u(8)
            if size:
                cpus.append((cpu, _stream(fh, o, size), f"{bname}:cpu{cpu}"))
    src = build_source(hp, he, formats, cpus, endian, cmdlines=cmdlines,
                       kernel_release=_release(opts.uname), format="trace.dat",
                       meta={"file_version": 6, "uname": opts.uname, "page_size": page_size})
    src.lost.update(_lost_from_cpustat(opts.cpustat))
    return _clock(src, opts)


def _section(fh: _File, off: int, endian: str, comp: str, name: str, want: int | None = None):
    hdr = _Cursor(fh.read(off, 16), endian, f"{name} section at {off}", off)
    sid, flags = hdr.u(2), hdr.u(2)
    hdr.u(4)                                         # description string id
    size = hdr.u(8)
    if want is not None and sid != want:
        raise TraceFormatError(f"{name}: section at {off} has id {sid}, expected {want}")
    body = fh.read(off + 16, size)
    if flags & 1:
        if comp not in _CODECS:
            raise TraceFormatError(f"{name}: section {sid} is compressed but the file names "
                                   f"compression {comp!r}")
        b = _Cursor(body, endian, f"{name} section {sid}", off + 16)
        csize, usize = b.u(4), b.u(4)
        body = _inflate(comp, b.take(csize), usize, f"{name}: section {sid} at {off}")
    return sid, _Cursor(body, endian, f"{name} section {sid}", off + 16)


def _v7(fh, endian, comp, first_opts, name) -> RawSource:
    _codec_check(comp, name)
    opts = _Options()
    off, seen = first_opts, set()
    while off:
        if off in seen:
            raise TraceFormatError(f"{name}: options sections loop at offset {off}")
        seen.add(off)
        _, c = _section(fh, off, endian, comp, name, 0)
        off = _parse_options(c, opts, 7)
    if opts.text_buffer and not opts.buffers:
        raise UnsupportedTraceError(f"{name}: a latency-tracer trace.dat (text, not ring-buffer pages)")
    for need in (SEC_HEADER_INFO, SEC_EVENT_FORMATS):
        if need not in opts.sections:
            raise TraceFormatError(f"{name}: no option pointing to section {need}")
    _, c = _section(fh, opts.sections[SEC_HEADER_INFO], endian, comp, name, SEC_HEADER_INFO)
    hp, he = _header_info(c)
    formats = []
    if SEC_FTRACE_EVENTS in opts.sections:
        _, c = _section(fh, opts.sections[SEC_FTRACE_EVENTS], endian, comp, name, SEC_FTRACE_EVENTS)
        formats += _ftrace_formats(c)
    _, c = _section(fh, opts.sections[SEC_EVENT_FORMATS], endian, comp, name, SEC_EVENT_FORMATS)
    formats += _event_formats(c)
    cmdlines = {}
    if SEC_CMDLINES in opts.sections:
        _, c = _section(fh, opts.sections[SEC_CMDLINES], endian, comp, name, SEC_CMDLINES)
        cmdlines = _cmdlines(c.take(c.u(8)).decode("utf-8", "replace"))
    cpus = []
    for bname, page, percpu, sec_off in opts.buffers:
        hdr = _Cursor(fh.read(sec_off, 16), endian, f"{name} buffer {bname!r}", sec_off)
        hdr.u(2)
        compressed = hdr.u(2) & 1
        for cpu, o, size in percpu:
            if not size:
                continue
            label = f"{bname + ':' if bname else ''}cpu{cpu}"
            cpus.append((cpu, _chunked(fh, o, size, endian, f"{name} {label}", comp) if compressed
                         else _stream(fh, o, size), label))
    src = build_source(hp, he, formats, cpus, endian, cmdlines=cmdlines,
                       kernel_release=_release(opts.uname), format="trace.dat",
                       meta={"file_version": 7, "uname": opts.uname, "compression": comp})
    src.lost.update(_lost_from_cpustat(opts.cpustat))
    return _clock(src, opts)

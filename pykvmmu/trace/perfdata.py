"""Linux ``perf`` recordings of tracepoints (``perf record -e 'kvmmmu:*'``): ``perf.data``
files and pipe-mode streams (``perf record -o -``), read as a stream of
:class:`~pykvmmu.trace.record.TraceRecord`.

Written from tools/perf/Documentation/perf.data-file-format.txt and
include/uapi/linux/perf_event.h (torvalds/linux); no perf code is used.

A file starts with ``struct perf_header`` (magic ``PERFILE2`` as a native-endian u64, u64
header size 104, u64 attr_size, sections {u64 offset, u64 size} attrs, data, event_types,
then a 256-bit feature bitmap).  ``attrs`` holds ``attr_size``-byte entries: a
``perf_event_attr`` (u32 type, u32 size, u64 config, u64 sample_period, u64 sample_type,
u64 read_format, u64 flag bits with ``sample_id_all`` at bit 18, ...) followed by the
section of its u64 sample ids.  A tracepoint's attr has type 2 (PERF_TYPE_TRACEPOINT) and
config = the event's ``ID:``.  ``data`` is a sequence of records (u32 type, u16 misc, u16
size including this header).  The feature sections follow the data: one {offset, size}
per set bit, in bit order; HEADER_TRACING_DATA (bit 1) is trace-cmd's tracing data (magic,
version ``0.6``, endianness, long size, page size, then the trace.dat v6 metadata:
:func:`~pykvmmu.trace.tracedat.v6_metadata`), HEADER_OSRELEASE (bit 4) a
``perf_header_string`` (u32 length, NUL-terminated text) with ``uname -r``.

A pipe stream starts with ``{u64 magic, u64 size = 16}``; attrs, features and the tracing
data arrive as records (PERF_RECORD_HEADER_ATTR 64: attr then u64 ids;
PERF_RECORD_HEADER_FEATURE 80: u64 feature bit then its section; PERF_RECORD_HEADER_TRACING_DATA
66: u32 size, then that many bytes after the record) before the samples.

PERF_RECORD_SAMPLE (9) fields appear in the documented order of the sample_type bits:
IDENTIFIER, IP, TID, TIME, ADDR, ID, STREAM_ID, CPU, PERIOD, READ (per read_format),
CALLCHAIN (u64 nr, nr addresses with PERF_CONTEXT_* markers), RAW (u32 size, the event's
``common_*`` and own fields as the ring buffer stores them); what follows RAW is not needed.
With ``sample_id_all``, other records end with the sample id fields TID, TIME, ID,
STREAM_ID, CPU, IDENTIFIER.  COMM (3) gives task names, LOST (2) and LOST_SAMPLES (13)
count losses.  Records are written per CPU buffer in rounds closed by
PERF_RECORD_FINISHED_ROUND (68): after a round marker everything up to the largest time of
the round before it can be emitted (perf's ordered-events rule), so memory stays bounded
by two rounds.

``perf record -z`` writes the records in zstd: PERF_RECORD_COMPRESSED (81: the header, then
compressed bytes) or, from perf 6.15, PERF_RECORD_COMPRESSED2 (83: the header, u64
data_size, the compressed bytes, zero padding to 8 bytes).  All of them continue one zstd
stream (perf flushes it per record: only the first starts with the frame magic), and the
records it yields may straddle two compressed records.  HEADER_COMPRESSED (feature 27:
u32 version, type (1 = zstd), level, ratio, mmap_len) tells the compressor; perf decompresses
each record into an mmap_len buffer.  Read with the optional ``zstandard`` package.
"""
from __future__ import annotations

import heapq
import os
import struct
from typing import Any

from .raw import FormatTable, close_all, count_lost, event_record
from .record import TraceFormatError, UnsupportedTraceError
from .tpformat import check_header_event, parse_header_page
from .tracedat import v6_metadata

__all__ = ["open_perfdata", "open_perf_pipe", "perf_kind", "PerfSource"]

MAGIC = b"PERFILE2"
_MAGIC_SWAPPED = MAGIC[::-1]
_MAGIC_V1 = b"PERFFILE"
_TRACING_MAGIC = b"\x17\x08\x44tracing"
FILE_HEADER_SIZE, PIPE_HEADER_SIZE = 104, 16

# include/uapi/linux/perf_event.h: enum perf_event_sample_format
S_IP, S_TID, S_TIME, S_ADDR, S_READ, S_CALLCHAIN, S_ID, S_CPU, S_PERIOD, S_STREAM_ID, S_RAW = (
    1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8, 1 << 9, 1 << 10)
S_IDENTIFIER = 1 << 16
#: every sample_type bit up to PERF_SAMPLE_WEIGHT_STRUCT (1 << 24); a later bit is refused
S_KNOWN = (1 << 25) - 1
# enum perf_event_read_format
R_TOTAL_TIME_ENABLED, R_TOTAL_TIME_RUNNING, R_ID, R_GROUP, R_LOST = 1, 2, 4, 8, 16
R_KNOWN = 31
ATTR_SAMPLE_ID_ALL = 1 << 18
PERF_TYPE_TRACEPOINT = 2
#: callchain entries at or above this are PERF_CONTEXT_* markers, not addresses
PERF_CONTEXT_MAX = (1 << 64) - 4095

# enum perf_event_type, and perf's own record types (perf.data-file-format.txt)
REC_LOST, REC_COMM, REC_SAMPLE, REC_LOST_SAMPLES = 2, 3, 9, 13
REC_HEADER_ATTR, REC_HEADER_EVENT_TYPE, REC_HEADER_TRACING_DATA = 64, 65, 66
REC_FINISHED_ROUND, REC_AUXTRACE, REC_HEADER_FEATURE, REC_COMPRESSED = 68, 71, 80, 81
REC_COMPRESSED2 = 83
#: record types that may precede the data in a pipe (metadata perf synthesizes first)
_PIPE_HEADER_TYPES = {64, 65, 66, 67, 69, 70, 73, 74, 75, 78, 79, 80, 82}
FEAT_TRACING_DATA, FEAT_HOSTNAME, FEAT_OSRELEASE, FEAT_VERSION = 1, 3, 4, 5
FEAT_COMPRESSED = 27
#: the features this reader uses
_FEATURES = (FEAT_TRACING_DATA, FEAT_HOSTNAME, FEAT_OSRELEASE, FEAT_VERSION, FEAT_COMPRESSED)
PERF_COMP_ZSTD = 1
#: decompressed bytes one compressed record may give without HEADER_COMPRESSED's mmap_len (a
#: damaged file must not expand without bound); with it, 4 x mmap_len (perf itself takes 1 x)
_ZSTD_OUT_DEFAULT = 64 << 20
_ZSTD_SLICE = 256            # compressed bytes per feed: at most 64 zstd blocks (8 MiB) each
_MAX_STR = 1 << 16


def perf_kind(head: bytes) -> str | None:
    """'perf.data' (a file header), 'perf-pipe' (a pipe header) or None from a file's first
    bytes.  A byte-swapped (other-endian) or version-1 (``PERFFILE``) magic counts as
    'perf.data', so that the reader refuses it by name."""
    if head[:8] in (_MAGIC_SWAPPED, _MAGIC_V1) or (head[:7] == MAGIC[:7] and head[7:8] != MAGIC[7:8]
                                                    and len(head) >= 8):
        return "perf.data"
    if 4 <= len(head) < 8 and MAGIC.startswith(head):
        return "perf.data"                          # a file cut inside the magic
    if head[:8] != MAGIC:
        return None
    if len(head) >= 16 and struct.unpack_from("<Q", head, 8)[0] == PIPE_HEADER_SIZE:
        return "perf-pipe"
    return "perf.data"


def _check_magic(head: bytes, name: str) -> None:
    if len(head) < 8:
        raise TraceFormatError(f"{name}: the file ends after {len(head)} bytes, inside the perf "
                               "magic at offset 0 (truncated)")
    if head[:8] == _MAGIC_SWAPPED:
        raise UnsupportedTraceError(f"{name}: a big-endian perf.data (magic {head[:8]!r}); only "
                                    "little-endian files are read")
    if head[:8] == _MAGIC_V1:
        raise UnsupportedTraceError(f"{name}: a version-1 perf.data (magic 'PERFFILE'); only "
                                    "'PERFILE2' files are read")
    if head[:8] != MAGIC:
        raise UnsupportedTraceError(f"{name}: perf.data magic {head[:8]!r} at offset 0 is not "
                                    "'PERFILE2' (unknown version)")


class _Seq:
    """Sequential reads from ``read(n)`` (which returns at most n bytes, fewer only at the
    end) with the absolute offset kept for messages; ``end`` bounds a section."""

    def __init__(self, read, pos: int, where: str, end: int | None = None):
        self._read, self.pos, self.where, self.end = read, pos, where, end
        self.e = "<"

    def take(self, n: int) -> bytes:
        if self.end is not None and self.pos + n > self.end:
            raise TraceFormatError(f"{self.where}: {n} bytes needed at offset {self.pos}, the section "
                                   f"ends at {self.end}")
        if n <= 1 << 20:
            b = self._read(n) if n else b""
        else:                                # a damaged size must not allocate it up front
            parts, left = [], n
            while left:
                part = self._read(min(left, 1 << 20))
                if not part:
                    break
                parts.append(part)
                left -= len(part)
            b = b"".join(parts)
        if len(b) != n:
            raise TraceFormatError(f"{self.where}: {n} bytes needed at offset {self.pos}, the file "
                                   f"ends after {len(b)} (truncated?)")
        self.pos += n
        return b

    def u(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def skip(self, n: int) -> None:
        while n > 0:
            k = min(n, 1 << 20)
            self.take(k)
            n -= k

    def cstr(self) -> str:
        out = bytearray()
        start = self.pos
        while True:
            c = self.take(1)
            if c == b"\0":
                return out.decode("utf-8", "replace")
            out += c
            if len(out) > _MAX_STR:
                raise TraceFormatError(f"{self.where}: unterminated string at offset {start}")

    def expect(self, tag: bytes) -> None:
        got = self.take(len(tag))
        if got != tag:
            raise TraceFormatError(f"{self.where}: expected {tag!r} at offset {self.pos - len(tag)}, "
                                   f"found {got!r}")


def _pread_reader(f, off: int, size: int):
    """read(n) over [off, off + size) of a seekable binary file (pread when it has a file
    descriptor), returning fewer bytes only where the file ends."""
    state = [off, off + size]
    try:
        fd = f.fileno()
        os.pread(fd, 0, 0)
    except (AttributeError, OSError, ValueError):
        fd = None

    def read(n):
        pos, end = state
        n = max(0, min(n, end - pos))
        if fd is not None:
            b = os.pread(fd, n, pos)
        else:
            f.seek(pos)
            b = f.read(n)
        state[0] = pos + len(b)
        return b
    return read


class _Buffered:
    """read(n) over another read(k) with 1 MiB read-ahead (the data section, record by record)."""

    def __init__(self, read):
        self._read, self._buf, self._i = read, b"", 0

    def __call__(self, n: int) -> bytes:
        if self._i + n <= len(self._buf):
            b = self._buf[self._i:self._i + n]
            self._i += n
            return b
        rest = self._buf[self._i:]
        more = self._read(max(n - len(rest), 1 << 20))
        self._buf, self._i = rest + more, 0
        b = self._buf[:n]
        self._i = len(b)
        return b


#: the fixed-size sample fields before PERF_SAMPLE_READ, in their documented order
_FIXED_ORDER = (S_IDENTIFIER, S_IP, S_TID, S_TIME, S_ADDR, S_ID, S_STREAM_ID, S_CPU, S_PERIOD)


class Attr:
    """One ``perf_event_attr`` with its sample ids."""

    def __init__(self, raw: bytes, where: str):
        if len(raw) < 64:
            raise TraceFormatError(f"{where}: perf_event_attr of {len(raw)} bytes (at least 64, "
                                   "PERF_ATTR_SIZE_VER0)")
        (self.type, self.size, self.config, _period, self.sample_type,
         self.read_format, self.flags) = struct.unpack_from("<IIQQQQQ", raw, 0)
        self.sample_id_all = bool(self.flags & ATTR_SAMPLE_ID_ALL)
        self.ids: list = []
        self.where = where
        st = self.sample_type
        #: byte offset of the sample id in a sample's body, or None without one
        self.id_pos = (0 if st & S_IDENTIFIER else
                       8 * bin(st & (S_IP | S_TID | S_TIME | S_ADDR)).count("1") if st & S_ID else None)
        fixed = [b for b in _FIXED_ORDER if st & b]
        #: the u64 words before READ (IDENTIFIER .. PERIOD) in one unpack
        self.prefix = struct.Struct(f"<{len(fixed)}Q")
        self.time_i = fixed.index(S_TIME) if S_TIME in fixed else None
        self.cpu_i = fixed.index(S_CPU) if S_CPU in fixed else None

    def check(self) -> None:
        st = self.sample_type
        if st & ~S_KNOWN:
            raise UnsupportedTraceError(f"{self.where}: sample_type {st:#x} has bits this reader does "
                                        f"not know ({st & ~S_KNOWN:#x}); samples cannot be parsed")
        if st & S_READ and self.read_format & ~R_KNOWN:
            raise UnsupportedTraceError(f"{self.where}: read_format {self.read_format:#x} has unknown "
                                        "bits; samples with PERF_SAMPLE_READ cannot be parsed")
        if self.type == PERF_TYPE_TRACEPOINT and not st & S_RAW:
            raise UnsupportedTraceError(f"{self.where}: tracepoint {self.config} recorded without "
                                        f"PERF_SAMPLE_RAW (sample_type {st:#x}): no event fields")

    def read_size(self, body: bytes, off: int, where: str) -> int:
        """Bytes of the PERF_SAMPLE_READ block at ``off``."""
        rf = self.read_format
        extra = bin(rf & (R_TOTAL_TIME_ENABLED | R_TOTAL_TIME_RUNNING)).count("1")
        per = 1 + bin(rf & (R_ID | R_LOST)).count("1")
        if rf & R_GROUP:
            nr = _u64(body, off, where)
            if nr > len(body) // 8:
                raise TraceFormatError(f"{where}: read group of {nr} values")
            return 8 * (1 + extra + nr * per)
        return 8 * (extra + per)


def _u64(body, off: int, where: str) -> int:
    if off + 8 > len(body):
        raise TraceFormatError(f"{where}: record ends at {len(body) + 8} bytes, field at {off + 8} "
                               "needs 8 more")
    return struct.unpack_from("<Q", body, off)[0]


_TRAILER_ORDER = (S_TID, S_TIME, S_ID, S_STREAM_ID, S_CPU, S_IDENTIFIER)


class PerfSource:
    """What a perf reader found; ``records()`` yields the TraceRecords in time order."""

    def __init__(self, name: str, fmt: str):
        self.name, self.format = name, fmt
        self.attrs: list = []
        self.by_id: dict = {}
        self.formats: FormatTable | None = None
        self.cmdlines: dict = {}
        self.kernel_release: str | None = None
        self.lost: dict = {}
        self.meta: dict = {}
        self.closers: list = []
        self._seq: _Seq | None = None
        self._pending: tuple | None = None      # the first data record of a pipe
        self._pipe = False
        self._td: tuple | None = None           # (offset, bytes) of pipe tracing data
        self._zstd: Any = None                  # the decompressor of perf record -z data
        self._zbuf = bytearray()                # decompressed bytes not yet a whole record
        self._zoff = 0                          # their offset in the decompressed stream
        self._zlimit = _ZSTD_OUT_DEFAULT

    def close(self) -> None:
        close_all(self.closers)

    # -- metadata ------------------------------------------------------------------------
    def _add_attr(self, a: Attr) -> None:
        a.check()
        self.attrs.append(a)
        for i in a.ids:
            self.by_id[i] = a

    def _finish_attrs(self) -> None:
        if not self.attrs:
            raise TraceFormatError(f"{self.name}: no perf_event_attr (no events recorded)")
        if len(self.attrs) > 1:
            pos = {a.id_pos for a in self.attrs}
            if len(pos) != 1 or None in pos:
                raise UnsupportedTraceError(f"{self.name}: {len(self.attrs)} events whose samples do not "
                                            "carry the sample id at one position (IDENTIFIER or ID)")
        if any(a.sample_id_all for a in self.attrs):
            bits = {a.sample_type & sum(_TRAILER_ORDER) for a in self.attrs}
            if len(bits) != 1 or not all(a.sample_id_all for a in self.attrs):
                raise UnsupportedTraceError(f"{self.name}: events with different sample_id_all "
                                            "trailers")

    def _tracing_data(self, c: _Seq) -> None:
        c.expect(_TRACING_MAGIC)
        version = c.cstr()
        if version not in ("0.5", "0.6"):
            raise UnsupportedTraceError(f"{c.where}: tracing data version {version!r} (this reader "
                                        "knows 0.5 and 0.6)")
        if c.u(1) != 0:
            raise UnsupportedTraceError(f"{c.where}: big-endian tracing data")
        c.u(1)                                           # long size
        page_size = c.u(4)
        hp, he, formats, comms = v6_metadata(c, cmdlines=version == "0.6")
        hpage = parse_header_page(hp)
        check_header_event(he)
        self.formats = FormatTable(formats, "<")
        self.cmdlines.update(comms)
        self.meta.update(tracing_data_version=version, page_size=page_size,
                         header_page_commit_size=hpage.commit_size)

    def _feature(self, bit: int, c: _Seq, size: int) -> None:
        if bit == FEAT_TRACING_DATA:
            self._tracing_data(c)
        elif bit in (FEAT_HOSTNAME, FEAT_OSRELEASE, FEAT_VERSION):
            n = c.u(4)
            if n > size - 4:
                raise TraceFormatError(f"{c.where}: string of {n} bytes in a {size}-byte section")
            s = c.take(n).split(b"\0", 1)[0].decode("utf-8", "replace")
            key = {FEAT_HOSTNAME: "hostname", FEAT_OSRELEASE: "osrelease", FEAT_VERSION: "perf_version"}[bit]
            self.meta[key] = s
            if bit == FEAT_OSRELEASE:
                self.kernel_release = s or None
        elif bit == FEAT_COMPRESSED:
            if size < 20:
                raise TraceFormatError(f"{c.where}: HEADER_COMPRESSED of {size} bytes (needs 20)")
            version, ctype, level, ratio, mmap_len = (c.u(4) for _ in range(5))
            if ctype != PERF_COMP_ZSTD:
                raise UnsupportedTraceError(f"{c.where}: records compressed with type {ctype} (this "
                                            f"reader knows zstd, type {PERF_COMP_ZSTD})")
            self.meta.update(compression="zstd", compression_level=level, compression_mmap_len=mmap_len)
            if mmap_len:
                self._zlimit = 4 * mmap_len

    def _need_tracing_data(self) -> None:
        if self.formats is None:
            raise TraceFormatError(f"{self.name}: no tracing data (HEADER_TRACING_DATA): not a "
                                   "tracepoint recording")

    # -- records -------------------------------------------------------------------------
    def _records(self):
        """(offset, type, misc, body) of each record of the data, and of the pipe's tail."""
        c = self._seq
        if self._pending is not None:
            yield self._pending
            self._pending = None
        while True:
            yield from self._unzipped()
            off = c.pos
            if c.end is not None and off >= c.end:
                self._zip_end(off)
                return
            b = c._read(8) if c.end is None else c.take(8)
            if c.end is None:
                if not b:
                    self._zip_end(off)
                    return
                if len(b) != 8:
                    raise TraceFormatError(f"{self.name}: record header at offset {off} cut after "
                                           f"{len(b)} bytes (truncated?)")
                c.pos += 8
            typ, misc, size = struct.unpack("<IHH", b)
            if size < 8:
                raise TraceFormatError(f"{self.name}: record at offset {off} (type {typ}) has size "
                                       f"{size} (< 8, its own header)")
            body = c.take(size - 8)
            if typ == REC_COMPRESSED or typ == REC_COMPRESSED2:
                self._unzip(off, typ, body)
                continue
            if typ == REC_HEADER_TRACING_DATA and self._pipe:
                if len(body) < 4:
                    raise TraceFormatError(f"{self.name}: tracing-data record at offset {off} too short")
                n = struct.unpack_from("<I", body, 0)[0]
                self._td = (c.pos, c.take(n))           # the data follows the record
            yield off, typ, misc, body
            if typ == REC_AUXTRACE:                 # its data follows the record
                c.skip(_u64(body, 0, f"{self.name}: AUXTRACE record at offset {off}"))

    def _unzip(self, off: int, typ: int, body: bytes) -> None:
        """Feed one PERF_RECORD_COMPRESSED(2) record's data to the stream's decompressor."""
        where = f"{self.name}: compressed record at offset {off}"
        if typ == REC_COMPRESSED2:
            n = _u64(body, 0, where)
            if n > len(body) - 8 or len(body) - 8 - n >= 8:
                raise TraceFormatError(f"{where}: data_size {n} in a {len(body) + 8}-byte "
                                       "PERF_RECORD_COMPRESSED2 (header, u64, data, padding < 8)")
            body = body[8:8 + n]
        if self._zstd is None:
            try:
                import zstandard
            except ImportError:
                raise UnsupportedTraceError(f"{where}: `perf record -z` data needs the zstandard "
                                            "package (pip install zstandard, or pykvmmu[trace])") from None
            self._zstd = zstandard.ZstdDecompressor().decompressobj()
        got = 0
        try:
            for i in range(0, len(body), _ZSTD_SLICE):
                out = self._zstd.decompress(body[i:i + _ZSTD_SLICE])
                got += len(out)
                if got > self._zlimit:
                    raise TraceFormatError(f"{where}: decompresses to more than {self._zlimit} bytes "
                                           "(damaged? perf's own reader takes HEADER_COMPRESSED's "
                                           "mmap_len)")
                self._zbuf += out
        except TraceFormatError:
            raise
        except Exception as e:       # zstandard.ZstdError, or data after the end of the stream
            raise TraceFormatError(f"{where}: damaged zstd data ({e})") from None

    def _unzipped(self):
        """(offset, type, misc, body) of each whole record decompressed so far, taken off the
        buffer before it is given (a reader may stop after any); ``offset`` names the record
        by its place in the decompressed stream."""
        zb = self._zbuf
        while len(zb) >= 8:
            typ, misc, size = struct.unpack_from("<IHH", zb, 0)
            at = self._zoff
            if size < 8:
                raise TraceFormatError(f"{self.name}: decompressed record at byte {at} of the zstd "
                                       f"data (type {typ}) has size {size} (< 8, its own header)")
            if len(zb) < size:
                return
            if typ in (REC_AUXTRACE, REC_COMPRESSED, REC_COMPRESSED2, REC_HEADER_TRACING_DATA):
                raise UnsupportedTraceError(f"{self.name}: record type {typ} inside compressed data "
                                            f"(byte {at} of the zstd data)")
            body = bytes(zb[8:size])
            del zb[:size]                  # bytearray drops its front in place
            self._zoff = at + size
            yield f"{at} of the zstd data", typ, misc, body

    def _zip_end(self, off: int) -> None:
        if self._zbuf:
            raise TraceFormatError(f"{self.name}: the data ends at offset {off} with {len(self._zbuf)} "
                                   "decompressed bytes that are not a whole record (truncated?)")

    def _trailer(self, body: bytes) -> tuple:
        """(time, cpu) from a non-sample record's sample_id_all trailer, None where absent."""
        a = self.attrs[0]
        if not a.sample_id_all:
            return None, None
        st = a.sample_type
        present = [b for b in _TRAILER_ORDER if st & b]
        off = len(body) - 8 * len(present)
        if off < 0:
            return None, None
        ts = cpu = None
        for b in present:
            if b == S_TIME:
                ts = struct.unpack_from("<Q", body, off)[0]
            elif b == S_CPU:
                cpu = struct.unpack_from("<I", body, off)[0]
            off += 8
        return ts, cpu

    def _sample(self, off: int, body: bytes) -> tuple:
        """(attr, time, cpu, callchain, raw) of a PERF_RECORD_SAMPLE body."""
        where = f"{self.name}: sample at offset {off}"
        if len(self.attrs) == 1:
            a = self.attrs[0]
        else:
            sid = _u64(body, self.attrs[0].id_pos, where)
            a = self.by_id.get(sid)
            if a is None:
                raise TraceFormatError(f"{where}: sample id {sid} belongs to no recorded event")
        st = a.sample_type
        p = a.prefix.size
        if p > len(body):
            raise TraceFormatError(f"{where}: {len(body) + 8}-byte record, sample_type {st:#x} needs "
                                   f"{p + 8} bytes before PERF_SAMPLE_READ")
        words = a.prefix.unpack_from(body, 0)
        ts = None if a.time_i is None else words[a.time_i]
        cpu = None if a.cpu_i is None else words[a.cpu_i] & 0xFFFFFFFF
        chain: tuple = ()
        if st & S_READ:
            p += a.read_size(body, p, where)
        if st & S_CALLCHAIN:
            nr = _u64(body, p, where)
            if nr > (len(body) - p - 8) // 8:
                raise TraceFormatError(f"{where}: callchain of {nr} entries does not fit the "
                                       f"{len(body) + 8}-byte record")
            ips = struct.unpack_from(f"<{nr}Q", body, p + 8)
            chain = tuple(f"{x:#x}" for x in ips if x < PERF_CONTEXT_MAX)
            p += 8 + 8 * nr
        raw = None
        if st & S_RAW:
            if p + 4 > len(body):
                raise TraceFormatError(f"{where}: record ends before its PERF_SAMPLE_RAW size")
            n = struct.unpack_from("<I", body, p)[0]
            if p + 4 + n > len(body):
                raise TraceFormatError(f"{where}: raw data of {n} bytes does not fit the "
                                       f"{len(body) + 8}-byte record")
            raw = body[p + 4:p + 4 + n]
        return a, ts, cpu, chain, raw

    def records(self, *, all_events: bool = False, other=None, decorate=None):
        """Every tracepoint sample as a TraceRecord, in time order (kvmmmu events only unless
        ``all_events``; others counted in ``other``), task names from COMM records."""
        heap: list = []
        seq = 0
        prev_max = cur_max = None
        n = [0]
        comms = self.cmdlines

        def emit(item):
            kind, off, payload = item
            if kind == "comm":
                comms[payload[0]] = payload[1]
                return None
            a, ts, cpu, chain, raw = payload
            n[0] += 1
            if a.type != PERF_TYPE_TRACEPOINT:
                if other is not None:
                    other[f"perf type {a.type} config {a.config:#x}"] += 1
                return None
            ef = self.formats.get(a.config)
            if ef is None:
                if other is not None:
                    other[f"id:{a.config}"] += 1
                return None
            if raw is None or len(raw) < 2 or struct.unpack_from("<H", raw, 0)[0] != a.config:
                got = struct.unpack_from("<H", raw, 0)[0] if raw is not None and len(raw) >= 2 else None
                raise TraceFormatError(f"{self.name}: sample at offset {off}: raw data of event "
                                       f"{a.config} ({ef.full_name}) has common_type {got}")
            if ef.system != "kvmmmu" and not all_events:
                if other is not None:
                    other[ef.name] += 1
                return None
            rec = event_record(n[0], ef, raw, -1 if cpu is None else cpu, ts, comms, self.format,
                               chain)
            if decorate is not None:
                decorate(rec)
            return rec

        for off, typ, misc, body in self._records():
            if typ == REC_SAMPLE:
                s = self._sample(off, body)
                ts = s[1]
                if ts is None:
                    r = emit(("sample", off, s))
                    if r is not None:
                        yield r
                    continue
                heapq.heappush(heap, (ts, seq, ("sample", off, s)))
                seq += 1
                cur_max = ts if cur_max is None or ts > cur_max else cur_max
            elif typ == REC_COMM:
                if len(body) < 8:
                    raise TraceFormatError(f"{self.name}: COMM record at offset {off} too short")
                pid, tid = struct.unpack_from("<II", body, 0)
                comm = body[8:].split(b"\0", 1)[0].decode("utf-8", "replace")
                ts, _ = self._trailer(body)
                if ts is None:
                    comms[tid] = comm
                else:
                    heapq.heappush(heap, (ts, seq, ("comm", off, (tid, comm))))
                    seq += 1
            elif typ == REC_LOST:
                _, cpu = self._trailer(body)
                count_lost(self.lost, cpu, "perf lost", _u64(body, 8, f"{self.name}: LOST record at {off}"))
            elif typ == REC_LOST_SAMPLES:
                _, cpu = self._trailer(body)
                count_lost(self.lost, cpu, "perf lost samples",
                           _u64(body, 0, f"{self.name}: LOST_SAMPLES record at {off}"))
            elif typ == REC_FINISHED_ROUND:
                while heap and prev_max is not None and heap[0][0] <= prev_max:
                    r = emit(heapq.heappop(heap)[2])
                    if r is not None:
                        yield r
                prev_max = cur_max
            elif typ == REC_HEADER_ATTR and self._pipe:
                self._add_attr(_pipe_attr(body, f"{self.name}: attr record at offset {off}"))
                self._finish_attrs()
        while heap:
            r = emit(heapq.heappop(heap)[2])
            if r is not None:
                yield r


def _pipe_attr(body: bytes, where: str) -> Attr:
    if len(body) < 8:
        raise TraceFormatError(f"{where}: too short for a perf_event_attr")
    size = struct.unpack_from("<I", body, 4)[0]
    if size < 64 or size > len(body) or (len(body) - size) % 8:
        raise TraceFormatError(f"{where}: perf_event_attr size {size} in a {len(body) + 8}-byte record")
    a = Attr(body[:size], where)
    a.ids = list(struct.unpack_from(f"<{(len(body) - size) // 8}Q", body, size))
    return a


def open_perfdata(f, name: str = "perf.data") -> PerfSource:
    """A PerfSource over a seekable perf.data file object (header, attrs and the feature
    sections read now, the data section record by record while iterating)."""
    f.seek(0, os.SEEK_END)
    fsize = f.tell()
    whole = _pread_reader(f, 0, fsize)
    head = whole(FILE_HEADER_SIZE)
    _check_magic(head, name)
    if len(head) < FILE_HEADER_SIZE:
        raise TraceFormatError(f"{name}: the file ends at offset {len(head)}, inside the "
                               "104-byte perf.data header (truncated)")
    (_, hsize, attr_size, a_off, a_size, d_off, d_size, _, _) = struct.unpack_from("<8sQQQQQQQQ", head, 0)
    flags = struct.unpack_from("<4Q", head, 72)
    if hsize != FILE_HEADER_SIZE:
        raise UnsupportedTraceError(f"{name}: perf.data header size {hsize} at offset 8 (this reader "
                                    f"knows {FILE_HEADER_SIZE})")
    ps = PerfSource(name, "perf.data")

    def inside(off, size, what):
        if off + size > fsize or off < FILE_HEADER_SIZE and size:
            raise TraceFormatError(f"{name}: {what} [{off}, {off + size}) lies outside the file "
                                   f"({fsize} bytes; truncated?)")

    inside(a_off, a_size, "attrs section")
    inside(d_off, d_size, "data section")
    if attr_size < 64 + 16 or a_size % attr_size or not a_size:
        raise TraceFormatError(f"{name}: attrs section of {a_size} bytes with attr_size {attr_size} "
                               "(header offset 16)")
    for i in range(a_size // attr_size):
        where = f"{name}: attr {i} at offset {a_off + i * attr_size}"
        ent = _pread_reader(f, a_off + i * attr_size, attr_size)(attr_size)
        a = Attr(ent[:attr_size - 16], where)
        if a.size > attr_size - 16:
            raise TraceFormatError(f"{where}: perf_event_attr size {a.size} > attr_size {attr_size} - 16")
        ids_off, ids_size = struct.unpack_from("<QQ", ent, attr_size - 16)
        inside(ids_off, ids_size, f"attr {i} ids")
        if ids_size % 8:
            raise TraceFormatError(f"{where}: ids section of {ids_size} bytes (not u64s)")
        a.ids = list(struct.unpack(f"<{ids_size // 8}Q", _pread_reader(f, ids_off, ids_size)(ids_size)))
        ps._add_attr(a)
    ps._finish_attrs()
    feats = [b for b in range(256) if flags[b // 64] >> (b % 64) & 1]
    t_off = d_off + d_size
    inside(t_off, 16 * len(feats), "feature section table")
    table = _pread_reader(f, t_off, 16 * len(feats))(16 * len(feats))
    for i, bit in enumerate(feats):
        off, size = struct.unpack_from("<QQ", table, 16 * i)
        inside(off, size, f"feature {bit} section")
        if bit in _FEATURES:
            c = _Seq(_pread_reader(f, off, size), off, f"{name} feature {bit}", off + size)
            ps._feature(bit, c, size)
    ps._need_tracing_data()
    ps.meta.update(data_offset=d_off, data_size=d_size, features=feats)
    if not d_size:
        raise TraceFormatError(f"{name}: the data section is empty (size 0 at header offset 48: "
                               "was `perf record` stopped before it wrote its header?)")
    ps._seq = _Seq(_Buffered(_pread_reader(f, d_off, d_size)), d_off, f"{name} data", d_off + d_size)
    return ps


def open_perf_pipe(f, name: str = "perf pipe") -> PerfSource:
    """A PerfSource over a perf pipe stream (``perf record -o -``): the metadata records
    (attrs, features, tracing data) are read now, up to the first data record; the rest
    is read while iterating (nothing is spooled)."""
    read = f.read
    head = read(PIPE_HEADER_SIZE)
    _check_magic(head, name)
    if len(head) < PIPE_HEADER_SIZE:
        raise TraceFormatError(f"{name}: the stream ends at offset {len(head)}, inside the "
                               "16-byte perf pipe header (truncated)")
    ps = PerfSource(name, "perf.data (pipe)")
    ps._pipe = True
    ps._seq = _Seq(read, PIPE_HEADER_SIZE, name)
    for off, typ, misc, body in ps._records():
        if typ not in _PIPE_HEADER_TYPES:
            ps._pending = (off, typ, misc, body)
            break
        where = f"{name}: record at offset {off}"
        if typ == REC_HEADER_ATTR:
            ps._add_attr(_pipe_attr(body, where))
        elif typ == REC_HEADER_FEATURE:
            bit = _u64(body, 0, where)
            fc = _Seq(_bytes_reader(body[8:]), off + 16, f"{name} feature {bit}", off + len(body) + 8)
            ps._feature(bit, fc, len(body) - 8)
        elif typ == REC_HEADER_TRACING_DATA and ps._td is not None:
            start, data = ps._td
            ps._tracing_data(_Seq(_bytes_reader(data), start, f"{name} tracing data", start + len(data)))
            ps._td = None
    if ps._pending is None and (not ps.attrs or ps.formats is None):
        raise TraceFormatError(f"{name}: the stream ends at offset {ps._seq.pos} before its "
                               f"{'tracing data' if ps.attrs else 'event attrs'} (truncated?)")
    ps._finish_attrs()
    ps._need_tracing_data()
    return ps


def _bytes_reader(b: bytes):
    """read(n) over a bytes object."""
    state = [0]

    def read(n):
        i = state[0]
        state[0] = i + n
        return b[i:i + n]
    return read

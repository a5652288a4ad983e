"""``open_trace``: one streaming entry point for every trace source.

The format is detected from the bytes: gzip/xz are unwrapped; ``\\x17\\x08\\x44tracing`` is a
trace-cmd ``trace.dat`` (v6/v7); ``PERFILE2`` a ``perf record`` file or pipe stream; a POSIX
tar is a pykvmmu capture; a directory with ``header_page`` is a saved tracefs tree; anything else is text (the print format, ftrace
``options/fields``, ``trace-cmd report [-R]``, libtraceevent and old trace-cmd plugin lines,
one line at a time).  ``-`` is standard input.  Records come one at a time (constant memory):
binary sources are read a page per CPU at a time, text a line at a time.

The role era comes from the kernel version where the source carries one (capture
``kernel_release``, trace.dat ``UNAME`` option, a ``proc_version`` file beside the trace or in
the directory); otherwise it must be given.  A given era that contradicts the trace's kernel
is refused (:class:`TraceEraError`).
"""
from __future__ import annotations

import functools
import gzip
import io
import lzma
import os
import shutil
import sys
import tempfile
import zlib
from collections import Counter
from typing import IO

from ..errors import PykvmmuError
from ..role import RoleEra, get_era
from .capture import is_capture_dir, open_capture, open_directory, release_from_proc_version
from .ctf import is_ctf_dir, is_ctf_metadata, open_ctf
from .perfdata import open_perf_pipe, open_perfdata, perf_kind
from .raw import count_lost, raw_records
from .. import _check as C
from .record import (TraceArgumentError, TraceEraError, TraceError, TraceFormatError, UnsupportedTraceError,
                     decorate)
from .report import SpteDecoder, default_spte_decoder, kernel_version_of
from .text import bounded_lines, check_decoder, iter_text

__all__ = ["open_trace", "TraceStream", "era_for_release", "era_arg", "detect_format"]

_GZIP, _XZ = b"\x1f\x8b", b"\xfd7zXZ\x00"
_TRACEDAT = b"\x17\x08\x44tracing"


def era_for_release(release: str):
    """The role era of a kernel release string ("6.18.44-fc-v669" -> era v6.14)."""
    mm = kernel_version_of(release)
    if mm is None:
        raise TraceEraError(f"kernel release {release!r}: no major.minor version in it")
    try:
        return get_era(f"v{mm[0]}.{mm[1]}")
    except PykvmmuError:
        raise TraceEraError(f"kernel {release}: no role era covers v{mm[0]}.{mm[1]} "
                            "(give one with --era)") from None


def era_arg(era):
    """An era given by the user: a role-era name or alias ("v6.14", "latest", "v6.8") or a
    kernel release ("6.18.44-fc-v669"); a typo raises."""
    try:
        return get_era(era)
    except PykvmmuError:
        if isinstance(era, str) and kernel_version_of(era) is not None:
            return era_for_release(era)
        raise


def _peek(f, n: int) -> bytes:
    if hasattr(f, "peek"):
        b = f.peek(n)
        return b[:n]
    raise TraceError("internal: stream without peek")


def _spool(f) -> IO[bytes]:
    """Copy a non-seekable or compressed stream to an anonymous temporary file (disk, not
    memory) so binary formats can seek."""
    t = tempfile.TemporaryFile()
    shutil.copyfileobj(f, t, 1 << 20)
    t.seek(0)
    return t


def detect_format(head: bytes) -> str:
    """'gzip', 'xz', 'trace.dat', 'perf.data', 'perf-pipe', 'capture' (tar), 'perf-json'
    (``perf data convert --to-json``) or 'text' from a file's first 512 bytes."""
    if not isinstance(head, (bytes, bytearray, memoryview)):
        raise TraceArgumentError(f"head={head!r}: expected bytes (the first bytes of a file)")
    head = bytes(head)
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(_XZ):
        return "xz"
    if head.startswith(_TRACEDAT):
        return "trace.dat"
    perf = perf_kind(head)
    if perf is not None:
        return perf
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "capture"
    if head.lstrip().startswith(b"{") and b'"linux-perf-json-version"' in head:
        return "perf-json"
    return "text"


class TraceStream:
    """An iterator of :class:`TraceRecord` with what is known about the source: ``era``,
    ``kernel_version``, ``format``, ``errors`` (first ``max_errors`` malformed lines),
    ``n_errors``, ``other_events`` (non-kvmmmu counts), ``lost`` (ring-buffer losses per CPU)."""

    def __init__(self, name: str, max_errors: int = 1000):
        if not isinstance(name, str):
            raise TraceArgumentError(f"name={name!r}: expected a str (the source's name)")
        C.uint("max_errors", max_errors, 32, err=TraceArgumentError)
        self.name = name
        self.era: RoleEra | None = None             # set by open_trace (_resolve_era)
        self.kernel_version: str | None = None
        self.format: str | None = None
        self.errors: list = []
        self.n_errors = 0
        self.other_events: Counter = Counter()
        self.lost: dict = {}
        self.meta: dict = {}
        self.max_errors = max_errors
        self.on_error = None
        #: ``(spte, level) -> str`` applied to SPTE-valued fields; may be set after opening
        #: (e.g. from the kernel version the source revealed), before iterating.
        self.spte_decoder: SpteDecoder | None = None
        self._it = iter(())
        self._closers: list = []
        self._pos = None             # () -> (bytes done, total) for a progress bar

    def _error(self, n, why, text):
        self.n_errors += 1
        if len(self.errors) < self.max_errors:
            self.errors.append((n, why, text))
        if self.on_error is not None:
            self.on_error(n, why, text)

    def progress(self):
        """(bytes read, total bytes) of the underlying file, or None when unknown."""
        if self._pos is None:
            return None
        try:
            return self._pos()
        except (OSError, ValueError):
            return None

    def __iter__(self):
        return self

    def __next__(self):
        r = next(self._it)
        if self.spte_decoder is not None:
            decorate(r, self.era, self.spte_decoder)
        return r

    def close(self) -> None:
        while self._closers:
            c = self._closers.pop()
            try:
                c()
            except (OSError, ValueError):
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _resolve_era(era, version: str | None, check_era: bool, name: str):
    if era is None:
        if version is None:
            raise TraceEraError(f"{name}: the trace carries no kernel version: give the role era "
                                "(--era, e.g. v6.14; `pykvmmu role eras` lists them)")
        return era_for_release(version)
    e = era_arg(era)
    if version is not None and check_era:
        want = era_for_release(version)
        if want is not e:
            raise TraceEraError(f"era={era!r} (role era {e.name}) contradicts the trace's kernel "
                                f"{version} (role era {want.name}); omit --era to use the trace's")
    return e


def open_trace(src, era=None, *, spte_decoder=None, mode=None, all_events: bool = False,
               check_era: bool = True, max_errors: int = 1000, on_error=None) -> TraceStream:
    """Open a trace (path, ``"-"``, directory, or binary/text file object) and return a
    :class:`TraceStream` of its records.  ``mode`` (a preset name or an MmuConfig) builds the
    SPTE decoder for the trace's kernel (``spte_decoder`` overrides it); ``all_events`` also
    yields non-kvmmmu events.  Use as a context manager (or call ``close()``)."""
    if isinstance(src, os.PathLike):
        src = os.fspath(src)
    if not isinstance(src, str) and not callable(getattr(src, "read", None)):
        raise TraceArgumentError(f"src={src!r}: expected a path, '-' or a file object")
    check_decoder(spte_decoder)
    if mode is not None and not isinstance(mode, str):
        C.mmu_config(mode, "mode")
    C.boolean("all_events", all_events, err=TraceArgumentError)
    C.boolean("check_era", check_era, err=TraceArgumentError)
    if on_error is not None and not callable(on_error):
        raise TraceArgumentError(f"on_error={on_error!r}: expected a callable or None")
    name = src if isinstance(src, str) else getattr(src, "name", "<stream>")
    if not isinstance(name, str):
        name = "<stream>"
    st = TraceStream(str(name), max_errors)
    st.on_error = on_error
    try:
        _open(st, src, era, spte_decoder, mode, all_events, check_era)
    except BaseException:
        st.close()
        raise
    return st


def _open(st, src, era, spte_decoder, mode, all_events, check_era):
    sibling_version = None
    raw_file = None
    if isinstance(src, str):
        if src == "-":
            f = sys.stdin.buffer
        elif os.path.isdir(src):
            if is_ctf_dir(src):
                return _binary(st, open_ctf(src, st.name), era, spte_decoder, mode, all_events, check_era)
            if not is_capture_dir(src):
                raise TraceError(f"{src}: a directory with neither header_page (a saved tracefs "
                                 "tree) nor CTF metadata (`perf data convert --to-ctf`)")
            rs = open_directory(src)
            return _binary(st, rs, era, spte_decoder, mode, all_events, check_era)
        else:
            try:
                f = open(src, "rb")
            except OSError as e:
                raise TraceError(f"trace file {src!r}: {e.strerror}") from None
            st._closers.append(f.close)
            raw_file = f
            if is_ctf_metadata(_peek(f, 64)):          # the metadata file of a CTF directory
                return _binary(st, open_ctf(os.path.dirname(os.path.abspath(src)), st.name), era,
                               spte_decoder, mode, all_events, check_era)
            pv = os.path.join(os.path.dirname(os.path.abspath(src)), "proc_version")
            if os.path.isfile(pv):
                with open(pv, encoding="utf-8", errors="replace") as pf:
                    sibling_version = release_from_proc_version(pf.read())
    elif isinstance(src, io.TextIOBase):
        return _text(st, src, era, spte_decoder, mode, all_events, check_era, None)
    else:
        f = src
    if not hasattr(f, "peek"):
        f = io.BufferedReader(f if isinstance(f, io.RawIOBase) else _Peekable(f))
    if raw_file is not None:
        try:
            total = os.fstat(raw_file.fileno()).st_size
            st._pos = lambda: (raw_file.tell(), total)
        except OSError:
            pass
    kind = detect_format(_peek(f, 512))
    compressed = False
    while kind in ("gzip", "xz"):
        z = gzip.GzipFile(fileobj=f, mode="rb") if kind == "gzip" else lzma.LZMAFile(f, "rb")
        f = io.BufferedReader(_Decompressed(z, f"{st.name} ({kind})"))
        st._closers.append(f.close)
        compressed = True
        kind = detect_format(_peek(f, 512))
    if kind == "perf-json":
        raise UnsupportedTraceError(
            f"{st.name}: `perf data convert --to-json` output, which names no event: a sample "
            "gives time, pid, cpu and comm (and, from newer perf versions, the event's own "
            "fields, but still not its name), so kvm_mmu_sync_page, kvm_mmu_unsync_page and "
            "kvm_mmu_prepare_zap_page, which share one field set, cannot be told apart; give "
            "the perf.data it was converted from")
    if kind == "perf-pipe":                    # sequential: read as it arrives, never spooled
        return _binary(st, open_perf_pipe(f, st.name), era, spte_decoder, mode, all_events, check_era)
    if kind in ("trace.dat", "capture", "perf.data"):
        seekable = not compressed and raw_file is not None
        if not seekable:
            t = _spool(f)
            st._closers.append(t.close)
            f = t
        if kind == "capture":
            rs = open_capture(f, st.name)
        elif kind == "perf.data":
            rs = open_perfdata(f, st.name)
        else:
            from .tracedat import open_tracedat
            rs = open_tracedat(f, st.name)
        return _binary(st, rs, era, spte_decoder, mode, all_events, check_era)
    text = io.TextIOWrapper(f, encoding="utf-8", errors="replace")
    return _text(st, text, era, spte_decoder, mode, all_events, check_era, sibling_version)


class _Peekable(io.RawIOBase):
    """A binary file object without peek() (e.g. a socket file) made peekable."""

    def __init__(self, f):
        self._f = f

    def readable(self):
        return True

    def readinto(self, b):
        data = self._f.read(len(b))
        n = len(data)
        b[:n] = data
        return n


class _Decompressed(_Peekable):
    """A gzip/xz reader whose damaged or cut-short data raises TraceFormatError wherever it is
    read (format detection, spooling, text lines, a perf pipe), naming the offset."""

    def __init__(self, z, name: str):
        super().__init__(z)
        self._name, self._pos = name, 0

    def readinto(self, b):
        try:
            n = super().readinto(b)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            raise TraceFormatError(f"{self._name}: bad compressed data after {self._pos} bytes "
                                   f"({e or type(e).__name__})") from None
        self._pos += n
        return n

    def close(self):
        self._f.close()
        super().close()


def _decoder(era, version, spte_decoder, mode):
    if spte_decoder is not None or mode is None:
        return spte_decoder
    if isinstance(mode, str):
        return default_spte_decoder(era, mode, version=version)
    return default_spte_decoder(era, config=mode)


def _text(st, text, era, spte_decoder, mode, all_events, check_era, version):
    st.format = "text"
    st.kernel_version = version
    st.era = _resolve_era(era, version, check_era, st.name)
    st.spte_decoder = _decoder(st.era if era is None else era, version, spte_decoder, mode)
    st._it = iter_text(bounded_lines(text), st.era, None, all_events=all_events, on_error=st._error,
                       on_other=lambda ev: st.other_events.update([ev]),
                       on_lost=lambda cpu, n, key: count_lost(st.lost, cpu, key, n))


def _binary(st, rs, era, spte_decoder, mode, all_events, check_era):
    st._closers.append(rs.close)
    st.format = rs.format
    st.kernel_version = rs.kernel_release
    st.meta = rs.meta
    st.lost = rs.lost
    st.era = _resolve_era(era, rs.kernel_release, check_era, st.name)
    st.spte_decoder = _decoder(st.era if era is None else era, rs.kernel_release, spte_decoder, mode)
    e = st.era
    records = getattr(rs, "records", None)           # perf sources decode their own records
    if records is None:
        records = functools.partial(raw_records, rs)
    st._it = records(all_events=all_events, other=st.other_events,
                     decorate=lambda r: decorate(r, e, None))

"""RMP table files: the self-describing file format (header + table bytes), atomic writes,
and the page-cache controls of a file-backed table (docs/rmp.md, "Table files")."""
from __future__ import annotations

import mmap
import os
import struct
import tempfile
import zlib
from builtins import open as builtins_open
from typing import TYPE_CHECKING, NamedTuple, Optional

import numpy as np

from .. import _batch
from .._ffi import lib
from . import MAX_MEM_BYTES, MAX_SEGMENTS, NONSEG_SHIFT, RmpError, table_bytes

if TYPE_CHECKING:
    from . import RmpTable


# ------------------------------------------------------------------ table files
#
# A table file is a 8 KiB header followed by the table bytes exactly as in memory
# (bookkeeping, [RST,] entries).  Header, little-endian:
#   0 magic "PYKVMRMP" | 8 u32 version | 12 u32 header bytes | 16 u32 layout (0 contiguous,
#   1 segmented) | 20 u32 seg_shift (52 when contiguous) | 24 u32 RmpFlags | 28 u32 RST entries
#   stored (0 or 512) | 32 u64 rmp_base | 40 u64 host memory bytes | 48 u64 table bytes |
#   56 u64 pfns covered | 64 u32 CRC-32 of the header with this field zero | 68..4095 zero |
#   4096..8191 the segment table (a copy of the RST; zero when contiguous).
FILE_MAGIC = b"PYKVMRMP"
FILE_VERSION = 1
HEADER_SIZE = 8192
_HDR = struct.Struct("<8sIIIIIIQQQQI")
LAYOUT_CONTIGUOUS, LAYOUT_SEGMENTED = 0, 1
_CHUNK = 64 << 20


class TableFileHeader(NamedTuple):
    """The header of a pykvmmu RMP table file (see the layout above)."""
    version: int
    layout: int
    seg_shift: int
    flags: int
    rmp_base: int
    mem_bytes: int
    table_bytes: int
    nr_pfns: int
    rst: tuple           # the 512 RST values of a segmented table, () when contiguous

    @property
    def segmented(self) -> bool:
        return self.layout == LAYOUT_SEGMENTED

    def pack(self) -> bytes:
        raw = bytearray(HEADER_SIZE)
        _HDR.pack_into(raw, 0, FILE_MAGIC, self.version, HEADER_SIZE, self.layout,
                       self.seg_shift, self.flags, len(self.rst), self.rmp_base, self.mem_bytes,
                       self.table_bytes, self.nr_pfns, 0)
        if self.rst:
            raw[4096:8192] = np.array(self.rst, dtype="<u8").tobytes()
        struct.pack_into("<I", raw, 64, zlib.crc32(raw))
        return bytes(raw)

    @classmethod
    def unpack(cls, raw: bytes, where: str) -> "TableFileHeader":
        """Parse and check a header; raise RmpError naming the broken rule."""
        if len(raw) < HEADER_SIZE:
            raise RmpError(f"{where}: {len(raw)} bytes, shorter than the {HEADER_SIZE}-byte "
                           "table file header (truncated file)")
        (magic, version, hsize, layout, seg_shift, flags, nrst, rmp_base, mem_bytes, tbytes,
         nr_pfns, crc) = _HDR.unpack_from(raw, 0)
        if magic != FILE_MAGIC:
            raise RmpError(f"{where}: magic {magic!r} is not {FILE_MAGIC!r}")
        if version != FILE_VERSION:
            raise RmpError(f"{where}: file format version {version}; this pykvmmu reads "
                           f"version {FILE_VERSION}")
        if hsize != HEADER_SIZE:
            raise RmpError(f"{where}: header size {hsize}, version 1 headers are {HEADER_SIZE}")
        check = bytearray(raw[:HEADER_SIZE])
        check[64:68] = b"\0\0\0\0"
        if zlib.crc32(check) != crc:
            raise RmpError(f"{where}: header CRC-32 {crc:#010x} does not match its contents "
                           f"({zlib.crc32(check):#010x}): the header is corrupt")
        if any(raw[68:4096]):
            raise RmpError(f"{where}: reserved header bytes 68..4095 are not zero")
        if layout not in (LAYOUT_CONTIGUOUS, LAYOUT_SEGMENTED):
            raise RmpError(f"{where}: layout {layout}: 0 (contiguous) or 1 (segmented)")
        if flags & ~lib.KVMMU_RMP_F_ALL:
            raise RmpError(f"{where}: flags {flags:#x}: unknown RMP flag bits")
        want_rst = MAX_SEGMENTS if layout == LAYOUT_SEGMENTED else 0
        if nrst != want_rst:
            raise RmpError(f"{where}: {nrst} RST entries stored, the layout needs {want_rst}")
        rst = tuple(int(v) for v in np.frombuffer(raw[4096:8192], "<u8")) if nrst else ()
        if not nrst and any(raw[4096:8192]):
            raise RmpError(f"{where}: a contiguous table stores no segment table (bytes "
                           "4096..8191 must be zero)")
        if mem_bytes == 0 or mem_bytes > MAX_MEM_BYTES:
            raise RmpError(f"{where}: host memory {mem_bytes:#x} bytes: 1..2^52")
        if layout == LAYOUT_CONTIGUOUS:
            if seg_shift != NONSEG_SHIFT:
                raise RmpError(f"{where}: seg_shift {seg_shift}: {NONSEG_SHIFT} for a contiguous RMP")
            if tbytes != table_bytes(mem_bytes):
                raise RmpError(f"{where}: {tbytes:#x} table bytes, but {mem_bytes:#x} bytes of "
                               f"memory need 16 KiB + 16 per 4 KiB page = {table_bytes(mem_bytes):#x}")
        return cls(version, layout, seg_shift, flags, rmp_base, mem_bytes, tbytes, nr_pfns, rst)


def _write_all(fd: int, data) -> None:
    """os.write until every byte of ``data`` is written."""
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fs_error(path: str, e: OSError, what: str) -> RmpError:
    reason = e.strerror or str(e)
    return RmpError(f"{path}: cannot {what} ({reason})")


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread)."""
    try:
        with builtins_open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):                    # pragma: no cover - not Linux >= 4.7
        pass
    m = os.umask(0o22)                               # pragma: no cover
    os.umask(m)                                      # pragma: no cover
    return m                                         # pragma: no cover


def _atomic_write(path, size: int, writer, *, exist_ok: bool) -> None:
    """Build ``path`` as a temporary file in the same directory (``writer(fd)`` writes the
    contents, holes stay sparse), truncate it to ``size``, fsync it and move it into place:
    os.replace when ``exist_ok``, else os.link, which refuses an existing name.  On any
    error or interrupt (KeyboardInterrupt too) the temporary file is removed and ``path`` is
    untouched."""
    path = os.fspath(path)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    d = os.path.dirname(os.path.abspath(path))
    if not exist_ok and os.path.lexists(path):
        raise RmpError(f"{path}: already exists (refusing to overwrite it; use --force / "
                       "exist_ok=True)")
    tmp: Optional[str]
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    except OSError as e:
        raise _fs_error(path, e, "create a file in its directory") from None
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            writer(fd)
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        if exist_ok:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise RmpError(f"{path}: already exists (refusing to overwrite it; use --force / "
                               "exist_ok=True)") from None
            os.unlink(tmp)
        tmp = None
        try:
            dfd = os.open(d, os.O_RDONLY)
        except OSError:                              # pragma: no cover - odd filesystems
            return
        try:
            os.fsync(dfd)
        except OSError:                              # pragma: no cover
            pass
        finally:
            os.close(dfd)
    except OSError as e:
        raise _fs_error(path, e, "write the table file") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:                          # pragma: no cover
                pass


# ------------------------------------------------------------------ table files, page cache

def save_table(table: "RmpTable", path, *, exist_ok: bool = True, headerless: bool = False) -> None:
    """Write the table to ``path`` (header + table; ``headerless``: the table bytes only),
    atomically: a temporary file in the same directory, fsync, then a rename, so ``path``
    holds the old or the new table, never a partial one, and saving onto the file the
    table is mapped from is safe (a read-write table saved onto its own file is flushed).
    Zero 64 MiB chunks stay holes.  ``exist_ok=False`` refuses an existing ``path``."""
    buf = table._view()
    exist_ok = _batch.boolean("exist_ok", exist_ok)
    headerless = _batch.boolean("headerless", headerless)
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise RmpError(f"path: expected a path, got {type(path).__name__}")
    p = os.fsdecode(os.fspath(path))
    if (exist_ok and table.mode == "r+" and table.path is not None
            and headerless == table.headerless and os.path.exists(p)
            and os.path.samefile(p, table.path)):
        table.flush()
        return
    raw = b"" if headerless else table.header().pack()
    size = buf.size

    def writer(fd):
        if raw:
            _write_all(fd, raw)
        base = len(raw)
        for start in range(0, size, _CHUNK):
            part = buf[start:start + _CHUNK]
            if not part.any():
                continue                         # sparse: leave a hole
            os.lseek(fd, base + start, os.SEEK_SET)
            _write_all(fd, part)
    _atomic_write(p, len(raw) + size, writer, exist_ok=exist_ok)


def advise_mapping(table: "RmpTable", pattern: str) -> None:
    """madvise() the table's mapping: 'random' (no readahead: a random lookup into a
    file-backed table then reads one page, not a readahead window), 'sequential',
    'normal' or 'willneed'."""
    flag = {"random": "MADV_RANDOM", "sequential": "MADV_SEQUENTIAL",
            "normal": "MADV_NORMAL", "willneed": "MADV_WILLNEED"}.get(pattern) \
        if isinstance(pattern, str) else None
    if flag is None:
        raise RmpError(f"pattern={pattern!r}: one of 'random', 'sequential', 'normal', "
                       "'willneed'")
    m = table._mapping()
    if m is not None and hasattr(mmap, flag):
        m.madvise(getattr(mmap, flag))


def drop_page_cache(table: "RmpTable") -> None:
    """Bound the memory a file-backed table holds: write back a read-write table, drop
    its pages from this process (MADV_DONTNEED) and ask the kernel to evict the file's
    clean page-cache pages (POSIX_FADV_DONTNEED).  Random lookups into a table file pull
    every page they touch into the page cache (4 KiB, plus readahead unless
    ``advise('random')``), and those pages count against the memory cgroup; call this
    between batches to bound that.  Refused for a copy-on-write table (its changes
    live only in those pages); a no-op for an in-memory table."""
    table._t
    if table.mode == "c":
        raise RmpError("drop_cache: a copy-on-write table's changes live only in its "
                       "pages; save() it first, then reopen")
    m = table._mapping()
    if m is None:
        return
    table.flush()
    m.madvise(mmap.MADV_DONTNEED)
    if table.path is None:                       # mapped, but not from a table file
        return
    try:
        fd = os.open(table.path, os.O_RDONLY)
    except OSError as e:
        raise RmpError(f"table={table.path!r}: cannot open to evict its pages "
                       f"({e.strerror or e})") from None
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _file_mapping(table: "RmpTable") -> Optional[mmap.mmap]:
    table._t
    m = getattr(table._buf, "_mmap", None) if isinstance(table._buf, np.memmap) else None
    return m if isinstance(m, mmap.mmap) else None

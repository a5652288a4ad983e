"""RMP table files: the header (self-describing layout, size check), atomic save/create,
no data loss (saving onto the mapped source, interrupted writes), flush/close/with."""
import errno
import os
import struct

import numpy as np
import pytest

import pykvmmu.rmp as R
from pykvmmu.errors import InputError
from pykvmmu.rmp import (BOOKKEEPING, HEADER_SIZE, Rc, RmpError, RmpFlags, RmpTable,
                         TableFileHeader, table_bytes)

MiB, GiB = 1 << 20, 1 << 30


def guest(t, pfn=512, gfn=0x400, asid=7):
    assert t.rmpupdate(pfn, gpa=gfn << 12, assigned=1, pagesize=1, asid=asid) == Rc.SUCCESS


def leftovers(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------ header

def test_header_layout_worked_bytes(tmp_path):
    p = tmp_path / "t.rmp"
    RmpTable.create_file(p, 64 * MiB, flags=RmpFlags.OVERLAP_RC7)
    raw = p.read_bytes()
    assert len(raw) == HEADER_SIZE + table_bytes(64 * MiB) == 8192 + 0x44000
    assert raw[:8] == b"PYKVMRMP"
    version, hsize, layout, shift, flags, nrst = struct.unpack_from("<6I", raw, 8)
    assert (version, hsize, layout, shift, flags, nrst) == (1, 8192, 0, 52, 2, 0)
    base, mem, tbytes, npfn = struct.unpack_from("<4Q", raw, 32)
    assert (base, mem, tbytes, npfn) == (0x100000, 64 * MiB, 0x44000, 0x4000)
    assert not any(raw[HEADER_SIZE:])                  # a zero table


def test_contiguous_file_describes_itself(tmp_path):
    p = tmp_path / "t.rmp"
    RmpTable.create_file(p, 3 * GiB + 4096, flags=RmpFlags.MIDDLE_FULL, rmp_base=0x200000)
    with RmpTable.open(p) as t:
        assert not t.segmented and t.flags == RmpFlags.MIDDLE_FULL and t.rmp_base == 0x200000
        assert t.nr_pfns == (3 * GiB >> 12) + 1 and t.mem_bytes == 3 * GiB + 4096
        assert t.header() == TableFileHeader.unpack(p.read_bytes()[:HEADER_SIZE], "x")


def test_segmented_file_describes_itself(tmp_path):
    p = tmp_path / "s.rmp"
    RmpTable.create_file(p, 2 * GiB + MiB, segmented=True, seg_shift=30)
    mem = RmpTable.create(2 * GiB + MiB, segmented=True, seg_shift=30)
    with RmpTable.open(p) as t:                        # no layout options needed
        assert t.segmented and t.seg_shift == 30 and t.nr_pfns == mem.nr_pfns == 3 << 18
        assert t.size == mem.size
        assert t.header().rst == mem.header().rst
        guest(t, 0x40200, 0x200)
    with RmpTable.open(p, mode="r") as t:
        assert t.snp_lookup_rmpentry(0x40201) == (True, 2)


def test_options_must_agree_with_the_header(tmp_path):
    p = tmp_path / "t.rmp"
    RmpTable.create_file(p, 64 * MiB)
    with pytest.raises(RmpError, match="segmented=True: the table file .* says segmented = False"):
        RmpTable.open(p, segmented=True)               # was: "covers 0x0 pages", exit 0
    with pytest.raises(RmpError, match="seg_shift=30: .* says seg_shift = none .a contiguous"):
        RmpTable.open(p, seg_shift=30)
    with pytest.raises(RmpError, match="flags=1: .*says flags = 0"):
        RmpTable.open(p, flags=1)
    with pytest.raises(RmpError, match="mem_bytes"):
        RmpTable.open(p, mem_bytes=128 * MiB)
    assert RmpTable.open(p, segmented=False, flags=0, mem_bytes=64 * MiB).nr_pfns == 0x4000


@pytest.mark.parametrize("delta", [-16, -1, 1, 4096, -(HEADER_SIZE + 0x44000 - 100)])
def test_size_must_match_the_header(tmp_path, delta):
    p = tmp_path / "t.rmp"
    RmpTable.create_file(p, 64 * MiB)
    os.truncate(p, HEADER_SIZE + 0x44000 + delta)
    with pytest.raises(RmpError, match="truncated|bytes"):
        RmpTable.open(p)


def test_corrupt_headers_are_refused(tmp_path):
    p = tmp_path / "t.rmp"
    RmpTable.create_file(p, 64 * MiB)
    good = bytearray(p.read_bytes())

    def opened_with(offset, value, fmt="<I", fix_crc=True):
        raw = bytearray(good)
        struct.pack_into(fmt, raw, offset, value)
        if fix_crc:
            hdr = bytearray(raw[:HEADER_SIZE])
            hdr[64:68] = b"\0" * 4
            import zlib
            struct.pack_into("<I", raw, 64, zlib.crc32(hdr))
        p.write_bytes(bytes(raw))
        return lambda: RmpTable.open(p)

    with pytest.raises(RmpError, match="CRC-32"):
        opened_with(40, 128 * MiB, "<Q", fix_crc=False)()
    with pytest.raises(RmpError, match="version 2"):
        opened_with(8, 2)()
    with pytest.raises(RmpError, match="layout 7"):
        opened_with(16, 7)()
    with pytest.raises(RmpError, match="unknown RMP flag"):
        opened_with(24, 0x80)()
    with pytest.raises(RmpError, match="need 16 KiB \\+ 16 per 4 KiB"):
        opened_with(40, 32 * MiB, "<Q")()
    with pytest.raises(RmpError, match="reserved header bytes"):
        opened_with(100, 1)()
    with pytest.raises(RmpError, match="host memory"):
        opened_with(40, 0, "<Q")()


def test_segmented_coverage_must_match_the_header(tmp_path):
    import zlib
    p = tmp_path / "s.rmp"
    RmpTable.create_file(p, 2 * GiB, segmented=True, seg_shift=30)
    raw = bytearray(p.read_bytes())
    for off, val in ((56, 3 << 18), (40, 2 * GiB + 4096)):   # pfns covered / memory size
        bad = bytearray(raw)
        struct.pack_into("<Q", bad, off, val)
        hdr = bytearray(bad[:HEADER_SIZE])
        hdr[64:68] = b"\0" * 4
        struct.pack_into("<I", bad, 64, zlib.crc32(hdr))
        p.write_bytes(bytes(bad))
        with pytest.raises(RmpError, match="covers 0x80000 pages, the header says"):
            RmpTable.open(p)


def test_segmented_rst_must_match_the_header(tmp_path):
    p = tmp_path / "s.rmp"
    RmpTable.create_file(p, 2 * GiB, segmented=True, seg_shift=30)
    with open(p, "r+b") as f:                           # RST[1]: map 0 GiB instead of 1
        f.seek(HEADER_SIZE + BOOKKEEPING + 8)
        v = struct.unpack("<Q", f.read(8))[0]
        f.seek(HEADER_SIZE + BOOKKEEPING + 8)
        f.write(struct.pack("<Q", v & ~0xFFFFF))
    with pytest.raises(RmpError, match="RST in the table differs"):
        RmpTable.open(p)


def test_headerless_files_need_the_explicit_option(tmp_path):
    t = RmpTable.create(64 * MiB)
    guest(t)
    raw = tmp_path / "old.bin"
    t.save(raw, headerless=True)
    assert raw.stat().st_size == t.size                 # exactly today's raw format
    with pytest.raises(RmpError, match="no pykvmmu table header.*headerless=True"):
        RmpTable.open(raw)
    with RmpTable.open(raw, headerless=True, mem_bytes=64 * MiB) as u:
        assert u.entry(512) == t.entry(512)
    with pytest.raises(RmpError, match="mem_bytes=0x8000000 needs"):
        RmpTable.open(raw, headerless=True, mem_bytes=128 * MiB)
    with pytest.raises(RmpError, match="segment table is empty"):
        RmpTable.open(raw, headerless=True, segmented=True)
    headed = tmp_path / "new.rmp"
    t.save(headed)
    with pytest.raises(RmpError, match="has a pykvmmu table header"):
        RmpTable.open(headed, headerless=True)


def test_empty_and_odd_files(tmp_path):
    (tmp_path / "zero").write_bytes(b"")
    with pytest.raises(RmpError, match="empty file"):
        RmpTable.open(tmp_path / "zero")
    with pytest.raises(RmpError, match="not a regular file"):
        RmpTable.open(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(RmpError, match="not a regular file"):
        RmpTable.open(tmp_path / "fifo")                # refused, not blocked in open()
    with pytest.raises(RmpError, match="cannot open"):
        RmpTable.open(tmp_path / "missing")
    (tmp_path / "short").write_bytes(b"PYKVMRMP" + bytes(100))
    with pytest.raises(RmpError, match="shorter than the 8192-byte"):
        RmpTable.open(tmp_path / "short")
    with pytest.raises(RmpError, match="source: expected"):
        RmpTable.open(12)
    with pytest.raises(RmpError, match="mode="):
        RmpTable.open(tmp_path / "zero", mode="w")


# ------------------------------------------------------------------ no data loss

@pytest.mark.parametrize("mode", ["r", "c", "r+"])
def test_save_onto_the_mapped_source_keeps_it(tmp_path, mode):
    p = tmp_path / "t.rmp"
    t = RmpTable.create(64 * MiB)
    guest(t)
    t.save(p)
    before = p.read_bytes()
    u = RmpTable.open(p, mode=mode)
    if mode != "r":
        assert u.psmash(512) == Rc.SUCCESS
    u.save(p)                                           # was: SIGBUS and a 0-byte file
    after = p.read_bytes()
    assert len(after) == len(before)
    assert u.entry(600) == RmpTable.open(p, mode="r").entry(600)   # the saved state
    assert u.entry(700).gpa == (0x400 + 188 if mode != "r" else 0)
    if mode == "r":
        assert after == before
    u.close()
    assert leftovers(tmp_path) == []


def test_copy_on_write_leaves_the_file_alone(tmp_path):
    p = tmp_path / "t.rmp"
    RmpTable.create_file(p, 64 * MiB)
    before = p.read_bytes()
    with RmpTable.open(p, mode="c") as t:
        guest(t)
        t.flush()                                       # nothing to flush for a private copy
    assert p.read_bytes() == before


def test_flush_and_close(tmp_path):
    p = tmp_path / "t.rmp"
    RmpTable.create_file(p, 64 * MiB)
    t = RmpTable.open(p, mode="r+")
    guest(t)
    t.flush()
    assert RmpTable.open(p, mode="r").snp_lookup_rmpentry(513) == (True, 2)
    t.close()
    t.close()                                           # idempotent
    assert t.closed and repr(t) == "RmpTable(closed)"
    for call in (lambda: t.entry(0), lambda: t.rmpupdate(0), lambda: t.size,
                 lambda: t.lookup_batch(np.zeros(1, np.uint64)), lambda: t.save(p),
                 lambda: t.count_assigned(0, 1), lambda: t.flush(),
                 lambda: R.sev_private_max_mapping_level(t, 0)):
        with pytest.raises(RmpError, match="closed"):
            call()
    with RmpTable.open(p, mode="r+") as u:
        assert u.rmp_make_shared(512, 2) == 0
    with pytest.raises(RmpError, match="closed"):
        u.entry(0)
    with RmpTable.open(p, mode="r") as v:               # the with-block flushed on exit
        assert v.snp_lookup_rmpentry(512) == (False, 2)


def test_create_file_refuses_to_overwrite(tmp_path):
    p = tmp_path / "t.rmp"
    p.write_bytes(b"precious")
    with pytest.raises(RmpError, match="already exists.*--force"):
        RmpTable.create_file(p, 64 * MiB)
    assert p.read_bytes() == b"precious"
    RmpTable.create_file(p, 64 * MiB, exist_ok=True)
    assert RmpTable.open(p).nr_pfns == 0x4000
    with pytest.raises(RmpError, match="already exists"):
        RmpTable.create(64 * MiB).save(p, exist_ok=False)
    with pytest.raises(InputError, match="exist_ok='yes': expected a bool"):
        RmpTable.create_file(p, 64 * MiB, exist_ok="yes")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["write", "fsync"])
@pytest.mark.parametrize("op", ["create_file", "save"])
def test_interrupted_writes_leave_no_trace(tmp_path, monkeypatch, where, op):
    p = tmp_path / "t.rmp"
    old = tmp_path / "old.rmp"
    RmpTable.create_file(old, 64 * MiB)
    old_bytes = old.read_bytes()
    t = RmpTable.create(64 * MiB)
    guest(t)

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    if where == "write":
        monkeypatch.setattr(R.tablefile, "_write_all", interrupt)
    else:
        monkeypatch.setattr(R.os, "fsync", interrupt)
    for target, exist_ok in ((p, False), (old, True)):
        with pytest.raises(KeyboardInterrupt):
            if op == "create_file":
                RmpTable.create_file(target, 64 * MiB, exist_ok=exist_ok)
            else:
                t.save(target, exist_ok=exist_ok)
    monkeypatch.undo()
    assert not p.exists()                               # no 0-byte or partial file
    assert old.read_bytes() == old_bytes                # the replaced file is untouched
    assert leftovers(tmp_path) == []


def test_write_errors_are_one_clear_error(tmp_path, monkeypatch):
    def enospc(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(R.tablefile, "_write_all", enospc)
    with pytest.raises(RmpError, match=r"t.rmp: cannot write the table file \(No space left"):
        RmpTable.create_file(tmp_path / "t.rmp", 64 * MiB)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RmpError, match="cannot create a file in its directory"):
        RmpTable.create_file(tmp_path / "no" / "dir" / "x", 64 * MiB)


def test_saved_files_are_sparse_and_exact(tmp_path):
    t = RmpTable.create(4 * GiB)
    guest(t, 0x80000, 0x200)
    p = tmp_path / "t.rmp"
    t.save(p)
    assert p.stat().st_size == HEADER_SIZE + t.size
    assert p.stat().st_blocks * 512 < 256 * MiB         # zero chunks stayed holes
    u = RmpTable.open(p, mode="r")
    idx = np.array([0x80000, 0x80001, 0x80200, 5], np.uint64)
    assert np.array_equal(u.fields(idx), t.fields(idx))
    assert (p.stat().st_mode & 0o777) == (0o666 & ~_umask())


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


# ------------------------------------------------------------------ sizes and ENOMEM

def test_create_rejects_more_than_the_physical_address_space():
    with pytest.raises(RmpError, match=r"mem_bytes=0x1000000000000000: more than 2\^52"):
        RmpTable.create(1 << 60)
    with pytest.raises(RmpError, match="more than 2\\^52"):
        RmpTable.create_file("/nonexistent", (1 << 52) + 1)


def test_enomem_becomes_a_clear_error(monkeypatch):
    def refuse(*a, **k):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")
    monkeypatch.setattr(R.mmap, "mmap", refuse)
    with pytest.raises(RmpError, match=r"mem_bytes=0x10000000000: the table needs 0x100004000 "
                                       r"bytes \(4\.0 GiB\).*ENOMEM"):
        RmpTable.create(1 << 40)
    with pytest.raises(RmpError, match="ENOMEM"):
        RmpTable.create(1 << 40, segmented=True)


def test_format_conversion_and_segmented_save(tmp_path):
    t = RmpTable.create(2 * GiB, segmented=True, seg_shift=30)
    guest(t, 0x40200, 0x200)
    raw, headed = tmp_path / "raw.bin", tmp_path / "headed.rmp"
    t.save(raw, headerless=True)
    with RmpTable.open(raw, mode="r+", headerless=True, segmented=True, seg_shift=30) as u:
        u.save(raw)                                     # onto its own file, now with a header
        u.save(headed)
        assert u.entry(0x40200) == t.entry(0x40200)
    for p in (raw, headed):
        with RmpTable.open(p, mode="r") as v:
            assert v.segmented and v.seg_shift == 30 and v.entry(0x40200) == t.entry(0x40200)
            assert v.header() == t.header()

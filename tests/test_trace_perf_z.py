"""`perf record -z` recordings (zstd in PERF_RECORD_COMPRESSED records) of one real kvm_pvm run,
as a perf.data file and a pipe stream, held record by record to the pykvmmu capture of the same
run (tests/data/live/README.md, "perf -z files"); PERF_RECORD_COMPRESSED2, records that straddle
two compressed records, and damaged compressed data."""
import io
import os
import struct
import sys

import pytest

zstandard = pytest.importorskip("zstandard")

from pykvmmu import audit as A  # noqa: E402
from pykvmmu import cli  # noqa: E402
from pykvmmu import trace as T  # noqa: E402
from pykvmmu.trace import perfdata as P  # noqa: E402
from pykvmmu.trace.record import TraceError, TraceFormatError, UnsupportedTraceError  # noqa: E402

from test_audit_live import counts, guest_kw  # noqa: E402
from test_trace_perf import L, RELEASE, _pipe_records, _raw  # noqa: E402

ZCAP = os.path.join(L, "demo-z.kvmcap")
ZFILE, ZPIPE = "demo.z.perf.data.gz", "demo.z.pipe.perf.data.gz"
#: trace flags a probe reads at its own instant: need-resched (TRACE_FLAG_NEED_RESCHED 0x04,
#: TRACE_FLAG_PREEMPT_RESCHED 0x20) may be set between ftrace's probe and perf's
RESCHED = 0x24


def _read(src, **kw):
    with T.open_trace(src, **kw) as st:
        recs = list(st)
        assert st.n_errors == 0, st.errors[:3]
        return recs, st


def _decode(data: bytes):
    with T.open_trace(io.BytesIO(data), era="v6.14", check_era=False) as st:
        return [(r.event, r.cpu, r.ts_ns, r.fields) for r in st]


@pytest.fixture(scope="module")
def cap():
    return _read(ZCAP)[0]


@pytest.mark.parametrize("name", (ZFILE, ZPIPE))
def test_compressed_recordings_equal_the_capture_of_the_same_run(name, cap):
    recs, st = _read(os.path.join(L, name))
    assert st.format == ("perf.data (pipe)" if "pipe" in name else "perf.data")
    assert st.meta["compression"] == "zstd" and st.meta["compression_mmap_len"] == 528384
    assert st.kernel_version == RELEASE and len(recs) == len(cap) == 478
    assert not any(st.lost.values()) and st.other_events == {}
    resched = 0
    for c, p in zip(cap, recs):
        assert (p.event, p.system, p.cpu, p.pid, p.comm) == (c.event, c.system, c.cpu, c.pid, "python")
        assert p.fields == c.fields, (c, p)
        assert (p.role and p.role.word) == (c.role and c.role.word)
        (cf, cp), (pf, pp) = c.flags.split(":"), p.flags.split(":")
        assert int(pp, 16) == int(cp, 16) + 1                   # as in the uncompressed fixture
        assert int(pf, 16) & ~RESCHED == int(cf, 16) & ~RESCHED
        resched += pf != cf
    # one walk record of this run: ftrace saw need-resched set, perf's probe (earlier) did not
    assert resched <= 2
    assert 28_000_000 < sorted(c.ts_ns - p.ts_ns for c, p in zip(cap, recs))[239] < 29_000_000


def test_compressed_file_and_pipe_and_cli():
    a = _read(os.path.join(L, ZFILE))[0]
    b = _read(os.path.join(L, ZPIPE))[0]
    assert [(r.event, r.fields) for r in a] == [(r.event, r.fields) for r in b]
    assert cli.main(["trace", os.path.join(L, ZFILE), "--summary"]) == 0


def test_audit_of_a_compressed_recording_equals_the_capture():
    ref = A.audit(ZCAP)
    assert ref.agreement == 100.0 and ref.total("disagreed") == 0
    rep = A.audit(os.path.join(L, ZFILE), **guest_kw(ZCAP))
    assert counts(rep) == counts(ref) and rep.total("not_checkable") == 0, rep.format_table()


def test_without_zstandard_it_is_refused_by_name(monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)        # as if not installed
    with pytest.raises(UnsupportedTraceError, match="perf record -z.*needs the zstandard package"):
        _decode(_raw(ZPIPE))


def _unzipped_pipe():
    """The pipe header, its metadata records, and the records the compressed ones hold, as
    one decompressed byte string (what perf compressed)."""
    head, recs = _pipe_records(_raw(ZPIPE))
    meta = [r for t, r in recs if t not in (P.REC_COMPRESSED, P.REC_FINISHED_ROUND)]
    d = zstandard.ZstdDecompressor().decompressobj()
    inner = b"".join(d.decompress(r[8:]) for t, r in recs if t == P.REC_COMPRESSED)
    tail = [r for t, r in recs if t == P.REC_FINISHED_ROUND]
    return head, meta, inner, tail


def _zipped(inner: bytes, cuts, v2=False) -> list:
    """inner as one zstd stream flushed at each cut (as perf flushes per record), one
    PERF_RECORD_COMPRESSED (or COMPRESSED2, with data_size and padding) per piece."""
    c = zstandard.ZstdCompressor(level=1).compressobj()
    out, last = [], 0
    for cut in list(cuts) + [len(inner)]:
        data = c.compress(inner[last:cut]) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        last = cut
        if v2:
            pad = -(16 + len(data)) % 8
            out.append(struct.pack("<IHHQ", P.REC_COMPRESSED2, 0, 16 + len(data) + pad, len(data))
                       + data + b"\0" * pad)
        else:
            out.append(struct.pack("<IHH", P.REC_COMPRESSED, 0, 8 + len(data)) + data)
    return out


@pytest.mark.parametrize("v2", (False, True), ids=("COMPRESSED", "COMPRESSED2"))
def test_records_straddling_compressed_records(v2):
    head, meta, inner, tail = _unzipped_pipe()
    want = _decode(_raw(ZPIPE))
    # cuts inside record headers and bodies: byte 3 (inside the first header), mid-sample,
    # one byte before a record ends, and every 997 bytes
    cuts = sorted({3, 100, 4095, len(inner) // 2 - 1} | set(range(997, len(inner), 997)))
    pieces = _zipped(inner, cuts, v2)
    assert len(pieces) > 50
    data = head + b"".join(meta) + b"".join(pieces) + b"".join(tail)
    assert _decode(data) == want
    # an uncut stream, in one record
    assert _decode(head + b"".join(meta) + b"".join(_zipped(inner, [], v2)) + b"".join(tail)) == want


def test_damaged_compressed_data_raises_trace_error():
    head, meta, inner, tail = _unzipped_pipe()
    pieces = _zipped(inner, range(4000, len(inner), 4000))
    pre = head + b"".join(meta)
    # the stream ends inside a record: the leftover bytes are named
    with pytest.raises(TraceFormatError, match="not a whole record"):
        _decode(pre + b"".join(_zipped(inner[:-5], [])))
    # a piece missing from the middle: the zstd stream no longer continues
    with pytest.raises(TraceError):
        _decode(pre + pieces[0] + pieces[2] + b"".join(pieces[3:]))
    # flipped compressed bytes
    bad = bytearray(pieces[1])
    bad[40] ^= 0xFF
    with pytest.raises(TraceError):
        _decode(pre + pieces[0] + bytes(bad) + b"".join(pieces[2:]))
    # COMPRESSED2 whose data_size does not fit its size, or leaves 8 bytes or more of padding
    for size in (99, 0):
        rec = struct.pack("<IHHQ", P.REC_COMPRESSED2, 0, 16 + 8, size) + b"\0" * 8
        with pytest.raises(TraceFormatError, match=f"data_size {size} in a 24-byte"):
            _decode(pre + rec)
    # a record perf never compresses, inside the compressed data
    aux = struct.pack("<IHHQQQIII", P.REC_AUXTRACE, 0, 48, 0, 0, 0, 0, 0, 0)
    with pytest.raises(UnsupportedTraceError, match="record type 71 inside compressed data"):
        _decode(pre + b"".join(_zipped(aux + inner, [])))


def _with_feature(meta, mmap_len=None, ctype=None):
    """meta with HEADER_COMPRESSED's mmap_len or type replaced."""
    out = []
    for r in meta:
        typ = struct.unpack_from("<I", r, 0)[0]
        if typ == P.REC_HEADER_FEATURE and struct.unpack_from("<Q", r, 8)[0] == P.FEAT_COMPRESSED:
            r = bytearray(r)
            if ctype is not None:
                struct.pack_into("<I", r, 16 + 4, ctype)
            if mmap_len is not None:
                struct.pack_into("<I", r, 16 + 16, mmap_len)
            r = bytes(r)
        out.append(r)
    assert out != meta
    return out


def test_decompressed_size_is_bounded_by_the_recordings_mmap_len():
    head, meta, inner, tail = _unzipped_pipe()
    assert len(inner) > 4 * 4096
    # perf decompresses each record into an mmap_len buffer; this reader allows 4 x that
    small = head + b"".join(_with_feature(meta, mmap_len=4096))
    with pytest.raises(TraceFormatError, match="decompresses to more than 16384 bytes"):
        _decode(small + b"".join(_zipped(inner, [])) + b"".join(tail))
    ok = _zipped(inner, range(16000, len(inner), 16000))
    assert len(_decode(small + b"".join(ok) + b"".join(tail))) == 478
    # a bomb without the feature: 64 MiB of zeros in 1 record is refused, not built up
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * (65 << 20))
    assert len(bomb) < 65000
    rec = struct.pack("<IHH", P.REC_COMPRESSED, 0, 8 + len(bomb)) + bomb
    plain = [r for r in meta if not (struct.unpack_from("<I", r, 0)[0] == P.REC_HEADER_FEATURE
                                     and struct.unpack_from("<Q", r, 8)[0] == P.FEAT_COMPRESSED)]
    with pytest.raises(TraceFormatError, match="decompresses to more than 67108864 bytes"):
        _decode(head + b"".join(plain) + rec)
    with pytest.raises(UnsupportedTraceError, match="compressed with type 2"):
        _decode(head + b"".join(_with_feature(meta, ctype=2)) + b"".join(ok))


@pytest.mark.parametrize("name", (ZFILE, ZPIPE))
def test_truncated_and_flipped_compressed_files_raise_only_trace_error(name):
    import random
    data = _raw(name)
    full = _decode(data)
    for n in list(range(1000, len(data), 7919)) + [len(data) - 1, len(data) - 9]:
        try:
            got = _decode(data[:n])
        except TraceError:
            continue
        assert "pipe" in name and set(map(repr, got)) <= set(map(repr, full)), n
    rng = random.Random(name)
    for _ in range(60):
        b = bytearray(data)
        for _ in range(rng.choice([1, 3, 10])):
            b[rng.randrange(len(b) - 16000, len(b)) if rng.random() < 0.7 else rng.randrange(len(b))] \
                = rng.randrange(256)
        try:
            _decode(bytes(b))
        except TraceError:
            pass

"""CTF traces from `perf data convert --to-ctf` of the real perf recordings
(tests/data/live/README.md, "perf files"): held record by record to the perf.data they were
converted from and to the pykvmmu capture of the same run; re-encoded (other byte order,
small packets, several streams, discarded events) by a test-side writer and read back the
same; damaged or unsupported metadata and streams raise TraceError subclasses."""
import os
import random
import re
import shutil
import struct
import tarfile

import pytest

from pykvmmu import audit as A
from pykvmmu import cli
from pykvmmu import trace as T
from pykvmmu.trace import ctf as X
from pykvmmu.trace.record import TraceError, TraceFormatError, UnsupportedTraceError

from test_audit_live import counts, guest_kw

L = os.path.join(os.path.dirname(__file__), "data", "live")
CAP = os.path.join(L, "demo-perf.kvmcap")
RELEASE = "6.18.44-fc-v669"


def _read(src, era=None, **kw):
    with T.open_trace(src, era=era, **kw) as st:
        recs = list(st)
        assert st.n_errors == 0
        return recs, st


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """The two CTF fixtures unpacked: demo.ctf (`--all`: side-band events with task names)
    of demo.perf.data, demo-g.ctf of the -g (callchain) recording demo-g.perf.data."""
    d = tmp_path_factory.mktemp("ctf")
    for name in ("demo.ctf", "demo-g.ctf"):
        with tarfile.open(os.path.join(L, name + ".tar.gz")) as tf:
            tf.extractall(d, filter="data") if hasattr(tarfile, "data_filter") else tf.extractall(d)
    return {n: str(d / n) for n in ("demo.ctf", "demo-g.ctf")}


def _key(r):
    return (r.event, r.system, r.cpu, r.pid, r.ts_ns, r.flags, r.fields, r.role and r.role.word,
            r.comm, r.stack)


@pytest.mark.parametrize("name,perf", [("demo.ctf", "demo.perf.data.gz"), ("demo-g.ctf", "demo-g.perf.data.gz")])
def test_ctf_equals_the_perf_data_it_was_converted_from(dirs, name, perf):
    recs, st = _read(dirs[name])
    assert st.format == "ctf" and st.kernel_version == RELEASE and st.era.name == "v6.14"
    assert st.meta["tracer"] == "perf" and st.meta["ctf_env"]["release"] == RELEASE
    assert not any(st.lost.values()) and st.other_events == {}
    ref, _ = _read(os.path.join(L, perf))
    assert len(recs) == len(ref) == (478 if name == "demo.ctf" else 64)
    keys = [_key(r) for r in recs]
    for c, p in zip(recs, ref):
        if name == "demo-g.ctf":            # no --all: no perf_comm events, so no task names
            assert c.comm == "" and p.comm == "python"
            c.comm = p.comm
        assert _key(c) == _key(p)
        assert c.source == "ctf"
    pages = [r for r in recs if r.role is not None]
    assert pages and all(r.role_known == T.FULL_ROLE for r in pages)
    if name == "demo-g.ctf":
        assert all(len(r.stack) >= 10 and r.stack[0].startswith("0xffffffff8") for r in recs)
    # the metadata file's own path opens its directory
    assert [_key(r) for r in _read(os.path.join(dirs[name], "metadata"))[0]] == keys


def test_two_cpus_two_stream_files_merged_by_time():
    """Two copies of the demo guest run at once, pinned to CPU 0 and CPU 1, under one
    `perf record` (tests/data/live/README.md): perf's converter wrote a stream file per CPU.
    Merged by time, the CTF gives the perf.data's 956 records in the perf.data's order,
    the two guests' records interleaved, each guest the demo's event sequence."""
    recs, st = _read(os.path.join(L, "demo-two.ctf.tar.gz"))
    ref, _ = _read(os.path.join(L, "demo-two.perf.data.gz"))
    assert len(recs) == len(ref) == 956 and [_key(r) for r in recs] == [_key(r) for r in ref]
    by_cpu = {c: [r for r in recs if r.cpu == c] for c in (0, 1)}
    assert [len(v) for v in by_cpu.values()] == [478, 478]
    assert len({r.pid for r in by_cpu[0]}) == len({r.pid for r in by_cpu[1]}) == 1
    switches = sum(a.cpu != b.cpu for a, b in zip(recs, recs[1:]))
    assert switches > 10                                     # interleaved, not one after the other
    demo = [r.event for r in _read(os.path.join(L, "demo.perf.data.gz"))[0]]
    assert [r.event for r in by_cpu[0]] == [r.event for r in by_cpu[1]] == demo


def test_ctf_equals_the_capture_of_the_same_run(dirs):
    recs, _ = _read(dirs["demo.ctf"])
    cap, _ = _read(CAP)
    assert len(recs) == len(cap)
    for c, k in zip(cap, recs):                 # (the capture keeps no task names)
        assert (k.event, k.cpu, k.pid, k.fields) == (c.event, c.cpu, c.pid, c.fields)
        assert (k.role and k.role.word) == (c.role and c.role.word)


def test_audit_and_cli_of_a_ctf_directory(dirs, capsys):
    ref = A.audit(CAP)
    rep = A.audit(dirs["demo.ctf"], **guest_kw(CAP))
    assert rep.total("disagreed") == 0 and rep.total("not_checkable") == 0, rep.format_table()
    assert rep.agreement == 100.0 and counts(rep) == counts(ref) and RELEASE in rep.era
    assert cli.main(["trace", dirs["demo.ctf"], "--summary"]) == 0
    out = capsys.readouterr().out
    assert "malformed: 0" in out and "0x00003704" in out and f"kernel {RELEASE}" in out
    with pytest.raises(T.TraceEraError, match="contradicts"):
        T.open_trace(dirs["demo.ctf"], era="v5.1")


def test_a_tar_of_the_directory_reads_the_same(dirs):
    """The fixture tar itself (how a CTF directory travels): the same records as the
    directory, from a path and from an unseekable stream."""
    want = [_key(r) for r in _read(dirs["demo.ctf"])[0]]
    tgz = os.path.join(L, "demo.ctf.tar.gz")
    recs, st = _read(tgz)
    assert st.format == "ctf" and st.kernel_version == RELEASE and [_key(r) for r in recs] == want
    with open(tgz, "rb") as f:
        assert [_key(r) for r in _read(f)[0]] == want


def test_all_events_and_side_band(dirs):
    recs, st = _read(dirs["demo.ctf"], all_events=True)
    assert len(recs) == 478                 # perf_comm/mmap/fork/exit are side band, not records
    assert {r.comm for r in recs} == {"python"}


# ----------------------------------------------------------------- a test-side writer
def _put(buf: bytearray, bit: int, t, v, name) -> int:
    """Write value ``v`` of CTF type ``t`` at ``bit``; the bit after it."""
    if isinstance(t, X._Struct):
        bit = -(-bit // t.align) * t.align
        for n, mt, length in t.members:
            if length is None:
                bit = _put(buf, bit, mt, v[n], n)
            else:
                for x in v[n]:
                    bit = _put(buf, bit, mt, x, n)
        return bit
    if isinstance(t, X._Str):
        bit = -(-bit // 8) * 8
        b = v.encode() + b"\0"
    else:
        bit = -(-bit // t.align) * t.align
        b = v.to_bytes(t.size // 8, "little" if t.order == "<" else "big", signed=t.signed)
    need = (bit >> 3) + len(b)
    if len(buf) < need:
        buf.extend(bytes(need - len(buf)))
    buf[bit >> 3:need] = b
    return need * 8


def _write_stream(meta, events, per_packet, cpu, discarded=0, uuid=None, magic=X.PACKET_MAGIC,
                  packet_pad=64):
    """A stream file of ``events`` ((sid, id, ts, values)) in packets of ``per_packet``."""
    out = bytearray()
    s = meta.streams[0]
    for k in range(0, max(len(events), 1), per_packet):
        chunk = events[k:k + per_packet]
        buf = bytearray()
        hdr = {"magic": magic, "uuid": tuple(uuid or X._uuid_bytes(meta.trace["uuid"], "")), "stream_id": 0}
        bit = _put(buf, 0, meta.packet_header, hdr, "packet.header")
        ctx_at = bit
        ctx = {"timestamp_begin": 0, "timestamp_end": 0, "content_size": 0, "packet_size": 0,
               "events_discarded": discarded, "cpu_id": cpu}
        bit = _put(buf, bit, s["packet.context"], ctx, "packet.context")
        for sid, eid, ts, vals in chunk:
            bit = _put(buf, bit, s["event.header"], {"id": eid, "timestamp": ts}, "event.header")
            bit = _put(buf, bit, meta.events[(sid, eid)][2], vals, "fields")
        content = bit
        psize = (-(-content // 8) + packet_pad) * 8
        ctx.update(content_size=content, packet_size=psize,
                   timestamp_begin=chunk[0][2] if chunk else 0, timestamp_end=chunk[-1][2] if chunk else 0)
        _put(buf, ctx_at, s["packet.context"], ctx, "packet.context")
        buf.extend(bytes(psize // 8 - len(buf)))
        out += buf
    return bytes(out)


def _source_events(path):
    src = X.open_ctf(path)
    evs = [(sid, eid, ts, vals) for ctx, sid, eid, ts, name, vals in src.events(src.files[0])]
    return src, evs


def _make(tmp_path, name, metadata, streams):
    d = tmp_path / name
    d.mkdir()
    (d / "metadata").write_text(metadata)
    for fname, data in streams.items():
        (d / fname).write_bytes(data)
    return str(d)


def test_reencoded_big_endian_small_packets_read_the_same(dirs, tmp_path):
    """The fixture re-encoded big-endian (the trace's byte_order, types saying native) in
    packets of 7 events: the same records."""
    src, evs = _source_events(dirs["demo.ctf"])
    text = open(os.path.join(dirs["demo.ctf"], "metadata")).read()
    be = re.sub(r"(uuid = \"[^\"]*\";\n\tbyte_order = )le;", r"\1be;", text)
    be = be.replace("byte_order = le;", "byte_order = native;")
    assert be.count("byte_order = be;") == 1 and "byte_order = le" not in be
    meta = X.parse_metadata(be)
    assert meta.events[(0, 12)][2].members[0][1].order == ">"
    d = _make(tmp_path, "be", be, {"perf_stream_0": _write_stream(meta, evs, 7, 0)})
    assert open(os.path.join(d, "perf_stream_0"), "rb").read(4) == struct.pack(">I", X.PACKET_MAGIC)
    want = [_key(r) for r in _read(dirs["demo.ctf"])[0]]
    assert [_key(r) for r in _read(d)[0]] == want


def test_several_streams_merge_by_time_and_discarded_events_are_lost(dirs, tmp_path):
    src, evs = _source_events(dirs["demo.ctf"])
    text = open(os.path.join(dirs["demo.ctf"], "metadata")).read()
    meta = X.parse_metadata(text)
    shifted = [(s, e, ts + 1, v) for s, e, ts, v in evs]
    d = _make(tmp_path, "two", text, {"perf_stream_0": _write_stream(meta, evs, 50, 0),
                                      "perf_stream_1": _write_stream(meta, shifted, 1000, 1, discarded=7),
                                      "perf_stream_10": _write_stream(meta, [], 1, 5, discarded=3)})
    one = _read(dirs["demo.ctf"])[0]
    recs, st = _read(d)
    assert len(recs) == 2 * len(one)
    assert [r.ts_ns for r in recs] == sorted(r.ts_ns for r in recs)
    assert [(r.cpu, r.fields) for r in recs[0::2]] == [(0, r.fields) for r in one]
    assert [(r.cpu, r.fields) for r in recs[1::2]] == [(1, r.fields) for r in one]
    assert [r.line_no for r in recs] == list(range(1, len(recs) + 1))
    assert st.lost == {"cpu1": {"ctf events discarded": 7}, "cpu5": {"ctf events discarded": 3}}
    rep = A.audit(d, era="v6.14")
    assert any("lost events" in w for w in rep.warnings)


# ----------------------------------------------------------------- damage and refusals
def _copy(dirs, tmp_path, name="d"):
    d = tmp_path / name
    shutil.copytree(dirs["demo.ctf"], d)
    return d


def _sub(d, old, new, count=1):
    p = d / "metadata"
    t = p.read_text()
    assert old in t, old
    p.write_text(t.replace(old, new, count))


_INT = "integer { size = 64; align = 1; signed = false; encoding = none; base = decimal; byte_order = le; } gfn;"


@pytest.mark.parametrize("old,new,match", [
    ("/* CTF 1.8 */\n", "/* CTF 1.8 */\ntypealias integer { size = 8; } := u8;\n", "typealias"),
    ("\tfields := struct {\n", "\tfields := struct {\n\t\tenum : integer { size = 8; } { A } e;\n", "enum"),
    ("\tfields := struct {\n", "\tfields := struct {\n\t\tfloating_point { exp_dig = 8; mant_dig = 24; } f;\n",
     "floating_point"),
    (_INT, _INT.replace("size = 64", "size = 3"), "3-bit integer"),
    ("map = clock.perf_clock.value; } timestamp;", "} timestamp;\n\t\tinteger { size = 27; align = 1; } ts2;",
     "27-bit"),
    ("size = 64; align = 8; signed = false; encoding = none; base = decimal; byte_order = le; map",
     "size = 32; align = 8; signed = false; encoding = none; base = decimal; byte_order = le; map",
     "compact timestamps"),
    ("freq = 1000000000;", "freq = 1000;", "nanosecond clock"),
    ("offset_s = 0;", "offset_s = 5;", "nanosecond clock"),
    ("major = 1;", "major = 2;", "CTF 2.8"),
])
def test_unsupported_metadata_is_refused_by_name(dirs, tmp_path, old, new, match):
    d = _copy(dirs, tmp_path)
    _sub(d, old, new)
    with pytest.raises(UnsupportedTraceError, match=match):
        T.open_trace(str(d))


@pytest.mark.parametrize("old,new,match", [
    ("stream_id = 0;\n\tfields", "stream_id = 3;\n\tfields", "stream 3, which is not declared"),
    ("\tid = 1;\n", "\tid = 0;\n", "declared twice"),
    ("} gfn;", "} gfn[nope];", "not an earlier member"),
    ("} gfn;", "} gfn;\n\t\tstruct { } empty;", "empty struct"),
    ("} gfn;", "} gfn; @", "unexpected text"),
    ("} perf_tid;", "} perf_tid;\n\t\tstring perf_tid;", "declared twice"),
    ("} magic;", "} magic[2];", "'magic' is not an integer"),
    ("} uuid[16];", "} uuid[8];", "not 16 bytes"),
    ("} cpu_id;", "} cpu_id[1];", "'cpu_id' is not an integer"),
    ("\tpacket.context := struct", "\tpacket.context := string;\n\tx := struct", "not a struct"),
    ("size = 32; align = 8; signed = false; encoding = none; base = decimal; byte_order = le; } id;",
     "size = 32; align = 3; } id;", "align 3"),
    ("\tbyte_order = le;\n\tpacket.header", "\tbyte_order = native;\n\tpacket.header", "byte_order 'native'"),
    ("\tmajor = 1;\n", "\tmajor = 1;\n\tmajor = 1;\n", "'major' set twice"),
    ("freq = 1000000000;", "freq = 09;", "number '09'"),
])
def test_damaged_metadata_is_a_format_error(dirs, tmp_path, old, new, match):
    d = _copy(dirs, tmp_path)
    _sub(d, old, new)
    with pytest.raises(TraceFormatError, match=match):
        list(T.open_trace(str(d)))


def test_c_literals():
    m = X.parse_metadata('/* CTF 1.8 */ trace { major = 1; minor = 010; uuid = "a\\"b"; };', "m")
    assert m.trace == {"major": 1, "minor": 8, "uuid": 'a"b'}
    with pytest.raises(UnsupportedTraceError, match="CTF 1.16"):    # 0x10 is 16
        X.parse_metadata("/* CTF 1.8 */ trace { major = 1; minor = 0x10; };", "m")


def test_deep_nesting_and_packetized_metadata(dirs, tmp_path):
    d = _copy(dirs, tmp_path)
    _sub(d, "} gfn;", "} gfn;\n" + "struct { " * 40 + "string s; " + "} x; " * 40)
    with pytest.raises(TraceFormatError, match="nested more than 32"):
        T.open_trace(str(d))
    p = _copy(dirs, tmp_path, "p")
    (p / "metadata").write_bytes(struct.pack("<I", 0x75D11D57) + bytes(40))
    with pytest.raises(UnsupportedTraceError, match="packetized"):
        T.open_trace(str(p))
    c = _copy(dirs, tmp_path, "c")
    (c / "metadata").write_text((c / "metadata").read_text()[:-4])
    with pytest.raises(TraceFormatError, match="metadata ends"):
        T.open_trace(str(c))
    e = _copy(dirs, tmp_path, "e")
    os.remove(e / "perf_stream_0")
    with pytest.raises(TraceFormatError, match="no stream files"):
        T.open_trace(str(e))
    with pytest.raises(TraceError, match="neither header_page.*nor CTF metadata"):
        T.open_trace(str(tmp_path))


def _stream(d):
    return bytearray((d / "perf_stream_0").read_bytes())


@pytest.mark.parametrize("edit,match", [
    (lambda b: b[:0x44 + 40], "runs past|do not fit"),                      # cut inside the packet
    (lambda b: struct.pack_into("<I", b, 0, 0x12345678) or b, "magic 0x12345678"),
    (lambda b: struct.pack_into("B", b, 4, b[4] ^ 1) or b, "uuid"),
    (lambda b: struct.pack_into("<I", b, 20, 9) or b, "stream_id 9"),
    (lambda b: struct.pack_into("<Q", b, 40, 1 << 40) or b, "do not fit"),     # content_size
    (lambda b: struct.pack_into("<Q", b, 48, 12345) or b, "do not fit"),       # packet_size
    (lambda b: struct.pack_into("<I", b, 68, 999) or b, "event id 999"),
])
def test_damaged_streams_raise_format_errors(dirs, tmp_path, edit, match):
    d = _copy(dirs, tmp_path)
    b = edit(_stream(d))
    (d / "perf_stream_0").write_bytes(bytes(b))
    with pytest.raises(TraceFormatError, match=match):
        list(T.open_trace(str(d)))


def test_random_damage_raises_only_trace_errors(dirs, tmp_path):
    """Flipped bytes in the stream and edited metadata: a TraceError or records, never
    another exception."""
    rng = random.Random(5)
    d = _copy(dirs, tmp_path)
    good = _stream(d)
    text = (d / "metadata").read_text()
    raised = 0
    for i in range(150):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(0, 2000 if i % 2 else len(b))] ^= 1 << rng.randrange(8)
        (d / "perf_stream_0").write_bytes(bytes(b))
        t = list(text)
        if i % 3 == 0:
            for _ in range(rng.randint(1, 3)):
                t[rng.randrange(len(t))] = rng.choice("{};=[]:01az \"")
        (d / "metadata").write_text("".join(t))
        try:
            list(T.open_trace(str(d), era="v6.14", check_era=False, all_events=True))
        except TraceError:
            raised += 1
    assert raised >= 30

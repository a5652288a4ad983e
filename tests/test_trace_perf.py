"""Linux perf recordings of one real kvm_pvm shadow-MMU run (tests/data/live/README.md, "perf
files"): perf.data, a pipe-mode stream and `perf script` text, read through open_trace and held
record by record to the pykvmmu capture of the same run; damaged files raise TraceError."""
import gzip
import io
import os
import struct
import sys

import pytest

from pykvmmu import audit as A
from pykvmmu import cli
from pykvmmu import trace as T
from pykvmmu.trace import perfdata as P
from pykvmmu.trace.record import TraceError, TraceFormatError, UnsupportedTraceError

from test_audit_live import counts, guest_kw
from test_trace_formats import _same_int

L = os.path.join(os.path.dirname(__file__), "data", "live")
CAP = os.path.join(L, "demo-perf.kvmcap")
PERF = "demo.perf.data.gz"
PIPE = "demo.pipe.perf.data.gz"
CHAIN = "demo-g.perf.data.gz"
BINARY = (PERF, PIPE, CHAIN)
TEXTS = ("demo.perf-script.txt", "demo.perf-script-F.txt", "demo-g.perf-script.txt.gz")
RELEASE = "6.18.44-fc-v669"


def _read(src, era=None, **kw):
    if isinstance(src, str) and src != "-" and not os.path.isabs(src):
        src = os.path.join(L, src)
    with T.open_trace(src, era=era, **kw) as st:
        recs = list(st)
        assert st.n_errors == 0, st.errors[:3]
        return recs, st


def _raw(name):
    return gzip.decompress(open(os.path.join(L, name), "rb").read())


@pytest.fixture(scope="module")
def cap():
    return _read(CAP)[0]


@pytest.fixture(scope="module")
def perf():
    return _read(PERF)[0]


@pytest.mark.parametrize("name", BINARY)
def test_each_binary_fixture_decodes_with_the_era_of_its_osrelease(name):
    recs, st = _read(name)
    assert st.format == ("perf.data (pipe)" if "pipe" in name else "perf.data")
    assert st.kernel_version == RELEASE and st.era.name == "v6.14"    # HEADER_OSRELEASE
    assert st.meta["osrelease"] == RELEASE and st.meta["tracing_data_version"] == "0.6"
    assert len(recs) == (64 if name == CHAIN else 478)
    assert st.other_events == {} and not any(st.lost.values())
    assert all(r.source == st.format and r.comm == "python" and r.ts_ns > 0 for r in recs)
    assert [r.ts_ns for r in recs] == sorted(r.ts_ns for r in recs)
    pages = [r for r in recs if r.role is not None]
    assert pages and all(r.role_known == T.FULL_ROLE for r in pages)
    with pytest.raises(T.TraceEraError, match="contradicts the trace's kernel 6.18.44"):
        T.open_trace(os.path.join(L, name), era="v5.1")


def test_perf_data_equals_the_capture_of_the_same_run(cap, perf):
    # one run, recorded by pykvmmu record (tracefs instance) and by perf record at once
    assert len(perf) == len(cap) == 478
    offsets = []
    for c, p in zip(cap, perf):
        assert (p.event, p.system, p.cpu, p.pid) == (c.event, c.system, c.cpu, c.pid)
        assert p.fields == c.fields, (c, p)                     # every field: roles, SPTEs, sptep
        assert (p.role and p.role.word) == (c.role and c.role.word)
        # common_flags agree; perf's common_preempt_count is one more than ftrace's (ftrace
        # discounts the tracepoint's own preempt-disable, perf does not): seen on every record
        cf, cp = c.flags.split(":")
        pf, pp = p.flags.split(":")
        assert pf == cf and int(pp, 16) == int(cp, 16) + 1
        offsets.append(c.ts_ns - p.ts_ns)
    # the clocks differ: ftrace's "local" trace clock (sched_clock) runs a constant 28.64 ms
    # ahead of perf's (local_clock) on this boot; each probe takes its own stamp, so the
    # offset varies by a few microseconds (56 us at most here)
    mid = sorted(offsets)[len(offsets) // 2]
    assert 28_000_000 < mid < 29_000_000
    assert all(abs(o - mid) < 100_000 for o in offsets)
    assert sum(o == offsets[0] for o in offsets) < len(offsets)     # not identical stamps


def test_pipe_mode_equals_the_file_of_the_same_run(perf):
    # the pipe was a second perf record wrapped around the first: same samples, own stamps
    pipe, st = _read(PIPE)
    assert len(pipe) == len(perf)
    for a, b in zip(perf, pipe):
        assert (a.event, a.cpu, a.pid, a.fields, a.flags, a.comm) == (b.event, b.cpu, b.pid, b.fields,
                                                                      b.flags, b.comm)
        assert abs(a.ts_ns - b.ts_ns) < 100_000


@pytest.mark.parametrize("name", TEXTS[:2])
def test_perf_script_text_agrees_with_perf_data(name, perf):
    txt, st = _read(name, "v6.14")
    assert st.format == "text" and len(txt) == len(perf)
    for p, t in zip(perf, txt):
        assert (t.event, t.system, t.cpu, t.pid, t.comm) == (p.event, p.system, p.cpu, p.pid, p.comm)
        if name.endswith("-F.txt"):
            assert t.ts_ns == p.ts_ns                            # --ns: exact
        else:
            assert t.ts_ns is None and round(t.ts * 1e6) == p.ts_ns // 1000   # usecs, truncated
        if p.role is not None:
            # perf 6.1's libtraceevent cannot evaluate the page events' print fmt: it prints
            # "[FAILED TO PARSE] name=value" (decimal), so every field and the whole role word
            assert t.source == "raw" and t.fields == p.fields
            assert t.role.word == p.role.word and t.role_known == T.FULL_ROLE
        else:
            shared = set(t.fields) & set(p.fields)
            assert shared and all(_same_int(p.fields[k], t.fields[k]) for k in shared), (p, t)
    sp = [t for t in txt if t.event == "kvm_mmu_set_spte"]
    assert sp and all(t.fields["spte"] == p.fields["spte"]
                      for t, p in zip(sp, [p for p in perf if p.event == "kvm_mmu_set_spte"]))


#: perf script -F sets printing more than the default (perf 6.1 on demo.perf.data), with what
#: the test expects of comm and cpu
F_VARIANTS = {
    "demo.perf-script-ip.txt.gz": ("comm,tid,cpu,time,event,trace,ip,sym,dso", True),
    "demo.perf-script-period.txt.gz": ("comm,pid,tid,cpu,time,period,event,trace", True),
    "demo.perf-script-ip-only.txt.gz": ("tid,time,event,ip,trace", False),
}


@pytest.mark.parametrize("name", F_VARIANTS)
def test_perf_script_field_sets_with_ip_sym_dso_and_period(name, perf):
    """-F with ip (and sym, dso) prints the sample's address after the event's text, period a
    number after the time: every record is read, with every field perf.data has."""
    _, has_comm_cpu = F_VARIANTS[name]
    txt, st = _read(name, "v6.14")
    assert st.format == "text" and len(txt) == len(perf) == 478
    for p, t in zip(perf, txt):
        assert (t.event, t.system, t.pid) == (p.event, p.system, p.pid)
        assert (t.comm, t.cpu) == ((p.comm, p.cpu) if has_comm_cpu else ("", -1))
        assert round(t.ts * 1e6) == p.ts_ns // 1000
        shared = set(t.fields) & set(p.fields)
        assert shared and all(_same_int(p.fields[k], t.fields[k]) for k in shared), (p, t)
        if p.role is not None:
            assert t.role.word == p.role.word
        assert "ffffffff" not in t.payload                 # the address is not in the text
    walks = {t.fields["pferr_flags"] for t in txt if t.event == "kvm_mmu_pagetable_walk"}
    assert walks == {"", "F", "W", "P|W"}


def test_perf_script_side_band_lines_and_time_first_lines(perf):
    """--show-task-events/--show-mmap-events/--show-round-events print perf's side-band
    records (PERF_RECORD_COMM, FORK, EXIT, MMAP2, FINISHED_ROUND) among the samples: other
    events, not malformed lines; -F time,event,trace lines start with the time."""
    side, st = _read("demo.perf-script-sideband.txt.gz", "v6.14")
    assert dict(st.other_events) == {"PERF_RECORD_COMM": 42, "PERF_RECORD_FORK": 46,
                                     "PERF_RECORD_EXIT": 47, "PERF_RECORD_MMAP2": 218,
                                     "PERF_RECORD_FINISHED_ROUND": 1}
    tim, st = _read("demo.perf-script-time.txt.gz", "v6.14")
    assert len(side) == len(tim) == len(perf) == 478
    # perf script named every sample's task "bash": the exec COMM record that made it
    # "python" (CPU 1, 40688.121738, before every sample) came out 597 lines after the first
    # sample; perf.data's COMM records give "python"
    for p, a, b in zip(perf, side, tim):
        assert (a.event, a.pid, a.cpu, a.comm, p.comm) == (p.event, p.pid, p.cpu, "bash", "python")
        assert (b.event, b.pid, b.cpu, b.comm, b.ts_ns) == (p.event, -1, -1, "", p.ts_ns)
        shared = set(a.fields) & set(p.fields)
        assert a.fields == b.fields and shared and all(_same_int(p.fields[k], a.fields[k]) for k in shared)
        assert (b.role and b.role.word) == (p.role and p.role.word)
    with pytest.raises(ValueError, match="not a trace line"):
        T.parse_line("some text PERF_RECORD_COMM: x", 1, "v6.14")      # not after a time
    bare, st = _read("demo.perf-script-event-only.txt.gz", "v6.14")   # -F event,trace: no time
    assert [(b.event, b.fields, b.pid, b.cpu, b.ts) for b in bare] == [
        (b.event, b.fields, -1, -1, 0.0) for b in tim]


def test_perf_ip_is_taken_off_only_where_the_text_needs_it():
    def line(payload):
        return f"  python 1 [000] 1.000001:   kvmmmu:{payload}"
    # a payload ending in a hex value of its own keeps it (the event's text parses)
    r = T.parse_line(line("kvm_mmu_paging_element: pte 8000000012345e77 level 1"), 1, "v6.14")
    assert r.fields == {"pte": 0x8000000012345E77, "level": 1}
    # the same event with perf's 16-wide address (and symbol, dso) after it
    for tail in (" ffffffff812cf4ff", " ffffffff812cf4ff [unknown]", " ffffffff812cf4ff [unknown] ([unknown])",
                 "     7f0012345678 __GI___ioctl+0x8 (/usr/lib/libc.so.6)"):
        r = T.parse_line(line("kvm_mmu_paging_element: pte 11027 level 4" + tail), 1, "v6.14")
        assert r.fields == {"pte": 0x11027, "level": 4}, tail
    # an address narrower than perf's 16 columns is not one: the line stays malformed
    with pytest.raises(ValueError, match="TP_printk"):
        T.parse_line(line("kvm_mmu_paging_element: pte 11027 level 4 12345"), 1, "v6.14")
    # PFERR flags are __print_flags names joined by "|": other text after pferr is refused
    r = T.parse_line(line("kvm_mmu_pagetable_walk: addr 4002e8 pferr 3 P|W ffffffff812cf47f"), 1, "v6.14")
    assert r.fields == {"addr": 0x4002E8, "pferr": 3, "pferr_flags": "P|W"}
    with pytest.raises(ValueError, match="TP_printk"):
        T.parse_line(" qemu-1 [001] ..... 1.0: kvm_mmu_pagetable_walk: addr 1 pferr 3 P|W junk", 1, "v6.14")
    # an ftrace line never has perf's address: not taken off
    with pytest.raises(ValueError, match="TP_printk"):
        T.parse_line(" qemu-1 [001] ..... 1.0: kvm_mmu_paging_element: pte 1 level 4 ffffffff812cf4ff", 1,
                     "v6.14")


def test_callchains_become_the_record_stack():
    bin_, _ = _read(CHAIN)
    txt, _ = _read(TEXTS[2], "v6.14")
    assert len(bin_) == len(txt) == 64
    assert {r.event for r in bin_} == {"kvm_mmu_get_page", "kvm_mmu_set_spte"}

    def kernel(stack):
        return tuple(s for s in stack if int(s.split()[0], 16) >= 0xFFFF800000000000)
    for b, t in zip(bin_, txt):
        assert b.stack and kernel(b.stack) and kernel(b.stack) == kernel(t.stack)
        assert len(b.stack) == len(t.stack)            # the PERF_CONTEXT_* markers are dropped
        assert not any(int(s.split()[0], 16) >= P.PERF_CONTEXT_MAX for s in b.stack)
    # perf script prints a user frame it resolves relative to its DSO, with the symbol
    assert any("__GI___ioctl" in s for s in txt[0].stack)


@pytest.mark.parametrize("name", (PERF, PIPE, TEXTS[0], TEXTS[1]))
def test_audit_of_perf_forms_agrees_with_the_capture(name):
    ref = A.audit(CAP)
    assert ref.agreement == 100.0 and ref.total("disagreed") == 0
    era = "v6.18" if name.endswith(".txt") else None
    rep = A.audit(os.path.join(L, name), era=era, **guest_kw(CAP))
    assert rep.total("disagreed") == 0 and rep.total("not_checkable") == 0, rep.format_table()
    assert rep.agreement == 100.0 and counts(rep) == counts(ref)
    if era is None:
        assert RELEASE in rep.era


def test_uncompressed_stdin_and_unseekable_sources(tmp_path, monkeypatch, perf):
    fields = [r.fields for r in perf]
    plain = tmp_path / "demo.perf.data"
    plain.write_bytes(_raw(PERF))
    assert [r.fields for r in _read(str(plain))[0]] == fields
    pipe = _raw(PIPE)

    class _Unseekable:                       # a socket-like object: read() only
        def __init__(self, b):
            self._f = io.BytesIO(b)

        def read(self, n=-1):
            return self._f.read(n)
    for data in (pipe, _raw(PERF)):
        assert [r.fields for r in _read(_Unseekable(data))[0]] == fields

    class _Stdin:
        buffer = io.BufferedReader(io.BytesIO(pipe))
    monkeypatch.setattr(sys, "stdin", _Stdin)
    assert [r.fields for r in _read("-")[0]] == fields


@pytest.mark.parametrize("name", BINARY + TEXTS)
def test_cli_summary(name, capsys):
    args = ["trace", os.path.join(L, name), "--summary"] + (["--era", "v6.14"] if "script" in name else [])
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "malformed: 0" in out and ("0x00003704" in out)
    if "script" not in name:
        assert f"kernel {RELEASE}" in out and "format: perf.data" in out


def _decode(data: bytes):
    with T.open_trace(io.BytesIO(data), era="v6.14", check_era=False) as st:
        return [(r.event, r.cpu, r.ts_ns, r.fields) for r in st]


def _file_offsets(data):
    (_, _, attr_size, a_off, a_size, d_off, d_size) = struct.unpack_from("<8sQQQQQQ", data, 0)
    return attr_size, a_off, a_size, d_off, d_size


@pytest.mark.parametrize("name", BINARY)
def test_truncated_files_raise_trace_error(name):
    data = _raw(name)
    full = _decode(data)
    cuts = [4, 7, 8, 15, 16, 60, 103, 104, 200, 1000, 3000] + list(range(5000, len(data), 9973))
    cuts += [len(data) - 1, len(data) - 9]
    for n in cuts:
        try:
            got = _decode(data[:n])
        except TraceError as e:
            assert "offset" in str(e) or "truncated" in str(e) or "outside the file" in str(e), e
            continue
        # only a pipe cut exactly between two data records ends cleanly (there is no trailer)
        assert "pipe" in name and set(map(repr, got)) <= set(map(repr, full)), n


@pytest.mark.parametrize("name", (PERF, CHAIN))
def test_flipped_header_bytes_raise_or_change_nothing(name):
    data = _raw(name)
    full = _decode(data)
    errors = 0
    for i in range(P.FILE_HEADER_SIZE):
        b = bytearray(data)
        b[i] ^= 0xFF
        try:
            with T.open_trace(io.BytesIO(bytes(b)), era="v6.14", check_era=False) as st:
                got = [(r.event, r.cpu, r.ts_ns, r.fields) for r in st]
        except TraceError:
            errors += 1
            continue
        if i < 7 and st.format == "text":
            # no longer a perf magic at all: read as text, every line malformed, no record
            assert not got and st.n_errors > 0, i
            continue
        # event_types (unused) and feature bits above the sections read change nothing
        assert got == full, i
    assert errors >= 60


def test_magic_variants_are_refused_by_name():
    data = _raw(PERF)
    swapped = P.MAGIC[::-1] + data[8:]
    with pytest.raises(UnsupportedTraceError, match="big-endian"):
        _decode(swapped)
    with pytest.raises(UnsupportedTraceError, match="version-1"):
        _decode(b"PERFFILE" + data[8:])
    with pytest.raises(UnsupportedTraceError, match="unknown version"):
        _decode(b"PERFILE3" + data[8:])
    with pytest.raises(UnsupportedTraceError, match="header size"):
        _decode(data[:8] + struct.pack("<Q", 112) + data[16:])
    assert T.detect_format(data[:512]) == "perf.data"
    assert T.detect_format(_raw(PIPE)[:512]) == "perf-pipe"


def test_perf_json_is_refused_by_name(capsys):
    """`perf data convert --to-json` of the fixture (perf 6.1: time, pid, cpu, comm and the
    sample address, no event name, no fields) is refused with the reason, also compressed,
    from a stream, and in the newer form that adds the event's own fields (still no name);
    it is never read as text lines that all fail."""
    src = os.path.join(L, "demo.perf-json.json.gz")
    data = _raw("demo.perf-json.json.gz")
    assert T.detect_format(data[:512]) == "perf-json"
    assert '"samples"' in data.decode() and "kvm_mmu" not in data.decode()
    newer = data.replace(b'\t\t\t]\n\t\t}', b'\t\t\t],\n\t\t\t"mmu_valid_gen": "0",\n'
                         b'\t\t\t"gfn": "19",\n\t\t\t"role": "14081",\n\t\t\t"root_count": "0",\n'
                         b'\t\t\t"unsync": "1"\n\t\t}', 1)
    assert newer != data
    for s in (src, io.BytesIO(data), io.BytesIO(gzip.compress(newer)), io.BytesIO(b"\n  " + data)):
        with pytest.raises(UnsupportedTraceError, match="--to-json.*names no event.*kvm_mmu_sync_page"):
            T.open_trace(s, era="v6.14")
    assert cli.main(["trace", src, "--summary", "--era", "v6.14"]) != 0
    err = capsys.readouterr().err
    assert "--to-json" in err and "not a trace line" not in err
    assert T.detect_format(b'{"not": "perf"}\n') == "text"


def test_sample_types_it_cannot_parse_are_refused():
    data = bytearray(_raw(PERF))
    attr_size, a_off, *_ = _file_offsets(bytes(data))
    st_off = a_off + 24                                 # perf_event_attr.sample_type
    st = struct.unpack_from("<Q", data, st_off)[0]
    assert st == P.S_IP | P.S_TID | P.S_TIME | P.S_ID | P.S_CPU | P.S_PERIOD | P.S_RAW
    bad = bytearray(data)
    struct.pack_into("<Q", bad, st_off, st | 1 << 40)
    with pytest.raises(UnsupportedTraceError, match="sample_type .* bits this reader does not know"):
        _decode(bytes(bad))
    bad = bytearray(data)
    struct.pack_into("<Q", bad, st_off, st & ~P.S_RAW)
    with pytest.raises(UnsupportedTraceError, match="without PERF_SAMPLE_RAW"):
        _decode(bytes(bad))
    bad = bytearray(data)                               # ids no longer at one position
    struct.pack_into("<Q", bad, a_off + attr_size + 24, st | P.S_ADDR)
    with pytest.raises(UnsupportedTraceError, match="sample id at one position"):
        _decode(bytes(bad))


def _pipe_records(data):
    """The pipe header and each record's bytes (a tracing-data record with its data)."""
    out, pos = [], P.PIPE_HEADER_SIZE
    while pos < len(data):
        typ, _, size = struct.unpack_from("<IHH", data, pos)
        end = pos + size
        if typ == P.REC_HEADER_TRACING_DATA:
            end += struct.unpack_from("<I", data, pos + 8)[0]
        out.append((typ, data[pos:end]))
        pos = end
    return data[:P.PIPE_HEADER_SIZE], out


def _sample_key(rec):
    return struct.unpack_from("<Q", rec, 8 + 16)[0]     # IP, TID, then TIME


def test_pipe_losses_and_round_ordering():
    head, recs = _pipe_records(_raw(PIPE))
    meta = [r for t, r in recs if t != P.REC_SAMPLE and t != P.REC_FINISHED_ROUND]
    samples = [r for t, r in recs if t == P.REC_SAMPLE]
    assert len(samples) == 478
    # LOST (u64 id, u64 lost) and LOST_SAMPLES (u64 lost) with the sample_id_all trailer
    # (TID, TIME, ID, CPU: this recording's sample_type)
    trailer = struct.pack("<IIQQII", 1, 1, 0, 0, 1, 0)
    lost = struct.pack("<IHH", P.REC_LOST, 0, 8 + 16 + len(trailer)) + struct.pack("<QQ", 0, 5) + trailer
    lost_s = struct.pack("<IHH", P.REC_LOST_SAMPLES, 0, 8 + 8 + len(trailer)) + struct.pack("<Q", 7) + trailer
    rnd = struct.pack("<IHH", P.REC_FINISHED_ROUND, 0, 8)
    # three rounds, each written out of order (as two per-CPU buffers would be)
    k = len(samples) // 3
    rounds = [samples[:k], samples[k:2 * k], samples[2 * k:]]
    body = b"".join(b"".join(meta) for _ in [0])
    for r in rounds:
        body += b"".join(r[1::2] + r[0::2]) + rnd
    body += lost + lost_s

    reads = []

    class _Logged(io.RawIOBase):
        def __init__(self, b):
            self._f = io.BytesIO(b)

        def readable(self):
            return True

        def readinto(self, buf):
            d = self._f.read(min(len(buf), 512))
            buf[:len(d)] = d
            reads.append(self._f.tell())
            return len(d)
    data = head + body
    with T.open_trace(io.BufferedReader(_Logged(data), 512), era="v6.14") as st:
        it = iter(st)
        first = next(it)
        read_at_first = reads[-1]
        rest = list(it)
        lost_seen = {c: dict(d) for c, d in st.lost.items()}
    got = [first] + rest
    assert [r.ts_ns for r in got] == sorted(_sample_key(s) for s in samples)
    assert lost_seen == {"cpu1": {"perf lost": 5, "perf lost samples": 7}}
    # the first record came once round 2 closed, long before the end (bounded memory)
    assert read_at_first < len(data) - len(b"".join(rounds[2])) // 2


def test_perf_script_lines_among_other_text():
    lines = [
        "          python 28763 [000] 40688.957630:   kvmmmu:kvm_mmu_pagetable_walk: addr 4002e8 pferr 10 F",
        "  qemu-system-x86  1234/1240 [001] 5678.901234567: kvmmmu:kvm_mmu_get_page: "
        "[FAILED TO PARSE] mmu_valid_gen=0 gfn=16 role=14084 root_count=0 unsync=0 created=1",
        "1234 5678.901234: kvmmmu:kvm_mmu_set_accessed_bit: gpa 11000",
        " Web Content 77 [003] 1.000001: sched:sched_switch: prev_comm=x",
    ]
    r0 = T.parse_line(lines[0], 1, "v6.14")
    assert (r0.comm, r0.pid, r0.cpu, r0.fields["addr"]) == ("python", 28763, 0, 0x4002E8)
    r1 = T.parse_line(lines[1], 2, "v6.14")
    assert (r1.comm, r1.pid, r1.cpu, r1.ts_ns) == ("qemu-system-x86", 1240, 1, 5678901234567)
    assert r1.role.word == 0x3704 and r1.role_known == T.FULL_ROLE and r1.fields["gfn"] == 16
    r2 = T.parse_line(lines[2], 3, "v6.14")
    assert (r2.comm, r2.pid, r2.cpu, r2.fields) == ("", 1234, -1, {"gpa": 0x11000})
    assert T.parse_line(lines[3], 4, "v6.14") == ("other", "sched_switch")
    # an ftrace line is still read as before (comm-pid), not as perf's
    ft = T.parse_line("  python-28763 [000] ..... 40688.957630: kvm_mmu_set_accessed_bit: gpa 11000",
                      1, "v6.14")
    assert (ft.comm, ft.pid, ft.cpu, ft.flags) == ("python", 28763, 0, ".....")
    with pytest.raises(TraceFormatError):
        P.Attr(b"\0" * 10, "x")


@pytest.mark.parametrize("name", BINARY)
def test_random_damage_raises_only_trace_error(name):
    import random
    rng = random.Random(name)
    data = _raw(name)
    for _ in range(120):
        b = bytearray(data)
        for _ in range(rng.choice([1, 2, 5, 20])):
            # half the hits in the first 130 KB: header, attrs, features/tracing data, samples
            b[rng.randrange(len(b)) if rng.random() < 0.5 else rng.randrange(min(len(b), 130000))] = \
                rng.randrange(256)
        if rng.random() < 0.2:
            b = b[:rng.randrange(len(b))]
        try:
            _decode(bytes(b))
        except TraceError:
            pass


def test_a_damaged_format_with_non_integer_common_fields_is_a_format_error():
    from pykvmmu.trace.raw import event_record
    from pykvmmu.trace.tpformat import parse_event_format
    fmt = ("name: x\nID: 7\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
           "\tfield:char common_flags[1];\toffset:2;\tsize:1;\tsigned:0;\n"
           "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n"
           "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\nprint fmt: \"\"\n")
    ef = parse_event_format(fmt, "kvmmmu")
    with pytest.raises(TraceFormatError, match="common_flags is not an integer field"):
        event_record(1, ef, struct.pack("<HBBi", 7, 0, 0, 1), 0, 1, {}, "perf.data")


def _guest_files(tmp_path):
    """The guest description and run result the capture of the same run carries, as the
    JSON files `pykvmmu guest demo` / `pykvmmu guest run` write."""
    import json
    with T.open_trace(CAP) as st:
        list(st)
        meta = st.meta
    g, r = tmp_path / "guest.json", tmp_path / "result.json"
    g.write_text(json.dumps(meta["guest"]))
    r.write_text(json.dumps(meta["guest_result"]))
    return meta, str(g), str(r)


def test_audit_takes_the_guest_for_a_perf_file(tmp_path, capsys):
    """A perf file carries no guest description: with `--guest` / `--guest-result` (the API's
    guest= / guest_result=) the audit of perf.data equals the capture's, every verdict
    checkable; without them the verdicts that need the memslots and MMIO exits are missing."""
    ref = A.audit(CAP)
    meta, g, r = _guest_files(tmp_path)
    perf = tmp_path / "demo.perf.data"
    perf.write_bytes(_raw(PERF))
    rep = A.audit(str(perf), guest=meta["guest"], guest_result=meta["guest_result"])
    assert counts(rep) == counts(ref) and rep.total("not_checkable") == 0 and rep.agreement == 100.0
    bare = A.audit(str(perf))
    assert counts(bare) != counts(ref) and bare.counts["mmio"]["agreed"] < ref.counts["mmio"]["agreed"]
    assert cli.main(["audit", str(perf), "--guest", g, "--guest-result", r, "--strict", "--json"]) == 0
    import json
    out = json.loads(capsys.readouterr().out)
    want = ref.to_json()["counts"]
    assert {c: {s: n for s, n in v.items() if s != "inferred"} for c, v in out["counts"].items()} == \
        {c: {s: n for s, n in v.items() if s != "inferred"} for c, v in want.items()}


def test_audit_guest_arguments_are_checked(tmp_path, capsys):
    import copy
    meta, g, r = _guest_files(tmp_path)
    bad_result = {"runs": [{"mmio": [{"address": 1}]}]}
    before = copy.deepcopy((meta["guest"], bad_result))
    for kw, rule in ((dict(guest=[1]), "guest=\\[1\\]: expected a dict"),
                     (dict(guest_result="x"), "guest_result='x': expected a dict"),
                     (dict(guest=meta["guest"], guest_result=bad_result), "not the JSON of")):
        with pytest.raises(A.InputError, match=rule):
            A.audit(CAP, **kw)
    assert (meta["guest"], bad_result) == before           # a refused audit changes no input
    A.audit(CAP, guest=meta["guest"], guest_result=meta["guest_result"])
    assert meta["guest"] == before[0]                      # nor does an accepted one
    (tmp_path / "bad.json").write_text("[1, 2")
    assert cli.main(["audit", CAP, "--guest", str(tmp_path / "bad.json")]) != 0
    assert "--guest" in capsys.readouterr().err
    assert cli.main(["audit", CAP, "--guest-result", str(tmp_path / "nope.json")]) != 0
    assert "--guest-result" in capsys.readouterr().err

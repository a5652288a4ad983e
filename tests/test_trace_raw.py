"""Raw ring-buffer pages and the capture file: real pages (sched events recorded on this
project's machine through a tracefs instance, tests/data/tracefmt/capture_sched.sh) decoded
with their format files, checked against the kernel's own text of the same records."""
import io
import json
import os
import struct
import tarfile

import pytest

from pykvmmu import trace as T
from pykvmmu.trace.ringbuf import iter_page
from pykvmmu.trace.tpformat import parse_event_format, parse_header_page

D = os.path.join(os.path.dirname(__file__), "data", "tracefmt")
RAW = os.path.join(D, "sched_raw")


def _all(src, **kw):
    with T.open_trace(src, all_events=True, **kw) as st:
        return list(st), st


def test_header_page_and_format_files():
    with open(os.path.join(RAW, "header_page")) as f:
        hp = parse_header_page(f.read())
    assert (hp.ts_offset, hp.commit_offset, hp.commit_size, hp.data_offset, hp.page_size) == (0, 8, 8, 16, 4096)
    with open(os.path.join(RAW, "events/sched/sched_process_exec/format")) as f:
        ef = parse_event_format(f.read(), "sched")
    kinds = {fl.name: fl.kind for fl in ef.fields}
    assert ef.id == 365 and kinds["filename"] == "data_loc" and kinds["pid"] == "int"
    with open(os.path.join(RAW, "events/sched/sched_switch/format")) as f:
        sw = parse_event_format(f.read(), "sched")
    assert {fl.name: (fl.offset, fl.size, fl.signed) for fl in sw.fields}["prev_state"] == (32, 8, True)


def test_raw_pages_match_the_kernels_fields_text():
    recs, st = _all(RAW)
    assert st.kernel_version == "6.18.44-fc-v669" and st.era.name == "v6.14" and st.format == "capture"
    assert st.other_events == {}                    # the 12 kernel_stack entries are stacks
    with T.open_trace(os.path.join(D, "sched_fields.txt"), era="v6.14", all_events=True) as ft:
        txt = list(ft)
        assert ft.n_errors == 0
    assert len(txt) == 81 and len(recs) == 93
    for r, t in zip(recs, txt):                      # the same 81 records, in the same order
        assert (r.event, r.cpu, r.pid) == (t.event, t.cpu, t.pid)
        assert (r.ts_ns + 500) // 1000 == round(t.ts * 1e6)   # ns2usecs rounds
        for k, v in t.fields.items():
            assert r.fields[k] == v, (r, t, k)
    ex = [r for r in recs if r.event == "sched_process_exec"][0]
    assert ex.fields["filename"] == "/usr/bin/sh" and ex.system == "sched"
    assert all(a.ts_ns <= b.ts_ns for a, b in zip(recs, recs[1:]))


def test_print_text_and_stack_blocks():
    with T.open_trace(os.path.join(D, "sched_stack.txt"), era="v6.14", all_events=True) as st:
        recs = list(st)
        assert st.n_errors == 0
    stacked = [r for r in recs if r.stack]
    assert len(stacked) == 12
    assert stacked[0].event == "sched_switch" and stacked[0].stack[0] == "trace_event_raw_event_sched_switch"
    assert all(r.stack[1].startswith("__traceiter_") for r in stacked)
    # the same stacks in the raw pages (kernel_stack entries after their record): same frame
    # counts, same events, addresses instead of names
    raw, _ = _all(RAW)
    rstacked = [r for r in raw if r.stack]
    assert [len(r.stack) for r in rstacked] == [len(r.stack) for r in stacked] == [
        11, 13, 7, 11, 8, 12, 7, 8, 10, 8, 13, 10]
    assert [(r.event, r.pid, r.cpu) for r in rstacked] == [(r.event, r.pid, r.cpu) for r in stacked]
    assert all(a.startswith("0xffffffff8") for r in rstacked for a in r.stack)


def _capture_tar(path, gz=False, meta=None):
    meta = meta or {"format": "pykvmmu-capture", "version": 1, "kernel_release": "6.18.44-fc-v669",
                    "lost": {"cpu0": {"overrun": 0, "dropped events": 0}}}
    mode = "w:gz" if gz else "w"
    with tarfile.open(path, mode) as tf:
        # members in an order a reader must not rely on
        for root, _, files in sorted(os.walk(RAW), reverse=True):
            for fn in files:
                full = os.path.join(root, fn)
                tf.add(full, arcname=os.path.relpath(full, RAW))
        data = json.dumps(meta).encode()
        ti = tarfile.TarInfo("capture.json")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))


@pytest.mark.parametrize("gz", [False, True])
def test_capture_file(tmp_path, gz):
    p = tmp_path / ("c.kvmcap" + (".gz" if gz else ""))
    _capture_tar(p, gz)
    recs, st = _all(str(p))
    ref, _ = _all(RAW)
    assert st.format == "capture" and st.kernel_version == "6.18.44-fc-v669"
    assert [(r.ts_ns, r.event, r.fields) for r in recs] == [(r.ts_ns, r.event, r.fields) for r in ref]
    # the same bytes through a file object (no name, not a path): detection by content
    with open(p, "rb") as f:
        recs2, _ = _all(f)
    assert len(recs2) == len(recs)


def test_era_from_kernel_and_wrong_explicit_era(tmp_path):
    with pytest.raises(T.TraceEraError, match="contradicts the trace's kernel 6.18.44"):
        T.open_trace(RAW, era="v5.1")
    with T.open_trace(RAW, era="v6.16") as st:       # an alias of the right era is fine
        assert st.era.name == "v6.14"
    with pytest.raises(T.TraceEraError, match="no kernel version"):
        T.open_trace(os.path.join(D, "sched_print.txt"))
    assert T.era_for_release("5.4.0-150-generic").name == "v5.1"
    assert T.era_for_release("4.19.1").name == "v4.18"
    with pytest.raises(T.TraceEraError):
        T.era_for_release("3.10.0")
    with pytest.raises(T.TraceEraError):
        T.era_for_release("not-a-version")


def _page():
    with open(os.path.join(RAW, "per_cpu/cpu1/trace_pipe_raw"), "rb") as f:
        return bytearray(f.read(4096))


def test_page_rules_missed_events_and_corruption():
    with open(os.path.join(RAW, "header_page")) as f:
        hp = parse_header_page(f.read())
    page = _page()
    base = list(iter_page(bytes(page), hp))
    commit = struct.unpack_from("<Q", page, 8)[0]
    assert commit < 4080 and len(base) > 10
    # RB_MISSED_EVENTS | RB_MISSED_STORED with the count stored right after the data
    lost = {}
    p2 = bytearray(page)
    struct.pack_into("<Q", p2, 8, commit | (1 << 31) | (1 << 30))
    struct.pack_into("<Q", p2, 16 + commit, 77)
    assert [e[0] for e in iter_page(bytes(p2), hp, lost=lost)] == [e[0] for e in base]
    assert lost == {"pages_with_missed": 1, "missed_events": 77}
    # a commit past the page end
    p3 = bytearray(page)
    struct.pack_into("<Q", p3, 8, 5000)
    with pytest.raises(T.TraceFormatError, match="runs past the page"):
        list(iter_page(bytes(p3), hp))
    # a time extend (type 30) adds array[0] << 27 | delta to every later stamp
    p4 = bytearray(page)
    first_hdr = struct.unpack_from("<I", p4, 16)[0]
    assert first_hdr & 31 not in (29, 30, 31)
    ext = bytes(struct.pack("<II", 30 | (5 << 5), 1))
    p4[16:16 + commit + 8] = ext + bytes(page[16:16 + commit])
    struct.pack_into("<Q", p4, 8, commit + 8)
    got = list(iter_page(bytes(p4), hp))
    assert [bytes(g[1]) for g in got] == [bytes(b[1]) for b in base]
    assert [g[0] for g in got] == [b[0] + (1 << 27) + 5 for b in base]
    # a record whose length runs past the commit end
    p5 = bytearray(page)
    struct.pack_into("<Q", p5, 8, 20)
    with pytest.raises(T.TraceFormatError, match="past the commit end"):
        list(iter_page(bytes(p5), hp))


def test_absolute_timestamp_and_padding():
    hp = parse_header_page(open(os.path.join(RAW, "header_page")).read())
    # hand-made page from the documented layout: abs stamp, padding, one 8-byte record
    data = struct.pack("<II", 31 | (3 << 5), 2)            # absolute: (2 << 27) | 3
    data += struct.pack("<II", 29 | (9 << 5), 4)            # padding of 4 + 4 bytes
    data += struct.pack("<I", 2 | (7 << 5)) + b"\x01\x00\x02\x03\x04\x05\x06\x07"
    page = struct.pack("<QQ", 1000, len(data)) + data + bytes(4096 - 16 - len(data))
    (ts, rec), = list(iter_page(page, hp))
    assert ts == (2 << 27) + 3 + 7 and bytes(rec) == b"\x01\x00\x02\x03\x04\x05\x06\x07"


def test_capture_losses_reach_the_summary(tmp_path, capsys):
    from pykvmmu import cli
    p = tmp_path / "lossy.kvmcap"
    _capture_tar(p, meta={"format": "pykvmmu-capture", "version": 1, "kernel_release": "6.18.44-fc-v669",
                          "lost": {"cpu1": {"overrun": 5, "dropped events": 2, "now ts": "1.0"}}})
    with T.open_trace(str(p)) as st:
        list(st)
        assert st.lost["cpu1"] == {"stats overrun": 5, "stats dropped events": 2}
    assert cli.main(["trace", str(p), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "lost events (ring buffer):" in out and "stats overrun 5" in out
    assert cli.main(["trace", str(p)]) == 0
    assert "ring buffer lost events: cpu1" in capsys.readouterr().err


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    from pykvmmu.commands import trace as C

    class _St:
        def progress(self):
            return (50, 100)
    clock = iter(range(0, 10**6))
    monkeypatch.setattr(C.time, "monotonic", lambda: next(clock))
    off = C._Progress(_St(), False)
    for _ in range(5000):
        off.tick()
    off.done()
    assert capsys.readouterr().err == ""
    on = C._Progress(_St(), True)
    for _ in range(5000):
        on.tick()
    err = capsys.readouterr().err
    assert " 50.0%" in err and "4096 records" in err
    on.done()


def test_a_tree_of_a_clock_that_does_not_count_ns_keeps_counts(tmp_path):
    """A saved tracefs tree keeps its timestamps as nanoseconds unless it says its clock
    counts something else: a saved trace_clock naming counter, uptime or x86-tsc, or per-CPU
    stats printed as counts (the kernel's rule for those clocks; the trace.dat fixture
    demo-tsc-v7-nocomp.dat.gz shows it on a real x86-tsc instance)."""
    import shutil

    def read(d):
        with T.open_trace(str(d), all_events=True) as st:
            return list(st), st

    base, st = read(RAW)
    assert base and "ts" not in st.meta and all(r.ts_ns is not None for r in base)
    for name, edit in (("named", lambda d: (d / "trace_clock").write_text("local global [x86-tsc]\n")),
                       ("plain", lambda d: (d / "trace_clock").write_text("counter\n")),
                       ("stats", lambda d: [(p / "stats").write_text((p / "stats").read_text().replace(
                           "now ts:   314.011167", "now ts: 314011167"))
                           for p in (d / "per_cpu").iterdir()]),
                       ("local", lambda d: (d / "trace_clock").write_text("[local] global x86-tsc\n"))):
        d = tmp_path / name
        shutil.copytree(RAW, d)
        edit(d)
        recs, st = read(d)
        counts = name != "local"
        assert ("ts" in st.meta) is counts, name
        for a, b in zip(base, recs):
            assert (b.ts_ns, b.ts) == ((None, float(a.ts_ns)) if counts else (a.ts_ns, a.ts))

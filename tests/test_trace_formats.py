"""Every trace source of one real kvm_pvm shadow-MMU run (tests/data/live, recorded on this
project's machine: capture file, print-format text, options/fields text, trace-cmd trace.dat
v6/v7 and report/report -R), read through open_trace and held to each other."""
import gzip
import io
import json
import os
import sys
from collections import Counter

import pytest

from pykvmmu import cli
from pykvmmu import trace as T
from pykvmmu.profile import ProfileVersionWarning, get_profile

L = os.path.join(os.path.dirname(__file__), "data", "live")
D = os.path.join(os.path.dirname(__file__), "data", "tracefmt")


def _read(name, era=None, **kw):
    with T.open_trace(os.path.join(L, name), era=era, **kw) as st:
        recs = list(st)
        assert st.n_errors == 0, st.errors[:3]
        return recs, st


def _same_int(raw, text):
    """A raw (signed per format) integer against a text hex (unsigned, field width)."""
    return raw == text or any(raw < 0 and raw + (1 << b) == text for b in (8, 16, 32, 64))


@pytest.fixture(scope="module")
def cap():
    return _read("demo.kvmcap")


def test_capture_whole_roles_and_kernel(cap):
    recs, st = cap
    assert st.format == "capture" and st.kernel_version == "6.18.44-fc-v669" and st.era.name == "v6.14"
    assert st.other_events["kvm_mmio"] == 8                 # kvm:* events are not kvmmmu
    pages = [r for r in recs if r.role is not None]
    assert pages and all(r.role_known == T.FULL_ROLE and r.source == "capture" for r in pages)
    assert pages[0].fields == {"mmu_valid_gen": 0, "gfn": 0x10, "role": 0x3704, "root_count": 0,
                               "unsync": 0, "created": 1}
    assert pages[0].role.cr0_wp == 1 and pages[0].role.level == 4
    zf = [r for r in recs if r.event == "kvm_mmu_zap_all_fast"]
    assert [r.fields["mmu_valid_gen"] for r in zf] == [0, 1]
    with T.open_trace(os.path.join(L, "demo.kvmcap"), all_events=True) as st2:
        allr = list(st2)
    assert Counter(r.event for r in allr)["kvm_mmio"] == 8 and st2.other_events == {}


def test_print_text_is_the_capture_minus_the_hidden_role_bits(cap):
    raw, _ = cap
    txt, st = _read("demo.trace.txt", "v6.14")
    assert st.kernel_version is None and len(txt) == len(raw)
    hidden = 0
    for r, t in zip(raw, txt):
        assert (r.event, r.cpu, r.pid) == (t.event, t.cpu, t.pid)
        if r.role is not None:
            assert t.role_known != T.FULL_ROLE and t.role.word == r.role.word & t.role_known
            hidden |= r.role.word & ~t.role_known
        for k in ("gfn", "spte", "pte", "addr", "gpa", "level", "pfn"):
            if k in t.fields:
                assert _same_int(r.fields[k], t.fields[k]), (k, r, t)
    assert hidden & 0x2000          # cr0_wp: 0x3704 and 0x1704 print the same text


def test_fields_text_equals_the_capture(cap):
    raw, _ = cap
    fl, _ = _read("demo.fields.txt", "v6.14")
    assert len(fl) == len(raw)
    for r, t in zip(raw, fl):
        assert r.event == t.event and t.source == "fields"
        assert set(t.fields) == set(r.fields)
        assert all(_same_int(r.fields[k], v) for k, v in t.fields.items()), (r, t)
        if r.role is not None:
            assert t.role.word == r.role.word and t.role_known == T.FULL_ROLE


@pytest.mark.parametrize("name", ["demo-v6.dat.gz", "demo-v7-nocomp.dat.gz"])
def test_trace_dat_equals_report_R(name):
    dat, st = _read(name)
    assert st.format == "trace.dat" and st.kernel_version == "6.18.44-fc-v669"
    assert st.meta["file_version"] == (6 if "v6" in name else 7)
    rr, _ = _read("demo-dat.report-R.txt", "v6.14")
    assert len(dat) == len(rr) == 478
    for d, t in zip(dat, rr):
        assert (d.event, d.cpu, d.pid, d.comm) == (t.event, t.cpu, t.pid, t.comm)
        assert (d.ts_ns + 500) // 1000 == round(t.ts * 1e6)
        assert d.fields == {k: v for k, v in t.fields.items()}, (d, t)
    # the plugin text of the same file: partial words that agree with the raw ones
    rep, _ = _read("demo-dat.report.txt", "v6.14")
    assert len(rep) == len(dat)
    for d, t in zip(dat, rep):
        if d.role is not None:
            assert t.source == "plugin" and t.role.word == d.role.word & t.role_known


@pytest.mark.parametrize("name", ["demo-dat.report-l.txt.gz", "demo-dat.report-ts-diff.txt.gz"])
def test_report_latency_and_ts_diff_forms_equal_the_default_report(name):
    """trace-cmd report -l (the CPU straight before the flags) and --ts-diff -t ("(+delta)" after
    nanosecond timestamps): the same records as the default report of the same file."""
    rep, _ = _read("demo-dat.report.txt", "v6.14")
    dat, _ = _read("demo-v6.dat.gz")
    got, st = _read(name, "v6.14")
    assert st.n_errors == 0 and len(got) == len(rep) == 478
    for r, g, d in zip(rep, got, dat):
        assert (g.event, g.cpu, g.pid, g.comm, g.fields) == (r.event, r.cpu, r.pid, r.comm, r.fields)
        assert (g.role and (g.role.word, g.role_known)) == (r.role and (r.role.word, r.role_known))
        if name.endswith("-l.txt.gz"):
            # the latency flags: irqs-off, need-resched, hard/softirq, preempt depth ("." for
            # 0), migrate-disable; trace.dat gives common_flags:common_preempt_count
            flags, preempt = d.flags.split(":")
            assert flags == "0x00" and g.flags == "..." + (preempt if preempt != "0" else ".") + "."
            assert round(g.ts * 1e6) == round(r.ts * 1e6)
        else:
            assert g.ts_ns is None and round(g.ts * 1e9) == d.ts_ns      # -t: nanoseconds
    if name.endswith("-l.txt.gz"):
        assert {g.flags for g in got} == {".....", "...1.", "...2."}


def test_report_raw_latency_form_equals_report_R():
    """trace-cmd report -R -l: "0-0x0" (the CPU, a dash, a hex number that stayed 0x0 while
    the preempt depth of the same records was 1 or 2) before the time; the records of
    report -R, the flags column kept as its text."""
    rr, _ = _read("demo-dat.report-R.txt", "v6.14")
    got, st = _read("demo-dat.report-R-l.txt.gz", "v6.14")
    assert st.n_errors == 0 and len(got) == len(rr) == 478
    for r, g in zip(rr, got):
        assert (g.event, g.cpu, g.pid, g.comm, g.fields, round(g.ts * 1e6)) == (
            r.event, r.cpu, r.pid, r.comm, r.fields, round(r.ts * 1e6))
    assert {g.flags for g in got} == {"0x0"}


def test_report_without_plugins_and_with_raw_timestamps():
    """trace-cmd report -N (no plugins: libtraceevent cannot evaluate the page events' print
    fmt and prints "[FAILED TO PARSE] name=value", decimal: read as raw fields, whole role
    words) and --raw-ts (the clock's count straight after "[cpu]", no dot): the records of
    the trace.dat they were printed from."""
    dat, _ = _read("demo-v6.dat.gz")
    rep, _ = _read("demo-dat.report.txt", "v6.14")
    nop, st = _read("demo-dat.report-N.txt.gz", "v6.14")
    assert st.n_errors == 0 and len(nop) == len(dat) == 478
    failed = 0
    for d, n, r in zip(dat, nop, rep):
        assert (n.event, n.cpu, n.pid, n.comm) == (d.event, d.cpu, d.pid, d.comm)
        if n.event in T.PAGE_EVENTS:
            failed += 1
            assert n.source == "raw" and n.fields == d.fields and n.role_known == T.FULL_ROLE
            assert n.role.word == d.role.word
        else:
            assert n.fields == r.fields
    assert failed == 62
    raw, st = _read("demo-dat.report-raw-ts.txt.gz", "v6.14")
    assert st.n_errors == 0 and len(raw) == 478
    for d, r, x in zip(dat, rep, raw):
        assert (x.event, x.cpu, x.pid, x.fields) == (r.event, r.cpu, r.pid, r.fields)
        assert x.ts == d.ts_ns                 # the local clock counts ns


def test_trace_dat_zstd_equals_the_uncompressed_file():
    """trace-cmd 3's default: a zstd-compressed v7 file (sections and CPU chunks) is read
    directly and gives exactly the records of the same file written uncompressed."""
    pytest.importorskip("zstandard")
    a, st = _read("demo-v7.dat")
    b, _ = _read("demo-v7-nocomp.dat.gz")
    assert st.meta["compression"] == "zstd" and len(a) > 100
    assert [(r.ts_ns, r.cpu, r.event, r.fields) for r in a] == \
        [(r.ts_ns, r.cpu, r.event, r.fields) for r in b]


def test_trace_dat_zstd_without_zstandard_is_refused_clearly(monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)       # as if not installed
    with pytest.raises(T.UnsupportedTraceError, match="zstd.*pip install 'pykvmmu\\[trace\\]'"):
        T.open_trace(os.path.join(L, "demo-v7.dat"))
    assert cli.main(["trace", os.path.join(L, "demo-v7.dat")]) == 1


def test_v6_and_v7_identical():
    a, _ = _read("demo-v6.dat.gz")
    b, _ = _read("demo-v7-nocomp.dat.gz")
    assert [(r.ts_ns, r.event, r.fields) for r in a] == [(r.ts_ns, r.event, r.fields) for r in b]


def test_stdin_gzip_and_text_file_objects(monkeypatch, cap):
    raw, _ = cap
    data = open(os.path.join(L, "demo.fields.txt"), "rb").read()
    with T.open_trace(io.BytesIO(gzip.compress(data)), era="v6.14") as st:
        assert len(list(st)) == len(raw)
    with T.open_trace(io.StringIO(data.decode()), era="v6.14") as st:
        assert len(list(st)) == len(raw)

    class _Stdin:
        buffer = io.BufferedReader(io.BytesIO(open(os.path.join(L, "demo.kvmcap"), "rb").read()))
    monkeypatch.setattr(sys, "stdin", _Stdin)
    with T.open_trace("-") as st:
        assert [r.fields for r in st] == [r.fields for r in raw]


def test_spte_profile_follows_the_kernel_version():
    # one mapping: a v6.18 trace decodes SPTEs with the profile v6.18 means everywhere else
    with pytest.warns(ProfileVersionWarning):
        assert T.spte_profile_for("v6.14", "6.18.44-fc-v669") == get_profile("v6.18").name
    assert T.spte_profile_for("v6.18") == get_profile("v6.18").name
    assert T.spte_profile_for("v6.14") == get_profile("v6.14").name
    assert T.spte_profile_for("v5.0") is None
    assert T.spte_profile_for("latest") == get_profile("latest").name    # the newest kernel
    assert T.spte_profile_for("2019") is None                            # era v5.0 by alias
    with pytest.warns(ProfileVersionWarning):
        recs, _ = _read("demo.kvmcap", mode="shadow")
    s = [r for r in recs if r.event == "kvm_mmu_set_spte"][0]
    assert s.spte_text["spte"].startswith("present")


def test_cli_json_summary_and_errors(capsys):
    kc = os.path.join(L, "demo.kvmcap")
    assert cli.main(["trace", kc, "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    objs = [json.loads(x) for x in lines]
    assert len(objs) == 478 and all(o["system"] == "kvmmmu" and o["source"] == "capture" for o in objs)
    gp = [o for o in objs if o["event"] == "kvm_mmu_get_page"][0]
    assert gp["role"]["word"] == 0x3704 and gp["role"]["known"] == 0xFFFFFFFF and gp["ts_ns"] > 0
    assert cli.main(["trace", kc, "--summary"]) == 0
    out = capsys.readouterr().out
    assert "kernel 6.18.44-fc-v669" in out and "format: capture" in out and "0x00003704" in out
    # a wrong explicit era is reported as such; typos are one-line errors
    assert cli.main(["trace", kc, "--era", "v5.1"]) == 1
    err = capsys.readouterr().err
    assert "contradicts the trace's kernel 6.18.44" in err and err.count("\n") == 1
    assert cli.main(["trace", kc, "--mode", "shadw"]) == 1
    err = capsys.readouterr().err
    assert "'shadw'" in err and err.count("\n") == 1
    assert cli.main(["trace", kc, "--mode", "shadow", "--profile", "v6.1x"]) == 1
    assert "'v6.1x'" in capsys.readouterr().err
    assert cli.main(["trace", kc, "--profile", "latst"]) == 1       # even without --mode
    assert "'latst'" in capsys.readouterr().err
    assert cli.main(["trace", kc, "--era", "v6.99x"]) == 1
    # --mode takes the whole MmuConfig description
    with pytest.warns(ProfileVersionWarning):          # 6.18.44: a stable release, unverified
        assert cli.main(["trace", kc, "--mode", "shadow", "--maxphyaddr", "48", "--no-mmio-caching"]) == 0
    out = capsys.readouterr().out
    assert "spte: present" in out


def test_old_trace_cmd_plugin_line():
    res = T.parse_file(os.path.join(D, "old_plugin.txt"), "v4.2")
    assert res.errors == []
    r = res.records[0]
    assert r.source == "plugin-old" and r.fields["gfn"] == 0x3a22e and r.fields["glevels"] == 4
    assert r.fields["cr4_pge"] == 0 and r.fields["created"] == 0 and r.fields["root_count"] == 6
    assert (r.role.level, r.role.quadrant, r.role.direct, r.role.access, r.role.nxe) == (1, 3, 1, 1, 0)


def test_perf_prof_kvmmmu_dump():
    # perf-prof is not packaged and could not be built here (no network): these lines follow
    # the printf formats of OpenCloudOS/perf-prof kvmmmu.c @ 04af3f46 (kvm_mmu_interval,
    # kvm_mmu_gen_dump, kvm_mmu_print_role), with values from the live run
    res = T.parse_file(os.path.join(D, "perf_prof_kvmmmu.txt"), "v6.14")
    assert res.errors == []
    ev = [r.event for r in res.records]
    assert ev == ["perfprof_gen"] + ["perfprof_level"] * 3 + ["perfprof_sp"] * 3 + \
        ["perfprof_spte"] * 2 + ["perfprof_gen"]
    sps = [r for r in res.records if r.event == "perfprof_sp"]
    assert [r.role.word for r in sps] == [0x3704, 0x3702, 0x3701]
    assert all(r.role_known == T.FULL_ROLE and r.source == "perf-prof" for r in sps)
    assert sps[0].fields == {"level": 4, "gfn": 0x10, "gfn_end": 0x800000000f, "role": 0x3704,
                             "root_count": 1, "refcount": 1}
    assert sps[2].fields["refcount"] == 2 and sps[2].role.cr0_wp == 1
    assert res.records[8].fields == {"gfn": 0x20, "gfn_end": 0x21, "mmio": 1}
    assert res.records[0].fields["get_page"] == 27 and res.records[-1].fields["obsoleted"] == 1


def test_trace_dat_of_a_clock_that_does_not_count_ns():
    """An x86-tsc instance extracted by trace-cmd (tests/data/live/README.md): its BUFFER
    option names the clock "local" (trace-cmd read the top buffer's), but the kernel's
    per-CPU stats it kept print counts, as for every clock that does not count ns: the
    timestamps stay counts (``ts`` the count, ``ts_ns`` None), the same counts the kernel's
    own `trace` text of the same instance printed, record by record."""
    dat, st = _read("demo-tsc-v7-nocomp.dat.gz")
    assert st.meta["ts"] == "trace clock counts, not nanoseconds (CPUSTAT prints counts)"
    txt, _ = _read("demo-tsc.trace.txt.gz", "v6.14")
    assert len(dat) == len(txt) == 478
    for d, t in zip(dat, txt):
        assert d.ts_ns is None and d.ts == t.ts == int(d.ts) > 10**12
        assert (d.event, d.cpu, d.pid) == (t.event, t.cpu, t.pid)
        shared = set(d.fields) & set(t.fields)
        assert shared and all(_same_int(d.fields[k], t.fields[k]) for k in shared)
    from pykvmmu.trace import tracedat as D
    from pykvmmu.trace.raw import RawSource
    for clocks, corr, want in ((["local"], [], False), (["x86-tsc"], [], True), (["counter"], [], True),
                               (["local"], ["TSC2NSEC"], True), (["mono"], ["OFFSET"], True)):
        o = D._Options()
        o.clocks, o.corrections = clocks, corr
        src = D._clock(RawSource(None, None, []), o)
        assert src.ts_counts is want and ("ts" in src.meta) is want
    ns, _ = _read("demo-v6.dat.gz")
    assert ns[0].ts_ns == 784004313678                    # the local clock: nanoseconds

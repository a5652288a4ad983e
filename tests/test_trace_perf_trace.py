"""`perf trace -e 'kvmmmu:*'` text of one real kvm_pvm run, held record by record to the pykvmmu
capture of the same run (tests/data/live/README.md, "perf trace files"): perf trace leaves out
fields equal to zero (restored from the event's record fields) and prints u64 fields as signed
longs (read back unsigned); the audit of it equals the capture's."""
import io
import os

import pytest

from pykvmmu import audit as A
from pykvmmu import trace as T
from pykvmmu.trace import text as X

from test_audit_live import counts, guest_kw

L = os.path.join(os.path.dirname(__file__), "data", "live")
CAP = os.path.join(L, "demo-ptrace.kvmcap")
PT = os.path.join(L, "demo.perf-trace-T.txt.gz")          # perf trace -T (zeros left out)
PZ = os.path.join(L, "demo.perf-trace-zeros.txt.gz")      # perf trace, trace.show_zeros = yes
#: the record the inner perf trace (show_zeros) did not print: a level-1 paging_element
LOST = 161


def _read(path):
    with T.open_trace(path, era="v6.14") as st:
        recs = list(st)
        assert st.n_errors == 0, st.errors[:3]
        assert st.format == "text"
        return recs


@pytest.fixture(scope="module")
def cap():
    with T.open_trace(CAP) as st:
        return list(st)


def test_perf_trace_equals_the_capture_of_the_same_run(cap):
    recs = _read(PT)
    assert len(recs) == len(cap) == 478
    for c, r in zip(cap, recs):
        assert (r.event, r.system, r.pid, r.comm, r.cpu, r.source) == (c.event, c.system, c.pid, "python",
                                                                       -1, "perf-trace")
        assert r.fields == c.fields, (c, r)                    # zeros restored, u64 unsigned
        assert (r.role and r.role.word) == (c.role and c.role.word)
    # the zeros perf left out, and the u64 values it printed negative, were both in this run
    raw = [r.payload for r in recs]
    assert sum("mmu_valid_gen" not in p for p, r in zip(raw, recs) if r.event == "kvm_mmu_get_page") > 0
    assert any(": -" in p for p in raw)
    # -T: milliseconds since boot with 3 decimals (whole microseconds), perf's clock 28.65 ms
    # behind ftrace's local clock on this boot
    assert all(r.ts_ns % 1000 == 0 for r in recs)
    off = sorted(c.ts_ns - r.ts_ns for c, r in zip(cap, recs))
    assert 28_600_000 < off[len(off) // 2] < 28_700_000 and off[-1] - off[0] < 200_000


def test_shown_zeros_equal_restored_zeros(cap):
    shown = _read(PZ)
    restored = _read(PT)
    assert len(shown) == 477
    assert shown[0].ts_ns == 0                                 # time since the first event
    kept = [c for i, c in enumerate(cap) if i != LOST]
    assert [(r.event, r.fields) for r in shown] == [(c.event, c.fields) for c in kept]
    assert [(r.event, r.fields) for r in shown] == [(r.event, r.fields) for i, r in enumerate(restored)
                                                    if i != LOST]
    assert cap[LOST].event == "kvm_mmu_paging_element" and cap[LOST].fields["level"] == 1


def test_audit_of_perf_trace_equals_the_capture_and_finds_the_lost_record():
    ref = A.audit(CAP)
    assert ref.agreement == 100.0 and ref.total("not_checkable") == 0
    rep = A.audit(PT, era="v6.18", **guest_kw(CAP))
    assert counts(rep) == counts(ref) and rep.total("not_checkable") == 0, rep.format_table()
    # the show_zeros run lost one element of a walk: the audit's walk replay names it
    lost = A.audit(PZ, era="v6.18", **guest_kw(CAP))
    assert lost.total("disagreed") == 1
    assert "trace truncated?" in lost.format_table()


def _line(args, event="kvm_mmu_set_spte", head="  52524580.598 python/5640 "):
    return f"{head}kvmmmu:{event}({args})"


def test_perf_trace_values_are_read_by_their_field_types():
    r = T.parse_line(_line("gfn: 1024, spte: -9223372030939939225, sptep: 4372140032, level: 1, r: 1, "
                           "u: 255"), 1, "v6.14")
    assert r.fields == {"gfn": 1024, "spte": 0x80000001608D3E67, "sptep": 4372140032, "level": 1,
                        "r": 1, "x": 0, "u": -1}          # s8 u read unsigned by perf: 255 is -1
    assert (r.ts, r.ts_ns, r.comm, r.pid, r.cpu) == (52524.580598, 52524580598000, "python", 5640, -1)
    w = T.parse_line(_line("addr: 0x4002e8, pferr: 16", "kvm_mmu_pagetable_walk"), 2, "v6.14")
    assert w.fields == {"addr": 0x4002E8, "pferr": 16}
    g = T.parse_line(_line("gfn: 16, role: 14084, created: 1", "kvm_mmu_get_page", "0.000 5640 "), 3, "v6.14")
    assert g.fields == {"mmu_valid_gen": 0, "gfn": 16, "role": 14084, "root_count": 0, "unsync": 0,
                        "created": 1}
    assert g.role.word == 14084 and g.comm == "" and g.ts_ns == 0
    k = T.parse_line(_line("gpa: 77824", "kvm_mmu_set_dirty_bit", "1.5 kworker/0:1/99 "), 4, "v6.14")
    assert (k.comm, k.pid, k.ts_ns) == ("kworker/0:1", 99, 1_500_000)
    z = T.parse_line(_line("", "kvm_mmu_set_accessed_bit"), 5, "v6.14")
    assert z.fields == {"gpa": 0}                          # every field zero: all left out
    assert T.parse_line("     1.000 qemu/7 kvm:kvm_exit(reason: 30)", 6, "v6.14") == ("other", "kvm_exit")
    other = T.parse_line("     1.000 qemu/7 kvm:kvm_exit(reason: 30, info: x)", 6, "v6.14", all_events=True)
    assert other.fields == {"reason": 30, "info": "x"} and other.system == "kvm"


@pytest.mark.parametrize("args,event,rule", [
    ("gfn: 1, spte: 2, level: 256", "kvm_mmu_set_spte", "level=256 does not fit its u8 field"),
    ("gfn: 1, role: 4294967296", "kvm_mmu_get_page", "role=4294967296 does not fit its u32 field"),
    ("gfn: 1, spte: 2, w: 1", "kvm_mmu_set_spte", "field 'w' is not one of its record fields"),
    ("gfn: 1, spte: 2", "kvm_mmu_not_an_event", "not a kvmmmu event this reader knows"),
    ("gfn: 1, spte: zz", "kvm_mmu_set_spte", "'spte: zz' is not 'name: number'"),
    ("gfn 1", "kvm_mmu_set_spte", "payload does not match the event's TP_printk format"),
    ("gfn: 1, gfn: 2", "kvm_mmu_set_spte", "field 'gfn' given twice"),
])
def test_malformed_perf_trace_lines_are_refused_with_the_rule(args, event, rule):
    with pytest.raises(ValueError, match=rule):
        T.parse_line(_line(args, event), 1, "v6.14")


def test_record_fields_cover_every_kvmmmu_event_the_text_reader_knows():
    assert set(X.RECORD_FIELDS) == set(X.ALL_EVENTS)
    assert all(t in X._CTYPES for f in X.RECORD_FIELDS.values() for _, t in f)


def test_lost_event_lines_are_counted_and_the_audit_warns(tmp_path):
    """ftrace's "CPU:N [LOST n EVENTS]" and perf trace's "LOST n events!" lines count losses in
    ``lost`` (not malformed lines); the audit warns that a verdict near them may be a loss."""
    import gzip
    lines = gzip.decompress(open(PT, "rb").read()).decode().splitlines(True)
    f = tmp_path / "lossy.txt"
    f.write_text("".join(lines[:100] + ["LOST 5 events!\n"] + lines[100:200]
                         + ["CPU:1 [LOST 3 EVENTS]\n", "CPU:1 [LOST 4 EVENTS]\n"] + lines[200:]))
    with T.open_trace(str(f), era="v6.14") as st:
        recs = list(st)
        assert st.n_errors == 0 and len(recs) == 478
        assert st.lost == {"all": {"perf trace lost events": 5}, "cpu1": {"ftrace lost events": 7}}
    rep = A.audit(str(f), era="v6.18", **guest_kw(CAP))
    assert any("counts 12 lost events (all: 5, cpu1: 7)" in w for w in rep.warnings), rep.warnings
    assert not any("lost" in w for w in A.audit(PT, era="v6.18", **guest_kw(CAP)).warnings)
    assert not any("lost" in w for w in A.audit(CAP).warnings)     # per-CPU stats, all zero
    assert T.parse_line("CPU:2 [LOST 9 EVENTS]", 1, "v6.14") == ("lost", (2, 9, "ftrace lost events"))


def test_perf_trace_libtraceevent_print_equals_the_capture_of_its_run():
    """perf trace --libtraceevent_print (another run, recorded with its own capture): each
    event's text as perf script prints it, read by the print-format and raw-field readers."""
    from test_trace_formats import _same_int
    cap_ = os.path.join(L, "demo-lte.kvmcap")
    with T.open_trace(cap_) as st:
        cap = list(st)
    recs = _read(os.path.join(L, "demo.perf-trace-lte.txt.gz"))
    assert len(recs) == len(cap) == 478
    for c, r in zip(cap, recs):
        assert (r.event, r.pid, r.cpu) == (c.event, c.pid, -1)
        # perf trace named the task "bash" (the shell that exec'd python under unshare) for its
        # first 331 records, "python" after: the name it prints is the one it knew then
        assert r.comm in ("bash", "python")
        shared = set(r.fields) & set(c.fields)
        assert shared and all(_same_int(c.fields[k], r.fields[k]) for k in shared), (c, r)
        if c.role is not None:       # "[FAILED TO PARSE] name=value": the whole role word
            assert r.source == "raw" and r.role.word == c.role.word and r.role_known == T.FULL_ROLE
        else:
            assert r.source == "text"
    rep = A.audit(os.path.join(L, "demo.perf-trace-lte.txt.gz"), era="v6.18", **guest_kw(cap_))
    assert counts(rep) == counts(A.audit(cap_)) and rep.total("not_checkable") == 0


def test_perf_trace_with_system_calls_among_the_events():
    """perf trace -e 'kvmmmu:*' -e ioctl (a fourth run of the same guest): the system call lines,
    finished, interrupted ("(         ): ... ...") and continued ("... [continued]: ioctl())"),
    count as other events; the kvmmmu records are the same sequence as the -T run's."""
    recs = _read(os.path.join(L, "demo.perf-trace-syscalls.txt.gz"))
    with T.open_trace(os.path.join(L, "demo.perf-trace-syscalls.txt.gz"), era="v6.14") as st:
        list(st)
        assert dict(st.other_events) == {"ioctl": 597} and st.n_errors == 0
    assert [r.event for r in recs] == [r.event for r in _read(PT)]
    for line in ("     0.772 ( 0.063 ms): bash/18018 ioctl(fd: 2, cmd: TIOCGPGRP, arg: 0x7ffe0ad07c84)"
                 "    = -1 ENOTTY (Inappropriate ioctl for device)",
                 "   767.401 (         ): python/18018 ioctl(fd: 7, cmd: KVM_RUN)        ...",
                 "   767.401 ( 4.031 ms): python/18018  ... [continued]: ioctl())        = 0"):
        assert T.parse_line(line, 1, "v6.14") == ("other", "ioctl")


def test_perf_trace_call_graph_lines_become_the_record_stack():
    """perf trace --call-graph=fp (a fifth run): each record is followed by its callchain,
    "<deep indent>symbol (dso)" lines with no address; they become the record's stack, and
    the records are the -T run's sequence; a payload ending in "(4)" is never a chain line."""
    recs = _read(os.path.join(L, "demo.perf-trace-callgraph.txt.gz"))
    assert [r.event for r in recs] == [r.event for r in _read(PT)]
    assert all(len(r.stack) >= 8 and r.stack[-1] == "[0] ([unknown])" for r in recs)
    gets = [r for r in recs if r.event == "kvm_mmu_get_page"]
    assert gets[0].stack[:2] == ("__kvm_mmu_get_shadow_page ([kernel.kallsyms])",
                                 "mmu_alloc_root ([kernel.kallsyms])")
    assert all(r.stack[0].endswith("([kernel.kallsyms])") for r in recs)
    assert T.parse_line("         python3-3742    [000] ..... 60844.413516: kvm_mmu_paging_element: "
                        "pte=0x11027 (69671) level=0x4 (4)", 1, "v6.14").fields["level"] == 4
    with T.open_trace(io.StringIO("                                       mmu_alloc_root ([kernel.kallsyms])\n"),
                      era="v6.14") as st:
        assert list(st) == [] and "callchain line without a record" in st.errors[0][1]

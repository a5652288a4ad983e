"""The kernel's own `trace` file under other trace options and clocks: one run of
demo.guest.json recorded at once by eight tracefs instances (tests/data/live/
capture_ftrace_options.sh): the default print, options/fields, irq-info=0, record-tgid,
latency-format, context-info=0, and the counter and x86-tsc clocks (bare-integer counts).
Every form gives the same records as the default one, and the audit the same verdicts."""
import os

import pytest

from pykvmmu import audit as A
from pykvmmu import trace as T

from test_audit_live import counts, guest_kw
from test_trace_formats import _same_int

L = os.path.join(os.path.dirname(__file__), "data", "live")
FORMS = ("fields", "irqinfo0", "tgid", "latency", "counter", "x86tsc", "noctx")


def _read(form):
    with T.open_trace(os.path.join(L, f"demo-opt-{form}.trace.txt.gz"), era="v6.14") as st:
        recs = list(st)
        assert st.n_errors == 0, st.errors[:3]
        return recs


@pytest.fixture(scope="module")
def plain():
    return _read("plain")


@pytest.mark.parametrize("form", FORMS)
def test_every_option_gives_the_default_records(plain, form):
    got = _read(form)
    assert len(got) == len(plain) == 478
    for p, g in zip(plain, got):
        assert g.event == p.event
        if form == "fields":                    # every field, whole role words
            shared = set(p.fields) & set(g.fields)          # the print text adds some of its own
            assert shared and all(_same_int(g.fields[k], p.fields[k]) for k in shared), (p, g)
            if p.role is not None:
                assert g.role_known == T.FULL_ROLE and g.role.word & p.role_known == p.role.word
        else:
            assert g.fields == p.fields and (g.role and g.role.word) == (p.role and p.role.word)
        if form == "noctx":                     # context-info=0: no task, CPU, flags or time
            assert (g.comm, g.pid, g.cpu, g.flags, g.ts, g.ts_ns) == ("", -1, -1, "", 0.0, None)
            continue
        assert (g.comm, g.pid, g.cpu) == (p.comm, p.pid, p.cpu)
        if form == "irqinfo0":
            assert g.flags == ""
        else:                                   # latency-format: "0...1." as trace-cmd -l
            assert g.flags == p.flags
        if form in ("counter", "x86tsc"):       # a count, not seconds: kept as it is
            assert g.ts == int(g.ts) and g.ts_ns is None
        else:                                   # each instance stamps its own event
            assert abs(g.ts - p.ts) < 50e-6
    if form == "counter":
        ts = [int(g.ts) for g in got]
        assert ts == sorted(ts) and ts[0] >= 1 and len(set(ts)) == len(ts)
    if form == "x86tsc":
        ts = [int(g.ts) for g in got]
        assert ts == sorted(ts) and ts[0] > 10**12


@pytest.mark.parametrize("form", ("plain",) + FORMS)
def test_audit_of_every_form_agrees(form):
    kw = guest_kw(os.path.join(L, "demo.kvmcap"))     # the same (deterministic) description
    ref = A.audit(os.path.join(L, "demo.trace.txt"), era="v6.18", **kw)
    rep = A.audit(os.path.join(L, f"demo-opt-{form}.trace.txt.gz"), era="v6.18", **kw)
    assert rep.total("disagreed") == 0 and rep.total("not_checkable") == 0, rep.format_table()
    assert rep.agreement == 100.0 and counts(rep) == counts(ref)


def test_context_free_lines_are_read_for_kvmmmu_events_only():
    r = T.parse_line("kvm_mmu_pagetable_walk: addr 4002e8 pferr 10 F", 3, "v6.14")
    assert (r.event, r.fields["addr"], r.pid, r.cpu) == ("kvm_mmu_pagetable_walk", 0x4002E8, -1, -1)
    assert T.parse_line("kvmmmu:kvm_mmu_paging_element: pte 11027 level 4", 1, "v6.14").fields == {
        "pte": 0x11027, "level": 4}
    for line in ("sched_switch: prev_comm=x", "note: kvm_mmu_get_page", "other:kvm_mmu_zap_all_fast: x"):
        with pytest.raises(ValueError, match="not a trace line"):
            T.parse_line(line, 1, "v6.14")

"""Inputs the fuzzers found, kept as regression tests (each names what it exposed).

The C core and the references have not disagreed; the core's findings were over-strong
harness invariants or unreachable inputs (kept because each documents a real corner) and a
role quadrant the model let spill.  The ``trace`` target's findings are real crashes of the
readers and the audit on damaged traces (the damaged-capture cases are in
tests/test_trace_robust.py).
"""
import pytest

from pykvmmu import fuzz as F
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.ref import spte as R


def test_v510_exec_only_make_spte_can_be_the_word_zero():
    """v5.10-5.12 has no MMU-present bit: on an exec-only EPT host (present mask 0) an SPTE
    with no access, pfn 0, memtype UC (host MMIO) and A/D enabled is the word 0, which that
    era's is_shadow_present_pte calls non-present.  Core and reference agree; the fuzz
    target checks "make_spte output is shadow-present" only from v5.13 (bit 11)."""
    cfg = MmuConfig.ept(exec_only=True, profile="v5.10")
    kw = dict(level=1, pte_access=0, prefetch=True, synchronizing=True, host_writable=False,
              host_mmio=True, unsync_fails=True)
    r = S.make_spte(cfg, 0, **kw)
    assert (r.spte, r.wrprot) == R.make_spte(cfg, 0, **kw) == (0, False)
    assert not S.is_shadow_present_pte(cfg, r.spte)
    new = MmuConfig.ept(exec_only=True, profile="v5.13")
    assert S.is_shadow_present_pte(new, S.make_spte(new, 0, **kw).spte)


def test_v510_exec_only_reproducer_replays_clean():
    data = bytes.fromhex("036252b43e6b44b2000000000000000001")
    _, fail = F.run_one(F.TARGETS["spte"], data)
    assert fail is None, fail.message


def test_rolecalc_quadrant_only_at_levels_1_and_2():
    """rolecalc's first run flagged kvm_mmu_get_page_role(guest_32bit=True) at level 3: the
    2019 quadrant formula gives ``level`` bits, and ORed into the word at level >= 3 they
    spill into ``direct``/``access`` (the kernel's ``role.quadrant`` is a 2-bit field, and
    4-byte gptes only have level-1/2 SPs: role-hash-trace.md section 2.4).  The target draws
    guest_32bit=True at levels 1-2 only; at level >= 3 a quadrant that does not fit the field
    is refused (a quadrant of 0..3 is what the kernel's 2-bit field would hold)."""
    from pykvmmu import role as Ro
    from pykvmmu.ref import role as RR
    for level in (1, 2):
        for gaddr in (0, 1 << 21, 3 << 30, (1 << 64) - 1):
            q = Ro.quadrant_for_gaddr(gaddr, level)
            assert q < 1 << level <= 4
            w = Ro.kvm_mmu_get_page_role("v4.2", 0x1000714, level=level, direct=False, access=0, gaddr=gaddr,
                                         guest_32bit=True)
            assert RR.unpack_role("v4.2", w)["quadrant"] == q and RR.unpack_role("v4.2", w)["direct"] == 0
    assert Ro.quadrant_for_gaddr((1 << 64) - 2, 3) == 7          # 3 bits: no room in quadrant:2
    for era in ("v4.2", "v5.17", "v6.14"):
        with pytest.raises(Ro.RoleFieldError, match="quadrant 7 at level 3 does not fit"):
            Ro.kvm_mmu_get_page_role(era, 0, level=3, direct=False, access=0, gaddr=(1 << 64) - 2,
                                     guest_32bit=True)
        w = Ro.kvm_mmu_get_page_role(era, 0, level=3, direct=False, access=0, gaddr=3 << 39, guest_32bit=True)
        assert RR.unpack_role(era, w)["quadrant"] == 3 and RR.unpack_role(era, w)["direct"] == 0


def test_trace_format_array_of_a_named_length():
    """fuzz target ``trace``: a format file whose array length is not a number (a damaged
    file, or a macro name the kernel left unexpanded) raised ValueError out of the reader;
    the field is now read as bytes, like any array whose element count is unknown."""
    from pykvmmu.trace.tpformat import parse_event_format
    text = ("name: x\nID: 7\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
            "\tfield:u64 regs[NR_REGS];\toffset:8;\tsize:16;\tsigned:0;\n"
            "\tfield:u64 damaged[\x005];\toffset:24;\tsize:8;\tsigned:0;\n\nprint fmt: \"\"\n")
    ev = parse_event_format(text, "kvmmmu")
    kinds = {f.name: (f.kind, f.count) for f in ev.fields}
    assert kinds["regs"] == kinds["damaged"] == ("array", 0)


def test_trace_format_whose_event_name_is_not_a_name():
    """fuzz target ``trace`` (seed 23): a damaged capture whose format file had an empty
    ``name:`` line gave records with the event name ''; a format file's name must now be a C
    identifier, as every tracepoint's is, and the capture is refused naming it."""
    import io
    import os
    import tarfile
    from pykvmmu import trace as T
    from pykvmmu.trace.record import TraceFormatError
    from pykvmmu.trace.tpformat import parse_event_format
    fmt = "name: {}\nID: 7\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
    assert parse_event_format(fmt.format("kvm_mmu_set_spte"), "kvmmmu").name == "kvm_mmu_set_spte"
    for bad in ("", "1x", "a b", "x\x00"):
        with pytest.raises(TraceFormatError, match="event name .* is not a C identifier"):
            parse_event_format(fmt.format(bad), "kvmmmu")
    src = os.path.join(os.path.dirname(__file__), "data", "live", "demo.kvmcap")
    out = io.BytesIO()
    with tarfile.open(src) as tin, tarfile.open(fileobj=out, mode="w") as tout:
        damaged = 0
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None
            if data is not None and data.startswith(b"name: kvm_mmu_set_accessed_bit\n"):
                data = b"name: \n" + data.split(b"\n", 1)[1]
                m.size = len(data)
                damaged += 1
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
    assert damaged == 1
    with pytest.raises(TraceFormatError, match="event name '' is not a C identifier"):
        with T.open_trace(io.BytesIO(out.getvalue())) as st:
            list(st)


def test_audit_of_a_request_without_its_pfn():
    """fuzz target ``trace``: a damaged line read as kvm_mmu_spte_requested without its pfn
    made the audit's zero-page pre-pass raise KeyError; the record is now not checkable, like
    any record missing a field its check reads, and the audit goes on."""
    import os

    from pykvmmu import trace as T
    from pykvmmu.audit import audit_records, live_config
    with T.open_trace(os.path.join(os.path.dirname(__file__), "data", "live", "demo.trace.txt"),
                      era="v6.14") as st:
        recs = list(st)
    r = next(r for r in recs if r.event == "kvm_mmu_spte_requested")
    del r.fields["pfn"]
    rep = audit_records(recs, live_config(), era="v6.18")
    bad = [v for v in rep.verdicts if v.status != "agreed"]
    assert [(v.check, v.status, v.event, v.reason) for v in bad] == [
        ("set_spte", "not_checkable", "kvm_mmu_set_spte",
         f"record {r.line_no}, which this check uses, has no 'pfn' field")]
    assert bad[0].record == r.line_no + 1          # the SPTE the request was for


def test_audit_of_a_field_that_is_not_a_number():
    """fuzz target ``trace``: a damaged line whose gfn reads as text made the audit raise
    TypeError (``str & int``), a level 0 a negative shift; a field the checks read as a number
    that the record holds as something else, or a level outside 1-5, now makes that record's
    check not checkable, saying which field and value."""
    import os

    from pykvmmu import trace as T
    from pykvmmu.audit import audit_records, live_config
    with T.open_trace(os.path.join(os.path.dirname(__file__), "data", "live", "demo.trace.txt"),
                      era="v6.14") as st:
        recs = list(st)
    sets = [r for r in recs if r.event == "kvm_mmu_set_spte"]
    sets[0].fields["gfn"] = "1f!"
    sets[1].fields["level"] = 0            # a level outside 1-5 made a negative shift
    rep = audit_records(recs, live_config(), era="v6.18")
    assert rep.total("disagreed") == 0
    nc = [(v.check, v.record, v.reason) for v in rep.verdicts if v.status == "not_checkable"]
    assert ("set_spte", sets[0].line_no, "the record has a 'gfn' that is not a number ('1f!')") in nc
    assert ("set_spte", sets[1].line_no, "the record has a 'level' that is not a page-table level (1-5) (0)") in nc


def test_trace_text_lines_that_backtracked_for_ever():
    """Trace target, seed 47: a damaged sched_stack base gave a sched_switch payload of
    'name=value' pairs glued together ("prev_comm=2n0a_rev_comm=...") and the raw-fields
    line regex, '(?:\\w+=\\S+\\s*)+', tried exponentially many splits of it (the fuzzer
    hung).  The line forms now take pairs apart by blanks, the perf script header crosses a
    run of blanks once, and a line longer than LINE_MAX is refused unread."""
    from pykvmmu.fuzz.target_trace import _cpu_bound    # the fuzzer's guard: fail, not hang
    from pykvmmu.trace import text as X
    payload = ("prev_comm=2n0a_rev_comm=2n0a_rev_comm=2n0a_rev_comm=2n0a_rev_comm=2n0a_rev_comm="
               "2n0a_rev_comm=2n0a_rev_comm=2n0a_rev_comm=2n0a_rev_comm=234: sched_swm=2n0a_revsa_rev_"
               "comm=2iym=rcu_preempt pi7 prio=120 target_cpu=001")
    line = f"     rcu_preempt-15      [001] d..2.    35.123456: sched_switch: {payload}"
    with _cpu_bound(20):
        r = X.parse_line(line, 21, "v6.14", None, True)
        assert r.event == "sched_switch" and r.fields == {}       # not name=value pairs
        for unit in ("x=(1) ", "a=", " ", "\t", "1", "=0x1 (1)", "a-1 ", "1.5: ", "us"):
            for tail in ("", "!", " x"):
                s = unit * (60000 // len(unit)) + tail
                try:
                    X.parse_line(s, 1, "v6.14", None, True)
                except ValueError:
                    pass
        with pytest.raises(ValueError, match="longer than any trace line"):
            X.parse_line("x" * (X.LINE_MAX + 1), 1, "v6.14")


def test_a_megabyte_line_is_refused_and_the_lines_after_it_read():
    import io
    from pykvmmu.trace import open_trace
    good = "  python3-3742    [000] ..... 60844.413512: kvm_mmu_pagetable_walk: addr 4002e8 pferr 10 F\n"
    text = good + "=" * (3 << 20) + "\n" + good
    with open_trace(io.StringIO(text), era="v6.14") as st:
        recs = list(st)
    assert [r.line_no for r in recs] == [1, 3] and st.n_errors == 1
    assert "longer than any trace line" in st.errors[0][1] and len(st.errors[0][2]) <= (1 << 16) + 1

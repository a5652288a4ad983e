"""The audit on captures from the project's live kernel (6.18.44, kvm_pvm on the shadow MMU,
tests/data/live/): 100% agreement and nothing left "not checkable"; and the same records with
one value changed are caught, naming the bits."""
import copy
import os

import pytest

from pykvmmu import audit as A
from pykvmmu import trace as T
from pykvmmu.cli import main
from pykvmmu.errors import InputError

LIVE = os.path.join(os.path.dirname(__file__), "data", "live")
CAPTURE = os.path.join(LIVE, "demo.kvmcap")
#: the same run as the capture, recorded alongside it (text) or by trace-cmd (trace.dat, report -R)
SAME_RUN = ("demo.fields.txt", "demo.trace.txt", "demo-v6.dat.gz", "demo-v7-nocomp.dat.gz",
            "demo-dat.report-R.txt")


@pytest.fixture(scope="module")
def records():
    return list(T.open_trace(CAPTURE))


def counts(rep):
    return {c: dict(rep.counts[c]) for c in A.CHECKS}


def guest_kw(path):
    """The memslots and their changes from a capture's guest description (text forms have
    none; the capture of the same run does)."""
    with T.open_trace(path) as s:
        list(s)
    g = s.meta["guest"]
    runs = (s.meta.get("guest_result") or {}).get("runs")
    exits = [m["gpa"] >> 12 for run in runs or () for m in run["mmio"]] if runs else None
    return {"memslots": g["memslots"], "dirty_log": A.dirty_log_pages(runs) if runs else None,
            "mmio_exits": exits, "runs_done": len(runs) if runs else None,
            "slot_changes": [dict(c, run=i) for i, run in enumerate(g["runs"])
                             for c in run["changes"]]}


def test_capture_agrees_completely():
    rep = A.audit(CAPTURE)
    assert rep.total("disagreed") == 0, rep.format_table()
    assert rep.total("not_checkable") == 0, rep.format_table()
    assert rep.agreement == 100.0
    # every check the run exercises has verdicts (MMIO caching is off and no MMIO SPTE exists)
    for c in ("guest_walk", "role", "set_spte", "write_tracking", "page_hash"):
        assert rep.counts[c]["agreed"] > 0, c
    assert rep.events["kvm_mmu_zap_all_fast"] == 2
    # MMIO exits (no memslot: gfn 0xf0000, and gfn 0xc00 once slot 4 moved away; writes to the
    # read-only slot) are emulated with no SPTE, as mmio_caching=N says
    assert rep.counts["mmio"]["agreed"] == 9          # 6 walks + the 3 exit gfns userspace saw
    # slot 3 logs dirty pages in run 0 (two writes there) and stops before run 1
    assert rep.dirty_marked == 2
    assert rep.events["kvm_mmu_unsync_page"] > 0
    assert "6.18" in rep.era
    assert not rep.warnings


@pytest.mark.parametrize("name", SAME_RUN)
def test_other_forms_of_the_same_run_agree_the_same(name):
    rep = A.audit(os.path.join(LIVE, name), era="v6.18", **guest_kw(CAPTURE))
    ref = A.audit(CAPTURE)
    assert rep.total("disagreed") == 0 and rep.total("not_checkable") == 0, rep.format_table()
    assert counts(rep) == counts(ref)
    # without the guest description the MMIO-exit walks and the dirty log have no verdict
    bare = A.audit(os.path.join(LIVE, name), era="v6.18")
    assert bare.counts["mmio"]["agreed"] == 0
    assert counts(bare) == counts(A.audit(CAPTURE, memslots=None))


def test_plugin_text_without_gfns_is_not_checkable_not_disagreeing():
    # trace-cmd's kvm plugin prints no gfn for unsync/zap pages: those records, and what the
    # page-hash state depends on after them, are reported not checkable (never assumed)
    rep = A.audit(os.path.join(LIVE, "demo-dat.report.txt"), era="v6.18", **guest_kw(CAPTURE))
    assert rep.total("disagreed") == 0, rep.format_table()
    nc = rep.not_checkable
    assert nc and all("field" in v.reason for v in nc)
    assert rep.counts["set_spte"] == A.audit(CAPTURE).counts["set_spte"]


def test_inferred_inputs_are_reported_and_matter(records):
    rep = A.audit_records(records)
    for k in ("host_writable", "vcpu registers", "prefetch", "old SPTE"):
        assert rep.inferred_inputs[k] > 0, k
    # the zero-page inference is what explains the read-only (no host-W) SPTEs: assuming every
    # pfn host-writable makes those records disagree on the host-writable bit
    rep = A.audit_records(records, host_writable=lambda gfn, pfn: True)
    bad = [v for v in rep.disagreements if v.check == "set_spte"]
    assert bad and all("host-W" in v.bits for v in bad)


def _changed(records, pick, change):
    out = [copy.copy(r) for r in records]
    for i, r in enumerate(out):
        if pick(r):
            r.fields = dict(r.fields)
            change(r)
            return out, r.line_no
    raise AssertionError("no record to change")


@pytest.mark.parametrize("bit,name", [(1, "W"), (9, "host-W"), (10, "MMU-W"), (5, "A"), (6, "D"),
                                      (63, "NX"), (11, "MMU-present")])
def test_flipped_spte_bit_in_a_real_record(records, bit, name):
    def flip(r):
        r.fields["spte"] ^= 1 << bit
    recs, line = _changed(records, lambda r: r.event == "kvm_mmu_set_spte"
                          and r.fields["spte"] & 2, flip)
    rep = A.audit_records(recs)
    d = [v for v in rep.disagreements if v.check == "set_spte"]
    assert [v.record for v in d] == [line]
    assert name in d[0].bits and d[0].diff == 1 << bit


@pytest.mark.parametrize("bit,field", [(13, "cr0_wp"), (12, "efer_nx"), (8, "access"),
                                       (16, "ad_disabled"), (24, "smm")])
def test_flipped_role_bit_in_a_real_record(records, bit, field):
    from pykvmmu.role import unpack

    def flip(r):
        r.role = unpack(r.role.era, r.role.word ^ (1 << bit))
    recs, line = _changed(records, lambda r: r.event == "kvm_mmu_get_page"
                          and r.fields["created"] and r.role.level == 2, flip)
    rep = A.audit_records(recs)
    d = [v for v in rep.disagreements if v.check == "role" and v.record == line]
    assert d and field in d[0].bits


def test_wrong_created_flag_and_generation(records):
    def flip(r):
        r.fields["created"] = 0
    recs, line = _changed(records, lambda r: r.event == "kvm_mmu_get_page"
                          and r.fields["created"] and r.role.level == 3, flip)
    d = [v for v in A.audit_records(recs).disagreements if v.check == "page_hash"]
    assert d[0].record == line and "new/existing" in d[0].what

    def gen(r):
        r.fields["mmu_valid_gen"] ^= 1
    recs, line = _changed(records, lambda r: r.event == "kvm_mmu_zap_all_fast", gen)
    d = [v for v in A.audit_records(recs).disagreements if v.check == "page_hash"]
    assert d[0].record == line


def test_missing_unsync_record_is_a_write_tracking_disagreement(records):
    i = next(i for i, r in enumerate(records) if r.event == "kvm_mmu_unsync_page")
    recs = records[:i] + records[i + 1:]
    d = [v for v in A.audit_records(recs).disagreements if v.check == "write_tracking"]
    assert len(d) == 1 and d[0].kernel == [] and d[0].model


def test_changed_accessed_bit_gpa_is_a_walk_disagreement(records):
    def move(r):
        r.fields["gpa"] += 8
    recs, line = _changed(records, lambda r: r.event == "kvm_mmu_set_accessed_bit", move)
    d = [v for v in A.audit_records(recs).disagreements if v.check == "guest_walk"]
    assert d and d[0].record == line


def test_spte_for_a_gfn_without_memslot_is_an_mmio_disagreement(records):
    kw = guest_kw(CAPTURE)
    # pretend slot 1 (GPA 4 MiB..8 MiB) does not exist: its faults must not map SPTEs
    kw["memslots"] = [m for m in kw["memslots"] if m["slot"] != 1]
    rep = A.audit_records(records, **kw)
    d = [v for v in rep.disagreements if v.check == "mmio"]
    assert d and all("no memslot" in v.what for v in d)


def test_json_report_lists_counts_and_inferred(records):
    j = A.audit_records(records).to_json()
    assert j["agreement_percent"] == 100.0
    assert set(j["counts"]) == set(A.CHECKS)
    assert j["inferred_inputs"]["host_writable"] > 0


def test_read_only_memslot_from_the_guest_description(records):
    # the capture's guest.json names slot 2 read-only: its SPTEs lack host-W by the memslot
    # rule, not by the zero-page inference
    with_desc = A.audit(CAPTURE)
    without = A.audit_records(records)
    assert with_desc.total("disagreed") == without.total("disagreed") == 0
    assert with_desc.inferred_inputs["host_writable"] < without.inferred_inputs["host_writable"]
    # claiming that every slot is read-only contradicts the writable SPTEs of the run
    rep = A.audit_records(records, memslots=[{"gpa": 0, "size": 1 << 40, "flags": ["readonly"]}])
    assert any(v.check == "set_spte" and "host-W" in v.bits for v in rep.disagreements)


FLOOD = os.path.join(os.path.dirname(__file__), "data", "audit", "flood.kvmcap")


def test_write_flooding_capture_agrees():
    rep = A.audit(FLOOD)
    assert rep.total("disagreed") == 0 and rep.total("not_checkable") == 0, rep.format_table()
    assert rep.counts["write_flood"]["agreed"] == 1
    text = A.audit(os.path.join(os.path.dirname(FLOOD), "flood.fields.txt"), era="v6.18",
                   **guest_kw(FLOOD))
    assert counts(text) == counts(rep)


def test_missing_flood_zap_is_a_disagreement():
    recs = list(T.open_trace(FLOOD))
    # the first zap is the flood (the later ones are the VM teardown's kvm_mmu_zap_all)
    i = next(i for i, r in enumerate(recs) if r.event == "kvm_mmu_prepare_zap_page")
    assert (recs[i].fields["gfn"], recs[i].role.word) == (0x17, 0x3702)
    rep = A.audit_records(recs[:i] + recs[i + 1:])
    d = [v for v in rep.disagreements if v.check == "write_flood"]
    assert len(d) == 1 and d[0].model == "zapped" and "0x17" in d[0].what


def test_flood_with_writes_hidden_is_not_claimed():
    recs = list(T.open_trace(FLOOD))
    # drop the emulator's write walks (pferr W without P) to gfn 0x17's page-table window:
    # the zap then has too few visible writes and is reported not checkable, not agreed
    walks = [i for i, r in enumerate(recs) if r.event == "kvm_mmu_pagetable_walk"
             and r.fields["pferr"] == 2 and r.fields["addr"] == 0x607000]
    drop = set()
    for i in walks[1:]:
        j = i
        while j == i or recs[j].event == "kvm_mmu_paging_element":
            drop.add(j)
            j += 1
    rep = A.audit_records([r for k, r in enumerate(recs) if k not in drop])
    assert rep.counts["write_flood"]["agreed"] == 0
    assert rep.counts["write_flood"]["not_checkable"] == 1


@pytest.mark.parametrize("name", ("kfuzz-unsync-wp1.kvmcap", "kfuzz-unsync-wp0.kvmcap",
                                  "kfuzz-unsync-min.kvmcap"))
def test_kernel_fuzz_reproducers_agree(name):
    # the live helper's kernel fuzzer flagged these with an older audit that kept a page
    # unsync after kvm_mmu_sync_page (the event fires before sp->unsync is cleared)
    rep = A.audit(os.path.join(LIVE, name))
    assert rep.total("disagreed") == 0 and rep.total("not_checkable") == 0, rep.format_table()
    assert rep.events["kvm_mmu_unsync_page"] and rep.counts["write_tracking"]["agreed"]
    # the capture records the host's zero-page pfn: host_writable is not inferred
    assert rep.inferred_inputs["host_writable"] == 0


AUDIT = os.path.join(os.path.dirname(__file__), "data", "audit")


@pytest.mark.parametrize("name,what", [
    # a gfn becomes a shadowed page table after a writable SPTE mapped it: account_shadowed
    # write-protects that SPTE, so the next write fault tries (and manages) to unsync
    ("kfuzz-wrprot-on-shadow.kvmcap", "kvm_mmu_unsync_page"),
    # toggling KVM_MEM_READONLY is a delete + create (a zap_all_fast), a slot MOVE another
    ("kfuzz-readonly-toggle.kvmcap", "kvm_mmu_zap_all_fast"),
])
def test_kernel_fuzz_findings_of_this_audit_agree(name, what):
    rep = A.audit(os.path.join(AUDIT, name))
    assert rep.total("disagreed") == 0 and rep.total("not_checkable") == 0, rep.format_table()
    assert rep.events[what] > 0


def test_readonly_toggle_needs_its_zap(records):
    recs = list(T.open_trace(os.path.join(AUDIT, "kfuzz-readonly-toggle.kvmcap")))
    kw = guest_kw(os.path.join(AUDIT, "kfuzz-readonly-toggle.kvmcap"))
    # treated as an in-place flag change (no zap), the later DELETE of slot 1 comes one zap
    # too early and the faults on slot 1 disagree (SPTEs for a gfn with no memslot)
    for c in kw["slot_changes"]:
        if c["action"] == "flags" and c["slot"] == 1:
            c["action"] = "none"
    kw["slot_changes"] = [c for c in kw["slot_changes"] if c["action"] != "none"]
    rep = A.audit_records(recs, **kw)
    assert any(v.check == "mmio" for v in rep.disagreements)


def test_dirty_log_against_mark_page_dirty(records):
    rep = A.audit(CAPTURE, keep_agreed=True)
    v = [v for v in rep.verdicts if "dirty log" in v.what]
    # slot 3 logs dirty pages in run 0: the two writes there are its pages 0 and 1
    assert [(x.status, x.model, x.kernel) for x in v] == [("agreed", [0, 1], [0, 1])]
    kw = guest_kw(CAPTURE)
    kw["dirty_log"] = {3: {0, 1, 5}}
    rep = A.audit_records(records, **kw)
    d = [v for v in rep.disagreements if "dirty log" in v.what]
    assert d and d[0].model == [0, 1] and d[0].kernel == [0, 1, 5]
    assert A.dirty_log_pages([{"dirty": {"3": "0300000000000000"}}, {"dirty": {"3": "04"}}]) \
        == {3: {0, 1, 2}}


def test_cli_on_the_capture(capsys):
    from pykvmmu.cli import main
    assert main(["audit", CAPTURE, "--strict"]) == 0
    out = capsys.readouterr().out
    assert "profile v6.15" in out and "agreement: 100.00%" in out
    assert main(["audit", CAPTURE, "--mode", "ept"]) == 1


def test_mmio_exit_the_model_does_not_emulate_disagrees(records):
    kw = guest_kw(CAPTURE)
    kw["mmio_exits"] = kw["mmio_exits"] + [0x21]          # gfn 0x21 is RAM in slot 0
    d = [v for v in A.audit_records(records, **kw).disagreements if v.check == "mmio"]
    assert len(d) == 1 and "0x21" in d[0].what


def test_memslot_delete_without_zap_all_fast_disagrees(records):
    kw = guest_kw(CAPTURE)
    # claim run 2 also deleted slot 0: the trace has no third kvm_mmu_zap_all_fast
    kw["slot_changes"] = kw["slot_changes"] + [{"action": "delete", "slot": 0, "run": 2}]
    d = [v for v in A.audit_records(records, **kw).disagreements if v.check == "page_hash"]
    assert len(d) == 1 and "memslot delete of slot 0" in d[0].what
    # and a zap_all_fast no change explains
    kw = guest_kw(CAPTURE)
    kw["slot_changes"] = kw["slot_changes"][:-1]          # drop run 2's DELETE of slot 4
    d = [v for v in A.audit_records(records, **kw).disagreements if v.check == "page_hash"]
    assert d and "memslot change behind it" in d[0].what


@pytest.mark.parametrize("name", ["demo-two.perf.data.gz", "demo-two.ctf.tar.gz"])
def test_a_trace_of_two_vms_is_audited_one_vm_at_a_time(name, capsys):
    """Two demo guests recorded at once, one per CPU (tests/data/live/README.md): the model
    is one VM, so the whole trace mixes two VMs' shadow pages (the same gfns, roles created
    twice) and a warning names the two tasks; each VM audited on its own (``pids``) agrees
    completely, with the capture's verdict counts."""
    path = os.path.join(LIVE, name)
    kw = guest_kw(os.path.join(LIVE, "demo-perf.kvmcap"))
    ref = A.audit(os.path.join(LIVE, "demo-perf.kvmcap"))
    mixed = A.audit(path, **kw)
    with T.open_trace(path) as st:
        tasks = sorted({r.pid for r in st})
    assert len(tasks) == 2 and mixed.total("disagreed") > 0
    assert any(f"2 tasks ({tasks[0]}, {tasks[1]})" in w for w in mixed.warnings)
    for pid in tasks:
        rep = A.audit(path, pids=[pid], **kw)
        assert rep.records == 478 and rep.total("disagreed") == 0 and rep.agreement == 100.0
        assert counts(rep) == counts(ref) and not rep.warnings
    assert A.audit(path, pids=tasks + [1], **kw).records == 956
    for bad in ([], [-1], ["17"], 17, [True]):
        with pytest.raises(InputError, match="pids="):
            A.audit(path, pids=bad, **kw)
    assert main(["audit", path, "--pid", str(tasks[1]), "--era", "v6.14"]) == 0
    out = capsys.readouterr().out
    assert "audit: 478 records" in out and "disagreements" not in out

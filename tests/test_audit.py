"""pykvmmu.audit on hand-built traces: every check agrees on a consistent trace, and a
flipped bit in a recorded SPTE or role word becomes a disagreement naming the bits."""
import json

import pytest

from pykvmmu import audit as A
from pykvmmu import trace as T
from pykvmmu.cli import main
from pykvmmu.errors import InputError

ROOT = "get_page: mmu_valid_gen={gen} gfn=0x1000 role={root} root_count=0 unsync=0 created={new}"
WALK = [
    "pagetable_walk: addr={addr} pferr={pferr}",
    "paging_element: pte=0x1001027 level=4",
    "paging_element: pte=0x1002027 level=3",
    "paging_element: pte=0x1003027 level=2",
    "paging_element: pte={leaf} level=1",
]
CHILDREN = [
    "get_page: mmu_valid_gen=0 gfn=0x1001 role=0x3703 root_count=0 unsync=0 created=1",
    "get_page: mmu_valid_gen=0 gfn=0x1002 role=0x3702 root_count=0 unsync=0 created=1",
    "get_page: mmu_valid_gen=0 gfn=0x1003 role={l1role} root_count=0 unsync=0 created=1",
]


def lines(*body):
    out = []
    for i, b in enumerate(body, 1):
        out.append(f"vcpu-7 [000] 10.{i:06d}: kvm_mmu_{b}" if not b.startswith(("mark_", "check_"))
                   else f"vcpu-7 [000] 10.{i:06d}: {b}")
    return out


def fault(spte="0x1e296be67", leaf="0x2005067", pferr="0x6", l1role="0x3701", root="0x3704",
          extra=()):
    body = [ROOT.format(gen=0, root=root, new=1)]
    body += [w.format(addr="0x5000", pferr=pferr, leaf=leaf) for w in WALK]
    body += [c.format(l1role=l1role) for c in CHILDREN]
    body += ["spte_requested: gfn=0x2005 pfn=0x1e296b level=1",
             f"set_spte: gfn=0x2005 spte={spte} sptep=0x12345028 level=1 r=1 x=1 u=1"]
    body += list(extra)
    return lines(*body)


def run(ls, **kw):
    res = T.parse(ls, era="v6.18")
    assert not res.errors, res.errors
    return A.audit_records(res.records, **kw)


def test_consistent_fault_agrees_everywhere():
    rep = run(fault())
    assert rep.total("disagreed") == 0
    assert rep.total("not_checkable") == 0
    assert rep.counts["role"]["agreed"] == 4
    assert rep.counts["set_spte"]["agreed"] == 2
    assert rep.counts["write_tracking"]["agreed"] == 1
    assert rep.counts["page_hash"]["agreed"] == 4
    assert rep.agreement == 100.0
    assert rep.inferred_inputs["host_writable"] >= 1


@pytest.mark.parametrize("spte,bits", [
    ("0x1e296bc67", ["host-W"]),          # bit 9 flipped
    ("0x1e296be65", ["W"]),               # bit 1
    ("0x1e296ae67", ["pfn bits 0x1"]),    # a pfn bit
    ("0x80000001e296be67", ["NX"]),        # bit 63
    ("0x1e296be27", ["D"]),
])
def test_flipped_spte_bit_is_a_disagreement_naming_it(spte, bits):
    rep = run(fault(spte=spte))
    d = [v for v in rep.disagreements if v.check == "set_spte"]
    assert len(d) == 1
    assert d[0].model == 0x1e296be67 and d[0].kernel == int(spte, 16)
    assert d[0].diff == 0x1e296be67 ^ int(spte, 16)
    assert set(bits) <= set(d[0].bits)


def test_flipped_role_bit_is_a_disagreement_naming_the_field():
    rep = run(fault(l1role=hex(0x3701 ^ (1 << 13))))
    d = [v for v in rep.disagreements if v.check == "role"]
    assert len(d) == 1 and "cr0_wp" in d[0].bits and d[0].diff == 1 << 13


def test_impossible_root_role_is_not_checkable_and_children_follow_it():
    # smep_andnot_wp with CR0.WP=1: no vCPU state gives this root
    rep = run(fault(root="0x7704"))
    assert rep.counts["role"]["not_checkable"] == 4
    assert rep.counts["guest_walk"]["not_checkable"] == 1
    assert rep.total("disagreed") == 0


def test_clean_leaf_read_fault_drops_write():
    # read fault (pferr U), leaf gpte without D: protect_clean_gpte removes W
    rep = run(fault(pferr="0x4", leaf="0x2005027", spte="0x1e296ba25"))
    assert rep.total("disagreed") == 0, rep.format_table()
    rep = run(fault(pferr="0x4", leaf="0x2005027", spte="0x1e296be67"))
    assert any(v.check == "set_spte" and "W" in v.bits for v in rep.disagreements)


def test_write_tracked_gfn_gets_w_withheld():
    # the gfn 0x1002 is shadowed as a level-2 page table: a writable mapping of it is refused
    body = [ROOT.format(gen=0, root="0x3704", new=1)]
    body += [w.format(addr="0x5000", pferr="0x6", leaf="0x2005067") for w in WALK]
    body += [c.format(l1role="0x3701") for c in CHILDREN]
    walk2 = ["pagetable_walk: addr=0x6000 pferr=0x6", "paging_element: pte=0x1001027 level=4",
             "paging_element: pte=0x1002027 level=3", "paging_element: pte=0x1003027 level=2",
             "paging_element: pte=0x1002067 level=1",
             "spte_requested: gfn=0x1002 pfn=0x3000 level=1"]
    ok = walk2 + ["set_spte: gfn=0x1002 spte=0x3000a25 sptep=0x12345030 level=1 r=1 x=1 u=1"]
    rep = run(lines(*body, *ok))
    assert rep.total("disagreed") == 0, rep.format_table()
    assert rep.counts["write_tracking"]["agreed"] == 1
    bad = walk2 + ["set_spte: gfn=0x1002 spte=0x3000e67 sptep=0x12345030 level=1 r=1 x=1 u=1"]
    rep = run(lines(*body, *bad))
    wt = [v for v in rep.disagreements if v.check == "write_tracking"]
    assert wt and "write-tracked" in wt[0].reason
    st = [v for v in rep.disagreements if v.check == "set_spte"]
    assert st and {"W", "MMU-W", "D"} <= set(st[0].bits)


def _unsync_trace(unsync_record: bool):
    # gfn 0x1003 is shadowed by the 4K SP: a writable mapping of it marks that SP unsync
    body = [ROOT.format(gen=0, root="0x3704", new=1)]
    body += [w.format(addr="0x5000", pferr="0x6", leaf="0x2005067") for w in WALK]
    body += [c.format(l1role="0x3701") for c in CHILDREN]
    body += ["spte_requested: gfn=0x2005 pfn=0x1e296b level=1",
             "set_spte: gfn=0x2005 spte=0x1e296be67 sptep=0x12345028 level=1 r=1 x=1 u=1",
             "pagetable_walk: addr=0x7000 pferr=0x6", "paging_element: pte=0x1001027 level=4",
             "paging_element: pte=0x1002027 level=3", "paging_element: pte=0x1003027 level=2",
             "paging_element: pte=0x1003067 level=1",
             "spte_requested: gfn=0x1003 pfn=0x4000 level=1"]
    if unsync_record:
        body.append("unsync_page: mmu_valid_gen=0 gfn=0x1003 role=0x3701 root_count=0 unsync=0")
    body.append("set_spte: gfn=0x1003 spte=0x4000e67 sptep=0x12345038 level=1 r=1 x=1 u=1")
    return lines(*body)


def test_unsync_decision_matches_unsync_page_records():
    rep = run(_unsync_trace(True))
    assert rep.total("disagreed") == 0, rep.format_table()
    rep = run(_unsync_trace(False))
    d = [v for v in rep.disagreements if v.check == "write_tracking"]
    assert d and d[0].model == [(0x1003, 0x3701)] and d[0].kernel == []


def test_sync_page_leaves_the_page_sync_so_the_next_write_unsyncs_again():
    # kvm_unlink_unsync_page traces with unsync=1, then clears it and write-protects the gfn
    again = ["sync_page: mmu_valid_gen=0 gfn=0x1003 role=0x3701 root_count=0 unsync=1",
             "pagetable_walk: addr=0x7000 pferr=0x3", "paging_element: pte=0x1001027 level=4",
             "paging_element: pte=0x1002027 level=3", "paging_element: pte=0x1003027 level=2",
             "paging_element: pte=0x1003067 level=1",
             "spte_requested: gfn=0x1003 pfn=0x4000 level=1"]
    unsync = "unsync_page: mmu_valid_gen=0 gfn=0x1003 role=0x3701 root_count=0 unsync=0"
    setspte = "set_spte: gfn=0x1003 spte=0x4000e67 sptep=0x12345038 level=1 r=1 x=1 u=1"
    rep = run(_unsync_trace(True) + lines(*again, unsync, setspte))
    assert rep.total("disagreed") == 0, rep.format_table()
    rep = run(_unsync_trace(True) + lines(*again, setspte))
    d = [v for v in rep.disagreements if v.check == "write_tracking"]
    assert d and d[0].model == [(0x1003, 0x3701)]
    # a sync of a page the model holds sync is a disagreement too
    rep = run(fault() + lines("sync_page: mmu_valid_gen=0 gfn=0x1003 role=0x3701 "
                              "root_count=0 unsync=1"))
    assert [v.check for v in rep.disagreements] == ["write_tracking"]


def test_zap_all_fast_generation_and_obsolete_pages():
    body = fault() + lines("zap_all_fast: mmu_valid_gen=0 used_pages=4",
                           "get_page: mmu_valid_gen=1 gfn=0x1000 role=0x3704 root_count=0 "
                           "unsync=0 created=1")
    rep = run(body)
    assert rep.total("disagreed") == 0, rep.format_table()
    body = fault() + lines("zap_all_fast: mmu_valid_gen=1 used_pages=4")
    rep = run(body)
    d = [v for v in rep.disagreements if v.check == "page_hash"]
    assert d and d[0].model == 0 and d[0].kernel == 1
    body = fault() + lines("zap_all_fast: mmu_valid_gen=0 used_pages=5")
    assert [v.kernel for v in run(body).disagreements] == [5]


def test_existing_page_that_was_never_created_disagrees():
    body = fault()
    body[0] = body[0].replace("created=1", "created=0")
    rep = run(body)
    d = [v for v in rep.disagreements if v.check == "page_hash"]
    assert d and d[0].what.startswith("new/existing")


def test_root_zapped_in_use_then_freed():
    body = fault() + lines(
        "zap_all_fast: mmu_valid_gen=0 used_pages=4",
        "prepare_zap_page: mmu_valid_gen=0 gfn=0x1000 role=0x3704 root_count=1 unsync=0")
    rep = run(body)
    assert rep.counts["page_hash"]["not_checkable"] == 1     # never freed in the trace
    body += lines("prepare_zap_page: mmu_valid_gen=0 gfn=0x1000 role=0x3f04 root_count=0 unsync=0")
    rep = run(body)
    assert rep.counts["page_hash"]["not_checkable"] == 0
    assert rep.total("disagreed") == 0, rep.format_table()


def test_mmio_events_with_caching_off_disagree():
    body = fault() + lines("mark_mmio_spte: sptep:0xffff8881 gfn fee00 access 6 gen 2")
    rep = run(body)
    assert [v.check for v in rep.disagreements] == ["mmio"]


def test_prefetch_infers_access_and_checks_the_spte():
    ok = "set_spte: gfn=0x2006 spte=0x1e3000a05 sptep=0x12345030 level=1 r=1 x=1 u=1"
    rep = run(fault(extra=[ok]))
    assert rep.total("disagreed") == 0, rep.format_table()
    assert rep.inferred_inputs["prefetch"] == 1
    # a prefetched SPTE with the Accessed bit set is not what make_spte builds
    bad = ok.replace("0x1e3000a05", "0x1e3000a25")
    rep = run(fault(extra=[bad]))
    assert any("A" in v.bits for v in rep.disagreements)


def test_cli_table_and_json(tmp_path, capsys):
    p = tmp_path / "t.txt"
    p.write_text("\n".join(fault(spte="0x1e296bc67")) + "\n")
    assert main(["audit", str(p), "--era", "v6.18"]) == 0
    out = capsys.readouterr().out
    assert "disagreed" in out and "host-W" in out
    assert main(["audit", str(p), "--era", "v6.18", "--json", "--strict"]) == 1
    j = json.loads(capsys.readouterr().out)
    assert j["counts"]["set_spte"]["disagreed"] == 1
    assert j["verdicts"][0]["bits"] == ["host-W"]


def test_refused_configuration():
    from pykvmmu.config import MmuConfig
    with pytest.raises(InputError, match="shadow MMU"):
        A.Auditor(MmuConfig.ept())
    with pytest.raises(InputError, match="zero_page_min_gfns"):
        A.Auditor(zero_page_min_gfns=1)
    with pytest.raises(InputError, match="not a trace record"):
        A.audit_records([object()])
    with pytest.raises(InputError, match="iterable"):
        A.audit_records(5)
    with pytest.raises(InputError, match="host_zero_pfn"):
        A.Auditor(host_zero_pfn=-1)
    with pytest.raises(InputError, match="memslots"):
        A.Auditor(memslots=[{"gpa": 0}])
    with pytest.raises(InputError, match="page-aligned"):
        A.Auditor(memslots=[{"gpa": 0x10, "size": 0x1000, "flags": []}])
    with pytest.raises(InputError, match="slot_changes"):
        A.Auditor(memslots=[], slot_changes=[{"action": "resize"}])


def test_request_without_set_spte_is_not_checkable():
    body = fault()[:-1] + lines("pagetable_walk: addr=0x5000 pferr=0x6")
    rep = run(body)
    nc = rep.not_checkable
    assert [v.check for v in nc] == ["set_spte"] and "no kvm_mmu_set_spte" in nc[0].what


def test_r_field_is_checked():
    rep = run([ln.replace("r=1 x=1", "r=0 x=1") for ln in fault()])
    d = [v for v in rep.disagreements if v.check == "set_spte"]
    assert d and "r field" in d[0].what


def test_mmio_caching_on_checks_generation_and_verdict():
    from pykvmmu import mmio as M
    cfg = A.live_config(mmio_caching=True)
    s = M.make_mmio_spte(cfg, 0xfee00, 6, 0x123)
    ok = lines(f"check_mmio_spte: spte {s:x} kvm_gen 123 spte-gen 123 valid 1")
    rep = run(fault() + ok, cfg=cfg)
    assert rep.counts["mmio"]["agreed"] == 1 and rep.total("disagreed") == 0
    stale = lines(f"check_mmio_spte: spte {s:x} kvm_gen 125 spte-gen 123 valid 1")
    d = [v for v in run(fault() + stale, cfg=cfg).disagreements if v.check == "mmio"]
    assert d and "valid" in d[0].what
    walk = [w.format(addr="0x5000", pferr="0x6", leaf="0xfee00067") for w in WALK]
    body = lines(ROOT.format(gen=0, root="0x3704", new=1), *walk,
                 *[c.format(l1role="0x3701") for c in CHILDREN],
                 "mark_mmio_spte: sptep:0xffff8881 gfn fee00 access 6 gen 2")
    body = [ln.replace("kvm_mmu_mark_mmio", "mark_mmio") for ln in body]
    rep = run(body, cfg=cfg)
    assert rep.counts["mmio"]["agreed"] == 1 and rep.total("disagreed") == 0, rep.format_table()
    bad = [ln.replace("access 6", "access 2") for ln in body]
    assert [v.check for v in run(bad, cfg=cfg).disagreements] == ["mmio"]

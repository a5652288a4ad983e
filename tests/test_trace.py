"""kvmmmu trace decoding: every documented format, every event, malformed lines, the CLI."""
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from pykvmmu import cli
from pykvmmu import role as R
from pykvmmu import trace as T

DATA = os.path.join(os.path.dirname(__file__), "data")


def _p(name, era="latest", dec=None):
    return T.parse_file(os.path.join(DATA, name), era, dec)


def test_ftrace_every_event():
    res = _p("trace_ftrace_v6.txt")
    assert res.errors == [] and res.other_events == {"kvm_exit": 1}
    seen = {r.event for r in res.records}
    want = set(T.EVENTS) - {"kvm_mmu_invalidate_zap_all_pages"} | {
        "kvm_mmu_get_page", "kvm_mmu_sync_page", "kvm_mmu_unsync_page", "kvm_mmu_prepare_zap_page"}
    assert want <= seen
    by = {}
    for r in res.records:
        by.setdefault(r.event, []).append(r)
    z = by["kvm_mmu_prepare_zap_page"][0]
    assert z.fields == {"gfn": 0, "root_count": 0, "unsync": 0, "mmu_valid_gen": 0}
    assert z.role.word == 0x1783 and z.role.level == 3 and z.role.direct == 1
    # text does not carry cr0_wp: the real newest TDP page is 0x3783 (section 6.2)
    assert not z.role_known & 0x2000 and (0x3783 & z.role_known) == z.role.word
    g = by["kvm_mmu_get_page"]
    assert g[0].role.word == 0x1781 and g[0].fields["created"] == 1
    assert g[1].role.word == 0x0731 and g[1].fields["created"] == 0 and g[1].fields["unsync"] == 1
    assert by["kvm_mmu_unsync_page"][0].role.word == 0x772
    inv = by["kvm_mmu_prepare_zap_page"][2]
    assert inv.role.invalid == 1 and inv.role.ad_disabled == 1 and inv.role.access == 3
    f = by["fast_page_fault"][0].fields
    assert f["old_spte"] == 0x61000034d4fe877 == f["new_spte"] and f["spurious"] == 1
    assert f["error_code"] == "F" and f["vcpu_id"] == 4
    t = by["kvm_tdp_mmu_spte_changed"][1].fields
    assert t["new_spte"] == 0x80000000000005A0 and t["level"] == 2 and t["gfn"] == 0xFFC00
    s = by["kvm_mmu_set_spte"][0].fields
    assert s == {"gfn": 0x800, "spte": 0x100B4A00EA7, "perm": "rwxu", "level": 2,
                 "sptep": 0x10052FA5020}
    assert by["mark_mmio_spte"][0].fields["gen"] == 0x12
    assert by["kvm_mmu_zap_all_fast"][0].fields == {"mmu_valid_gen": 1, "used_pages": 0x2A}
    assert by["kvm_mmu_walker_error"][0].fields["pferr"] == 5


def test_trace_cmd_report_and_raw():
    res = _p("trace_cmd_report.txt")
    assert res.errors == [] and len(res.records) == 3
    assert res.records[0].flags == "" and res.records[0].role.word == 0x1781
    raw = _p("trace_cmd_raw.txt")
    assert raw.errors == []
    assert [r.role.word for r in raw.records] == [0x3781, 0x23731, 0x01003784]
    assert all(r.role_known == 0xFFFFFFFF and r.source == "raw" for r in raw.records)
    assert raw.records[2].role.as_id == 1


def test_plugin_output_v4_layout():
    res = _p("trace_plugin_v4.txt", "v4.2")
    assert res.errors == []
    a, b, c = res.records
    assert a.source == "plugin" and a.fields["created"] == 1
    assert a.role.word == R.pack("v4.2", level=1, direct=1, access=7, nxe=1, cr0_wp=1)
    assert b.role.cr4_pae == 1 and b.role.quadrant == 3 and b.role.smep_andnot_wp == 1
    assert b.role.cr0_wp == 0 and b.fields["unsync"] == 1
    assert c.role.smm == 1


def test_old_printk_formats():
    r50 = _p("trace_v5_0.txt", "v5.0")
    assert r50.errors == []
    assert r50.records[0].role.cr4_pae == 1 and r50.records[1].role.cr4_pae == 0
    assert r50.records[2].event == "kvm_mmu_invalidate_zap_all_pages"
    r51 = _p("trace_v5_1.txt", "v5.1")
    assert r51.errors == []
    assert r51.records[0].role.gpte_is_8_bytes == 0 and r51.records[0].role.quadrant == 2
    assert r51.records[1].role.gpte_is_8_bytes == 1
    assert "mmu_valid_gen" not in r51.records[0].fields


def test_bit4_sense_follows_era():
    line = " q-1 [000] .... 1.0: kvm_mmu_get_page: sp gen 0 gfn 1 l1 4-byte q1 wux nxe ad root 0 sync new"
    assert T.parse_line(line, 1, "latest").role.word & 0x10
    assert not T.parse_line(line, 1, "v5.1").role.word & 0x10


def test_malformed_lines_reported_and_skipped():
    res = _p("trace_malformed.txt")
    assert [n for n, _, _ in res.errors] == [2, 3, 4, 5, 6, 8]
    assert len(res.records) == 3
    assert all(isinstance(why, str) and why for _, why, _ in res.errors)


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_parse_never_raises(text):
    res = T.parse(text.splitlines(), "latest")
    assert len(res.records) + len(res.errors) <= len(text.splitlines())


@settings(max_examples=100)
@given(st.sampled_from(open(os.path.join(DATA, "trace_ftrace_v6.txt")).read().splitlines()[5:]),
       st.integers(0, 120), st.text(max_size=3))
def test_mutated_lines_never_crash(line, cut, junk):
    T.parse([line[:cut] + junk + line[cut:]], "latest")


def test_spte_decoder_hook_and_engine():
    calls = []
    res = _p("trace_ftrace_v6.txt", dec=lambda s, lvl: calls.append((s, lvl)) or "X")
    assert (0x100B4A00EA7, 2) in calls
    assert any(r.spte_text for r in res.records)
    res = _p("trace_ftrace_v6.txt", dec=lambda s, lvl: 1 / 0)
    assert res.errors == [] and all("failed" in v for r in res.records for v in r.spte_text.values())
    dec = T.default_spte_decoder("latest", "ept")
    if dec is not None:                              # the SPTE engine is present
        assert "frozen" in dec(0x80000000000005A0, 2)
    assert T.default_spte_decoder("v5.0", "ept") is None
    assert T.default_spte_decoder("latest", None) is None


def test_summary_and_numpy():
    res = _p("trace_ftrace_v6.txt")
    s = T.summary(res)
    assert "kvm_mmu_prepare_zap_page" in s and "role distribution" in s and "zap reasons" in s
    arr = T.to_numpy(res)
    assert arr.shape == (len(res.records),) and arr["role"].max() > 0


def test_cli_trace(capsys):
    assert cli.main(["trace", os.path.join(DATA, "trace_ftrace_v6.txt"), "--mode", "ept",
                     "--era", "v6.14"]) == 0
    out = capsys.readouterr().out
    assert "kvm_mmu_prepare_zap_page" in out and "role 0x00001783" in out
    # text carries no kernel version: the era is required
    assert cli.main(["trace", os.path.join(DATA, "trace_ftrace_v6.txt")]) == 1
    assert "give the role era" in capsys.readouterr().err
    assert cli.main(["trace", os.path.join(DATA, "trace_malformed.txt"), "--summary", "--era", "latest"]) == 0
    cap = capsys.readouterr()
    assert "malformed" in cap.out and "trace_malformed.txt:2: malformed line skipped" in cap.err
    assert cli.main(["trace", os.path.join(DATA, "nope.txt")]) == 1
    assert cli.main(["trace", os.path.join(DATA, "trace_v5_0.txt"), "--era", "v9.9"]) == 1


def test_cli_role(capsys):
    assert cli.main(["role", "decode", "0xa714", "--era", "v5.1"]) == 0
    assert "impossible" in capsys.readouterr().out
    assert cli.main(["role", "eras"]) == 0
    assert "has_4_byte_gpte" in capsys.readouterr().out
    assert cli.main(["role", "prevroots", "--era", "v5.0", "--rounds", "3"]) == 0
    assert "L2->L1 hits 0/3" in capsys.readouterr().out
    assert cli.main(["role", "decode", "zz"]) == 1

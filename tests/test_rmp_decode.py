"""``rmp decode`` / decode_dump(): the kernel's RMP dump lines, every format, in pasted logs."""
import io

import numpy as np
import pytest

from pykvmmu.cli import main
from pykvmmu.commands import rmp as cmd
from pykvmmu.rmp import (BOOKKEEPING, PageState, RmpEntry, RmpError, RmpTable, decode,
                         decode_dump, make_lo, page_state_raw)

# A 2M guest page (ASID 5, GPA 0x400000), validated at the 2M entry, as v6.9+ prints it.
LO_2M = make_lo(assigned=1, pagesize=1, gpa=0x400, asid=5, validated=1)
HI = 0x1F


def test_worked_value():
    assert LO_2M == 0x4028000000400003          # bit 62 | 5 << 51 | 0x400 << 12 | 2M | assigned
    e = RmpEntry(LO_2M, HI)
    assert (e.assigned, e.pagesize, e.gpa, e.asid, e.validated, e.vmpl) == (
        1, 1, 0x400, 5, 1, (0x1F, 0, 0, 0))


def test_mainline_dmesg_lines():
    log = f"""\
[ 8123.123456] SEV-SNP: PFN 0x1234200, RMP entry: [{LO_2M:#018x} - {HI:#018x}]
[ 8123.123460] kvm_amd: SEV-SNP guest PFN 0x1, [0x1 - 0x2] (not a dump line: skipped)
[ 8124.000001] SEV-SNP: PFN 0x5005 unassigned, dumping non-zero entries in 2M PFN region: [0x5000 - 0x5200]
[ 8124.000002] SEV-SNP: PFN: 0x5000, [0x0000000000000f19 - 0x0000000000000000]
[ 8124.000003] SEV-SNP: PFN: 0x5003, [0x0000000000000001 - 0x0000000000000000]
[ 8125.1] SEV-SNP: Failed to read RMP entry for PFN 0xfffffffff, error -14
[ 8125.2] SEV-SNP: RMPUPDATE failed for PFN 3f000, pg_level: 2, ret: 4
"""
    recs = decode_dump(log)
    assert [(r.line, r.kind, r.pfn) for r in recs] == [
        (1, "entry", 0x1234200), (3, "region-start", 0x5005),
        (4, "region", 0x5000), (5, "region", 0x5003), (6, "error", 0xfffffffff),
        (7, "rmpupdate-failed", 0x3f000)]
    assert (recs[0].lo, recs[0].hi, recs[0].fmt) == (LO_2M, HI, "v6.9+")
    assert (recs[1].lo, recs[1].hi) == (0x5000, 0x5200)
    e = recs[2].entry                          # 2M-aligned entry: 0x1e3 = 483 sub-pages + assigned
    assert (e.assigned, e.pagesize, e.subpage_count) == (1, 0, 483)
    assert (recs[4].lo, recs[5].lo, recs[5].hi) == (-14, 4, 2)


def test_v10_v11_patch_format_prints_high_first():
    log = f"""\
Dec 01 10:00:00 host kernel: SEV-SNP: RMP entry for PFN 0x81200: [high={HI:#018x} low={LO_2M:#018x}]
Dec 01 10:00:01 host kernel: SEV-SNP: No assigned RMP entry for PFN 0x90001, but the 2MB region contains populated RMP entries, e.g.: PFN 0x90000: [high=0x0000000000000000 low=0x0000000000000009]
Dec 01 10:00:02 host kernel: SEV-SNP: No populated RMP entries in the 2MB region containing PFN 0x77777
"""
    recs = decode_dump(log)
    assert [(r.kind, r.pfn, r.lo, r.hi) for r in recs] == [
        ("entry", 0x81200, LO_2M, HI), ("region", 0x90000, 9, 0), ("none", 0x77777, None, None)]
    assert recs[0].fmt == "v10-v11 patches"


def test_rfc_formats_use_a_physical_address():
    log = f"""\
[  12.5] RMPEntry paddr 0x81200000: [high={HI:#018x} low={LO_2M:#018x}]
[  12.6] RMPEntry paddr 0x81200000 [assigned=1 immutable=0 pagesize=1 gpa=0x400 asid=5 vmsa=0 validated=1]
[  12.7] RMPEntry paddr 0x81201000 {HI:016x} {LO_2M:016x}
"""
    recs = decode_dump(log)
    assert [(r.kind, r.pfn) for r in recs] == [("entry", 0x81200), ("fields", 0x81200),
                                               ("entry", 0x81201)]
    assert recs[0].lo == recs[1].lo == recs[2].lo == LO_2M and recs[1].hi is None
    assert recs[2].hi == HI


def test_the_model_dump_roundtrips():
    """The table's dump_rmpentry() lines (the kernel's format) decode back to its entries."""
    t = RmpTable(np.zeros(BOOKKEEPING + 16 * 2048, np.uint8))
    t.rmpupdate(512, gpa=0x400000, assigned=1, pagesize=1, asid=5)
    t.rmpupdate(1030, gpa=0x9000, assigned=1, asid=6)
    t.rmpupdate(1031, gpa=0xa000, assigned=1, asid=6, immutable=1)
    lines = t.dump_rmpentry(700) + t.dump_rmpentry(1029) + t.dump_rmpentry(1031)
    log = "\n".join(f"[{100 + i}.000000] SEV-SNP: {x}" for i, x in enumerate(lines))
    recs = [r for r in decode_dump(log) if r.entry is not None]
    assert [r.pfn for r in recs] == [700, 1024, 1030, 1031, 1031]
    for r in recs:
        assert r.entry == t.entry(r.pfn)
    f = decode(np.array([r.lo for r in recs], np.uint64), np.array([r.hi for r in recs], np.uint64))
    assert list(f["asid"]) == [0, 0, 6, 6, 6] and list(f["immutable"]) == [0, 0, 0, 1, 1]


def test_bad_values_and_nothing_found():
    with pytest.raises(RmpError, match="line 1: asid=1024"):
        decode_dump("RMPEntry paddr 0x1000 [assigned=1 immutable=0 pagesize=0 gpa=0x1 asid=1024 "
                    "vmsa=0 validated=0]")
    # a 17-digit value is not a 64-bit quadword: the line is not an RMP dump line
    assert decode_dump("PFN 0x1, RMP entry: [0x10000000000000000 - 0x0]") == []
    assert decode_dump("") == []


def test_cli_decode(tmp_path, capsys, monkeypatch):
    log = tmp_path / "dmesg.txt"
    log.write_text(f"[1.0] SEV-SNP: PFN 0x1234200, RMP entry: [{LO_2M:#018x} - {HI:#018x}]\n"
                   "[1.1] SEV-SNP: PFN 0x1234201 unassigned, dumping non-zero entries in 2M PFN "
                   "region: [0x1234200 - 0x1234400]\n"
                   "[1.2] SEV-SNP: Failed to read RMP entry for PFN 0xfffffffff, error -14\n")
    assert main(["rmp", "decode", str(log)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"line 1: PFN 0x1234200: dumped entry (v6.9+): lo={LO_2M:#018x} "
                      f"hi={HI:#018x}")
    assert out[1].startswith("  assigned=1 pagesize=2M immutable=0 subpage_count=0 gpa=0x400000 "
                             "asid=5 vmsa=0 validated=1")
    assert out[2] == "  firmware page state: GUEST_VALID; a 2M page's 2M-aligned entry"
    assert page_state_raw(LO_2M) == PageState.GUEST_VALID
    assert "unassigned; non-zero entries of its 2M region [0x1234200 - 0x1234400)" in out[3]
    assert "error -14" in out[4]
    monkeypatch.setattr("sys.stdin", io.StringIO("nothing here\n"))
    assert main(["rmp", "decode"]) == 1
    assert "no RMP dump lines found" in capsys.readouterr().out
    assert main(["rmp", "decode", str(tmp_path / "missing")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_decode_lines_fields_format():
    lines = cmd.decode_lines("RMPEntry paddr 0x5000 [assigned=1 immutable=1 pagesize=0 gpa=0x0 "
                             "asid=0 vmsa=0 validated=0]")
    assert lines[0] == "line 1: PFN 0x5: decoded-fields line (RFC patches): lo=0x0000000000000005 " \
                       "hi=unknown (not printed)"
    assert "not printed" in lines[1] and "vmpl" not in lines[1]
    assert "FIRMWARE" in lines[2]

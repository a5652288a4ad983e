"""``pykvmmu decode --arch``: raw hardware paging entries, hex words, no memtype on non-leaves."""
import pytest

from pykvmmu.cli import main
from pykvmmu.errors import PykvmmuError
from pykvmmu.walk import WalkError, decode_entry


def run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_bare_word_is_hex(capsys):
    rc, out, _ = run(capsys, "decode", "--arch", "x86-64", "100000000")
    assert rc == 0 and out.startswith("0x0000000100000000 x86-64 level 1 PTE (not present)")
    rc, out2, _ = run(capsys, "decode", "--arch", "x86-64", "0x100000000")
    assert out2 == out
    # the SPTE view reads the same hex words
    rc, a, _ = run(capsys, "decode", "8600000012345b77", "--mode", "ept")
    rc, b, _ = run(capsys, "decode", "0x8600000012345b77", "--mode", "ept")
    assert rc == 0 and a == b


def test_leaf_has_memtype_nonleaf_has_none(capsys):
    rc, out, _ = run(capsys, "decode", "--arch", "x86-64", "--level", "1", "8000000012345077")
    assert "memory type: PAT entry 2 (PAT:PCD:PWT = 010)" in out
    assert "XD=1" in out and "page address 0x12345000" in out
    rc, out, _ = run(capsys, "decode", "--arch", "x86-64", "--level", "2", "12345077")
    assert "memory type" not in out and "table address 0x12345000" in out and "PS=0" in out
    rc, out, _ = run(capsys, "decode", "--arch", "ept", "--level", "4", "9007")
    assert "memory type" not in out and "IPAT" not in out
    rc, out, _ = run(capsys, "decode", "--arch", "ept", "--level", "1", "9077")
    assert "memory type: WB (6) ignore-PAT" in out


def test_pat_index_bits():
    assert decode_entry("x86-64", 0x1000 | 1 | 8 | 16 | 128, 1).memtype.startswith("PAT entry 7")
    # in a 2M entry PAT is bit 12, bit 7 is PS
    d = decode_entry("x86-64", 0x200000 | 1 | 128 | (1 << 12), 2)
    assert d.leaf and d.page_size == 2 << 20 and d.memtype.startswith("PAT entry 4")
    assert d.address == 0x200000 and d.reserved == 0


def test_reserved_bits_and_huge_alignment():
    assert decode_entry("x86-64", 0x200000 | 1 | 128 | (1 << 13), 2).reserved == 1 << 13
    assert decode_entry("x86-64", 0x40000000 | 1 | 128 | (1 << 29), 3).reserved == 1 << 29
    assert decode_entry("x86-64", 0x40000000 | 1 | 128, 3, gbpages=False).reserved == 128
    assert decode_entry("x86-64", 0x1000 | 1 | 128, 4).reserved == 128
    assert decode_entry("x86-64", (1 << 48) | 1, 1, maxphyaddr=48).reserved == 1 << 48
    # PAE PDPTE register: bits 1-2, 5-8 and 63 reserved
    assert decode_entry("pae", 0x2001 | 2 | 0x20 | (1 << 63), 3).reserved == 2 | 0x20 | (1 << 63)
    # 32-bit 4M: PSE-40 address bits, bit 21 always reserved
    d = decode_entry("32bit", 0x00C00000 | 0x81 | (0b11 << 13), 2)
    assert d.address == 0x3_00C0_0000 and d.reserved == 0
    assert decode_entry("32bit", 0x00C00081 | (1 << 21), 2).reserved == 1 << 21
    assert decode_entry("32bit", 0x00C00081 | (1 << 17), 2, maxphyaddr=36).reserved == 1 << 17
    # EPT: bad memory type and W-only are misconfigurations
    assert decode_entry("ept", 0x9000 | 7 | (2 << 3), 1).reserved == 7 | (2 << 3)
    assert decode_entry("ept", 0x9002, 1).reserved == 2
    assert decode_entry("ept", 0x9004, 1, execonly=False).reserved == 4
    assert decode_entry("ept", 0x9004, 1).reserved == 0
    assert decode_entry("ept", 0x9007 | (1 << 3), 4).reserved == 1 << 3


def test_32bit_words_are_32_bits_and_levels_checked(capsys):
    with pytest.raises(PykvmmuError, match="32 unsigned bits"):
        decode_entry("32bit", 1 << 32, 1)
    with pytest.raises(WalkError, match="levels 1..3"):
        decode_entry("pae", 1, 4)
    with pytest.raises(WalkError, match="arch"):
        decode_entry("arm64", 1, 1)
    rc, _, err = run(capsys, "decode", "--arch", "32bit", "100000000")
    assert rc == 1 and "32 unsigned bits" in err
    with pytest.raises(SystemExit):
        main(["decode", "--arch", "ept", "0xzz"])


def test_walk_command_replays_observed_gptes(capsys):
    rc, out, _ = run(capsys, "walk", "5000", "2", "2007:4", "3007:3", "4007:2", "9007:1",
                     "--cr3", "1000", "--events")
    assert rc == 0
    assert "-> gfn 0x9 level 1 pte_access wux dirty" in out
    assert "sp l1 gfn 0x4 child  0x00003701" in out
    assert "kvm_mmu_set_dirty_bit: gpa 4028" in out
    # an NX 2M leaf fetched: permission fault with F, no shadow pages
    rc, out, _ = run(capsys, "walk", "ffffffff810551b8", "10", "2929067", "292a063",
                     "8000000002a000e3")
    assert rc == 0 and "#PF error_code 0x11 (P|F) permission at level 2" in out
    assert " sp " not in out
    # a level that does not match the walk is refused
    rc, _, err = run(capsys, "walk", "5000", "0", "2007:3", "--cr3", "1000")
    assert rc == 1 and "observed level 3" in err
    # the observed walker_error is checked
    rc, out, _ = run(capsys, "walk", "5000", "6", "2007", "3007", "--cr3", "1000",
                     "--walker-error", "6")
    assert rc == 0 and "no-memslot at level 2" in out
    rc, _, err = run(capsys, "walk", "5000", "6", "2007", "3007", "--cr3", "1000",
                     "--walker-error", "7")
    assert rc == 1 and "walker_error=0x7" in err
    # nested EPT from an EPTP
    rc, out, _ = run(capsys, "walk", "0", "4", "2007", "3007", "4007", "9031", "--ept", "105e")
    assert rc == 0 and "gfn 0x9" in out and "0x00020704" in out


def test_walk_demo_runs():
    from pykvmmu.commands.walk import demo
    lines = []
    demo(lines.append)
    text = "\n".join(lines)
    assert "role 0x3704" in text and "direct l1 gfn 0x600 0x35b1" in text
    assert "exit qualification 0x21" in text and "(P|F) permission at level 2" in text

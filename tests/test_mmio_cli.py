"""CLI: pykvmmu mmio check / make, decode of MMIO SPTEs, and the demo scene."""
from pykvmmu.cli import main
from pykvmmu.commands import mmio as cmd


def test_check_npt_52_caching_off(capsys):
    assert main(["mmio", "check", "--mode", "npt", "--maxphyaddr", "52"]) == 0
    out = capsys.readouterr().out
    assert "value=0x0000000000000000 mask=0x0000000000000000 access_mask=0x6" in out
    assert "caching     off" in out and "value_zero_disables_caching" in out
    assert "52-bit MAXPHYADDR" in out


def test_check_explicit_masks_report_rules(capsys):
    rc = main(["mmio", "check", "--mode", "npt", "--value", "0x8000000000001",
               "--mask", "0x8000000000801", "--access-mask", "6"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "mask_outside_SPTE_MMIO_ALLOWED_MASK" in out          # kernel check that fired
    assert "mask_overlaps_mmu_present" in out and "bits 11" in out  # strict rule


def test_check_presets_ok(capsys):
    for mode in ("npt", "npt-sme", "shadow", "ept", "ept-xo", "tdx"):
        assert main(["mmio", "check", "--mode", mode]) == 0, mode
    out = capsys.readouterr().out
    assert "caching     on" in out and "every rule holds" in out
    # v5.10-5.12 on a 52-bit host: the tag-only value keeps "caching" on, but the SPTE has no
    # reserved bit, so the strict validator objects (the kernel installed such SPTEs anyway).
    assert main(["mmio", "check", "--mode", "npt", "--profile", "v5.10", "--maxphyaddr", "52"]) == 1
    out = capsys.readouterr().out
    assert "0x0030000000000000" in out and "legacy_value_not_reserved_present" in out
    assert "value_matches_nonpresent" not in out


def test_make_and_decode(capsys):
    assert main(["mmio", "make", "0xfee00", "--mode", "ept", "--generation", "0x12345"]) == 0
    out = capsys.readouterr().out
    assert "0x12300000fee0022e" in out and "kind      : mmio" in out
    assert main(["decode", "0x7ff80000123457ff", "--mode", "npt"]) == 0
    out = capsys.readouterr().out
    assert "gfn       : 0x12345" in out and "generation: 0x7ffff" in out and "access    : 0x6" in out


def test_bad_input_is_an_error(capsys):
    assert main(["mmio", "make", str(1 << 40), "--mode", "ept"]) == 1
    assert "gfn" in capsys.readouterr().err


def test_demo_scene():
    lines = []
    cmd.demo(lines.append)
    text = "\n".join(lines)
    assert cmd.DEMO_ORDER == 20
    assert "0x12300000fee0022e" in text and "0x00082f8000abc00f" in text
    assert "zapped (kvm_mmu_zap_all_fast)" in text and "update_in_progress" in text

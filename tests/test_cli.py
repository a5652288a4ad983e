"""The core CLI: decode, config, make-spte, demo, and how errors are reported."""
import subprocess
import sys

import pytest

from pykvmmu.cli import main, run_demo


def test_decode_prints_fields(capsys):
    assert main(["decode", "0x8600000012345b77", "--mode", "ept"]) == 0
    out = capsys.readouterr().out
    assert "kind      : present" in out and "pfn       : 0x12345" in out
    assert "memtype   : WB +IPAT" in out and "RWX" in out


def test_decode_mmio_and_profile(capsys):
    assert main(["decode", "0x12300000FEE0022E", "--mode", "ept"]) == 0
    out = capsys.readouterr().out
    assert "kind      : mmio" in out and "0xfee00" in out and "0x12345" in out
    assert main(["decode", "0x0010000012345c77", "--mode", "ept-noad", "--profile", "v5.10"]) == 0
    assert "profile=v5.10" in capsys.readouterr().out


def test_config_prints_every_mask_in_hex(capsys):
    assert main(["config", "--mode", "npt-sme"]) == 0
    out = capsys.readouterr().out
    for name in ("present_mask", "me_value", "mmio_mask", "base_addr_mask", "FROZEN_SPTE"):
        assert name in out
    assert "0x0000800000000000" in out          # the C-bit (47) as me_value/me_mask


def test_make_spte_worked_value(capsys):
    assert main(["make-spte", "0x12345", "--mode", "ept"]) == 0
    assert "0x8600000012345b77" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["decode", "0x1", "--level", "7"], "level=7"),
    (["decode", "0x1", "--profile", "v2.6x"], "v2.6x"),
    (["make-spte", "0x10000000000", "--mode", "ept"], "pfn=0x10000000000"),
])
def test_errors_are_reported_not_raised(capsys, argv, needle):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("pykvmmu: error:") and needle in err


def test_demo_covers_every_scene():
    lines = []
    assert run_demo(lines.append) == 0
    text = "\n".join(lines)
    for header in ("SPTE engine", "MMIO", "prev_roots", "RMP"):
        assert header in text
    assert "0x8600000012345b77" in text


def test_output_into_a_closed_pipe_is_quiet(tmp_path):
    import os

    import pykvmmu
    # Run the same pykvmmu this process imported (installed or built in place), not ./pykvmmu.
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(pykvmmu.__file__)))
    p = subprocess.run(f"{sys.executable} -m pykvmmu demo | head -1", shell=True, cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.stdout.startswith("== SPTE engine")
    assert "Traceback" not in p.stderr


def test_role_hash_occupancy(capsys, tmp_path):
    out_file = tmp_path / "occ.png"
    assert main(["role", "hash", "--plot", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "4096 buckets" in out and "chi-square" in out
    written = out.strip().splitlines()[-1].split("wrote ", 1)[1]
    assert written.endswith((".png", ".txt"))
    with open(written, "rb") as f:
        assert f.read(8)[:4] in (b"\x89PNG", b"# mm")

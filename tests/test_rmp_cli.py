"""The ``pykvmmu rmp`` commands and the RMP demo scene."""
from pykvmmu.cli import main
from pykvmmu.commands import rmp as cmd


def test_create_update_show(tmp_path, capsys):
    path = str(tmp_path / "rmp.bin")
    assert main(["rmp", "create", "--memory", "64M", path]) == 0
    assert main(["rmp", "update", "--table", path, "--pfn", "0x200", "--gpa", "0x400000",
                 "--asid", "5", "--level", "2"]) == 0
    assert main(["rmp", "update", "--table", path, "--pfn", "0x201", "--asid", "5"]) == 1
    capsys.readouterr()
    assert main(["rmp", "show", "--table", path, "0x201", "0x5", "0x100000"]) == 0
    out = capsys.readouterr().out
    assert "PFN 0x201, RMP entry:" in out and "level=2M" in out
    assert "GUEST_INVALID" in out and "512 of 512 entries assigned" in out
    assert "PFN 0x5 unassigned, dumping non-zero entries in 2M PFN region" in out
    assert "beyond the RMP" in out and "DEFAULT" in out


def test_show_errors(tmp_path, capsys):
    assert main(["rmp", "show", "--table", str(tmp_path / "missing.bin"), "0"]) == 1
    assert "cannot open" in capsys.readouterr().err


def test_demo_scene():
    lines = []
    cmd.demo(lines.append)
    text = "\n".join(lines)
    assert cmd.DEMO_ORDER == 50
    assert "psmash" in text and "SIGBUS" in text and "SPLIT" in text and "#PF" in text

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
    assert "dumped entry (v6.9+): lo=0x0028000000402001 hi=0x000000000000001f" in text


def test_create_is_atomic_and_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "rmp.bin"
    path.write_bytes(b"keep me")
    assert main(["rmp", "create", "--memory", "64M", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--force" in err
    assert path.read_bytes() == b"keep me"
    assert main(["rmp", "create", "--memory", "64M", "--force", str(path)]) == 0
    assert path.stat().st_size == 8192 + 0x44000
    assert [p.name for p in tmp_path.iterdir()] == ["rmp.bin"]


def test_file_errors_are_one_line(tmp_path, capsys):
    assert main(["rmp", "create", "--memory", "1G", "/nonexistent/dir/x"]) == 1
    err = capsys.readouterr().err
    assert err == ("pykvmmu: error: /nonexistent/dir/x: cannot create a file in its directory "
                   "(No such file or directory)\n")
    assert main(["rmp", "show", "--table", str(tmp_path), "0"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_show_uses_the_header(tmp_path, capsys):
    path = str(tmp_path / "seg.rmp")
    assert main(["rmp", "create", "--memory", "2G", "--segmented", "--seg-shift", "30",
                 path]) == 0
    assert "segmented shift=30" in capsys.readouterr().out
    assert main(["rmp", "update", "--table", path, "--pfn", "0x40200", "--gpa", "0x200000",
                 "--asid", "3", "--level", "2"]) == 0
    assert main(["rmp", "show", "--table", path, "0x40201"]) == 0   # no layout options
    assert "level=2M" in capsys.readouterr().out
    assert main(["rmp", "show", "--table", path, "--seg-shift", "36", "0"]) == 1
    assert "says seg_shift = 30" in capsys.readouterr().err
    flat = str(tmp_path / "flat.rmp")
    assert main(["rmp", "create", "--memory", "64M", flat]) == 0
    assert main(["rmp", "show", "--table", flat, "--segmented", "0"]) == 1   # was: exit 0
    assert "says segmented = False" in capsys.readouterr().err


def test_headerless_tables(tmp_path, capsys):
    from pykvmmu.rmp import RmpTable
    raw = tmp_path / "old.bin"
    t = RmpTable.create(64 << 20)
    t.rmpupdate(0x200, gpa=0x400000, assigned=1, pagesize=1, asid=5)
    t.save(raw, headerless=True)
    assert main(["rmp", "show", "--table", str(raw), "0x201"]) == 1
    assert "--headerless" in capsys.readouterr().err
    assert main(["rmp", "show", "--table", str(raw), "--headerless", "--memory", "64M",
                 "0x201"]) == 0
    assert "512 of 512 entries assigned" in capsys.readouterr().out
    os_trunc = raw.stat().st_size - 4096
    import os
    os.truncate(raw, os_trunc)
    assert main(["rmp", "show", "--table", str(raw), "--headerless", "--memory", "64M",
                 "0x201"]) == 1
    assert "truncated" in capsys.readouterr().err
    assert main(["rmp", "show", "--table", str(raw), "--memory", "64M", "0"]) == 1
    assert "only with --headerless" in capsys.readouterr().err

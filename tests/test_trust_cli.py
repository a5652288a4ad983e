"""Issue 11, class 7: the command line under stress.  Bad values and file errors give one clear
line and a non-zero exit; Ctrl-C gives one line (fuzz: its summary) and exit 130, never a
traceback."""
import os
import signal
import subprocess
import sys

import pytest

from pykvmmu import cli

@pytest.mark.parametrize("argv,rc,needle", [
    (["role", "hash", "--vms", "0"], 2, "--vms"),
    (["role", "prevroots", "--rounds", "-1"], 2, "--rounds"),
    (["trace", "--mode", "bogus", __file__], 1, "--mode 'bogus'"),
    (["trace", "--profile", "v1.0", __file__], 1, "profile='v1.0'"),
    (["trace", "/nonexistent/trace.txt"], 1, "No such file"),
    (["role", "hash", "--plot", "/nonexistent/dir/x.png"], 1, "/nonexistent/dir"),
    (["decode", "0x1", "--level", "9"], 1, "level=9"),
    (["make-spte", "0x1", "--level", "0"], 1, "level=0"),
    (["mmio", "make", "0x1", "--access", "99"], 1, "access="),
    (["config", "--mode", "ept", "--maxphyaddr", "99"], 1, "maxphyaddr=99"),
    (["role", "hash", "--seed", "-1"], 1, "seed=-1"),
    (["fuzz", "spte", "--time", "-1"], 2, "--time"),
    (["fuzz", "spte", "--time", "nan"], 2, "--time"),
    (["fuzz", "spte", "--runs", "0"], 2, "--runs"),
    (["fuzz", "spte", "--corpus", "/nonexistent/corpus"], 2, "not a directory"),
    (["fuzz", "spte", "--out", __file__ + "/sub"], 2, "not a directory"),
])
def test_bad_values_one_line_nonzero(argv, rc, needle, capsys):
    try:
        got = cli.main(argv)
    except SystemExit as e:          # argparse: usage line + one error line, exit 2
        got = e.code
    err = capsys.readouterr().err
    assert got == rc
    assert needle in err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if rc == 1:
        assert len(lines) == 1 and lines[0].startswith("pykvmmu: error: ")


def _fuzz_interrupted(target, out_dir):
    """Start a fuzz run, wait for its first progress line (so that the interpreter is up and
    fuzzing), press Ctrl-C."""
    # the pykvmmu these tests imported (installed in CI), from a directory no source tree shadows
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(cli.__file__))))
    p = subprocess.Popen([sys.executable, "-m", "pykvmmu", "fuzz", target, "--time", "120",
                          "--out", str(out_dir)], cwd=str(out_dir.parent), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stderr.readline()
    assert first.startswith(f"[{target}/"), first
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, first + err


@pytest.mark.parametrize("target", ["spte", "vm"])
def test_ctrl_c_during_fuzz_prints_the_summary_and_exits_130(target, tmp_path):
    rc, out, err = _fuzz_interrupted(target, tmp_path)
    assert rc == 130
    assert "Traceback" not in err
    summary = [ln for ln in out.splitlines() if ln.startswith(f"{target}: ")]
    assert len(summary) == 1 and summary[0].endswith("(interrupted)")
    assert "executions" in summary[0]


def test_ctrl_c_elsewhere_one_line_130(monkeypatch, capsys):
    from pykvmmu import sphash

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(sphash, "realistic_gfns", interrupted)
    assert cli.main(["role", "hash"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["pykvmmu: interrupted"]

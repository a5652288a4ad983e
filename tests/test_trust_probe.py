"""Issue 11: the probe of the public API (tools/probe_api.py, about 4000 bad inputs over every
module, the RMP included) finds no silent accept, no unclear or foreign exception, no crash and
no half-applied call."""
import os
import subprocess
import sys

import pykvmmu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(pykvmmu.__file__)))


def _probe(tmp_path, **env):
    """Run the probe on the pykvmmu these tests imported (the installed package in CI, or an
    in-place build), from a directory where no source tree shadows it."""
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "probe_api.py"), "-v"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=_PKG_PARENT, **env))
    assert p.returncode == 0, p.stderr[-2000:]
    return p


def _counts(p):
    counts = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if line.startswith("inputs tried:"):
            counts["tried"] = int(parts[-1])
        elif line.startswith("  ") and len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def test_probe_all_clear(tmp_path):
    p = _probe(tmp_path)
    counts = _counts(p)
    assert counts["tried"] >= 4000
    assert counts["clear"] == counts["tried"], p.stdout[:4000]
    for cat in ("unclear", "other", "silent", "crash", "half", "setup"):
        assert counts[cat] == 0, (cat, p.stdout[:4000])


#: modules the probe must cover, with a floor on their cases (so a module cannot drop out)
MODULES = {"config": 150, "spte": 400, "mmio": 200, "memslots": 50, "role": 200, "sphash": 50,
           "wflood": 50, "prevroots": 40, "private": 150, "attrs": 100, "gmem": 150, "vm": 300,
           "profile": 20, "fuzz": 20, "rmp": 350, "vcpu": 100, "perm": 100, "walk": 200,
           "shadow": 150, "audit": 120, "trace": 70, "kvmrun": 250, "record": 35, "isa": 4,
           "kfuzz": 60}


def test_probe_covers_every_module(tmp_path):
    p = _probe(tmp_path)
    seen = {}
    for line in p.stdout.splitlines():
        if line.startswith("  [") and "]" in line:
            mod, _, rest = line.strip()[1:].partition("] ")
            seen[mod] = dict(kv.split("=") for kv in rest.split())
    for mod, floor in MODULES.items():
        assert mod in seen, (mod, p.stdout[-3000:])
        assert set(seen[mod]) == {"clear"}, (mod, seen[mod])
        assert int(seen[mod]["clear"]) >= floor, (mod, seen[mod])


def test_probe_sees_every_outcome(tmp_path):
    """Known-bad synthetic cases are classified as what they are, a crash included (the child
    dies, is counted and restarted)."""
    p = _probe(tmp_path, PYKVMMU_PROBE_SELFTEST="1")
    counts = _counts(p)
    for cat in ("silent", "other", "unclear", "half", "crash"):
        assert counts[cat] == 1, (cat, p.stdout[:3000])
    assert counts["clear"] == counts["tried"] - 5
    assert "[selftest] clear=1 crash=1 half=1 other=1 silent=1 unclear=1" in p.stdout

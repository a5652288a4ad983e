"""Issue 14: one C crossing per scalar call.  Every scalar function the benchmark times
(bench/test_bench_scalar.py: every public scalar SPTE, MMIO, role, RMP and private call) is
called on its benchmark inputs under a profiler that counts the calls into the C core (cffi
``lib.kvmmu_*`` functions): none makes more than one (the policy functions, role tables and
mask arithmetic that stay in Python make none)."""
import os
import sys

import pytest

from pykvmmu import mmio as M
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig



def _bench_cases() -> list:
    """bench/test_bench_scalar.py's CASES, imported with the bench's conftest (whose module
    name this suite's conftest holds while the tests run)."""
    import importlib.util
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
    saved = {n: sys.modules.get(n) for n in ("conftest", "test_bench_scalar")}
    try:
        for name in saved:
            spec = importlib.util.spec_from_file_location(name, os.path.join(bench, name + ".py"))
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
        return sys.modules["test_bench_scalar"].CASES
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


CASES = _bench_cases()


def crossings(f, *a, **kw) -> list:
    """The C core functions one call of f(*a, **kw) enters, in order."""
    seen = []

    def prof(frame, event, arg):
        if event == "c_call" and getattr(arg, "__name__", "").startswith("kvmmu_"):
            seen.append(arg.__name__)
    sys.setprofile(prof)
    try:
        f(*a, **kw)
    finally:
        sys.setprofile(None)
    return seen


def test_the_counter_sees_crossings():
    cfg = MmuConfig.ept()
    assert len(crossings(S.is_mmio_spte, cfg, 5)) == 1
    assert len(crossings(lambda: (S.is_mmio_spte(cfg, 5), S.is_mmio_spte(cfg, 6)))) == 2


@pytest.mark.parametrize("c", CASES, ids=lambda c: c["group"])
def test_every_scalar_call_crosses_into_c_at_most_once(c):
    n = {len(crossings(c["core"], *a, **c["kw"])) for a in c["args"][:64]}
    assert n <= {0, 1}, (c["group"], n)


def test_decode_of_an_mmio_spte_is_one_crossing():
    for cfg in (MmuConfig.ept(), MmuConfig.npt(phys_bits=39, cache_bits=44)):
        for s in (cfg.mmio_value, M.make_mmio_spte(cfg, 0xFEE00, 0, 0x12345)):
            assert S.decode(cfg, s).kind == "mmio"
            assert crossings(S.decode, cfg, s) == ["kvmmu_spte_decode"]

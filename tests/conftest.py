import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=300, deadline=None)
settings.register_profile("ci", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("sanitize", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
_default = "sanitize" if os.environ.get("PYKVMMU_SANITIZED") == "1" else (
    "ci" if os.environ.get("CI") else "dev")
settings.load_profile(os.environ.get("PYKVMMU_HYPOTHESIS", _default))


def pytest_terminal_summary(terminalreporter):
    """Say which hand-written kernels this CPU (or PYKVMMU_ISA) kept the run from exercising
    (tests/test_isa.py runs each kernel's equality test at every level the CPU supports)."""
    try:
        from pykvmmu import isa
    except ImportError:          # no built core: nothing ran
        return
    cpu = isa.LEVELS[isa.cpu_level()]
    missed = [(k, lv) for k, lv, _t in isa.KERNELS if isa.LEVELS[lv] > cpu]
    capped = [(k, lv) for k, lv, _t in isa.KERNELS
              if isa.LEVELS[lv] > isa.DEFAULT and isa.LEVELS[lv] <= cpu]
    tr = terminalreporter
    tr.section("hand-written kernels (pykvmmu.isa)")
    tr.write_line(f"CPU level {isa.cpu_level()}; levels tested: {', '.join(isa.supported_levels())}")
    if not missed:
        tr.write_line(f"every hand-written kernel ({len(isa.KERNELS)}) was exercisable on this CPU")
    for k, lv in missed:
        tr.write_line(f"NOT exercised on this CPU: {k} (needs {lv})")
    for k, lv in capped:
        tr.write_line(f"default calls capped by PYKVMMU_ISA: {k} (needs {lv}; test_isa.py still "
                      "runs it through _isa_copy)")

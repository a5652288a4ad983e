"""CI hook for the fuzzing harness: replay every seed-corpus file of every target, then run
every target for a short fixed budget (the built-in engine, fixed seed; hypothesis too for
the stateful targets).  Runs in the normal suite and in the ASan+UBSan run (make sanitize)."""
import os

import pytest

from pykvmmu import fuzz as F

ROOT = F.SEED_CORPUS
SANITIZED = os.environ.get("PYKVMMU_SANITIZED") == "1"
#: seconds per target (total stays well under 40 s for the seven targets)
BUDGET = float(os.environ.get("PYKVMMU_FUZZ_BUDGET", "1.5" if SANITIZED else "2"))

CORPUS = sorted((name, fn) for name in F.TARGETS
                for fn in (os.listdir(os.path.join(ROOT, name))
                           if os.path.isdir(os.path.join(ROOT, name)) else []))


def test_every_target_has_a_seed_corpus():
    for name in F.TARGETS:
        assert F.load_corpus(name, ROOT), f"fuzz/corpus/{name}/ is empty"


@pytest.mark.parametrize("name", list(F.TARGETS))
def test_replay_corpus(name):
    """Every corpus file of the target passes (C core == reference, invariants hold)."""
    files = [fn for n, fn in CORPUS if n == name]
    for fn in files:
        with open(os.path.join(ROOT, name, fn), "rb") as f:
            data = f.read()
        _, fail = F.run_one(F.TARGETS[name], data)
        assert fail is None, f"fuzz/corpus/{name}/{fn}: {fail.message}\n{fail.tb}"


@pytest.mark.parametrize("name", list(F.TARGETS))
def test_short_fuzz_run(name, tmp_path):
    """A short built-in-engine run from the seed corpus finds nothing."""
    st = F.fuzz_random(name, seconds=BUDGET, seed=7, corpus_root=ROOT, out_dir=str(tmp_path),
                       quiet=True, shrink_budget=5.0)
    assert st.execs > 0
    assert not st.failures, "\n".join(f"{f.message}\nreproducer: {p}" for f, p in st.failures)


@pytest.mark.parametrize("name", [n for n, t in F.TARGETS.items() if t.stateful])
def test_short_hypothesis_run(name, tmp_path):
    st = F.fuzz_hypothesis(name, seconds=BUDGET / 2, max_execs=150, seed=7, corpus_root=ROOT,
                           out_dir=str(tmp_path), quiet=True)
    assert st.execs > 0
    assert not st.failures, "\n".join(f"{f.message}\nreproducer: {p}" for f, p in st.failures)

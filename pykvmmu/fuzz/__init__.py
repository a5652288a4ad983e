"""Fuzzing harness: byte-driven targets that run the C core and the pure-Python reference
side by side and check bit-for-bit agreement and the engines' invariants.

A *target* is a function ``f(data: bytes)`` that turns fuzzer bytes into a valid call
sequence through :class:`FuzzInput` (a small byte-consuming helper in the spirit of
atheris' ``FuzzedDataProvider``; exhausted input reads as zeros, so every byte string is a
valid input).  It returns normally when everything agrees and raises :class:`Disagreement`
(or any other exception: a crash) otherwise.  ``PykvmmuError`` escaping a target is a bug
too: targets only produce inputs whose validity they know.

Three engines drive the same targets:

* ``random`` (built in, always available): a mutational engine over the seed corpus with
  cheap feedback (each target reports *features*, e.g. which rule fired or which
  configuration it ran; an input that shows a new feature joins the corpus);
* ``hypothesis``: ``st.binary()`` fed to the target, hypothesis shrinking a failure (the
  default for the stateful targets ``rmp`` and ``vm``);
* ``atheris``: coverage-guided libFuzzer (``pip install 'pykvmmu[fuzz]'``; see fuzz/README.md
  for the instrumented build of the C core).

A failure is shrunk (truncate, drop chunks, zero bytes while it still fails the same way)
and written as a raw bytes file; ``pykvmmu fuzz --replay FILE`` replays it.
"""
from __future__ import annotations

from . import (target_spte, target_config, target_mmio, target_role,  # noqa: F401  (registration order)
               target_fault, target_rmp, target_vm, target_rolecalc, target_trace)
from .base import (ENGINES, TARGETS, U64, Disagreement, FuzzInput, Target, UnknownTarget, check,
                   expect_same, get_target, target)
from .corpus import (SEED_CORPUS, corpus_dir, load_corpus, replay, repo_root, target_for_file,
                     write_reproducer)
from .engines import (ATHERIS_HINT, Progress, RunStats, fuzz_atheris, fuzz_hypothesis, fuzz_random)
from .shrinker import Failure, run_one, shrink

__all__ = ["FuzzInput", "Disagreement", "Target", "TARGETS", "target", "run_one", "Failure",
           "shrink", "fuzz_random", "fuzz_hypothesis", "fuzz_atheris", "replay", "corpus_dir",
           "load_corpus", "target_for_file", "ENGINES"]

# Re-exported for users of the single-module harness (pykvmmu.fuzz.X) beyond __all__.
_EXTRA = (U64, UnknownTarget, check, expect_same, get_target, SEED_CORPUS, repo_root, write_reproducer,
          ATHERIS_HINT, Progress, RunStats)

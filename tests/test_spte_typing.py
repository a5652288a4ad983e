"""What a type checker sees of make_spte_batch: the return type follows ``with_wrprot``
(typing.overload; issue 15).  Skipped when mypy, a lint extra, is not installed."""
import os
import textwrap

import pytest

if os.environ.get("PYKVMMU_SANITIZED"):          # a type check has nothing to do with the C core
    pytest.skip("typing checks are not rerun under the sanitizers", allow_module_level=True)
mypy_api = pytest.importorskip("mypy.api")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SNIPPET = """
import numpy as np
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig

cfg = MmuConfig.ept()
pfn = np.zeros(4, np.uint64)
flag: bool = bool(pfn.size)
reveal_type(S.make_spte_batch(cfg, pfn))
reveal_type(S.make_spte_batch(cfg, pfn, with_wrprot=False))
reveal_type(S.make_spte_batch(cfg, pfn, with_wrprot=True))
reveal_type(S.make_spte_batch(cfg, pfn, level=2, with_wrprot=flag))
sptes, wrprot = S.make_spte_batch(cfg, pfn, with_wrprot=True)
"""


def test_make_spte_batch_return_type_follows_with_wrprot(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)                   # the worktree's pykvmmu, not an installed one
    src = tmp_path / "snippet.py"
    src.write_text(textwrap.dedent(SNIPPET))
    out, _err, _rc = mypy_api.run([str(src), "--cache-dir", str(tmp_path / "cache"),
                                   "--config-file", os.path.join(ROOT, "pyproject.toml")])
    lines = [ln for ln in out.splitlines() if "snippet.py" in ln]
    assert not [ln for ln in lines if ": error:" in ln], lines
    revealed = [ln.split("Revealed type is ", 1)[1].strip('"') for ln in lines if "Revealed type" in ln]
    arr = revealed[0]                         # numpy's ndarray type, as this numpy spells it
    assert arr.startswith("numpy.ndarray[")
    pair = f"tuple[{arr}, {arr}]"
    assert revealed == [arr, arr, pair, f"{arr} | {pair}"], revealed

"""What a user's type checker sees: the overloads of default_spte_decoder and the str enums
(run mypy on a snippet; skipped when mypy, a lint extra, is not installed)."""
import os
import textwrap

import pytest

if os.environ.get("PYKVMMU_SANITIZED"):          # a type check has nothing to do with the C core
    pytest.skip("typing checks are not rerun under the sanitizers", allow_module_level=True)
mypy_api = pytest.importorskip("mypy.api")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SNIPPET = """
from pykvmmu import role as R
from pykvmmu.config import MmuConfig
from pykvmmu.trace.report import default_spte_decoder

reveal_type(default_spte_decoder("latest"))
reveal_type(default_spte_decoder("latest", config=MmuConfig.ept()))
reveal_type(default_spte_decoder("latest", "ept"))
a: int = R.hash_64(1, 12, R.HashVariant.PRE_4_7)
b: int = R.hash_64(1, 12, "32bit")
c: str = R.EptRule.MARKER
"""


def _revealed(tmp_path):
    src = tmp_path / "snippet.py"
    src.write_text(textwrap.dedent(SNIPPET))
    out, err, rc = mypy_api.run([str(src), "--cache-dir", str(tmp_path / "cache"),
                                 "--config-file", os.path.join(ROOT, "pyproject.toml")])
    lines = [ln for ln in out.splitlines() if "snippet.py" in ln]
    return rc, lines


def test_overloads_and_enums_as_a_type_checker_sees_them(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)                   # the worktree's pykvmmu, not an installed one
    rc, lines = _revealed(tmp_path)
    errors = [ln for ln in lines if ": error:" in ln]
    assert not errors, errors
    revealed = [ln.split("Revealed type is ", 1)[1].strip('"') for ln in lines if "Revealed type" in ln]
    assert revealed == ["None", "def (int, int) -> str", "(def (int, int) -> str) | None"]

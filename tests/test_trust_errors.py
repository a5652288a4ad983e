"""Issue 11, class 5: every error names the value and the rule (no "negative shift count",
no "list.remove(x)", no internal mask instead of the argument)."""
import pytest

from pykvmmu import gmem as G, prevroots as PR, role as R
from pykvmmu._check import boolean, choice, fmt, in_range, sint, uint
from pykvmmu.config import MmuConfig
from pykvmmu.errors import ConfigError, InputError, PykvmmuError
from pykvmmu.sphash import MmuPageHash, ShadowPage


@pytest.mark.parametrize("call,must", [
    (lambda: MmuConfig.npt(sme_cbit=47, sme_phys_reduction=60), ("sme_phys_reduction=60",)),
    (lambda: MmuConfig.npt(sme_cbit=47, sme_phys_reduction=-1), ("sme_phys_reduction=-1", "0..63")),
    (lambda: G.HostMemory().alloc("x", order=-1), ("order=-1", "0..18")),
    (lambda: MmuPageHash().zap(ShadowPage(9, 0x24)), ("gfn=0x9", "not in this mmu_page_hash")),
    (lambda: MmuConfig.ept(maxphyaddr=99), ("maxphyaddr=99", "32..52")),
    (lambda: MmuConfig.npt(maxphyaddr=99), ("maxphyaddr=99", "32..52")),
    (lambda: MmuConfig.tdx(maxphyaddr=0), ("maxphyaddr=0",)),
    (lambda: MmuConfig.ept(phys_bits=60), ("phys_bits=60",)),
    (lambda: PR.run_switches("v6.19", [(0x1000, 1 << 40, "a")]), ("seq[0]", "role=0x10000000000")),
    (lambda: R.tdp_mmu_child_role("v6.19", 0x21), ("parent_word=0x21", "level 1")),
    (lambda: G.GuestMemfd(G.StubKvm(), 0x1000, host=G.HostMemory(), folio_order=9.0),
     ("folio_order=9.0",)),
])
def test_message_names_value_and_rule(call, must):
    with pytest.raises(PykvmmuError) as e:
        call()
    for m in must:
        assert m in str(e.value), (m, str(e.value))
    assert "shift count" not in str(e.value) and "list.remove" not in str(e.value)


def test_check_helpers():
    assert uint("x", 5, 8) == 5 and uint("x", True) == 1
    for bad, rule in ((-1, "negative"), (256, "8 unsigned bits"), ("1", "expected an integer"),
                      (1.0, "expected an integer"), (None, "expected an integer")):
        with pytest.raises(InputError, match=rule):
            uint("x", bad, 8)
    assert sint("x", -128, 8) == -128
    with pytest.raises(InputError, match="8 signed bits"):
        sint("x", 128, 8)
    assert in_range("lvl", 3, 1, 5) == 3
    with pytest.raises(ConfigError, match=r"lvl=9: must be in 1\.\.5 \(why\)"):
        in_range("lvl", 9, 1, 5, "why", err=ConfigError)
    assert boolean("b", False) is False and boolean("b", True) is True
    with pytest.raises(InputError, match="b=1: expected a bool"):
        boolean("b", 1)                   # no ints either: one rule for every bool parameter
    with pytest.raises(InputError, match="b='no'"):
        boolean("b", "no")
    assert choice("m", "a", ("a", "b")) == "a"
    with pytest.raises(InputError, match="one of 'a', 'b'"):
        choice("m", "c", ("a", "b"))
    with pytest.raises(InputError):
        choice("m", [], ("a",))           # unhashable: still a clear error
    assert fmt(4095) == "4095" and fmt(4096) == "0x1000" and fmt("s") == "'s'"
    with pytest.raises(InputError, match="asid=5000: must be in 1..1022"):
        in_range("asid", 5000, 1, 1022)


def test_errno_carrying_errors():
    with pytest.raises(G.GmemError) as e:
        G.GuestMemfd(G.StubKvm(), 0x1000, host=G.HostMemory()).punch_hole(0, 0)
    assert e.value.errno == 22 and "len=0" in str(e.value) and "(-EINVAL)" in str(e.value)

"""The RMP entry layout is one table (the KVMMU_RMP_FLD_* rows of csrc/pykvmmu.h): the C
core's masks derive from it (csrc/rmp.c, with _Static_asserts), and here every Python
accessor, make_lo, FIELDS_DTYPE and the C decoder are held to it.  The reference
(pykvmmu/ref/rmp.py) keeps its own field table on purpose; it is compared too."""
import numpy as np
import pytest

from pykvmmu import rmp as R
from pykvmmu.ref import rmp as ref

LAYOUT = R.ENTRY_LAYOUT
LO_FIELDS = [n for n, f in LAYOUT.items() if f.word == 0]
HI_FIELDS = [n for n, f in LAYOUT.items() if f.word == 1]


def ones(name):
    """A raw entry (lo, hi) with every bit of field ``name`` set and nothing else."""
    f = LAYOUT[name]
    v = ((1 << f.width) - 1) << f.shift
    return (v, 0) if f.word == 0 else (0, v)


def test_table_tiles_the_entry():
    assert LO_FIELDS == ["assigned", "pagesize", "immutable", "subpage_count", "gpa", "asid",
                         "vmsa", "validated", "lock"]
    assert HI_FIELDS == ["vmpl0", "vmpl1", "vmpl2", "vmpl3"]
    for fields, top in ((LO_FIELDS, 64), (HI_FIELDS, 32)):
        bit = 0
        for n in fields:                       # in bit order, no gap, no overlap
            assert LAYOUT[n].shift == bit, n
            bit += LAYOUT[n].width
        assert bit == top


@pytest.mark.parametrize("name", list(LAYOUT))
def test_accessors_follow_the_table(name):
    lo, hi = ones(name)
    e = R.RmpEntry(lo, hi)
    full = (1 << LAYOUT[name].width) - 1
    values = {n: e.field(n) for n in LAYOUT}
    assert values == {n: (full if n == name else 0) for n in LAYOUT}
    props = {n: getattr(e, n) for n in LO_FIELDS}
    props.update({f"vmpl{v}": p for v, p in enumerate(e.vmpl)})
    assert props == values
    d = R.decode(np.array([lo], np.uint64), np.array([hi], np.uint64))[0]
    dec = {n: int(d[n]) for n in LO_FIELDS}
    dec.update({f"vmpl{v}": int(d["vmpl"][v]) for v in range(4)})
    assert dec == values                       # the C decoder agrees
    if name in LO_FIELDS:
        assert R.make_lo(**{name: full}) == lo
        with pytest.raises(R.InputError):
            R.make_lo(**{name: full + 1})      # the width is the rule
        assert ref.field(lo, name) == full     # the independent reference agrees
    else:
        assert ref.perm(hi, int(name[-1])) == full


def test_fields_dtype_has_every_field():
    names = set(R.FIELDS_DTYPE.names)
    assert set(LO_FIELDS) <= names and "vmpl" in names
    assert R.FIELDS_DTYPE["vmpl"].shape == (len(HI_FIELDS),)
    assert R.GPA_FRAME_BITS == LAYOUT["gpa"].width


def test_random_entries_agree_with_reference():
    rng = np.random.default_rng(5)
    for lo in (int(x) for x in rng.integers(0, 1 << 64, 200, dtype=np.uint64)):
        e = R.RmpEntry(lo, 0)
        for n in LO_FIELDS:
            assert e.field(n) == ref.field(lo, n), n
        assert R.make_lo(**{n: e.field(n) for n in LO_FIELDS}) == lo

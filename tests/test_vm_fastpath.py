"""Issue 14: the uncached ``Vm.fault`` path's shortcuts agree with the definitions they stand
for, on the random operations of tests/test_vm_cache.py (faults, conversions, punch holes,
poison, migration, races, memslot and setting changes; huge folios too):

- the "already mapped" test probes one leaf (the fault's level and base) where ``Vm._leaf``
  probes every level: a fault is ``spurious`` exactly when ``_leaf`` found that very leaf;
- outcomes built field by field (``tuple.__new__``) equal the keyword-built ``FaultOutcome``;
- the root's pool index and walk bits precomputed per privacy are those of ``_root_for``;
- ``GuestMemfd._get_pfn`` (checked gfn) answers as ``get_pfn``, which still refuses bad gfns.
"""
import zlib

import pytest

from pykvmmu.gmem import GetPfn
from pykvmmu.errors import InputError
from pykvmmu.vm import FaultOutcome

from test_vm_cache import NPAGES, _apply, _ops, _vm


@pytest.mark.parametrize("folio_order", [0, 9])
@pytest.mark.parametrize("t", ["snp", "tdx", "sw_protected"])
def test_fault_shortcuts_match_their_definitions(t, folio_order):
    vm, g = _vm(t, "upstream", folio_order)
    vm._fc_store = lambda *a: None                      # every fault walks (the uncached path)
    for p in (True, False):
        root, idx, bits = vm._fault_root_priv if p else vm._fault_root_shared
        assert root == vm._root_for(p) and idx == vm._pt_idx[vm.roots[root]]
        assert bits == vm._walk_gfn(root, 0)
    last, kinds = None, set()
    for i, op in enumerate(_ops(t, 1500, seed=zlib.crc32(f"fast{t}{folio_order}".encode()))):
        before = None
        if op[0] == "fault":
            gfn = (op[1] >> 12) & ~vm.gfn_direct_bits
            before = {r: vm._leaf(r, gfn) for r in vm.root_names}
        o = _apply(vm, g, op, last)
        if op[0] == "fault":
            last = op[1:]
        if not isinstance(o, FaultOutcome):
            continue
        assert type(o) is FaultOutcome and o == FaultOutcome(**o._asdict()), (i, op, o)
        kinds.add(o.kind)
        if before is not None and o.kind in ("mapped", "spurious"):
            root = vm._root_for(o.is_private)
            cur = before[root]
            base = o.gfn & ~((1 << (9 * (o.level - 1))) - 1)
            was = cur is not None and cur[0] == o.level and cur[1] == base and cur[2] == o.pfn
            assert (o.kind == "spurious") == was, (i, op, o, cur)
            assert vm._leaf(root, o.gfn) == (o.level, base, o.pfn)
    assert {"mapped", "spurious", "exit", "emulate"} <= kinds
    vm.check()


def test_get_pfn_checked_and_unchecked_agree():
    vm, g = _vm("snp", "upstream", 9)
    slot = vm.slot_of(0)
    a = g.get_pfn(slot, 5)
    b = g._get_pfn(slot, 5)
    assert type(a) is type(b) is GetPfn and a.pfn == b.pfn and a.max_order == b.max_order
    assert a.prepared_now and not b.prepared_now
    for bad in (-1, 1 << 64, 5.0, "5"):
        with pytest.raises(InputError):
            g.get_pfn(slot, bad)
    with pytest.raises(InputError):
        g.get_pfn(slot, NPAGES + 3)             # outside the slot: the same refusal

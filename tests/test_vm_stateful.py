"""Random sequences of faults, conversions, punch holes, migrations, memory failures and
memslot updates, per VM type, with the invariant checker after every step."""
import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pykvmmu import private as P
from pykvmmu.errors import PykvmmuError
from pykvmmu.vm import KVM_MEM_GUEST_MEMFD, Vm

NPAGES = 2048                 # 8 MiB gmem slot at gfn 0 (four 2M blocks)
PLAIN = 0x10000               # a plain slot (shared only) at gfn 0x10000
gfns = st.one_of(st.integers(0, NPAGES - 1), st.integers(PLAIN, PLAIN + 63),
                 st.integers(0x20000, 0x20003))


def machine(vm_type, folio_order):
    class M(RuleBasedStateMachine):
        @initialize()
        def setup(self):
            self.vm = Vm(vm_type, folio_order=folio_order)
            self.g = self.vm.create_guest_memfd(NPAGES << 12)
            self.vm.set_memory_region(0, 0, NPAGES << 12, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=self.g)
            self.vm.set_memory_region(1, PLAIN << 12, 64 << 12)
            self.plain_present = True

        def gpa(self, gfn, private):
            g = gfn << 12
            if vm_type == "tdx" and not private:
                g |= 1 << 51
            return g

        @rule(gfn=gfns, private=st.booleans(), write=st.booleans(), rsvd=st.booleans())
        def fault(self, gfn, private, write, rsvd):
            ec = (2 if write else 0) | (P.PFERR_RSVD_MASK | 1 if rsvd else 0)
            if private and vm_type == "snp":
                ec |= P.PFERR_GUEST_ENC_MASK
            o = self.vm.fault(self.gpa(gfn, private), ec)
            assert o.kind in ("mapped", "spurious", "emulate", "exit", "retry")
            if o.kind == "exit":
                assert o.exit.size == 4096 and o.exit.gpa == gfn << 12

        @rule(gfn=gfns, private=st.booleans(), n=st.sampled_from([1, 2, 16, 512]))
        def convert(self, gfn, private, n):
            self.vm.convert(gfn, n, private)

        @rule(gfn=gfns, private=st.booleans())
        def racing_fault(self, gfn, private):
            ec = P.PFERR_GUEST_ENC_MASK if private and vm_type == "snp" else 0
            o = self.vm.fault(self.gpa(gfn, private), ec,
                              race=lambda: self.vm.convert(gfn, 1, not self.vm.is_private(gfn)))
            assert o.kind in ("retry", "exit", "emulate")

        @rule(index=st.integers(0, NPAGES - 1), n=st.sampled_from([1, 3, 512]))
        def punch(self, index, n):
            self.vm.punch_hole(self.g, index << 12, min(n, NPAGES - index) << 12)

        @rule(gfn=st.integers(0, NPAGES - 1))
        def migrate(self, gfn):
            try:
                self.vm.migrate_gfn(gfn)
            except PykvmmuError:
                pass                          # no folio there

        @rule(index=st.integers(0, NPAGES - 1))
        def poison(self, index):
            try:
                self.g.memory_failure(index)
            except PykvmmuError:
                pass

        @rule()
        def toggle_plain_slot(self):
            if self.plain_present:
                self.vm.set_memory_region(1, 0, 0)
            else:
                self.vm.set_memory_region(1, PLAIN << 12, 64 << 12)
            self.plain_present = not self.plain_present

        @rule(gfn=st.integers(0x20000, 0x20003))
        def slot_over_mmio(self, gfn):
            try:
                self.vm.set_memory_region(2, gfn << 12, 4096)
            except PykvmmuError:
                self.vm.set_memory_region(2, 0, 0)

        @invariant()
        def invariants(self):
            if hasattr(self, "vm"):
                self.vm.check()

    M.__name__ = f"Machine_{vm_type}_{folio_order}"
    return M


CASES = [("snp", 0), ("snp", 9), ("tdx", 0), ("sw_protected", 0), ("sw_protected", 9)]


@pytest.mark.parametrize("vm_type,order", CASES)
def test_random_sequences(vm_type, order):
    M = machine(vm_type, order)
    M.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
    M.TestCase("runTest").runTest()

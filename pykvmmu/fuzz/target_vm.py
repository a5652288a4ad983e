"""Fuzz target ``vm``: the simulated confidential VM (stateful)."""
from __future__ import annotations

from .base import FuzzInput, check, target


_VM_NPAGES = 2048
_VM_PLAIN = 0x10000


@target("vm", stateful=True, max_len=256)
def fuzz_vm(fi: FuzzInput) -> None:
    """The simulated confidential VM, stateful: faults (private/shared, write, reserved-bit),
    conversions, racing faults, punch holes, migrations, memory failures and memslot updates
    per VM type, with Vm.check() (every invariant) after every step."""
    from .. import private as P
    from ..errors import PykvmmuError
    from ..vm import KVM_MEM_GUEST_MEMFD, Vm
    vm_type = fi.pick(("snp", "tdx", "sw_protected"))
    order = fi.pick((0, 9))
    vm = Vm(vm_type, folio_order=order)
    g = vm.create_guest_memfd(_VM_NPAGES << 12)
    vm.set_memory_region(0, 0, _VM_NPAGES << 12, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    vm.set_memory_region(1, _VM_PLAIN << 12, 64 << 12)
    plain = True

    def gfn_any():
        k = fi.uint(8) % 4
        if k <= 1:
            return fi.int_in(0, _VM_NPAGES - 1)
        if k == 2:
            return _VM_PLAIN + fi.int_in(0, 63)
        return 0x20000 + fi.int_in(0, 3)

    def gpa(gfn, private):
        a = gfn << 12
        if vm_type == "tdx" and not private:
            a |= 1 << 51
        return a

    steps = 0
    while fi.remaining() and steps < 40:
        steps += 1
        op = fi.int_in(0, 7)
        if op == 0:
            gfn, private, write, rsvd = gfn_any(), fi.bool(), fi.bool(), fi.chance(4)
            ec = (2 if write else 0) | (P.PFERR_RSVD_MASK | 1 if rsvd else 0)
            if private and vm_type == "snp":
                ec |= P.PFERR_GUEST_ENC_MASK
            o = vm.fault(gpa(gfn, private), ec)
            check(o.kind in ("mapped", "spurious", "emulate", "exit", "retry"), "fault kind", o.kind)
            if o.kind == "exit":
                ex = o.exit
                check(ex is not None and ex.size == 4096 and ex.gpa == gfn << 12, "exit gpa/size", gfn,
                      ex and ex.gpa)
            fi.feature("vm.fault", vm_type, o.kind)
        elif op == 1:
            vm.convert(gfn_any(), fi.pick((1, 2, 16, 512)), fi.bool())
        elif op == 2:
            gfn, private = gfn_any(), fi.bool()
            ec = P.PFERR_GUEST_ENC_MASK if private and vm_type == "snp" else 0
            o = vm.fault(gpa(gfn, private), ec,
                         race=lambda: vm.convert(gfn, 1, not vm.is_private(gfn)))
            check(o.kind in ("retry", "exit", "emulate"), "racing fault kind", o.kind)
            fi.feature("vm.race", vm_type, o.kind)
        elif op == 3:
            index = fi.int_in(0, _VM_NPAGES - 1)
            n = fi.pick((1, 3, 512))
            vm.punch_hole(g, index << 12, min(n, _VM_NPAGES - index) << 12)
        elif op == 4:
            try:
                vm.migrate_gfn(fi.int_in(0, _VM_NPAGES - 1))
            except PykvmmuError:
                fi.feature("vm.migrate.refused")
        elif op == 5:
            try:
                g.memory_failure(fi.int_in(0, _VM_NPAGES - 1))
            except PykvmmuError:
                fi.feature("vm.poison.refused")
        elif op == 6:
            if plain:
                vm.set_memory_region(1, 0, 0)
            else:
                vm.set_memory_region(1, _VM_PLAIN << 12, 64 << 12)
            plain = not plain
        else:
            gfn = 0x20000 + fi.int_in(0, 3)
            try:
                vm.set_memory_region(2, gfn << 12, 4096)
            except PykvmmuError:
                vm.set_memory_region(2, 0, 0)
        vm.check()

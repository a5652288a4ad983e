"""``pykvmmu demo`` scene: an SNP and a TDX guest faulting, converting, punching holes and
migrating, with the invariant checker after every step."""
from __future__ import annotations

DEMO_ORDER = 60


def _scene(emit, vm_type):
    from .. import private as P
    from ..vm import KVM_MEM_GUEST_MEMFD, Vm
    vm = Vm(vm_type)
    g = vm.create_guest_memfd(4 << 20)
    vm.set_memory_region(0, 0, 4 << 20, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    enc = P.PFERR_GUEST_ENC_MASK if vm_type == "snp" else 0
    sh = (1 << 51) if vm_type == "tdx" else 0
    emit(f"-- {vm_type.upper()} guest (VM type {vm.vm_type}, {vm.cfg.mode} tables, "
         f"{len(vm.root_names)} root(s)): 4 MiB guest_memfd slot at gpa 0")

    def step(what, fn):
        r = fn()
        vm.check()
        emit(f"  {what:44s} -> {r}")

    step("KVM_SET_MEMORY_ATTRIBUTES gfn 0x10..0x13 PRIVATE", lambda: f"changed, seq={vm.invalidation.seq}"
         if vm.convert(0x10, 4, True) else "unchanged")
    step("private fault gpa 0x10000", lambda: vm.fault(0x10000, enc | P.PFERR_WRITE_MASK))
    if vm_type == "snp":
        step("  RMP entry of that pfn", lambda: vm.rmp.entry(vm._leaf("direct", 0x10)[2]).describe())
    step("shared access to the private gfn", lambda: vm.fault(0x10000 | sh, P.PFERR_WRITE_MASK))
    step("shared fault gpa 0x20000", lambda: vm.fault(0x20000 | sh, 0))
    step("convert gfn 0x10 back to shared", lambda: (vm.convert(0x10, 1, False),
                                                     f"private SPTE zapped, seq={vm.invalidation.seq}")[1])
    step("shared fault gpa 0x10000", lambda: vm.fault(0x10000 | sh, 0))
    step("private fault gpa 0x11000", lambda: vm.fault(0x11000, enc))
    step("punch hole in guest_memfd at 0x11000 (1 page)", lambda: f"{vm.punch_hole(g, 0x11000, 0x1000)} "
         f"page freed, SPTE zapped, seq={vm.invalidation.seq}")
    step("private fault gpa 0x11000 (fresh page)", lambda: vm.fault(0x11000, enc))
    step("racing conversion during the fault", lambda: vm.fault(
        0x12000, enc, race=lambda: vm.convert(0x12, 1, False)))
    step("migrate the page behind gfn 0x11", lambda: vm.migrate_gfn(0x11))
    step("private fault gpa 0x11000 again", lambda: vm.fault(0x11000, enc))
    step("fault with no memslot (MMIO)", lambda: vm.fault(0x80000000 | sh, 0))
    step("private fault with no memslot", lambda: (vm.convert(0x80001, 1, True),
                                                     vm.fault(0x80001000, enc))[1])
    emit(f"  invariants hold; stats {vm.stats}")


def demo(emit) -> None:
    emit("== confidential VMs: private/shared faults, attributes, guest_memfd (issue 6) ==")
    _scene(emit, "snp")
    _scene(emit, "tdx")


def register(subparsers) -> None:
    p = subparsers.add_parser("cvm", help="confidential-VM fault classification and demo")
    sub = p.add_subparsers(dest="cvm_command", metavar="CMD")
    d = sub.add_parser("decode-ec", help="decode a page-fault error code")
    d.add_argument("error_code", type=lambda s: int(s, 0))
    d.set_defaults(func=lambda a: print(__import__("pykvmmu.private", fromlist=["x"])
                                        .decode_error_code(a.error_code)))
    t = sub.add_parser("policies", help="where the 2023 classification policies disagree")
    t.set_defaults(func=lambda a: print(__import__("pykvmmu.private", fromlist=["x"])
                                        .format_policy_table()))
    s = sub.add_parser("demo", help="the SNP and TDX scene")
    s.set_defaults(func=lambda a: demo(print))
    p.set_defaults(func=lambda a: demo(print))

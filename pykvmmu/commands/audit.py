"""``pykvmmu audit TRACE``: replay a kvmmmu trace against the model, one verdict per record
and check (pykvmmu.audit)."""
from __future__ import annotations

import json

from .. import audit as A
from ..errors import InputError

DEMO_ORDER = 90

_SYNTHETIC = """\
vcpu-1 [000] 1.000001: kvm_mmu_get_page: mmu_valid_gen=0 gfn=0x1000 role=0x3704 root_count=0 unsync=0 created=1
vcpu-1 [000] 1.000002: kvm_mmu_pagetable_walk: addr=0x5000 pferr=0x6
vcpu-1 [000] 1.000003: kvm_mmu_paging_element: pte=0x1001027 level=4
vcpu-1 [000] 1.000004: kvm_mmu_paging_element: pte=0x1002027 level=3
vcpu-1 [000] 1.000005: kvm_mmu_paging_element: pte=0x1003027 level=2
vcpu-1 [000] 1.000006: kvm_mmu_paging_element: pte=0x2005067 level=1
vcpu-1 [000] 1.000007: kvm_mmu_get_page: mmu_valid_gen=0 gfn=0x1001 role=0x3703 root_count=0 unsync=0 created=1
vcpu-1 [000] 1.000008: kvm_mmu_get_page: mmu_valid_gen=0 gfn=0x1002 role=0x3702 root_count=0 unsync=0 created=1
vcpu-1 [000] 1.000009: kvm_mmu_get_page: mmu_valid_gen=0 gfn=0x1003 role=0x3701 root_count=0 unsync=0 created=1
vcpu-1 [000] 1.000010: kvm_mmu_spte_requested: gfn=0x2005 pfn=0x1e296b level=1
vcpu-1 [000] 1.000011: kvm_mmu_set_spte: gfn=0x2005 spte={spte} sptep=0x12345028 level=1 r=1 x=1 u=1
"""


def _json_file(opt: str, path: str | None):
    """The JSON object in ``path`` (None without one)."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            v = json.load(f)
    except OSError as e:
        raise InputError(f"{opt} {path}: {e.strerror}") from None
    except ValueError as e:
        raise InputError(f"{opt} {path}: not JSON ({e})") from None
    if not isinstance(v, dict):
        raise InputError(f"{opt} {path}: expected a JSON object")
    return v


def _cmd_audit(args) -> int:
    if args.mode != "shadow":
        raise InputError(f"--mode {args.mode}: the audit models the shadow MMU (mode shadow)")
    rep = A.audit(args.trace, era=args.era, profile=args.profile, maxphyaddr=args.maxphyaddr,
                  mmio_caching=args.mmio_caching, nx_huge_pages=args.nx_huge_pages,
                  keep_agreed=args.all, guest=_json_file("--guest", args.guest),
                  guest_result=_json_file("--guest-result", args.guest_result), pids=args.pid)
    if args.json:
        print(json.dumps(rep.to_json(), indent=1))
    else:
        print(rep.format_table(args.max))
    return 1 if rep.total("disagreed") and args.strict else 0


def register(sub) -> None:
    p = sub.add_parser("audit", help="replay a kvmmmu trace against the model: a verdict per "
                                     "record (roles, set_spte, write tracking, flooding, hash, MMIO)")
    p.add_argument("trace", help="trace file (capture .kvmcap, trace text, trace-cmd report, "
                                 "trace.dat, perf.data, perf script)")
    p.add_argument("--json", action="store_true", help="the whole report as JSON")
    p.add_argument("--era", default=None,
                   help="kernel of the trace, e.g. v6.18 (default: the capture's kernel version; "
                        "text traces need it)")
    p.add_argument("--mode", default="shadow", help="configuration preset (only shadow is modelled)")
    p.add_argument("--profile", default=None,
                   help="SPTE layout profile (default: the trace kernel's; v6.15 = v6.15-v6.18)")
    p.add_argument("--maxphyaddr", type=int, default=48, help="host MAXPHYADDR (default 48)")
    p.add_argument("--mmio-caching", action="store_true", help="kvm.mmio_caching=Y (default N)")
    p.add_argument("--nx-huge-pages", action="store_true", help="kvm.nx_huge_pages=Y")
    p.add_argument("--all", action="store_true", help="keep agreed verdicts in --json")
    p.add_argument("--max", type=int, default=50, help="verdicts listed per section in the table")
    p.add_argument("--strict", action="store_true", help="exit status 1 on any disagreement")
    p.add_argument("--guest", metavar="DESC.json", default=None,
                   help="the guest's description (pykvmmu guest demo), for a trace that does not "
                        "carry it (all but a pykvmmu capture): its memslots and slot changes")
    p.add_argument("--guest-result", metavar="RESULT.json", default=None,
                   help="what the guest's run did (pykvmmu guest run's output): dirty logs, "
                        "MMIO exits")
    p.add_argument("--pid", type=int, action="append", default=None, metavar="PID",
                   help="audit only the records of this task (a VM's vCPU thread; repeat for each): "
                        "a trace of several VMs is audited one VM at a time")
    p.set_defaults(func=_cmd_audit)


def demo(emit) -> None:
    from .. import trace as T
    emit("== audit: a fault replayed against the model (role words, make_spte, unsync) ==")
    good = _SYNTHETIC.format(spte="0x1e296be67")
    rep = A.audit_records(T.parse(good.splitlines(), era="v6.18").records)
    emit(f"recorded SPTE 0x1e296be67: {rep.total('agreed')} agreed, "
         f"{rep.total('disagreed')} disagreed")
    bad = _SYNTHETIC.format(spte="0x1e296bc67")
    rep = A.audit_records(T.parse(bad.splitlines(), era="v6.18").records)
    for v in rep.disagreements:
        emit(f"host-writable bit flipped: {v}")

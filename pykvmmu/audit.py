"""``pykvmmu audit``: replay a kvmmmu trace against the model and judge every record.

The audit walks the records in order and keeps a model of the shadow MMU
(:class:`pykvmmu.shadow.ShadowMmu`).  For each record it predicts what the kernel must have
done from what came before, compares, and then adopts the kernel's value so that one
difference is reported once.  Checks (each counts agreed / disagreed / not checkable):

``guest_walk``      every walk replayed from its gptes (``pykvmmu.walk.walk_observed``): the
                    A/D bits it sets and its error must be the records that follow.
``role``            every ``kvm_mmu_get_page`` role word (and gfn): roots from the vCPU
                    state (inferred from the root's role word: the registers are not in the
                    trace), children with ``kvm_mmu_child_role`` from the preceding guest
                    walk (``kvm_mmu_pagetable_walk`` + ``kvm_mmu_paging_element``).
``set_spte``        every ``kvm_mmu_set_spte`` predicted with ``make_spte`` from the preceding
                    ``kvm_mmu_spte_requested`` and the walk's pte_access (a set_spte without
                    one is a prefetch: pte_access is inferred from the SP's role access).
``write_tracking``  the ``mmu_try_to_unsync_pages`` decision behind every writable request:
                    W and MMU-writable withheld for a write-tracked gfn, or the 4K shadow pages
                    of the gfn marked unsync (``kvm_mmu_unsync_page`` records); every
                    ``kvm_mmu_sync_page`` is of an unsync page, which is sync afterwards.
``write_flood``     every zap of a valid upper-level indirect SP against
                    ``detect_write_flooding`` over the emulated writes the trace shows.
``page_hash``       ``new``/``existing`` of every ``kvm_mmu_get_page`` against the page hash,
                    its ``mmu_valid_gen``/unsync/root_count, ``kvm_mmu_zap_all_fast``'s
                    generation (before its toggle) and used_pages, the zap order of obsolete
                    pages and of ``kvm_mmu_zap_all``, zapped in-use roots freed later.
``mmio``            MMIO SPTE events against the configuration (none when MMIO caching is off,
                    and faults on gfns without memslot are emulated; ``check_mmio_spte``'s
                    generation and verdict recomputed when it is on).

Inputs a trace cannot show are inferred and every verdict that used one lists it: the vCPU
registers (from root role words), host_writable (the host's shared zero page is mapped
read-only: a pfn that serves several gfns gets host_writable false), prefetch vs fault (a
set_spte with no spte_requested before it), the prefetched gpte's access, the SP an SPTE
pointer belongs to, and emulated guest writes.  A capture's guest description and result
supply memslots (read-only, dirty logging, DELETE/MOVE), the dirty bitmaps, the MMIO exits
and the host's zero-page pfn, which are then recorded inputs rather than inferred ones.

Kernel facts used (read in Kingxukai/linux @ 9b44fff6, v6.17/6.18 mmu.c and paging_tmpl.h,
and spte.c @ 0291023e): ``trace_kvm_mmu_set_spte`` fires only when the new SPTE differs
from the old; ``mmu_set_spte`` passes ``host_writable = !fault || map_writable`` and
``prefetch = !fault || fault->prefetch``; ``FNAME(fetch)`` creates indirect children with
``gw->pt_access`` and gfn ``gw->table_gfn``, traces ``kvm_mmu_spte_requested`` after the
hugepage adjust, then creates direct children with ``gw->pte_access`` at gfns rounded to the
parent level; ``FNAME(sync_spte)`` does not trace; ``trace_kvm_mmu_get_page`` fires in
``__kvm_mmu_get_shadow_page`` before a root's ``root_count`` is raised.
"""
from __future__ import annotations

import enum
import json
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from . import role as R
from . import spte as S
from . import vcpu as V
from . import walk as W
from . import _check as C
from .config import PT_WRITABLE_MASK, MmuConfig
from .errors import InputError
from .shadow import ROLE_INVALID, ShadowMmu, make_spte_outcome
from .wflood import WRITE_FLOOD_THRESHOLD

__all__ = ["CHECKS", "Verdict", "AuditReport", "Auditor", "audit", "audit_records",
           "live_config", "vcpu_from_root", "spte_bit_names", "role_bit_names", "Status",
           "SlotAction"]

CHECKS = ("guest_walk", "role", "set_spte", "write_tracking", "write_flood", "page_hash", "mmio")


class Status(str, enum.Enum):
    """A verdict's status (``AuditReport.total(status)`` takes it or its string)."""
    AGREED = "agreed"
    DISAGREED = "disagreed"
    NOT_CHECKABLE = "not_checkable"


class SlotAction(str, enum.Enum):
    """A memslot change of the guest description (``slot_changes[i]["action"]``, or its string)."""
    DELETE = "delete"
    MOVE = "move"
    FLAGS = "flags"


STATUSES = tuple(s.value for s in Status)

PFERR_PRESENT, PFERR_WRITE = 1, 2
_U64 = (1 << 64) - 1
_EVENT_CHECK = {"kvm_mmu_get_page": "role", "kvm_mmu_set_spte": "set_spte",
                "kvm_mmu_spte_requested": "set_spte", "kvm_mmu_pagetable_walk": "guest_walk",
                "kvm_mmu_paging_element": "guest_walk", "kvm_mmu_set_accessed_bit": "guest_walk",
                "kvm_mmu_set_dirty_bit": "guest_walk", "kvm_mmu_walker_error": "guest_walk",
                "kvm_mmu_unsync_page": "write_tracking", "mark_mmio_spte": "mmio",
                "check_mmio_spte": "mmio", "handle_mmio_page_fault": "mmio"}
#: records whose loss leaves the page hash and unsync state unknown
_STATE_EVENTS = ("kvm_mmu_get_page", "kvm_mmu_prepare_zap_page", "kvm_mmu_unsync_page",
                 "kvm_mmu_sync_page", "kvm_mmu_zap_all_fast")
_WALK_TAIL = ("kvm_mmu_set_accessed_bit", "kvm_mmu_set_dirty_bit", "kvm_mmu_walker_error")


def live_config(maxphyaddr: int = 48, profile: str = "v6.15", mmio_caching: bool = False,
                nx_huge_pages: bool = False) -> MmuConfig:
    """The configuration of the project's machines (live-kvm.md): shadow MMU, legacy SPTE
    format, MAXPHYADDR 48, kvm.mmio_caching=N, nx_huge_pages=N, v6.18 (profile v6.15)."""
    return MmuConfig.shadow(maxphyaddr=maxphyaddr, profile=profile, mmio_caching=mmio_caching,
                            nx_huge_pages=nx_huge_pages)


# ------------------------------------------------------------------ bit names
def spte_bit_names(cfg: MmuConfig, diff: int) -> list:
    """Names of the SPTE bits set in ``diff`` under the configuration's masks."""
    C.mmu_config(cfg)
    diff = C.u64("diff", diff)
    names = {0: "P" if not cfg.is_ept else "R", 1: "W", 7: "PS", 11: "MMU-present"}
    for mask, name in ((cfg.user_mask, "U"), (cfg.accessed_mask, "A"), (cfg.dirty_mask, "D"),
                       (cfg.nx_mask, "NX"), (cfg.x_mask, "X"), (cfg.host_writable_mask, "host-W"),
                       (cfg.mmu_writable_mask, "MMU-W")):
        if mask:
            names[mask.bit_length() - 1] = name
    out = []
    pfn_bits = diff & cfg.base_addr_mask
    for b in range(64):
        if diff >> b & 1 and not (pfn_bits >> b & 1):
            out.append(names.get(b, f"bit{b}"))
    if pfn_bits:
        out.append(f"pfn bits {pfn_bits >> 12:#x}")
    return out


def role_bit_names(era, diff: int) -> list:
    """Role fields whose bits differ (``field`` or ``field(bits)``)."""
    era = R.get_era(era)
    diff = C.u64("diff", diff)
    out = []
    for f in era.base.fields:
        if diff & f.mask:
            out.append(f.name)
    rest = diff & ~era.base.used_mask
    if rest:
        out.append(f"unused bits {rest:#x}")
    return out


# ------------------------------------------------------------------ verdicts
@dataclass
class Verdict:
    """One check of one record: the model's value, the kernel's (the trace's), the bits that
    differ and why; ``inferred`` lists the inputs the trace did not show."""

    check: str
    status: str
    record: int
    event: str
    what: str = ""
    model: object = None
    kernel: object = None
    diff: int = 0
    bits: tuple = ()
    reason: str = ""
    inferred: tuple = ()

    def to_json(self) -> dict:
        def h(v):
            return f"{v:#x}" if isinstance(v, int) and not isinstance(v, bool) else v
        return {"check": self.check, "status": self.status, "record": self.record,
                "event": self.event, "what": self.what, "model": h(self.model),
                "kernel": h(self.kernel), "diff": f"{self.diff:#x}", "bits": list(self.bits),
                "reason": self.reason, "inferred": list(self.inferred)}

    def __str__(self) -> str:
        s = f"record {self.record} {self.event}: {self.check} {self.status}"
        if self.what:
            s += f" ({self.what})"
        if self.status == "disagreed":
            s += f": model {_h(self.model)} kernel {_h(self.kernel)}"
            if self.bits:
                s += f", differing: {', '.join(self.bits)}"
        if self.reason:
            s += f"; {self.reason}"
        if self.inferred:
            s += f" [inferred: {'; '.join(self.inferred)}]"
        return s


def _h(v):
    return f"{v:#x}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


@dataclass
class AuditReport:
    """Per-check counts, every disagreement and not-checkable verdict, the inferred inputs and
    the WARNs the model says the kernel fired."""

    config: str = ""
    era: str = ""
    records: int = 0
    counts: dict = field(default_factory=lambda: {c: Counter() for c in CHECKS})
    inferred_counts: dict = field(default_factory=lambda: Counter())
    verdicts: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    inferred_inputs: Counter = field(default_factory=Counter)
    events: Counter = field(default_factory=Counter)
    keep_agreed: bool = False
    #: make_spte calls that mark the page dirty in a dirty-logged memslot
    dirty_marked: int = 0

    def add(self, v: Verdict) -> Verdict:
        if not isinstance(v, Verdict):
            raise InputError(f"v={v!r}: expected a Verdict")
        if v.check not in self.counts or v.status not in STATUSES:
            raise InputError(f"verdict {v.check}/{v.status}: unknown check or status")
        self.counts[v.check][v.status] += 1
        if v.inferred:
            self.inferred_counts[v.check] += 1
            for i in v.inferred:
                self.inferred_inputs[i.split(":")[0]] += 1
        if v.status != "agreed" or self.keep_agreed:
            self.verdicts.append(v)
        return v

    @property
    def disagreements(self) -> list:
        return [v for v in self.verdicts if v.status == "disagreed"]

    @property
    def not_checkable(self) -> list:
        return [v for v in self.verdicts if v.status == "not_checkable"]

    def total(self, status: str) -> int:
        C.choice("status", status, STATUSES)
        return sum(c[status] for c in self.counts.values())

    @property
    def agreement(self) -> float:
        a, d = self.total("agreed"), self.total("disagreed")
        return 100.0 * a / (a + d) if a + d else 100.0

    def to_json(self) -> dict:
        return {"config": self.config, "era": self.era, "records": self.records,
                "events": dict(self.events),
                "counts": {c: {s: self.counts[c][s] for s in STATUSES}
                           | {"inferred": self.inferred_counts[c]} for c in CHECKS},
                "agreement_percent": self.agreement,
                "inferred_inputs": dict(self.inferred_inputs),
                "warnings": list(self.warnings), "mark_page_dirty": self.dirty_marked,
                "verdicts": [v.to_json() for v in self.verdicts]}

    def format_table(self, max_verdicts: int = 50) -> str:
        max_verdicts = C.uint("max_verdicts", max_verdicts, 32)
        lines = [f"audit: {self.records} records, era {self.era}, {self.config}", "",
                 f"{'check':16s} {'agreed':>8s} {'disagreed':>10s} {'not checkable':>14s} "
                 f"{'(inferred)':>11s}"]
        for c in CHECKS:
            n = self.counts[c]
            lines.append(f"{c:16s} {n['agreed']:8d} {n['disagreed']:10d} {n['not_checkable']:14d} "
                         f"{self.inferred_counts[c]:11d}")
        lines.append(f"{'total':16s} {self.total('agreed'):8d} {self.total('disagreed'):10d} "
                     f"{self.total('not_checkable'):14d}")
        lines.append(f"agreement: {self.agreement:.2f}%")
        if self.dirty_marked:
            lines.append(f"mark_page_dirty_in_slot calls (writable SPTEs in dirty-logged slots): "
                         f"{self.dirty_marked}")
        if self.inferred_inputs:
            lines += ["", "inferred inputs (not in the trace):"]
            for k, n in self.inferred_inputs.most_common():
                lines.append(f"  {n:8d} {k}")
        if self.warnings:
            lines += ["", "kernel WARNs the model predicts:"]
            lines += [f"  {w}" for w in self.warnings[:max_verdicts]]
        for title, vs in (("disagreements", self.disagreements),
                          ("not checkable", self.not_checkable)):
            if vs:
                lines += ["", f"{title}:"]
                lines += [f"  {v}" for v in vs[:max_verdicts]]
                if len(vs) > max_verdicts:
                    lines.append(f"  ... {len(vs) - max_verdicts} more (--json lists all)")
        return "\n".join(lines)


# ------------------------------------------------------------------ records
@dataclass
class _Rec:
    index: int
    event: str
    fields: dict
    role: int | None
    role_known: int
    key: object
    ts: float


class _NoField(KeyError):
    """A field a check reads is missing or unusable in record ``index`` (``bad``: its value,
    or None when absent)."""

    def __init__(self, name: str, index: int, bad):
        super().__init__(name)
        self.index, self.bad = index, bad

    def reason(self, index: int) -> str:
        name = self.args[0]
        what = "the record" if self.index == index else f"record {self.index}, which this check uses,"
        if self.bad is None:
            return f"{what} has no {name!r} field"
        rule = "a page-table level (1-5)" if name == "level" else "a number"
        return f"{what} has a {name!r} that is not {rule} ({self.bad!r})"


class _Fields(dict):
    """A record's fields; a missing one raises :class:`_NoField` naming the record."""

    __slots__ = ("index", "bad")
    index: int
    bad: dict

    def __missing__(self, name):
        raise _NoField(name, self.index, self.bad.get(name))


#: The fields the checks read, all numbers.
_NUMBER_FIELDS = frozenset(("gfn", "pfn", "level", "spte", "sptep", "kvm_gen", "spte_gen", "valid",
                            "access", "addr", "pferr", "pte", "created", "mmu_valid_gen", "unsync",
                            "root_count", "mmu_used_pages", "used_pages", "r", "x", "u"))


def _norm(i: int, r) -> _Rec:
    """The one place that reads a trace record (pykvmmu.trace.TraceRecord or any object with
    ``event``, ``fields``, ``role``, ``role_known``, ``pid``/``cpu``, ``line_no``)."""
    if not isinstance(getattr(r, "event", None), str) or not isinstance(getattr(r, "fields", None),
                                                                        dict):
        raise InputError(f"records[{i - 1}]={r!r}: not a trace record (needs .event and .fields; "
                         "pykvmmu.trace.open_trace yields them)")
    role = getattr(r, "role", None)
    word = role.word if role is not None and hasattr(role, "word") else role
    if word is not None and (not isinstance(word, int) or not 0 <= word < 1 << 32):
        raise InputError(f"records[{i - 1}].role={word!r}: a 32-bit role word")
    idx = getattr(r, "line_no", None) or i
    fields = _Fields(r.fields)
    fields.index = idx
    # fields the checks read as numbers but held as something else, or a level outside 1-5
    # (a damaged line or page): left out, so a check that reads one is not checkable
    fields.bad = {k: fields.pop(k) for k in [k for k, v in fields.items() if k in _NUMBER_FIELDS and (
        not isinstance(v, int) or k == "level" and not 1 <= v <= 5)]}
    return _Rec(idx, r.event, fields, word, getattr(r, "role_known", 0xFFFFFFFF if word
                                                    is not None else 0),
                getattr(r, "pid", None) or getattr(r, "cpu", 0), getattr(r, "ts", 0.0))


@dataclass
class _Fault:
    walk: W.Walk
    mmu: W.GuestMmu
    pte_access: int
    chain: dict            # level -> expected indirect SP role word (root level included)
    chain_gfn: dict        # level -> gfn of that SP
    requested: _Rec | None = None
    direct: dict = field(default_factory=dict)
    done: bool = False


class Auditor:
    """Replays records against the model; ``run(records)`` returns an :class:`AuditReport`.

    ``cfg``: the shadow-MMU configuration (default :func:`live_config`); ``era``: the role era
    or kernel version of the trace.  Inputs the trace lacks, when known: ``memslots`` (dicts
    with gpa, size, flags, slot) and ``slot_changes`` (the description's delete/move/flags
    changes, each with its ``run``), ``dirty_log`` ({slot: page indexes} read by userspace),
    ``host_zero_pfn`` (the host's zero page), ``host_writable(gfn, pfn) -> bool`` (overrides
    the zero-page rule).  Otherwise inferred: ``zero_page_min_gfns`` (a pfn serving that many
    gfns is the zero page), ``guest_gbpages``/``guest_amd`` (guest CPUID for the walk).
    ``keep_agreed`` keeps agreed verdicts in the report (``--json --all``).  ``pids``: audit
    only the records of these tasks (a VM's vCPU threads): the model is one VM, and a trace of
    several VMs (records from more than one task, warned about) is audited one VM at a time."""

    def __init__(self, cfg: MmuConfig | None = None, era="v6.18", *, host_writable=None,
                 zero_page_min_gfns: int = 2, keep_agreed: bool = False,
                 guest_gbpages: bool = False, guest_amd: bool = True, memslots=None,
                 slot_changes=(), host_zero_pfn: int | None = None, dirty_log=None,
                 mmio_exits=None, runs_done: int | None = None, pids=None):
        self.cfg = cfg or live_config()
        if not isinstance(self.cfg, MmuConfig):
            raise InputError(f"cfg={cfg!r}: expected an MmuConfig")
        self.era = R.get_era(era)
        if self.cfg.tdp:
            raise InputError(f"cfg mode {self.cfg.mode}: the audit models the shadow MMU "
                             "(tdp off); TDP-MMU traces are not modelled")
        if not isinstance(zero_page_min_gfns, int) or zero_page_min_gfns < 2:
            raise InputError(f"zero_page_min_gfns={zero_page_min_gfns!r}: an integer >= 2")
        if host_writable is not None and not callable(host_writable):
            raise InputError("host_writable: a callable (gfn, pfn) -> bool, or None to infer")
        self.host_writable_fn = host_writable
        if pids is not None:
            if isinstance(pids, (str, bytes, dict)) or not hasattr(pids, "__iter__"):
                raise InputError(f"pids={pids!r}: expected a list of task ids or None")
            pids = list(pids)
            bad = [p for p in pids if not isinstance(p, int) or isinstance(p, bool) or p < 0]
            if bad or not pids:
                raise InputError(f"pids={pids!r}: task ids (non-negative integers), at least one")
        self.pids = None if pids is None else frozenset(pids)
        self.zero_min = zero_page_min_gfns
        self.keep_agreed = C.boolean("keep_agreed", keep_agreed)
        self.guest_gbpages = C.boolean("guest_gbpages", guest_gbpages)
        self.guest_amd = C.boolean("guest_amd", guest_amd)
        if host_zero_pfn is not None and (not isinstance(host_zero_pfn, int)
                                          or isinstance(host_zero_pfn, bool) or host_zero_pfn <= 0
                                          or host_zero_pfn >> 52):
            raise InputError(f"host_zero_pfn={host_zero_pfn!r}: a positive pfn (below 2^52) or None")
        for name, v in (("memslots", memslots), ("slot_changes", slot_changes),
                        ("mmio_exits", mmio_exits)):
            if v is not None and (isinstance(v, (str, bytes, dict)) or not hasattr(v, "__iter__")):
                raise InputError(f"{name}={v!r}: expected a list or None")
        self.host_zero_pfn = host_zero_pfn
        if dirty_log is not None and (not isinstance(dirty_log, dict) or not all(
                isinstance(k, int) and isinstance(v, (set, frozenset, list, tuple))
                for k, v in dirty_log.items())):
            raise InputError("dirty_log: {slot id: pages (slot-relative indexes)} or None")
        self.dirty_log = None if dirty_log is None else {k: set(v) for k, v in dirty_log.items()}
        if mmio_exits is not None and not all(isinstance(g, int) and g >= 0 for g in mmio_exits):
            raise InputError("mmio_exits: the gfns of KVM_EXIT_MMIO exits, or None")
        self.mmio_exits = None if mmio_exits is None else sorted(set(mmio_exits))
        if runs_done is not None and (not isinstance(runs_done, int) or isinstance(runs_done, bool)
                                      or runs_done < 0):
            raise InputError(f"runs_done={runs_done!r}: the number of runs the guest result has")
        self.runs_done = runs_done
        slots: dict[int, tuple[int, int, tuple]] = {}
        for i, m in enumerate(memslots or ()):
            try:
                gpa, size = int(m["gpa"]), int(m["size"])
                flags = tuple(m.get("flags", ()))
                slot = int(m.get("slot", i))
            except (KeyError, TypeError, ValueError):
                raise InputError(f"memslots[{i}]={m!r}: needs gpa, size and flags") from None
            if gpa & 0xFFF or size & 0xFFF or size <= 0:
                raise InputError(f"memslots[{i}]: gpa {gpa:#x} and size {size:#x} must be "
                                 "page-aligned, size > 0")
            slots[slot] = (gpa >> 12, (gpa + size) >> 12, flags)
        self.memslots = None if memslots is None else slots
        self.slot_changes = []
        for i, c in enumerate(slot_changes or ()):
            if not isinstance(c, dict) or c.get("action") not in tuple(SlotAction):
                raise InputError(f"slot_changes[{i}]={c!r}: a dict with action delete/move/flags")
            self.slot_changes.append(dict(c, action=SlotAction(c["action"]).value))

    # -------------------------------------------------------------- helpers
    def _v(self, check, status, rec, **kw) -> Verdict:
        v = Verdict(check, status, rec.index, rec.event, **kw)
        self._parts.append(v)
        return v

    def _flush(self):
        """One verdict per record and check: disagreed if any comparison differs, agreed if
        any agreed, else not checkable; the parts' details are joined."""
        by = {}
        for v in self._parts:
            by.setdefault(v.check, []).append(v)
        self._parts = []
        for check, vs in by.items():
            for status in ("disagreed", "agreed", "not_checkable"):
                sel = [v for v in vs if v.status == status]
                if sel:
                    break
            if len(sel) == 1:
                v = sel[0]
                v.inferred = tuple(dict.fromkeys(i for x in vs for i in x.inferred))
            else:
                v = Verdict(check, status, sel[0].record, sel[0].event,
                            what="; ".join(x.what for x in sel if x.what),
                            model=sel[0].model, kernel=sel[0].kernel,
                            diff=sel[0].diff, bits=tuple(b for x in sel for b in x.bits),
                            reason="; ".join(dict.fromkeys(x.reason for x in sel if x.reason)),
                            inferred=tuple(dict.fromkeys(i for x in vs for i in x.inferred)))
            self.report.add(v)

    def _cmp(self, check, rec, what, model, kernel, *, bits_fn=None, known=_U64, inferred=(),
             reason=""):
        diff = (model ^ kernel) & known if isinstance(model, int) and isinstance(kernel, int) \
            else (0 if model == kernel else 1)
        if diff and check in self.tainted:
            return self._v(check, "not_checkable", rec, what=what, model=model, kernel=kernel,
                           inferred=tuple(inferred),
                           reason=f"the model's state is unknown since record "
                                  f"{self.tainted[check]} (a field missing from the trace)")
        if diff:
            bits = tuple(bits_fn(diff)) if bits_fn and isinstance(model, int) else ()
            return self._v(check, "disagreed", rec, what=what, model=model, kernel=kernel,
                           diff=diff if isinstance(model, int) else 0, bits=bits,
                           inferred=tuple(inferred), reason=reason)
        return self._v(check, "agreed", rec, what=what, model=model, kernel=kernel,
                       inferred=tuple(inferred), reason=reason)

    def _spte_bits(self, diff):
        return spte_bit_names(self.cfg, diff)

    def _role_bits(self, diff):
        return role_bit_names(self.era, diff)

    # -------------------------------------------------------------- pre-pass
    def _zero_page_pfns(self, recs) -> set:
        """pfns that serve at least ``zero_min`` distinct gfns in the run: the host's shared
        zero page (mapped read-only, so host_writable is false for them)."""
        gfns = defaultdict(set)
        for r in recs:
            fl = r.fields            # _norm left out unusable values: present means valid
            if r.event == "kvm_mmu_spte_requested" and "pfn" in fl and "gfn" in fl:
                lvl = fl.get("level", 1)
                pages = 1 << (9 * (lvl - 1))
                gfns[(fl["pfn"] & ~(pages - 1), lvl)].add(fl["gfn"] & ~(pages - 1))
        return {k for k, v in gfns.items() if len(v) >= self.zero_min}

    # -------------------------------------------------------------- run
    def run(self, records) -> AuditReport:
        """Audit the records (any iterable of trace records, in trace order)."""
        try:
            it = iter(records)
        except TypeError:
            raise InputError(f"records={records!r}: an iterable of trace records") from None
        tasks: set = set()              # every task the records name, audited or not
        recs = []
        for i, r in enumerate(it, 1):
            pid = getattr(r, "pid", None)
            if isinstance(pid, int) and pid > 0:
                tasks.add(pid)
            if self.pids is None or pid in self.pids:
                recs.append(_norm(i, r))
        self.report = AuditReport(config=f"mode {self.cfg.mode}, profile {self.cfg.profile.name}, "
                                         f"MAXPHYADDR {self.cfg.maxphyaddr}, mmio_caching "
                                         f"{'on' if self.cfg.mmio_caching else 'off'}",
                                  era=self.era.name, records=len(recs),
                                  keep_agreed=self.keep_agreed)
        if len(tasks) > 1 and self.pids is None:
            shown = ", ".join(map(str, sorted(tasks)[:8])) + (", ..." if len(tasks) > 8 else "")
            self.report.warnings.append(
                f"the records come from {len(tasks)} tasks ({shown}) and the audit models one VM: "
                "if they are different VMs, audit each on its own (pids=, --pid)")
        self.mmu = ShadowMmu()
        self.zero_pfns = self._zero_page_pfns(recs)
        self.walk_state: dict = {}       # key -> {"addr","pferr","elems","failed"}
        self.fault: dict = {}            # key -> _Fault
        self.root: dict = {}             # key -> (gfn, role) of the current root
        self.gbpages, self.amd = self.guest_gbpages, self.guest_amd
        self.sptes: dict[int, int] = {}            # sptep -> last SPTE value the trace showed
        self.sptep_sp: dict = {}         # sptep page -> (gfn, role) of the SP it belongs to (inferred)
        self.gfn_sptes: defaultdict[int, set] = defaultdict(set)
        self.pending_unsync: defaultdict[object, list] = defaultdict(list)
        self.pending_free: dict = {}     # (gfn, role) of zapped in-use roots -> record index
        self.writes: defaultdict[int, int] = defaultdict(int)
        self.expect_flood: dict = {}     # (gfn, role) -> walk record of the write that floods it
        self.dirty_marks: dict = {}      # (slot, page index) -> (record, inferred reason)
        self.emulated: dict = {}         # gfn -> first walk the model says is emulated (MMIO exit)
        self.slots = None if self.memslots is None else dict(self.memslots)
        self.pending_changes = list(self.slot_changes)
        self._parts = []
        self.tainted: dict = {}
        self._recs = recs
        self._zap_all: dict = {}
        for pos, rec in enumerate(recs):
            self._pos = pos
            self.report.events[rec.event] += 1
            if rec.event != "kvm_mmu_paging_element" and rec.event not in _WALK_TAIL:
                self._replay(rec.key)
            h = getattr(self, "_on_" + rec.event, None)
            if h is not None:
                try:
                    h(rec)
                except KeyError as e:
                    # a text form that does not print this field (e.g. trace-cmd's plugin):
                    # the state this record changes is unknown from here on
                    self._parts = []
                    self._v(_EVENT_CHECK.get(rec.event, "page_hash"), "not_checkable", rec,
                            reason=e.reason(rec.index) if isinstance(e, _NoField) else
                            f"the record has no {e.args[0]!r} field")
                    if rec.event in _STATE_EVENTS:
                        self.tainted.setdefault("page_hash", rec.index)
                        self.tainted.setdefault("write_tracking", rec.index)
                self._flush()
        for key in list(self.walk_state):
            self._finish_walk(key)
        self._missing_floods()
        self._flush()
        if self.slots is not None:
            self._judge_unzapped_changes()
            self._judge_dirty_log()
            self._judge_mmio_exits()
        for (gfn, role), idx in self.pending_free.items():
            self.report.add(Verdict("page_hash", "not_checkable", idx, "kvm_mmu_prepare_zap_page",
                                    what=f"in-use root gfn {gfn:#x} role {role:#x}",
                                    reason="zapped while in use; the trace ends before it is freed"))
        return self.report

    # -------------------------------------------------------------- walks
    def _on_kvm_mmu_pagetable_walk(self, rec):
        self._finish_walk(rec.key)
        self._missing_floods()
        f = self.fault.get(rec.key)
        if f is not None and f.requested is not None and not f.done:
            f.done = True
            req = f.requested
            self.report.add(Verdict("set_spte", "not_checkable", req.index, req.event,
                                    what=f"gfn {req.fields['gfn']:#x}: no kvm_mmu_set_spte",
                                    reason="mmu_set_spte traces only a changed SPTE (or the "
                                           "fault was retried); which SPTE stayed is not traced"))
        self.walk_state[rec.key] = {"addr": rec.fields["addr"], "pferr": rec.fields["pferr"],
                                    "elems": [], "rec": rec, "walk": None, "expect": []}

    def _on_kvm_mmu_paging_element(self, rec):
        w = self.walk_state.get(rec.key)
        if w is None or w["walk"] is not None:
            self._v("guest_walk", "not_checkable", rec, reason="paging element outside a walk")
            return
        w["elems"].append((rec.fields["pte"], rec.fields["level"]))

    def _replay(self, key):
        """Replay the walk in progress (walk.walk_observed) once its elements are all in: the
        gptes give pt_access, table gfns, pte_access and the A/D bits and walker error the
        kernel must trace next."""
        w = self.walk_state.get(key)
        if w is None or w["walk"] is not None:
            return w
        root = self.root.get(key)
        wrec = w["rec"]
        if root is None:
            w["walk"] = False
            self.report.add(Verdict("guest_walk", "not_checkable", wrec.index, wrec.event,
                                    reason="no shadow root seen yet: the guest paging mode is unknown"))
            return w
        vcpu = vcpu_from_root(self.era, root[1], root[0], maxphyaddr=self.cfg.maxphyaddr,
                              gbpages=self.gbpages, amd=self.amd)
        if vcpu is None:
            w["walk"] = False
            self.report.add(Verdict("guest_walk", "not_checkable", wrec.index, wrec.event,
                                    reason=f"no vCPU state gives the root role {root[1]:#x}"))
            return w
        inferred = ("vcpu registers: from the root's role word",
                    f"guest CPUID: MAXPHYADDR {self.cfg.maxphyaddr}, GBPAGES "
                    f"{'on' if self.gbpages else 'off'}, {'AMD' if self.amd else 'Intel'}")
        try:
            mmu = W.GuestMmu.for_vcpu(vcpu, self.era, "shadow")
            walk = W.walk_observed(mmu, w["addr"], w["pferr"], w["elems"])
        except W.WalkError as e:
            w["walk"] = False
            self.report.add(Verdict("guest_walk", "disagreed", wrec.index, wrec.event,
                                    what="walk replay", model="a walk of these gptes",
                                    kernel=f"{len(w['elems'])} elements", reason=str(e),
                                    inferred=inferred))
            return w
        w["walk"] = walk
        w["inferred"] = inferred
        w["expect"] = [e for e in walk.events if e[0] in _WALK_TAIL]
        if walk.ok:
            f = _Fault(walk, mmu, walk.fault_pte_access(mmu), {}, {})
            for sp in W.shadow_pages(mmu, walk):
                f.chain[sp.level], f.chain_gfn[sp.level] = sp.role, sp.gfn
            self.fault[key] = f
        return w

    def _walk_tail(self, rec):
        """kvm_mmu_set_accessed_bit / set_dirty_bit / walker_error against the replay."""
        w = self._replay(rec.key)
        if w is None or w["walk"] is None:
            self._v("guest_walk", "not_checkable", rec, reason="not inside a guest walk")
            return
        if w["walk"] is False:
            self._v("guest_walk", "not_checkable", rec, reason="the walk could not be replayed")
            return
        exp = w["expect"].pop(0) if w["expect"] else None
        self._cmp("guest_walk", rec, rec.event.replace("kvm_mmu_", ""), exp,
                  (rec.event, dict(rec.fields)), inferred=w["inferred"],
                  reason="FNAME(update_accessed_dirty_bits) / walker error of the replayed walk")

    _on_kvm_mmu_set_accessed_bit = _walk_tail
    _on_kvm_mmu_set_dirty_bit = _walk_tail
    _on_kvm_mmu_walker_error = _walk_tail

    def _finish_walk(self, key):
        """The walk's verdict (every predicted A/D/error event seen), and for a walk that was
        not followed by kvm_mmu_spte_requested: a write to a write-tracked gfn is emulated
        (kvm_mmu_track_write)."""
        w = self._replay(key)
        self.walk_state.pop(key, None)
        if w is None or not w["walk"]:
            return
        wrec, walk = w["rec"], w["walk"]
        missing = [e for e in w["expect"]]
        what = (f"gfn {walk.gfn:#x} level {walk.leaf_level}" if walk.ok
                else f"fault {walk.fault}")
        if missing:
            self.report.add(Verdict("guest_walk", "disagreed", wrec.index, wrec.event, what=what,
                                    model=missing, kernel="not traced", inferred=w["inferred"],
                                    reason="events the replayed walk emits are missing"))
        else:
            self.report.add(Verdict("guest_walk", "agreed", wrec.index, wrec.event, what=what,
                                    inferred=w["inferred"], reason="walk_observed replay"))
        f = self.fault.get(key)
        why = self._no_slot_fault(key, walk, wrec)
        if why is not None and (f is None or f.walk is not walk or f.requested is None):
            self.emulated.setdefault(walk.gfn, wrec)
            self.report.add(Verdict("mmio", "agreed", wrec.index, wrec.event,
                                    what=f"gfn {walk.gfn:#x}: {why}", model="emulated",
                                    kernel="no SPTE requested",
                                    reason="mmio_caching off: kvm_handle_noslot_fault / "
                                           "RET_PF_EMULATE, no MMIO SPTE"))
        if f is None or f.walk is not walk or f.requested is not None:
            return
        if walk.access & PFERR_WRITE and self.mmu.is_write_tracked(walk.gfn):
            if not walk.access & PFERR_PRESENT:
                self._track_write(walk.gfn, wrec)
                slot = self._slot(walk.gfn)
                if slot is not None and "dirty_log" in slot[2]:
                    self._mark_dirty(walk.gfn, wrec, "emulated write: kvm_vcpu_write_guest "
                                                     "marks the page dirty")
            else:
                # page_fault_handle_page_track: shadow_page_table_clear_flood(addr).
                self._clear_flood(f)

    def _clear_flood(self, f):
        """clear_sp_write_flooding_count of every indirect SP on the fault's shadow walk, root
        down to the guest leaf's level (FNAME(fetch) before kvm_mmu_spte_requested;
        shadow_page_table_clear_flood for a write to a write-tracked gfn)."""
        for lvl, role in f.chain.items():
            sp = self.mmu.lookup(f.chain_gfn[lvl], role)
            if sp is not None:
                sp.write_flooding_count = 0

    def _track_write(self, gfn, rec):
        """kvm_mmu_track_write for one (inferred aligned 8-byte) emulated write: every valid
        upper-level indirect SP of the gfn counts it; at WRITE_FLOOD_THRESHOLD the kernel zaps
        it right away (the next kvm_mmu_prepare_zap_page records must be those SPs)."""
        self.writes[gfn] += 1
        for sp in self.mmu.valid_pages_with_gptes(gfn):
            if sp.level > 1:
                sp.write_flooding_count += 1
                if sp.write_flooding_count >= WRITE_FLOOD_THRESHOLD:
                    self.expect_flood[(sp.gfn, sp.role)] = rec

    def _missing_floods(self):
        for (gfn, role), rec in self.expect_flood.items():
            self.report.add(Verdict("write_flood", "disagreed", rec.index, rec.event,
                                    what=f"flood zap of gfn {gfn:#x} role {role:#x}",
                                    model="zapped", kernel="not zapped",
                                    inferred=("emulated writes: from write walks without the "
                                              "present bit to write-tracked gfns",
                                              "write size: aligned 8-byte"),
                                    reason="detect_write_flooding: the emulated write reaches "
                                           "the threshold, kvm_mmu_track_write zaps the SP"))
        self.expect_flood.clear()

    # -------------------------------------------------------------- pages
    def _expected_role(self, rec, gfn, word):
        """(expected word, expected gfn, inferred, reason) for a get_page record."""
        f = self.fault.get(rec.key)
        level = word & 0xF
        direct = bool(word >> 7 & 1)
        if f is not None and f.requested is None and not direct and level in f.chain \
                and level < max(f.chain):
            return f.chain[level], f.chain_gfn.get(level), (), "kvm_mmu_child_role from the walk"
        if f is not None and f.requested is not None and direct:
            exp = self._direct_role(f, level)
            if exp is None:
                return None, None, (), "no parent shadow page on the walk"
            pages = 1 << (9 * level)
            return exp, f.requested.fields["gfn"] & ~(pages - 1), (), \
                "direct child of a guest huge page (gw->pte_access)"
        if not direct and level >= 4:
            v = vcpu_from_root(self.era, word, gfn, maxphyaddr=self.cfg.maxphyaddr)
            if v is None:
                return None, None, (), "no vCPU state yields this root role word"
            return (v.root_role(self.era, "shadow"), gfn,
                    ("vcpu registers: from the root's role word (CR0.WP, CR4.SMEP/SMAP/PAE, "
                     "EFER.LMA, SMM, guest mode)", "root gfn: the guest CR3"),
                    "kvm_calc_shadow_mmu_root_page_role")
        return None, None, (), "no guest walk or fault explains this shadow page"

    def _direct_role(self, f, level):
        """The role of the direct SP at ``level`` below a guest huge page (walk.shadow_pages
        with the requested goal level: direct children with gw->pte_access)."""
        d = f.direct.get(level)
        return d[0] if d is not None else None

    def _on_kvm_mmu_get_page(self, rec):
        gfn, word = rec.fields["gfn"], rec.role
        if word is None:
            self._v("role", "not_checkable", rec, reason="record without a role word")
            return
        exp, exp_gfn, inferred, why = self._expected_role(rec, gfn, word)
        known = rec.role_known & 0xFFFFFFFF
        if exp is None:
            self._v("role", "not_checkable", rec, what=f"gfn {gfn:#x} role {word:#x}", reason=why)
        else:
            unk = ~known & 0xFFFFFFFF & self.era.base.used_mask
            self._cmp("role", rec, "role word", exp, word, bits_fn=self._role_bits, known=known,
                      inferred=inferred, reason=why + (f"; bits {unk:#x} not in the text" if unk
                                                       else ""))
            if exp_gfn is not None:
                self._cmp("role", rec, "gfn", exp_gfn, gfn, reason=why)
        # page hash: existing or new, generation, unsync, root_count
        created = rec.fields.get("created")
        sp = self.mmu.lookup(gfn, word)
        if created is not None:
            self._cmp("page_hash", rec, "new/existing", int(sp is None), int(created),
                      reason="kvm_mmu_find_shadow_page over the page hash")
        gen = rec.fields.get("mmu_valid_gen")
        if gen is not None:
            self._cmp("page_hash", rec, "mmu_valid_gen",
                      sp.mmu_valid_gen if sp is not None else self.mmu.mmu_valid_gen, gen)
        if sp is not None:
            self._cmp("page_hash", rec, "unsync", int(sp.unsync), int(rec.fields.get("unsync", 0)))
        is_root = not (word >> 7 & 1) and (word & 0xF) >= 4
        rc = rec.fields.get("root_count")
        if rc is not None and (sp is None or not is_root):
            self._cmp("page_hash", rec, "root_count", 0 if sp is None else sp.root_count, rc)
        # adopt the kernel's view
        if created and sp is not None:
            # the kernel found no valid page where the model has one (a disagreement reported
            # above): the model's page goes, as if zapped, and the kernel's new page takes its place
            self.mmu.prepare_zap(sp)
            sp = None
        if sp is None:
            sp, _ = self.mmu.get(gfn, word)
            if sp.has_gptes():
                # account_shadowed: the gfn's leaf SPTEs lose W and MMU-W
                # (kvm_mmu_slot_gfn_write_protect, also behind __kvm_write_track_add_gfn)
                self._write_protect(gfn)
        elif not sp.direct:
            sp.write_flooding_count = 0
        sp.unsync = bool(rec.fields.get("unsync", sp.unsync))
        if rc is not None:
            sp.root_count = rc
        if is_root:
            sp.root_count += 1
            self.root[rec.key] = (gfn, word)
        f = self.fault.get(rec.key)
        if f is not None and not sp.direct and (word & 0xF) in f.chain:
            f.chain[word & 0xF], f.chain_gfn[word & 0xF] = word, gfn
        if f is not None and f.requested is not None and sp.direct:
            f.direct[word & 0xF] = (word, gfn)

    def _on_kvm_mmu_sync_page(self, rec):
        """kvm_unlink_unsync_page traces before it clears sp->unsync (mmu_sync_children, after
        write-protecting the gfn; or a zap of an unsync page): the page must be unsync, and
        is sync afterwards."""
        gfn = rec.fields["gfn"]
        sp = self.mmu.any_page(gfn, rec.role or 0, rec.fields.get("mmu_valid_gen"))
        if sp is None:
            return              # the zap path: the page is already gone from the model
        self._cmp("write_tracking", rec, "unsync before the sync", 1, int(sp.unsync),
                  reason="kvm_unlink_unsync_page is called for unsync pages only")
        self._cmp("write_tracking", rec, "unsync field", 1, int(rec.fields.get("unsync", 1)),
                  reason="the event fires before sp->unsync is cleared")
        sp.unsync = False
        self._write_protect(gfn)

    def _on_kvm_mmu_unsync_page(self, rec):
        self.pending_unsync[rec.key].append((rec.fields["gfn"], rec.role))

    def _write_protect(self, gfn):
        """kvm_mmu_slot_gfn_write_protect: W and MMU-W cleared on the gfn's leaf SPTEs."""
        for p in self.gfn_sptes.get(gfn, ()):
            if p in self.sptes:
                self.sptes[p] &= ~(PT_WRITABLE_MASK | self.cfg.mmu_writable_mask)

    def _on_kvm_mmu_prepare_zap_page(self, rec):
        # a zap ends the walk before it: an emulated write's walk is done when
        # kvm_mmu_track_write zaps
        self._finish_walk(rec.key)
        gfn, word = rec.fields["gfn"], rec.role or 0
        sp = self.mmu.any_page(gfn, word, rec.fields.get("mmu_valid_gen"))
        rc = rec.fields.get("root_count", 0)
        key = (gfn, word & ~ROLE_INVALID)
        if sp is None:
            self._v("page_hash", "disagreed", rec, what="zap of a page the model does not have",
                    model=None, kernel=f"gfn {gfn:#x} role {word:#x}",
                    reason="every zapped page was created before (kvm_mmu_get_page new)")
        elif word & ROLE_INVALID:
            # an obsolete root whose last reference went: the free of a root zapped in use
            if rc == 0:
                self.pending_free.pop(key, None)
                self._v("page_hash", "agreed", rec, what="zapped in-use root freed",
                        reason="mmu_free_root_page: root_count 0 and role.invalid")
            else:
                self._v("page_hash", "disagreed", rec, what="invalid root zapped", model=0,
                        kernel=rc, reason="an invalid root is zapped again only at root_count 0")
        elif self.mmu.page_hash.is_obsolete(sp):
            # kvm_zap_obsolete_pages walks active_mmu_pages from the tail (oldest first)
            old = [x for x in reversed(self.mmu.page_hash.active_mmu_pages)
                   if self.mmu.page_hash.is_obsolete(x) and not x.role & ROLE_INVALID]
            exp = (old[0].gfn, old[0].role) if old else None
            self._cmp("page_hash", rec, "obsolete page zapped in list order", exp, (gfn, word),
                      reason="kvm_zap_obsolete_pages: oldest obsolete page first")
        elif self._in_zap_all(rec, sp):
            self._v("page_hash", "agreed", rec, what="kvm_mmu_zap_all: newest page first",
                    reason="every valid page zapped in active_mmu_pages order (mmu notifier "
                           "release / VM teardown)")
        else:
            self._judge_flood(rec, sp)
        if rc and not word & ROLE_INVALID:
            self.pending_free[key] = rec.index
        if sp is not None:
            sp.root_count = rc
            self.mmu.prepare_zap(sp)
            if not rc:
                for p in [p for p, k in self.sptep_sp.items() if k == key]:
                    del self.sptep_sp[p]

    def _in_zap_all(self, rec, sp) -> bool:
        """Is this zap part of a kvm_mmu_zap_all run: consecutive prepare_zap records that
        zap every valid page, newest first?"""
        if rec.index in self._zap_all:
            return True
        expected = [(x.gfn, x.role) for x in self.mmu.page_hash.active_mmu_pages
                    if not x.role & ROLE_INVALID and not self.mmu.page_hash.is_obsolete(x)]
        if len(expected) < 2 or expected[0] != (sp.gfn, sp.role):
            return False
        run = []
        for r in self._recs[self._pos:self._pos + len(expected)]:
            if r.event != "kvm_mmu_prepare_zap_page":
                break
            run.append(r)
        if [(r.fields["gfn"], r.role) for r in run] != expected:
            return False
        self._zap_all.update((r.index, True) for r in run)
        return True

    def _judge_flood(self, rec, sp):
        """write_flood: a zapped valid indirect upper-level SP, not a root, must have seen
        WRITE_FLOOD_THRESHOLD emulated writes since its flood count was last cleared."""
        word = rec.role or 0
        if sp is None or word & ROLE_INVALID or word >> 7 & 1 or (word & 0xF) <= 1 \
                or rec.fields.get("root_count", 0) or self.mmu.page_hash.is_obsolete(sp):
            return
        n = sp.write_flooding_count
        if self.expect_flood.pop((sp.gfn, sp.role), None) is not None or n >= WRITE_FLOOD_THRESHOLD:
            self._v("write_flood", "agreed", rec, what=f"flooded after {n} writes",
                    model=True, kernel=True,
                    inferred=("emulated writes: from write faults on write-tracked gfns",
                              "write size: aligned 8-byte"),
                    reason="detect_write_flooding")
        else:
            self._v("write_flood", "not_checkable", rec, what=f"zap after {n} visible writes",
                    reason="zap of a valid upper-level page without enough visible writes "
                           "(unprotect-and-retry, memslot or misaligned write)")

    def _on_kvm_mmu_zap_all_fast(self, rec):
        """The event fires before the toggle: it records the old generation and
        n_used_mmu_pages; then every current page is obsolete."""
        self._cmp("page_hash", rec, "mmu_valid_gen before the toggle", self.mmu.mmu_valid_gen,
                  rec.fields["mmu_valid_gen"],
                  reason="trace_kvm_mmu_zap_all_fast precedes the 0<->1 toggle")
        used = rec.fields.get("mmu_used_pages", rec.fields.get("used_pages"))
        if used is not None:
            self._cmp("page_hash", rec, "used_pages", self.mmu.used_pages, used,
                      reason="n_used_mmu_pages: allocated minus freed shadow pages")
        if self.mmu.mmu_valid_gen != rec.fields["mmu_valid_gen"]:
            self.mmu.page_hash.mmu_valid_gen = rec.fields["mmu_valid_gen"]
        self.mmu.zap_all_fast()
        if self.slots is not None:
            c = self._apply_slot_change()
            self._cmp("page_hash", rec, "memslot change behind it", True, c is not None,
                      reason="kvm_mmu_zap_all_fast comes from a memslot DELETE or MOVE (or a "
                             "read-only toggle, which is a delete) of the guest description")

    # -------------------------------------------------------------- SPTEs
    def _on_kvm_mmu_spte_requested(self, rec):
        f = self.fault.get(rec.key)
        if f is None or f.requested is not None:
            self._v("set_spte", "not_checkable", rec, reason="spte_requested without a guest walk")
            return
        f.requested = rec
        self._clear_flood(f)           # FNAME(fetch)'s first shadow walk loop, before this event
        why = self._no_slot_fault(rec.key, f.walk, rec)
        if why is not None:
            self._v("mmio", "disagreed", rec, what=f"gfn {f.walk.gfn:#x}: {why}",
                    model="emulated, no SPTE", kernel="SPTE requested",
                    reason="mmio_caching off: the fault is emulated")
        goal = rec.fields["level"]
        if 1 <= goal <= f.walk.leaf_level:
            for sp in W.shadow_pages(f.mmu, f.walk, goal_level=goal):
                if sp.direct:
                    f.direct[sp.level] = (sp.role, sp.gfn)
        if f.walk.ok:
            self._cmp("set_spte", rec, "requested gfn", f.walk.gfn, rec.fields["gfn"],
                      reason="fault->gfn is the walk's gfn")
        self.pending_unsync[rec.key] = []

    def _slot(self, gfn):
        """The memslot (lo gfn, end gfn, flags) holding gfn, or None (also when unknown)."""
        for lo, hi, flags in (self.slots or {}).values():
            if lo <= gfn < hi:
                return lo, hi, flags
        return None

    def _slot_id(self, gfn):
        for sid, (lo, hi, _) in (self.slots or {}).items():
            if lo <= gfn < hi:
                return sid, gfn - lo
        return None

    def _mark_dirty(self, gfn, rec, why):
        sp = self._slot_id(gfn)
        if sp is not None:
            self.dirty_marks.setdefault(sp, (rec, why))

    def _judge_mmio_exits(self):
        """Every KVM_EXIT_MMIO userspace saw (capture guest result) is on a gfn the model
        emulates (no memslot, or a write to a read-only slot)."""
        for gfn in self.mmio_exits or ():
            rec = self.emulated.get(gfn)
            self.report.add(Verdict("mmio", "agreed" if rec else "disagreed",
                                    rec.index if rec else 0, rec.event if rec else "",
                                    what=f"KVM_EXIT_MMIO at gfn {gfn:#x}", model=rec is not None,
                                    kernel=True, reason="an MMIO exit needs a fault the model "
                                                        "emulates (mmio_caching off)"))

    def _judge_dirty_log(self):
        """The pages the model marked dirty (make_spte's mark_page_dirty_in_slot, emulated
        writes) against the dirty bitmaps userspace read after each run (KVM_GET_DIRTY_LOG,
        in the capture's guest result), per slot."""
        if self.dirty_log is None:
            return
        for sid in sorted({s for s, _ in self.dirty_marks} | set(self.dirty_log)):
            model = sorted(i for s, i in self.dirty_marks if s == sid)
            kernel = sorted(self.dirty_log.get(sid, ()))
            marks = [self.dirty_marks[(sid, i)] for i in model]
            rec = marks[0][0] if marks else self._recs[-1] if self._recs else None
            inferred = tuple(dict.fromkeys(w for _, w in marks if w))
            v = Verdict("set_spte", "agreed" if model == kernel else "disagreed",
                        rec.index if rec else 0, rec.event if rec else "",
                        what=f"dirty log of slot {sid}", model=model, kernel=kernel,
                        reason="mark_page_dirty_in_slot (make_spte of a writable SPTE in a "
                               "dirty-logged slot) against KVM_GET_DIRTY_LOG", inferred=inferred)
            self.report.add(v)

    def _zaps(self, c) -> bool:
        """Does this memslot change reach kvm_mmu_zap_all_fast?  DELETE and MOVE do (the
        slot-zap-all quirk), and so does toggling KVM_MEM_READONLY, which KVM refuses in place
        (userspace deletes and re-creates the slot); a dirty-logging flag change does not."""
        if c["action"] != "flags":
            return True
        old = (self.slots or {}).get(int(c.get("slot", -1)))
        return old is not None and ("readonly" in old[2]) != ("readonly" in c.get("flags", ()))

    def _apply_one(self, c):
        sid = int(c.get("slot", -1))
        if sid not in self.slots:
            return
        lo, hi, fl = self.slots.pop(sid)
        if c["action"] == "move":
            n = int(c.get("gpa", 0)) >> 12
            self.slots[sid] = (n, n + hi - lo, fl)
        elif c["action"] == "flags":
            self.slots[sid] = (lo, hi, tuple(c.get("flags", ())))

    def _apply_slot_change(self):
        """One kvm_mmu_zap_all_fast: apply the guest description's memslot changes up to and
        including the next one that zaps; the rest of that run's flag-only changes follow
        (they happen before the guest runs again).  Returns the zapping change, or None."""
        while self.pending_changes:
            c = self.pending_changes.pop(0)
            zaps = self._zaps(c)
            self._apply_one(c)
            if zaps:
                run = c.get("run")
                while (self.pending_changes and self.pending_changes[0].get("run") == run
                       and not self._zaps(self.pending_changes[0])):
                    self._apply_one(self.pending_changes.pop(0))
                return c
        return None

    def _judge_unzapped_changes(self):
        """A DELETE/MOVE left when the trace ends had no kvm_mmu_zap_all_fast: a disagreement
        when the guest result says its run happened, else not checkable."""
        for c in self.pending_changes:
            if not self._zaps(c):
                self._apply_one(c)
                continue
            ran = self.runs_done is not None and c.get("run") is not None \
                and c["run"] < self.runs_done
            rec = self._recs[-1] if self._recs else None
            self.report.add(Verdict("page_hash", "disagreed" if ran else "not_checkable",
                                    rec.index if rec else 0, rec.event if rec else "",
                                    what=f"memslot {c['action']} of slot {c.get('slot')} "
                                         f"(run {c.get('run')})", model="kvm_mmu_zap_all_fast",
                                    kernel="none", reason="a DELETE/MOVE zaps all pages" + (
                                        "" if ran else "; the guest result does not say the "
                                                       "run happened")))
        self.pending_changes = []

    def _no_slot_fault(self, key, walk, wrec):
        """mmio: with MMIO caching off a fault on a gfn without memslot (or a write to a
        read-only one) is emulated: no kvm_mmu_spte_requested, no MMIO SPTE."""
        if self.slots is None or self.cfg.mmio_caching or not walk.ok:
            return None
        slot = self._slot(walk.gfn)
        if slot is None:
            return "no memslot"
        if "readonly" in slot[2] and walk.access & PFERR_WRITE:
            return "write to a read-only memslot"
        return None

    def _host_writable(self, gfn, pfn, level):
        slot = self._slot(gfn)
        if slot is not None and "readonly" in slot[2]:
            return False, ()       # a KVM_MEM_READONLY slot: never map_writable (not inferred)
        if self.host_writable_fn is not None:
            return bool(self.host_writable_fn(gfn, pfn)), ()
        if self.host_zero_pfn is not None and level == 1:
            return pfn != self.host_zero_pfn, ()     # the recorder read the zero page's pfn
        hw = (pfn, level) not in self.zero_pfns
        why = ("host_writable: false, the pfn serves several gfns (the host's shared zero page)"
               if not hw else "host_writable: true, the pfn is not shared (not the zero page)")
        return hw, (why,)

    def _on_kvm_mmu_set_spte(self, rec):
        fl = rec.fields
        gfn, spte_k, sptep, level = fl["gfn"], fl["spte"], fl.get("sptep"), fl["level"]
        f = self.fault.get(rec.key)
        pages = 1 << (9 * (level - 1))
        inferred = []
        if f is not None and f.requested is not None and not f.done:
            req = f.requested
            f.done = True
            rl = req.fields["level"]
            if rl != level or (req.fields["gfn"] & ~(pages - 1)) != gfn:
                self._cmp("set_spte", rec, "gfn/level of the request", (req.fields["gfn"] &
                          ~(pages - 1), rl), (gfn, level))
            if level < f.walk.leaf_level:
                sp_role = self._direct_role(f, level)
                if sp_role is not None:
                    pass
            else:
                sp_role = f.chain.get(level)
            if sp_role is None or not f.walk.ok:
                self._v("set_spte", "not_checkable", rec, reason="the leaf shadow page is unknown")
                self._adopt(sptep, gfn, spte_k, None)
                return
            pfn = req.fields["pfn"] & ~(pages - 1)
            hw, why = self._host_writable(gfn, pfn, level)
            inferred += list(why)
            old = self.sptes.get(sptep)
            if sptep is not None and sptep not in self.sptes:
                old = None
            prefetch = False
            pte_access = f.pte_access
        else:
            # prefetch: mmu_set_spte(..., fault = NULL): prefetch, host-writable
            sp_key = self.sptep_sp.get(sptep & ~0xFFF) if sptep is not None else None
            if sp_key is None:
                self._v("set_spte", "not_checkable", rec,
                        reason="prefetch into a shadow page no fault identified")
                self._adopt(sptep, gfn, spte_k, None)
                return
            sp_role = sp_key[1]
            pfn = S.spte_to_pfn(self.cfg, spte_k)
            hw, prefetch, old = True, True, self.sptes.get(sptep)
            inferred += ["prefetch: a set_spte with no spte_requested before it",
                         "pfn: taken from the SPTE (prefetched pages are not requested)",
                         "shadow page: from the SPTE pointer's page"]
            if sp_role >> 7 & 1:
                pte_access = (sp_role >> 8) & 7
            else:
                pte_access = self._prefetch_access(sp_role, gfn, pfn, old, spte_k)
                inferred.append("pte_access: the prefetched gpte is not traced; the subset of "
                                "role.access that reproduces the SPTE")
        slot = self._slot(gfn)
        out = make_spte_outcome(self.cfg, self.mmu, sp_role, gfn, pfn, pte_access=pte_access,
                                old_spte=old, prefetch=prefetch, host_writable=hw, apply=True,
                                dirty_tracked=slot is not None and "dirty_log" in slot[2])
        if out.mark_page_dirty:
            self.report.dirty_marked += 1
            self._mark_dirty(gfn, rec, "")
        if old is None and sptep is not None and sptep not in self.sptes:
            inferred.append("old SPTE: none seen at this pointer (non-present)")
        v = self._cmp("set_spte", rec, f"spte (level {level})", out.spte, spte_k,
                      bits_fn=self._spte_bits, inferred=inferred,
                      reason="make_spte" + (" (prefetch)" if prefetch else ""))
        for w in out.warnings:
            self.report.warnings.append(f"record {rec.index}: {w}")
        self._check_perm_fields(rec, spte_k)
        self._judge_unsync(rec, out, gfn, spte_k, inferred)
        if v.status == "disagreed":
            self._adopt_unsync(rec)
        self.pending_unsync[rec.key] = []
        sp_gfn = (gfn & ~((1 << (9 * level)) - 1)) if sp_role >> 7 & 1 else None
        self._adopt(sptep, gfn, spte_k, (sp_gfn, sp_role), f)

    def _prefetch_access(self, sp_role, gfn, pfn, old, spte_k):
        cand = [a for a in range(8) if a & ~((sp_role >> 8) & 7) == 0]
        for a in sorted(cand, key=lambda a: (a & R.ACC_WRITE, a)):
            out = make_spte_outcome(self.cfg, self.mmu, sp_role, gfn, pfn, pte_access=a,
                                    old_spte=old, prefetch=True, host_writable=True, apply=False)
            if out.spte == spte_k:
                return a
        return (sp_role >> 8) & 7

    def _check_perm_fields(self, rec, spte_k):
        """The r/x/u fields of kvm_mmu_set_spte against the SPTE."""
        fl = rec.fields
        if "r" in fl:
            self._cmp("set_spte", rec, "r field", int(bool(self.cfg.present_mask or spte_k & 1)),
                      int(bool(fl["r"])), reason="shadow_present_mask || PT_PRESENT")
        if "x" in fl:
            self._cmp("set_spte", rec, "x field", int(S.is_executable_pte(self.cfg, spte_k)),
                      int(bool(fl["x"])), reason="is_executable_pte")
        if "u" in fl and fl["u"] in (0, 1):
            self._cmp("set_spte", rec, "u field", int(bool(spte_k & self.cfg.user_mask)),
                      int(fl["u"]))

    def _judge_unsync(self, rec, out, gfn, spte_k, inferred):
        """write_tracking: the mmu_try_to_unsync_pages decision against W in the recorded
        SPTE and the kvm_mmu_unsync_page records before it."""
        seen = sorted((g, (w or 0) & ~ROLE_INVALID) for g, w in self.pending_unsync[rec.key])
        if out.unsync is None:
            if seen:
                self._cmp("write_tracking", rec, "unsynced pages", [], seen,
                          reason="no unsync attempt predicted (no write access)")
            return
        model = sorted(out.unsync.unsynced)
        wr_k = bool(spte_k & 2)
        self._cmp("write_tracking", rec, "writable", int(out.unsync.allowed), int(wr_k),
                  reason=f"mmu_try_to_unsync_pages: {out.unsync.reason}", inferred=inferred)
        self._cmp("write_tracking", rec, "unsynced pages", model, seen,
                  reason="kvm_mmu_unsync_page records")

    def _adopt_unsync(self, rec):
        for g, w in self.pending_unsync[rec.key]:
            sp = self.mmu.any_page(g, w or 0)
            if sp is not None:
                sp.unsync = True

    def _adopt(self, sptep, gfn, spte_k, sp_key, f=None):
        if sptep is None:
            return
        self.sptes[sptep] = spte_k
        self.gfn_sptes[gfn].add(sptep)
        if sp_key is not None:
            gfn_sp = sp_key[0]
            role = sp_key[1]
            if gfn_sp is None and f is not None:
                gfn_sp = f.chain_gfn.get(role & 0xF)
            self.sptep_sp[sptep & ~0xFFF] = (gfn_sp, role)

    # -------------------------------------------------------------- MMIO
    def _on_mark_mmio_spte(self, rec):
        if not self.cfg.mmio_caching:
            self._v("mmio", "disagreed", rec, what="MMIO SPTE created", model=False, kernel=True,
                    reason="MMIO caching is off in the configuration: no MMIO SPTE is made")
            return
        f = self.fault.get(rec.key)
        if f is None or not f.walk.ok:
            self._v("mmio", "not_checkable", rec, reason="no guest walk before the MMIO SPTE")
            return
        self._cmp("mmio", rec, "gfn", f.walk.gfn, rec.fields["gfn"])
        self._cmp("mmio", rec, "access", f.pte_access & self.cfg.mmio_access_mask,
                  rec.fields["access"], reason="pte_access & shadow_mmio_access_mask")

    def _on_check_mmio_spte(self, rec):
        from . import mmio as M
        fl = rec.fields
        if not self.cfg.mmio_caching:
            self._v("mmio", "disagreed", rec, what="MMIO SPTE checked", model=False, kernel=True,
                    reason="MMIO caching is off: no MMIO SPTE exists to check")
            return
        self._cmp("mmio", rec, "spte-gen", M.get_mmio_spte_generation(self.cfg, fl["spte"]),
                  fl["spte_gen"], reason="get_mmio_spte_generation")
        self._cmp("mmio", rec, "valid", int(M.check_mmio_spte(self.cfg, fl["spte"], fl["kvm_gen"])),
                  int(fl["valid"]), reason="check_mmio_spte")

    def _on_handle_mmio_page_fault(self, rec):
        if not self.cfg.mmio_caching:
            self._v("mmio", "disagreed", rec, what="MMIO page fault", model=False, kernel=True,
                    reason="MMIO caching is off: no MMIO SPTE faults")


def vcpu_from_root(era, word: int, gfn: int = 0, *, maxphyaddr: int = 48,
                   gbpages: bool = False, amd: bool = True):
    """The vCPU registers a 4/5-level shadow root implies (inferred; the trace has no
    registers): CR0.PG/PE, CR0.WP from cr0_wp, CR4.PAE, CR4.LA57 from level 5, CR4.SMEP/SMAP
    from smep/smap_andnot_wp, EFER.LME/LMA, EFER.NX (forced into every shadow root, so assumed
    on), CR3 = the root's gfn, SMM and guest mode.  None when no register set gives ``word``."""
    era = R.get_era(era)
    gfn = C.u64("gfn", gfn)
    f = era.base.unpack(word)
    lvl = f["level"]
    if lvl not in (4, 5) or f["direct"] or f.get("has_4_byte_gpte") or f["invalid"]:
        return None
    wp = bool(f["cr0_wp"])
    if wp and (f["smep_andnot_wp"] or f["smap_andnot_wp"]):
        return None
    cr4 = V.CR4_PAE | (V.CR4_LA57 if lvl == 5 else 0) | (V.CR4_SMEP if f["smep_andnot_wp"] else 0) \
        | (V.CR4_SMAP if f["smap_andnot_wp"] else 0)
    return V.Vcpu(cr0=V.CR0_PE | V.CR0_PG | (V.CR0_WP if wp else 0), cr4=cr4,
                  efer=V.EFER_LME | V.EFER_LMA | V.EFER_NX, cr3=(gfn << 12) & _U64,
                  maxphyaddr=maxphyaddr, gbpages=gbpages, amd=amd, smm=bool(f["smm"]),
                  guest_mode=bool(f.get("guest_mode", 0)))


def dirty_log_pages(runs) -> dict:
    """{slot: set of page indexes} from the runner's per-run dirty bitmaps (hex of the
    little-endian KVM_GET_DIRTY_LOG bitmap words), united over the runs."""
    out: dict[int, set[int]] = {}
    for run in runs:
        for sid, hexbits in (run.get("dirty") or {}).items():
            bits = int.from_bytes(bytes.fromhex(hexbits), "little")
            pages = out.setdefault(int(sid), set())
            i = 0
            while bits:
                if bits & 1:
                    pages.add(i)
                bits >>= 1
                i += 1
    return out


def audit_records(records, cfg: MmuConfig | None = None, era="v6.18", **kw) -> AuditReport:
    """Audit an iterable of trace records (``pykvmmu.trace`` record objects)."""
    _auditor_options(kw)
    return Auditor(cfg, era, **kw).run(records)


def _auditor_options(kw: dict) -> None:
    """Refuse a keyword that is not an :class:`Auditor` option."""
    import inspect
    names = [n for n, p in inspect.signature(Auditor).parameters.items()
             if p.kind == p.KEYWORD_ONLY]
    for k in kw:
        if k not in names:
            raise InputError(f"{k}={kw[k]!r}: not an audit option (one of {', '.join(names)})")


def _guest_inputs(guest: dict, result: dict, kw: dict) -> None:
    """The audit options a guest description and its run's result give (``kw`` wins)."""
    if guest.get("memslots") and "memslots" not in kw:
        kw["memslots"] = guest["memslots"]
        kw.setdefault("slot_changes", [dict(c, run=i) for i, run in enumerate(guest.get("runs", ()))
                                       for c in run.get("changes", ())])
    runs = result.get("runs")
    if runs and guest.get("memslots") and "dirty_log" not in kw:
        kw["dirty_log"] = dirty_log_pages(runs)
    if runs is not None and guest.get("memslots") and "runs_done" not in kw:
        kw["runs_done"] = len(runs)
    if runs and guest.get("memslots") and "mmio_exits" not in kw:
        kw["mmio_exits"] = [m["gpa"] >> 12 for run in runs for m in run.get("mmio") or ()]


def audit(path: str, cfg: MmuConfig | None = None, era: str | None = None, *,
          profile: str | None = None, maxphyaddr: int = 48, mmio_caching: bool = False,
          nx_huge_pages: bool = False, guest: dict | None = None, guest_result: dict | None = None,
          **kw) -> AuditReport:
    """Audit a trace file: a capture (.kvmcap), a saved tracefs tree, trace text, the
    ``options/fields`` text, ``trace-cmd report`` output, a perf.data file or ``perf script``
    text (pykvmmu.trace.open_trace).  The era comes from the trace's kernel version when it
    has one; text needs ``era``.  Without ``cfg`` the configuration is :func:`live_config`
    with ``profile`` (default: the one for the trace's kernel, pykvmmu.trace.spte_profile_for)
    and the other options.  ``guest`` and ``guest_result`` are the guest's description and
    what its run did (the JSON of ``pykvmmu guest demo`` and ``pykvmmu guest run``, as dicts):
    its memslots, slot changes, dirty logs and MMIO exits, for a trace that does not carry
    them (a capture of ``pykvmmu record`` does; these override it)."""
    from . import trace as T
    _auditor_options(kw)
    if cfg is not None:
        C.mmu_config(cfg)
    for name, v in (("guest", guest), ("guest_result", guest_result)):
        if v is not None and not isinstance(v, dict):
            raise InputError(f"{name}={v!r}: expected a dict (the JSON of `pykvmmu guest "
                             f"{'demo' if name == 'guest' else 'run'}`)")
    stream = T.open_trace(path, era=era)
    assert stream.era is not None                # open_trace resolves it (_resolve_era)
    with stream:                                 # its files are closed once read, refused or not
        records = list(stream)
    meta = getattr(stream, "meta", None) or {}
    if guest is None:
        guest = meta.get("guest") or {}
    if guest_result is None:
        guest_result = meta.get("guest_result") or {}
    if meta.get("host_zero_pfn") and "host_zero_pfn" not in kw and "host_writable" not in kw:
        kw["host_zero_pfn"] = int(meta["host_zero_pfn"])
    try:
        _guest_inputs(guest, guest_result, kw)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"guest / guest_result: not the JSON of `pykvmmu guest demo` / `guest run` "
                         f"({type(e).__name__}: {e})") from None
    if cfg is None:
        kver = getattr(stream, "kernel_version", None)
        prof = profile
        if prof is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")      # stable-release caveats: see docs/audit.md
                prof = T.spte_profile_for(era or stream.era.name, kver) or "v6.15"
        cfg = live_config(maxphyaddr=maxphyaddr, profile=prof, mmio_caching=mmio_caching,
                          nx_huge_pages=nx_huge_pages)
    rep = Auditor(cfg, stream.era, **kw).run(records)
    rep.era = f"{stream.era.name}" + (f" (kernel {stream.kernel_version})"
                                       if getattr(stream, "kernel_version", None) else "")
    if stream.n_errors:
        rep.warnings.append(f"{stream.n_errors} trace lines or records could not be read")
    lost = {cpu: n for cpu, d in sorted(stream.lost.items())
            if (n := sum(v for v in d.values() if isinstance(v, int)))}
    if lost:
        rep.warnings.append(f"the trace counts {sum(lost.values())} lost events ("
                            + ", ".join(f"{c}: {n}" for c, n in lost.items())
                            + "): a verdict near a loss may be about a record that was lost, not the kernel")
    return rep


def dumps(report: AuditReport) -> str:
    return json.dumps(report.to_json(), indent=1)

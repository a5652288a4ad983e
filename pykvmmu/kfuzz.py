"""Differential fuzzing of the host kernel's KVM MMU: guests run under ``record``, audited.

Each iteration runs a well-formed :class:`~pykvmmu.kvmrun.GuestDesc` on ``/dev/kvm`` under a
:class:`~pykvmmu.record.Recorder` and judges the capture with ``pykvmmu.audit`` (the model
replays every kvmmmu record).  The guests are the seed corpus (``pykvmmu/data/kernel_corpus``:
hand-picked descriptions for 2 MiB pages, aliases, page-table writes + INVLPG, CR3 reloads,
MMIO, memslot move / delete, read-only and dirty-logged slots, guest_memfd, CR0.WP=0, write
flooding) first, then by turns mutants (:func:`mutate`) of the corpus and of guests that showed
new coverage, and purely random guests (:func:`random_desc`: memslots plain / read-only /
dirty-logged / guest_memfd, 4 KiB and 2 MiB mappings with random W/NX/A/D, aliases, MMIO,
fetches, page-table writes with INVLPG, CR3 reloads or no flush, memslot delete / move / flag
changes between runs, CR0.WP on or off).  A run that does not reach its HLT, loses events, or
that the audit disagrees with is a finding: its capture (which holds ``guest.json``, so it is a
reproducer) and a text report with the evidence are written to the output directory;
:func:`replay_kernel` re-judges one offline and, where it can, live.

Every guest is valid by construction (:func:`runnable_problem` states the invariants): reads
only from present mappings, writes only through writable ones, fetches only from never-written
RET pages in slot 0, page tables / code / stack in slot 0 (never changed), U=1 everywhere on
kvm_pvm, no SMEP/SMAP.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import kvmrun as K
from . import record as R
from .errors import InputError

if TYPE_CHECKING:
    from .audit import AuditReport

__all__ = ["random_desc", "mutate", "runnable_problem", "load_corpus", "Finding", "KernelStats", "Coverage",
           "Outcome", "judge", "shrink", "fuzz_kernel", "evidence", "TRIAGE", "replay_kernel", "Replay",
           "live_unavailable"]

_DATA_LO, _DATA_HI = 0x40000, 0x100000          # slot-0 pages the program may read/write
_FETCH_GPA = 0x30000                             # slot-0 RET pages (never written)
_GVA0 = 0x10000000
_PS = K.PT_PS


def _need(name: str, value, ok: bool, rule: str) -> None:
    """Refuse an argument that breaks its rule (checked before any guest or recording)."""
    if not ok:
        raise InputError(f"{name}={value!r}: {rule}")


def _is_bool(v) -> bool:
    return v is True or v is False


def _is_seconds(v, hi: float) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v <= hi


def random_desc(rng: random.Random, host: K.HostInfo | None = None) -> K.GuestDesc:
    """A random guest description that runs to its HLTs on ``host`` (kvm_pvm if None)."""
    _need("rng", rng, isinstance(rng, random.Random), "must be a random.Random")
    _need("host", host, host is None or isinstance(host, K.HostInfo), "must be a HostInfo or None")
    gmem_ok = bool(host is None or (host.caps.get("guest_memfd") and host.caps.get("user_memory2")
                                     and host.caps.get("guest_memfd_flags", 0) & K.GUEST_MEMFD_FLAG_MMAP))
    slots = [K.Memslot(0, 0, 0x200000)]
    for i in range(1, rng.randint(1, 3) + 1):
        size = rng.choice((0x10000, 0x400000))
        flags = [f for f in ("readonly", "dirty_log") if rng.random() < 0.3]
        gm = gmem_ok and not flags and rng.random() < 0.25
        slots.append(K.Memslot(i, 0x1000000 * i, size, flags, gm))
    maps: list = []
    data: list[tuple] = []                     # (mapping, writable through it)
    gva = _GVA0

    def add(m):
        nonlocal gva
        maps.append(m)
        gva += 0x400000
        return m

    for _ in range(rng.randint(3, 10)):
        s = rng.choice(slots)
        w, nx, a, d = rng.random() < 0.7, rng.random() < 0.3, rng.random() < 0.5, rng.random() < 0.3
        u = True                               # kvm_pvm needs U=1 (live-kvm.md); harmless elsewhere
        if s.size >= 0x400000 and rng.random() < 0.4:
            m = add(K.Mapping(gva, s.gpa + 0x200000 * rng.randint(0, 1), "2M", 1, True, w, u, nx, a, d))
        else:
            if s.slot == 0:
                gpa = rng.randrange(_DATA_LO, _DATA_HI - 0x4000, 0x1000)
            else:
                gpa = s.gpa + 0x1000 * rng.randrange(0, min(s.size, 0x10000) // 0x1000 - 3)
            if data and rng.random() < 0.2:    # alias an earlier 4K page
                prev = [dm for dm, _ in data if dm.page == "4K"]
                if prev:
                    gpa = rng.choice(prev).gpa
            m = add(K.Mapping(gva, gpa, "4K", rng.randint(1, 4), True, w, u, nx, a, d))
        data.append((m, w and u))
    if rng.random() < 0.4:
        m = add(K.Mapping(gva, 0xF0000000 + 0x1000 * rng.randint(0, 15), "4K", 1, True, True, True, True))
        data.append((m, True))
    fetch = [add(K.Mapping(gva, _FETCH_GPA + 0x1000 * k, w=False)) for k in range(rng.randint(0, 2))]
    desc = K.GuestDesc(memslots=slots, page_tables=K.PageTables(size=0x20000, mappings=maps),
                       registers=K.Registers(cr0_wp=rng.random() < 0.8), timeout=2.0)
    live = {s.slot: K.Memslot(**vars(s)) for s in slots if s.slot}
    runs = []
    for r in range(rng.randint(1, 3)):
        changes = []
        if r:
            for sl in list(live):
                x = rng.random()
                if x < 0.2:
                    changes.append(K.SlotChange("delete", sl))
                    del live[sl]
                elif x < 0.4:
                    new = live[sl].gpa ^ 0x8000000
                    changes.append(K.SlotChange("move", sl, new))
                    live[sl].gpa = new
                elif x < 0.5 and not live[sl].guest_memfd:
                    fl = [] if live[sl].flags else ["dirty_log"]
                    changes.append(K.SlotChange("flags", sl, flags=fl))
                    live[sl].flags = fl
        runs.append(K.Run(program=_program(rng, data, fetch), changes=changes))
    desc.runs = runs
    return desc


def _page_addr(rng, m: K.Mapping) -> int:
    span = m.size()
    return m.gva + rng.randrange(0, span, 8) // 8 * 8


def _program(rng, data, fetch) -> list:
    ops = []
    writable = [m for m, w in data if w]
    for _ in range(rng.randint(4, 24)):
        x = rng.random()
        if x < 0.35:
            m, _ = rng.choice(data)
            ops.append(K.Op("read", _page_addr(rng, m), rng.getrandbits(16)))
        elif x < 0.65 and writable:
            ops.append(K.Op("write", _page_addr(rng, rng.choice(writable)), rng.getrandbits(64)))
        elif x < 0.72 and fetch:
            ops.append(K.Op("fetch", rng.choice(fetch).gva))
        elif x < 0.78:
            m, _ = rng.choice(data)
            ops.append(K.Op("invlpg", _page_addr(rng, m)))
        elif x < 0.82:
            ops.append(K.Op("cr3_reload"))
        else:
            four = [m for m, _ in data if m.page == "4K" and m.gpa < 0xF0000000]
            if not four:
                continue
            m = rng.choice(four)
            k = rng.randrange(m.count)
            gpa = m.gpa + 0x1000 * rng.randrange(m.count)        # repoint within the mapping's pages
            pte = (gpa | K.PT_P | (K.PT_W if m.w else 0) | (K.PT_U if m.u else 0) | (K.PT_NX if m.nx else 0)
                   | (K.PT_A if rng.random() < 0.5 else 0) | (K.PT_D if rng.random() < 0.3 else 0))
            ops.append(K.Op("pte_write", m.gva + 0x1000 * k, pte, rng.choice(("invlpg", "cr3", "none"))))
    return ops


@dataclass
class Finding:
    """A guest whose run or trace was wrong: what, and where its reproducer was written."""
    kind: str            # "guest", "lost", "audit"
    message: str
    path: str


@dataclass
class Outcome:
    """One guest's verdict: the capture, the findings [(kind, signature, message)], the report."""
    cap: R.Capture
    found: list
    report: AuditReport | None = None
    records: list = field(default_factory=list)


def _audit_module(audit: bool):
    if not audit:
        return None
    try:
        from . import audit as A
    except ImportError:
        return None
    return A


def judge(desc: K.GuestDesc, host: K.HostInfo, A=None, scratch: str | None = None) -> Outcome:
    """Run ``desc`` under the recorder and judge it: the guest must reach its HLTs, no event
    may be lost, and (with the audit module ``A``) the audit must agree with every record.
    A finding's signature (kind, check, event) is what the shrinker keeps constant."""
    _need("desc", desc, isinstance(desc, K.GuestDesc), "must be a GuestDesc")
    _need("host", host, isinstance(host, K.HostInfo), "must be a HostInfo")
    err = None
    with R.Recorder() as rec:
        try:
            K.run_guest(desc, host)
        except K.KvmError as e:
            err = e
        cap = rec.stop()
    cap.guest = desc.to_dict()
    cap.meta["guest"] = cap.guest
    cap.meta["guest_error"] = str(err) if err else None
    found: list[tuple[str, tuple, str]] = []
    if err is not None:
        found.append(("guest", ("guest", type(err).__name__), str(err)))
    if cap.lost:
        found.append(("lost", ("lost",), f"{cap.lost} events lost"))
    report, records = None, []
    path = os.path.join(scratch or tempfile.gettempdir(), f"pykvmmu-kfuzz-{os.getpid()}.kvmcap")
    R.write_capture(path, cap)
    try:
        records = _records(path)
        if A is not None and not found:
            report = A.audit(path)          # as `pykvmmu audit FILE` (host_zero_pfn from the capture)
    finally:
        os.unlink(path)
    if report is not None and report.disagreements:
        v = report.disagreements[0]
        found.append(("audit", ("audit", v.check, v.event),
                      f"{len(report.disagreements)} disagreements: {v}"))
    return Outcome(cap, found, report, records)


def _candidates(desc: K.GuestDesc):
    """Smaller descriptions, cheapest wins first: mappings no op touches (all, then one by one),
    later runs, memslot changes, then halves, quarters ... single ops of each program."""
    used = [o.addr for r in desc.runs for o in r.program if o.kind not in ("cr3_reload", "out", "rdmsr", "spin")]
    idle = [i for i, m in enumerate(desc.page_tables.mappings)
            if not any(m.gva <= a < m.gva + m.size() for a in used)]
    if len(idle) > 1:
        d = _copy(desc)
        d.page_tables.mappings = [m for i, m in enumerate(d.page_tables.mappings) if i not in idle]
        yield d
    for m_i in reversed(idle):
        d = _copy(desc)
        del d.page_tables.mappings[m_i]
        yield d
    for r_i in range(len(desc.runs) - 1, 0, -1):
        d = _copy(desc)
        del d.runs[r_i]
        yield d
    for r_i, r in enumerate(desc.runs):
        for c_i in range(len(r.changes)):
            d = _copy(desc)
            del d.runs[r_i].changes[c_i]
            yield d
        n = len(r.program)
        size = n // 2
        while size >= 1:
            for lo in range(0, n, size):
                d = _copy(desc)
                del d.runs[r_i].program[lo:lo + size]
                yield d
            size //= 2


def _copy(desc: K.GuestDesc) -> K.GuestDesc:
    return copy.deepcopy(desc)


def shrink(desc: K.GuestDesc, signature: tuple, host: K.HostInfo, A=None, budget_s: float = 20.0,
           scratch: str | None = None) -> tuple:
    """Greedy reduction: keep any smaller description whose run still shows ``signature``.
    Returns (smallest description, its Outcome or None, guests tried)."""
    _need("desc", desc, isinstance(desc, K.GuestDesc), "must be a GuestDesc")
    _need("host", host, isinstance(host, K.HostInfo), "must be a HostInfo")
    _need("budget_s", budget_s, _is_seconds(budget_s, 3600), "must be seconds in [0, 3600]")
    best, best_out, tried = desc, None, 0
    t0 = time.monotonic()
    progress = True
    while progress and time.monotonic() - t0 < budget_s:
        progress = False
        for cand in _candidates(best):
            if time.monotonic() - t0 >= budget_s:
                break
            try:
                cand.check()
            except InputError:
                continue
            tried += 1
            out = judge(cand, host, A, scratch)
            if any(sig == signature for _, sig, _ in out.found):
                best, best_out, progress = cand, out, True
                break
    return best, best_out, tried


# ------------------------------------------------------------------------------ seed corpus
CORPUS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "kernel_corpus")


def load_corpus(path: str | None = None) -> list:
    """The seed corpus: [(name, GuestDesc)] from every ``*.json`` of ``path`` (default: the
    descriptions shipped in ``pykvmmu/data/kernel_corpus``), sorted by name; each is checked."""
    path = CORPUS_DIR if path is None else path
    if not isinstance(path, str) or not os.path.isdir(path):
        raise InputError(f"corpus {path!r}: not a directory of guest descriptions (*.json)")
    out = []
    for name in sorted(os.listdir(path)):
        if name.endswith(".json"):
            out.append((name[:-5], K.load_desc(os.path.join(path, name))))
    return out


# ------------------------------------------------------------------------------ runnability
def _fixed_ranges(desc: K.GuestDesc) -> list:
    pt = desc.page_tables
    return [(desc.code_gpa, desc.code_pages * K.PAGE), (desc.stack_gpa, K.PAGE), (desc.vif_gpa, K.PAGE),
            (pt.base, pt.size)]


def _mapping_at(desc: K.GuestDesc, gva: int):
    for m in desc.page_tables.mappings:
        if m.present and m.gva <= gva < m.gva + m.size():
            return m
    return None


def runnable_problem(desc: K.GuestDesc) -> str | None:
    """Why ``desc`` might not reach its HLTs (the invariants the generator keeps), or None.

    ``GuestDesc.check`` says a description is well-formed; this says its program cannot fault:
    reads, writes and INVLPGs hit present mappings; writes go through W=1 U=1 mappings that
    cover neither the runner's fixed pages nor a fetch target; fetches CALL a 4 KiB non-NX
    mapping in slot 0 (which no memslot change touches); a ``pte_write`` repoints a present
    leaf (4 KiB, or 2 MiB with PS) within its mapping's own pages and keeps P, W, U, NX and PS
    as the mapping has them (so later ops still hold); no ``spin``; every entry has U=1 (kvm_pvm, live-kvm.md)."""
    _need("desc", desc, isinstance(desc, K.GuestDesc), "must be a GuestDesc")
    maps = desc.page_tables.mappings
    if any(not m.u for m in maps):
        return "a mapping with U=0 (kvm_pvm runs the guest at CPL3)"
    slot0 = next((s for s in desc.memslots if s.slot == 0), None)
    fetch_gpas = set()
    for r in desc.runs:
        for o in r.program:
            if o.kind == "fetch":
                m = _mapping_at(desc, o.addr)
                if m is None or m.page != "4K" or m.nx or m.w or o.addr & 0xFFF:
                    return f"fetch {o.addr:#x}: not the start of a present 4 KiB non-NX read-only mapping"
                gpa = m.gpa + (o.addr - m.gva)
                if slot0 is None or not slot0.gpa <= gpa < slot0.gpa + slot0.size:
                    return f"fetch {o.addr:#x}: gpa {gpa:#x} is not in slot 0"
                fetch_gpas.add(gpa)
    if any(c.slot == 0 for r in desc.runs for c in r.changes):
        return "slot 0 (code, tables, fetch targets) is changed between runs"
    fixed = _fixed_ranges(desc) + [(g, K.PAGE) for g in fetch_gpas]
    for r_i, r in enumerate(desc.runs):
        for i, o in enumerate(r.program):
            where = f"runs[{r_i}].program[{i}] {o.kind} {o.addr:#x}"
            if o.kind == "spin":
                return f"{where}: never reaches its HLT"
            if o.kind not in ("read", "write", "invlpg", "pte_write"):
                continue
            m = _mapping_at(desc, o.addr)
            if m is None:
                return f"{where}: no present mapping"
            if o.kind in ("read", "write") and (o.addr & 7 or o.addr + 8 > m.gva + m.size()):
                return f"{where}: not an aligned 8-byte access inside its mapping"
            if o.kind == "write":
                if not (m.w and m.u):
                    return f"{where}: mapping gva {m.gva:#x} is not writable"
                for lo, n in fixed:
                    if m.gpa < lo + n and lo < m.gpa + m.size():
                        return f"{where}: mapping gva {m.gva:#x} covers a fixed page or a fetch target at {lo:#x}"
            if o.kind == "pte_write":
                ps = _PS if m.page == "2M" else 0
                want = (K.PT_P | (K.PT_W if m.w else 0) | (K.PT_U if m.u else 0) | (K.PT_NX if m.nx else 0)
                        | ps)
                got = o.value & (K.PT_P | K.PT_W | K.PT_U | K.PT_NX | _PS)
                frame = 0x000FFFFFFFE00000 if ps else 0x000FFFFFFFFFF000
                gpa = o.value & frame
                if got != want or o.value & ~(frame | K.PT_P | K.PT_W | K.PT_U | K.PT_NX | K.PT_A | K.PT_D | ps):
                    return f"{where}: value {o.value:#x} changes P/W/U/NX/PS or sets other bits"
                if not m.gpa <= gpa < m.gpa + m.size():
                    return f"{where}: repoints outside its mapping's pages"
    return None


# ------------------------------------------------------------------------------ mutation
def _pools(desc: K.GuestDesc):
    """(data [(mapping, writable through it)], fetch mappings) as random_desc keeps them; a
    mapping over the runner's fixed pages (code, stack, page tables) is read-only data."""
    fetch_gvas = {o.addr for r in desc.runs for o in r.program if o.kind == "fetch"}
    fetch, data = [], []
    fixed = _fixed_ranges(desc) + [(_FETCH_GPA, _DATA_LO - _FETCH_GPA)]
    for m in desc.page_tables.mappings:
        if not m.present:
            continue
        if m.page == "4K" and not m.w and not m.nx and (m.gva in fetch_gvas or _FETCH_GPA <= m.gpa < _DATA_LO):
            fetch.append(m)
        else:
            over = any(m.gpa < lo + n and lo < m.gpa + m.size() for lo, n in fixed)
            data.append((m, m.w and m.u and not over))
    return data, fetch


def _free_gva(desc: K.GuestDesc) -> int:
    top = max([m.gva + m.size() for m in desc.page_tables.mappings] + [_GVA0])
    return (top + 0x3FFFFF) & ~0x3FFFFF


def _mutate_once(rng: random.Random, d: K.GuestDesc) -> None:
    data, fetch = _pools(d)
    maps = d.page_tables.mappings
    k = rng.randrange(13)
    r = rng.choice(d.runs)
    if k <= 1 and data:                                   # insert fresh ops
        ops = _program(rng, data, fetch)[:rng.randint(1, 6)]
        at = rng.randint(0, len(r.program))
        r.program[at:at] = ops
    elif k == 2 and r.program:                            # delete ops
        at = rng.randrange(len(r.program))
        del r.program[at:at + rng.randint(1, 3)]
    elif k == 3 and r.program:                            # duplicate an op (flooding, refaults)
        at = rng.randrange(len(r.program))
        r.program[at:at] = [copy.deepcopy(r.program[at])] * rng.randint(1, 4)
    elif k == 4 and r.program:                            # alter an op's address or value
        o = rng.choice(r.program)
        m = _mapping_at(d, o.addr)
        if o.kind in ("read", "write", "invlpg") and m is not None:
            o.addr = _page_addr(rng, m)
        o.value = (rng.getrandbits(64) if o.kind == "write" else
                   o.value ^ (K.PT_A if rng.random() < 0.5 else K.PT_D) if o.kind == "pte_write" else
                   rng.getrandbits(16) if o.kind == "read" else o.value)
        if o.kind == "pte_write":
            o.flush = rng.choice(("invlpg", "cr3", "none"))
    elif k == 5:                                          # a new 4 KiB mapping (maybe an alias)
        s = rng.choice(d.memslots)
        if rng.random() < 0.4 and data:
            gpa = rng.choice([m for m, _ in data]).gpa
        elif s.slot == 0:
            gpa = rng.randrange(_DATA_LO, _DATA_HI - 0x4000, 0x1000)
        else:
            gpa = s.gpa + 0x1000 * rng.randrange(0, max(1, min(s.size, 0x10000) // 0x1000 - 3))
        m = K.Mapping(_free_gva(d), gpa, "4K", rng.randint(1, 4), True, rng.random() < 0.7, True,
                      rng.random() < 0.3, rng.random() < 0.5, rng.random() < 0.3)
        maps.append(m)
        r.program[rng.randint(0, len(r.program)):0] = _program(rng, [(m, m.w)], [])[:3]
    elif k == 6 and maps:                                 # flip a leaf's A, D, W or NX bit
        m = rng.choice(maps)
        bit = rng.choice(("a", "d", "w", "nx"))
        setattr(m, bit, not getattr(m, bit))
    elif k == 7:                                          # CR0.WP, CR4.PKE, EFER.NX
        reg = rng.choice(("cr0_wp", "cr0_wp", "cr4_pke", "efer_nx"))
        setattr(d.registers, reg, not getattr(d.registers, reg))
        if not d.registers.efer_nx:                       # NX is a reserved bit without EFER.NX
            for m in maps:
                m.nx = False
            for o in (o for r2 in d.runs for o in r2.program if o.kind == "pte_write"):
                o.value &= ~K.PT_NX
    elif k == 11:                                         # map a page table or the code, read it
        pt = d.page_tables
        gpa = rng.choice((pt.base + K.PAGE * rng.randrange(pt.size // K.PAGE), d.code_gpa))
        m = K.Mapping(_free_gva(d), gpa, "4K", 1, True, rng.random() < 0.5, True, False,
                      rng.random() < 0.5, False)
        maps.append(m)
        r.program[rng.randint(0, len(r.program)):0] = [K.Op("read", m.gva + 8 * rng.randrange(512))]
    elif k == 12:                                         # a 2 MiB page over slot 0, read
        m = K.Mapping(_free_gva(d), 0, "2M", 1, True, rng.random() < 0.5, True, False, rng.random() < 0.5, False)
        maps.append(m)
        r.program[rng.randint(0, len(r.program)):0] = [
            K.Op("read", m.gva + 8 * rng.randrange(0x40000)) for _ in range(rng.randint(1, 4))]
    elif k == 8:                                          # a memslot change before a later run
        if len(d.runs) < 2 or rng.random() < 0.3:
            d.runs.append(K.Run(program=_program(rng, data, fetch) if data else []))
        r = rng.choice(d.runs[1:])
        others = [s for s in d.memslots if s.slot]
        if others:
            s = rng.choice(others)
            x = rng.random()
            if x < 0.3:
                r.changes.append(K.SlotChange("delete", s.slot))
            elif x < 0.6:
                r.changes.append(K.SlotChange("move", s.slot, s.gpa ^ rng.choice((0x8000000, 0x10000000))))
            elif not s.guest_memfd:
                r.changes.append(K.SlotChange("flags", s.slot, flags=rng.choice(([], ["dirty_log"],
                                                                                   ["readonly"]))))
    elif k == 9:                                          # a memslot's initial flags
        s = rng.choice(d.memslots)
        if s.slot and not s.guest_memfd:
            s.flags = rng.choice(([], ["dirty_log"], ["readonly"]))
    elif k == 10 and len(d.runs) > 1:                     # drop a run or one of its changes
        i = rng.randrange(1, len(d.runs))
        if d.runs[i].changes and rng.random() < 0.5:
            del d.runs[i].changes[rng.randrange(len(d.runs[i].changes))]
        else:
            del d.runs[i]


def mutate(desc: K.GuestDesc, rng: random.Random, host: K.HostInfo | None = None,
           tries: int = 50) -> K.GuestDesc:
    """A mutant of ``desc``: 1-4 edits (insert, delete, duplicate or alter ops; add a mapping or
    an alias; map (and read) a guest page table, the code page or all of slot 0 by a 2 MiB page;
    flip a leaf's A/D/W/NX; toggle CR0.WP, CR4.PKE or EFER.NX; add or drop runs and memslot
    changes; change a memslot's flags).  Every mutant passes ``check()``, :func:`runnable_problem` and
    (with ``host``) ``host_refusal``; after ``tries`` refused mutants ``desc`` is returned copied."""
    if not isinstance(desc, K.GuestDesc):
        raise InputError(f"desc={desc!r}: must be a GuestDesc")
    if not isinstance(rng, random.Random):
        raise InputError(f"rng={rng!r}: must be a random.Random")
    _need("host", host, host is None or isinstance(host, K.HostInfo), "must be a HostInfo or None")
    _need("tries", tries, isinstance(tries, int) and not isinstance(tries, bool) and 1 <= tries <= 10**6,
          "must be an integer in [1, 1000000]")
    for _ in range(tries):
        d = _copy(desc)
        for _ in range(rng.randint(1, 4)):
            _mutate_once(rng, d)
        try:
            d.check()
        except InputError:
            continue
        if runnable_problem(d) is None and (host is None or K.host_refusal(d, host) is None):
            return d
    return _copy(desc)


# ------------------------------------------------------------------------------ coverage
@dataclass
class Coverage:
    """What the runs exercised: kvmmmu event kinds seen (of those the host has) and role words."""
    known: set = field(default_factory=set)
    events: Counter = field(default_factory=Counter)
    roles: Counter = field(default_factory=Counter)

    def add(self, cap: R.Capture, records) -> int:
        """Count one capture's records; returns how many new event kinds or role words it added."""
        before = len(self.events) + len(self.roles)
        self.known |= {e.split("/", 1)[1] for e in cap.formats if e.startswith("kvmmmu/")}
        for r in records:
            if r.event in self.known:
                self.events[r.event] += 1
                role = getattr(r, "role", None)
                word = role.word if role is not None and hasattr(role, "word") else role
                if isinstance(word, int):
                    self.roles[word] += 1
        return len(self.events) + len(self.roles) - before

    def line(self) -> str:
        return f"events {len(self.events)}/{len(self.known)}, roles {len(self.roles)}"

    def table(self) -> str:
        lines = ["kvmmmu event kinds (records):"]
        for e in sorted(self.known | set(self.events)):
            lines.append(f"  {self.events[e]:8d} {e}")
        lines.append(f"role words ({len(self.roles)} distinct, records):")
        for w, n in sorted(self.roles.items()):
            lines.append(f"  {n:8d} {w:#06x}")
        return "\n".join(lines)


def _records(path: str) -> list:
    from . import trace as T
    return list(T.open_trace(path))


def _merge(total, rep, run: int, keep: int = 500) -> None:
    """Add one AuditReport's counts into ``total``, and its disagreed and not-checkable verdicts
    (up to ``keep`` in all), each marked with the guest's run number."""
    total.records += rep.records
    for c in rep.counts:
        total.counts[c].update(rep.counts[c])
    total.inferred_counts.update(rep.inferred_counts)
    total.inferred_inputs.update(rep.inferred_inputs)
    total.events.update(rep.events)
    for v in rep.verdicts:
        if v.status != "agreed" and len(total.verdicts) < keep:
            total.verdicts.append(dataclasses.replace(v, what=f"guest {run}: {v.what}" if v.what
                                                      else f"guest {run}"))
    total.dirty_marked += rep.dirty_marked
    if not total.config:
        total.config, total.era = rep.config, rep.era


# ------------------------------------------------------------------------------ evidence
TRIAGE = ("model wrong", "not knowable from the trace", "kernel differs from upstream")


def evidence(report) -> str:
    """The evidence a human triages a disagreement with: per disagreement the check, record,
    event, what was compared, the model's and the kernel's values, the differing bits and the
    inferred inputs it used."""
    lines = [f"triage (a human decision, one of: {'; '.join(TRIAGE)}): undecided", ""]
    for v in report.disagreements:
        lines.append(f"- check {v.check}, record {v.record} {v.event}" + (f" ({v.what})" if v.what else ""))
        lines.append(f"    model  {_hx(v.model)}\n    kernel {_hx(v.kernel)}")
        if v.diff:
            lines.append(f"    differing {v.diff:#x}: {', '.join(v.bits) or '-'}")
        if v.reason:
            lines.append(f"    reason: {v.reason}")
        if v.inferred:
            lines.append(f"    inferred inputs: {'; '.join(v.inferred)}")
    return "\n".join(lines)


def _hx(v) -> str:
    return f"{v:#x}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


# ------------------------------------------------------------------------------ the loop
@dataclass
class KernelStats:
    """A kernel fuzzing session: guests run (and from where), records audited, findings,
    the merged audit report (per-check counts) and the coverage."""
    seed: int = 0
    runs: int = 0
    from_corpus: int = 0
    mutants: int = 0
    random: int = 0
    skipped: list = field(default_factory=list)       # (name, why) corpus entries the host refuses
    records: int = 0                                  # trace records read
    audited: int = 0                                  # records the audit replayed
    audited_runs: int = 0
    agreed_runs: int = 0
    disagreed_runs: int = 0
    findings: list = field(default_factory=list)
    audit: bool = False
    total: AuditReport | None = None                  # merged over the runs
    coverage: Coverage = field(default_factory=Coverage)
    elapsed: float = 0.0
    interrupted: bool = False

    @property
    def rate(self) -> float:
        return self.runs / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        agree = ""
        if self.total is not None:
            agree = (f", verdicts {self.total.total('agreed')} agreed {self.total.total('disagreed')} "
                     f"disagreed")
        return (f"kernel: {self.runs} runs ({self.rate:.1f}/s), {self.audited} records audited, "
                f"runs agreed {self.agreed_runs} disagreed {self.disagreed_runs}{agree}, "
                f"findings {len(self.findings)}, {self.coverage.line()}")


def fuzz_kernel(seconds: float = 60.0, *, runs: int | None = None, seed: int | None = None,
                out_dir: str = "fuzz-crashes", keep_going: bool = False, audit: bool = True,
                shrink_s: float = 20.0, progress=None, corpus: str | None = None,
                use_corpus: bool = True) -> KernelStats:
    """Run guests under the recorder for ``seconds`` (or ``runs`` guests) and audit each capture
    (when ``audit`` and ``pykvmmu.audit`` is present).  The guests are the seed corpus first
    (``corpus``: a directory of descriptions, default the shipped one; ``use_corpus=False``
    skips it), then by turns a mutant of a corpus entry or of a guest that showed a new event
    kind or role word, and a purely random guest.  A finding is shrunk for up to ``shrink_s``
    seconds (the same kind, check and event must persist) and written to ``out_dir``.
    ``progress(stats)`` is called after every guest."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 86400:
        raise InputError(f"seconds={seconds!r}: must be a number in (0, 86400]")
    if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int) or runs < 1):
        raise InputError(f"runs={runs!r}: must be a positive integer")
    if isinstance(shrink_s, bool) or not isinstance(shrink_s, (int, float)) or not 0 <= shrink_s <= 3600:
        raise InputError(f"shrink_s={shrink_s!r}: must be seconds in [0, 3600]")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InputError(f"seed={seed!r}: must be an integer")
    if progress is not None and not callable(progress):
        raise InputError(f"progress={progress!r}: must be a callable(stats) or None")
    _need("out_dir", out_dir, isinstance(out_dir, str) and out_dir != "", "must be a directory path")
    for name, v in (("keep_going", keep_going), ("audit", audit), ("use_corpus", use_corpus)):
        _need(name, v, _is_bool(v), "must be True or False")
    _need("corpus", corpus, corpus is None or (isinstance(corpus, str) and os.path.isdir(corpus)),
          "must be None or a directory of guest descriptions (*.json)")
    seeds = load_corpus(corpus) if use_corpus else []
    A = _audit_module(audit)
    host = K.detect_host()
    seed = random.SystemRandom().getrandbits(32) if seed is None else seed
    rng = random.Random(seed)
    st = KernelStats(seed=seed, audit=A is not None)
    if A is not None:
        st.total = A.AuditReport()
    pool = []
    for name, d in seeds:
        why = K.host_refusal(d, host)
        if why:
            st.skipped.append((name, why))
        else:
            pool.append(d)
    queue = [(f"corpus:{n}", d) for n, d in seeds if d in pool]
    scratch = tempfile.gettempdir()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds and (runs is None or st.runs < runs):
            if queue:
                origin, desc = queue.pop(0)
                st.from_corpus += 1
            elif pool and rng.random() < 0.5:
                origin, desc = "mutant", mutate(rng.choice(pool), rng, host)
                st.mutants += 1
            else:
                origin, desc = "random", random_desc(rng, host)
                st.random += 1
            out = judge(desc, host, A, scratch)
            st.runs += 1
            st.records += len(out.records)
            if st.coverage.add(out.cap, out.records) and len(pool) < 200:
                pool.append(desc)                     # new event kinds or role words: mutate it too
            if out.report is not None:
                st.audited += out.report.records
                st.audited_runs += 1
                _merge(st.total, out.report, st.runs)
                if out.report.disagreements:
                    st.disagreed_runs += 1
                else:
                    st.agreed_runs += 1
            for kind, sig, msg in out.found:
                st.findings.append(_keep(desc, kind, sig, msg, out, st, origin, host, A, out_dir,
                                         shrink_s, scratch))
            st.elapsed = time.monotonic() - t0
            if progress:
                progress(st)
            if st.findings and not keep_going:
                break
    except KeyboardInterrupt:
        st.interrupted = True
    st.elapsed = time.monotonic() - t0
    return st


def _keep(desc, kind, sig, msg, out, st, origin, host, A, out_dir, shrink_s, scratch) -> Finding:
    """Write one finding's reproducer (shrunk when ``shrink_s``): DIR/kernel-<kind>-<seed>-<run>
    .kvmcap (capture + guest.json), .txt (message, origin, evidence, audit table)."""
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, f"kernel-{kind}-{st.seed:08x}-{st.runs:05d}")
    cap, report, note = out.cap, out.report, ""
    if shrink_s > 0:
        small, small_out, tried = shrink(desc, sig, host, A, shrink_s, scratch)
        if small_out is not None:
            note = (f"shrunk in {tried} guests: {_size(desc)} -> {_size(small)}; the original "
                    f"description is {os.path.basename(base)}.orig.json\n")
            with open(base + ".orig.json", "w") as f:
                f.write(desc.to_json())
            cap, report = small_out.cap, small_out.report
            msg = next(m for _, s2, m in small_out.found if s2 == sig)
    R.write_capture(base + ".kvmcap", cap)
    with open(base + ".txt", "w") as f:
        f.write(f"{kind}: {msg}\nseed {st.seed} run {st.runs} ({origin}) on {cap.meta.get('kernel_release')}\n"
                f"{note}replay: pykvmmu fuzz --replay {os.path.basename(base)}.kvmcap\n")
        if kind == "guest":
            f.write(f"guest error: {cap.meta.get('guest_error')}\n")
        if kind == "lost":
            f.write(f"lost: {cap.meta.get('lost')}\n")
        if report is not None:
            f.write("\n" + evidence(report) + "\n\n" + report.format_table(50) + "\n")
    return Finding(kind, msg, base + ".kvmcap")


# ------------------------------------------------------------------------------ replay
def live_unavailable() -> str | None:
    """Why guests cannot be run and recorded here (no /dev/kvm, not root, no tracefs, no
    usable KVM), or None."""
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm on this host"
    if os.geteuid() != 0:
        return "not root (tracefs and /dev/kvm need it)"
    try:
        with open("/proc/filesystems") as f:
            if "tracefs" not in f.read():
                return "this kernel has no tracefs"
    except OSError:
        return "no /proc/filesystems"
    try:
        K.detect_host()
    except K.HostUnsupported as e:
        return str(e)
    return None


@dataclass
class Replay:
    """One reproducer re-judged: the stored capture's findings (offline) and, when the host
    can, a fresh run's findings; ``live_skipped`` says why there was no fresh run."""
    path: str
    offline: list
    live: list | None = None
    live_skipped: str = ""
    offline_report: AuditReport | None = None
    live_report: AuditReport | None = None

    @property
    def still_fails(self) -> bool:
        return bool(self.offline) or bool(self.live)


def _offline_findings(path: str, cap: R.Capture, A) -> tuple:
    found: list[tuple[str, tuple, str]] = []
    if cap.meta.get("guest_error"):
        found.append(("guest", ("guest",), str(cap.meta["guest_error"])))
    if cap.lost:
        found.append(("lost", ("lost",), f"{cap.lost} events lost"))
    report = None
    if A is not None and not found:
        report = A.audit(path)
        if report.disagreements:
            v = report.disagreements[0]
            found.append(("audit", ("audit", v.check, v.event),
                          f"{len(report.disagreements)} disagreements: {v}"))
    return found, report


def replay_kernel(path: str, live: bool | None = None, emit=print) -> list:
    """Re-judge kernel reproducers (a capture holding ``guest.json``, or a directory of them):
    the stored capture is re-audited offline; with ``live`` (default: when
    :func:`live_unavailable` says nothing) the guest is run again under the recorder and the
    new capture audited too.  Both verdicts are emitted; returns the :class:`Replay` list."""
    if not isinstance(path, str) or not os.path.exists(path):
        raise InputError(f"replay {path!r}: no such file or directory")
    _need("live", live, live is None or _is_bool(live), "must be None (when available), True or False")
    _need("emit", emit, callable(emit), "must be a callable(str)")
    paths = ([os.path.join(path, p) for p in sorted(os.listdir(path)) if p.endswith(".kvmcap")]
             if os.path.isdir(path) else [path])
    A = _audit_module(True)
    why = live_unavailable() if live is not False else "not asked to (offline only)"
    host = K.detect_host() if why is None else None
    out = []
    for p in paths:
        cap = R.read_capture(p)
        if cap.guest is None:
            raise InputError(f"{p}: the capture holds no guest.json: not a kernel reproducer")
        desc = K.GuestDesc.from_dict(cap.guest)
        found, rep = _offline_findings(p, cap, A)
        res = Replay(p, found, offline_report=rep)
        emit(f"{p}: offline ({cap.meta.get('kernel_release')}): " + _verdict(found, rep))
        refused = K.host_refusal(desc, host) if host is not None else None
        if refused:
            res.live_skipped = f"this host cannot run the guest: {refused}"
            emit(f"{p}: live: skipped ({res.live_skipped})")
        elif host is not None:
            o = judge(desc, host, A)
            res.live, res.live_report = o.found, o.report
            emit(f"{p}: live ({os.uname().release}): " + _verdict(o.found, o.report))
        else:
            res.live_skipped = str(why)        # host is None: why says why
            emit(f"{p}: live: skipped ({why})")
        out.append(res)
    return out


def _verdict(found, report) -> str:
    s = "; ".join(f"{k}: {m}" for k, _, m in found) if found else "ok"
    if report is not None:
        s += (f" [{report.records} records, {report.total('agreed')} agreed, "
              f"{report.total('disagreed')} disagreed, {report.total('not_checkable')} not checkable]")
    return s


def _size(desc: K.GuestDesc) -> str:
    ops = sum(len(r.program) for r in desc.runs)
    ch = sum(len(r.changes) for r in desc.runs)
    return f"{len(desc.runs)} runs, {ops} ops, {ch} memslot changes, {len(desc.page_tables.mappings)} mappings"

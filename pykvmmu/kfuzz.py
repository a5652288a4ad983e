"""Fuzz the host kernel's KVM MMU: random guests run under ``record``, their traces audited.

Each iteration draws a random but well-formed :class:`~pykvmmu.kvmrun.GuestDesc` (memslots
plain / read-only / dirty-logged / guest_memfd, 4 KiB and 2 MiB mappings with random W/NX/A/D,
aliases, MMIO, fetches, page-table writes with INVLPG, CR3 reloads or no flush, memslot
delete / move / flag changes between runs, CR0.WP on or off), runs it on ``/dev/kvm`` under a
:class:`~pykvmmu.record.Recorder`, and judges the capture with ``pykvmmu.audit`` (the model
replays every kvmmmu record).  A run that does not reach its HLT, loses events, or that the
audit disagrees with is a finding: its capture (which holds ``guest.json``, so it is a
reproducer) and a text report are written to the output directory.

The generator keeps every guest valid by construction: reads only from present mappings,
writes only through writable ones, fetches only from never-written RET pages in slot 0, page
tables / code / stack in slot 0 (never changed), U=1 everywhere on kvm_pvm, no SMEP/SMAP.
"""
from __future__ import annotations

import copy
import os
import random
import tempfile
import time
from dataclasses import dataclass, field

from . import kvmrun as K
from . import record as R
from .errors import InputError

__all__ = ["random_desc", "Finding", "FuzzStats", "Outcome", "judge", "shrink", "fuzz_kernel"]

_DATA_LO, _DATA_HI = 0x40000, 0x100000          # slot-0 pages the program may read/write
_FETCH_GPA = 0x30000                             # slot-0 RET pages (never written)
_GVA0 = 0x10000000


def random_desc(rng: random.Random, host: K.HostInfo | None = None) -> K.GuestDesc:
    """A random guest description that runs to its HLTs on ``host`` (kvm_pvm if None)."""
    gmem_ok = bool(host is None or (host.caps.get("guest_memfd") and host.caps.get("user_memory2")
                                     and host.caps.get("guest_memfd_flags", 0) & K.GUEST_MEMFD_FLAG_MMAP))
    slots = [K.Memslot(0, 0, 0x200000)]
    for i in range(1, rng.randint(1, 3) + 1):
        size = rng.choice((0x10000, 0x400000))
        flags = [f for f in ("readonly", "dirty_log") if rng.random() < 0.3]
        gm = gmem_ok and not flags and rng.random() < 0.25
        slots.append(K.Memslot(i, 0x1000000 * i, size, flags, gm))
    maps, data = [], []                        # data: (mapping, writable through it)
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
class FuzzStats:
    runs: int = 0
    records: int = 0
    findings: list = field(default_factory=list)
    audited: bool = False
    elapsed: float = 0.0


@dataclass
class Outcome:
    """One guest's verdict: the capture, the findings [(kind, signature, message)], the report."""
    cap: R.Capture
    found: list
    report: object = None


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
    found = []
    if err is not None:
        found.append(("guest", ("guest", type(err).__name__), str(err)))
    if cap.lost:
        found.append(("lost", ("lost",), f"{cap.lost} events lost"))
    report = None
    if A is not None and not found:
        path = os.path.join(scratch or tempfile.gettempdir(), f"pykvmmu-kfuzz-{os.getpid()}.kvmcap")
        R.write_capture(path, cap)
        try:
            zero = cap.meta.get("host_zero_pfn")
            # the recorder knows the host's zero page: the audit need not infer host_writable
            report = A.audit(path, host_writable=(lambda gfn, pfn: pfn != zero) if zero else None)
        finally:
            os.unlink(path)
        if report.disagreements:
            v = report.disagreements[0]
            found.append(("audit", ("audit", v.check, v.event),
                          f"{len(report.disagreements)} disagreements: {v}"))
    return Outcome(cap, found, report)


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


def fuzz_kernel(seconds: float = 60.0, *, runs: int | None = None, seed: int | None = None,
                out_dir: str = "fuzz-crashes", keep_going: bool = False, audit: bool = True,
                shrink_s: float = 20.0, progress=None) -> FuzzStats:
    """Run random guests under the recorder for ``seconds`` (or ``runs`` guests); audit each
    capture when ``audit`` and ``pykvmmu.audit`` is present.  A finding is shrunk for up to
    ``shrink_s`` seconds (the same kind, check and event must persist) and written to
    ``out_dir``.  Returns the statistics and findings."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 86400:
        raise InputError(f"seconds={seconds!r}: must be a number in (0, 86400]")
    if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int) or runs < 1):
        raise InputError(f"runs={runs!r}: must be a positive integer")
    if isinstance(shrink_s, bool) or not isinstance(shrink_s, (int, float)) or not 0 <= shrink_s <= 3600:
        raise InputError(f"shrink_s={shrink_s!r}: must be seconds in [0, 3600]")
    A = _audit_module(audit)
    host = K.detect_host()
    seed = random.SystemRandom().getrandbits(32) if seed is None else seed
    rng = random.Random(seed)
    stats = FuzzStats(audited=A is not None)
    scratch = tempfile.gettempdir()
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and (runs is None or stats.runs < runs):
        desc = random_desc(rng, host)
        out = judge(desc, host, A, scratch)
        stats.runs += 1
        stats.records += sum(int(s.get("read events", 0)) for s in out.cap.meta["lost"].values())
        for kind, sig, msg in out.found:
            os.makedirs(out_dir, exist_ok=True)
            base = os.path.join(out_dir, f"kernel-{kind}-{seed:08x}-{stats.runs:05d}")
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
                f.write(f"{kind}: {msg}\nseed {seed} run {stats.runs}\n{note}"
                        f"replay: pykvmmu record -o again.kvmcap --guest guest.json "
                        f"(tar xzf {os.path.basename(base)}.kvmcap guest.json)\n")
                if report is not None:
                    f.write("\n" + report.format_table(50) + "\n")
            stats.findings.append(Finding(kind, msg, base + ".kvmcap"))
        if progress:
            progress(f"kernel fuzz: {stats.runs} guests, {stats.records} records, "
                     f"{len(stats.findings)} findings, {time.monotonic() - t0:.0f}s")
        if stats.findings and not keep_going:
            break
    stats.elapsed = time.monotonic() - t0
    return stats


def _size(desc: K.GuestDesc) -> str:
    ops = sum(len(r.program) for r in desc.runs)
    ch = sum(len(r.changes) for r in desc.runs)
    return f"{len(desc.runs)} runs, {ops} ops, {ch} memslot changes, {len(desc.page_tables.mappings)} mappings"

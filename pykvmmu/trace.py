"""Decode ``kvmmmu`` tracepoint text (ftrace ``trace`` file, ``trace-cmd report``,
``trace-cmd report -R`` raw fields, and the libtraceevent plugin's page lines).

Every event of the fact sheet (role-hash-trace.md section 6) is parsed into a
:class:`TraceRecord`; page events get their role word decoded under a chosen era.  A text
line carries only some role bits (level, gpte size, quadrant, direct, access, invalid, nx,
ad): the record keeps the partial word and ``role_known`` (the mask of bits the text
states).  A raw ``role=`` field gives the whole word.  Malformed lines are collected in
``TraceResult.errors`` with their line number and skipped; parsing never raises on input.
SPTE values can be decoded by an optional callable ``spte_decoder(spte, level) -> str``.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from .role import Role, get_era, unpack

__all__ = ["TraceRecord", "TraceResult", "parse", "parse_file", "parse_line", "summary",
           "format_record", "default_spte_decoder", "EVENTS", "PAGE_EVENTS", "SPTE_FIELDS",
           "to_numpy", "ERA_TO_SPTE_PROFILE"]

_HEX = r"(?:0x)?[0-9a-fA-F]+"
_DEC = r"-?\d+"

# One line: "comm-pid [cpu] flags timestamp: event: payload"; trace-cmd report may omit the
# flags column and may print "(tgid)" after the pid.
_HEADER = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[.a-zA-Z0-9]{4,6})\s+)?(?P<ts>\d+\.\d+):\s+(?:kvmmmu:)?(?P<event>\w+):\s*"
    r"(?P<payload>.*?)\s*$")

PAGE_EVENTS = ("kvm_mmu_get_page", "kvm_mmu_sync_page", "kvm_mmu_unsync_page",
               "kvm_mmu_prepare_zap_page", "kvm_mmu_zap_page")

# KVM_MMU_PAGE_PRINTK of every era (the optional groups cover the history in sec. 6.2).
_PAGE_TEXT = re.compile(
    r"^sp (?:gen (?P<gen>[0-9a-f]+) )?gfn (?P<gfn>[0-9a-f]+) l?(?P<level>\d+)"
    r"(?: (?P<gsz>[48])-byte| ?(?P<pae> pae)?) q(?P<quadrant>\d)(?P<direct> direct)? "
    r"(?P<access>[-w][-u][-x])(?P<invalid> invalid)? (?P<nx>!?)nxe(?: (?P<ad>!?)ad)? "
    r"root (?P<root_count>\d+) (?P<sync>sync|unsync)(?: (?P<created>new|existing))?$")
# libtraceevent plugin_kvm.c (pre-v4.12 role union):
# "[new |existing ]sp gfn %llx %u q%u%s %s%s %spae %snxe %swp%s%s%s root %u %s"
_PAGE_PLUGIN = re.compile(
    r"^(?:(?P<created>new|existing) )?sp gfn (?P<gfn>[0-9a-f]+) (?P<level>\d+) q(?P<quadrant>\d)"
    r"(?P<direct> direct)? (?P<access>[-w][-u][-x])(?P<invalid> invalid)? (?P<pae>!?)pae "
    r"(?P<nx>!?)nxe (?P<wp>!?)wp(?P<smep> smep)?(?P<smap> smap)?(?P<smm> smm)?"
    r"\s+root (?P<root_count>\d+)\s+(?P<sync>sync|unsync)$")
_RAW_FIELD = re.compile(r"(\w+)=(\S+)")
_RAW_LINE = re.compile(r"^(?:\w+=\S+\s*)+$")

# (payload regex, {field: "x" hex | "d" decimal | "s" string})
EVENTS = {
    "kvm_mmu_pagetable_walk": (rf"addr (?P<addr>{_HEX}) pferr (?P<pferr>{_HEX})\s*(?P<pferr_flags>.*)",
                               {"addr": "x", "pferr": "x", "pferr_flags": "s"}),
    "kvm_mmu_paging_element": (rf"pte (?P<pte>{_HEX}) level (?P<level>\d+)", {"pte": "x", "level": "d"}),
    "kvm_mmu_set_accessed_bit": (rf"gpa (?P<gpa>{_HEX})", {"gpa": "x"}),
    "kvm_mmu_set_dirty_bit": (rf"gpa (?P<gpa>{_HEX})", {"gpa": "x"}),
    "kvm_mmu_walker_error": (rf"pferr (?P<pferr>{_HEX})\s*(?P<pferr_flags>.*)",
                             {"pferr": "x", "pferr_flags": "s"}),
    "mark_mmio_spte": (rf"sptep:(?P<sptep>\S+) gfn (?P<gfn>{_HEX}) access (?P<access>{_HEX}) "
                       rf"gen (?P<gen>{_HEX})",
                       {"sptep": "s", "gfn": "x", "access": "x", "gen": "x"}),
    "handle_mmio_page_fault": (rf"addr:(?P<addr>{_HEX}) gfn (?P<gfn>{_HEX}) access (?P<access>{_HEX})",
                               {"addr": "x", "gfn": "x", "access": "x"}),
    "fast_page_fault": (rf"vcpu (?P<vcpu_id>{_DEC}) gva (?P<gva>{_HEX}) error_code (?P<error_code>.*?) "
                        rf"sptep (?P<sptep>\S+) old (?P<old_spte>{_HEX}) new (?P<new_spte>{_HEX}) "
                        rf"spurious (?P<spurious>\d) fixed (?P<fixed>\d)",
                        {"vcpu_id": "d", "gva": "x", "error_code": "s", "sptep": "s", "old_spte": "x",
                         "new_spte": "x", "spurious": "d", "fixed": "d"}),
    "kvm_mmu_zap_all_fast": (rf"kvm-mmu-valid-gen (?P<mmu_valid_gen>{_HEX}) used_pages (?P<used_pages>{_HEX})",
                             {"mmu_valid_gen": "x", "used_pages": "x"}),
    "kvm_mmu_invalidate_zap_all_pages": (rf"kvm-mmu-valid-gen (?P<mmu_valid_gen>{_HEX}) "
                                         rf"used_pages (?P<used_pages>{_HEX})",
                                         {"mmu_valid_gen": "x", "used_pages": "x"}),
    "check_mmio_spte": (rf"spte (?P<spte>{_HEX}) kvm_gen (?P<kvm_gen>{_HEX}) spte-gen (?P<spte_gen>{_HEX}) "
                        rf"valid (?P<valid>\d)",
                        {"spte": "x", "kvm_gen": "x", "spte_gen": "x", "valid": "d"}),
    "kvm_mmu_set_spte": (rf"gfn (?P<gfn>{_HEX}) spte (?P<spte>{_HEX}) \((?P<perm>[^)]*)\) "
                         rf"level (?P<level>\d+) at (?P<sptep>{_HEX})",
                         {"gfn": "x", "spte": "x", "perm": "s", "level": "d", "sptep": "x"}),
    "kvm_mmu_spte_requested": (rf"gfn (?P<gfn>{_HEX}) pfn (?P<pfn>{_HEX}) level (?P<level>\d+)",
                               {"gfn": "x", "pfn": "x", "level": "d"}),
    "kvm_tdp_mmu_spte_changed": (rf"as id (?P<as_id>\d+) gfn (?P<gfn>{_HEX}) level (?P<level>\d+) "
                                 rf"old_spte (?P<old_spte>{_HEX}) new_spte (?P<new_spte>{_HEX})",
                                 {"as_id": "d", "gfn": "x", "level": "d", "old_spte": "x",
                                  "new_spte": "x"}),
    "kvm_mmu_split_huge_page": (rf"gfn (?P<gfn>{_HEX}) spte (?P<spte>{_HEX}) level (?P<level>\d+) "
                                rf"errno (?P<errno>{_DEC})",
                                {"gfn": "x", "spte": "x", "level": "d", "errno": "d"}),
}
_EVENT_RE = {k: re.compile("^" + v[0] + "$") for k, v in EVENTS.items()}
ALL_EVENTS = tuple(EVENTS) + PAGE_EVENTS

#: SPTE-valued fields per event (for the optional SPTE decoder).
SPTE_FIELDS = {"kvm_mmu_set_spte": ("spte",), "kvm_tdp_mmu_spte_changed": ("old_spte", "new_spte"),
               "fast_page_fault": ("old_spte", "new_spte"), "check_mmio_spte": ("spte",),
               "kvm_mmu_split_huge_page": ("spte",)}

_ACC = {"---": 0, "--x": 1, "w--": 2, "w-x": 3, "-u-": 4, "-ux": 5, "wu-": 6, "wux": 7}

#: The SPTE-engine layout profile closest to each role era (None: SPTE layout not modelled).
ERA_TO_SPTE_PROFILE = {"v4.2": None, "v4.12": None, "v4.18": None, "v4.20": None, "v5.0": None,
                       "v5.0-fix": None, "v5.1": None, "v5.9": "v5.10", "v5.14": "v5.13",
                       "v5.17": "v5.17", "v5.19": "v5.19", "v6.14": "v6.13"}


@dataclass
class TraceRecord:
    line_no: int
    comm: str
    pid: int
    cpu: int
    flags: str
    ts: float
    event: str
    fields: dict
    role: Role | None = None
    role_known: int = 0
    spte_text: dict = field(default_factory=dict)
    source: str = "text"


@dataclass
class TraceResult:
    records: list = field(default_factory=list)
    errors: list = field(default_factory=list)      # (line_no, reason, line)
    other_events: Counter = field(default_factory=Counter)
    era: object = None


def _int(v: str, kind: str):
    if kind == "d":
        return int(v, 10)
    if kind == "x":
        return int(v, 16)
    return v


def _raw_int(v: str) -> int:
    v = v.rstrip(",")
    if v.lower().startswith("0x"):
        return int(v, 16)
    if v.lstrip("-").isdigit():
        return int(v, 10)
    return int(v, 16)


def _decode_page_text(era, m, plugin: bool) -> tuple:
    """(partial role word, mask of bits the text states) from a page line."""
    g = m.groupdict()
    f = {"level": int(g["level"]), "quadrant": int(g["quadrant"]), "direct": int(bool(g["direct"])),
         "access": _ACC[g["access"]], "invalid": int(bool(g["invalid"]))}
    known = ["level", "quadrant", "direct", "access", "invalid", era.nx]
    f[era.nx] = 0 if g["nx"] == "!" else 1
    if plugin:
        # plugin_kvm.c's own (pre-v4.12) union: "pae" is the raw bit 4, whatever its name.
        f[era.bit4] = 0 if g["pae"] == "!" else 1
        f["cr0_wp"] = 0 if g["wp"] == "!" else 1
        f["smep_andnot_wp"] = int(bool(g["smep"]))
        f["smap_andnot_wp"] = int(bool(g["smap"]))
        f["smm"] = int(bool(g["smm"]))
        known += [era.bit4, "cr0_wp", "smep_andnot_wp", "smap_andnot_wp", "smm"]
    else:
        if g["gsz"]:
            eight = g["gsz"] == "8"
            f[era.bit4] = int(eight) if era.bit4 != "has_4_byte_gpte" else int(not eight)
        else:
            # " pae" token (<= v5.0 printk): cr4_pae; absent means 0.
            f[era.bit4] = int(bool(g["pae"]))
        known.append(era.bit4)
        if g["ad"] is not None and "ad_disabled" in era.base.index:
            f["ad_disabled"] = 1 if g["ad"] == "!" else 0
            known.append("ad_disabled")
    word = era.base.pack({k: v for k, v in f.items() if k in era.base.index})
    mask = 0
    for k in known:
        if k in era.base.index:
            mask |= era.base.field(k).mask
    return word, mask


def parse_line(line: str, line_no: int = 0, era="latest", spte_decoder=None):
    """Parse one line: a TraceRecord, None for a non-kvmmmu or blank/comment line, or
    raise ValueError with the reason (parse() turns it into an error entry)."""
    era = get_era(era)
    s = line.rstrip("\n")
    if not s.strip() or s.lstrip().startswith("#") or re.match(r"^\s*(cpus|version)\s*=", s):
        return None
    m = _HEADER.match(s)
    if not m:
        raise ValueError("not a trace line (expected 'comm-pid [cpu] ts: event: ...')")
    ev, payload = m["event"], m["payload"]
    rec = TraceRecord(line_no, m["comm"], int(m["pid"]), int(m["cpu"]), m["flags"] or "",
                      float(m["ts"]), ev, {})
    if ev not in ALL_EVENTS:
        return ("other", ev)
    if _RAW_LINE.match(payload):
        raw = dict(_RAW_FIELD.findall(payload))
        try:
            rec.fields = {k: _raw_int(v) for k, v in raw.items()}
        except ValueError:
            raise ValueError(f"{ev}: raw field value is not a number") from None
        rec.source = "raw"
        if ev in PAGE_EVENTS:
            if "role" not in rec.fields or "gfn" not in rec.fields:
                raise ValueError(f"{ev}: raw record without role= or gfn=")
            if rec.fields["role"] >> 32:
                raise ValueError(f"{ev}: role={rec.fields['role']:#x} wider than 32 bits")
            rec.role = unpack(era, rec.fields["role"])
            rec.role_known = 0xFFFFFFFF
    elif ev in PAGE_EVENTS:
        pm = _PAGE_TEXT.match(payload)
        plugin = False
        if not pm:
            pm = _PAGE_PLUGIN.match(payload)
            plugin = pm is not None
        if not pm:
            raise ValueError(f"{ev}: page payload does not match KVM_MMU_PAGE_PRINTK of any era")
        g = pm.groupdict()
        rec.fields = {"gfn": int(g["gfn"], 16), "root_count": int(g["root_count"]),
                      "unsync": int(g["sync"] == "unsync")}
        if g.get("gen") is not None:
            rec.fields["mmu_valid_gen"] = int(g["gen"], 16)
        if g.get("created"):
            rec.fields["created"] = int(g["created"] == "new")
        word, known = _decode_page_text(era, pm, plugin)
        rec.role, rec.role_known = unpack(era, word), known
        rec.source = "plugin" if plugin else "text"
    else:
        em = _EVENT_RE[ev].match(payload)
        if not em:
            raise ValueError(f"{ev}: payload does not match the event's TP_printk format")
        kinds = EVENTS[ev][1]
        rec.fields = {k: _int(v, kinds[k]) for k, v in em.groupdict().items()}
    if spte_decoder is not None and ev in SPTE_FIELDS:
        for k in SPTE_FIELDS[ev]:
            if k in rec.fields:
                try:
                    rec.spte_text[k] = spte_decoder(rec.fields[k], rec.fields.get("level", 1) or 1)
                except Exception as e:  # a decoder problem must not stop the trace
                    rec.spte_text[k] = f"<spte decode failed: {e}>"
    return rec


def parse(lines: Iterable[str], era="latest", spte_decoder: Callable | None = None) -> TraceResult:
    """Parse trace text; malformed lines go to ``errors`` as (line_no, reason, text)."""
    era = get_era(era)
    res = TraceResult(era=era)
    for n, line in enumerate(lines, 1):
        try:
            r = parse_line(line, n, era, spte_decoder)
        except (ValueError, KeyError, OverflowError) as e:
            res.errors.append((n, str(e), line.rstrip("\n")))
            continue
        if r is None:
            continue
        if isinstance(r, tuple):
            res.other_events[r[1]] += 1
            continue
        res.records.append(r)
    return res


def parse_file(path: str, era="latest", spte_decoder=None) -> TraceResult:
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse(f, era, spte_decoder)


def default_spte_decoder(era="latest", mode: str | None = None, profile: str | None = None):
    """A decoder built on the SPTE engine (pykvmmu.config.MmuConfig.preset and
    pykvmmu.spte.decode); None when the engine, the mode or the era's profile is missing."""
    if mode is None:
        return None
    era_arg, era = era, get_era(era)
    prof = profile or ERA_TO_SPTE_PROFILE.get(era.name)
    if prof is None:
        return None
    if profile is None and isinstance(era_arg, str):
        from .errors import ProfileError
        from .profile import profile_for_version
        try:
            prof = profile_for_version(era_arg)[0]  # the library's one version -> profile map
        except ProfileError:
            pass                                    # a role-era name only ("current", "2019")
    try:
        from .config import MmuConfig
        from .spte import decode
        cfg = MmuConfig.preset(mode, profile=prof)
    except Exception:
        return None

    def dec(spte: int, level: int) -> str:
        r = decode(cfg, spte, level)
        kind = getattr(r, "kind", None)
        if kind is None:
            return " | ".join(str(r).splitlines())
        parts = [kind]
        if kind == "present":
            parts += [f"pfn {r.pfn:#x}", r.access, r.ad_type]
            if r.memtype is not None:
                parts.append(r.memtype)
        if getattr(r, "mmio", None):
            parts += [f"{k} {v:#x}" if isinstance(v, int) else f"{k} {v}" for k, v in r.mmio.items()]
        return ", ".join(parts)
    return dec


_DECIMAL = ("level", "root_count", "as_id", "vcpu_id", "errno", "unsync", "created", "spurious",
            "fixed", "valid")


def format_record(r: TraceRecord) -> str:
    head = f"{r.line_no:6d} {r.ts:.6f} cpu{r.cpu} {r.event}"
    fs = " ".join(f"{k}={v:#x}" if isinstance(v, int) and k not in _DECIMAL else f"{k}={v}"
                  for k, v in r.fields.items() if k != "role")
    out = [f"{head}: {fs}"]
    if r.role is not None:
        unk = ~r.role_known & r.role.era.base.used_mask
        out.append(f"         role {r.role}" + (f"  (bits {unk:#x} unknown from text)" if unk else ""))
    for k, v in r.spte_text.items():
        out.append(f"         {k}: {v}")
    return "\n".join(out)


def zap_reason(r: TraceRecord) -> str:
    """A heuristic class for a kvm_mmu_prepare_zap_page record (the event has no reason)."""
    if r.role is None:
        return "unknown"
    if r.role.invalid:
        return "invalid (obsolete) root"
    if r.fields.get("root_count", 0):
        return "root still in use"
    if r.fields.get("unsync"):
        return "unsync page"
    if r.role.direct:
        return f"direct page l{r.role.level} (TDP/huge-page zap, memslot or mmu_notifier)"
    return f"indirect page l{r.role.level} (write-flood/misaligned/unaccount/sync)"


def summary(res: TraceResult) -> str:
    """Per-event counts, role distributions, zap reasons, and the malformed lines."""
    lines = [f"era {res.era}", f"records: {len(res.records)}  malformed: {len(res.errors)}  "
             f"other events: {sum(res.other_events.values())}", "", "events:"]
    for ev, n in Counter(r.event for r in res.records).most_common():
        lines.append(f"  {n:8d} {ev}")
    roles = Counter((r.role.word, r.role_known) for r in res.records if r.role is not None)
    if roles:
        lines += ["", "role distribution (page events):"]
        for (w, known), n in roles.most_common(20):
            r = unpack(res.era, w)
            lines.append(f"  {n:8d} {r}" + ("" if known == 0xFFFFFFFF else " (partial: from text)"))
    zaps = Counter(zap_reason(r) for r in res.records if r.event == "kvm_mmu_prepare_zap_page")
    if zaps:
        lines += ["", "zap reasons (heuristic):"]
        for why, n in zaps.most_common():
            lines.append(f"  {n:8d} {why}")
    if res.errors:
        lines += ["", "malformed lines (skipped):"]
        for n, why, _ in res.errors[:50]:
            lines.append(f"  line {n}: {why}")
    return "\n".join(lines)


_NP_DTYPE = np.dtype([("line_no", "<u4"), ("ts", "<f8"), ("cpu", "<u2"), ("event", "U32"),
                      ("gfn", "<u8"), ("level", "<u1"), ("role", "<u4"), ("role_known", "<u4"),
                      ("spte", "<u8")])


def to_numpy(res: TraceResult) -> np.ndarray:
    """The records as a numpy structured array (missing values are 0)."""
    out = np.zeros(len(res.records), dtype=_NP_DTYPE)
    for i, r in enumerate(res.records):
        f = r.fields
        out[i] = (r.line_no, r.ts, r.cpu, r.event, f.get("gfn", 0), f.get("level", 0) or 0,
                  r.role.word if r.role is not None else 0, r.role_known,
                  f.get("spte", f.get("new_spte", 0)))
    return out

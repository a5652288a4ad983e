"""Presenting trace records: the SPTE decoder hook, one-record text, JSON lines, the
streaming summary (per-event counts, role distribution, zap reasons) and the numpy view."""
from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Optional, overload

import numpy as np

from ..role import get_era, unpack
from .record import FULL_ROLE, TraceArgumentError, TraceRecord, TraceResult


def _is(name: str, value, cls):
    """Refuse ``value`` unless it is a ``cls``."""
    if not isinstance(value, cls):
        raise TraceArgumentError(f"{name}={value!r}: expected a {cls.__name__}")
    return value


def _version_arg(version):
    """None, or a kernel version string ("6.18", "6.18.44-fc-v669")."""
    if version is not None and kernel_version_of(version) is None:
        raise TraceArgumentError(f"version={version!r}: expected a kernel version such as '6.18.44'"
                                 " or None")
    return version

if TYPE_CHECKING:
    from ..config import MmuConfig

__all__ = ["default_spte_decoder", "spte_profile_for", "kernel_version_of", "format_record",
           "zap_reason", "summary", "Summary", "to_numpy", "ERA_TO_SPTE_PROFILE"]

#: The SPTE-engine layout profile of each role era's first kernel (None: SPTE layout not
#: modelled).  Used only when neither the trace nor ``--era`` names a kernel version.
ERA_TO_SPTE_PROFILE = {"v4.2": None, "v4.12": None, "v4.18": None, "v4.20": None, "v5.0": None,
                       "v5.0-fix": None, "v5.1": None, "v5.9": "v5.10", "v5.14": "v5.13",
                       "v5.17": "v5.17", "v5.19": "v5.19", "v6.14": "v6.13"}


#: ``decoder(spte, level) -> str``: one SPTE as text (what :func:`default_spte_decoder` builds).
SpteDecoder = Callable[[int, int], str]

_NEWEST = ("latest", "newest", "current", "default")
#: The oldest kernel whose SPTE layout the engine models (profile v5.10).
_OLDEST_SPTE_KERNEL = (5, 10)


def kernel_version_of(text) -> tuple | None:
    """(major, minor) from a release or era string ("6.18.44-fc-v669", "v6.18"), else None."""
    if not isinstance(text, str):
        return None
    m = re.match(r"^\s*v?(\d+)\.(\d+)(?:[.\-+_~]|$)", text)
    return (int(m[1]), int(m[2])) if m else None


def spte_profile_for(era, version: str | None = None) -> str | None:
    """The SPTE layout profile for a trace: from the kernel version when one is known (the
    trace's, or an ``era`` written as a version such as "v6.18"), through the library's one
    version-to-profile map (profile.profile_for_version); else from the role era.  None for
    a kernel older than the modelled SPTE layouts (v5.10)."""
    from ..profile import profile_for_version
    _version_arg(version)
    if version is None and isinstance(era, str) and era.strip().lower() in _NEWEST:
        return profile_for_version("latest")[0].name
    for v in (version, era if isinstance(era, str) else None):
        mm = kernel_version_of(v)
        if mm is not None and v is not None:
            if mm < _OLDEST_SPTE_KERNEL:
                return None
            return profile_for_version(v.strip())[0].name
    return ERA_TO_SPTE_PROFILE.get(get_era(era).name)


@overload
def default_spte_decoder(era: Any = ..., mode: None = ..., profile: Optional[str] = ...,
                         version: Optional[str] = ..., config: None = ...) -> None: ...
@overload
def default_spte_decoder(era: Any = ..., mode: Optional[str] = ..., profile: Optional[str] = ...,
                         version: Optional[str] = ..., *, config: MmuConfig) -> SpteDecoder: ...
@overload
def default_spte_decoder(era: Any = ..., mode: Optional[str] = ..., profile: Optional[str] = ...,
                         version: Optional[str] = ...,
                         config: Optional[MmuConfig] = ...) -> Optional[SpteDecoder]: ...


def default_spte_decoder(era: Any = "latest", mode: Optional[str] = None, profile: Optional[str] = None,
                         version: Optional[str] = None,
                         config: Optional[MmuConfig] = None) -> Optional[SpteDecoder]:
    """A decoder ``(spte, level) -> str`` built on the SPTE engine (pykvmmu.spte.decode) for
    an MmuConfig: ``config`` as given, or ``MmuConfig.preset(mode, profile=...)`` with the
    profile from ``profile`` / the kernel version / the era.  None without a mode/config or
    when the era has no modelled SPTE layout; an unknown mode or profile raises."""
    from .. import _check as C
    from ..profile import get_profile
    if config is not None:
        C.mmu_config(config, "config")
    if mode is not None and not isinstance(mode, str):
        raise TraceArgumentError(f"mode={mode!r}: expected a preset name such as 'ept', or None")
    if profile is not None:
        get_profile(profile)
    spte_profile_for(era, version)              # checks era and version
    if config is None:
        if mode is None:
            return None
        prof = profile or spte_profile_for(era, version)
        if prof is None:
            return None
        from ..config import MmuConfig
        cfg = MmuConfig.preset(mode, profile=prof)
    else:
        cfg = config
    from ..spte import decode

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
        mmio = getattr(r, "mmio", None)
        if mmio:
            parts += [f"{k} {v:#x}" if isinstance(v, int) else f"{k} {v}" for k, v in mmio.items()]
        return ", ".join(parts)
    setattr(dec, "config", cfg)                 # the MmuConfig the decoder was built on
    return dec


_DECIMAL = ("level", "root_count", "as_id", "vcpu_id", "errno", "unsync", "created", "spurious",
            "fixed", "valid")


def format_record(r: TraceRecord) -> str:
    _is("r", r, TraceRecord)
    ts = f"{r.ts_ns // 10**9}.{r.ts_ns % 10**9:09d}" if r.ts_ns is not None else f"{r.ts:.6f}"
    head = f"{r.line_no:6d} {ts} cpu{r.cpu} {r.event}"
    fs = " ".join(f"{k}={v:#x}" if isinstance(v, int) and v >= 0 and k not in _DECIMAL else f"{k}={v}"
                  for k, v in r.fields.items() if k != "role")
    out = [f"{head}: {fs}"]
    if r.role is not None:
        unk = ~r.role_known & r.role.era.base.used_mask
        out.append(f"         role {r.role}" + (f"  (bits {unk:#x} unknown from text)" if unk else ""))
    for k, v in r.spte_text.items():
        out.append(f"         {k}: {v}")
    for fn in r.stack:
        out.append(f"         => {fn}")
    return "\n".join(out)


def zap_reason(r: TraceRecord) -> str:
    """A heuristic class for a kvm_mmu_prepare_zap_page record (the event has no reason)."""
    _is("r", r, TraceRecord)
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


class Summary:
    """Counts folded in one record at a time (constant memory: counters only)."""

    def __init__(self, era):
        self.era = get_era(era)
        self.records = 0
        self.events = Counter()
        self.roles = Counter()
        self.zaps = Counter()

    def add(self, r: TraceRecord) -> None:
        self.records += 1
        self.events[r.event] += 1
        if r.role is not None:
            self.roles[(r.role.word, r.role_known)] += 1
        if r.event == "kvm_mmu_prepare_zap_page":
            self.zaps[zap_reason(r)] += 1

    def text(self, errors=(), n_errors: int | None = None, other_events=None,
             kernel_version: str | None = None, fmt: str | None = None, lost=None) -> str:
        errors = list(errors)
        n_err = len(errors) if n_errors is None else n_errors
        other = sum((other_events or {}).values())
        head = [f"era {self.era}" + (f"  (kernel {kernel_version})" if kernel_version else "")]
        if fmt:
            head.append(f"format: {fmt}")
        lines = head + [f"records: {self.records}  malformed: {n_err}  other events: {other}",
                        "", "events:"]
        for ev, n in self.events.most_common():
            lines.append(f"  {n:8d} {ev}")
        if self.roles:
            lines += ["", "role distribution (page events):"]
            for (w, known), n in self.roles.most_common(20):
                r = unpack(self.era, w)
                lines.append(f"  {n:8d} {r}" + ("" if known == FULL_ROLE else " (partial: from text)"))
        if self.zaps:
            lines += ["", "zap reasons (heuristic):"]
            for why, n in self.zaps.most_common():
                lines.append(f"  {n:8d} {why}")
        lost_lines = [f"  {cpu}: " + ", ".join(f"{k} {v}" for k, v in sorted(d.items()))
                      for cpu, d in sorted((lost or {}).items()) if any(d.values())]
        if lost_lines:
            lines += ["", "lost events (ring buffer):"] + lost_lines
        if errors:
            lines += ["", "malformed lines (skipped):"]
            for n, why, _ in errors[:50]:
                lines.append(f"  line {n}: {why}")
        return "\n".join(lines)


def summary(res: TraceResult) -> str:
    """Per-event counts, role distributions, zap reasons, and the malformed lines."""
    _is("res", res, TraceResult)
    s = Summary(res.era)
    for r in res.records:
        s.add(r)
    return s.text(res.errors, None, res.other_events, res.kernel_version)


_NP_DTYPE = np.dtype([("line_no", "<u4"), ("ts", "<f8"), ("cpu", "<u2"), ("event", "U32"),
                      ("gfn", "<u8"), ("level", "<u1"), ("role", "<u4"), ("role_known", "<u4"),
                      ("spte", "<u8")])


def to_numpy(res: TraceResult) -> np.ndarray:
    """The records as a numpy structured array (missing values are 0)."""
    _is("res", res, TraceResult)
    out = np.zeros(len(res.records), dtype=_NP_DTYPE)
    for i, r in enumerate(res.records):
        f = r.fields
        spte = f.get("spte", f.get("new_spte", 0))
        out[i] = (r.line_no, r.ts, r.cpu, r.event[:32], f.get("gfn", 0) if isinstance(f.get("gfn", 0), int) else 0,
                  (f.get("level", 0) or 0) if isinstance(f.get("level", 0), int) else 0,
                  r.role.word if r.role is not None else 0, r.role_known,
                  spte & 0xFFFFFFFFFFFFFFFF if isinstance(spte, int) else 0)
    return out

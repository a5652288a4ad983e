"""The record type every trace reader yields, and the errors of ``pykvmmu.trace``.

A :class:`TraceRecord` is one tracepoint hit.  Binary sources (the raw ring buffer of a
capture or tracefs directory, trace-cmd's ``trace.dat``) carry every field of the event as
an integer (strings and arrays as ``str``/``bytes``), so page events get the whole role word
(``role_known == 0xFFFFFFFF``).  Text sources carry what the text shows; ``role_known`` is
then the mask of role bits the line states.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..errors import InputError, PykvmmuError
from ..role import Role

__all__ = ["TraceRecord", "TraceResult", "TraceError", "TraceFormatError", "TraceEraError", "decorate", "PAGE_EVENTS", "SPTE_FIELDS",
           "UnsupportedTraceError", "FULL_ROLE", "TraceArgumentError"]

#: ``role_known`` of a record whose role word came from a raw u32 field.
FULL_ROLE = 0xFFFFFFFF


class TraceError(PykvmmuError):
    """A trace source that cannot be read at all (missing file, unknown format)."""


class TraceFormatError(TraceError, InputError):
    """Binary trace data that breaks its documented format (names offset and rule)."""


class UnsupportedTraceError(TraceError):
    """A valid trace this reader does not decode (e.g. a zstd-compressed trace.dat)."""


class TraceArgumentError(TraceError, InputError):
    """An argument of a trace entry point that breaks its rule (type, width or range)."""


class TraceEraError(TraceError, InputError):
    """The role era is missing (no kernel version in the trace) or contradicts the trace."""


@dataclass
class TraceRecord:
    """One event.  ``line_no`` is the text line (1-based) or the record's index in a binary
    source; ``ts`` is in seconds, ``ts_ns`` the exact nanoseconds where the source has them
    (a text timestamp without a dot is a clock's count, not time: ``ts`` is that count; a
    line without a time has ``ts`` 0.0); ``fields`` maps the event's field names (without
    ``common_*``) to values."""
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
    ts_ns: int | None = None
    system: str = "kvmmmu"
    stack: tuple = ()
    payload: str = ""

    def to_json(self) -> dict:
        """A JSON-ready dict (role word and SPTE-valued fields as integers)."""
        d: dict = {"line_no": self.line_no, "ts": self.ts, "ts_ns": self.ts_ns, "cpu": self.cpu,
             "pid": self.pid, "comm": self.comm, "flags": self.flags, "system": self.system,
             "event": self.event, "source": self.source,
             "fields": {k: (v.hex() if isinstance(v, (bytes, bytearray)) else v)
                        for k, v in self.fields.items()}}
        if self.role is not None:
            d["role"] = {"era": self.role.era.name, "word": self.role.word,
                         "known": self.role_known, "text": str(self.role)}
        if self.spte_text:
            d["spte_text"] = dict(self.spte_text)
        if self.stack:
            d["stack"] = list(self.stack)
        return d


@dataclass
class TraceResult:
    """A whole trace in memory (``parse``/``parse_file``); ``open_trace`` streams instead."""
    records: list = field(default_factory=list)
    errors: list = field(default_factory=list)      # (line_no, reason, line)
    other_events: Counter = field(default_factory=Counter)
    era: object = None
    kernel_version: str | None = None
    format: str | None = None


#: The kvmmmu events whose records carry a page role word (``role`` u32 field).
PAGE_EVENTS = ("kvm_mmu_get_page", "kvm_mmu_sync_page", "kvm_mmu_unsync_page",
               "kvm_mmu_prepare_zap_page", "kvm_mmu_zap_page")

#: SPTE-valued fields per event (for the optional SPTE decoder).
SPTE_FIELDS = {"kvm_mmu_set_spte": ("spte",), "kvm_tdp_mmu_spte_changed": ("old_spte", "new_spte"),
               "fast_page_fault": ("old_spte", "new_spte"), "check_mmio_spte": ("spte",),
               "kvm_mmu_split_huge_page": ("spte",)}


def decorate(rec: TraceRecord, era, spte_decoder=None) -> TraceRecord:
    """Attach the whole role word (a page event with an integer ``role`` field) and the
    decoded SPTEs (``spte_decoder(spte, level) -> str``; its failures become text)."""
    if rec.event in PAGE_EVENTS and rec.role is None:
        w = rec.fields.get("role")
        if isinstance(w, int):
            if not 0 <= w <= FULL_ROLE:
                raise InputError(f"{rec.event}: role={w:#x} is not a 32-bit role word")
            from ..role import unpack
            rec.role, rec.role_known = unpack(era, w), FULL_ROLE
    if spte_decoder is not None and rec.event in SPTE_FIELDS:
        for k in SPTE_FIELDS[rec.event]:
            v = rec.fields.get(k)
            if isinstance(v, int):
                try:
                    rec.spte_text[k] = spte_decoder(v & 0xFFFFFFFFFFFFFFFF, rec.fields.get("level", 1) or 1)
                except Exception as e:  # a decoder problem must not stop the trace
                    rec.spte_text[k] = f"<spte decode failed: {e}>"
    return rec

"""Tracefs format files: ``events/header_page``, ``events/header_event`` and each event's
``events/<system>/<event>/format`` (the layout the kernel exports for its raw records).

An :class:`EventFormat` decodes one raw record (``common_type`` first) into a dict of every
field: integers (signedness and size from the file), ``char[N]`` and ``__data_loc char[]``
as ``str``, other arrays as tuples of integers, other dynamic arrays as ``bytes``.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .record import TraceFormatError

__all__ = ["FieldFormat", "EventFormat", "HeaderPage", "parse_event_format", "parse_header_page",
           "check_header_event"]

_FIELD = re.compile(r"^\s*field:(?P<decl>[^;]*);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);"
                    r"(?:\s*signed:(?P<signed>\d+);)?")
_INT = {1: "B", 2: "H", 4: "I", 8: "Q"}
#: No field of a record lies beyond this (a record fits in one ring-buffer sub-buffer).
MAX_RECORD = 1 << 20


@dataclass(frozen=True)
class FieldFormat:
    name: str
    ctype: str
    offset: int
    size: int
    signed: bool
    kind: str            # "int", "str", "array", "data_loc", "rel_loc"
    count: int = 1       # array element count ("array")


def _field(decl: str, off: int, size: int, signed: bool) -> FieldFormat:
    decl = decl.strip()
    m = re.match(r"^(?P<type>.*?)(?P<name>[A-Za-z_]\w*)\s*(?:\[(?P<n>[^\]]*)\])?$", decl)
    if not m:
        raise TraceFormatError(f"format field {decl!r}: not a C declaration 'type name[;]'")
    ctype, name, n = m["type"].strip(), m["name"], m["n"]
    if ctype.startswith("__data_loc") or ctype.startswith("__rel_loc"):
        if size != 4:
            raise TraceFormatError(f"format field {decl!r}: a __data_loc/__rel_loc is 4 bytes, not {size}")
        return FieldFormat(name, ctype, off, size, signed,
                           "data_loc" if ctype.startswith("__data_loc") else "rel_loc")
    if n is not None:
        if "char" in ctype:
            return FieldFormat(name, ctype, off, size, signed, "str")
        try:        # a number, or a name the format file left unexpanded (then: bytes)
            count = int(n, 0) if n.strip() else 0
        except ValueError:
            count = 0
        if count <= 0 or size % count or size // count not in _INT:
            return FieldFormat(name, ctype, off, size, signed, "array", 0)
        return FieldFormat(name, ctype, off, size, signed, "array", count)
    if size not in _INT:
        return FieldFormat(name, ctype, off, size, signed, "array", 0)
    return FieldFormat(name, ctype, off, size, signed, "int")


class EventFormat:
    """One event's format file; :meth:`decode` turns a raw record into a field dict."""

    def __init__(self, system: str, name: str, id: int, fields: list, print_fmt: str,
                 endian: str = "<"):
        self.system, self.name, self.id = system, name, id
        self.fields = fields
        self.print_fmt = print_fmt
        self.endian = endian
        scalars = [f for f in fields if f.kind == "int"]
        self._min_len = max((f.offset + f.size for f in fields), default=0)
        # one struct over the scalar fields (non-overlapping, in offset order): one unpack
        scalars.sort(key=lambda f: f.offset)
        fmt, pos, names, ok = endian, 0, [], True
        for f in scalars:
            if f.offset < pos:
                ok = False
                break
            fmt += "x" * (f.offset - pos)
            code = _INT[f.size]
            fmt += code.lower() if f.signed else code
            pos = f.offset + f.size
            names.append(f.name)
        self._struct = struct.Struct(fmt) if ok else None
        self._scalar_names = names
        self._scalars = scalars
        self._others = [f for f in fields if f.kind != "int"]
        self._common = {f.name for f in fields if f.name.startswith("common_")}

    @property
    def full_name(self) -> str:
        return f"{self.system}:{self.name}"

    def decode(self, data) -> dict:
        """Every field of the raw record ``data`` (bytes/memoryview starting at common_type)."""
        if len(data) < self._min_len:
            raise TraceFormatError(f"{self.full_name} record of {len(data)} bytes is shorter than "
                                   f"its format ({self._min_len} bytes)")
        if self._struct is not None:
            out = dict(zip(self._scalar_names, self._struct.unpack_from(data, 0)))
        else:
            out = {}
            for f in self._scalars:
                code = _INT[f.size]
                out[f.name] = struct.unpack_from(self.endian + (code.lower() if f.signed else code),
                                                 data, f.offset)[0]
        for f in self._others:
            out[f.name] = self._value(f, data)
        return out

    def _value(self, f: FieldFormat, data):
        if f.kind == "str":
            return _cstr(bytes(data[f.offset:f.offset + f.size]))
        if f.kind == "array":
            raw = bytes(data[f.offset:f.offset + f.size])
            if not f.count:
                return raw
            code = _INT[f.size // f.count]
            return struct.unpack(f"{self.endian}{f.count}{code.lower() if f.signed else code}", raw)
        loc = struct.unpack_from(self.endian + "I", data, f.offset)[0]
        start, length = loc & 0xFFFF, loc >> 16
        if f.kind == "rel_loc":
            start += f.offset + f.size
        if start + length > len(data):
            raise TraceFormatError(f"{self.full_name}.{f.name}: dynamic array [{start}, {start + length}) "
                                   f"outside the {len(data)}-byte record")
        raw = bytes(data[start:start + length])
        return _cstr(raw) if "char" in f.ctype else raw


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


_EVENT_NAME = re.compile(r"^[A-Za-z_]\w*$")


def parse_event_format(text: str, system: str | None = None, endian: str = "<") -> EventFormat:
    """Parse a tracefs ``format`` file (``system`` from the caller: the file does not say it)."""
    name = id_ = None
    fields, print_fmt = [], ""
    for line in text.splitlines():
        if line.startswith("name:"):
            name = line[5:].strip()
        elif line.startswith("ID:"):
            try:
                id_ = int(line[3:].strip())
            except ValueError:
                raise TraceFormatError(f"format file: ID {line[3:].strip()!r} is not an integer") from None
        elif line.startswith("print fmt:"):
            print_fmt = line[10:].strip()
        else:
            m = _FIELD.match(line)
            if m:
                off, size = int(m["off"]), int(m["size"])
                if off + size > MAX_RECORD:
                    raise TraceFormatError(f"format field {m['decl'].strip()!r}: offset {off} + size "
                                           f"{size} exceeds a ring-buffer page ({MAX_RECORD} bytes)")
                fields.append(_field(m["decl"], off, size, m["signed"] == "1"))
    if name is None or id_ is None:
        raise TraceFormatError("format file without 'name:' or 'ID:' line")
    if not _EVENT_NAME.match(name):
        raise TraceFormatError(f"format file: event name {name!r} is not a C identifier (a "
                               "tracepoint's name is one)")
    if not any(f.name == "common_type" for f in fields):
        raise TraceFormatError(f"format of {name}: no common_type field")
    return EventFormat(system or "", name, id_, fields, print_fmt, endian)


@dataclass(frozen=True)
class HeaderPage:
    """``events/header_page``: where a ring-buffer page keeps its timestamp, commit and data."""
    ts_offset: int
    ts_size: int
    commit_offset: int
    commit_size: int
    data_offset: int
    data_size: int

    @property
    def page_size(self) -> int:
        return self.data_offset + self.data_size


def parse_header_page(text: str) -> HeaderPage:
    got: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*field:\s*(?:[\w ]+?)\s+(\w+);\s*offset:(\d+);\s*size:(\d+);", line)
        if m:
            got.setdefault(m[1], (int(m[2]), int(m[3])))
    for need in ("timestamp", "commit", "data"):
        if need not in got:
            raise TraceFormatError(f"header_page: no {need!r} field")
    (to, ts), (co, cs), (do, ds) = got["timestamp"], got["commit"], got["data"]
    if ts != 8 or cs not in (4, 8) or do < co + cs:
        raise TraceFormatError(f"header_page: timestamp size {ts}, commit size {cs} at {co}, data at "
                               f"{do}: not the ring-buffer page layout (u64 timestamp, long commit, data)")
    return HeaderPage(to, ts, co, cs, do, ds)


def check_header_event(text: str | None) -> None:
    """Refuse an event header that is not the documented 5-bit type_len / 27-bit time_delta
    with padding 29, time extend 30, time stamp 31 (the kernel prints constants)."""
    if text is None:
        return
    want = {"type_len": "5", "time_delta": "27", "padding": "29", "time_extend": "30",
            "time_stamp": "31"}
    got = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(\w+)\s*:\s*(\d+)\s*bits", line)
        if m:
            got[m[1]] = m[2]
        m = re.match(r"^\s*(\w+)\s*:\s*type\s*==\s*(\d+)", line)
        if m:
            got[m[1]] = m[2]
    for k, v in want.items():
        if k in got and got[k] != v:
            raise TraceFormatError(f"header_event: {k} is {got[k]}, the reader knows {v}")

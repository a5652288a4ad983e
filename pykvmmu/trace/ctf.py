"""Common Trace Format 1.8 traces as ``perf data convert --to-ctf DIR`` writes them.

A CTF trace is a directory: ``metadata`` (TSDL text: the trace's packet header, each
stream's packet context and event header, and each event's field struct) and one binary
stream file per CPU (``perf_stream_N``), a sequence of packets.  perf's converter
(babeltrace's CTF writer) names each event ``system:event``, stores every tracepoint field
(``common_*`` included) as a 32- or 64-bit integer of the field's signedness, adds
``perf_ip``/``perf_tid``/``perf_pid``/``perf_id``/``perf_period`` (and
``perf_callchain_size``/``perf_callchain[]`` with ``-g``), and the CPU as the packet
context's ``cpu_id``; ``--all`` adds the side-band events (``perf_comm`` gives task names).

This reader understands the TSDL subset such a trace uses: ``trace``/``env``/``clock``/
``stream``/``event`` blocks; ``integer`` (byte-sized and byte-aligned, any byte order),
``string``, ``struct`` with fixed arrays and sequences.  Anything else (type aliases, enums,
variants, floating point, bit fields, packetized metadata as LTTng writes it, compact
timestamps) is refused by name (UnsupportedTraceError); a stream that breaks its own
metadata raises TraceFormatError naming the file, packet and offset.
"""
from __future__ import annotations

import heapq
import os
import re
import struct
from collections import Counter

from .perfdata import PERF_CONTEXT_MAX
from .raw import count_lost, event_record_fields
from .record import TraceFormatError, TraceRecord, UnsupportedTraceError

__all__ = ["CtfSource", "ctf_in_tar", "is_ctf_dir", "is_ctf_metadata", "open_ctf", "open_ctf_tar",
           "parse_metadata"]

PACKET_MAGIC = 0xC1FC1FC1
_PACKETIZED_MAGIC = (0x75D11D57).to_bytes(4, "little"), (0x75D11D57).to_bytes(4, "big")
_SIGNATURE = re.compile(rb"\A\s*/\*\s*CTF 1\.8")
#: perf's side-band events (``--all``); only ``perf_comm`` is used (task names)
_SIDEBAND = ("perf_comm", "perf_exit", "perf_fork", "perf_mmap", "perf_mmap2")
_METADATA_MAX = 64 << 20
_DEPTH_MAX = 32


def is_ctf_metadata(head: bytes) -> bool:
    """True when ``head`` (a file's first bytes) starts CTF 1.8 TSDL text metadata."""
    return bool(_SIGNATURE.match(head))


def is_ctf_dir(path: str) -> bool:
    """A directory whose ``metadata`` file is CTF (text or packetized)."""
    p = os.path.join(path, "metadata")
    if not os.path.isfile(p):
        return False
    with open(p, "rb") as f:
        head = f.read(64)
    return is_ctf_metadata(head) or head[:4] in _PACKETIZED_MAGIC


# ----------------------------------------------------------------------------- TSDL
_TOKEN = re.compile(r"""\s+|/\*.*?\*/|//[^\n]*|(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>:=|[{}\[\]();=,:])
                        |(?P<num>-?(?:0[xX][0-9a-fA-F]+|\d+))|(?P<id>[A-Za-z_][A-Za-z0-9_.]*)""",
                    re.S | re.X)


class _Int:
    __slots__ = ("size", "align", "signed", "order")

    def __init__(self, size, align, signed, order):
        self.size, self.align, self.signed, self.order = size, align, signed, order


class _Str:
    __slots__ = ("align",)

    def __init__(self):
        self.align = 8


class _Struct:
    __slots__ = ("members", "align", "ops")

    def __init__(self, members, align):
        self.members, self.align = members, align      # [(name, type, None | int | str)]
        self.ops = None


class _Meta:
    """What ``parse_metadata`` found: trace/env/clock attributes, each stream's header and
    context structs, and the events by (stream id, event id)."""

    def __init__(self) -> None:
        self.trace: dict = {}
        self.env: dict = {}
        self.clocks: dict = {}
        self.packet_header: _Struct | None = None
        self.streams: dict = {}         # id -> {"event.header": .., "packet.context": .., "event.context": ..}
        self.events: dict = {}          # (stream id, id) -> (name, context struct | None, fields struct)


class _Parser:
    def __init__(self, text: str, where: str):
        self.where = where
        self.toks = []
        pos = 0
        for m in _TOKEN.finditer(text):
            if m.start() != pos:
                break
            pos = m.end()
            kind = m.lastgroup
            if kind is not None:
                self.toks.append((kind, m.group(kind), m.start()))
        if pos != len(text):
            self.fail(f"unexpected text {text[pos:pos + 20]!r} at offset {pos}")
        self.i = 0
        self.depth = 0
        self.order = "<"

    def fail(self, why: str):
        raise TraceFormatError(f"{self.where}: {why}")

    def peek(self):
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self, want=None):
        if self.i >= len(self.toks):
            self.fail(f"metadata ends where {want or 'more'} was expected")
        kind, v, off = self.toks[self.i]
        if want is not None and v != want:
            self.fail(f"{v!r} at offset {off} where {want!r} was expected")
        self.i += 1
        return v

    def value(self):
        kind, v, off = self.toks[self.i] if self.i < len(self.toks) else (None, None, None)
        if kind is None:
            self.fail("metadata ends inside an assignment")
        self.i += 1
        if kind == "num":                   # C literals: 0x hex, 0 octal, else decimal
            neg, d = v.startswith("-"), v.lstrip("-")
            try:
                n = int(d, 16) if d[:2] in ("0x", "0X") else int(d, 8) if d[:1] == "0" else int(d)
            except ValueError:
                self.fail(f"number {v!r} at offset {off}")
            return -n if neg else n
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", v[1:-1], flags=re.S)
        if kind == "id":
            return v
        self.fail(f"{v!r} at offset {off}: not a value")

    def parse(self) -> _Meta:
        meta = _Meta()
        blocks = []
        while self.peek() is not None:
            kw = self.take()
            if kw not in ("trace", "env", "clock", "stream", "event"):
                raise UnsupportedTraceError(f"{self.where}: TSDL {kw!r} declarations are not read "
                                            "(this reader takes the subset perf's CTF converter writes)")
            self.take("{")
            attrs = self.body()
            self.take(";")
            if kw == "trace":
                bo = attrs.get("byte_order", "le")
                if bo not in ("le", "be", "network"):
                    self.fail(f"trace byte_order {bo!r} (le, be or network)")
                self.order = "<" if bo == "le" else ">"
            blocks.append((kw, attrs))
        # the trace's byte order is known only once its block is read: types say "native"
        for kw, attrs in blocks:
            if kw == "trace":
                meta.trace = attrs
                meta.packet_header = attrs.get("packet.header")
            elif kw == "env":
                meta.env = attrs
            elif kw == "clock":
                meta.clocks[attrs.get("name")] = attrs
            elif kw == "stream":
                meta.streams[attrs.get("id", 0)] = attrs
            else:
                sid, eid = attrs.get("stream_id", 0), attrs.get("id")
                if not isinstance(eid, int) or not isinstance(attrs.get("name"), str):
                    self.fail(f"an event block without an integer id and a name: {attrs}")
                if not isinstance(attrs.get("fields"), _Struct):
                    self.fail(f"event {attrs['name']!r}: no fields struct")
                if (sid, eid) in meta.events:
                    self.fail(f"event id {eid} of stream {sid} declared twice")
                if not isinstance(attrs.get("context"), (_Struct, type(None))):
                    self.fail(f"event {attrs['name']!r}: context is not a struct")
                meta.events[(sid, eid)] = (attrs["name"], attrs.get("context"), attrs["fields"])
        for sid, _ in meta.events:
            if sid not in meta.streams:
                self.fail(f"an event of stream {sid}, which is not declared")
        return meta

    def body(self) -> dict:
        attrs: dict = {}
        while self.peek() != "}":
            key = self.take()
            if key in attrs:
                self.fail(f"{key!r} set twice in one block")
            op = self.take()
            if op == ":=":
                attrs[key] = self.type_()
            elif op == "=":
                attrs[key] = self.value()
            else:
                self.fail(f"{op!r} after {key!r} (expected '=' or ':=')")
            self.take(";")
        self.take("}")
        return attrs

    def type_(self):
        kw = self.take()
        if kw == "integer":
            self.take("{")
            a = self.body()
            size = a.get("size")
            if not isinstance(size, int) or not 1 <= size <= 64:
                self.fail(f"integer of size {size!r} (1..64 bits)")
            align = a.get("align", 8 if size % 8 == 0 else 1)
            if not isinstance(align, int) or align < 1 or align & (align - 1):
                self.fail(f"integer align {align!r} (a power of two, in bits)")
            bo = a.get("byte_order", "native")
            order = {"le": "<", "be": ">", "network": ">"}.get(bo, None if bo == "native" else "?")
            if order == "?":
                self.fail(f"integer byte_order {bo!r}")
            if size % 8:
                raise UnsupportedTraceError(f"{self.where}: a {size}-bit integer field (bit fields are "
                                            "not read)")
            signed = a.get("signed", False)
            return _Int(size, align, signed in (True, 1, "true", "TRUE"), order)
        if kw == "string":
            if self.peek() == "{":
                self.take("{")
                a = self.body()
                if a.get("encoding", "UTF8") not in ("UTF8", "ASCII", "none"):
                    self.fail(f"string encoding {a['encoding']!r}")
            return _Str()
        if kw == "struct":
            self.depth += 1
            if self.depth > _DEPTH_MAX:
                self.fail(f"structs nested more than {_DEPTH_MAX} deep")
            self.take("{")
            members = []
            names = set()
            while self.peek() != "}":
                t = self.type_()
                name = self.take()
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                    self.fail(f"struct member name {name!r}")
                length = None
                if self.peek() == "[":
                    self.take("[")
                    length = self.value()
                    self.take("]")
                    if isinstance(length, str) and length not in names:
                        self.fail(f"sequence {name}[{length}]: {length!r} is not an earlier member")
                    if isinstance(length, int) and length < 0:
                        self.fail(f"array {name}[{length}]")
                if name in names:
                    self.fail(f"struct member {name!r} declared twice")
                names.add(name)
                members.append((name, t, length))
                self.take(";")
            self.take("}")
            self.depth -= 1
            if not members:
                self.fail("an empty struct")
            align = 1
            if self.peek() == "align":
                self.take("align")
                self.take("(")
                align = self.value()
                self.take(")")
                if not isinstance(align, int) or align < 1 or align & (align - 1):
                    self.fail(f"struct align({align!r})")
            align = max([align] + [t.align for _, t, _ in members])
            return _Struct(members, align)
        raise UnsupportedTraceError(f"{self.where}: TSDL type {kw!r} is not read (this reader takes "
                                    "integers, strings, structs, arrays and sequences)")


def parse_metadata(text: str, where: str = "metadata") -> _Meta:
    """Parse CTF 1.8 TSDL metadata (the subset perf's converter writes); see the module doc."""
    p = _Parser(text, where)
    meta = p.parse()
    order = p.order
    for s in _all_structs(meta):
        _fix_order(s, order)
    for k in ("major", "minor"):
        if k in meta.trace and not isinstance(meta.trace[k], int):
            p.fail(f"trace {k} {meta.trace[k]!r}")
    if (meta.trace.get("major"), meta.trace.get("minor")) not in ((1, 8), (None, None)):
        raise UnsupportedTraceError(f"{where}: CTF {meta.trace.get('major')}.{meta.trace.get('minor')} "
                                    "(this reader takes CTF 1.8)")
    return meta


def _all_structs(meta):
    if meta.packet_header is not None:
        yield meta.packet_header
    for s in meta.streams.values():
        for k in ("event.header", "packet.context", "event.context"):
            if isinstance(s.get(k), _Struct):
                yield s[k]
    for _, ctx, fields in meta.events.values():
        if ctx is not None:
            yield ctx
        yield fields


def _fix_order(s: _Struct, order: str):
    for _, t, _ in s.members:
        if isinstance(t, _Int) and t.order is None:
            t.order = order
        elif isinstance(t, _Struct):
            _fix_order(t, order)


# ----------------------------------------------------------------------------- decoding
_CODES = {8: "B", 16: "H", 32: "I", 64: "Q"}


def _compile(s: _Struct):
    """The struct's read steps: runs of byte-sized integers of one byte order, aligned to at
    most a byte, become one struct.Struct; strings, arrays, sequences, nested structs and
    other integers are steps of their own."""
    ops: list = []
    run: list = []                  # [(name, code)] of one byte order
    order = "<"
    for name, t, length in s.members:
        packable = isinstance(t, _Int) and length is None and t.size in _CODES and t.align <= 8
        if run and (not packable or t.order != order):
            ops.append(("ints", struct.Struct(order + "".join(c for _, c in run)), tuple(n for n, _ in run)))
            run = []
        if packable:
            run.append((name, _CODES[t.size].lower() if t.signed else _CODES[t.size]))
            order = t.order
        else:
            ops.append(("one", name, t, length))
    if run:
        ops.append(("ints", struct.Struct(order + "".join(c for _, c in run)), tuple(n for n, _ in run)))
    s.ops = ops
    return ops


class _Cursor:
    """A bit offset into one packet's bytes, bounded by its content size."""

    __slots__ = ("buf", "bit", "end", "where")

    def __init__(self, buf: bytes, bit: int, end: int, where: str):
        self.buf, self.bit, self.end, self.where = buf, bit, end, where

    def align(self, a: int):
        if a > 1:
            self.bit = -(-self.bit // a) * a

    def need(self, nbits: int, what: str):
        if self.bit + nbits > self.end:
            raise TraceFormatError(f"{self.where}: {what} at bit {self.bit} runs past the packet's "
                                   f"content ({self.end} bits; truncated or damaged?)")

    def read(self, s: _Struct, out: dict):
        self.align(s.align)
        for op in s.ops if s.ops is not None else _compile(s):
            if op[0] == "ints":
                st, names = op[1], op[2]
                if self.bit & 7:
                    raise UnsupportedTraceError(f"{self.where}: integers {names} at bit {self.bit}, "
                                                "not on a byte (bit fields are not read)")
                self.need(st.size * 8, f"fields {', '.join(names)}")
                out.update(zip(names, st.unpack_from(self.buf, self.bit >> 3)))
                self.bit += st.size * 8
            else:
                _, name, t, length = op
                if length is None:
                    out[name] = self.one(t, name)
                else:
                    n = out.get(length) if isinstance(length, str) else length
                    if not isinstance(n, int) or n < 0:
                        raise TraceFormatError(f"{self.where}: sequence {name}: length field "
                                               f"{length!r} = {n!r}")
                    kind = "array" if isinstance(length, int) else "sequence"
                    self.need(8 * n, f"{kind} {name} of {n} elements")     # a byte or more each
                    out[name] = tuple(self.one(t, name) for _ in range(n))
        return out

    def one(self, t, name: str):
        if isinstance(t, _Int):
            self.align(t.align)
            if self.bit & 7:
                raise UnsupportedTraceError(f"{self.where}: integer {name} at bit {self.bit}, not on "
                                            "a byte (bit fields are not read)")
            self.need(t.size, f"field {name}")
            b = self.buf[self.bit >> 3:(self.bit + t.size) >> 3]
            self.bit += t.size
            return int.from_bytes(b, "little" if t.order == "<" else "big", signed=t.signed)
        if isinstance(t, _Str):
            self.align(8)
            i = self.bit >> 3
            j = self.buf.find(b"\0", i, self.end >> 3)
            if j < 0:
                raise TraceFormatError(f"{self.where}: string {name} at bit {self.bit} has no NUL "
                                       "within the packet's content")
            self.bit = (j + 1) * 8
            return self.buf[i:j].decode("utf-8", "replace")     # a task or file name, as bytes allow
        return self.read(t, {})


class CtfSource:
    """A CTF trace directory as a record source of :func:`pykvmmu.trace.open_trace`
    (``format``, ``kernel_release``, ``meta``, ``lost``, ``records()``, ``close()``)."""

    format = "ctf"

    def __init__(self, name: str, metadata: bytes, streams: list):
        """``metadata``: the metadata file's bytes (at most _METADATA_MAX + 1 of them);
        ``streams``: (file name, opener) of each stream file, ``opener()`` giving a seekable
        binary file object and its size."""
        self.name = name
        data = metadata
        if data[:4] in _PACKETIZED_MAGIC:
            raise UnsupportedTraceError(f"{self.name}: packetized CTF metadata (as LTTng writes it); "
                                        "this reader takes the text metadata of `perf data convert "
                                        "--to-ctf`")
        if len(data) > _METADATA_MAX:
            raise TraceFormatError(f"{self.name}: metadata larger than {_METADATA_MAX >> 20} MiB")
        if not is_ctf_metadata(data):
            raise TraceFormatError(f"{self.name}: metadata does not start with '/* CTF 1.8'")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TraceFormatError(f"{self.name}: metadata is not UTF-8 (byte {e.start})") from None
        self.m = parse_metadata(text, f"{self.name}/metadata")
        self._check_layout()
        self.kernel_release = self.m.env.get("release") if isinstance(self.m.env.get("release"), str) else None
        self.meta = {"ctf_env": dict(self.m.env), "tracer": self.m.env.get("tracer_name")}
        self.lost: dict = {}
        self._open = dict(streams)
        self.files = sorted(self._open, key=_natural)
        if not self.files:
            raise TraceFormatError(f"{self.name}: no stream files beside the metadata")

    def _check_layout(self):
        """The members this reader uses have the types it uses them as."""
        m = self.m

        def plain_int(st, name, what):
            t = [(t, n) for k, t, n in st.members if k == name] if isinstance(st, _Struct) else []
            if t and not (isinstance(t[0][0], _Int) and t[0][1] is None):
                raise TraceFormatError(f"{self.name}: {what} member {name!r} is not an integer")
            return bool(t)

        if not isinstance(m.packet_header, (_Struct, type(None))):
            raise TraceFormatError(f"{self.name}: trace packet.header is not a struct")
        for k in ("magic", "stream_id"):
            plain_int(m.packet_header, k, "packet.header")
        u = [(t, n) for k, t, n in m.packet_header.members if k == "uuid"] if m.packet_header else []
        if u and not (isinstance(u[0][0], _Int) and u[0][0].size == 8 and u[0][1] == 16):
            raise TraceFormatError(f"{self.name}: packet.header member 'uuid' is not 16 bytes")
        for sid, s in m.streams.items():
            if not isinstance(sid, int):
                raise TraceFormatError(f"{self.name}: stream id {sid!r} is not an integer")
            h = s.get("event.header")
            if not isinstance(h, _Struct):
                raise UnsupportedTraceError(f"{self.name}: stream {sid} has no event.header struct")
            ts = [t for n, t, _ in h.members if n == "timestamp"]
            if not ts or not isinstance(ts[0], _Int) or ts[0].size != 64:
                raise UnsupportedTraceError(f"{self.name}: stream {sid}'s event header has no 64-bit "
                                            "timestamp (compact timestamps are not read)")
            plain_int(h, "timestamp", f"stream {sid} event.header")
            if not plain_int(h, "id", f"stream {sid} event.header"):
                raise UnsupportedTraceError(f"{self.name}: stream {sid}'s event header has no id")
            for k in ("packet.context", "event.context"):
                if k in s and not isinstance(s[k], _Struct):
                    raise TraceFormatError(f"{self.name}: stream {sid} {k} is not a struct")
            for k in ("content_size", "packet_size", "events_discarded", "cpu_id"):
                plain_int(s.get("packet.context"), k, f"stream {sid} packet.context")
        for c in m.clocks.values():
            if c.get("freq", 1000000000) != 1000000000 or c.get("offset", 0) or c.get("offset_s", 0):
                raise UnsupportedTraceError(f"{self.name}: clock {c.get('name')!r} (freq {c.get('freq')}, "
                                            f"offset {c.get('offset_s', 0)} s + {c.get('offset', 0)}): "
                                            "only a nanosecond clock without offset is read")

    def close(self) -> None:
        pass

    # -- packets and events ----------------------------------------------------------------
    def _packets(self, fname: str):
        """(cursor over the events, context dict, stream id) of each packet of a stream file."""
        m = self.m
        try:
            f, size = self._open[fname]()
        except OSError as e:
            raise TraceFormatError(f"{self.name}/{fname}: {e.strerror or e}") from None
        with f:
            off = 0
            k = 0
            while off < size:
                where = f"{self.name}/{fname} packet {k} (offset {off})"
                f.seek(off)
                head = f.read(min(size - off, 1 << 16))            # the packet's headers
                c = _Cursor(head, 0, len(head) * 8, where)
                hdr = c.read(m.packet_header, {}) if m.packet_header is not None else {}
                if "magic" in hdr and hdr["magic"] != PACKET_MAGIC:
                    raise TraceFormatError(f"{where}: magic {hdr['magic']:#x} (a CTF packet has "
                                           f"{PACKET_MAGIC:#x})")
                uuid = m.trace.get("uuid")
                if "uuid" in hdr and isinstance(uuid, str) and bytes(hdr["uuid"]) != _uuid_bytes(uuid, where):
                    raise TraceFormatError(f"{where}: uuid {bytes(hdr['uuid']).hex()} is not the trace's {uuid}")
                sid = hdr.get("stream_id", 0)
                s = m.streams.get(sid)
                if s is None:
                    raise TraceFormatError(f"{where}: stream_id {sid} is not in the metadata")
                pc = s.get("packet.context")
                ctx = c.read(pc, {}) if isinstance(pc, _Struct) else {}
                psize = ctx.get("packet_size", (size - off) * 8)
                csize = ctx.get("content_size", psize)
                if not (0 < psize and psize % 8 == 0 and c.bit <= csize <= psize
                        and off + psize // 8 <= size):
                    raise TraceFormatError(f"{where}: content_size {csize} / packet_size {psize} bits "
                                           f"do not fit the packet's headers ({c.bit} bits) and the "
                                           f"file ({size - off} bytes left)")
                f.seek(off)
                buf = f.read(-(-csize // 8))
                yield _Cursor(buf, c.bit, csize, where), ctx, s, sid
                off += psize // 8
                k += 1

    def events(self, fname: str, on_packet=None):
        """(packet context, stream id, event id, timestamp, name, values) of every event of
        one stream file, in file order: ``values`` has every field as the metadata declares
        it (the stream's and event's contexts, then the fields, ``perf_*`` and ``common_*``
        included).  ``on_packet(context)`` is called at each packet, events or none."""
        m = self.m
        for cur, ctx, s, sid in self._packets(fname):
            if on_packet is not None:
                on_packet(ctx)
            hdr_t, ectx_t = s["event.header"], s.get("event.context")
            while cur.bit < cur.end:
                start = cur.bit
                h = cur.read(hdr_t, {})
                ev = m.events.get((sid, h["id"]))
                if ev is None:
                    raise TraceFormatError(f"{cur.where}: event id {h['id']} at bit {start} is not in "
                                           f"stream {sid}'s metadata")
                name, ctx_t, fields_t = ev
                vals: dict = {}
                if isinstance(ectx_t, _Struct):
                    cur.read(ectx_t, vals)
                if ctx_t is not None:
                    cur.read(ctx_t, vals)
                cur.read(fields_t, vals)
                yield ctx, sid, h["id"], h["timestamp"], name, vals

    def _events(self, idx: int, fname: str, comms: dict, other, all_events: bool):
        """(ts, stream index, seq, (system, event, cpu, values)) of the events of one stream
        file that become records; side-band events update ``comms``, others count in
        ``other``; a packet's growing ``events_discarded`` counts as lost events."""
        seq = 0
        discarded = [0]

        def packet(ctx):
            d, cpu = ctx.get("events_discarded"), ctx.get("cpu_id", -1)
            if isinstance(d, int) and d > discarded[0]:        # a free-running count per stream
                count_lost(self.lost, cpu if cpu >= 0 else None, "ctf events discarded", d - discarded[0])
                discarded[0] = d

        for ctx, sid, eid, ts, name, vals in self.events(fname, packet):
            cpu = ctx.get("cpu_id", -1)
            seq += 1
            if name in _SIDEBAND:
                if name == "perf_comm" and isinstance(vals.get("comm"), str):
                    comms[vals.get("pid")] = vals["comm"]
                continue
            system, _, event = name.rpartition(":")
            if system != "kvmmmu" and not all_events:
                if other is not None:
                    other[event] += 1
                continue
            yield ts, idx, seq, (system, event, cpu, vals)

    def records(self, *, all_events: bool = False, other: Counter | None = None, decorate=None):
        """Every event as a TraceRecord, in time order across the stream files (kvmmmu events
        only unless ``all_events``; others counted in ``other``); task names from
        ``perf_comm`` events (``--all``) when the trace has them."""
        comms: dict = {}
        streams = [self._events(i, f, comms, other, all_events) for i, f in enumerate(self.files)]
        n = 0
        for ts, _, _, (system, event, cpu, vals) in heapq.merge(*streams):
            n += 1
            chain = vals.get("perf_callchain", ())
            f = {k: v for k, v in vals.items() if not k.startswith("perf_")}
            pid, flags, f = event_record_fields(f, f"{system}:{event}")
            if "common_pid" not in vals and isinstance(vals.get("perf_tid"), int):
                pid = vals["perf_tid"]
            rec = TraceRecord(n, comms.get(pid, ""), pid, cpu, flags, ts / 1e9, event, f,
                              source=self.format, ts_ns=ts, system=system or "",
                              stack=tuple(f"{x:#x}" for x in chain if x < PERF_CONTEXT_MAX))
            if decorate is not None:
                decorate(rec)
            yield rec


def _natural(name: str):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", name)]


def _uuid_bytes(uuid: str, where: str) -> bytes:
    h = uuid.replace("-", "")
    if not re.fullmatch(r"[0-9a-fA-F]{32}", h):
        raise TraceFormatError(f"{where}: trace uuid {uuid!r} is not a UUID")
    return bytes.fromhex(h)


def open_ctf(path: str, name: str | None = None) -> CtfSource:
    """A CTF trace directory (``perf data convert --to-ctf DIR``) as a record source."""
    name = name or path
    try:
        with open(os.path.join(path, "metadata"), "rb") as f:
            data = f.read(_METADATA_MAX + 1)
        files = [f for f in os.listdir(path) if f != "metadata" and not f.startswith(".")
                 and os.path.isfile(os.path.join(path, f))]
    except OSError as e:
        raise TraceFormatError(f"{name}: metadata: {e.strerror}") from None

    def opener(p):
        def o():
            f = open(p, "rb")
            return f, os.fstat(f.fileno()).st_size
        return o
    return CtfSource(name, data, [(f, opener(os.path.join(path, f))) for f in files])


def ctf_in_tar(members: dict) -> str | None:
    """The directory (``""`` for the top) of a tar listing ``{name: member}`` whose
    ``metadata`` member is a CTF trace's, else None (read with :func:`open_ctf_tar`)."""
    tops = sorted(n[:-len("metadata")] for n in members
                  if n == "metadata" or n.endswith("/metadata"))
    return tops[0] if tops else None


def open_ctf_tar(tf, members: dict, top: str, name: str) -> CtfSource:
    """The CTF trace in directory ``top`` of an open tar (``members``: name -> TarInfo):
    how such a directory travels (``tar czf demo.ctf.tar.gz demo.ctf``)."""
    def read(m):
        f = tf.extractfile(m)
        if f is None:
            raise TraceFormatError(f"{name}: tar member {m.name!r} is not a file")
        return f

    meta = read(members[top + "metadata"]).read(_METADATA_MAX + 1)
    streams = [(n[len(top):], (lambda m: lambda: (read(m), m.size))(m)) for n, m in members.items()
               if n.startswith(top) and "/" not in n[len(top):] and n != top + "metadata"
               and not n[len(top):].startswith(".")]
    return CtfSource(name, meta, streams)

"""The pykvmmu capture file (``pykvmmu record``'s ``.kvmcap``: a POSIX tar, maybe gzipped,
with ``capture.json``, ``header_page``, ``header_event``, ``events/<sys>/<event>/format``,
``per_cpu/cpu<N>/trace_pipe_raw``, ``params/...``) and the same layout as a plain directory
(a tracefs copy: format files saved beside the raw pages, ``proc_version`` optional)."""
from __future__ import annotations

import json
import os
import re
import tarfile
from typing import IO

from .ctf import CtfSource, ctf_in_tar, open_ctf_tar
from .raw import RawSource, build_source, clock_name, mark_counts
from .record import TraceError, TraceFormatError

__all__ = ["open_capture", "open_directory", "is_capture_dir", "release_from_proc_version"]

#: per_cpu/cpuN/stats counters that mean lost records
LOST_STATS = ("overrun", "commit overrun", "dropped events")
_CPU = re.compile(r"^per_cpu/cpu(\d+)/trace_pipe_raw$")
_FMT = re.compile(r"^events/([^/]+)/([^/]+)/format$")


def release_from_proc_version(text: str) -> str | None:
    """``6.18.44-fc-v669`` from /proc/version text ("Linux version 6.18.44-fc-v669 (...)")."""
    m = re.match(r"^\s*Linux version (\S+)", text or "")
    return m[1] if m else None


def _member_file(tf: tarfile.TarFile, m: tarfile.TarInfo, name: str) -> IO[bytes]:
    """The contents of a regular-file member (extractfile gives None for anything else)."""
    f = tf.extractfile(m)
    if f is None:
        raise TraceFormatError(f"{name}: member {m.name} is not a regular file")
    return f


def _damaged(name: str, what: str, e: BaseException) -> TraceFormatError:
    return TraceFormatError(f"{name}: {what} is damaged or cut short ({e or type(e).__name__})")


def _member_reader(f: IO[bytes], name: str, member: str):
    """``f.read`` raising TraceFormatError where the archive ends inside the member."""
    def read(n: int = -1) -> bytes:
        try:
            return f.read(n)
        except (tarfile.TarError, EOFError) as e:
            raise _damaged(name, f"member {member}", e) from None
    return read


def open_capture(fileobj, name: str = "capture") -> RawSource | CtfSource:
    """Read a capture tar from a seekable binary file object (already decompressed); a tar
    of a CTF trace directory (`perf data convert --to-ctf`) is read as that trace."""
    try:
        tf = tarfile.open(fileobj=fileobj, mode="r:")
    except tarfile.TarError as e:
        raise TraceFormatError(f"{name}: not a tar archive ({e})") from None
    members = {}
    try:
        listing = tf.getmembers()
    except (tarfile.TarError, EOFError) as e:
        raise _damaged(name, "the tar archive", e) from None
    fileobj.seek(tf.offset)             # a tar ends with two zero blocks: none means cut short
    if fileobj.read(1024) != bytes(1024):
        raise TraceFormatError(f"{name}: the tar archive is cut short (no end-of-archive blocks "
                               f"after byte {tf.offset}: members may be missing)")
    for m in listing:
        if m.isfile():
            members[m.name.lstrip("./") if m.name.startswith("./") else m.name] = m

    top = ctf_in_tar(members) if "header_page" not in members else None
    if top is not None:
        return open_ctf_tar(tf, members, top, name)

    def text(member: str) -> str | None:
        m = members.get(member)
        if m is None:
            return None
        return _member_reader(_member_file(tf, m, name), name, member)().decode("utf-8", "replace")

    meta = {}
    cj = text("capture.json")
    if cj is not None:
        try:
            meta = json.loads(cj)
        except ValueError as e:
            raise TraceFormatError(f"{name}: capture.json is not JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != "pykvmmu-capture":
            raise TraceFormatError(f"{name}: capture.json 'format' is not 'pykvmmu-capture'")
    hp = text("header_page")
    if hp is None:
        raise TraceFormatError(f"{name}: no header_page member (needed to decode the raw pages)")
    formats = []
    for mname in members:
        fm = _FMT.match(mname)
        if fm:
            formats.append((fm[1], text(mname)))
    cpus = []
    for mname, m in members.items():
        c = _CPU.match(mname)
        if c:
            cpus.append((int(c[1]), _member_reader(_member_file(tf, m, name), name, mname), mname))
    cpus.sort()
    release = _meta_str(meta, "kernel_release", name) or release_from_proc_version(
        _meta_str(meta, "proc_version", name) or "")
    if release is None:
        release = release_from_proc_version(text("proc_version") or "")
    lost_meta = meta.get("lost") or {}
    if not isinstance(lost_meta, dict):
        raise TraceFormatError(f"{name}: capture.json 'lost' is not an object")
    lost = {k: dict(v) for k, v in lost_meta.items() if isinstance(v, dict)}
    src = build_source(hp, text("header_event"), formats, cpus, "<", kernel_release=release,
                       format="capture", meta=meta)
    for k, v in lost.items():
        src.lost.setdefault(k, {}).update({f"stats {s}": n for s, n in v.items()
                                           if s in LOST_STATS and isinstance(n, int)})
    src.closers.append(tf.close)
    return src


def _meta_str(meta: dict, key: str, name: str) -> str | None:
    """capture.json's ``key``: a string or absent."""
    v = meta.get(key)
    if v is not None and not isinstance(v, str):
        raise TraceFormatError(f"{name}: capture.json {key!r} is not a string ({v!r})")
    return v


def is_capture_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "header_page"))


def open_directory(path: str) -> RawSource:
    """A directory with ``header_page``, ``events/*/*/format`` and ``per_cpu/cpuN/trace_pipe_raw``
    (``header_event``, ``proc_version`` and ``capture.json`` optional)."""
    def text(rel):
        p = os.path.join(path, rel)
        if not os.path.isfile(p):
            return None
        with open(p, encoding="utf-8", errors="replace") as f:
            return f.read()

    hp = text("header_page")
    if hp is None:
        raise TraceError(f"{path}: no header_page file (needed to decode the raw pages)")
    formats = []
    ev = os.path.join(path, "events")
    if os.path.isdir(ev):
        for system in sorted(os.listdir(ev)):
            sd = os.path.join(ev, system)
            if not os.path.isdir(sd):
                continue
            for event in sorted(os.listdir(sd)):
                t = text(os.path.join("events", system, event, "format"))
                if t is not None:
                    formats.append((system, t))
    cpus, files = [], []
    pc = os.path.join(path, "per_cpu")
    if os.path.isdir(pc):
        for d in os.listdir(pc):
            m = re.match(r"^cpu(\d+)$", d)
            p = os.path.join(pc, d, "trace_pipe_raw")
            if m and os.path.isfile(p):
                f = open(p, "rb")
                files.append(f)
                cpus.append((int(m[1]), f.read, f"per_cpu/{d}/trace_pipe_raw"))
    cpus.sort()
    meta = {}
    cj = text("capture.json")
    if cj:
        try:
            meta = json.loads(cj)
        except ValueError as e:
            raise TraceFormatError(f"{path}/capture.json is not JSON ({e})") from None
        if not isinstance(meta, dict):
            raise TraceFormatError(f"{path}/capture.json is not a JSON object")
    release = _meta_str(meta, "kernel_release", path) or release_from_proc_version(text("proc_version") or "")
    src = build_source(hp, text("header_event"), formats, cpus, "<", kernel_release=release,
                       format="capture", meta=meta)
    src.closers += [f.close for f in files]
    # a tree copied from an instance may keep its trace_clock and per-CPU stats: a clock that
    # does not count ns (named, or stats printed as counts) keeps the timestamps as counts
    mark_counts(src, [c for c in [clock_name(text("trace_clock"))] if c],
                [text(os.path.join("per_cpu", f"cpu{c}", "stats")) or "" for c, _, _ in cpus])
    return src

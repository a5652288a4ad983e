"""Capture kvmmmu (and a few kvm) trace events from the local host's tracefs into one file.

:class:`Recorder` mounts tracefs when no usable mount exists (a private mount in a temporary
directory, unmounted afterwards), creates its own tracefs *instance* ``instances/pykvmmu-<pid>``
(its own ring buffer: the global buffer and other tracing users are never touched), sizes the
buffer, enables the events, reads every CPU's ``trace_pipe_raw`` while the workload runs, and
on stop reads the per-CPU ``stats`` (overrun, commit overrun, dropped events).  Cleanup (close,
rmdir the instance, unmount what it mounted) runs in ``finally``, on Ctrl-C and on errors.

The capture file (:func:`write_capture`) is the contract of ``CAPTURE.md``: a tar archive
(gzip-compressed unless the name ends in ``.tar``) with ``capture.json``, ``header_page``,
``header_event``, ``events/<system>/<event>/format``, ``per_cpu/cpu<N>/trace_pipe_raw``,
``params/<module>/<name>`` and, for a guest, ``guest.json``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import contextlib
import datetime
import gzip
import io
import json
import mmap
import os
import platform
import re
import signal
import struct
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field

from .errors import InputError, PykvmmuError

__all__ = ["RecordError", "Recorder", "Capture", "write_capture", "read_capture", "DEFAULT_EVENTS",
           "find_tracefs", "tracing_snapshot", "KVM_MODULES", "lost_events", "host_zero_pfn"]

DEFAULT_EVENTS = ("kvmmmu", "kvm/kvm_page_fault", "kvm/kvm_mmio", "kvm/kvm_userspace_exit",
                  "kvm/kvm_emulate_insn", "kvm/kvm_cr", "kvm/kvm_msr", "kvm/kvm_exit", "kvm/kvm_entry",
                  "kvm/kvm_unmap_hva_range")
KVM_MODULES = ("kvm", "kvm_intel", "kvm_amd", "kvm_pvm")
_STD_MOUNT = "/sys/kernel/tracing"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class RecordError(PykvmmuError):
    """Recording is impossible here (not root, no tracefs, no kvmmmu events) or failed."""


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


def _tracefs_mounts() -> list:
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "tracefs":
                    out.append(parts[1].replace("\\040", " "))
    except OSError:
        pass
    return out


def find_tracefs():
    """The standard tracefs mount (/sys/kernel/tracing) if it is mounted, else None."""
    return _STD_MOUNT if _STD_MOUNT in _tracefs_mounts() else None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _parse_stats(text: str) -> dict:
    d: dict[str, int | str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if not sep:
            continue
        v = v.strip()
        try:
            d[k.strip()] = int(v)
        except ValueError:
            d[k.strip()] = v
    return d


def _path_arg(name: str, path) -> None:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{name}={path!r}: expected a file system path")


def lost_events(lost: dict) -> int:
    """Events lost over all CPUs: overrun + commit overrun + dropped events (+ pages whose
    header flags missed events)."""
    keys = ("overrun", "commit overrun", "dropped events", "missed_pages")
    if not isinstance(lost, dict) or not all(isinstance(s, dict) for s in lost.values()):
        raise InputError(f"lost={lost!r}: expected {{cpu: {{counter name: count}}}} (per_cpu stats)")
    total = 0
    for cpu, s in lost.items():
        for k in keys:
            v = s.get(k, 0)
            try:
                n = int(v)
            except (TypeError, ValueError):
                n = -1
            if isinstance(v, (bool, float)) or n < 0:
                raise InputError(f"lost[{cpu!r}][{k!r}]={v!r}: a count >= 0")
            total += n
    return total


def tracing_snapshot(root: str) -> dict:
    """The global tracing settings a recorder must leave as it found them (for checks)."""
    _path_arg("root", root)
    snap: dict = {}
    for name in ("tracing_on", "buffer_size_kb", "current_tracer", "set_event", "trace_options",
                 "trace_clock", "tracing_cpumask", "buffer_subbuf_size_kb"):
        p = os.path.join(root, name)
        if os.path.exists(p):
            snap[name] = _read(p)
    for sysname in ("kvmmmu", "kvm"):
        d = os.path.join(root, "events", sysname)
        if os.path.isdir(d):
            snap[f"events/{sysname}/enable"] = _read(os.path.join(d, "enable"))
    snap["instances"] = sorted(n for n in os.listdir(os.path.join(root, "instances")) if n.startswith("pykvmmu"))
    snap["mounts"] = sorted(_tracefs_mounts())
    return snap


@contextlib.contextmanager
def _signals_held():
    """Hold Ctrl-C and SIGTERM while tracefs is set up or torn down: a KeyboardInterrupt
    raised between a mkdir/open and its bookkeeping would leave an instance or a reader behind.
    The held signal is passed to the handler that was installed (default: KeyboardInterrupt for
    Ctrl-C, termination for SIGTERM) when the block ends.  Only the main thread can do this."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    old = {sig: signal.signal(sig, lambda signum, frame: got.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        if got:
            h = old[got[0]]
            if callable(h):
                h(got[0], None)
            elif h == signal.SIG_DFL:
                os.kill(os.getpid(), got[0])


@dataclass
class Capture:
    """A capture in memory: the members of the capture file."""
    meta: dict
    header_page: str
    header_event: str
    formats: dict = field(default_factory=dict)      # "system/event" -> format text
    raw: dict = field(default_factory=dict)          # cpu number -> bytes
    params: dict = field(default_factory=dict)       # "module/name" -> text
    guest: dict | None = None
    text: dict = field(default_factory=dict)         # optional: "trace", "fields" text of the same run

    @property
    def lost(self) -> int:
        return lost_events(self.meta.get("lost", {}))


def _split_events(events) -> list:
    if isinstance(events, str):
        events = [e for e in events.split(",") if e]
    if not isinstance(events, (list, tuple)) or not events or not all(isinstance(e, str) for e in events):
        raise InputError(f"events={events!r}: must be a non-empty list of 'system' or 'system/event'")
    for e in events:
        if not re.fullmatch(r"\w+(/\w+)?", e):
            raise InputError(f"event {e!r}: must be 'system' or 'system/event'")
    return list(events)


class Recorder:
    """Record trace events into a private tracefs instance; use as a context manager.

    ``events``: "system" or "system/event" names (default DEFAULT_EVENTS; kvm events this host
    lacks are skipped, the kvmmmu system is required).  ``buffer_kb``: per-CPU ring buffer size.
    ``text``: also keep the run in a second instance and read its ``trace`` text in the kernel's
    print format and with ``options/fields`` (for fixtures; costs a second buffer).
    ``all_tasks``: record every task's events; by default only this process and the tasks it
    forks afterwards (``set_event_pid`` with ``options/event-fork``), so other VMs on the host
    stay out of the capture.  ``drain_interval``: seconds between reads of the buffers while
    recording (None: read only at stop, so a small buffer overruns).  ``progress``: a callable
    given a status line while recording."""

    def __init__(self, events=DEFAULT_EVENTS, buffer_kb: int = 4096, tracefs: str | None = None,
                 text: bool = False, all_tasks: bool = False, drain_interval: float | None = 0.1,
                 progress=None) -> None:
        self.events = _split_events(events)
        if isinstance(buffer_kb, bool) or not isinstance(buffer_kb, int) or not 64 <= buffer_kb <= 1 << 20:
            raise InputError(f"buffer_kb={buffer_kb!r}: must be an integer in [64, 1048576]")
        if tracefs is not None and not isinstance(tracefs, str):
            raise InputError(f"tracefs={tracefs!r}: must be a directory path")
        if drain_interval is not None and (isinstance(drain_interval, bool) or not isinstance(
                drain_interval, (int, float)) or not 0.001 <= drain_interval <= 60):
            raise InputError(f"drain_interval={drain_interval!r}: must be None or seconds in [0.001, 60]")
        for name, v in (("text", text), ("all_tasks", all_tasks)):
            if not isinstance(v, bool):
                raise InputError(f"{name}={v!r}: expected a bool (True or False)")
        if progress is not None and not callable(progress):
            raise InputError(f"progress={progress!r}: must be a callable or None")
        self.buffer_kb = buffer_kb
        self.drain_interval = drain_interval
        self.tracefs = tracefs
        self.text = bool(text)
        self.all_tasks = bool(all_tasks)
        self.progress = progress
        self.root: str | None = None
        self.mounted: str | None = None
        self.inst: str | None = None
        self.inst_text: str | None = None
        self.enabled: list = []
        self.skipped: list = []                      # requested events this host does not have
        self.fds: dict = {}
        self.raw: dict = {}
        self.missed: dict = {}
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.started: str | None = None
        self.ended: str | None = None
        self.capture: Capture | None = None

    def _root_dir(self) -> str:
        """The tracefs root in use (set by _mount)."""
        if self.root is None:
            raise RecordError("the recorder is not started: no tracefs root")
        return self.root

    def _inst_dir(self) -> str:
        """The tracing instance directory in use (set by __enter__)."""
        if self.inst is None:
            raise RecordError("the recorder is not started: no tracing instance")
        return self.inst

    # -- setup ---------------------------------------------------------------------------------
    def _check_host(self) -> None:
        if os.geteuid() != 0:
            raise RecordError("pykvmmu record needs root (it mounts tracefs and creates a tracing "
                              "instance): run it with sudo")
        try:
            fs = _read("/proc/filesystems")
        except OSError:
            fs = ""
        if "tracefs" not in fs:
            raise RecordError("this kernel has no tracefs (CONFIG_TRACING off?): nothing to record")

    def _mount(self) -> None:
        if self.tracefs is not None:
            if not os.path.isdir(os.path.join(self.tracefs, "instances")):
                raise RecordError(f"--tracefs {self.tracefs}: not a tracefs mount (no instances/ directory)")
            self.root = self.tracefs
            return
        self.root = find_tracefs()
        if self.root is None:
            d = tempfile.mkdtemp(prefix="pykvmmu-tracefs-")
            if _libc.mount(b"nodev", d.encode(), b"tracefs", 0, None) != 0:
                e = ctypes.get_errno()
                os.rmdir(d)
                raise RecordError(f"cannot mount tracefs on {d}: {os.strerror(e)}")
            self.mounted = self.root = d

    def _event_dirs(self) -> list:
        evroot = os.path.join(self._root_dir(), "events")
        if not os.path.isdir(os.path.join(evroot, "kvmmmu")):
            raise RecordError("the kvmmmu trace events are missing (events/kvmmmu): load the kvm module "
                              "and its vendor module (kvm_intel, kvm_amd or kvm_pvm) first")
        out = []
        self.skipped = []
        for e in self.events:
            sysname, _, ev = e.partition("/")
            d = os.path.join(evroot, sysname)
            if not os.path.isdir(d):
                self.skipped.append(e)
                continue
            names = [ev] if ev else sorted(n for n in os.listdir(d)
                                           if os.path.isfile(os.path.join(d, n, "format")))
            for n in names:
                if os.path.isfile(os.path.join(d, n, "format")):
                    out.append(f"{sysname}/{n}")
                elif sysname == "kvmmmu":
                    raise RecordError(f"event kvmmmu/{n} does not exist on this kernel")
                else:
                    self.skipped.append(f"{sysname}/{n}")
        return out

    def _make_instance(self, name: str) -> str:
        path = os.path.join(self._root_dir(), "instances", name)
        os.mkdir(path)
        try:
            _write(os.path.join(path, "tracing_on"), "0")
            _write(os.path.join(path, "buffer_size_kb"), str(self.buffer_kb))
            if not self.all_tasks:
                _write(os.path.join(path, "options", "event-fork"), "1")
                _write(os.path.join(path, "set_event_pid"), str(os.getpid()))
            for e in self.enabled:
                _write(os.path.join(path, "events", e, "enable"), "1")
        except OSError:
            self._rmdir(path)
            raise
        return path

    def _rmdir(self, path: str) -> None:
        for _ in range(50):
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)         # EBUSY while a reader still closes
        raise RecordError(f"could not remove tracing instance {path}")

    def __enter__(self) -> "Recorder":
        try:
            with _signals_held():
                return self._enter()
        except KeyboardInterrupt:        # held during a finished setup: __exit__ will not run
            self._cleanup()
            raise

    def _enter(self) -> "Recorder":
        self._check_host()
        self._mount()
        try:
            self.enabled = self._event_dirs()
            self.inst = self._make_instance(f"pykvmmu-{os.getpid()}")
            sub = os.path.join(self._inst_dir(), "buffer_subbuf_size_kb")
            if os.path.exists(sub):
                self.page_size = max(self.page_size, int(_read(sub)) * 1024)
            if self.text:
                self.inst_text = self._make_instance(f"pykvmmu-{os.getpid()}-text")
            cpus = sorted(int(n[3:]) for n in os.listdir(os.path.join(self._inst_dir(), "per_cpu")) if n.startswith("cpu"))
            for c in cpus:
                self.fds[c] = os.open(os.path.join(self._inst_dir(), "per_cpu", f"cpu{c}", "trace_pipe_raw"),
                                      os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                self.raw[c] = bytearray()
                self.missed[c] = 0
            self.started = _now()
            for inst in (self.inst, self.inst_text):
                if inst:
                    _write(os.path.join(inst, "tracing_on"), "1")
            if self.drain_interval is not None:
                self._thread = threading.Thread(target=self._drain_loop, daemon=True, name="pykvmmu-record")
                self._thread.start()
        except OSError as e:
            self._cleanup()
            raise RecordError(f"setting up the tracing instance under {self.root}: {e}") from None
        except BaseException:
            self._cleanup()
            raise
        return self

    # -- reading -------------------------------------------------------------------------------
    def _drain(self) -> int:
        n = 0
        with self._lock:
            for c, fd in self.fds.items():
                while True:
                    try:
                        b = os.read(fd, self.page_size)
                    except BlockingIOError:
                        break
                    if not b:
                        break
                    if len(b) >= 16 and int.from_bytes(b[8:16], "little") & (1 << 31):
                        self.missed[c] += 1          # RB_MISSED_EVENTS in the page's commit word
                    self.raw[c] += b
                    n += len(b)
        return n

    def _drain_loop(self) -> None:
        last = 0.0
        while not self._stop.wait(self.drain_interval):
            self._drain()
            if self.progress and time.monotonic() - last > 1.0:
                last = time.monotonic()
                self.progress(f"recording: {sum(len(b) for b in self.raw.values())} bytes of raw pages")

    def stop(self) -> Capture:
        """Stop tracing, read what is left and the per-CPU stats; build the Capture."""
        for inst in (self.inst, self.inst_text):
            if inst:
                _write(os.path.join(inst, "tracing_on"), "0")
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._drain()
        self.ended = _now()
        lost = {}
        for c in self.fds:
            s = _parse_stats(_read(os.path.join(self._inst_dir(), "per_cpu", f"cpu{c}", "stats")))
            s["missed_pages"] = self.missed[c]
            lost[f"cpu{c}"] = s
        formats = {e: _read(os.path.join(self._root_dir(), "events", e, "format")) for e in self.enabled}
        text: dict[str, str] = {}
        if self.inst_text:
            text["trace"] = _read(os.path.join(self.inst_text, "trace"))
            _write(os.path.join(self.inst_text, "options", "fields"), "1")
            text["fields"] = _read(os.path.join(self.inst_text, "trace"))
        meta = {"format": "pykvmmu-capture", "version": 1, "kernel_release": platform.release(),
                "proc_version": _read("/proc/version"), "machine": platform.machine(),
                "started": self.started, "ended": self.ended, "events": list(self.enabled),
                "buffer_size_kb": self.buffer_kb, "page_size": self.page_size, "cpus": sorted(self.fds),
                "lost": lost, "command": None, "guest": None,
                "tasks": "all" if self.all_tasks else "self-and-children", "skipped_events": list(self.skipped), "host_zero_pfn": host_zero_pfn()}
        self.capture = Capture(meta=meta, header_page=_read(os.path.join(self._root_dir(), "events", "header_page")),
                               header_event=_read(os.path.join(self._root_dir(), "events", "header_event")),
                               formats=formats, raw={c: bytes(b) for c, b in self.raw.items()},
                               params=_module_params(), text=text)
        return self.capture

    # -- teardown ------------------------------------------------------------------------------
    def _cleanup(self) -> None:
        with _signals_held():
            self._cleanup_held()

    def _cleanup_held(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        errors = []
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError as e:
                errors.append(str(e))
        self.fds = {}
        for inst in (self.inst_text, self.inst):
            if inst:
                try:
                    self._rmdir(inst)
                except RecordError as e:
                    errors.append(str(e))
        self.inst = self.inst_text = None
        if self.mounted:
            if _libc.umount2(self.mounted.encode(), 0) != 0:
                errors.append(f"umount {self.mounted}: {os.strerror(ctypes.get_errno())}")
            else:
                os.rmdir(self.mounted)
            self.mounted = None
        if errors:
            raise RecordError("cleanup: " + "; ".join(errors))

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self.capture is None:
                self.stop()
        finally:
            self._cleanup()


def host_zero_pfn():
    """The pfn of the host's shared zero page (what a read of never-written anonymous memory
    maps, so KVM maps it read-only: no host-writable bit), from /proc/self/pagemap; None when
    the pfn is hidden (not root).  A THP host may use the huge zero page instead for
    huge-aligned memory; that one is not reported."""
    m = mmap.mmap(-1, PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        _ = m[0]                                       # read fault: maps the zero page
        ref = ctypes.c_char.from_buffer(m)
        addr = ctypes.addressof(ref)
        del ref
        with open("/proc/self/pagemap", "rb") as f:
            f.seek((addr // PAGE_SIZE) * 8)
            (v,) = struct.unpack("<Q", f.read(8))
    except OSError:
        return None
    finally:
        m.close()
    pfn = v & ((1 << 55) - 1)
    return pfn if v >> 63 and pfn else None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def _module_params() -> dict:
    """Every ``/sys/module/kvm*/parameters/*`` that can be read (kvm and the vendor modules)."""
    out = {}
    try:
        mods = sorted(m for m in os.listdir("/sys/module") if m.startswith("kvm"))
    except OSError:
        mods = list(KVM_MODULES)
    for m in mods:
        d = f"/sys/module/{m}/parameters"
        if not os.path.isdir(d):
            continue
        for n in sorted(os.listdir(d)):
            try:
                out[f"{m}/{n}"] = _read(os.path.join(d, n))
            except OSError:
                pass                                 # write-only parameter
    return out


# ---------------------------------------------------------------------------------------------
# the file

def write_capture(path: str, cap: Capture) -> None:
    """Write ``cap`` as a capture file (gzip'd tar unless ``path`` ends in .tar)."""
    _path_arg("path", path)
    if not isinstance(cap, Capture):
        raise InputError(f"cap={cap!r}: must be a Capture")
    members = [("capture.json", json.dumps(cap.meta, indent=1, sort_keys=True).encode()),
               ("header_page", cap.header_page.encode()), ("header_event", cap.header_event.encode())]
    members += [(f"events/{e}/format", t.encode()) for e, t in sorted(cap.formats.items())]
    members += [(f"per_cpu/cpu{c}/trace_pipe_raw", b) for c, b in sorted(cap.raw.items())]
    members += [(f"params/{k}", t.encode()) for k, t in sorted(cap.params.items())]
    if cap.guest is not None:
        members.append(("guest.json", json.dumps(cap.guest, indent=1, sort_keys=True).encode()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
    data = buf.getvalue()
    if not str(path).endswith(".tar"):
        data = gzip.compress(data, mtime=0)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_capture(path: str) -> Capture:
    """Read a capture file (plain or gzip'd tar, detected by magic) back into a Capture."""
    _path_arg("path", path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"capture {path!r}: {e.strerror}") from None
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        files = {m.name: fh.read() for m in tf.getmembers()
                 if m.isfile() and (fh := tf.extractfile(m)) is not None}
    except tarfile.TarError as e:
        raise InputError(f"capture {path!r}: not a tar archive ({e})") from None
    if "capture.json" not in files:
        raise InputError(f"capture {path!r}: no capture.json member")
    meta = json.loads(files["capture.json"])
    if meta.get("format") != "pykvmmu-capture":
        raise InputError(f"capture {path!r}: capture.json format {meta.get('format')!r} is not pykvmmu-capture")
    cap = Capture(meta=meta, header_page=files.get("header_page", b"").decode(),
                  header_event=files.get("header_event", b"").decode())
    for name, b in files.items():
        m = re.fullmatch(r"events/(\w+/\w+)/format", name)
        if m:
            cap.formats[m.group(1)] = b.decode()
        m = re.fullmatch(r"per_cpu/cpu(\d+)/trace_pipe_raw", name)
        if m:
            cap.raw[int(m.group(1))] = b
        if name.startswith("params/"):
            cap.params[name[7:]] = b.decode()
    if "guest.json" in files:
        cap.guest = json.loads(files["guest.json"])
    return cap


"""Live tests on a real /dev/kvm with tracefs: guests run, captures recorded, the host left as found.

Skipped with the reason when there is no /dev/kvm, we are not root, the kernel has no tracefs or
no kvmmmu events.  CI runs them as root on the project's machine kind (kvm_pvm)."""
from __future__ import annotations

import collections
import ctypes
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time

import pytest

from pykvmmu import kvmrun as K
from pykvmmu import record as R
from pykvmmu.kfuzz import live_unavailable


_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(K.__file__)))


def _cli_env() -> dict:
    """The environment for ``python -m pykvmmu`` children: the same pykvmmu as this process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = _PKG_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


WHY = live_unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")


class _PrivateTracefs:
    """A private tracefs mount to look at the global state from outside the recorder."""

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="pykvmmu-test-tracefs-")
        if R._libc.mount(b"nodev", self.dir.encode(), b"tracefs", 0, None) != 0:
            os.rmdir(self.dir)
            pytest.skip(f"cannot mount tracefs: {os.strerror(ctypes.get_errno())}")
        return self.dir

    def __exit__(self, *exc):
        R._libc.umount2(self.dir.encode(), 0)
        os.rmdir(self.dir)


def _snapshot():
    with _PrivateTracefs() as d:
        if not os.path.isdir(os.path.join(d, "events", "kvmmmu")):
            pytest.skip("no kvmmmu trace events on this host")
        s = R.tracing_snapshot(d)
    # the standard mount point and the instances of recorders no longer running (a concurrent
    # recorder's private mount and instance are its own; a test checks its recorder's mount itself)
    s["mounts"] = [m for m in s["mounts"] if m == "/sys/kernel/tracing"]
    s["instances"] = [n for n in s["instances"] if not _alive_other(n)]
    return s


def _alive_other(instance: str) -> bool:
    parts = instance.split("-")
    if len(parts) < 2 or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    return pid != os.getpid() and os.path.exists(f"/proc/{pid}")


def _unmounted(mounted) -> bool:
    """The recorder's private tracefs mount (None if it used an existing one) is gone."""
    return mounted is None or (mounted not in R._tracefs_mounts() and not os.path.exists(mounted))


def _kvm_fds():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == "/dev/kvm" or target.startswith("anon_inode:kvm") or "kvm-gmem" in target:
            out.append(target)
    return out


def _walk_pages(raw: bytes, page_size: int, missed_ok: bool = False):
    """Ring-buffer pages (include/linux/ring_buffer.h layout): yield (cpu-page index, type id) of
    every data record; assert the page headers and record lengths are consistent."""
    assert len(raw) % page_size == 0
    for p in range(0, len(raw), page_size):
        page = raw[p:p + page_size]
        commit = struct.unpack_from("<Q", page, 8)[0]
        size = commit & 0x3FFFFFFF
        assert 0 < size <= page_size - 16 and (missed_ok or not commit & (1 << 31))
        off = 16
        while off < 16 + size:
            (h,) = struct.unpack_from("<I", page, off)
            tl = h & 0x1F
            if tl == 0:
                (ln,) = struct.unpack_from("<I", page, off + 4)
                yield struct.unpack_from("<H", page, off + 8)[0]
                off += 4 + ln
            elif tl <= 28:
                yield struct.unpack_from("<H", page, off + 4)[0]
                off += 4 + 4 * tl
            elif tl == 29:
                (ln,) = struct.unpack_from("<I", page, off + 4)
                if ln == 0 and h >> 5 == 0:
                    break
                off += 4 + ln
            else:
                off += 8
        assert off == 16 + size


def _names(cap: R.Capture, missed_ok: bool = False) -> collections.Counter:
    ids = {}
    for ev, text in cap.formats.items():
        for line in text.splitlines():
            if line.startswith("ID:"):
                ids[int(line.split()[1])] = ev
    c = collections.Counter()
    for raw in cap.raw.values():
        for tid in _walk_pages(raw, cap.meta["page_size"], missed_ok):
            c[ids[tid]] += 1
    return c


def _small_guest(**kw) -> K.GuestDesc:
    d = K.GuestDesc(memslots=[K.Memslot(0, 0, 0x200000), K.Memslot(1, 0x400000, 0x10000, ["dirty_log"])],
                    page_tables=K.PageTables(mappings=[K.Mapping(0x1000000, 0x20000, count=2),
                                                       K.Mapping(0x1100000, 0x400000, count=4),
                                                       K.Mapping(0x1200000, 0xF0000000)]),
                    runs=[K.Run(program=[K.Op("write", 0x1000000, 0xABCD), K.Op("read", 0x1000000),
                                         K.Op("write", 0x1102000, 1), K.Op("read", 0x1200000, 0x77),
                                         K.Op("write", 0x1200008, 0x99), K.Op("out", 0x80, 0x42)]),
                          K.Run(changes=[K.SlotChange("move", 1, 0x500000)],
                                program=[K.Op("read", 0x1000000), K.Op("read", 0x1100000, 5)])])
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def test_small_guest_runs_and_reports_its_exits():
    res = K.run_guest(_small_guest())
    r0, r1 = res.runs
    assert r0["exits"]["HLT"] == 1 and r0["exits"]["MMIO"] == 2 and r0["exits"]["IO"] == 1
    assert r0["mmio"] == [{"gpa": 0xF0000000, "len": 8, "write": False, "data": 0x77},
                          {"gpa": 0xF0000008, "len": 8, "write": True, "data": 0x99}]
    assert r0["io"] == [{"port": 0x80, "out": True, "size": 1, "data": 0x42}]
    assert r0["dirty"] == {"1": "0400000000000000"}          # page 2 of slot 1 was written
    assert r1["rax"] == 5 and r1["mmio"] == [{"gpa": 0x400000, "len": 8, "write": False, "data": 5}]
    assert _kvm_fds() == []


def test_guest_reads_back_its_write():
    d = _small_guest()
    d.runs = d.runs[:1]
    d.runs[0].program = [K.Op("write", 0x1001000, 0x1122334455667788), K.Op("read", 0x1001000)]
    assert K.run_guest(d).runs[0]["rax"] == 0x1122334455667788


def test_spinning_guest_is_stopped_by_the_time_limit():
    d = _small_guest(timeout=0.3)
    d.runs = [K.Run(program=[K.Op("write", 0x1000000, 1), K.Op("spin")])]
    with pytest.raises(K.GuestTimeout, match="no HLT within 0.3 s"):
        K.run_guest(d)
    assert _kvm_fds() == []


def test_record_small_guest_restores_tracing_state(tmp_path):
    before = _snapshot()
    desc = _small_guest()
    with R.Recorder() as rec:
        K.run_guest(desc)
        cap = rec.stop()
        assert os.path.isdir(rec.inst)
        mounted = rec.mounted
    after = _snapshot()
    assert after == before and _unmounted(mounted)
    assert _kvm_fds() == []
    assert cap.lost == 0
    meta = cap.meta
    assert meta["format"] == "pykvmmu-capture" and meta["version"] == 1
    assert meta["kernel_release"] == os.uname().release and meta["machine"] == os.uname().machine
    assert meta["cpus"] == sorted(cap.raw) and set(cap.formats) == set(meta["events"])
    assert all(f"cpu{c}" in meta["lost"] for c in meta["cpus"])
    assert "kvmmmu/kvm_mmu_get_page" in meta["events"] and cap.header_page.count("field:") >= 3
    want = {f"{m}/{n}" for m in os.listdir("/sys/module") if m.startswith("kvm")
            for n in (os.listdir(f"/sys/module/{m}/parameters") if os.path.isdir(f"/sys/module/{m}/parameters")
                      else ()) if os.access(f"/sys/module/{m}/parameters/{n}", os.R_OK)}
    assert set(cap.params) == want and "kvm/tdp_mmu" in cap.params
    with open("/sys/module/kvm/parameters/tdp_mmu") as f:
        assert cap.params["kvm/tdp_mmu"] == f.read()
    names = _names(cap)
    assert sum(names.values()) == sum(s["read events"] for s in meta["lost"].values()) > 0
    assert names["kvmmmu/kvm_mmu_get_page"] > 0 and names["kvmmmu/kvm_mmu_zap_all_fast"] == 1   # the MOVE
    cap.guest = desc.to_dict()
    R.write_capture(str(tmp_path / "g.kvmcap"), cap)
    back = R.read_capture(str(tmp_path / "g.kvmcap"))
    assert back.raw == cap.raw and back.formats == cap.formats and back.meta == cap.meta
    assert K.GuestDesc.from_dict(back.guest) == desc


def test_demo_guest_capture_matches_its_text(tmp_path):
    host = K.detect_host()
    desc = K.demo_guest(guest_memfd=K.host_refusal(K.demo_guest(True), host) is None)
    before = _snapshot()
    with R.Recorder(text=True) as rec:
        res = K.run_guest(desc, host)
        cap = rec.stop()
        mounted = rec.mounted
    assert _snapshot() == before and _unmounted(mounted)
    assert cap.lost == 0 and len(res.runs) == 3
    names = _names(cap)
    lines = [ln for ln in cap.text["trace"].splitlines() if not ln.startswith("#")]
    text = collections.Counter(ln.split(": ")[1] for ln in lines)
    assert {k.split("/")[1]: v for k, v in names.items()} == dict(text)
    fields = [ln for ln in cap.text["fields"].splitlines() if not ln.startswith("#")]
    assert len(fields) == len(lines)
    assert names["kvmmmu/kvm_mmu_zap_all_fast"] == 2                  # MOVE before run 1, DELETE before run 2
    assert names["kvmmmu/kvm_mmu_unsync_page"] > 0 and names["kvmmmu/kvm_mmu_sync_page"] > 0
    assert names["kvm/kvm_mmio"] > 0
    # never-written guest memory is the host's zero page, mapped without host-writable (bit 9)
    zero = cap.meta["host_zero_pfn"]
    sptes = [int(ln.split(" spte ")[1].split()[0], 16) for ln in lines if "kvm_mmu_set_spte:" in ln]
    on_zero = [s for s in sptes if (s >> 12) & ((1 << 36) - 1) == zero]
    assert zero and on_zero and not any(s & (1 << 9) for s in on_zero)


def test_interrupted_recording_cleans_up():
    before = _snapshot()
    rec = R.Recorder()
    with pytest.raises(KeyboardInterrupt):
        with rec:
            mounted = rec.mounted
            raise KeyboardInterrupt
    assert _snapshot() == before and _unmounted(mounted) and rec.inst is None


def test_record_cli_command_mode(tmp_path):
    desc = tmp_path / "g.json"
    desc.write_text(_small_guest().to_json())
    out = tmp_path / "c.kvmcap"
    before = _snapshot()
    p = subprocess.run([sys.executable, "-m", "pykvmmu", "record", "-o", str(out), "--",
                        sys.executable, "-m", "pykvmmu", "guest", "run", str(desc)],
                       capture_output=True, text=True, timeout=60,
                       env=_cli_env(), cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert _snapshot() == before
    cap = R.read_capture(str(out))
    assert cap.meta["command"][-3:] == ["guest", "run", str(desc)] and cap.meta["exit_status"] == 0
    names = _names(cap)
    assert names["kvmmmu/kvm_mmu_get_page"] > 0 and cap.lost == 0      # the child was followed


def test_record_cli_guest_mode_with_text(tmp_path):
    out = tmp_path / "d.kvmcap"
    p = subprocess.run([sys.executable, "-m", "pykvmmu", "record", "-o", str(out), "--demo-guest",
                        "--text", str(tmp_path / "d")], capture_output=True, text=True, timeout=60,
                       env=_cli_env(), cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    cap = R.read_capture(str(out))
    assert K.GuestDesc.from_dict(cap.guest) == K.demo_guest()
    assert cap.meta["guest_result"]["host"] == K.detect_host().kind and cap.meta["guest_error"] is None
    n = sum(_names(cap).values())
    assert n == len([ln for ln in (tmp_path / "d.trace.txt").read_text().splitlines() if not ln.startswith("#")])


def test_record_cli_refusals(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pykvmmu", "record", "-o", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=60,
                       env=_cli_env(), cwd=str(tmp_path))
    assert p.returncode == 1 and "exactly one of" in p.stderr
    p = subprocess.run([sys.executable, "-m", "pykvmmu", "record", "-o", str(tmp_path / "x"),
                        "--events", "nosuchsystem/x,kvmmmu/nosuchevent", "--demo-guest"],
                       capture_output=True, text=True, timeout=60,
                       env=_cli_env(), cwd=str(tmp_path))
    assert p.returncode == 1 and "kvmmmu/nosuchevent does not exist" in p.stderr
    p = subprocess.run([sys.executable, "-m", "pykvmmu", "record", "-o", str(tmp_path / "y"),
                        "--events", "kvmmmu/kvm_mmu_get_page,nosuchsystem,kvm/nosuchevent", "--demo-guest"],
                       capture_output=True, text=True, timeout=60, env=_cli_env(), cwd=str(tmp_path))
    assert p.returncode == 0 and "not recorded: nosuchsystem, kvm/nosuchevent" in p.stderr
    cap = R.read_capture(str(tmp_path / "y"))
    assert cap.meta["events"] == ["kvmmmu/kvm_mmu_get_page"] and list(cap.formats) == cap.meta["events"]
    assert cap.meta["skipped_events"] == ["nosuchsystem", "kvm/nosuchevent"]


def test_lost_events_are_counted():
    desc = K.demo_guest()
    with R.Recorder(buffer_kb=64, drain_interval=None) as rec:
        for _ in range(16):            # ~20 KB of records each: more than 64 KB on every CPU together
            K.run_guest(desc)
        cap = rec.stop()
    overrun = sum(s["overrun"] for s in cap.meta["lost"].values())
    assert overrun > 0 and cap.lost >= overrun
    assert sum(s["missed_pages"] for s in cap.meta["lost"].values()) > 0    # RB_MISSED_EVENTS in a page
    assert sum(_names(cap, missed_ok=True).values()) == sum(s["read events"] for s in cap.meta["lost"].values())


def test_kernel_fuzz_runs_random_guests(tmp_path):
    from pykvmmu import kfuzz
    st = kfuzz.fuzz_kernel(30, runs=4, seed=3, out_dir=str(tmp_path), audit=False, use_corpus=False)
    assert st.runs == 4 and st.records > 0 and st.findings == [] and list(tmp_path.iterdir()) == []
    assert _kvm_fds() == []


def test_kernel_fuzz_writes_a_reproducer(tmp_path, monkeypatch):
    from pykvmmu import kfuzz

    def fail(desc, host=None):
        raise K.GuestTimeout(62, "run 0: no HLT within 2.0 s")
    monkeypatch.setattr(K, "run_guest", fail)
    st = kfuzz.fuzz_kernel(30, runs=3, seed=5, out_dir=str(tmp_path), audit=False, shrink_s=0,
                           use_corpus=False)
    assert st.runs == 1 and len(st.findings) == 1 and st.findings[0].kind == "guest"
    cap = R.read_capture(st.findings[0].path)
    import random
    assert K.GuestDesc.from_dict(cap.guest) == kfuzz.random_desc(random.Random(5), K.detect_host())
    assert "no HLT" in cap.meta["guest_error"]
    assert (tmp_path / os.path.basename(st.findings[0].path).replace(".kvmcap", ".txt")).exists()


def test_register_variants_run_or_are_refused_with_the_reason():
    host = K.detect_host()
    d = _small_guest()
    d.registers.efer_nx = False                                  # no NX anywhere: still runs
    assert K.run_guest(d, host).runs[0]["exits"]["HLT"] == 1
    d = _small_guest()
    d.registers.cr0_wp = False
    assert K.run_guest(d, host).runs[1]["rax"] == 5             # the MMIO read after the MOVE
    d = _small_guest()
    d.registers.cr4_smep = True
    if host.kind == "pvm":
        with pytest.raises(K.HostUnsupported, match="SMEP/SMAP"):
            K.run_guest(d, host)
    else:
        assert K.run_guest(d, host).runs[0]["exits"]["HLT"] == 1
    d = _small_guest()
    d.page_tables.levels = 5
    if host.la57:
        assert K.run_guest(d, host).runs[1]["rax"] == 5
    else:
        with pytest.raises(K.HostUnsupported, match="LA57"):
            K.run_guest(d, host)
    assert _kvm_fds() == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_record_cli_interrupted_restores_and_keeps_the_capture(tmp_path, sig):
    out = tmp_path / "i.kvmcap"
    before = _snapshot()
    p = subprocess.Popen([sys.executable, "-m", "pykvmmu", "record", "-o", str(out), "--", "sleep", "30"],
                         stderr=subprocess.PIPE, text=True, env=_cli_env(), cwd=str(tmp_path))
    inst = f"pykvmmu-{p.pid}"
    deadline = time.monotonic() + 20
    with _PrivateTracefs() as d:                 # wait until the recorder's instance exists
        while not os.path.isdir(os.path.join(d, "instances", inst)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.isdir(os.path.join(d, "instances", inst))
    children = f"/proc/{p.pid}/task/{p.pid}/children"
    while time.monotonic() < deadline:           # let the command start (exec'd: comm is "sleep")
        if not os.path.exists(children):
            time.sleep(0.5)
            break
        with open(children) as f:
            kids = f.read().split()
        try:
            with open(f"/proc/{kids[0]}/comm") as f:
                if f.read().strip() == "sleep":
                    break
        except (OSError, IndexError):
            pass
        time.sleep(0.02)
    p.send_signal(sig)
    err = p.communicate(timeout=30)[1]
    assert p.returncode == 130, err
    assert "interrupted" in err and _snapshot() == before
    cap = R.read_capture(str(out))
    assert cap.meta["command"] == ["sleep", "30"] and cap.meta["exit_status"] == -signal.SIGTERM


def test_kernel_fuzz_shrinks_a_finding():
    from pykvmmu import kfuzz
    host = K.detect_host()
    d = _small_guest(timeout=0.5)               # a loaded host must not make normal runs look like spins
    d.runs[0].program = [K.Op("write", 0x1000000, 1), K.Op("read", 0x1100000), K.Op("spin"), K.Op("read", 0)]
    out = kfuzz.judge(d, host)
    sig = ("guest", "GuestTimeout")
    assert [f[1] for f in out.found] == [sig]
    small, small_out, tried = kfuzz.shrink(d, sig, host, budget_s=15)
    assert [r.program for r in small.runs] == [[K.Op("spin")]]
    assert small.page_tables.mappings == [] and [f[1] for f in small_out.found] == [sig]
    assert "spin" in [o["kind"] for o in small_out.cap.guest["runs"][0]["program"]]
    assert _kvm_fds() == []


def test_recorder_uses_a_given_tracefs_and_leaves_it_mounted():
    with _PrivateTracefs() as d:
        with R.Recorder(tracefs=d, events="kvmmmu") as rec:
            K.run_guest(_small_guest())
            cap = rec.stop()
            assert rec.mounted is None and rec.inst.startswith(d)
        assert d in R._tracefs_mounts() and not [n for n in os.listdir(os.path.join(d, "instances"))
                                                  if n.startswith(f"pykvmmu-{os.getpid()}")]
    assert all(e.startswith("kvmmmu/") for e in cap.meta["events"]) and cap.lost == 0
    with pytest.raises(R.RecordError, match="not a tracefs mount"):
        with R.Recorder(tracefs="/proc"):
            pass

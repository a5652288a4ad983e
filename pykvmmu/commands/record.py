"""CLI: ``pykvmmu record -o FILE [--guest DESC.json | --demo-guest | -- COMMAND...]`` and
``pykvmmu guest run|demo`` (the guest runner without tracing)."""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys

from ..errors import InputError

EPILOG = """\
examples:
  sudo pykvmmu record -o demo.kvmcap --demo-guest          the built-in guest under the capture
  sudo pykvmmu record -o g.kvmcap --guest desc.json        a guest description (pykvmmu guest demo)
  sudo pykvmmu record -o vm.kvmcap -- qemu-system-x86_64 ...   any command and its children
  sudo pykvmmu record -o x.kvmcap --text x --demo-guest    also x.trace.txt and x.fields.txt
The capture (a gzip'd tar, see docs/live.md) is read by `pykvmmu trace` and `audit`.
Ctrl-C or SIGTERM stops the command (or guest), writes what was recorded and exits 130.
Exit status: 0 recorded, 1 error, 3 recorded but events were lost (buffer too small), 130
interrupted; with -- COMMAND, otherwise the command's own non-zero status.
"""


def register(sub) -> None:
    p = sub.add_parser("record", help="capture kvmmmu trace events of a guest or command (root)",
                       description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="capture file to write (gzip'd tar; plain tar if FILE ends in .tar)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--guest", metavar="DESC.json", help="run this guest description under the capture")
    g.add_argument("--demo-guest", action="store_true", help="run the built-in demo guest")
    p.add_argument("--guest-memfd", action="store_true",
                   help="--demo-guest: add its guest_memfd memslot (when the host supports it)")
    p.add_argument("--events", default=None, metavar="LIST",
                   help="comma-separated 'system' or 'system/event' (default: kvmmmu and useful kvm events)")
    p.add_argument("--buffer-kb", type=int, default=4096, metavar="KB", help="per-CPU buffer (default 4096)")
    p.add_argument("--tracefs", default=None, metavar="DIR",
                   help="use this tracefs mount (default: /sys/kernel/tracing if mounted, else a private mount)")
    p.add_argument("--all-tasks", action="store_true",
                   help="record every task's events, not only this process and its children")
    p.add_argument("--text", default=None, metavar="PREFIX",
                   help="also write the same run as PREFIX.trace.txt (print format) and PREFIX.fields.txt")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...] to run under the capture")
    p.set_defaults(func=run_record)

    gp = sub.add_parser("guest", help="run a guest description on /dev/kvm (no tracing)",
                        description="Run a guest description, or print the demo description.")
    gsub = gp.add_subparsers(dest="guest_cmd", metavar="ACTION")
    r = gsub.add_parser("run", help="run DESC.json and print what happened as JSON")
    r.add_argument("desc", metavar="DESC.json")
    r.set_defaults(func=run_guest_cmd)
    d = gsub.add_parser("demo", help="print the demo guest description as JSON")
    d.add_argument("--guest-memfd", action="store_true", help="include the guest_memfd memslot")
    d.set_defaults(func=lambda a: print(_demo(a.guest_memfd).to_json()) or 0)
    gp.set_defaults(func=lambda a: gp.print_help() or 2)


def _demo(guest_memfd: bool):
    from ..kvmrun import demo_guest
    return demo_guest(guest_memfd=guest_memfd)


def run_guest_cmd(args) -> int:
    from ..kvmrun import load_desc, run_guest
    res = run_guest(load_desc(args.desc))
    print(json.dumps(res.to_dict(), indent=1))
    return 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _start(cmd: list):
    """Popen with Ctrl-C/SIGTERM deferred until the child exists (an interrupt during Popen
    would otherwise leave it running unowned); returns (proc, interrupted meanwhile)."""
    pending = []

    def note(signum, frame):
        pending.append(signum)
    old = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen(cmd)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    return proc, bool(pending)


def _status(line: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + line)
        sys.stderr.flush()


def run_record(args) -> int:
    from .. import kvmrun, record
    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    modes = sum((bool(cmd), bool(args.guest), bool(args.demo_guest)))
    if modes != 1:
        raise InputError("record: give exactly one of --guest DESC.json, --demo-guest or -- COMMAND")
    desc = None
    if args.guest:
        desc = kvmrun.load_desc(args.guest)
    elif args.demo_guest:
        desc = _demo(args.guest_memfd)
    events = record.DEFAULT_EVENTS if args.events is None else args.events
    rec = record.Recorder(events=events, buffer_kb=args.buffer_kb, tracefs=args.tracefs, text=bool(args.text),
                          all_tasks=args.all_tasks, progress=_status)
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    failure = result = status = proc = None
    interrupted = False
    try:
        with rec:
            try:
                if desc is not None:
                    _status("running the guest ...")
                    try:
                        result = kvmrun.run_guest(desc)
                    except kvmrun.KvmError as e:      # keep the capture: it is the reproducer
                        failure = e
                else:
                    proc, early = _start(cmd)
                    try:
                        if early:
                            raise KeyboardInterrupt
                        status = proc.wait()
                    except KeyboardInterrupt:
                        interrupted = True
                        proc.terminate()
                        try:
                            status = proc.wait(timeout=10)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            status = proc.wait()
            except KeyboardInterrupt:
                interrupted = True                    # Ctrl-C / SIGTERM: stop and keep what was recorded
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    status = proc.wait()
                elif proc is not None:
                    status = proc.returncode
            cap = rec.stop()
    finally:
        signal.signal(signal.SIGTERM, old_term)
    _status("")
    if desc is not None:
        cap.guest = desc.to_dict()
        cap.meta["guest"] = cap.guest
        cap.meta["guest_result"] = result.to_dict() if result else None
        cap.meta["guest_error"] = str(failure) if failure else ("interrupted" if interrupted else None)
    else:
        cap.meta["command"] = cmd
        cap.meta["exit_status"] = status
    record.write_capture(args.output, cap)
    if args.text:
        for key, suffix in (("trace", "trace.txt"), ("fields", "fields.txt")):
            with open(f"{args.text}.{suffix}", "w") as f:
                f.write(cap.text[key])
    if cap.meta.get("skipped_events"):
        print(f"pykvmmu record: not on this host, not recorded: {', '.join(cap.meta['skipped_events'])}",
              file=sys.stderr)
    nread = sum(int(s.get("read events", 0)) for s in cap.meta["lost"].values())
    print(f"wrote {args.output}: {nread} events from CPUs {cap.meta['cpus']}, "
          f"{len(cap.meta['events'])} event types enabled", file=sys.stderr)
    if interrupted:
        print("pykvmmu record: interrupted: the capture holds what was recorded until then; "
              "tracing settings restored", file=sys.stderr)
        return 130
    if failure is not None:
        print(f"pykvmmu record: the guest failed: {failure}", file=sys.stderr)
        return 1
    if cap.lost:
        per = ", ".join(f"{c}: overrun {s.get('overrun')}, commit overrun {s.get('commit overrun')}, "
                        f"dropped {s.get('dropped events')}, pages with missed events {s.get('missed_pages')}"
                        for c, s in cap.meta["lost"].items())
        print(f"pykvmmu record: WARNING: {cap.lost} events were lost ({per}); raise --buffer-kb",
              file=sys.stderr)
        return 3
    if desc is None and status:
        return status if 0 < status < 256 else 1
    return 0


DEMO_ORDER = 90


def demo(emit) -> None:
    """``pykvmmu demo`` scene: the demo guest compiled (no KVM_RUN), and whether this host can run it."""
    from .. import kvmrun
    d = kvmrun.demo_guest()
    tables, leaves, root, code, entries, fetch = d.compile()
    ops = sum(len(r.program) for r in d.runs)
    emit("== live KVM: guest runner and capture (docs/live.md) ==")
    emit(f"demo guest: {len(d.memslots)} memslots, {len(d.page_tables.mappings)} mappings, {len(d.runs)} runs, "
         f"{ops} ops -> {len(code)} bytes of x86-64 code, {len(tables)} page-table pages, root gpa {root:#x}")
    first = kvmrun.Asm().mov_imm(kvmrun.RBX, d.runs[0].program[0].addr).mov_imm(kvmrun.RAX, 1).store(
        kvmrun.RBX, kvmrun.RAX).code
    emit(f"its first op, write 1 to {d.runs[0].program[0].addr:#x}: {bytes(first).hex(' ')}")
    try:
        host = kvmrun.detect_host()
        why = kvmrun.host_refusal(d, host)
        emit(f"this host: {host.kind} KVM, " + (f"cannot run it: {why}" if why else
                                                "can run it: sudo pykvmmu record -o demo.kvmcap --demo-guest"))
    except kvmrun.HostUnsupported as e:
        emit(f"this host: {e}")

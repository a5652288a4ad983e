"""``pykvmmu trace FILE``: decode kvmmmu tracepoints from any supported source, streamed
(text print format, ftrace fields, trace-cmd report/-R, plugin lines, capture files, saved
tracefs trees, trace.dat v6/v7, gzip/xz, ``-`` for stdin)."""
from __future__ import annotations

import json
import sys
import time

from .. import trace as T
from ..config import MmuConfig
from ..errors import InputError
from ._args import add_config_args, config_from_args


class _Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, stream, enabled: bool):
        self.st, self.on = stream, enabled
        self.n, self.last = 0, 0.0

    def tick(self) -> None:
        self.n += 1
        if not self.on or self.n & 0x3FF:
            return
        now = time.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        p = self.st.progress()
        if p and p[1]:
            done, total = p
            frac = min(done / total, 1.0)
            bar = "#" * int(30 * frac)
            msg = f"\r[{bar:30s}] {100 * frac:5.1f}%  {self.n} records"
        else:
            msg = f"\r{self.n} records"
        sys.stderr.write(msg)
        sys.stderr.flush()

    def done(self) -> None:
        if self.on and self.last:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()


def _cmd_trace(args) -> int:
    if args.mode is not None and args.mode not in MmuConfig.PRESETS:
        raise InputError(f"--mode {args.mode!r}: unknown MmuConfig preset; known: "
                         + ", ".join(MmuConfig.PRESETS))
    if args.era is not None:
        T.era_arg(args.era)                     # a typo is an error before anything is read
    if args.profile is not None:
        from ..profile import get_profile
        get_profile(args.profile)               # likewise, with or without --mode

    def on_error(n, why, _text):
        print(f"{args.file}:{n}: malformed line skipped: {why}", file=sys.stderr)

    st = T.open_trace(args.file, era=args.era, all_events=args.all_events, on_error=on_error)
    with st:
        if args.mode is not None:
            if args.profile is None:
                args.profile = T.spte_profile_for(args.era or st.era, st.kernel_version)
            if args.profile is None:
                era_name = st.era.name if st.era is not None else args.era
                print(f"note: SPTE decoding unavailable for era {era_name} (no SPTE-layout "
                      "profile for that kernel era)", file=sys.stderr)
            else:
                st.spte_decoder = T.default_spte_decoder(config=config_from_args(args))
        out = sys.stdout
        prog = _Progress(st, sys.stderr.isatty() and not args.no_progress)
        summ = T.Summary(st.era) if args.summary else None
        try:
            for r in st:
                prog.tick()
                if summ is not None:
                    summ.add(r)
                elif args.json:
                    out.write(json.dumps(r.to_json()) + "\n")
                else:
                    out.write(T.format_record(r) + "\n")
        finally:
            prog.done()
        if summ is not None:
            print(summ.text(st.errors, st.n_errors, st.other_events, st.kernel_version,
                            st.format, st.lost), file=out)
        lost = {c: d for c, d in st.lost.items() if any(d.values())}
        if lost and summ is None:
            print(f"{args.file}: ring buffer lost events: " + "; ".join(
                f"{c} " + ", ".join(f"{k} {v}" for k, v in d.items()) for c, d in sorted(lost.items())),
                file=sys.stderr)
    return 0


def register(sub) -> None:
    t = sub.add_parser("trace", help="decode kvmmmu tracepoints (text, fields, capture, tracefs "
                       "raw pages, trace.dat; gzip; '-' for stdin), streamed")
    t.add_argument("file", help="trace file, capture, saved tracefs or CTF directory, or '-'")
    t.add_argument("--era", default=None,
                   help="role-word era or kernel version (see `pykvmmu role eras`); required when "
                        "the trace carries no kernel version, refused when it contradicts it")
    add_config_args(t, default_mode=None)
    for a in t._actions:                         # one-line errors for typos (checked in _cmd_trace)
        if "--mode" in a.option_strings:
            a.choices = None
            a.help = ("MmuConfig preset for SPTE decoding (" + ", ".join(MmuConfig.PRESETS)
                      + "), with the options below; off if omitted")
    t.set_defaults(profile=None)
    t.add_argument("--summary", action="store_true",
                   help="per-event counts, role distribution, zap reasons, lost events")
    t.add_argument("--json", action="store_true", help="one JSON object per record")
    t.add_argument("--all-events", action="store_true", help="also non-kvmmmu events")
    t.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")
    t.set_defaults(func=_cmd_trace)


__all__ = ["register"]

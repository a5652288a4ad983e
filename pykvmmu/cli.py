"""The ``pykvmmu`` command line: subcommands are contributed by pykvmmu.commands.*."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands
from ._version import __version__
from .errors import PykvmmuError


def _command_modules():
    mods = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"{commands.__name__}.{info.name}"))
    return mods


def run_demo(emit=print) -> int:
    """``pykvmmu demo``: every concept's scene, in DEMO_ORDER, over the embedded defaults."""
    scenes = [m for m in _command_modules() if hasattr(m, "demo")]
    scenes.sort(key=lambda m: getattr(m, "DEMO_ORDER", 100))
    for m in scenes:
        m.demo(emit)
        emit("")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pykvmmu", description=__doc__)
    p.add_argument("--version", action="version", version=f"pykvmmu {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("demo", help="end-to-end walk over the embedded default configurations")
    d.set_defaults(func=lambda args: run_demo())
    for m in _command_modules():
        if hasattr(m, "register"):
            m.register(sub)
    return p


#: The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def main(argv=None) -> int:
    """Run one command.  Bad values and file errors print one ``pykvmmu: error:`` line and
    exit 1; Ctrl-C prints one line and exits 130 (no traceback)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        rc = args.func(args)
    except KeyboardInterrupt:
        print("pykvmmu: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except PykvmmuError as e:
        print(f"pykvmmu: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Output piped into e.g. `head`: stop quietly, as other command-line tools do.
        sys.stderr.close()
        return 0
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"pykvmmu: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

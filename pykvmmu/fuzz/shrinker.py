"""Running one input (a Failure and its signature) and shrinking a failing input."""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass

from .base import Disagreement, Target


# ---------------------------------------------------------------------- running one input
@dataclass
class Failure:
    """A failing input: its bytes, a signature (exception type and where it was raised),
    the message and the traceback."""

    data: bytes
    signature: tuple
    message: str
    tb: str = ""

    @property
    def kind(self) -> str:
        return "disagreement" if self.signature[0] == "Disagreement" else "crash"


def _signature(exc: BaseException) -> tuple:
    tb = traceback.extract_tb(exc.__traceback__)
    where = ""
    for fr in reversed(tb):
        if "pykvmmu" in fr.filename:
            where = f"{os.path.basename(fr.filename)}:{fr.lineno}"
            break
    head = str(exc).split(":")[0][:60] if isinstance(exc, Disagreement) else ""
    return (type(exc).__name__, where, head)


def run_one(t: Target, data: bytes):
    """Run ``t`` on ``data``; returns ``(features, None)`` or ``(None, Failure)``."""
    try:
        return t(data), None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - every escape is a finding
        return None, Failure(bytes(data), _signature(e), f"{type(e).__name__}: {e}",
                             traceback.format_exc())


def shrink(t: Target, fail: Failure, budget_s: float = 10.0, max_execs: int = 5000) -> Failure:
    """Minimise a failing input while it fails with the same signature: truncate, drop
    chunks of halving size, then zero and decrement single bytes."""
    best = fail
    deadline = time.monotonic() + budget_s
    execs = 0

    def still(data: bytes):
        nonlocal execs
        execs += 1
        _, f = run_one(t, data)
        return f if f is not None and f.signature == fail.signature else None

    def out_of_budget():
        return execs >= max_execs or time.monotonic() > deadline

    changed = True
    while changed and not out_of_budget():
        changed = False
        data = best.data
        # truncation, largest cut first
        n = len(data)
        cut = n // 2
        while cut and not out_of_budget():
            f = still(best.data[:len(best.data) - cut])
            if f:
                best, changed = f, True
            else:
                cut //= 2
        # chunk removal
        size = max(1, len(best.data) // 2)
        while size and not out_of_budget():
            i = 0
            while i < len(best.data) and not out_of_budget():
                cand = best.data[:i] + best.data[i + size:]
                f = still(cand)
                if f:
                    best, changed = f, True
                else:
                    i += size
            size //= 2
        # byte simplification: zero, then smaller values
        for i in range(len(best.data)):
            if out_of_budget():
                break
            b = best.data[i]
            for v in (0, 1, b >> 1, b - 1):
                if 0 <= v < b:
                    cand = best.data[:i] + bytes([v]) + best.data[i + 1:]
                    f = still(cand)
                    if f:
                        best, changed = f, True
                        break
    return best


"""Pure-Python reference of the upstream private/shared fault classification (plain ints).

Independent of ``pykvmmu._core``: written from docs/private.md section "Upstream rule".
"""
from __future__ import annotations

import bisect

RSVD = 1 << 3
ENC = 1 << 34
PRIVATE = 1 << 49
SYNTHETIC = (1 << 48) | (1 << 49)
SW_PROTECTED, SNP, TDX = 1, 4, 5


def classify(vm_type: int, gpa: int, error_code: int, shared_bit: int = 51,
             private_ranges=()) -> tuple:
    """Return (gfn, error_code, is_private, collided) for one fault.

    ``private_ranges``: sorted disjoint (start_gfn, end_gfn) pairs (SW-protected VMs)."""
    collided = bool(error_code & SYNTHETIC)
    ec = error_code & ~SYNTHETIC
    direct = 0
    if vm_type == SNP:
        if ec & ENC:
            ec |= PRIVATE
    elif vm_type == TDX:
        direct = 1 << shared_bit
        if not gpa & direct:
            ec |= PRIVATE
    elif vm_type == SW_PROTECTED and not ec & RSVD:
        gfn = gpa >> 12
        i = bisect.bisect_right([s for s, _ in private_ranges], gfn) - 1
        if i >= 0 and gfn < private_ranges[i][1]:
            ec |= PRIVATE
    gfn = (gpa & ~direct) >> 12
    return gfn, ec, bool(ec & PRIVATE), collided


def classify_many(vm_type: int, gpas, ecs, shared_bit: int = 51, private_ranges=()):
    """Element by element over two sequences (the pure-Python path of the benchmark)."""
    return [classify(vm_type, g, e, shared_bit, private_ranges) for g, e in zip(gpas, ecs)]

"""Bounded module-level memos of pure computations: the one rule for storing into them."""
from __future__ import annotations


def bounded_put(memo: dict, cap: int, key, value):
    """Store ``value`` under ``key`` in ``memo`` (emptied first when it holds ``cap``
    entries) and return it.  Memos are module state, never an object's, so object
    snapshots (``_check.snapshot``) do not see them."""
    if len(memo) >= cap:
        memo.clear()
    memo[key] = value
    return value

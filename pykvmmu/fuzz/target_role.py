"""Fuzz target ``role``: role words and their hashes."""
from __future__ import annotations

import functools

import numpy as np

from .base import Disagreement, FuzzInput, batch_len, check, expect_same, expect_same_batch, isa_level, target


@functools.lru_cache(maxsize=None)
def _layout(era: str, level: str):
    """The era's base role layout with its batch kernels capped at ``level``."""
    from ..role import get_era
    return get_era(era).base._isa_copy(level)


@target("role")
def fuzz_role(fi: FuzzInput) -> None:
    """Role words: pack / unpack (scalar and batch, base and cpu role) per era vs
    pykvmmu.ref.role; hash_64 (three variants, any bit count) and hash_batch vs the reference."""
    from .. import role as R
    from ..ref import role as RR
    eras = list(R.ERAS)
    era = fi.pick(eras)
    e = R.get_era(era)
    op = fi.int_in(0, 3)
    fi.feature("role", op, era)
    if op == 0:
        vals = {f.name: fi.int_in(0, 5) if f.name == "level" else fi.uint(f.width)
                for f in e.base.fields}       # pack() refuses levels above 5
        w = R.pack(era, **vals)
        expect_same("pack", w, RR.pack_role(era, **vals), era, vals)
        expect_same("unpack(pack)", R.unpack(era, w).fields, vals, era, w)
        expect_same("ref unpack", RR.unpack_role(era, w), vals, era, w)
        rec = R.unpack_batch(era, np.array([w], np.uint32))
        expect_same("pack_batch(unpack_batch)", int(R.pack_batch(era, rec)[0]), w, era)
        check(str(R.unpack(era, w)), "str(Role) is empty")
        fi.feature("role.level", vals.get("level"))
    elif op == 1:
        n = fi.int_in(1, 6)
        words = [fi.uint(32) & (e.base.used_mask if not fi.chance(8) else 0xFFFFFFFF) for _ in range(n)]
        arr = np.resize(np.array(words, np.uint32), batch_len(fi, n))
        lay = _layout(era, isa_level(fi))
        bad = [w for w in words if w & ~e.base.used_mask]
        if bad:
            from ..errors import PykvmmuError
            try:
                lay.unpack_batch(arr)
            except PykvmmuError:
                fi.feature("role.strict_refused")
            else:
                raise Disagreement(f"unpack_batch(strict) accepted unused bits {bad[0]:#x} ({era})")
            rec = lay.unpack_batch(arr, strict=False)
        else:
            rec = lay.unpack_batch(arr)
        want = [RR.unpack_role(era, w & e.base.used_mask) for w in words]
        for nm in e.base.names:
            expect_same_batch(f"unpack_batch.{nm}", rec[nm], [f[nm] for f in want], era, words)
        if not bad:
            expect_same_batch("pack_batch(unpack_batch(w))", lay.pack_batch(rec), words, era)
    elif op == 2:
        if e.ext is None:
            return
        b = {f.name: fi.int_in(0, 5) if f.name == "level" else fi.uint(f.width)
             for f in e.base.fields}
        x = {f.name: fi.uint(f.width) for f in e.ext.fields}
        v = R.pack_cpu_role(era, b, x)
        expect_same("pack_cpu_role", v, RR.pack_cpu_role(era, b, x), era)
        cr = R.unpack_cpu_role(era, v)
        check(cr.base == R.pack(era, **b) and cr.ext == R.pack_ext(era, **x), "unpack_cpu_role", era, v)
        arr = np.array([v], np.uint64)
        check(np.array_equal(R.cpu_role_pack_batch(era, R.cpu_role_unpack_batch(era, arr)), arr),
              "cpu_role batch round trip", era, v)
    else:
        variant = fi.pick(("x86_64", "32bit", "pre-4.7"))
        bits = fi.int_in(1, 32)
        ref = {"x86_64": RR.hash_64, "32bit": RR.hash_64_32bit_host, "pre-4.7": RR.hash_64_pre_4_7}[variant]
        keys = [fi.u64() for _ in range(fi.int_in(1, 6))]
        hashes = [ref(k, bits) for k in keys]
        for k, h in zip(keys, hashes):
            expect_same("hash_64", R.hash_64(k, bits, variant), h, variant, bits, k)
            check(h < (1 << bits), "hash wider than bits", variant, bits, k)
        arr = np.resize(np.array(keys, np.uint64), batch_len(fi, len(keys)))
        expect_same_batch("hash_batch", R.hash_batch(arr, bits, variant, isa=isa_level(fi)), hashes,
                          variant, bits, keys)
        expect_same("kvm_page_table_hashfn", R.kvm_page_table_hashfn(keys[0]),
                    RR.kvm_page_table_hashfn(keys[0]), keys[0])
        fi.feature("role.hash", variant, bits)

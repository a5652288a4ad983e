"""Pure-Python reference for role words and hash_64 (no C core: an independent oracle).

The layouts are written here the way the kernel declares them: a list of
``(name, width)`` bit-fields in declaration order, ``None`` for an unnamed pad,
allocated LSB first inside one unit (x86-64 SysV, role-hash-trace.md section 1).
pykvmmu/role.py states explicit (shift, width) pairs instead; the tests compare the two.
"""
from __future__ import annotations

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1

# union kvm_mmu_page_role, declaration order, per era (fact sheet 1.2).
_COMMON_HEAD = [("level", 4)]
_BASE = {
    "v4.2": [("level", 4), ("cr4_pae", 1), ("quadrant", 2), ("direct", 1), ("access", 3),
             ("invalid", 1), ("nxe", 1), ("cr0_wp", 1), ("smep_andnot_wp", 1),
             ("smap_andnot_wp", 1), (None, 8), ("smm", 8)],
    "v4.12": [("level", 4), ("cr4_pae", 1), ("quadrant", 2), ("direct", 1), ("access", 3),
              ("invalid", 1), ("nxe", 1), ("cr0_wp", 1), ("smep_andnot_wp", 1),
              ("smap_andnot_wp", 1), ("ad_disabled", 1), (None, 7), ("smm", 8)],
    "v4.18": [("level", 4), ("cr4_pae", 1), ("quadrant", 2), ("direct", 1), ("access", 3),
              ("invalid", 1), ("nxe", 1), ("cr0_wp", 1), ("smep_andnot_wp", 1),
              ("smap_andnot_wp", 1), ("ad_disabled", 1), ("guest_mode", 1), (None, 6),
              ("smm", 8)],
    "v5.1": [("level", 4), ("gpte_is_8_bytes", 1), ("quadrant", 2), ("direct", 1), ("access", 3),
             ("invalid", 1), ("nxe", 1), ("cr0_wp", 1), ("smep_andnot_wp", 1),
             ("smap_andnot_wp", 1), ("ad_disabled", 1), ("guest_mode", 1), (None, 6),
             ("smm", 8)],
    "v5.14": [("level", 4), ("gpte_is_8_bytes", 1), ("quadrant", 2), ("direct", 1), ("access", 3),
              ("invalid", 1), ("efer_nx", 1), ("cr0_wp", 1), ("smep_andnot_wp", 1),
              ("smap_andnot_wp", 1), ("ad_disabled", 1), ("guest_mode", 1), (None, 6),
              ("smm", 8)],
    "v5.17": [("level", 4), ("has_4_byte_gpte", 1), ("quadrant", 2), ("direct", 1), ("access", 3),
              ("invalid", 1), ("efer_nx", 1), ("cr0_wp", 1), ("smep_andnot_wp", 1),
              ("smap_andnot_wp", 1), ("ad_disabled", 1), ("guest_mode", 1), (None, 6),
              ("smm", 8)],
    "v5.19": [("level", 4), ("has_4_byte_gpte", 1), ("quadrant", 2), ("direct", 1), ("access", 3),
              ("invalid", 1), ("efer_nx", 1), ("cr0_wp", 1), ("smep_andnot_wp", 1),
              ("smap_andnot_wp", 1), ("ad_disabled", 1), ("guest_mode", 1), ("passthrough", 1),
              (None, 5), ("smm", 8)],
    "v6.14": [("level", 4), ("has_4_byte_gpte", 1), ("quadrant", 2), ("direct", 1), ("access", 3),
              ("invalid", 1), ("efer_nx", 1), ("cr0_wp", 1), ("smep_andnot_wp", 1),
              ("smap_andnot_wp", 1), ("ad_disabled", 1), ("guest_mode", 1), ("passthrough", 1),
              ("is_mirror", 1), (None, 4), ("smm", 8)],
}
# Eras whose base layout equals another's.
for _alias, _same in (("v4.20", "v4.18"), ("v5.0", "v4.18"), ("v5.0-fix", "v4.18"),
                      ("v5.9", "v5.1")):
    _BASE[_alias] = _BASE[_same]

# union kvm_mmu_extended_role (fact sheet 1.5); eras before v4.20 have none.
_EXT = {
    "v4.20": [("valid", 1), ("execonly", 1), ("cr0_pg", 1), ("cr4_pse", 1), ("cr4_pke", 1),
              ("cr4_smap", 1), ("cr4_smep", 1), ("cr4_la57", 1)],
    "v5.0": [("valid", 1), ("execonly", 1), ("cr0_pg", 1), ("cr4_pse", 1), ("cr4_pke", 1),
             ("cr4_smap", 1), ("cr4_smep", 1), ("cr4_la57", 1), ("maxphyaddr", 6)],
    "v5.1": [("valid", 1), ("execonly", 1), ("cr0_pg", 1), ("cr4_pae", 1), ("cr4_pse", 1),
             ("cr4_pke", 1), ("cr4_smap", 1), ("cr4_smep", 1), ("cr4_la57", 1),
             ("maxphyaddr", 6)],
    "v5.9": [("valid", 1), ("execonly", 1), ("cr0_pg", 1), ("cr4_pae", 1), ("cr4_pse", 1),
             ("cr4_pke", 1), ("cr4_smap", 1), ("cr4_smep", 1), ("maxphyaddr", 6)],
    "v5.14": [("valid", 1), ("execonly", 1), ("cr0_pg", 1), ("cr4_pae", 1), ("cr4_pse", 1),
              ("cr4_pke", 1), ("cr4_smap", 1), ("cr4_smep", 1), ("cr4_la57", 1), ("efer_lma", 1)],
    "v5.19": [("valid", 1), ("execonly", 1), ("cr4_pse", 1), ("cr4_pke", 1), ("cr4_smap", 1),
              ("cr4_smep", 1), ("cr4_la57", 1), ("efer_lma", 1)],
}
_EXT["v5.0-fix"] = _EXT["v5.0"]
_EXT["v5.17"] = _EXT["v5.14"]
_EXT["v6.14"] = _EXT["v5.19"]

ERAS = ("v4.2", "v4.12", "v4.18", "v4.20", "v5.0", "v5.0-fix", "v5.1", "v5.9", "v5.14", "v5.17",
        "v5.19", "v6.14")


def _allocate(decls):
    """{name: (shift, width)} from declaration order, LSB first."""
    out, pos = {}, 0
    for name, width in decls:
        if name is not None:
            out[name] = (pos, width)
        pos += width
    assert pos <= 32, pos
    return out


def base_fields(era: str) -> dict:
    return _allocate(_BASE[era])


def ext_fields(era: str) -> dict:
    if era not in _EXT:
        return {}
    return _allocate(_EXT[era])


def pack(fields_layout: dict, values: dict) -> int:
    """Pack named values into a word; a value wider than its field is a ValueError."""
    word = 0
    for name, v in values.items():
        shift, width = fields_layout[name]
        if v < 0 or v >= (1 << width):
            raise ValueError(f"{name}={v} does not fit in {width} bits")
        word |= v << shift
    return word


def unpack(fields_layout: dict, word: int) -> dict:
    return {name: (word >> shift) & ((1 << width) - 1)
            for name, (shift, width) in fields_layout.items()}


def used_mask(fields_layout: dict) -> int:
    m = 0
    for shift, width in fields_layout.values():
        m |= ((1 << width) - 1) << shift
    return m


def pack_role(era: str, **values) -> int:
    return pack(base_fields(era), values)


def unpack_role(era: str, word: int) -> dict:
    return unpack(base_fields(era), word)


def pack_cpu_role(era: str, base: dict, ext: dict) -> int:
    """kvm_cpu_role.as_u64 = base.word | ext.word << 32 (little endian)."""
    return pack(base_fields(era), base) | (pack(ext_fields(era), ext) << 32)


# ---- hash_64 (include/linux/hash.h) ----
GOLDEN_RATIO_32 = 0x61C88647
GOLDEN_RATIO_64 = 0x61C8864680B583EB
GOLDEN_RATIO_PRIME_64 = 0x9E37FFFFFFFC0001


def hash_64(val: int, bits: int) -> int:
    """64-bit kernels, v4.7+: top ``bits`` bits of val * GOLDEN_RATIO_64 (mod 2^64)."""
    return ((val * GOLDEN_RATIO_64) & U64) >> (64 - bits)


def _hash32_mul(x: int) -> int:
    return (x * GOLDEN_RATIO_32) & U32


def hash_64_32bit_host(val: int, bits: int) -> int:
    """32-bit kernels, v4.7+: hash_32((u32)val ^ __hash_32(val >> 32), bits)."""
    return _hash32_mul((val & U32) ^ _hash32_mul(val >> 32)) >> (32 - bits)


def hash_64_pre_4_7(val: int, bits: int) -> int:
    """Before v4.7: the shift/add sequence, which equals val * GOLDEN_RATIO_PRIME_64."""
    # The kernel's shift/add form, written out (n = val, all mod 2^64):
    h = val
    n = h
    n = (n << 18) & U64
    h = (h - n) & U64
    n = (n << 33) & U64
    h = (h - n) & U64
    n = (n << 3) & U64
    h = (h + n) & U64
    n = (n << 3) & U64
    h = (h - n) & U64
    n = (n << 4) & U64
    h = (h + n) & U64
    n = (n << 2) & U64
    h = (h + n) & U64
    return h >> (64 - bits)


def kvm_page_table_hashfn(gfn: int) -> int:
    return hash_64(gfn, 12)

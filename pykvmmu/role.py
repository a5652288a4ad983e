"""Page role words per kernel era: layouts, packing, role computations, nested-EPT identity.

KVM identifies a shadow page by ``(gfn, role.word)``; the 32-bit ``union
kvm_mmu_page_role`` changed layout and meaning over time (fact sheet
``role-hash-trace.md`` sections 1-2).  An era (:class:`RoleEra`) is data: the bit
layouts of the page role and of ``kvm_mmu_extended_role`` plus the switches that
select the era's role-computation rules.  Packing, unpacking and hashing run in
the C core (``csrc/role.c``); the role computations are small and stay in Python.
"""
from __future__ import annotations

import copy
import itertools
import dataclasses
from dataclasses import dataclass, field, replace
from typing import Iterable

import numpy as np

from . import _par
from . import isa as _isa
from ._batch import in_array, out_array, ptr_at, uint
from ._check import boolean, choice, in_range, opt_boolean
from ._ffi import ffi, lib
from .errors import InputError, ProfileError
from .profile import lookup_named

__all__ = [
    "RoleLayout", "RoleEra", "ERAS", "get_era", "DEFAULT_ERA", "Role", "CpuRole", "VcpuState",
    "RoleFieldError", "pack", "unpack", "pack_batch", "unpack_batch", "pack_ext", "unpack_ext",
    "pack_cpu_role", "unpack_cpu_role", "cpu_role_pack_batch", "cpu_role_unpack_batch",
    "hash_64", "kvm_page_table_hashfn", "hash_batch", "gpte_bytes",
    "kvm_calc_cpu_role", "kvm_calc_mmu_role_ext", "kvm_calc_tdp_mmu_root_page_role",
    "kvm_calc_shadow_mmu_root_page_role", "shadow_root_sp_roles", "kvm_calc_shadow_ept_root_page_role",
    "kvm_calc_shadow_npt_root_page_role", "kvm_mmu_get_page_role", "kvm_mmu_child_role",
    "tdp_mmu_child_role", "quadrant_for_gaddr", "is_ept_sp", "identify_nested_ept",
    "check_role_word", "find_collisions", "kvm_mmu_role_as_id",
    "ACC_EXEC", "ACC_WRITE", "ACC_USER", "ACC_ALL", "KVM_MMU_HASH_SHIFT", "KVM_NUM_MMU_PAGES",
    "MMU_BASE_ROLE_MASK", "ROLE_IGN_MASK", "SYNC_ROLE_IGN_MASK",
]

ACC_EXEC, ACC_WRITE, ACC_USER, ACC_ALL = 1, 2, 4, 7
PT32_ROOT_LEVEL, PT32E_ROOT_LEVEL, PT64_ROOT_4LEVEL, PT64_ROOT_5LEVEL = 2, 3, 4, 5
KVM_MMU_HASH_SHIFT = lib.KVMMU_MMU_HASH_SHIFT
KVM_NUM_MMU_PAGES = 1 << KVM_MMU_HASH_SHIFT
#: v4.20-v5.6 opt-in mask ANDed into stored MMU roles (fact sheet 1.4).
MMU_BASE_ROLE_MASK = 0xFF03F010
#: v5.7-~v6.4 kvm_mmu_pte_write role_ign (level, access, quadrant, invalid).
ROLE_IGN_MASK = 0x00000F6F
#: newest kvm_sync_page_check sync_role_ign (level, access, quadrant, passthrough).
SYNC_ROLE_IGN_MASK = 0x0004076F

_HASH_VARIANTS = {"x86_64": lib.KVMMU_HASH_X86_64, "32bit": lib.KVMMU_HASH_32BIT_HOST,
                  "pre-4.7": lib.KVMMU_HASH_PRE_4_7}


class RoleFieldError(InputError):
    """A role field value that does not fit its bit-field, or an unknown field name."""


_ERRS = {lib.KVMMU_ROLE_E_WIDTH: "a field value does not fit in its bit-field width",
         lib.KVMMU_ROLE_E_RESERVED: "bits set outside every field of the era's layout"}


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    name: str
    shift: int
    width: int

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.shift


class RoleLayout:
    """One union's bit-fields (ascending bit order), with its C description and numpy dtype."""

    def __init__(self, name: str, fields, word_bits: int = 32):
        self.name = name
        self.word_bits = word_bits
        self.fields = tuple(Field(*f) for f in fields)
        self.index = {f.name: i for i, f in enumerate(self.fields)}
        self.used_mask = 0
        for f in self.fields:
            self.used_mask |= f.mask
        self.row = lib.KVMMU_ROLE_ROW32 if word_bits == 32 else lib.KVMMU_ROLE_ROW64
        self.dtype = np.dtype({"names": [f.name for f in self.fields],
                               "formats": [np.uint8] * len(self.fields),
                               "offsets": list(range(len(self.fields))), "itemsize": self.row})
        c = ffi.new("struct kvmmu_role_layout *")
        c.used_mask = self.used_mask
        c.nfields = len(self.fields)
        c.row = self.row
        for i, f in enumerate(self.fields):
            c.shift[i] = f.shift
            c.width[i] = f.width
        c.isa = _isa.DEFAULT
        rc = lib.kvmmu_role_layout_check(c)
        if rc:
            raise ProfileError(f"role layout {name!r}: fields overlap, are out of order or too wide")
        self._c = c

    def _isa_copy(self, level: str) -> "RoleLayout":
        """The same layout with its batch kernels capped at ``level`` (:mod:`pykvmmu.isa`)."""
        twin = copy.copy(self)
        twin._c = ffi.new("struct kvmmu_role_layout *", self._c[0])
        twin._c.isa = _isa.level(level)
        return twin

    @property
    def names(self) -> tuple:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        try:
            return self.fields[self.index[name]]
        except KeyError:
            raise RoleFieldError(f"field {name!r}: not in layout {self.name} "
                                 f"(fields: {', '.join(self.names)})") from None

    def pack(self, values: dict) -> int:
        """Pack ``{field: value}`` into a word (each value must fit its field)."""
        if not isinstance(values, dict):
            raise InputError(f"values={values!r}: expected a dict of field values")
        row = bytearray(self.row)
        for name, v in values.items():
            f = self.field(name)
            v = uint(name, v, 64)
            if v >> f.width:
                raise RoleFieldError(f"{name}={v}: does not fit in the {f.width}-bit field "
                                     f"{name} (bits {f.shift}..{f.shift + f.width - 1}) of {self.name}")
            row[self.index[name]] = v
        err = ffi.new("int *")
        return int(lib.kvmmu_role_pack(self._c, ffi.from_buffer("uint8_t[]", row), err))

    def unpack(self, word: int, strict: bool = False) -> dict:
        word = uint("word", word, self.word_bits)
        if boolean("strict", strict) and word & ~self.used_mask:
            raise RoleFieldError(f"word={word:#x}: bits {word & ~self.used_mask:#x} are outside "
                                 f"every field of {self.name}")
        buf = bytearray(self.row)
        lib.kvmmu_role_unpack(self._c, word, ffi.from_buffer("uint8_t[]", buf))
        return {f.name: buf[i] for i, f in enumerate(self.fields)}

    def _rows(self, name, fields):
        if isinstance(fields, np.ndarray) and fields.dtype == self.dtype:
            in_array(name, fields, self.dtype)
            return fields.view(np.uint8).reshape(fields.shape + (self.row,)), fields.shape
        in_array(name, fields, np.uint8)
        if fields.ndim != 2 or fields.shape[1] != self.row:
            raise InputError(f"{name}: expected a structured array of the {self.name} dtype or a "
                             f"uint8 array of shape (n, {self.row}); got shape {fields.shape}")
        return fields, fields.shape[:1]

    def pack_batch(self, fields: np.ndarray, out=None, threads: int | None = None) -> np.ndarray:
        rows, shape = self._rows("fields", fields)
        wt = np.uint32 if self.word_bits == 32 else np.uint64
        out = out_array("out", out, wt, shape, [("fields", rows)])
        n = int(np.prod(shape))
        fn = lib.kvmmu_role_pack_batch32 if self.word_bits == 32 else lib.kvmmu_role_pack_batch64
        ot = "uint32_t" if self.word_bits == 32 else "uint64_t"

        def part(lo, hi):
            err = ffi.new("int *")
            return fn(self._c, ptr_at(rows, "uint8_t", lo * self.row), ptr_at(out, ot, lo),
                      hi - lo, err), err[0]
        idx, code = _par.run(n, threads, part)
        if idx:
            i = idx - 1
            r = rows.reshape(-1, self.row)[i]
            bad = [f"{f.name}={int(r[k])} (width {f.width})" for k, f in enumerate(self.fields)
                   if r[k] >> f.width] + [f"pad byte {k}={int(r[k])}"
                                          for k in range(len(self.fields), self.row) if r[k]]
            raise RoleFieldError(f"fields[{i}]: {', '.join(bad)}: {_ERRS[code]} ({self.name})")
        return out

    def unpack_batch(self, words: np.ndarray, out=None, strict: bool = True,
                     threads: int | None = None) -> np.ndarray:
        wt = np.uint32 if self.word_bits == 32 else np.uint64
        in_array("words", words, wt)
        out = out_array("out", out, self.dtype, words.shape, [("words", words)])
        fn = lib.kvmmu_role_unpack_batch32 if self.word_bits == 32 else lib.kvmmu_role_unpack_batch64
        wt_c = "uint32_t" if self.word_bits == 32 else "uint64_t"
        rows = out.view(np.uint8)
        st = boolean("strict", strict)

        def part(lo, hi):
            err = ffi.new("int *")
            return fn(self._c, ptr_at(words, wt_c, lo), ptr_at(rows, "uint8_t", lo * self.row),
                      hi - lo, st, err), err[0]
        idx, code = _par.run(words.size, threads, part)
        if idx:
            w = int(words.reshape(-1)[idx - 1])
            raise RoleFieldError(f"words[{idx - 1}]={w:#x}: {_ERRS[code]} "
                                 f"({w & ~self.used_mask:#x}, layout {self.name})")
        return out

    def __repr__(self) -> str:
        return f"RoleLayout({self.name!r}, {len(self.fields)} fields, mask {self.used_mask:#x})"


def _decl(name, decls, word_bits=32):
    """A layout from kernel-style declaration order: [(name|None, width)], LSB first."""
    out, pos = [], 0
    for n, w in decls:
        if n is not None:
            out.append((n, pos, w))
        pos += w
    return RoleLayout(name, out, word_bits)


def _base_decls(bit4, nx, ad=True, gm=True, passthrough=False, mirror=False):
    d = [("level", 4), (bit4, 1), ("quadrant", 2), ("direct", 1), ("access", 3), ("invalid", 1),
         (nx, 1), ("cr0_wp", 1), ("smep_andnot_wp", 1), ("smap_andnot_wp", 1)]
    used = 16
    for flag, name in ((ad, "ad_disabled"), (gm, "guest_mode"), (passthrough, "passthrough"),
                       (mirror, "is_mirror")):
        if flag:
            d.append((name, 1))
            used += 1
    d += [(None, 24 - used), ("smm", 8)]
    return d


_E = [("valid", 1), ("execonly", 1)]
_EXT_DECLS = {
    "v4.20": _E + [("cr0_pg", 1), ("cr4_pse", 1), ("cr4_pke", 1), ("cr4_smap", 1), ("cr4_smep", 1),
                   ("cr4_la57", 1)],
    "v5.0": _E + [("cr0_pg", 1), ("cr4_pse", 1), ("cr4_pke", 1), ("cr4_smap", 1), ("cr4_smep", 1),
                  ("cr4_la57", 1), ("maxphyaddr", 6)],
    "v5.1": _E + [("cr0_pg", 1), ("cr4_pae", 1), ("cr4_pse", 1), ("cr4_pke", 1), ("cr4_smap", 1),
                  ("cr4_smep", 1), ("cr4_la57", 1), ("maxphyaddr", 6)],
    "v5.9": _E + [("cr0_pg", 1), ("cr4_pae", 1), ("cr4_pse", 1), ("cr4_pke", 1), ("cr4_smap", 1),
                  ("cr4_smep", 1), ("maxphyaddr", 6)],
    "v5.14": _E + [("cr0_pg", 1), ("cr4_pae", 1), ("cr4_pse", 1), ("cr4_pke", 1), ("cr4_smap", 1),
                   ("cr4_smep", 1), ("cr4_la57", 1), ("efer_lma", 1)],
    "v5.19": _E + [("cr4_pse", 1), ("cr4_pke", 1), ("cr4_smap", 1), ("cr4_smep", 1),
                   ("cr4_la57", 1), ("efer_lma", 1)],
}


# ---------------------------------------------------------------------------
# Eras
# ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class RoleEra:
    """One kernel era of the role word: layouts plus the rule switches of the era."""

    name: str
    kernels: str
    base: RoleLayout
    ext: RoleLayout | None
    #: Name (and sense) of bit 4: "cr4_pae" / "gpte_is_8_bytes" (1 = 8-byte gptes) or
    #: "has_4_byte_gpte" (1 = 4-byte gptes).
    bit4: str
    #: "nxe" (before v5.14) or "efer_nx".
    nx: str
    #: kvm_mmu_get_page forces bit 4 on direct pages to this value (v5.0: cr4_pae = 0,
    #: v5.1-v5.16: gpte_is_8_bytes = 1); None: nothing forced (v5.17+).
    direct_bit4: int | None
    #: v4.20/v5.0: kvm_calc_mmu_role_common sets cr4_pae for every MMU, TDP included.
    common_sets_pae: bool
    #: v4.20-v5.18: kvm_calc_mmu_role_common gives TDP roles the vCPU's nxe and cr0_wp.
    has_role_common: bool
    #: v5.19+: TDP roles force cr0_wp = efer_nx = 1; shadow roots force efer_nx = 1.
    forced_wp_nx: bool
    #: Nested EPT root role rule: None (not modelled), "inherit" (v4.20-v5.0: L1's TDP base),
    #: "marker" (v5.1-v5.13: cr0_wp=1 + smap_andnot_wp=1), "clean" (v5.14+).
    ept_rule: str | None
    #: The stored MMU role is ANDed with MMU_BASE_ROLE_MASK (v4.20-v5.6).
    masks_mmu_role: bool
    #: prev_roots flavour: None (no cache), "v4.19" (cached_root_available), "v5.7"
    #: (current root first, pgd ignored for direct), "v5.19" (find-and-keep-current/without).
    prev_roots: str | None
    #: kvm_cpu_role exists (v5.19+; before it the same shape was union kvm_mmu_role).
    has_cpu_role: bool
    notes: tuple = field(default=(), compare=False)

    @property
    def cpu_role(self) -> RoleLayout | None:
        if self.ext is None:
            return None
        return _cpu_layout(self)

    def __str__(self) -> str:
        return f"{self.name} ({self.kernels})"

    def has(self, name: str) -> bool:
        return name in self.base.index


_CPU_LAYOUTS: dict = {}


def _cpu_layout(era: RoleEra) -> RoleLayout:
    lay = _CPU_LAYOUTS.get(era.name)
    if lay is None:
        fields = [(f.name, f.shift, f.width) for f in era.base.fields]
        fields += [("ext_" + f.name, 32 + f.shift, f.width) for f in era.ext.fields]
        lay = _CPU_LAYOUTS[era.name] = RoleLayout(f"kvm_cpu_role {era.name}", fields, 64)
    return lay


ERAS: dict[str, RoleEra] = {}


def _era(name, kernels, bit4, nx, ext, *, gm=True, ad=True, passthrough=False, mirror=False,
         direct_bit4, common_sets_pae=False, has_role_common=False, forced_wp_nx=False,
         ept_rule=None, masks_mmu_role=False, prev_roots=None, has_cpu_role=False, notes=()):
    base = _decl(f"kvm_mmu_page_role {name}", _base_decls(bit4, nx, ad, gm, passthrough, mirror))
    extl = _decl(f"kvm_mmu_extended_role {name}", _EXT_DECLS[ext]) if ext else None
    ERAS[name] = RoleEra(name, kernels, base, extl, bit4, nx, direct_bit4, common_sets_pae,
                         has_role_common, forced_wp_nx, ept_rule, masks_mmu_role, prev_roots,
                         has_cpu_role, tuple(notes))


_era("v4.2", "~v4.2-v4.11", "cr4_pae", "nxe", None, ad=False, gm=False, direct_bit4=0,
     notes=("the layout libtraceevent's plugin_kvm.c still decodes (bits 16-23 unused)",))
_era("v4.12", "v4.12-v4.17", "cr4_pae", "nxe", None, gm=False, direct_bit4=0,
     notes=("ad_disabled added (EPT A/D work) [approx for the exact release]",))
_era("v4.18", "v4.18-v4.19", "cr4_pae", "nxe", None, direct_bit4=0, prev_roots="v4.19",
     notes=("guest_mode added (1313cc2bd8f6); the prev_roots cache exists from v4.19",))
_era("v4.20", "v4.20", "cr4_pae", "nxe", "v4.20", direct_bit4=0, common_sets_pae=True,
     has_role_common=True, ept_rule="inherit", masks_mmu_role=True, prev_roots="v4.19",
     notes=("kvm_calc_mmu_role_common (7dcd57552008) sets cr4_pae in every MMU role; "
            "kvm_mmu_get_page still clears it on direct pages: the prev_roots NPT bug",))
_era("v5.0", "v5.0", "cr4_pae", "nxe", "v5.0", direct_bit4=0, common_sets_pae=True,
     has_role_common=True, ept_rule="inherit", masks_mmu_role=True, prev_roots="v4.19",
     notes=("as v4.20, plus ext.maxphyaddr:6 (de3ccd26fafc, 5.0-rc8)",))
_era("v5.0-fix", "v5.0 + 'make mmu->prev_roots cache work for NPT case' (v1)", "cr4_pae", "nxe",
     "v5.0", direct_bit4=0, common_sets_pae=False, has_role_common=True, ept_rule="inherit",
     masks_mmu_role=True, prev_roots="v4.19",
     notes=("Vitaly Kuznetsov's fix: cr4_pae only in the shadow MMU's root role "
            "(which patch was merged upstream is an open item)",))
_era("v5.1", "v5.1-v5.8", "gpte_is_8_bytes", "nxe", "v5.1", direct_bit4=1, has_role_common=True,
     ept_rule="marker", masks_mmu_role=True, prev_roots="v4.19",
     notes=("47c42e6b4192: cr4_pae -> gpte_is_8_bytes, forced to 1 on direct pages; nested EPT "
            "marked with cr0_wp=1 + smap_andnot_wp=1 (is_ept_sp)",
            "prev_roots: v5.7 and v5.8 already use the 'v5.7' rules (era granularity)"))
_era("v5.9", "v5.9-v5.13", "gpte_is_8_bytes", "nxe", "v5.9", direct_bit4=1, has_role_common=True,
     ept_rule="marker", prev_roots="v5.7",
     notes=("ext without cr4_la57; mmu_base_role_mask replaced by role_ign (E8, v5.7)",))
_era("v5.14", "v5.14-v5.16", "gpte_is_8_bytes", "efer_nx", "v5.14", direct_bit4=1,
     has_role_common=True, ept_rule="clean", prev_roots="v5.7",
     notes=("nxe -> efer_nx; is_ept_sp marker removed (00a669780ffa); nested EPT ignores CR0/CR4 "
            "bits (cd6767c334b6); ext gains efer_lma, loses maxphyaddr [approx order]",))
_era("v5.17", "v5.17-v5.18", "has_4_byte_gpte", "efer_nx", "v5.14", direct_bit4=None,
     has_role_common=True, ept_rule="clean", prev_roots="v5.7",
     notes=("bb3b394d35e8: gpte_is_8_bytes -> has_4_byte_gpte, sense inverted",))
_era("v5.19", "v5.19-v6.13", "has_4_byte_gpte", "efer_nx", "v5.19", passthrough=True,
     direct_bit4=None, forced_wp_nx=True, ept_rule="clean", prev_roots="v5.19", has_cpu_role=True,
     notes=("passthrough (Lai Jiangshan, 2022) [approx release]; kvm_cpu_role split; TDP roles "
            "force cr0_wp = efer_nx = 1 [approx release]; child role derived from the parent "
            "(~v6.0)",))
_era("v6.14", "v6.14 and later", "has_4_byte_gpte", "efer_nx", "v5.19", passthrough=True,
     mirror=True, direct_bit4=None, forced_wp_nx=True, ept_rule="clean", prev_roots="v5.19",
     has_cpu_role=True, notes=("is_mirror (TDX mirror S-EPT roots)",))

DEFAULT_ERA = "v6.14"
_ALIASES = {
    "2019": "v5.0", "v4.19": "v4.18", "v4.3": "v4.2", "v5.0-bug": "v5.0",
    **{f"v4.{i}": "v4.2" for i in range(2, 12)}, **{f"v4.{i}": "v4.12" for i in range(12, 18)},
    **{f"v5.{i}": "v5.1" for i in range(1, 9)}, **{f"v5.{i}": "v5.9" for i in range(9, 14)},
    "v5.15": "v5.14", "v5.16": "v5.14", "v5.18": "v5.17",
    **{f"v6.{i}": "v5.19" for i in range(0, 14)}, **{f"v6.{i}": "v6.14" for i in range(14, 30)},
    "latest": "v6.14", "newest": "v6.14", "default": "v6.14", "current": "v6.14",
}


def get_era(name) -> RoleEra:
    """An era by name or alias (``"v5.0"``, ``"2019"``, ``"v6.8"``, ``"latest"``) or object."""
    return lookup_named(name, ERAS, _ALIASES, RoleEra, "era", "role era", DEFAULT_ERA)


def _sp_level(level, name: str = "level") -> int:
    """A shadow page's level: PG_LEVEL_4K (1) .. PT64_ROOT_MAX_LEVEL (5)."""
    return in_range(name, level, 1, 5, "PG_LEVEL_4K..PT64_ROOT_MAX_LEVEL")


def _tdp_level(level, name: str = "tdp_level") -> int:
    """A TDP root level: 4 or 5 (PT64_ROOT_4LEVEL / PT64_ROOT_5LEVEL)."""
    return in_range(name, level, 4, 5, "TDP tables have 4 or 5 levels")


def _vcpu(v, name: str = "v"):
    if not isinstance(v, VcpuState):
        raise InputError(f"{name}={v!r}: expected a VcpuState, got {type(v).__name__}")
    return v


def _require(era: RoleEra, ok: bool, what: str):
    if not ok:
        raise ProfileError(f"{what}: not available in role era {era}")


# ---------------------------------------------------------------------------
# Records and scalar packing
# ---------------------------------------------------------------------------

_ACCESS_STR = ("---", "--x", "w--", "w-x", "-u-", "-ux", "wu-", "wux")


def gpte_bytes(era, word: int) -> int:
    """Guest PTE size (4 or 8) that bit 4 states, under the era's sense of bit 4."""
    era = get_era(era)
    b4 = (uint("word", word, 32) >> 4) & 1
    if era.bit4 == "has_4_byte_gpte":
        return 4 if b4 else 8
    return 8 if b4 else 4


class Role:
    """A decoded page role word: ``role.level``, ``role['direct']``, ``str(role)``."""

    __slots__ = ("era", "word", "fields")

    def __init__(self, era: RoleEra, word: int, fields: dict):
        self.era, self.word, self.fields = era, word, fields

    def __getattr__(self, name):
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(f"role field {name!r} does not exist in era {self.era.name}") from None

    def __getitem__(self, name):
        return self.fields[name]

    def __eq__(self, other):
        return isinstance(other, Role) and (self.era.name, self.word) == (other.era.name, other.word)

    def __hash__(self):
        return hash((self.era.name, self.word))

    @property
    def gpte_bytes(self) -> int:
        return gpte_bytes(self.era, self.word)

    @property
    def as_id(self) -> int:
        return kvm_mmu_role_as_id(self.word)

    def __str__(self) -> str:
        f = self.fields
        s = [f"l{f['level']}", f"{self.gpte_bytes}-byte", f"q{f['quadrant']}"]
        if f["direct"]:
            s.append("direct")
        s.append(_ACCESS_STR[f["access"]])
        if f["invalid"]:
            s.append("invalid")
        s.append(("" if f[self.era.nx] else "!") + "nx")
        s.append(("" if f["cr0_wp"] else "!") + "wp")
        if f["smep_andnot_wp"]:
            s.append("smep_andnot_wp")
        if f["smap_andnot_wp"]:
            s.append("smap_andnot_wp")
        if "ad_disabled" in f:
            s.append(("!" if f["ad_disabled"] else "") + "ad")
        for name in ("guest_mode", "passthrough", "is_mirror"):
            if f.get(name):
                s.append(name)
        if f["smm"]:
            s.append(f"smm{f['smm']}")
        return f"{self.word:#010x} [{self.era.name}] " + " ".join(s)

    def __repr__(self) -> str:
        return f"Role({self.era.name!r}, {self.word:#x})"


def pack(era, **fields) -> int:
    """Pack named fields into ``kvm_mmu_page_role.word`` under the era's layout.

    A field the era lacks raises ProfileError; a value wider than its field raises
    RoleFieldError.  ``gpte_bytes=4|8`` sets bit 4 with the era's sense.
    """
    era = get_era(era)
    g = fields.pop("gpte_bytes", None)
    if "level" in fields:
        fields["level"] = in_range("level", fields["level"], 0, 5,
                                   "0 (CR0.PG=0 cpu_role) or PG_LEVEL_4K..PT64_ROOT_MAX_LEVEL",
                                   err=RoleFieldError)
    if g is not None:
        if isinstance(g, bool) or g not in (4, 8):
            raise RoleFieldError(f"gpte_bytes={g!r}: must be 4 or 8")
        fields[era.bit4] = int((g == 4) == (era.bit4 == "has_4_byte_gpte"))
    if "nx" in fields:
        fields[era.nx] = fields.pop("nx")
    for name in fields:
        if name not in era.base.index and any(name in e.base.index for e in ERAS.values()):
            raise ProfileError(f"role field {name!r}: does not exist in era {era} "
                               f"(fields: {', '.join(era.base.names)})")
    return era.base.pack(fields)


def unpack(era, word: int, strict: bool = False) -> Role:
    """Decode a role word into a readable :class:`Role` (strict: refuse unused bits)."""
    era = get_era(era)
    return Role(era, uint("word", word, 32), era.base.unpack(word, boolean("strict", strict)))


def pack_batch(era, fields: np.ndarray, out=None, threads: int | None = None) -> np.ndarray:
    """Batch pack: a structured array of ``role_dtype(era)`` (or uint8 (n, 16)) to uint32 words."""
    return get_era(era).base.pack_batch(fields, out, threads)


def unpack_batch(era, words: np.ndarray, out=None, strict: bool = True,
                 threads: int | None = None) -> np.ndarray:
    """Batch unpack: uint32 words to a structured array (one uint8 per field)."""
    return get_era(era).base.unpack_batch(words, out, strict, threads)


def pack_ext(era, **fields) -> int:
    era = get_era(era)
    _require(era, era.ext is not None, "kvm_mmu_extended_role")
    return era.ext.pack(fields)


def unpack_ext(era, word: int, strict: bool = False) -> dict:
    era = get_era(era)
    _require(era, era.ext is not None, "kvm_mmu_extended_role")
    return era.ext.unpack(word, strict)


@dataclass(frozen=True)
class CpuRole:
    """``union kvm_cpu_role`` (``union kvm_mmu_role`` before v5.19): base + ext."""

    era: RoleEra
    base: int
    ext: int

    @property
    def as_u64(self) -> int:
        return self.base | (self.ext << 32)

    def __str__(self) -> str:
        ext = self.era.ext.unpack(self.ext)
        on = [k for k, v in ext.items() if v and k != "maxphyaddr"]
        if ext.get("maxphyaddr"):
            on.append(f"maxphyaddr={ext['maxphyaddr']}")
        return f"{self.as_u64:#018x} base {unpack(self.era, self.base)} ext {' '.join(on)}"


def pack_cpu_role(era, base: dict, ext: dict) -> int:
    era = get_era(era)
    _require(era, era.ext is not None, "kvm_cpu_role / kvm_mmu_role")
    for n, d in (("base", base), ("ext", ext)):
        if not isinstance(d, dict):
            raise InputError(f"{n}={d!r}: expected a dict of field values")
    vals = dict(base)
    vals.update({"ext_" + k: v for k, v in ext.items()})
    return era.cpu_role.pack(vals)


def unpack_cpu_role(era, as_u64: int) -> CpuRole:
    era = get_era(era)
    _require(era, era.ext is not None, "kvm_cpu_role / kvm_mmu_role")
    v = uint("as_u64", as_u64, 64)
    return CpuRole(era, v & 0xFFFFFFFF, v >> 32)


def cpu_role_pack_batch(era, fields: np.ndarray, out=None, threads: int | None = None) -> np.ndarray:
    era = get_era(era)
    _require(era, era.ext is not None, "kvm_cpu_role / kvm_mmu_role")
    return era.cpu_role.pack_batch(fields, out, threads)


def cpu_role_unpack_batch(era, words: np.ndarray, out=None, strict: bool = True,
                          threads: int | None = None) -> np.ndarray:
    era = get_era(era)
    _require(era, era.ext is not None, "kvm_cpu_role / kvm_mmu_role")
    return era.cpu_role.unpack_batch(words, out, strict, threads)


def kvm_mmu_role_as_id(word: int) -> int:
    """kvm_mmu_role_as_id: address space 1 when role.smm is non-zero."""
    return 1 if (uint("word", word, 32) >> 24) & 0xFF else 0


# ---------------------------------------------------------------------------
# hash_64 / kvm_page_table_hashfn
# ---------------------------------------------------------------------------

def _variant(variant: str) -> int:
    try:
        return _HASH_VARIANTS[variant]
    except (KeyError, TypeError):
        raise InputError(f"variant={variant!r}: one of {', '.join(_HASH_VARIANTS)}") from None


def _bits(bits) -> int:
    b = uint("bits", bits, 8)
    if not 1 <= b <= 32:
        raise InputError(f"bits={b}: hash_64 returns 1..32 bits")
    return b


def hash_64(val: int, bits: int = KVM_MMU_HASH_SHIFT, variant: str = "x86_64") -> int:
    """hash_64 (include/linux/hash.h): the top ``bits`` of val * GOLDEN_RATIO_64 on x86-64."""
    if not (bits.__class__ is int and 1 <= bits <= 32):
        bits = _bits(bits)
    try:
        v = _HASH_VARIANTS[variant]
    except (KeyError, TypeError):
        v = _variant(variant)
    try:
        return lib.kvmmu_role_hash_64(val, bits, v)
    except (OverflowError, TypeError):
        uint("val", val, 64)
        raise


def kvm_page_table_hashfn(gfn: int) -> int:
    """kvm_page_table_hashfn: hash_64(gfn, KVM_MMU_HASH_SHIFT) -> bucket 0..4095."""
    try:
        return lib.kvmmu_role_hash_64(gfn, KVM_MMU_HASH_SHIFT, 0)
    except (OverflowError, TypeError):
        uint("gfn", gfn, 64)
        raise


def hash_batch(gfn: np.ndarray, bits: int = KVM_MMU_HASH_SHIFT, variant: str = "x86_64",
               out=None, threads: int | None = None, isa: str | None = None) -> np.ndarray:
    """Batch hash_64 of a uint64 array into a uint32 array (C core, GIL released).
    ``isa`` caps the hand-written kernels (:mod:`pykvmmu.isa`; None: PYKVMMU_ISA)."""
    in_array("gfn", gfn, np.uint64)
    out = out_array("out", out, np.uint32, gfn.shape, [("gfn", gfn)])
    b, v = _bits(bits), _variant(variant)
    cap = _isa.DEFAULT if isa is None else _isa.level(isa)
    _par.map_parts(gfn.size, threads, lambda lo, hi: lib.kvmmu_role_hash_batch(
        ptr_at(gfn, "uint64_t", lo), ptr_at(out, "uint32_t", lo), hi - lo, b, v, cap))
    return out


# ---------------------------------------------------------------------------
# Role computations
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class VcpuState:
    """The vCPU registers the role computations read (KVM_MMU_{CR0,CR4,EFER}_ROLE_BITS)."""

    cr0_pg: bool = True
    cr0_wp: bool = True
    cr4_pae: bool = True
    cr4_pse: bool = False
    cr4_pke: bool = False
    cr4_smep: bool = False
    cr4_smap: bool = False
    cr4_la57: bool = False
    efer_lma: bool = True
    efer_nx: bool = True
    smm: bool = False
    guest_mode: bool = False
    maxphyaddr: int = 0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "maxphyaddr":
                object.__setattr__(self, f.name, in_range(
                    "maxphyaddr", v, 0, 52, "0 (not modelled) or CPUID.80000008H:EAX[7:0]"))
            else:
                object.__setattr__(self, f.name, boolean(f.name, v))

    @classmethod
    def long_mode(cls, **kw) -> "VcpuState":
        return cls(**kw)

    @classmethod
    def pae(cls, **kw) -> "VcpuState":
        return cls(**{"efer_lma": False, **kw})

    @classmethod
    def nonpae32(cls, **kw) -> "VcpuState":
        return cls(**{"efer_lma": False, "cr4_pae": False, "efer_nx": False, **kw})

    @classmethod
    def real_mode(cls, **kw) -> "VcpuState":
        return cls(**{"cr0_pg": False, "cr0_wp": False, "cr4_pae": False, "efer_lma": False,
                      "efer_nx": False, **kw})

    def replace(self, **kw) -> "VcpuState":
        return replace(self, **kw)

    @property
    def paging_level(self) -> int:
        """Guest paging level: 0 without paging, 2 (32-bit), 3 (PAE), 4, 5."""
        if not self.cr0_pg:
            return 0
        if self.efer_lma:
            return 5 if self.cr4_la57 else 4
        return 3 if self.cr4_pae else 2


def _b4_for(era: RoleEra, eight: bool) -> dict:
    """Bit 4 for a page with 8-byte (or 4-byte) gptes, in the era's sense."""
    if era.bit4 == "has_4_byte_gpte":
        return {era.bit4: 0 if eight else 1}
    return {era.bit4: 1 if eight else 0}


def _pk(era, **f) -> int:
    f = {k: int(v) for k, v in f.items() if k in era.base.index}
    return era.base.pack(f)


def kvm_calc_mmu_role_ext(era, v: VcpuState, execonly: bool = False) -> int:
    """The era's extended role for vCPU state ``v`` (kvm_calc_mmu_role_ext / kvm_calc_cpu_role)."""
    era = get_era(era)
    v = _vcpu(v)
    execonly = boolean("execonly", execonly)
    _require(era, era.ext is not None, "kvm_mmu_extended_role")
    names = era.ext.index
    pg = v.cr0_pg
    if "cr0_pg" not in names:           # v5.19+: kvm_calc_cpu_role
        vals = dict(valid=1, execonly=execonly, cr4_smep=pg and v.cr4_smep, cr4_smap=pg and v.cr4_smap,
                    cr4_pse=pg and v.cr4_pse, cr4_pke=pg and v.efer_lma and v.cr4_pke,
                    cr4_la57=pg and v.efer_lma and v.cr4_la57, efer_lma=pg and v.efer_lma)
    elif "efer_lma" in names:           # v5.14-v5.18 [approx]: gated by CR0.PG
        vals = dict(valid=1, execonly=execonly, cr0_pg=pg, cr4_pae=pg and v.cr4_pae,
                    cr4_smep=pg and v.cr4_smep, cr4_smap=pg and v.cr4_smap,
                    cr4_pse=pg and v.cr4_pse, cr4_pke=pg and v.efer_lma and v.cr4_pke,
                    cr4_la57=pg and v.efer_lma and v.cr4_la57, efer_lma=pg and v.efer_lma)
    else:                               # v4.20-v5.13: raw register bits
        vals = dict(valid=1, execonly=execonly, cr0_pg=pg, cr4_pae=v.cr4_pae, cr4_pse=v.cr4_pse,
                    cr4_pke=v.cr4_pke, cr4_smap=v.cr4_smap, cr4_smep=v.cr4_smep,
                    cr4_la57=v.cr4_la57, maxphyaddr=v.maxphyaddr)
    return era.ext.pack({k: int(x) for k, x in vals.items() if k in names})


def kvm_calc_cpu_role(era, v: VcpuState) -> CpuRole:
    """kvm_calc_cpu_role (v5.19+): the guest's paging mode as a role (level 0 = CR0.PG=0)."""
    era = get_era(era)
    v = _vcpu(v)
    _require(era, era.has_cpu_role, "kvm_calc_cpu_role (v5.19+)")
    f = dict(access=ACC_ALL, smm=v.smm, guest_mode=v.guest_mode)
    if not v.cr0_pg:
        f["direct"] = 1
    else:
        f.update({era.nx: v.efer_nx, "cr0_wp": v.cr0_wp,
                  "smep_andnot_wp": v.cr4_smep and not v.cr0_wp,
                  "smap_andnot_wp": v.cr4_smap and not v.cr0_wp,
                  "has_4_byte_gpte": not v.cr4_pae, "level": v.paging_level})
    return CpuRole(era, _pk(era, **f), kvm_calc_mmu_role_ext(era, v))


def _role_common(era: RoleEra, v: VcpuState) -> dict:
    """kvm_calc_mmu_role_common (v4.20-v5.18): access, nxe, cr0_wp, smm, guest_mode
    (+ cr4_pae in v4.20/v5.0)."""
    f = {"access": ACC_ALL, era.nx: v.efer_nx, "cr0_wp": v.cr0_wp, "smm": v.smm,
         "guest_mode": v.guest_mode}
    if era.common_sets_pae:
        f["cr4_pae"] = v.cr4_pae
    return f


def kvm_calc_tdp_mmu_root_page_role(era, v: VcpuState, tdp_level: int = 4,
                                    ad_enabled: bool = True, mirror: bool = False) -> int:
    """The TDP (EPT/NPT for L1) root role word that root lookups compare against."""
    era = get_era(era)
    v = _vcpu(v)
    tdp_level = _tdp_level(tdp_level)
    ad_enabled = boolean("ad_enabled", ad_enabled)
    mirror = boolean("mirror", mirror)
    f = dict(level=tdp_level, direct=1, access=ACC_ALL, smm=v.smm, guest_mode=v.guest_mode,
             ad_disabled=not ad_enabled)
    if era.forced_wp_nx:
        f.update({"cr0_wp": 1, era.nx: 1})
    elif era.has_role_common:
        f.update(_role_common(era, v))
    if era.direct_bit4 == 1 or era.bit4 == "has_4_byte_gpte":
        f.update(_b4_for(era, True))
    if mirror:
        _require(era, era.has("is_mirror"), "is_mirror")
        f["is_mirror"] = 1
    return _pk(era, **f)


def kvm_calc_shadow_mmu_root_page_role(era, v: VcpuState) -> int:
    """The shadow-paging (TDP off) root role for vCPU state ``v``."""
    era = get_era(era)
    v = _vcpu(v)
    pg = v.cr0_pg
    lvl = max(v.paging_level, PT32E_ROOT_LEVEL) if pg else PT32E_ROOT_LEVEL
    if era.has_cpu_role:
        f = dict(access=ACC_ALL, smm=v.smm, guest_mode=v.guest_mode, level=lvl)
        f[era.nx] = 1
        if pg:
            f.update(cr0_wp=v.cr0_wp, smep_andnot_wp=v.cr4_smep and not v.cr0_wp,
                     smap_andnot_wp=v.cr4_smap and not v.cr0_wp, has_4_byte_gpte=not v.cr4_pae)
        else:
            f["direct"] = 1
        return _pk(era, **f)
    f = dict(access=ACC_ALL, smm=v.smm, guest_mode=v.guest_mode, level=lvl, direct=not pg,
             smep_andnot_wp=v.cr4_smep and not v.cr0_wp, smap_andnot_wp=v.cr4_smap and not v.cr0_wp,
             cr0_wp=v.cr0_wp)
    f[era.nx] = v.efer_nx
    if era.bit4 == "has_4_byte_gpte":
        f["has_4_byte_gpte"] = pg and not v.cr4_pae
    else:
        f[era.bit4] = v.cr4_pae
    return _pk(era, **f)


def quadrant_for_gaddr(gaddr: int, level: int) -> int:
    """The 2019 kvm_mmu_get_page quadrant: (gaddr >> (12 + 9*level)) & ((1 << level) - 1)."""
    gaddr = uint("gaddr", gaddr)
    level = _sp_level(level)
    return (gaddr >> (12 + 9 * level)) & ((1 << ((10 - 9) * level)) - 1)


def kvm_mmu_get_page_role(era, base_word: int, *, level: int, direct: bool, access: int = ACC_ALL,
                          gaddr: int = 0, guest_32bit: bool | None = None) -> int:
    """The role ``kvm_mmu_get_page()`` (v4.x-v5.x) stores for a new SP built from the MMU's
    base role: level/direct/access set, bit 4 forced on direct pages (era rule), quadrant
    from ``gaddr`` for 32-bit non-PAE guests."""
    era = get_era(era)
    base_word = uint("base_word", base_word, 32)
    level = _sp_level(level)
    direct = boolean("direct", direct)
    access = in_range("access", access, 0, 7, "ACC_* bits")
    gaddr = uint("gaddr", gaddr)
    guest_32bit = opt_boolean("guest_32bit", guest_32bit)
    f = era.base.unpack(base_word & (MMU_BASE_ROLE_MASK if era.masks_mmu_role else 0xFFFFFFFF))
    f.update(level=level, direct=int(direct), access=access, quadrant=0, invalid=0)
    if direct and era.direct_bit4 is not None:
        f[era.bit4] = era.direct_bit4
    if guest_32bit is None:
        guest_32bit = bool(f[era.bit4]) if era.bit4 == "has_4_byte_gpte" else False
    if guest_32bit:
        f["quadrant"] = quadrant_for_gaddr(gaddr, level)
    return era.base.pack(f)


def shadow_root_sp_roles(era, v: VcpuState) -> list:
    """The root SP role words that shadow paging allocates: one 4/5-level root, or four PAE
    page directories (level 2) with quadrant i for a 32-bit non-PAE guest."""
    era = get_era(era)
    root = kvm_calc_shadow_mmu_root_page_role(era, _vcpu(v))
    if v.cr0_pg and v.efer_lma:
        return [root]
    out = []
    for i in range(4):
        out.append(kvm_mmu_get_page_role(era, root, level=PT32_ROOT_LEVEL, direct=not v.cr0_pg,
                                         gaddr=i << 30, guest_32bit=v.cr0_pg and not v.cr4_pae))
    return out


def kvm_calc_shadow_ept_root_page_role(era, l1: VcpuState, accessed_dirty: bool = True,
                                       execonly: bool = False, level: int = 4,
                                       tdp_ad_enabled: bool = True) -> CpuRole:
    """The nested-EPT (shadow EPT) root role for an L1 in state ``l1`` (era rules, sec. 2.5)."""
    era = get_era(era)
    l1 = _vcpu(l1, "l1")
    accessed_dirty = boolean("accessed_dirty", accessed_dirty)
    execonly = boolean("execonly", execonly)
    level = _tdp_level(level, "level")
    tdp_ad_enabled = boolean("tdp_ad_enabled", tdp_ad_enabled)
    _require(era, era.ept_rule is not None, "kvm_calc_shadow_ept_root_page_role (modelled v4.20+)")
    if era.ept_rule == "inherit":
        l1b = kvm_calc_tdp_mmu_root_page_role(era, l1.replace(guest_mode=False),
                                              ad_enabled=tdp_ad_enabled)
        f = era.base.unpack(l1b & MMU_BASE_ROLE_MASK)
        f.update(level=4, direct=0, ad_disabled=int(not accessed_dirty), guest_mode=1,
                 access=ACC_ALL)
        base = era.base.pack(f)
        ext = kvm_calc_mmu_role_ext(era, l1, execonly)
    elif era.ept_rule == "marker":
        base = _pk(era, smm=l1.smm, level=4, gpte_is_8_bytes=1, direct=0,
                   ad_disabled=not accessed_dirty, guest_mode=1, access=ACC_ALL, cr0_wp=1,
                   smap_andnot_wp=1)
        ext = kvm_calc_mmu_role_ext(era, l1, execonly)
    else:
        f = dict(level=level, direct=0, ad_disabled=not accessed_dirty, guest_mode=1,
                 access=ACC_ALL)
        f.update(_b4_for(era, True))
        base = _pk(era, **f)
        ext = era.ext.pack({"valid": 1, "execonly": int(execonly)})
    return CpuRole(era, base, ext)


def kvm_calc_shadow_npt_root_page_role(era, l1_npt: VcpuState, tdp_level: int = 4) -> int:
    """Nested NPT (SVM L1 with NPT): L1's NPT paging registers as a guest-mode shadow root,
    at the host TDP level; passthrough when a 5-level host shadows a 4-level L1 (v5.19+)."""
    era = get_era(era)
    tdp_level = _tdp_level(tdp_level)
    v = _vcpu(l1_npt, "l1_npt").replace(guest_mode=True, cr4_pke=False)
    if era.has_cpu_role:
        f = era.base.unpack(kvm_calc_cpu_role(era, v).base)
        f["level"] = tdp_level
        if tdp_level == 5 and v.paging_level == 4:
            f["passthrough"] = 1
        return era.base.pack(f)
    f = era.base.unpack(kvm_calc_shadow_mmu_root_page_role(era, v))
    f["level"] = tdp_level
    return era.base.pack(f)


def kvm_mmu_child_role(era, parent_word: int, *, direct: bool, access: int, index: int,
                       guest_32bit: bool | None = None) -> int:
    """Child SP role derived from the parent SP (kvm_mmu_child_role, ~v6.0+; equal to the
    older kvm_mmu_get_page results): level - 1, access, direct, passthrough = 0, and for
    4-byte gptes quadrant = index & 1 (bit 21 of the address).  Older eras also apply the
    direct-page bit-4 rule."""
    era = get_era(era)
    parent_word = uint("parent_word", parent_word, 32)
    direct = boolean("direct", direct)
    uint("index", index, 9)
    access = in_range("access", access, 0, 7, "ACC_* bits", err=RoleFieldError)
    guest_32bit = opt_boolean("guest_32bit", guest_32bit)
    f = era.base.unpack(parent_word)
    if f["level"] <= 1:
        raise InputError(f"parent_word={parent_word:#x}: level {f['level']}: a level-1 SP (or "
                         "level 0) has no child SPs")
    f.update(level=f["level"] - 1, access=access, direct=int(direct))
    if "passthrough" in f:
        f["passthrough"] = 0
    if guest_32bit is None:
        guest_32bit = (bool(f[era.bit4]) if era.bit4 == "has_4_byte_gpte"
                       else not f[era.bit4] and not f["direct"])
    if direct and era.direct_bit4 is not None:
        f[era.bit4] = era.direct_bit4
    if guest_32bit:
        f["quadrant"] = index & 1
    return era.base.pack(f)


def tdp_mmu_child_role(era, parent_word: int) -> int:
    """tdp_mmu_init_child_sp: the parent role with level - 1 and nothing else."""
    era = get_era(era)
    parent_word = uint("parent_word", parent_word, 32)
    lvl = parent_word & 0xF
    if lvl <= 1:
        raise InputError(f"parent_word={parent_word:#x}: level {lvl}: a level-1 SP (or level 0) "
                         "has no child SPs")
    return (parent_word & ~0xF) | (lvl - 1)


# ---------------------------------------------------------------------------
# Nested-EPT identification and the impossible-word checker
# ---------------------------------------------------------------------------

def is_ept_sp(era, word: int) -> bool:
    """v5.1-v5.13 is_ept_sp(): cr0_wp && smap_andnot_wp (an impossible CPU combination)."""
    era = get_era(era)
    _require(era, era.ept_rule == "marker", "is_ept_sp (v5.1-v5.13 only)")
    f = era.base.unpack(uint("word", word, 32))
    return bool(f["cr0_wp"] and f["smap_andnot_wp"])


def identify_nested_ept(era, word: int) -> tuple:
    """How the era could tell a nested-EPT SP from ``word``: (verdict, reason).

    verdict is "nested-ept", "not-nested-ept" or "ambiguous"."""
    era = get_era(era)
    word = uint("word", word, 32)
    f = era.base.unpack(word)
    if not f.get("guest_mode", 0):
        return ("not-nested-ept", "guest_mode=0 (or the era has no guest_mode bit)")
    if f["direct"]:
        return ("not-nested-ept", "direct page")
    if era.ept_rule == "marker":
        if f["cr0_wp"] and f["smap_andnot_wp"]:
            return ("nested-ept", "is_ept_sp: cr0_wp=1 with smap_andnot_wp=1 (v5.1-v5.13 marker)")
        return ("not-nested-ept", "no cr0_wp+smap_andnot_wp marker")
    if era.ept_rule == "clean":
        legacy = [n for n in (era.nx, "cr0_wp", "smep_andnot_wp", "smap_andnot_wp") if f[n]]
        if legacy:
            return ("not-nested-ept", f"nested-EPT roles clear {', '.join(legacy)}")
        if gpte_bytes(era, word) == 4:
            return ("not-nested-ept", "4-byte gptes")
        if f.get("passthrough"):
            return ("not-nested-ept", "passthrough (nested NPT only)")
        why = ("guest_mode with all paging bits clear; a nested-NPT SP for an L1 with CR0.WP=0, "
               "EFER.NX=0 has the same bits (VMX and SVM never share a VM)")
        return ("ambiguous", why)
    return ("ambiguous", "no marker in this era: nested-EPT roles inherit L1's TDP paging bits")


_SP_KIND = ("sp", "root", "cpu")


def check_role_word(era, word: int, kind: str = "sp") -> list:
    """Rules a role word breaks, as a list of (code, message); [] when it is possible.

    kind: "sp" (a shadow page's role), "root" (a root role), "cpu" (a kvm_cpu_role base)."""
    era = get_era(era)
    kind = choice("kind", kind, _SP_KIND)
    word = uint("word", word, 32)
    out = []
    extra = word & ~era.base.used_mask
    if extra:
        out.append(("reserved", f"bits {extra:#x} are outside every field of {era.name}"))
    f = era.base.unpack(word)
    lvl = f["level"]
    if lvl > 5 or (lvl == 0 and kind != "cpu"):
        out.append(("level", f"level {lvl}: a shadow page is level 1..5"))
    if kind == "cpu" and lvl == 0 and not f["direct"]:
        out.append(("level", "cpu role with level 0 (CR0.PG=0) must be direct"))
    four = gpte_bytes(era, word) == 4
    if f["quadrant"]:
        if era.bit4 == "has_4_byte_gpte" and not four:
            out.append(("quadrant", "quadrant without has_4_byte_gpte"))
        elif era.bit4 != "has_4_byte_gpte" and not four and not f["direct"]:
            out.append(("quadrant", f"quadrant with 8-byte gptes ({era.bit4}=1)"))
        if lvl == 1 and f["quadrant"] > 1:
            out.append(("quadrant", f"quadrant {f['quadrant']} at level 1 (only 0 or 1)"))
        if lvl > 2:
            out.append(("quadrant", f"quadrant at level {lvl} (only levels 1 and 2)"))
    if era.bit4 == "has_4_byte_gpte" and four and lvl > 2:
        out.append(("gpte", f"4-byte gptes at level {lvl}: 32-bit paging has 2 levels"))
    if kind == "root" and f["direct"] and era.bit4 == "has_4_byte_gpte" and four:
        out.append(("gpte", "direct root with has_4_byte_gpte (mmu_alloc_root WARNs)"))
    if f["direct"] and era.direct_bit4 is not None and f[era.bit4] != era.direct_bit4 and kind == "sp":
        out.append(("direct-bit4", f"direct SP with {era.bit4}={f[era.bit4]}: kvm_mmu_get_page "
                    f"forces {era.direct_bit4}, so no stored SP has this word"))
    if f["cr0_wp"] and f["smep_andnot_wp"]:
        out.append(("impossible", "cr0_wp=1 with smep_andnot_wp=1"))
    if f["cr0_wp"] and f["smap_andnot_wp"]:
        if era.ept_rule == "marker" and f.get("guest_mode") and not f["direct"]:
            pass  # the v5.1-v5.13 nested-EPT marker
        else:
            out.append(("impossible", "cr0_wp=1 with smap_andnot_wp=1"
                        + (" (the nested-EPT marker needs guest_mode=1, direct=0)"
                           if era.ept_rule == "marker" else
                           " (the v5.1-v5.13 nested-EPT marker; not produced in this era)")))
    if f.get("passthrough") and not f.get("guest_mode"):
        out.append(("passthrough", "passthrough roots exist only for nested NPT (guest_mode=1)"))
    if f.get("passthrough") and kind == "sp" and lvl < 4:
        out.append(("passthrough", f"passthrough at level {lvl}: only a 5-level host root"))
    if f.get("is_mirror") and not f["direct"]:
        out.append(("mirror", "is_mirror on an indirect page (mirror roots are TDP MMU roots)"))
    if f["smm"] > 1:
        out.append(("smm", f"smm={f['smm']}: only address spaces 0 and 1 exist"))
    if f["invalid"] and kind != "sp":
        out.append(("invalid", "invalid is never set in a computed role"))
    return out


def _states(smm_values=(False,)) -> Iterable[VcpuState]:
    for mode, wp, nx, smep, smap, smm in itertools.product(
            ("long", "pae", "32"), (False, True), (False, True), (False, True), (False, True),
            smm_values):
        base = {"long": VcpuState.long_mode, "pae": VcpuState.pae, "32": VcpuState.nonpae32}[mode]
        yield base(cr0_wp=wp, efer_nx=nx, cr4_smep=smep, cr4_smap=smap, smm=smm)


def find_collisions(era) -> dict:
    """Role words that both a nested-EPT root and a non-nested-EPT guest-mode root can have.

    Enumerates L1/L2 register states (paging mode, CR0.WP, EFER.NX, SMEP, SMAP), A/D on/off,
    and compares every nested-EPT root word with every L2 shadow root word (KVM shadowing L2
    because L1 does not use EPT) and, for v5.19+, nested-NPT roots.  Returns
    ``{word: (ept_example, other_example)}``."""
    era = get_era(era)
    _require(era, era.ept_rule is not None, "find_collisions (v4.20+)")
    ept = {}
    for v in _states():
        for ad in (False, True):
            w = kvm_calc_shadow_ept_root_page_role(era, v, accessed_dirty=ad).base
            ept.setdefault(w, ("nested EPT", v, ad))
    other = {}
    for v in _states():
        l2 = v.replace(guest_mode=True)
        for w in shadow_root_sp_roles(era, l2):
            other.setdefault(w, ("L2 shadow root", l2))
        if v.efer_lma:
            w = kvm_calc_shadow_npt_root_page_role(era, v)
            # ad_disabled of nested NPT follows the host; compare both values.
            for ad in (0, 1):
                f = era.base.unpack(w)
                f["ad_disabled"] = ad
                other.setdefault(era.base.pack(f), ("nested NPT root (SVM)", v))
    return {w: (ept[w], other[w]) for w in sorted(set(ept) & set(other))}

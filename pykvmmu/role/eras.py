"""Role-word layouts (bit-fields of ``union kvm_mmu_page_role``, ``kvm_mmu_extended_role`` and
``kvm_cpu_role``) and the kernel eras (:class:`RoleEra`) that select them and the role rules."""
from __future__ import annotations

import copy
import enum
import operator
from collections import namedtuple
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from .. import _par
from .. import isa as _isa
from .._batch import in_array, out_array, ptr_at, uint
from .._check import boolean, in_range
from .._memo import bounded_put
from .._ffi import ffi, lib
from ..errors import InputError, ProfileError, rule_texts
from ..profile import lookup_named


ACC_EXEC, ACC_WRITE, ACC_USER, ACC_ALL = 1, 2, 4, 7
PT32_ROOT_LEVEL, PT32E_ROOT_LEVEL, PT64_ROOT_4LEVEL, PT64_ROOT_5LEVEL = 2, 3, 4, 5

#: v4.20-v5.6 opt-in mask ANDed into stored MMU roles (fact sheet 1.4).
MMU_BASE_ROLE_MASK = 0xFF03F010
#: v5.7-~v6.4 kvm_mmu_pte_write role_ign (level, access, quadrant, invalid).
ROLE_IGN_MASK = 0x00000F6F
#: newest kvm_sync_page_check sync_role_ign (level, access, quadrant, passthrough).
SYNC_ROLE_IGN_MASK = 0x0004076F
#: A shadow page's level: PG_LEVEL_4K .. PT64_ROOT_MAX_LEVEL.
SP_LEVEL_MIN, SP_LEVEL_MAX = 1, 5
#: The highest level pack() takes (PT64_ROOT_MAX_LEVEL; 0 is a CR0.PG=0 kvm_cpu_role's).
PACK_LEVEL_MAX = 5
#: pack()'s limits below a field's width, as kvmmu_role_pack_named specs carry them.
PACK_LIMITS = {"level": PACK_LEVEL_MAX}
_U64_MASK = (1 << 64) - 1
#: Bounded memo (layout, word) -> fields of RoleLayout.unpack (callers get copies); module
#: state, so object snapshots (_check.snapshot) never see it.
_UNPACK_MEMO_MAX = 1 << 12
_UNPACKED: dict = {}
#: pack(), pack_ext(), RoleLayout.pack: up to this many fields a Python loop (pack_small) is
#: cheaper than the C call's setup (pack_many); interleaved CPU time as shares of the
#: reference's pack_role: 2 fields 0.31 vs 0.60, 5 fields 0.56 vs 0.72.
_PY_PACK_MAX = 6
#: Bounded memo (key: the layout or era and the field names) -> the spec of
#: kvmmu_role_pack_named (pack_spec): which names a scalar pack call gives, never their values.
_PACK_SPEC_MAX = 1 << 12
_PACK_SPEC: dict = {}
_pack_named = lib.kvmmu_role_pack_named
_REFUSED, _SPEC_END = lib.KVMMU_ROLE_REFUSED, lib.KVMMU_ROLE_SPEC_END


def _spec(lay: "RoleLayout", parts, limits: dict | None = None) -> bytes | None:
    """The kvmmu_role_pack_named spec of ``parts`` (pairs: index getter into ``lay``, names):
    per name its field index and its largest value (the field's mask, lowered to
    ``limits[name]`` where given), then the end byte.  None for an unknown name, or a layout
    whose refusal word (all ones) could be a word."""
    if not lay._unused:
        return None
    spec = bytearray()
    try:
        for ig, names in parts:
            for name in names:
                k = ig(name)
                top = lay._spec[k][2]
                spec += bytes((k, top if limits is None else min(top, limits.get(name, top))))
    except (KeyError, TypeError):   # not a field name (TypeError: unhashable)
        return None
    spec.append(_SPEC_END)
    return bytes(spec)


def pack_spec(key, lay: "RoleLayout", parts, limits: dict | None = None) -> bytes | None:
    """:func:`_spec`, memoised under ``key`` (nothing is memoised for None)."""
    spec = _spec(lay, parts, limits)
    return None if spec is None else bounded_put(_PACK_SPEC, _PACK_SPEC_MAX, key, spec)


def pack_many(lay: "RoleLayout", fields: dict, spec_all: bytes | None, owner, limits=None):
    """The word of ``fields`` (more than a few) in one kvmmu_role_pack_named call, or None
    for the caller's full checks.  Every field of ``lay`` (in any order): their values in the
    layout's order with ``spec_all`` (its spec, with the caller's limits); fewer: the spec of
    the dict's names (:func:`_spec` with ``limits``), memoised under ``(owner, names)``."""
    if len(fields) == lay._nall:
        spec = spec_all
        try:
            v = bytes(lay._getall(fields))
        except Exception:       # a field missing (an unknown name instead), a value no int 0..255
            return None
    else:
        names = tuple(fields)
        key = (owner, names)
        spec = _PACK_SPEC.get(key) or pack_spec(key, lay, ((lay._ig, names),), limits)
        if spec is None:        # an unknown name
            return None
        try:
            v = bytes(fields.values())
        except Exception:       # a value that is no int 0..255
            return None
    w = _pack_named(lay._c, spec, v, len(v))
    return None if w == _REFUSED else w


def pack_small(sl: dict, values: dict):
    """The word of a few plain fields (``sl``: name -> (shift, end), end = one past the
    largest value), or None for an unknown name or a value that is no int below its end
    (the caller's full checks then decide)."""
    w = 0
    for k, v in values.items():
        t = sl.get(k)
        if t is None or v.__class__ is not int or not 0 <= v < t[1]:
            return None
        w |= v << t[0]
    return w


class RoleFieldError(InputError):
    """A role field value that does not fit its bit-field, or an unknown field name."""


_ERRS = rule_texts("role")


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

    #: kvm_cpu_role layouts only (set by _cpu_layout): ext field name -> index in this layout.
    _ext_ig: Callable[[str], int]

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
        # Scalar fast paths: field name -> index (KeyError: not a field), (name, shift, mask)
        # per field, the word bound and the bits no field uses (kvmmu_role_pack_named's
        # refusal, all ones, has some of them; a layout using all 64 bits takes the full path).
        self._ig = self.index.__getitem__
        self._spec = tuple((f.name, f.shift, (1 << f.width) - 1) for f in self.fields)
        self._sl = {f.name: (f.shift, 1 << f.width) for f in self.fields}
        self._end = 1 << word_bits
        self._unused = ~self.used_mask & _U64_MASK
        # every field at once (pack_many): kvmmu_role_pack_named's spec of the fields in the
        # layout's order (None: see _spec), their values in that order from a dict, their
        # count (-1: never all at once)
        self._names = tuple(f.name for f in self.fields)
        self._spec_all = _spec(self, ((self._ig, self._names),))
        self._getall = operator.itemgetter(*self._names)
        self._nall = len(self._names) if self._spec_all is not None and len(self._names) > 1 else -1

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

    def _pack_fast(self, values: dict):
        """:meth:`pack` of a dict of plain in-range values, else None.  A few fields are
        packed here (plain ints only), more in one kvmmu_role_pack_named call."""
        if len(values) > _PY_PACK_MAX:
            return pack_many(self, values, self._spec_all, self)
        return pack_small(self._sl, values)

    def pack(self, values: dict) -> int:
        """Pack ``{field: value}`` into a word (each value must fit its field)."""
        if values.__class__ is dict:
            w = self._pack_fast(values)
            if w is not None:
                return w
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
        if word.__class__ is int and 0 <= word < self._end and (
                strict is False or strict is True and not word & self._unused):
            key = (self, word)
            f = _UNPACKED.get(key)
            if f is None:
                f = bounded_put(_UNPACKED, _UNPACK_MEMO_MAX, key, {n: word >> s & m for n, s, m in self._spec})
            return f.copy()
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

class EptRule(str, enum.Enum):
    """How an era builds the nested-EPT root role (kvm_calc_shadow_ept_root_page_role).  A
    ``str`` enum: each member equals its string value."""

    #: v4.20-v5.0: the role starts from L1's TDP base role.
    INHERIT = "inherit"
    #: v5.1-v5.13: marked with cr0_wp=1 + smap_andnot_wp=1 (what is_ept_sp tests).
    MARKER = "marker"
    #: v5.14+: no marker; CR0/CR4 bits ignored.
    CLEAN = "clean"

    def __str__(self) -> str:
        return self.value


class PrevRootsRule(str, enum.Enum):
    """Which prev_roots cache an era has (fact sheet section 4; pykvmmu.prevroots).  A ``str``
    enum: each member equals its string value."""

    #: cached_root_available() (v4.19-v5.6): the current root rotates through the cache.
    V4_19 = "v4.19"
    #: as V4_19, but the current root is checked first and direct MMUs ignore pgd.
    V5_7 = "v5.7"
    #: cached_root_find_and_keep_current() / cached_root_find_without_current().
    V5_19 = "v5.19"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, eq=False)
class RoleEra:
    """One kernel era of the role word: layouts plus the rule switches of the era."""

    if TYPE_CHECKING:   # not fields (nor in __dataclass_fields__): the bit positions of the
        _sh: ClassVar[Any]      # fields the role computations set, per instance (__post_init__)
        _xsh: ClassVar[Any]
        _cpu: ClassVar[Any]     # the kvm_cpu_role layout (None without an ext layout)
        _psl: ClassVar[Any]     # pack()'s field name -> (shift, end): base._sl, level 0..5
        _pspec: ClassVar[Any]   # pack()'s spec of every base field (level 0..5), in order

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
    #: Nested EPT root role rule (:class:`EptRule`): None (not modelled), INHERIT (v4.20-v5.0:
    #: L1's TDP base), MARKER (v5.1-v5.13: cr0_wp=1 + smap_andnot_wp=1), CLEAN (v5.14+).
    ept_rule: EptRule | None
    #: The stored MMU role is ANDed with MMU_BASE_ROLE_MASK (v4.20-v5.6).
    masks_mmu_role: bool
    #: prev_roots flavour (:class:`PrevRootsRule`): None (no cache), V4_19 (cached_root_available),
    #: V5_7 (current root first, pgd ignored for direct), V5_19 (find-and-keep-current/without).
    prev_roots: PrevRootsRule | None
    #: kvm_cpu_role exists (v5.19+; before it the same shape was union kvm_mmu_role).
    has_cpu_role: bool
    notes: tuple = field(default=(), compare=False)

    def __post_init__(self):
        # Not fields: the kvm_cpu_role layout (pack_cpu_role's fast path) and the shifts the
        # role computations (:mod:`.compute`) build words with.
        object.__setattr__(self, "_cpu", None if self.ext is None else _cpu_layout(self, self.ext))
        object.__setattr__(self, "_psl", {n: (sh, min(end, PACK_LIMITS.get(n, end - 1) + 1))
                                          for n, (sh, end) in self.base._sl.items()})
        object.__setattr__(self, "_pspec", _spec(self.base, ((self.base._ig, self.base._names),),
                                                 PACK_LIMITS))
        object.__setattr__(self, "_sh", _shifts(_BaseShifts, self.base, nx=self.nx, bit4=self.bit4))
        object.__setattr__(self, "_xsh", None if self.ext is None else _shifts(_ExtShifts, self.ext))

    @property
    def cpu_role(self) -> RoleLayout | None:
        """The ``kvm_cpu_role`` layout (base word, then ``ext_`` fields at bit 32), or None."""
        return self._cpu

    def __str__(self) -> str:
        return f"{self.name} ({self.kernels})"

    def has(self, name: str) -> bool:
        return name in self.base.index


#: A field the era's layout lacks gets this shift: its bit lands above the 32-bit word and a
#: computation's final ``& 0xFFFFFFFF`` drops it (as packing only the era's fields would).
_ABSENT = 32
_BaseShifts = namedtuple("_BaseShifts", "level bit4 quadrant direct access invalid nx cr0_wp smep_andnot_wp "
                         "smap_andnot_wp ad_disabled guest_mode passthrough is_mirror smm")
_ExtShifts = namedtuple("_ExtShifts", "valid execonly cr0_pg cr4_pae cr4_pse cr4_pke cr4_smap cr4_smep "
                        "cr4_la57 efer_lma maxphyaddr")


def _shifts(rec, layout: RoleLayout, **names):
    """``rec`` of the layout's field shifts (``names``: the era's name of a generic field)."""
    sh = {f.name: f.shift for f in layout.fields}
    return rec(*(sh.get(names.get(n, n), _ABSENT) for n in rec._fields))


def _cpu_layout(era: RoleEra, ext: RoleLayout) -> RoleLayout:
    """The era's kvm_cpu_role layout, built once per era object (in its __post_init__) from
    its own layouts, so an era replaced under the same name gets its own."""
    fields = [(f.name, f.shift, f.width) for f in era.base.fields]
    fields += [("ext_" + f.name, 32 + f.shift, f.width) for f in ext.fields]
    lay = RoleLayout(f"kvm_cpu_role {era.name}", fields, 64)
    nb = len(era.base.fields)
    lay._ext_ig = {f.name: nb + i for i, f in enumerate(ext.fields)}.__getitem__
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
_era("v4.18", "v4.18-v4.19", "cr4_pae", "nxe", None, direct_bit4=0, prev_roots=PrevRootsRule.V4_19,
     notes=("guest_mode added (1313cc2bd8f6); the prev_roots cache exists from v4.19",))
_era("v4.20", "v4.20", "cr4_pae", "nxe", "v4.20", direct_bit4=0, common_sets_pae=True,
     has_role_common=True, ept_rule=EptRule.INHERIT, masks_mmu_role=True, prev_roots=PrevRootsRule.V4_19,
     notes=("kvm_calc_mmu_role_common (7dcd57552008) sets cr4_pae in every MMU role; "
            "kvm_mmu_get_page still clears it on direct pages: the prev_roots NPT bug",))
_era("v5.0", "v5.0", "cr4_pae", "nxe", "v5.0", direct_bit4=0, common_sets_pae=True,
     has_role_common=True, ept_rule=EptRule.INHERIT, masks_mmu_role=True, prev_roots=PrevRootsRule.V4_19,
     notes=("as v4.20, plus ext.maxphyaddr:6 (de3ccd26fafc, 5.0-rc8)",))
_era("v5.0-fix", "v5.0 + 'make mmu->prev_roots cache work for NPT case' (v1)", "cr4_pae", "nxe",
     "v5.0", direct_bit4=0, common_sets_pae=False, has_role_common=True, ept_rule=EptRule.INHERIT,
     masks_mmu_role=True, prev_roots=PrevRootsRule.V4_19,
     notes=("Vitaly Kuznetsov's fix: cr4_pae only in the shadow MMU's root role "
            "(which patch was merged upstream is an open item)",))
_era("v5.1", "v5.1-v5.8", "gpte_is_8_bytes", "nxe", "v5.1", direct_bit4=1, has_role_common=True,
     ept_rule=EptRule.MARKER, masks_mmu_role=True, prev_roots=PrevRootsRule.V4_19,
     notes=("47c42e6b4192: cr4_pae -> gpte_is_8_bytes, forced to 1 on direct pages; nested EPT "
            "marked with cr0_wp=1 + smap_andnot_wp=1 (is_ept_sp)",
            "prev_roots: v5.7 and v5.8 already use the 'v5.7' rules (era granularity)"))
_era("v5.9", "v5.9-v5.13", "gpte_is_8_bytes", "nxe", "v5.9", direct_bit4=1, has_role_common=True,
     ept_rule=EptRule.MARKER, prev_roots=PrevRootsRule.V5_7,
     notes=("ext without cr4_la57; mmu_base_role_mask replaced by role_ign (E8, v5.7)",))
_era("v5.14", "v5.14-v5.16", "gpte_is_8_bytes", "efer_nx", "v5.14", direct_bit4=1,
     has_role_common=True, ept_rule=EptRule.CLEAN, prev_roots=PrevRootsRule.V5_7,
     notes=("nxe -> efer_nx; is_ept_sp marker removed (00a669780ffa); nested EPT ignores CR0/CR4 "
            "bits (cd6767c334b6); ext gains efer_lma, loses maxphyaddr [approx order]",))
_era("v5.17", "v5.17-v5.18", "has_4_byte_gpte", "efer_nx", "v5.14", direct_bit4=None,
     has_role_common=True, ept_rule=EptRule.CLEAN, prev_roots=PrevRootsRule.V5_7,
     notes=("bb3b394d35e8: gpte_is_8_bytes -> has_4_byte_gpte, sense inverted",))
_era("v5.19", "v5.19-v6.13", "has_4_byte_gpte", "efer_nx", "v5.19", passthrough=True,
     direct_bit4=None, forced_wp_nx=True, ept_rule=EptRule.CLEAN, prev_roots=PrevRootsRule.V5_19,
     has_cpu_role=True,
     notes=("passthrough (Lai Jiangshan, 2022) [approx release]; kvm_cpu_role split; TDP roles "
            "force cr0_wp = efer_nx = 1 [approx release]; child role derived from the parent "
            "(~v6.0)",))
_era("v6.14", "v6.14 and later", "has_4_byte_gpte", "efer_nx", "v5.19", passthrough=True,
     mirror=True, direct_bit4=None, forced_wp_nx=True, ept_rule=EptRule.CLEAN, prev_roots=PrevRootsRule.V5_19,
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
    return in_range(name, level, SP_LEVEL_MIN, SP_LEVEL_MAX, "PG_LEVEL_4K..PT64_ROOT_MAX_LEVEL")


def _tdp_level(level, name: str = "tdp_level") -> int:
    """A TDP root level: 4 or 5 (PT64_ROOT_4LEVEL / PT64_ROOT_5LEVEL)."""
    return in_range(name, level, 4, 5, "TDP tables have 4 or 5 levels")


def _require(era: RoleEra, ok: bool, what: str):
    if not ok:
        raise ProfileError(f"{what}: not available in role era {era}")

"""Role records and packing: ``Role`` / ``CpuRole``, scalar and batch pack/unpack per era (C core
``csrc/role.c``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from .._batch import uint
from .._check import boolean, in_range
from .._memo import bounded_put
from ..errors import InputError, ProfileError
from .eras import (ERAS, PACK_LEVEL_MAX, PACK_LIMITS, _PACK_SPEC, _PY_PACK_MAX, _REFUSED, _pack_named, _require,
                   get_era, pack_many, pack_small, pack_spec, RoleEra, RoleFieldError, RoleLayout)

_U32_END = 1 << 32
_U64_END = 1 << 64
#: pack(): the level a role may hold (0 only in a kvm_cpu_role, CR0.PG=0).
_PACK_LEVEL = (0, PACK_LEVEL_MAX, "0 (CR0.PG=0 cpu_role) or PG_LEVEL_4K..PT64_ROOT_MAX_LEVEL")


# ---------------------------------------------------------------------------
# Records and scalar packing
# ---------------------------------------------------------------------------

_ACCESS_STR = ("---", "--x", "w--", "w-x", "-u-", "-ux", "wu-", "wux")


def gpte_bytes(era, word: int) -> int:
    """Guest PTE size (4 or 8) that bit 4 states, under the era's sense of bit 4."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if not (word.__class__ is int and 0 <= word < _U32_END):
        word = uint("word", word, 32)
    b4 = (word >> 4) & 1
    if era.bit4 == "has_4_byte_gpte":
        return 4 if b4 else 8
    return 8 if b4 else 4


class Role:
    """A decoded page role word: ``role.level``, ``role['direct']``, ``str(role)``.

    ``fields`` (the field dict) may be given as None: it is then decoded from the word on
    first use."""

    __slots__ = ("era", "word", "_fields")

    def __init__(self, era: RoleEra, word: int, fields: dict | None):
        self.era, self.word, self._fields = era, word, fields

    @property
    def fields(self) -> dict:
        f = self._fields
        if f is None:
            f = self._fields = self.era.base.unpack(self.word)
        return f

    def __getattr__(self, name):
        if name[:1] == "_" or name == "fields":
            raise AttributeError(name)
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


def pack(era, values: dict | None = None, /, **fields) -> int:
    """Pack named fields into ``kvm_mmu_page_role.word`` under the era's layout.

    The fields come as keywords, ``pack(era, level=1, direct=1)``, or as one dict,
    ``pack(era, {"level": 1, "direct": 1})`` (the same rules; cheaper: no keyword arguments
    to build), not both.  A field the era lacks raises ProfileError; a value wider than its
    field raises RoleFieldError.  ``gpte_bytes=4|8`` sets bit 4 with the era's sense.
    """
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if values is not None:
        fields = values if values.__class__ is dict and not fields else _fields_arg(values, fields)
    # Fast paths: a few plain ints here, more fields in one kvmmu_role_pack_named call (names,
    # values and the level rule); anything refused takes the full checks, which raise or
    # handle the aliases.
    if len(fields) <= _PY_PACK_MAX:
        w = pack_small(era._psl, fields)
        if w is not None:
            return w
    else:
        w = pack_many(era.base, fields, era._pspec, era, PACK_LIMITS)
        if w is not None:
            return w
    return _pack_full(era, dict(fields))     # a copy: never change the caller's dict


def _pack_full(era: RoleEra, fields: dict) -> int:
    """pack() with every check (the aliases, the level rule, unknown names); ``fields`` is
    changed."""
    g = fields.pop("gpte_bytes", None)
    if "level" in fields:
        fields["level"] = in_range("level", fields["level"], *_PACK_LEVEL, err=RoleFieldError)
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


def _fields_arg(values, fields: dict) -> dict:
    """The field dict of ``pack(era, values)`` / ``pack_ext(era, values)`` (a dict, and no
    keyword fields with it)."""
    if not isinstance(values, dict):
        raise InputError(f"values={values!r}: expected a dict of field values")
    if fields:
        raise InputError(f"values and keyword fields {', '.join(fields)}: give the fields as "
                         "one dict or as keywords, not both")
    return values if values.__class__ is dict else dict(values)


def unpack(era, word: int, strict: bool = False) -> Role:
    """Decode a role word into a readable :class:`Role` (strict: refuse unused bits)."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if word.__class__ is int and 0 <= word < _U32_END and (
            strict is False or strict is True and not word & era.base._unused):
        return Role(era, word, None)
    return Role(era, uint("word", word, 32), era.base.unpack(word, boolean("strict", strict)))


def pack_batch(era, fields: np.ndarray, out=None, threads: int | None = None) -> np.ndarray:
    """Batch pack: a structured array of ``role_dtype(era)`` (or uint8 (n, 16)) to uint32 words."""
    return get_era(era).base.pack_batch(fields, out, threads)


def unpack_batch(era, words: np.ndarray, out=None, strict: bool = True,
                 threads: int | None = None) -> np.ndarray:
    """Batch unpack: uint32 words to a structured array (one uint8 per field)."""
    return get_era(era).base.unpack_batch(words, out, strict, threads)


def pack_ext(era, values: dict | None = None, /, **fields) -> int:
    """Pack named fields into ``kvm_mmu_extended_role.word`` (keywords or one dict, as
    :func:`pack`)."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if values is not None:
        fields = values if values.__class__ is dict and not fields else _fields_arg(values, fields)
    lay = era.ext
    if lay is not None and len(fields) <= _PY_PACK_MAX:     # fast paths, as in pack()
        w = pack_small(lay._sl, fields)
        if w is not None:
            return w
    elif lay is not None:
        w = pack_many(lay, fields, lay._spec_all, lay)
        if w is not None:
            return w
    _require(era, lay is not None, "kvm_mmu_extended_role")
    return lay.pack(dict(fields))


def unpack_ext(era, word: int, strict: bool = False) -> dict:
    if era.__class__ is not RoleEra:
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
        ext = self.era.ext.unpack(self.ext) if self.era.ext is not None else {}
        on = [k for k, v in ext.items() if v and k != "maxphyaddr"]
        if ext.get("maxphyaddr"):
            on.append(f"maxphyaddr={ext['maxphyaddr']}")
        return f"{self.as_u64:#018x} base {unpack(self.era, self.base)} ext {' '.join(on)}"


def pack_cpu_role(era, base: dict, ext: dict) -> int:
    if era.__class__ is not RoleEra:
        era = get_era(era)
    cpu = era._cpu
    if cpu is not None and base.__class__ is dict and ext.__class__ is dict:
        # one kvmmu_role_pack_named call: base fields keep their index in kvm_cpu_role, ext
        # fields follow (so the two layouts' orders make the cpu layout's, as pack_many)
        b, x = era.base, era.ext
        if len(base) == b._nall and len(ext) == x._nall:
            spec = cpu._spec_all
            try:
                v = bytes(b._getall(base) + x._getall(ext))
            except Exception:       # a field missing (an unknown name instead), a value no int 0..255
                spec = None
        else:
            bn, xn = tuple(base), tuple(ext)
            key = (cpu, bn, xn)
            spec = _PACK_SPEC.get(key) or pack_spec(key, cpu, ((b._ig, bn), (cpu._ext_ig, xn)))
            if spec is not None:
                try:
                    v = bytes([*base.values(), *ext.values()])
                except Exception:   # a value that is no int 0..255
                    spec = None
        if spec is not None:
            w = _pack_named(cpu._c, spec, v, len(v))
            if w != _REFUSED:
                return w
    return _pack_cpu_role_full(era, base, ext)


def _pack_cpu_role_full(era: RoleEra, base, ext) -> int:
    """pack_cpu_role() with every check."""
    _require(era, era.ext is not None, "kvm_cpu_role / kvm_mmu_role")
    for n, d in (("base", base), ("ext", ext)):
        if not isinstance(d, dict):
            raise InputError(f"{n}={d!r}: expected a dict of field values")
    vals = dict(base)
    vals.update({"ext_" + k: v for k, v in ext.items()})
    return cast(RoleLayout, era.cpu_role).pack(vals)     # era.ext is set: so is its cpu_role


#: Bounded memo (era, as_u64) -> CpuRole of unpack_cpu_role (exact ints only; CpuRoles are
#: immutable, so callers may share them); module state, invisible to object snapshots.
_CPU_ROLES_MAX = 1 << 12
_CPU_ROLES: dict = {}


def unpack_cpu_role(era, as_u64: int) -> CpuRole:
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if as_u64.__class__ is int:
        key = (era, as_u64)
        r = _CPU_ROLES.get(key)
        if r is not None:
            return r
    if era.ext is None:
        _require(era, False, "kvm_cpu_role / kvm_mmu_role")
    if as_u64.__class__ is int and 0 <= as_u64 < _U64_END:
        return bounded_put(_CPU_ROLES, _CPU_ROLES_MAX, key, _cpu_role(era, as_u64 & 0xFFFFFFFF, as_u64 >> 32))
    v = uint("as_u64", as_u64, 64)
    return _cpu_role(era, v & 0xFFFFFFFF, v >> 32)


_new, _setattr = object.__new__, object.__setattr__


def _cpu_role(era: RoleEra, base: int, ext: int) -> CpuRole:
    """``CpuRole(era, base, ext)`` of checked values, without the frozen dataclass's
    per-field ``object.__setattr__`` (the same instance state)."""
    r = _new(CpuRole)
    _setattr(r, "__dict__", {"era": era, "base": base, "ext": ext})
    return r


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

"""Pure-Python reference model of the SEV-SNP RMP (no pykvmmu._core import).

Written for clarity from shared/spec/rmp-private-memory.md sections 1-3 and the
readings in docs/rmp.md.  Entries are plain ints: ``RefRmp.e[pfn] = [lo, hi]``
for pfn in [0, nr_pfns); pfns at or beyond nr_pfns are not covered.  Flags use
the same bit values as pykvmmu.rmp.RmpFlags (repeated here so that this module
stays independent of the C core).
"""
from __future__ import annotations

# flags
HOST_IMMUTABLE, OVERLAP_RC7, MIDDLE_FULL, PVALIDATE_VMPL_GP, ALWAYS_RESET = 1, 2, 4, 8, 16
# return codes
SUCCESS, FAIL_INPUT, FAIL_PERMISSION, FAIL_INUSE, FAIL_OVERLAP = 0, 1, 2, 3, 4
FAIL_SIZEMISMATCH, FAIL_BADADDR, NOUPDATE, NPF, VC, GP = 6, 7, 255, 256, 257, 258
# checks
OK, COVERED, HV_OWNED, GUEST_OWNED, REVERSE_MAP, MUTABLE, PAGE_SIZE, VALIDATED, VMPL = range(9)
# access kinds
READ, WRITE, FETCH, PT_READ, PT_WRITE = range(5)
# page states (AMD firmware numbering)
(S_INVALID, S_DEFAULT, S_HYPERVISOR, S_HV_FIXED, S_FIRMWARE, S_FIRMWARE_IOMMU, S_RECLAIM,
 S_CONTEXT, S_METADATA, S_PRE_GUEST, S_PRE_SWAP, S_GUEST_INVALID, S_GUEST_VALID) = range(13)

VC_NOT_VALIDATED = 0x404
BIT = lambda n: 1 << n  # noqa: E731


def field(lo: int, name: str) -> int:
    """One field of the first quadword, by the fact sheet's table 1.1."""
    pos = {"assigned": (0, 1), "pagesize": (1, 1), "immutable": (2, 1), "subpage_count": (3, 9),
           "gpa": (12, 39), "asid": (51, 10), "vmsa": (61, 1), "validated": (62, 1),
           "lock": (63, 1)}[name]
    return (lo >> pos[0]) & ((1 << pos[1]) - 1)


def put(lo: int, name: str, value: int) -> int:
    pos = {"assigned": (0, 1), "pagesize": (1, 1), "immutable": (2, 1), "subpage_count": (3, 9),
           "gpa": (12, 39), "asid": (51, 10), "vmsa": (61, 1), "validated": (62, 1),
           "lock": (63, 1)}[name]
    mask = ((1 << pos[1]) - 1) << pos[0]
    return (lo & ~mask) | ((value << pos[0]) & mask)


def perm(hi: int, vmpl: int) -> int:
    return (hi >> (8 * vmpl)) & 0xFF


def state_of(lo: int) -> int:
    """The firmware page-state table, rows tried in the firmware's order."""
    a, v, im = field(lo, "assigned"), field(lo, "validated"), field(lo, "immutable")
    asid, gpa, vmsa, lock = field(lo, "asid"), field(lo, "gpa"), field(lo, "vmsa"), field(lo, "lock")
    gstate, gplain = gpa >> 36, gpa & ~(7 << 36)
    rows = [
        (a == 0 and v == 0 and asid == 0 and im == 0, S_HYPERVISOR),
        (a == 0 and v == 0 and asid == 0 and im == 1, S_HV_FIXED),
        (a == 1 and v == 0 and asid == 0 and im == 1 and gpa == 0 and vmsa == 0, S_FIRMWARE),
        (a == 1 and v == 0 and asid == 0 and im == 0 and lock == 0, S_RECLAIM),
        (a == 1 and v == 0 and asid == 0 and im == 1 and gpa == 0 and vmsa == 1, S_CONTEXT),
        (a == 1 and v == 0 and asid == 0 and im == 1 and gplain > 0 and gstate == 1, S_METADATA),
        (a == 1 and v == 0 and asid > 0 and im == 1, S_PRE_GUEST),
        (a == 1 and v == 1 and asid > 0 and im == 1, S_PRE_SWAP),
        (a == 1 and v == 0 and asid > 0 and im == 0, S_GUEST_INVALID),
        (a == 1 and v == 1 and asid > 0 and im == 0, S_GUEST_VALID),
        (a == 1 and v == 0 and asid == 0 and im == 1 and gplain == 1 and gstate == 2 and vmsa == 0,
         S_FIRMWARE_IOMMU),
    ]
    for cond, st in rows:
        if cond:
            return st
    return S_INVALID


def table_bytes(mem_bytes: int) -> int:
    return 16 * 1024 + 16 * ((mem_bytes + 4095) // 4096)


def segmented_entry_offset(rst: list, shift: int, rmp_base: int, pfn: int):
    """Segmented RMP lookup: byte offset from RMP_BASE of pfn's entry, or None (not covered)."""
    pa = pfn << 12
    idx = pa >> shift
    if idx >= len(rst):
        return None
    v = rst[idx]
    count = min((v & 0xFFFFF) << 18, 1 << (shift - 12))
    i = (pa & ((1 << shift) - 1)) >> 12
    if i >= count:
        return None
    return (v & ((1 << 52) - (1 << 20))) - rmp_base + 16 * i


class RefRmp:
    def __init__(self, nr_pfns: int, flags: int = 0):
        self.n = nr_pfns
        self.flags = flags
        self.e = [[0, 0] for _ in range(nr_pfns)]

    # ---------------------------------------------------------------- helpers
    def covered(self, pfn):
        return 0 <= pfn < self.n

    def head(self, pfn):
        return pfn - pfn % 512

    def is_2m(self, pfn):
        lo = self.e[pfn][0]
        return field(lo, "assigned") == 1 and field(lo, "pagesize") == 1

    def governing(self, pfn):
        """(pfn of the entry that decides, True if that is an assigned 2M page)."""
        h = self.head(pfn)
        return (h, True) if self.is_2m(h) else (pfn, False)

    def lookup(self, pfn):
        """snp_lookup_rmpentry -> None if out of range, else (assigned, level, asid, gpa bytes)."""
        if not self.covered(pfn):
            return None
        lo = self.e[pfn][0]
        hlo = self.e[self.head(pfn)][0]
        return (field(lo, "assigned"), 2 if field(hlo, "pagesize") else 1, field(lo, "asid"),
                field(lo, "gpa") << 12)

    def page_state(self, pfn, effective=True):
        if not self.covered(pfn):
            return S_DEFAULT
        if effective:
            pfn = self.governing(pfn)[0]
        return state_of(self.e[pfn][0])

    # ---------------------------------------------------------------- RMPUPDATE
    def _reset_needed(self, old_lo, assigned, pagesize, gfn, asid):
        if self.flags & ALWAYS_RESET:
            return True
        return (field(old_lo, "assigned"), field(old_lo, "pagesize"), field(old_lo, "gpa"),
                field(old_lo, "asid")) != (assigned, pagesize, gfn, asid)

    def _owner_entry(self, old, assigned, pagesize, immutable, gfn, asid, keep_count):
        lo = 0
        for k, v in (("assigned", assigned), ("pagesize", pagesize), ("immutable", immutable),
                     ("gpa", gfn), ("asid", asid)):
            lo = put(lo, k, v)
        if keep_count:
            lo = put(lo, "subpage_count", field(old[0], "subpage_count"))
        hi = old[1]
        if self._reset_needed(old[0], assigned, pagesize, gfn, asid):
            hi = (hi & ~0xFFFFFFFF) | (0x1F if assigned else 0)
        else:
            lo = put(lo, "validated", field(old[0], "validated"))
            lo = put(lo, "vmsa", field(old[0], "vmsa"))
        return [lo, hi]

    def rmpupdate(self, pfn, gpa, assigned, pagesize, immutable, asid):
        if not self.covered(pfn) or assigned not in (0, 1) or pagesize not in (0, 1) \
                or immutable not in (0, 1):
            return FAIL_INPUT
        if asid > 0x3FF or gpa % 4096 or gpa >> 51:
            return FAIL_INPUT
        if not assigned and asid:
            return FAIL_INPUT
        gfn = gpa >> 12
        overlap = 7 if self.flags & OVERLAP_RC7 else FAIL_OVERLAP
        h = self.head(pfn)
        if pagesize:
            if pfn != h or (assigned and gpa % (2 << 20)) or not self.covered(h + 511):
                return FAIL_INPUT
            block = range(h, h + 512)
            if any(field(self.e[p][0], "immutable") for p in block):
                return FAIL_PERMISSION
            if any(field(self.e[p][0], "lock") for p in block):
                return FAIL_INUSE
            if not self.is_2m(h) and field(self.e[h][0], "subpage_count"):
                return overlap
            self.e[h] = self._owner_entry(self.e[h], assigned, 1, immutable, gfn, asid, False)
            for i in range(1, 512):
                old = self.e[h + i]
                if self.flags & MIDDLE_FULL:
                    lo = self.e[h][0] & ~((1 << 61) | (1 << 62))
                    if assigned:
                        lo = put(lo, "gpa", gfn + i)
                    self.e[h + i] = [lo, (old[1] & ~0xFFFFFFFF) | (self.e[h][1] & 0xFFFFFFFF)]
                else:
                    self.e[h + i] = [assigned, old[1] & ~0xFFFFFFFF]
            return SUCCESS
        old = self.e[pfn]
        if field(old[0], "immutable"):
            return FAIL_PERMISSION
        if field(old[0], "lock"):
            return FAIL_INUSE
        if self.is_2m(h):
            return overlap
        was = field(old[0], "assigned")
        self.e[pfn] = self._owner_entry(old, assigned, 0, immutable, gfn, asid, pfn == h)
        if pfn != h and was != assigned:
            c = field(self.e[h][0], "subpage_count") + (1 if assigned else -1)
            self.e[h][0] = put(self.e[h][0], "subpage_count", c)
        return SUCCESS

    # ---------------------------------------------------------------- PSMASH
    def psmash(self, pfn):
        if not self.covered(pfn) or pfn % 512 or not self.covered(pfn + 511):
            return FAIL_INPUT
        if field(self.e[pfn][0], "lock"):
            return FAIL_INUSE
        if not self.is_2m(pfn):
            return FAIL_BADADDR
        lo2m, hi2m = self.e[pfn]
        for i in range(512):
            lo = put(put(lo2m, "pagesize", 0), "gpa", field(lo2m, "gpa") + i)
            lo = put(lo, "subpage_count", 511 if i == 0 else 0)
            lo = put(lo, "lock", 0)
            self.e[pfn + i] = [lo, (self.e[pfn + i][1] & ~0xFFFFFFFF) | (hi2m & 0xFFFFFFFF)]
        return SUCCESS

    # ---------------------------------------------------------------- guest instructions
    def _insn_npf(self, pfn, asid, gfn, size):
        """-> (exitinfo or 0, governing pfn, in 2M page)."""
        base = BIT(0) | BIT(31) | BIT(32) | BIT(34)
        if not self.covered(pfn):
            return base, None, False
        g, in2m = self.governing(pfn)
        lo = self.e[g][0]
        want = field(lo, "gpa") + (pfn % 512 if in2m else 0)
        if not field(lo, "assigned") or field(lo, "asid") != asid or want != gfn \
                or field(lo, "immutable"):
            return base, g, in2m
        if in2m and size == 0:
            return base | BIT(35), g, in2m
        return 0, g, in2m

    def pvalidate(self, pfn, asid, vmpl, gfn, size, validate):
        """-> (rc, exitinfo)."""
        if size not in (0, 1) or validate not in (0, 1) or vmpl > 3:
            return FAIL_INPUT, 0
        if size == 1 and (gfn % 512 or pfn % 512):
            return FAIL_INPUT, 0
        if vmpl:
            return (GP if self.flags & PVALIDATE_VMPL_GP else FAIL_PERMISSION), 0
        ei, g, in2m = self._insn_npf(pfn, asid, gfn, size)
        if ei:
            return NPF, ei
        if size == 1 and not in2m:
            return FAIL_SIZEMISMATCH, 0
        if field(self.e[g][0], "validated") == validate:
            return NOUPDATE, 0
        self.e[g][0] = put(self.e[g][0], "validated", validate)
        return SUCCESS, 0

    def rmpadjust(self, pfn, asid, vmpl, gfn, size, target_vmpl, perms, vmsa):
        if size not in (0, 1) or vmpl > 3 or target_vmpl > 3 or perms > 0xFF or perms & 0xE0 \
                or vmsa not in (0, 1):
            return FAIL_INPUT, 0
        if size == 1 and (gfn % 512 or pfn % 512):
            return FAIL_INPUT, 0
        if target_vmpl <= vmpl:
            return FAIL_PERMISSION, 0
        ei, g, in2m = self._insn_npf(pfn, asid, gfn, size)
        if ei:
            return NPF, ei
        lo, hi = self.e[g]
        if not field(lo, "validated"):
            return VC, VC_NOT_VALIDATED
        if size == 1 and not in2m:
            return FAIL_SIZEMISMATCH, 0
        if perms & ~perm(hi, vmpl):
            return FAIL_PERMISSION, 0
        sh = 8 * target_vmpl
        hi = (hi & ~(0xFF << sh)) | (perms << sh)
        if vmpl == 0:
            lo = put(lo, "vmsa", vmsa)
        self.e[g] = [lo, hi]
        return SUCCESS, 0

    # ---------------------------------------------------------------- access checks
    def hv_owned(self, pfn, level, host):
        pages = range(self.head(pfn), self.head(pfn) + 512) if level > 1 else [pfn]
        result = OK
        for p in pages:
            if not self.covered(p):
                continue
            if field(self.e[p][0], "assigned"):
                return HV_OWNED
            if host and self.flags & HOST_IMMUTABLE and field(self.e[p][0], "immutable"):
                result = MUTABLE
        return result

    def host_check(self, pfn, level, user=False):
        chk = self.hv_owned(pfn, level, True)
        return chk, ((BIT(0) | BIT(1) | (BIT(2) if user else 0) | BIT(31)) if chk else 0)

    def guest_check(self, pfn, gfn, asid, vmpl, npt_level, kind, c_bit, snp_active, user):
        """-> (check, fault or None, exitinfo)."""
        write = kind in (WRITE, PT_WRITE)
        enc = snp_active and (c_bit or kind in (FETCH, PT_READ, PT_WRITE))
        big = npt_level >= 2

        def npf_bits(encrypted):
            b = BIT(0) | BIT(31) | (BIT(1) if write else 0) | (BIT(2) if user else 0)
            b |= BIT(4) if kind == FETCH else 0
            b |= BIT(33) if kind in (PT_READ, PT_WRITE) else BIT(32)
            return b | (BIT(34) if encrypted else 0)

        if not enc:
            checked = (kind == WRITE) if snp_active else (write or kind == PT_READ)
            if checked and self.hv_owned(pfn, 2 if big else 1, False) != OK:
                return HV_OWNED, "NPF", npf_bits(False)
            return OK, None, 0
        if not self.covered(pfn):
            chk = COVERED
        else:
            g, in2m = self.governing(pfn)
            lo, hi = self.e[g]
            want = field(lo, "gpa") + (pfn % 512 if in2m else 0)
            p = perm(hi, vmpl)
            if not field(lo, "assigned") or field(lo, "asid") != asid:
                chk = GUEST_OWNED
            elif want != gfn:
                chk = REVERSE_MAP
            elif field(lo, "immutable"):
                chk = MUTABLE
            elif in2m != big:
                chk = PAGE_SIZE
            elif not field(lo, "validated"):
                chk = VALIDATED
            elif kind == FETCH and not p & (4 if user else 8):
                chk = VMPL
            elif write and (p & 3) != 3:
                chk = VMPL
            elif kind in (READ, PT_READ) and not p & 1:
                chk = VMPL
            else:
                chk = OK
        if chk == OK:
            return OK, None, 0
        if chk == VALIDATED:
            return chk, "#VC", VC_NOT_VALIDATED
        return chk, "NPF", npf_bits(True) | (BIT(35) if chk == PAGE_SIZE else 0) | \
            (BIT(36) if chk == VMPL else 0)

    # ---------------------------------------------------------------- handlers
    def user_pf(self, present, pte_pfn, level, address):
        """-> (action, pfn, rmp_level) of the v7/v8 handle_user_rmp_page_fault."""
        if not present:
            return "UNMAP", None, None
        pfn = pte_pfn
        if level > 1:
            pfn |= (address % (1 << (12 + 9 * (level - 1)))) >> 12
        r = self.lookup(pfn)
        if r is None:
            return "SIGBUS", pfn, None
        if r[0]:
            return "SIGBUS", pfn, r[1]
        return ("SPLIT" if level > r[1] else "RETRY"), pfn, r[1]

    def npf_rmp(self, gpa, pfn, is_private=True):
        """-> action of KVM's sev_handle_rmp_fault (mutates: PSMASH)."""
        if not is_private:
            return "not-private"
        r = self.lookup(pfn)
        if r is None or not r[0]:
            return "no-assigned-entry"
        if r[1] == 1:
            return "spurious"
        rc = self.psmash(pfn - pfn % 512)
        if rc:
            r2 = self.lookup(pfn)
            return "psmash-raced" if r2[0] and r2[1] == 1 else "psmash-failed"
        return "psmash"

    def max_mapping_level(self, pfn, snp=True):
        if not snp:
            return 0
        r = self.lookup(pfn)
        return r[1] if r and r[0] else 1

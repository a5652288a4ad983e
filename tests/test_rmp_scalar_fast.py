"""The RMP scalar fast paths (issue 14): plain ints and bools take one C call whose packed
result word indexes a table of prebuilt results; anything else (numpy integers here) takes
the checked path.  Both must give the same results and leave the same table, and every input
the checked path refuses must still be refused, with the same error, before anything changes."""
import decimal
import fractions
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pykvmmu.rmp as R
from pykvmmu._ffi import ffi, lib
from pykvmmu.errors import InputError
from pykvmmu.rmp import BOOKKEEPING, PTRS_PER_PMD, RmpTable

NPFN = 3 * 512 + 37                 # the table ends inside a 2M block
pfns = st.one_of(st.integers(0, NPFN + 600), st.integers(0, (1 << 64) - 1))
small = st.integers(0, 5)
flag = st.booleans()


def table(seed: int = 0) -> RmpTable:
    """2M pages, 4K pages, raw entries with arbitrary bits."""
    t = RmpTable(np.zeros(BOOKKEEPING + 16 * NPFN, np.uint8))
    rng = np.random.default_rng(seed)
    for head in (0, 1024):
        t.rmpupdate(head, gpa=head << 12, assigned=True, pagesize=1, asid=3)
    for p in rng.integers(0, NPFN, 40).tolist():
        t.rmpupdate(p, gpa=p << 12, assigned=True, asid=p % 5)
    for p in rng.integers(0, NPFN, 20).tolist():
        t.write_raw(p, int(rng.integers(0, 1 << 63)) << 1, int(rng.integers(0, 1 << 8)))
    return t


T = table()


def outcome(f, *a, **kw):
    try:
        r = f(*a, **kw)
    except Exception as e:                       # noqa: BLE001 - the error is the outcome
        return type(e), re.sub(r"np\.uint64\((\d+)\)", r"\1", str(e))   # the value as slow() passed it
    return r if not isinstance(r, tuple) else (type(r), tuple(r))


def slow(v):
    """v as a numpy integer: the same value, through the checked path."""
    return np.uint64(v) if v < 1 << 64 else v


# ------------------------------------------------------------------ fast == checked

@given(pfns, pfns, small, st.integers(0, 4), st.integers(0, 5), st.integers(0, 6), flag, flag, flag)
def test_read_only_calls_agree(pfn, gfn, asid, vmpl, npt, kind, c_bit, snp, user):
    kinds = [a.name.lower() for a in R.Access] + ["bogus"]
    kw = dict(asid=asid, vmpl=vmpl, npt_level=npt, kind=kinds[kind] if kind < 6 else kind,
              c_bit=c_bit, snp_active=snp, user=user)
    for f, a in [(T.covered, ()), (T.entry, ()), (T.snp_lookup_rmpentry, ()), (T.page_state, ()),
                 (T.host_check, (npt,)), (T.dump_rmpentry, ())]:
        assert outcome(f, pfn, *a) == outcome(f, slow(pfn), *a)
    assert outcome(T.host_check, pfn, npt, user=user) == outcome(T.host_check, slow(pfn), npt, user=user)
    assert outcome(T.guest_check, pfn, gfn, **kw) == outcome(T.guest_check, slow(pfn), slow(gfn), **kw)
    assert (outcome(R.sev_private_max_mapping_level, T, pfn, snp=snp)
            == outcome(R.sev_private_max_mapping_level, T, slow(pfn), snp=snp))
    for present in (False, True):
        uf = dict(pte_present=present, level=npt)
        assert (outcome(R.handle_user_rmp_page_fault, T, pte_pfn=pfn, address=gfn, **uf)
                == outcome(R.handle_user_rmp_page_fault, T, pte_pfn=slow(pfn), address=slow(gfn), **uf))


@given(st.integers(0, 4), st.integers(0, 300), st.integers(0, 5))
def test_max_private_level_agrees(max_level, order, hook):
    assert (outcome(R.kvm_max_private_mapping_level, max_level, order, hook)
            == outcome(R.kvm_max_private_mapping_level, slow(max_level), slow(order), hook))
    # (hook_level 0, "no limit", is the plain int 0 only: a numpy 0 is refused as a level)


@given(st.lists(st.tuples(st.integers(0, 4), pfns, small, small, small, small, flag), max_size=12),
       st.integers(0, 3))
def test_instructions_agree_and_leave_the_same_table(ops, seed):
    fast, checked = table(seed), table(seed)
    for op, pfn, a, b, c, d, bit in ops:
        calls = [
            lambda t, p: t.rmpupdate(p, gpa=(a << 21) + c, assigned=bit, pagesize=b & 1, immutable=d == 5,
                                     asid=a),
            lambda t, p: t.psmash(p),
            lambda t, p: t.pvalidate(p, asid=a, gfn=p ^ b, size=c & 1, validate=bit, vmpl=d),
            lambda t, p: t.rmpadjust(p, asid=a, gfn=p ^ b, target_vmpl=c, perms=d, size=b & 1, vmsa=bit,
                                     vmpl=a),
            lambda t, p: t.guest_check(p, p ^ b, asid=a, vmpl=c & 3, npt_level=1 + d % 3),
        ]
        assert outcome(calls[op], fast, pfn) == outcome(calls[op], checked, slow(pfn))
        assert np.array_equal(fast.buffer, checked.buffer)


def test_entry_words():
    """entry() at zero and all-ones quadwords and beyond the table (the index from the C
    core, the quadwords from the buffer's memoryviews)."""
    t = RmpTable(np.zeros(BOOKKEEPING + 16 * 8, np.uint8))
    for pfn, lo, hi in [(1, 0, 5), (2, 6, 0), (3, (1 << 64) - 1, (1 << 64) - 1)]:
        t.write_raw(pfn, lo, hi)
        assert t.entry(pfn) == (lo, hi) == t.entry(np.uint64(pfn))
    assert t.entry(0) == (0, 0)
    with pytest.raises(R.RmpError, match=r"pfn=0x8: beyond the RMP"):
        t.entry(8)


def test_dump_text_is_the_kernel_format():
    """kvmmu_rmp_dump_text's lines == the kernel's format strings applied to kvmmu_rmp_dump's
    entries, for every pfn (assigned, unassigned, the last partial 2M block, beyond)."""
    q = ffi.new("uint64_t[]", 3 * PTRS_PER_PMD)
    for pfn in range(NPFN + 2):
        r = lib.kvmmu_rmp_dump(T._t, pfn, q)
        if r < 0:
            want = [f"Failed to read RMP entry for PFN {pfn:#x}, error -14"]
        elif r == 0:
            want = [f"PFN {pfn:#x}, RMP entry: [{q[1]:#018x} - {q[2]:#018x}]"]
        else:
            start = pfn & ~(PTRS_PER_PMD - 1)
            want = [f"PFN {pfn:#x} unassigned, dumping non-zero entries in 2M PFN region: "
                    f"[{start:#x} - {start + PTRS_PER_PMD:#x}]"]
            want += [f"PFN: {q[3 * k]:#x}, [{q[3 * k + 1]:#018x} - {q[3 * k + 2]:#018x}]" for k in range(r - 1)]
        assert T.dump_rmpentry(pfn) == want


def test_dump_text_widest_values():
    t = RmpTable(np.zeros(BOOKKEEPING + 16 * 512, np.uint8))
    for p in range(1, 512):
        t.write_raw(p, (1 << 64) - 2, (1 << 64) - 1)          # assigned=0, every other bit set
    lines = t.dump_rmpentry(0)
    assert len(lines) == 512 and lines[-1] == "PFN: 0x1ff, [0xfffffffffffffffe - 0xffffffffffffffff]"


# ------------------------------------------------------------------ operand-saving calls

def test_default_operands_are_the_signature_defaults():
    """guest_check() and rmpadjust() call C functions with their default operands built in
    when those operands are the default objects themselves (compared by identity)."""
    gd = RmpTable.guest_check.__kwdefaults__
    assert gd == dict(vmpl=0, npt_level=R.PG_LEVEL_4K, kind="read", c_bit=True, snp_active=True, user=False)
    assert gd["vmpl"] is R._ZERO and gd["npt_level"] is R.PG_LEVEL_4K and gd["kind"] is R._READ
    ad = RmpTable.rmpadjust.__kwdefaults__
    assert ad == dict(size=0, vmsa=False, vmpl=0) and ad["size"] is ad["vmpl"] is R._ZERO


#: the default operands as other objects of the same values: the checked path takes them
NP_GUEST_DEFAULTS = dict(vmpl=np.uint8(0), npt_level=np.uint8(1), kind=R.Access.READ, c_bit=np.True_,
                         snp_active=np.True_, user=np.False_)


@given(pfns, pfns, small)
def test_default_guest_check_agrees(pfn, gfn, asid):
    want = outcome(T.guest_check, pfn, gfn, asid=asid, **NP_GUEST_DEFAULTS)
    assert outcome(T.guest_check, pfn, gfn, asid=asid) == want
    assert outcome(T.guest_check, pfn, gfn, asid=asid, vmpl=0, kind="read", user=False) == want


@given(st.lists(st.tuples(pfns, small, small, st.integers(0, 5), st.integers(0, 40), flag), max_size=10),
       st.integers(0, 3))
def test_default_rmpadjust_agrees_and_leaves_the_same_table(ops, seed):
    fast, checked = table(seed), table(seed)
    for pfn, asid, b, target, perms, validate in ops:
        gfn = pfn ^ b
        if validate:
            assert (outcome(fast.pvalidate, pfn, asid=asid, gfn=gfn)
                    == outcome(checked.pvalidate, pfn, asid=asid, gfn=gfn))
        assert (outcome(fast.rmpadjust, pfn, asid=asid, gfn=gfn, target_vmpl=target, perms=perms)
                == outcome(checked.rmpadjust, pfn, asid=asid, gfn=gfn, target_vmpl=target, perms=perms,
                           size=np.uint8(0), vmsa=np.False_, vmpl=np.uint8(0)))
        assert np.array_equal(fast.buffer, checked.buffer)


def test_entry_of_a_segmented_table():
    """entry()'s index comes from the C core's segment lookup; the quadwords from the buffer."""
    t = RmpTable.create(3 * (1 << 30) + 1, segmented=True, seg_shift=30)
    pfns = [0, 1, (1 << 18) - 1, 1 << 18, (2 << 18) + 5, t.nr_pfns - 1]
    for i, pfn in enumerate(pfns):
        t.write_raw(pfn, (i + 1) << 12 | 1, (1 << 64) - 1 - i)
    for i, pfn in enumerate(pfns):
        assert t.entry(pfn) == ((i + 1) << 12 | 1, (1 << 64) - 1 - i) == t.entry(np.uint64(pfn))
    assert type(t.entry(0)) is R.RmpEntry
    with pytest.raises(R.RmpError, match="beyond the RMP"):
        t.entry(t.nr_pfns)
    t.close()
    with pytest.raises(R.RmpError, match="closed"):
        t.entry(0)


# ------------------------------------------------------------------ refusals

BAD = [decimal.Decimal(5), fractions.Fraction(5), np.float64(5.0), 5.0, "5", None, -1, 1 << 64]


def _calls(t):
    """(name of the argument, call with that argument replaced) for every fast path."""
    yield "pfn", lambda v: t.covered(v)
    yield "pfn", lambda v: t.entry(v)
    yield "pfn", lambda v: t.snp_lookup_rmpentry(v)
    yield "pfn", lambda v: t.page_state(v)
    yield "pfn", lambda v: t.host_check(v, 1)
    yield "level", lambda v: t.host_check(5, v)
    yield "pfn", lambda v: t.guest_check(v, 5, asid=3)
    yield "gfn", lambda v: t.guest_check(5, v, asid=3)
    yield "asid", lambda v: t.guest_check(5, 5, asid=v)
    yield "vmpl", lambda v: t.guest_check(5, 5, asid=3, vmpl=v)
    yield "npt_level", lambda v: t.guest_check(5, 5, asid=3, npt_level=v)
    yield "kind", lambda v: t.guest_check(5, 5, asid=3, kind=v)
    yield "pfn", lambda v: t.rmpupdate(v, gpa=0)
    yield "gpa", lambda v: t.rmpupdate(600, gpa=v)
    yield "asid", lambda v: t.rmpupdate(600, asid=v)
    yield "assigned", lambda v: t.rmpupdate(600, assigned=v)
    yield "pfn", lambda v: t.psmash(v)
    yield "pfn", lambda v: t.pvalidate(v, asid=3, gfn=5)
    yield "validate", lambda v: t.pvalidate(5, asid=3, gfn=5, validate=v)
    yield "size", lambda v: t.pvalidate(5, asid=3, gfn=5, size=v)
    yield "pfn", lambda v: t.rmpadjust(v, asid=3, gfn=5, target_vmpl=1, perms=1)
    yield "perms", lambda v: t.rmpadjust(5, asid=3, gfn=5, target_vmpl=1, perms=v)
    yield "vmsa", lambda v: t.rmpadjust(5, asid=3, gfn=5, target_vmpl=1, perms=1, vmsa=v)
    yield "pfn", lambda v: R.sev_private_max_mapping_level(t, v)
    yield "pte_pfn", lambda v: R.handle_user_rmp_page_fault(t, pte_present=True, pte_pfn=v, level=1, address=0)
    yield "address", lambda v: R.handle_user_rmp_page_fault(t, pte_present=True, pte_pfn=5, level=1, address=v)
    yield "level", lambda v: R.handle_user_rmp_page_fault(t, pte_present=True, pte_pfn=5, level=v, address=0)
    yield "max_order", lambda v: R.kvm_max_private_mapping_level(2, v, 0)


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_bad_values_are_refused_by_name_and_change_nothing(bad):
    t = table()
    before = t.buffer.copy()
    for name, call in _calls(t):
        if name == "kind" and bad == "5":
            continue                                  # a str kind is looked up by name below
        with pytest.raises(InputError) as e:
            call(bad)
        assert str(e.value).startswith((f"{name}=", f"{name}: ")), (name, bad, e.value)
        assert np.array_equal(t.buffer, before)


# The messages as the checked path gave them before the fast paths (the main tree at d4b905f).
@pytest.mark.parametrize("call,message", [
    (lambda t: t.host_check(decimal.Decimal(5)), "pfn=Decimal('5'): expected an integer, got Decimal"),
    (lambda t: t.covered(fractions.Fraction(5)), "pfn=Fraction(5, 1): expected an integer, got Fraction"),
    (lambda t: t.entry(np.float64(3)), "pfn=np.float64(3.0): expected an integer, got float64"),
    (lambda t: t.host_check(5, True), "level=True: a page level is the int 1 (4K), 2 (2M) or 3 (1G)"),
    (lambda t: t.guest_check(5, 5, asid=3, vmpl=4), "vmpl=4: VMPLs are 0..3"),
    (lambda t: t.guest_check(5, 5, asid=3, npt_level=4), "npt_level=4: a page level is 1 (4K), 2 (2M) or 3 (1G)"),
    (lambda t: t.guest_check(5, 5, asid=3, kind="bogus"),
     "kind='bogus': one of ['read', 'write', 'fetch', 'pt_read', 'pt_write']"),
    (lambda t: t.guest_check(5, 5, asid=3, kind=7), "kind=7: one of ['read', 'write', 'fetch', 'pt_read', 'pt_write']"),
    (lambda t: t.guest_check(5, 5, asid=3, c_bit=1), "c_bit=1: expected a bool (True or False), got int"),
    (lambda t: t.pvalidate(1 << 64, asid=3, gfn=5), "pfn=0x10000000000000000: does not fit in 64 unsigned bits"),
    (lambda t: t.pvalidate(5, asid=3, gfn=5, validate=decimal.Decimal(1)),
     "validate=Decimal('1'): expected an integer, got Decimal"),
    (lambda t: t.rmpadjust(5, asid=1 << 32, gfn=5, target_vmpl=1, perms=1),
     "asid=0x100000000: does not fit in 32 unsigned bits"),
    (lambda t: t.rmpupdate(5, assigned=256), "assigned=256: does not fit in 8 unsigned bits"),
    (lambda t: R.handle_user_rmp_page_fault(t, pte_present=1, pte_pfn=5, level=1, address=0),
     "pte_present=1: expected a bool (True or False), got int"),
    (lambda t: R.handle_user_rmp_page_fault(t, pte_present=True, pte_pfn=1 << 40, level=1, address=0),
     "pte_pfn=0x10000000000: does not fit in 40 unsigned bits"),
    (lambda t: t.dump_rmpentry(1 << 64), "pfn=0x10000000000000000: does not fit in 64 unsigned bits"),
    (lambda t: t.dump_rmpentry(-1), "pfn=-1: must not be negative (an unsigned 64-bit value)"),
    (lambda t: t.entry(5000), "pfn=0x1388: beyond the RMP (covers 0x625 pages); get_raw_rmpentry() returns -EFAULT"),
])
def test_refusal_messages(call, message):
    t = table()
    before = t.buffer.copy()
    with pytest.raises(InputError) as e:
        call(t)
    assert str(e.value) == message
    assert np.array_equal(t.buffer, before)


def test_read_only_and_closed_tables_refuse_on_the_fast_path():
    t = table()
    buf = t.buffer.copy()
    buf.flags.writeable = False
    ro = RmpTable(buf)
    assert not ro.writable
    for f in (lambda: ro.rmpupdate(600, gpa=0), lambda: ro.psmash(0), lambda: ro.pvalidate(5, asid=3, gfn=5),
              lambda: ro.rmpadjust(5, asid=3, gfn=5, target_vmpl=1, perms=1)):
        with pytest.raises(R.RmpError, match="the table is read-only"):
            f()
    t.close()
    for f in (lambda: t.covered(5), lambda: t.entry(5), lambda: t.host_check(5), lambda: t.guest_check(5, 5, asid=3),
              lambda: t.pvalidate(5, asid=3, gfn=5), lambda: t.rmpupdate(5), lambda: t.dump_rmpentry(5),
              lambda: R.handle_user_rmp_page_fault(t, pte_present=True, pte_pfn=5, level=1, address=0),
              lambda: R.sev_private_max_mapping_level(t, 5)):
        with pytest.raises(R.RmpError, match="closed"):
            f()

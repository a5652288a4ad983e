"""Fault classification: error-code decoding, VM types, the upstream rule, the 2023 policies,
their agreement table, and the C batch classifier against the pure-Python reference."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pykvmmu import private as P
from pykvmmu.errors import PykvmmuError
from pykvmmu.ref import private as R


def test_error_code_bits_match_fact_sheet():
    expect = {"PRESENT": 0, "WRITE": 1, "USER": 2, "RSVD": 3, "FETCH": 4, "PK": 5, "SS": 6,
              "SGX": 15, "GUEST_RMP": 31, "GUEST_FINAL": 32, "GUEST_PAGE": 33, "GUEST_ENC": 34,
              "GUEST_SIZEM": 35, "GUEST_VMPL": 36, "IMPLICIT_ACCESS": 48, "PRIVATE_ACCESS": 49}
    assert {k: v[0] for k, v in P.PFERR.items()} == expect
    assert P.PFERR_SYNTHETIC_MASK == (1 << 48) | (1 << 49)


def test_decode_every_bit_and_unknown():
    for name, (bit, origin, _) in P.PFERR.items():
        r = P.decode_error_code(1 << bit)
        assert r.bits[name] and sum(r.bits.values()) == 1
        assert (name in r.synthetic) == (origin == "synthetic")
        assert name in str(r)
    r = P.decode_error_code((1 << 50) | (1 << 60) | P.PFERR_GUEST_ENC_MASK)
    assert r.proposed == ("USER_FETCH",) and r.unknown == 1 << 60 and r.guest_enc
    assert "unknown" in str(r) and "proposed" in str(r)
    with pytest.raises(PykvmmuError, match="error_code"):
        P.decode_error_code(1 << 64)


def test_vm_types():
    assert P.VM_TYPES == {"default": 0, "sw_protected": 1, "sev": 2, "sev_es": 3, "snp": 4, "tdx": 5}
    assert [P.has_private_mem(t) for t in range(6)] == [False, True, False, False, True, True]
    assert [P.has_protected_state(t) for t in range(6)] == [False, False, False, True, True, True]
    with pytest.raises(PykvmmuError, match="vm_type=6"):
        P.vm_type_number(6)
    with pytest.raises(PykvmmuError, match="'tdx2'"):
        P.vm_type_number("tdx2")


def test_tdx_shared_bit():
    assert P.tdx_shared_gpa_bit(52) == 51 and P.tdx_shared_gpa_bit(48) == 47
    assert P.gfn_direct_bits("tdx", 48) == 1 << 35 and P.gfn_direct_bits("snp") == 0
    with pytest.raises(PykvmmuError, match="gpaw=50"):
        P.tdx_shared_gpa_bit(50)


def ctx(vt, attr=False, slot="gmem", gpaw=52):
    return P.FaultContext(vm_type=vt, gpaw=gpaw, is_private=lambda g: attr, slot_kind=lambda g: slot)


def test_upstream_snp_enc_sets_private():
    c = P.kvm_mmu_do_page_fault(ctx("snp"), 0x1234000, P.PFERR_GUEST_ENC_MASK | 2)
    assert c.kind == P.KVM_FAULT_PRIVATE and c.error_code & P.PFERR_PRIVATE_ACCESS and c.gfn == 0x1234
    # SEV and SEV-ES set ENC too but have no private memory
    for vt in ("sev", "sev_es", "default"):
        assert P.kvm_mmu_do_page_fault(ctx(vt), 0, P.PFERR_GUEST_ENC_MASK).kind == P.KVM_FAULT_SHARED


@pytest.mark.parametrize("gpaw,bit", [(52, 51), (48, 47)])
def test_upstream_tdx_shared_bit_stripped(gpaw, bit):
    c = P.kvm_mmu_do_page_fault(ctx("tdx", gpaw=gpaw), (1 << bit) | 0x5000, 0)
    assert c.kind == P.KVM_FAULT_SHARED and c.gfn == 5
    c = P.kvm_mmu_do_page_fault(ctx("tdx", gpaw=gpaw), 0x5000, 0)
    assert c.kind == P.KVM_FAULT_PRIVATE and c.gfn == 5


def test_upstream_sw_protected_from_attributes_never_rsvd():
    assert P.kvm_mmu_do_page_fault(ctx("sw_protected", True), 0x1000, 0).kind == P.KVM_FAULT_PRIVATE
    assert P.kvm_mmu_do_page_fault(ctx("sw_protected", False), 0x1000, 0).kind == P.KVM_FAULT_SHARED
    assert P.kvm_mmu_do_page_fault(ctx("sw_protected", True), 0x1000,
                                   P.PFERR_RSVD_MASK).kind == P.KVM_FAULT_SHARED
    c = P.FaultContext(vm_type=1, is_private=lambda g: True, sw_protected_enabled=False)
    assert P.kvm_mmu_do_page_fault(c, 0x1000, 0).kind == P.KVM_FAULT_SHARED


def test_synthetic_collision_is_cleared_with_warning():
    c = P.kvm_mmu_do_page_fault(ctx("default"), 0, P.PFERR_PRIVATE_ACCESS | P.PFERR_IMPLICIT_ACCESS | 1)
    assert c.kind == P.KVM_FAULT_SHARED and c.error_code == 1 and "WARN" in c.warnings[0]


def test_mismatch_exit_fields():
    d = P.decide(ctx("snp", attr=False), 0x7000, P.PFERR_GUEST_ENC_MASK)
    assert d.action == "exit" and d.exit.exit_reason == 39 == P.KVM_EXIT_MEMORY_FAULT
    assert (d.exit.gpa, d.exit.size, d.exit.flags) == (0x7000, 4096, 8) and d.exit.errno == 14
    d = P.decide(ctx("snp", attr=True), 0x7000, 0)
    assert d.exit.flags == 0 and "mismatch" in d.exit.reason
    # TDX: gpa reported with the shared bit stripped
    d = P.decide(ctx("tdx", attr=True), (1 << 51) | 0x7000, 0)
    assert d.exit.gpa == 0x7000 and d.exit.flags == 0


def test_noslot_and_no_gmem_exits():
    d = P.decide(ctx("snp", attr=True, slot=None), 0x7000, P.PFERR_GUEST_ENC_MASK)
    assert d.action == "exit" and d.exit.private and "no memslot" in d.exit.reason
    assert P.decide(ctx("snp", slot=None), 0x7000, 0).action == "noslot"
    d = P.decide(ctx("snp", attr=True, slot="plain"), 0x7000, P.PFERR_GUEST_ENC_MASK)
    assert d.action == "exit" and "without guest_memfd" in d.exit.reason
    assert P.decide(ctx("snp", attr=True), 0x7000, P.PFERR_GUEST_ENC_MASK).action == "private"
    assert P.decide(ctx("default", slot="gmem_only"), 0x7000, 0).action == "gmem_shared"


def test_policies_agree_on_the_common_cases():
    """SNP/TDX faults whose kind matches the attributes on gmem slots: every policy agrees."""
    for pol in P.POLICIES.values():
        assert P.decide(ctx("snp", True), 0x1000, P.PFERR_GUEST_ENC_MASK, pol).outcome == "private"
        assert P.decide(ctx("snp", False), 0x1000, 0, pol).outcome == "shared"
        assert P.decide(ctx("tdx", False), (1 << 51) | 0x1000, 0, pol).outcome == "shared"
        assert P.decide(ctx("default", False, "plain"), 0x1000, 0).outcome == "shared"


def test_policies_disagree_where_the_thread_argued():
    o = lambda vt, attr, slot, ec, pol, gpa=0x1000: P.decide(ctx(vt, attr, slot), gpa, ec, pol).outcome  # noqa: E731
    # 1. SW-protected VMs (selftests): the bool mask sketch has no source -> shared -> exit
    assert o("sw_protected", True, "gmem", 0, "mask") == "exit:S"
    assert o("sw_protected", True, "gmem", 0, "upstream") == "private"
    assert o("sw_protected", True, "gmem", 0, "three-way") == "private"
    # 2. RSVD (MMIO) faults on a private gfn: upstream never private; three-way/sw-pferr are
    assert o("sw_protected", True, "gmem", P.PFERR_RSVD_MASK, "upstream") == "exit:S"
    assert o("sw_protected", True, "gmem", P.PFERR_RSVD_MASK, "three-way") == "private"
    assert o("sw_protected", True, "gmem", P.PFERR_RSVD_MASK, "sw-pferr") == "private"
    # 3. RFC v9: the slot gate makes an encrypted access to a non-gmem slot shared (mapped!)
    assert o("snp", False, "plain", P.PFERR_GUEST_ENC_MASK, "rfc-v9") == "shared"
    assert o("snp", False, "plain", P.PFERR_GUEST_ENC_MASK, "upstream") == "exit:P"
    # 4. a hardware error code colliding with bit 49: upstream clears it, sw-pferr trusts it
    assert o("default", False, "plain", P.PFERR_PRIVATE_ACCESS, "upstream") == "shared"
    assert o("default", False, "plain", P.PFERR_PRIVATE_ACCESS, "sw-pferr") == "exit:P"
    # 5. the bool sketch taken literally (private when the *shared* bit is set)
    lit = P.MaskPolicy(literal=True)
    assert P.decide(ctx("tdx", False), (1 << 51) | 0x1000, 0, lit).outcome == "exit:P"


def test_policy_table_in_docs_is_current():
    rows = P.policy_table()
    assert rows and all(len({r[p] for p in P.POLICIES}) > 1 for r in rows)
    full = P.policy_table(only_disagreements=False)
    assert len(full) > len(rows)
    doc = open("docs/private.md").read()
    table = P.format_policy_table(P.policy_table(error_codes=("read", "ENC", "RSVD", "ENC|RSVD")))
    assert table in doc, "regenerate the table in docs/private.md (python -m pykvmmu.private)"


def test_user_policy_object():
    class AlwaysShared(P.FaultPolicy):
        name = "always-shared"

        def classify(self, ctx_, gpa, ec):
            return P.Classification(gpa >> 12, ec, P.KVM_FAULT_SHARED)
    assert P.decide(ctx("snp", False), 0x1000, P.PFERR_GUEST_ENC_MASK, AlwaysShared()).outcome == "shared"
    with pytest.raises(PykvmmuError, match="policy="):
        P.get_policy("nope")
    with pytest.raises(PykvmmuError, match="classify"):
        P.get_policy(object())


def test_ept_violation_error_code():
    q = P.EPT_VIOLATION_ACC_READ | P.EPT_VIOLATION_GVA_IS_VALID | P.EPT_VIOLATION_GVA_TRANSLATED
    assert P.ept_violation_error_code(q, 0x1000) == P.PFERR_USER_MASK | P.PFERR_GUEST_FINAL_MASK
    q = P.EPT_VIOLATION_ACC_WRITE | (1 << 3) | P.EPT_VIOLATION_GVA_IS_VALID
    assert P.ept_violation_error_code(q, 0x1000) == 3 | P.PFERR_GUEST_PAGE_MASK
    assert P.ept_violation_error_code(0, 0x1000, "tdx") == P.PFERR_PRIVATE_ACCESS
    assert P.ept_violation_error_code(0, (1 << 51) | 0x1000, "tdx") == 0


def test_prefault_error_code():
    assert P.prefault_error_code("snp", True) == P.PFERR_GUEST_FINAL_MASK | P.PFERR_PRIVATE_ACCESS
    assert P.prefault_error_code("sev", True) == P.PFERR_GUEST_FINAL_MASK


u64 = st.integers(0, (1 << 64) - 1)


@given(st.sampled_from(range(6)), st.lists(st.tuples(u64, u64), min_size=0, max_size=40),
       st.sampled_from([48, 52]))
def test_batch_matches_reference_and_scalar(vt, faults, gpaw):
    gpa = np.array([f[0] for f in faults], dtype=np.uint64)
    ec = np.array([f[1] for f in faults], dtype=np.uint64)
    ranges = [(5, 9), (0x100, 0x200), (1 << 30, 1 << 39)]
    arr = (np.array([r[0] for r in ranges], dtype=np.uint64), np.array([r[1] for r in ranges], dtype=np.uint64))
    g, e, p, ns = P.classify_batch(vt, gpa, ec, gpaw=gpaw, attrs=arr)
    ref = R.classify_many(vt, [f[0] for f in faults], [f[1] for f in faults],
                          P.tdx_shared_gpa_bit(gpaw), ranges)
    assert [int(x) for x in g] == [r[0] for r in ref]
    assert [int(x) for x in e] == [r[1] for r in ref]
    assert [bool(x) for x in p] == [r[2] for r in ref]
    assert ns == sum(r[3] for r in ref)
    c = P.FaultContext(vm_type=vt, gpaw=gpaw,
                       is_private=lambda gf: any(s <= gf < t for s, t in ranges))
    for (a, b), gg, pp in zip(faults, g, p):
        s = P.kvm_mmu_do_page_fault(c, a, b)
        assert (s.gfn, s.kind == P.KVM_FAULT_PRIVATE) == (int(gg), bool(pp))


def test_batch_argument_errors():
    a = np.zeros(4, dtype=np.uint64)
    with pytest.raises(PykvmmuError, match="dtype"):
        P.classify_batch("snp", a.astype(np.int64), a)
    with pytest.raises(PykvmmuError, match="shape"):
        P.classify_batch("snp", a, a[:3])
    bad = (np.array([5, 3], dtype=np.uint64), np.array([9, 4], dtype=np.uint64))
    with pytest.raises(PykvmmuError, match="sorted"):
        P.classify_batch("sw_protected", a, a, attrs=bad)
    with pytest.raises(PykvmmuError, match="start >= end"):
        P.classify_batch("sw_protected", a, a, attrs=(np.array([5], dtype=np.uint64),
                                                      np.array([5], dtype=np.uint64)))


def test_batch_with_attribute_store():
    from pykvmmu.attrs import MemoryAttributes, MmuInvalidation
    m = MemoryAttributes()
    m.set_range(0x10, 0x20, 8, MmuInvalidation())
    gpa = np.arange(0, 0x30, dtype=np.uint64) << np.uint64(12)
    _, _, p, _ = P.classify_batch("sw_protected", gpa, np.zeros_like(gpa), attrs=m)
    assert list(np.nonzero(p)[0]) == list(range(0x10, 0x20))


@pytest.mark.parametrize("vt", range(6))
def test_batch_sse2_path_matches_reference(vt):
    rng = np.random.default_rng(vt)
    n = 2001                                        # odd: the vector loop leaves a scalar tail
    gpa = rng.integers(0, 1 << 63, n, dtype=np.uint64) * np.uint64(2)
    ec = rng.integers(0, 1 << 63, n, dtype=np.uint64)
    for out_off in (0, 1):                          # 16-byte aligned outputs, and not
        og = np.empty(n + 1, dtype=np.uint64)[out_off:out_off + n]
        oe = np.empty(n + 1, dtype=np.uint64)[out_off:out_off + n]
        g, e, p, ns = P.classify_batch(vt, gpa, ec, out_gfn=og, out_ec=oe)
        ref = R.classify_many(vt, [int(x) for x in gpa], [int(x) for x in ec])
        assert [int(x) for x in g] == [r[0] for r in ref]
        assert [int(x) for x in e] == [r[1] for r in ref]
        assert [bool(x) for x in p] == [r[2] for r in ref]
        assert ns == sum(r[3] for r in ref)


STREAM_BYTES = 32 << 20          # KVMMU_STREAM_MIN_BYTES (common.h): outputs streamed past it


def _tiled_reference(vt, base_gpa, base_ec, n):
    """The reference's outputs on the base faults, tiled to n (the inputs are tiled the same)."""
    ref = R.classify_many(vt, [int(x) for x in base_gpa], [int(x) for x in base_ec])
    reps = -(-n // len(ref))
    g, e, p, s = (np.tile(np.array([r[k] for r in ref], dtype=dt), reps)[:n]
                  for k, dt in enumerate((np.uint64, np.uint64, np.bool_, np.uint64)))
    return g, e, p, int(s.sum())


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("vm", ["snp", "tdx", "default"])
def test_batch_cached_and_streaming_paths_match_reference(vm, isa):
    """Both store paths of classify_batch against the reference: in-cache sizes (plain stores,
    every length around the 64-fault step) and a batch past KVMMU_STREAM_MIN_BYTES of output
    (streaming stores) with the outputs at several offsets in their cache lines, among them
    is_private off the 64-byte grid and out_gfn/out_ec at different line offsets."""
    from pykvmmu import isa as I
    if isa not in I.supported_levels():
        pytest.skip(f"CPU lacks {isa}")
    vt = P.vm_type_number(vm)
    rng = np.random.default_rng(14)
    base = 4096
    bgpa = rng.integers(0, 1 << 63, base, dtype=np.uint64) * np.uint64(2) + \
        rng.integers(0, 2, base, dtype=np.uint64)
    bec = rng.integers(0, 1 << 63, base, dtype=np.uint64) * np.uint64(2) + \
        rng.integers(0, 2, base, dtype=np.uint64)
    for n in (0, 1, 63, 64, 65, 127, 200, 1000, 16384 + 5):      # in cache
        reps = -(-n // base) or 1
        gpa, ec = np.tile(bgpa, reps)[:n], np.tile(bec, reps)[:n]
        want = _tiled_reference(vt, bgpa, bec, n) if n else (gpa, ec, np.zeros(0, bool), 0)
        for off in (0, 1, 7):
            buf_g, buf_e, buf_p = np.empty(n + 8, np.uint64), np.empty(n + 8, np.uint64), \
                np.empty(n + 64, np.bool_)
            got = P.classify_batch(vm, gpa, ec, out_gfn=buf_g[off:off + n],
                                   out_ec=buf_e[off:off + n], out_private=buf_p[off:off + n],
                                   threads=1, isa=isa)
            assert all(np.array_equal(a, b) for a, b in zip(got[:3], want[:3])), (n, off)
            assert got[3] == want[3]
    n = STREAM_BYTES // 16 + 131                                 # streaming
    reps = -(-n // base)
    gpa, ec = np.tile(bgpa, reps)[:n], np.tile(bec, reps)[:n]
    want = _tiled_reference(vt, bgpa, bec, n)
    span = -(-(n + 8) // 8) * 8                       # out_gfn, out_ec: 64-byte aligned starts
    both = np.empty(2 * span + 8, np.uint64)
    first = (-both.ctypes.data % 64) // 8
    buf_g, buf_e = both[first:first + span], both[first + span:first + 2 * span]
    buf_p = np.empty(n + 64, np.bool_)
    head = (-buf_g.ctypes.data % 64) // 8          # faults before out_gfn reaches the 64-byte grid
    on_grid = -(buf_p.ctypes.data + head) % 64       # is_private on the grid after that head
    for og, oe, op in ((0, 0, 0), (3, 3, 5), (1, 2, 37), (0, 0, 63), (0, 0, on_grid)):
        buf_p[:] = True
        got = P.classify_batch(vm, gpa, ec, out_gfn=buf_g[og:og + n], out_ec=buf_e[oe:oe + n],
                               out_private=buf_p[op:op + n], threads=1, isa=isa)
        assert all(np.array_equal(a, b) for a, b in zip(got[:3], want[:3])), (og, oe, op)
        assert got[3] == want[3]
        assert buf_p[:op].all() and buf_p[op + n:].all()         # no byte outside out_private


@settings(max_examples=40)
@given(st.sampled_from(["snp", "tdx", "default"]), st.sampled_from(["portable", "avx2", "avx512"]),
       st.lists(st.tuples(u64, u64), min_size=60, max_size=300), st.integers(0, 63))
def test_batch_vector_steps_match_reference(vm, isa, faults, off):
    """Lengths over the 64-fault vector step (plain stores), is_private at any byte offset."""
    from pykvmmu import isa as I
    if isa not in I.supported_levels():
        return
    gpa = np.array([f[0] for f in faults], dtype=np.uint64)
    ec = np.array([f[1] for f in faults], dtype=np.uint64)
    n = len(faults)
    op = np.empty(n + 64, np.bool_)[off:off + n]
    g, e, p, ns = P.classify_batch(vm, gpa, ec, out_private=op, threads=1, isa=isa)
    ref = R.classify_many(P.vm_type_number(vm), [f[0] for f in faults], [f[1] for f in faults])
    assert g.tolist() == [r[0] for r in ref] and e.tolist() == [r[1] for r in ref]
    assert p.tolist() == [r[2] for r in ref] and ns == sum(r[3] for r in ref)

"""Role words: layouts per era vs the reference, pack/unpack, batch forms, hash, worked values."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pykvmmu import role as R
from pykvmmu.errors import ArrayError, InputError, ProfileError, PykvmmuError
from pykvmmu.ref import role as ref

ERAS = list(R.ERAS)


@pytest.mark.parametrize("era", ERAS)
def test_layout_matches_reference_declaration_order(era):
    e = R.get_era(era)
    assert {f.name: (f.shift, f.width) for f in e.base.fields} == ref.base_fields(era)
    assert e.base.used_mask == ref.used_mask(ref.base_fields(era))
    if e.ext is None:
        assert ref.ext_fields(era) == {}
    else:
        assert {f.name: (f.shift, f.width) for f in e.ext.fields} == ref.ext_fields(era)


def test_era_table_bit4_and_names():
    assert R.get_era("v5.0").bit4 == "cr4_pae" and R.get_era("v5.0").nx == "nxe"
    assert R.get_era("v5.1").bit4 == "gpte_is_8_bytes"
    assert R.get_era("v5.14").nx == "efer_nx"
    assert R.get_era("v5.17").bit4 == "has_4_byte_gpte"
    assert R.get_era("v6.8").has("passthrough") and not R.get_era("v6.8").has("is_mirror")
    assert R.get_era("latest").has("is_mirror")
    assert R.get_era("2019").name == "v5.0"
    # masks of section 1.1 / 1.2
    assert R.get_era("v6.14").base.field("is_mirror").mask == 0x80000
    assert R.get_era("v6.14").base.field("smm").mask == 0xFF000000
    assert R.get_era("v4.2").base.used_mask == 0xFF00FFFF
    assert R.get_era("v4.12").base.field("ad_disabled").mask == 0x10000
    assert R.get_era("v4.18").base.field("guest_mode").mask == 0x20000


def test_unknown_era_and_field_errors():
    with pytest.raises(ProfileError):
        R.get_era("v2.6")
    with pytest.raises(ProfileError, match="passthrough"):
        R.pack("v5.0", passthrough=1)
    with pytest.raises(InputError, match="nosuch"):
        R.pack("latest", nosuch=1)
    with pytest.raises(R.RoleFieldError, match="level=16"):
        R.pack("latest", level=16)
    with pytest.raises(R.RoleFieldError, match="quadrant=4"):
        R.pack("latest", quadrant=4)
    with pytest.raises(InputError):
        R.pack("latest", level=-1)
    with pytest.raises(InputError):
        R.unpack("latest", 1 << 32)
    with pytest.raises(R.RoleFieldError):
        R.unpack("v5.0", 0x00100000, strict=True)
    with pytest.raises(ProfileError):
        R.pack_ext("v4.18", valid=1)


def _values(era):
    e = R.get_era(era)
    return st.fixed_dictionaries({f.name: st.integers(0, 5 if f.name == "level" else (1 << f.width) - 1)
                                  for f in e.base.fields})     # pack() refuses levels above 5


@pytest.mark.parametrize("era", ERAS)
@settings(max_examples=60)
@given(data=st.data())
def test_pack_unpack_vs_reference(era, data):
    vals = data.draw(_values(era))
    w = R.pack(era, **vals)
    assert w == ref.pack_role(era, **vals)
    assert R.unpack(era, w).fields == vals
    assert ref.unpack_role(era, w) == vals


@pytest.mark.parametrize("era", ERAS)
@settings(max_examples=40)
@given(words=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=40))
def test_batch_round_trip_vs_reference(era, words):
    e = R.get_era(era)
    w = np.array(words, dtype=np.uint32) & np.uint32(e.base.used_mask)
    rec = R.unpack_batch(era, w)
    for i, word in enumerate(w.tolist()):
        assert {n: int(rec[n][i]) for n in e.base.names} == ref.unpack_role(era, word)
    assert np.array_equal(R.pack_batch(era, rec), w)


def test_batch_errors():
    e = R.get_era("latest")
    rec = np.zeros(5, dtype=e.base.dtype)
    rec["level"] = 4
    rec["quadrant"][3] = 4
    with pytest.raises(R.RoleFieldError, match=r"fields\[3\]: quadrant=4"):
        R.pack_batch("latest", rec)
    with pytest.raises(R.RoleFieldError, match=r"words\[1\]"):
        R.unpack_batch("latest", np.array([0, 0x00100000], dtype=np.uint32))
    R.unpack_batch("latest", np.array([0, 0x00100000], dtype=np.uint32), strict=False)
    with pytest.raises(ArrayError):
        R.unpack_batch("latest", np.array([1, 2], dtype=np.int64))
    with pytest.raises(ArrayError):
        R.unpack_batch("latest", np.zeros(4, dtype=np.uint32)[::2])
    raw = np.zeros((3, 16), dtype=np.uint8)
    raw[:, 0] = 4
    raw[1, 15] = 1                      # pad byte
    with pytest.raises(R.RoleFieldError, match="pad byte 15"):
        R.pack_batch("latest", raw)
    with pytest.raises(InputError):
        R.pack_batch("latest", np.zeros((3, 8), dtype=np.uint8))
    out = np.zeros(2, dtype=np.uint32)
    with pytest.raises(ArrayError):
        R.pack_batch("latest", rec, out=out)


@pytest.mark.parametrize("era", [e for e in ERAS if R.get_era(e).ext is not None])
@settings(max_examples=40)
@given(data=st.data())
def test_cpu_role_vs_reference(era, data):
    e = R.get_era(era)
    b = data.draw(_values(era))
    x = data.draw(st.fixed_dictionaries({f.name: st.integers(0, (1 << f.width) - 1)
                                         for f in e.ext.fields}))
    v = R.pack_cpu_role(era, b, x)
    assert v == ref.pack_cpu_role(era, b, x)
    cr = R.unpack_cpu_role(era, v)
    assert cr.base == R.pack(era, **b) and cr.ext == R.pack_ext(era, **x)
    arr = np.array([v, 0], dtype=np.uint64)
    rec = R.cpu_role_unpack_batch(era, arr)
    assert np.array_equal(R.cpu_role_pack_batch(era, rec), arr)
    assert int(rec["ext_valid"][0]) == x["valid"]


VECTORS = [(0x0, 0, 0, 0), (0x1, 1564, 1564, 2531), (0x2, 3129, 3129, 966),
           (0x800, 1091, 1091, 3071), (0x1000, 2182, 2182, 2047), (0xffc00, 1060, 1061, 511),
           (0xfffff, 41, 42, 1564), (0x14b600, 207, 208, 3327), (0x123456789, 1402, 775, 831)]


@pytest.mark.parametrize("gfn,x64,h32,pre", VECTORS)
def test_hash_vectors(gfn, x64, h32, pre):
    assert R.kvm_page_table_hashfn(gfn) == x64 == ref.kvm_page_table_hashfn(gfn)
    assert R.hash_64(gfn, 12, "32bit") == h32 == ref.hash_64_32bit_host(gfn, 12)
    assert R.hash_64(gfn, 12, "pre-4.7") == pre == ref.hash_64_pre_4_7(gfn, 12)
    g = np.array([gfn], dtype=np.uint64)
    assert R.hash_batch(g)[0] == x64
    assert R.hash_batch(g, variant="32bit")[0] == h32
    assert R.hash_batch(g, variant="pre-4.7")[0] == pre


@given(st.lists(st.integers(0, 2**64 - 1), max_size=30), st.integers(1, 32),
       st.sampled_from(["x86_64", "32bit", "pre-4.7"]))
def test_hash_batch_vs_reference(vals, bits, variant):
    f = {"x86_64": ref.hash_64, "32bit": ref.hash_64_32bit_host, "pre-4.7": ref.hash_64_pre_4_7}[variant]
    out = R.hash_batch(np.array(vals, dtype=np.uint64), bits, variant)
    assert out.tolist() == [f(v, bits) for v in vals]
    for v in vals[:3]:
        assert R.hash_64(v, bits, variant) == f(v, bits)


def test_hash_errors():
    with pytest.raises(InputError):
        R.hash_64(1, 0)
    with pytest.raises(InputError):
        R.hash_64(1, 33)
    with pytest.raises(InputError):
        R.hash_64(1, 12, "arm")
    with pytest.raises(InputError):
        R.kvm_page_table_hashfn(-1)
    with pytest.raises(InputError):
        R.kvm_page_table_hashfn(1 << 64)
    with pytest.raises(PykvmmuError):
        R.hash_batch(np.array([1], dtype=np.int64))


def test_hash_distribution_sequential_and_clustered():
    from pykvmmu.sphash import bucket_counts, bucket_stats
    st_ = bucket_stats(bucket_counts(np.arange(1 << 16, dtype=np.uint64)))
    assert st_["max"] <= 2 * st_["mean"]            # multiplicative hashing spreads runs
    assert st_["chi2"] < 2 * st_["chi2_dof"]
    rng = np.random.default_rng(1)
    st2 = bucket_stats(bucket_counts(rng.integers(0, 1 << 40, 40000, dtype=np.uint64)))
    assert abs(st2["chi2"] - st2["chi2_dof"]) < 6 * np.sqrt(2 * st2["chi2_dof"])


def test_hash_batch_vector_path_and_misaligned_out():
    rng = np.random.default_rng(7)
    g = rng.integers(0, 2**64 - 1, 1003, dtype=np.uint64)
    buf = np.zeros(1004, dtype=np.uint32)
    for bits in (12, 1, 32):
        out = R.hash_batch(g, bits, out=buf[1:])          # misaligned start, odd tail
        assert out.tolist() == [ref.hash_64(int(v), bits) for v in g]
        assert R.hash_batch(g, bits, "pre-4.7").tolist() == [ref.hash_64_pre_4_7(int(v), bits) for v in g]


STREAM_BYTES = 32 << 20          # KVMMU_STREAM_MIN_BYTES (common.h): outputs streamed past it


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("era", ERAS)
def test_batch32_block_paths_vs_reference(era, isa):
    """pack_batch / unpack_batch on 32-bit words at lengths around the 16-row step, outputs at
    every 16-byte offset of a line, and the first bad row inside a block: bytes and error
    index as the reference says (the reference decides which rows are bad)."""
    from pykvmmu import isa as I
    if isa not in I.supported_levels():
        pytest.skip(f"CPU lacks {isa}")
    lay = R.get_era(era).base._isa_copy(isa)
    rng = np.random.default_rng(16)
    words = rng.integers(0, 1 << 32, 300, dtype=np.uint64).astype(np.uint32)
    clean = words & np.uint32(lay.used_mask)
    want = [ref.unpack_role(era, int(w)) for w in clean]
    for n in (15, 16, 17, 48, 300):
        for off in range(4):
            rows = np.zeros(n + 4, dtype=lay.dtype)[off:off + n]
            lay.unpack_batch(clean[:n], rows)
            assert all({k: int(rows[k][i]) for k in lay.names} == want[i] for i in range(n))
            lax = np.zeros(n, dtype=lay.dtype)
            lay.unpack_batch(words[:n], lax, strict=False)      # reserved bits ignored
            assert lax.tobytes() == rows.tobytes()
            out = np.zeros(n + 16, np.uint32)[off:off + n]
            assert np.array_equal(lay.pack_batch(rows, out), clean[:n])
    rows = lay.unpack_batch(clean)
    bad_at = [i for i in range(300) if words[i] != clean[i]]
    if bad_at:
        with pytest.raises(R.RoleFieldError, match=rf"words\[{bad_at[0]}\]"):
            lay.unpack_batch(words)
    for i in (37, 16 * 9, 299):
        raw = rows.view(np.uint8).reshape(-1, lay.row).copy()   # every byte, pads too
        raw[i, 0] = 0xFF                                          # wider than field 0
        with pytest.raises(R.RoleFieldError, match=rf"fields\[{i}\]"):
            lay.pack_batch(raw)


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_batch32_streaming_vs_reference(isa):
    """Past KVMMU_STREAM_MIN_BYTES of output (streaming stores, one thread): unpack and pack of
    the newest layout, a reference block tiled, outputs off the 64-byte grid."""
    from pykvmmu import isa as I
    if isa not in I.supported_levels():
        pytest.skip(f"CPU lacks {isa}")
    lay = R.get_era(ERAS[-1]).base._isa_copy(isa)
    rng = np.random.default_rng(17)
    base = rng.integers(0, 1 << 32, 509, dtype=np.uint64).astype(np.uint32) & np.uint32(lay.used_mask)
    base_rows = np.zeros(len(base), dtype=lay.dtype)
    for i, w in enumerate(base.tolist()):
        for k, v in ref.unpack_role(ERAS[-1], w).items():
            base_rows[k][i] = v
    n = STREAM_BYTES // 4 + 21                  # u32 output of pack past the threshold
    reps = -(-n // len(base))
    words = np.tile(base, reps)[:n]
    want_rows = np.tile(base_rows.view(np.uint8).reshape(-1, lay.row), (reps, 1))[:n]
    rows = np.zeros(n + 4, dtype=lay.dtype)[1:n + 1]
    lay.unpack_batch(words, rows, threads=1)
    assert np.array_equal(rows.view(np.uint8).reshape(-1, lay.row), want_rows)
    out = np.zeros(n + 16, np.uint32)[5:n + 5]
    assert np.array_equal(lay.pack_batch(want_rows, out, threads=1), words)

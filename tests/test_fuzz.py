"""The fuzzing harness itself: the byte helper, shrinking, reproducer files, replay, the CLI."""
import os
import sys

import pytest

from pykvmmu import fuzz as F
from pykvmmu.cli import main


def test_fuzz_input_is_total_and_deterministic():
    fi = F.FuzzInput(b"")
    assert (fi.uint(64), fi.int_in(3, 9), fi.bool(), fi.pick("abc")) == (0, 3, False, "a")
    fi = F.FuzzInput(bytes(range(1, 40)))
    assert fi.uint(8) == 1 and fi.uint(16) == 0x0302
    for _ in range(50):
        assert 5 <= fi.int_in(5, 17) <= 17
        assert 0 <= fi.u64() < 1 << 64
    assert fi.remaining() == 0
    a, b = F.FuzzInput(b"\x07" * 30), F.FuzzInput(b"\x07" * 30)
    assert [a.u64() for _ in range(5)] == [b.u64() for _ in range(5)]


def test_every_engine_target_listed():
    assert set(F.TARGETS) >= {"spte", "config", "mmio", "role", "fault", "rmp", "vm"}
    assert F.TARGETS["rmp"].stateful and F.TARGETS["vm"].stateful
    for t in F.TARGETS.values():
        assert t.doc


@pytest.fixture
def planted():
    """A target with a planted bug: fails when bytes 'K' then a byte >= 0x80 are consumed."""
    def fn(fi):
        while fi.remaining():
            if fi.uint(8) == ord("K") and fi.uint(8) >= 0x80:
                raise F.Disagreement("planted")
            fi.feature("x", fi.pos % 7)
    F.TARGETS["planted"] = F.Target("planted", fn, "a planted bug")
    yield F.TARGETS["planted"]
    del F.TARGETS["planted"]


def test_shrink_minimises(planted):
    data = b"abcdefgh" * 8 + b"K\xf0" + b"zz" * 30
    _, fail = F.run_one(planted, data)
    assert fail is not None and fail.kind == "disagreement"
    small = F.shrink(planted, fail)
    assert small.data == b"K\x80"


def test_random_engine_finds_writes_and_replays(planted, tmp_path, capsys):
    st = F.fuzz_random("planted", seconds=20, max_execs=200000, seed=3, corpus_root=str(tmp_path),
                       out_dir=str(tmp_path / "out"), quiet=True, emit=lambda s: None)
    assert len(st.failures) == 1
    small, path = st.failures[0]
    assert os.path.basename(path).startswith("planted-disagreement-") and len(small.data) == 2
    assert open(path + ".txt").read().startswith("target: planted")
    assert main(["fuzz", "--replay", path]) == 1
    assert "FAILED" in capsys.readouterr().out
    ok = tmp_path / "planted-ok.bin"
    ok.write_bytes(b"zzz")
    assert main(["fuzz", "--replay", str(ok)]) == 0


def test_hypothesis_engine_finds(planted, tmp_path):
    st = F.fuzz_hypothesis("planted", seconds=20, max_execs=3000, seed=1, corpus_root=str(tmp_path),
                           out_dir=str(tmp_path), quiet=True, emit=lambda s: None)
    assert st.failures and len(st.failures[0][0].data) == 2


def test_crash_is_a_finding(tmp_path):
    def fn(fi):
        if fi.uint(8) == 0xAB:
            [][1]
    F.TARGETS["crashy"] = F.Target("crashy", fn, "crashes")
    try:
        _, fail = F.run_one(F.TARGETS["crashy"], b"\xab\x01\x02")
        assert fail.kind == "crash" and fail.signature[0] == "IndexError"
        assert F.shrink(F.TARGETS["crashy"], fail).data == b"\xab"
    finally:
        del F.TARGETS["crashy"]


def test_cli_list_run_and_progress(capsys, tmp_path):
    assert main(["fuzz", "--list"]) == 0
    out = capsys.readouterr().out
    for name in F.TARGETS:
        assert name in out
    assert main(["fuzz", "role", "--time", "1.2", "--out", str(tmp_path)]) == 0
    cap = capsys.readouterr()
    assert "[role/random] #" in cap.err and "exec/s" in cap.err and "crashes 0" in cap.err
    assert "role: random:" in cap.out
    assert main(["fuzz", "nosuch"]) == 2
    assert main(["fuzz"]) == 2
    assert main(["fuzz", "--replay", os.path.join(F.SEED_CORPUS, "mmio")]) == 0


def test_atheris_missing_says_how_to_install(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "atheris", None)       # import atheris -> ImportError
    assert main(["fuzz", "spte", "--engine", "atheris"]) == 2
    assert "pip install 'pykvmmu[fuzz]'" in capsys.readouterr().err


def test_target_for_file(tmp_path):
    assert F.target_for_file("x/fuzz/corpus/mmio/abc") == "mmio"
    assert F.target_for_file("fuzz-crashes/spte-crash-0123.bin") == "spte"
    assert F.target_for_file(str(tmp_path / "nothing")) is None


def _trace_input(base: str, audit: bool = False) -> bytes:
    """Bytes that make the ``trace`` target read base ``base`` undamaged, with all events and
    its own era (the draws of target_trace.fuzz_trace, in order)."""
    from pykvmmu.fuzz.target_trace import bases
    idx = [n for n, _, _ in bases()].index(base)
    return idx.to_bytes(2, "little") + b"\x00\x00" + b"\x01" + b"\x01" + (b"\x00" if audit else b"\x01")


def test_trace_target_reads_every_base_undamaged():
    from pykvmmu.fuzz.target_trace import bases
    for name, _, _ in bases():
        feats, fail = F.run_one(F.TARGETS["trace"], _trace_input(name, audit=True))
        assert fail is None, fail.message
        assert any(f[:2] == ("read", name) and f[3] is False for f in feats), feats
        assert any(f[:2] == ("audit", name) for f in feats), feats


def test_trace_target_finds_a_reader_crash_and_a_lost_record(monkeypatch):
    """Planted reader bugs: a struct.error out of the raw reader is a crash; a record dropped
    silently is a finding on the undamaged file."""
    import struct

    import pykvmmu.trace.stream as S
    real = S.raw_records

    def crashing(*a, **k):
        raise struct.error("planted")
        yield

    def dropping(*a, **k):
        recs = list(real(*a, **k))
        yield from recs[:-1]

    data = _trace_input("demo.kvmcap")
    monkeypatch.setattr(S, "raw_records", crashing)
    _, fail = F.run_one(F.TARGETS["trace"], data)
    assert fail is not None and "planted" in fail.message
    monkeypatch.setattr(S, "raw_records", dropping)
    _, fail = F.run_one(F.TARGETS["trace"], data)
    assert fail is not None and "the undamaged trace's records" in fail.message
    monkeypatch.setattr(S, "raw_records", real)
    assert F.run_one(F.TARGETS["trace"], data)[1] is None


def test_trace_target_turns_a_read_that_never_ends_into_a_finding(monkeypatch):
    """A planted endless reader: the CPU-time alarm stops it and the input is a finding
    (before, an endless read hung the fuzzer: the slowness check runs after a read ends)."""
    import pykvmmu.fuzz.target_trace as TT
    import pykvmmu.trace.stream as S

    def endless(*a, **k):
        while True:
            sum(range(1000))
        yield

    monkeypatch.setattr(TT, "SLOW_S", 0.25)
    monkeypatch.setattr(S, "raw_records", endless)
    _, fail = F.run_one(F.TARGETS["trace"], _trace_input("demo.kvmcap"))
    assert fail is not None and "a read this slow is a loop" in fail.message

"""Binary trace readers on damaged input: every failure is a pykvmmu TraceError naming the
place, never a crash (struct.error, IndexError, MemoryError...), and a refused source yields
nothing; text sources beside a proc_version file pick their era from it."""
import gzip
import io
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pykvmmu import trace as T
from pykvmmu.trace.raw import raw_records
from pykvmmu.trace.tracedat import open_tracedat

L = os.path.join(os.path.dirname(__file__), "data", "live")
D = os.path.join(os.path.dirname(__file__), "data", "tracefmt")
V7 = gzip.open(os.path.join(L, "demo-v7-nocomp.dat.gz")).read()
V6 = gzip.open(os.path.join(L, "demo-v6.dat.gz")).read()


def _drain(data: bytes):
    try:
        src = open_tracedat(io.BytesIO(data), "t.dat")
        try:
            return sum(1 for _ in raw_records(src, all_events=True))
        finally:
            src.close()
    except T.TraceError as e:
        assert str(e)
        return None


def test_undamaged_files_decode():
    assert _drain(V7) == _drain(V6) == 529       # 478 kvmmmu + 51 kvm events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["v6", "v7"]), st.integers(0, 40000), st.binary(min_size=1, max_size=8))
def test_damaged_headers_raise_trace_errors(which, at, junk):
    data = bytearray(V6 if which == "v6" else V7)
    at = at % len(data) if which == "v7" else at
    data[at:at + len(junk)] = junk
    _drain(bytes(data))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40 * 4096), st.binary(min_size=1, max_size=8))
def test_damaged_pages_raise_trace_errors(at, junk):
    data = bytearray(V7)
    # the CPU data is page-aligned at the end of the file
    start = len(data) - 5 * 4096
    at = start + at % (5 * 4096)
    data[at:at + len(junk)] = junk
    _drain(bytes(data))


@pytest.mark.parametrize("cut", [10, 24, 900, 5000, len(V7) - 4096 - 100])
def test_truncated_trace_dat(cut):
    assert _drain(V7[:cut]) is None


def test_text_with_proc_version_beside_it(tmp_path):
    shutil.copy(os.path.join(L, "demo.trace.txt"), tmp_path / "trace.txt")
    with pytest.raises(T.TraceEraError):
        T.open_trace(str(tmp_path / "trace.txt"))
    shutil.copy(os.path.join(D, "sched_raw", "proc_version"), tmp_path / "proc_version")
    with T.open_trace(str(tmp_path / "trace.txt")) as st:
        assert st.kernel_version == "6.18.44-fc-v669" and st.era.name == "v6.14"
        assert len(list(st)) == 478
    with pytest.raises(T.TraceEraError, match="contradicts"):
        T.open_trace(str(tmp_path / "trace.txt"), era="v5.9")


def test_unknown_inputs():
    with pytest.raises(T.TraceError, match="No such file"):
        T.open_trace(os.path.join(D, "nope.txt"), era="latest")
    with pytest.raises(T.TraceError, match="header_page"):
        T.open_trace(D, era="latest")                   # a directory that is not a tracefs copy
    bad = b"\x17\x08\x44tracing9\x00" + bytes(64)
    with pytest.raises(T.UnsupportedTraceError, match="version '9'"):
        T.open_trace(io.BytesIO(bad))

"""The benchmark machinery itself (no timing): the report's statistics and target marks on a
synthetic run, the same-traffic copy's size, the numpy block loop and the interleaving."""
import json

import numpy as np

import report
from conftest import blocks, interleaved, same_traffic_copy


def _bench(group, ns, ratios, targets, **info):
    load = [{"loadavg": 1.0, "other_cpus": 0.5, "cpu_pressure": 0.25, "seconds": 0.5,
             "busy_s": 1.0, "own_s": 0.75}] * len(next(iter(ns.values())))
    return {"group": group, "name": f"test_{group}", "stats": {"median": 1.0, "min": 1.0},
            "extra_info": {**dict(interleaved=True, kind="core1t", elements=16 << 20,
                                  n_batch=16 << 20, rounds=5, ns_per_elem=ns, ratios=ratios,
                                  load=load, targets=targets), **info}}


def _render(tmp_path, benches):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"datetime": "now", "benchmarks": benches}))
    assert report.main([str(path), "--out", str(tmp_path)]) == 0
    return (tmp_path / "REPORT.md").read_text()


def test_report_marks_targets_from_the_median(tmp_path):
    data = {"datetime": "now", "benchmarks": [
        _bench("op 16M", {"core1t": [1, 1, 1, 1, 1], "memcpy": [1, 1, 1, 1, 1]},
               {"core1t/memcpy": [0.5, 0.95, 0.91, 0.92, 2.0]},
               [{"subject": "core1t", "vs": "memcpy", "min": 0.9}]),
        _bench("op2 16M", {"core1t": [1, 1, 1], "numpy": [1, 1, 1]},
               {"core1t/numpy": [2.9, 3.5, 2.5]}, [{"subject": "core1t", "vs": "numpy", "min": 3.0}]),
        _bench("scalar spte.x", {"core": [400, 450, 600], "reference": [900] * 3, "call": [80] * 3},
               {"core/reference": [2.25, 2.0, 1.5]}, [{"subject": "core", "max_ns": 500.0}], scalar=True),
    ]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    assert report.main([str(path), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "- [met] op 16M: core1t (out=, 1 thread) >= 0.9x memcpy: median 0.92x" in text
    assert "- [**NOT met**] op2 16M: core1t (out=, 1 thread) >= 3.0x numpy: median 2.90x" in text
    assert "every scalar SPTE/MMIO/role/RMP call < 500 ns: 1 of 1 functions" in text
    assert "2 of 3 target lines met" in text
    # other CPUs: (busy - own) summed over rounds / wall = 0.25 / 0.5; pressure 25%
    assert "0.50 (max 0.50) / 25% / 1.00" in text


def test_report_gives_the_copy_speed_ceiling_of_numpy_targets(tmp_path):
    """Ceiling = median of the per-round numpy/copy time ratios (not the ratio of the medians,
    not copy/numpy), on vs-numpy target lines only; "above" when under the goal; the marks
    stay the measured median's."""
    text = _render(tmp_path, [
        _bench("op3 16M", {"core1t": [1, 1, 1], "numpy": [2, 5, 3], "memcpy": [1, 2, 2]},
               {"core1t/numpy": [2.5, 2.6, 2.4], "core1t/memcpy": [1.0, 1.0, 1.0]},
               [{"subject": "core1t", "vs": "numpy", "min": 3.0},
                {"subject": "core1t", "vs": "memcpy", "min": 0.9}]),       # ceiling 2.00x
        _bench("op4 16M", {"core1t": [1, 1, 1], "numpy": [9, 15, 4], "memcpy": [3, 3, 1]},
               {"core1t/numpy": [3.5, 3.2, 3.1]},
               [{"subject": "core1t", "vs": "numpy", "min": 3.0}]),        # ceiling 4.00x
        _bench("op5 16M", {"core1t": [1, 1, 1], "numpy": [1, 1, 1]}, {"core1t/numpy": [5, 5, 5]},
               [{"subject": "core1t", "vs": "numpy", "min": 3.0}]),        # no copy: no ceiling
    ])
    lines = text.splitlines()
    assert ("- [**NOT met**] op3 16M: core1t (out=, 1 thread) >= 3.0x numpy: median 2.50x "
            "[2.40..2.60] (above the copy-speed ceiling 2.00x)") in lines
    assert "- [met] op3 16M: core1t (out=, 1 thread) >= 0.9x memcpy: median 1.00x [1.00..1.00]" in lines
    assert ("- [met] op4 16M: core1t (out=, 1 thread) >= 3.0x numpy: median 3.20x [3.10..3.50] "
            "(copy-speed ceiling 4.00x)") in lines
    assert "- [met] op5 16M: core1t (out=, 1 thread) >= 3.0x numpy: median 5.00x [5.00..5.00]" in lines
    assert "3 of 4 target lines met" in text
    assert ("per round its ratio to numpy is (numpy time / copy time) x its ratio to the copy: "
            "each \">= Nx numpy\" target line therefore gives the copy-speed ceiling") in text
    assert "judged like any other: met or NOT met from the measured median alone." in text


def test_report_gives_the_call_floor_of_scalar_targets(tmp_path):
    """Scalar lines: each function over 500 ns with its no-op call time, the ones whose no-op
    call alone takes 500 ns or more listed as under the call floor; a vs-reference goal gets
    the call-floor ceiling (median of per-round reference / no-op time) and, with a ``floor``
    baseline (the call without its checks), the binding-floor ceiling."""
    text = _render(tmp_path, [
        _bench("scalar m.fast", {"core": [300] * 3, "reference": [900] * 3, "call": [80] * 3},
               {"core/reference": [3.0] * 3}, [{"subject": "core", "max_ns": 500.0}], scalar=True),
        _bench("scalar m.slow", {"core": [700] * 3, "reference": [1400] * 3, "call": [200] * 3},
               {"core/reference": [2.0] * 3}, [{"subject": "core", "max_ns": 500.0}], scalar=True),
        _bench("scalar m.kw", {"core": [900] * 3, "reference": [1200, 1500, 1000], "call": [600, 500, 500],
                               "floor": [800, 1000, 1000]},
               {"core/reference": [1.3] * 3},
               [{"subject": "core", "max_ns": 500.0}, {"subject": "core", "vs": "reference", "min": 3.0}],
               scalar=True),
    ])
    assert ("every scalar SPTE/MMIO/role/RMP call < 500 ns: 1 of 3 functions; over: "
            "m.kw 900 ns (no-op call 500 ns), m.slow 700 ns (no-op call 200 ns); under the call "
            "floor (a function that does nothing, called the same way, already takes 500 ns or "
            "more): m.kw") in text
    assert ("- [**NOT met**] scalar m.kw: core >= 3.0x reference: median 1.30x [1.30..1.30] "
            "(above the call-floor ceiling 2.00x) (above the binding-floor ceiling 1.50x)") in text.splitlines()
    assert "| m.kw | 900 [900..900] | 1200 | 1.30x" in text


def test_report_vm_fault_section(tmp_path):
    """The headline (with the fault cache), the cache-off and first-fault workloads of the same
    rounds with the per-round ratios' median [q1..q3], and the cache hit rate."""
    text = _render(tmp_path, [_bench(
        "vm.fault random workload",
        {"core": [4000, 5000, 2000], "no cache": [20000, 10000, 20000],
         "first faults": [40000, 50000, 40000]},
        {"core/no cache": [5.0, 2.0, 10.0], "core/first faults": [10.0, 10.0, 20.0]},
        [{"subject": "core", "max_ns": 4000.0, "label": ">= 250,000 ops/s"}],
        kind="core", elements=200_000, workload=True, faults=1000, cache_hits=900,
        full_elements=200_000), _bench(
        "vm.fault small", {"core": [5000, 5000, 5000]}, {},
        [{"subject": "core", "max_ns": 4000.0, "label": ">= 250,000 ops/s"}],
        kind="core", elements=16_384, workload=True, full_elements=200_000)])
    lines = text.splitlines()
    assert "- [met] vm.fault random workload: core >= 250,000 ops/s: median 4.00 µs = 250,000/s" in lines
    assert ("- [**NOT met**] vm.fault small: core >= 250,000 ops/s: median 5.00 µs = 200,000/s "
            "(measured on 16,384 operations; the goal is for 200,000)") in lines
    assert ("200,000 random operations on an SNP VM (faults, 1 in 64 a conversion, 1 in 256 a "
            "punch hole): median 250,000 operations/s over 3 rounds (min 200,000, max 500,000)") in text
    assert "Fault cache: 900 of the workload's 1,000 faults (90.0%) were answered" in text
    assert "so the headline mostly measures cache hits." in text
    assert ("- the same workload with the fault cache off (every fault walks): 50,000 "
            "operations/s (rounds 50,000..100,000); headline / this 5.00x [2.00..10.00]") in lines
    assert ("- first faults only (a fresh VM, each of 200,000 gfns faulted once: every fault maps "
            "a new 4K page; none can hit the cache): 25,000 faults/s (rounds 20,000..25,000); "
            "headline / this 10.00x [10.00..20.00]") in lines


def test_report_gives_the_two_thread_copy_ceiling_of_thread_targets(tmp_path):
    """Ceiling = median of the per-round t(copy, 1 thread) / t(copy, 2 threads) (not the ratio
    of the medians, not its inverse), in the threads table and on the 1.8x target lines;
    "above" when under the goal; the marks stay the measured median's."""
    goal = [{"subject": "2 threads", "vs": "1 thread", "min": 1.8}]
    th = dict(threads=True, kind="2 threads", elements=1_000_000)
    text = _render(tmp_path, [
        _bench("threads a", {"2 threads": [8, 16, 9], "1 thread": [12.5, 25, 15],
                             "copy 1 thread": [10, 20, 12], "copy 2 threads": [8, 10, 12]},
               {"2 threads/1 thread": [1.5, 1.6, 1.75]}, goal, op="op.a", compute_bound=True,
               **th),                                       # ceiling 1.25x (medians: 1.20x)
        _bench("threads b", {"2 threads": [5, 5, 5], "1 thread": [10, 10, 10],
                             "copy 1 thread": [4, 6, 8], "copy 2 threads": [2, 3, 4]},
               {"2 threads/1 thread": [1.9, 1.85, 2.0]}, goal, op="op.b", compute_bound=True,
               **th),                                       # ceiling 2.00x
        _bench("threads c", {"2 threads": [5, 5, 5], "1 thread": [9, 9, 9],
                             "copy 1 thread": [3, 3, 3], "copy 2 threads": [2, 2, 2]},
               {"2 threads/1 thread": [1.9, 1.9, 1.9]}, goal, op="op.c", compute_bound=True,
               **th),                                       # ceiling 1.50x, goal met anyway
        _bench("threads d", {"2 threads": [5, 5, 5], "1 thread": [6, 6, 6]},
               {"2 threads/1 thread": [1.2, 1.2, 1.2]}, [], op="op.d", **th),   # no copies
    ])
    lines = text.splitlines()
    assert ("- [**NOT met**] threads a: 2 threads >= 1.8x 1 thread: median 1.60x [1.50..1.75] "
            "(above the two-thread copy ceiling 1.25x)") in lines
    assert ("- [met] threads b: 2 threads >= 1.8x 1 thread: median 1.90x [1.85..2.00] "
            "(two-thread copy ceiling 2.00x)") in lines
    assert ("- [met] threads c: 2 threads >= 1.8x 1 thread: median 1.90x [1.90..1.90] "
            "(above the two-thread copy ceiling 1.50x)") in lines
    assert "2 of 3 target lines met" in text
    # 1 thread vs copy: per-round copy / op time (0.80 each round in a)
    # limit = 1 thread / copy 2 threads per round: a 1.56x (1.5625, 2.5, 1.25), b 3.33x
    assert ("| op.a | 15.00 | 9.00 | 1.60x [1.50..1.75] | 1.25x [1.00..2.00] | 0.80x [0.80..0.80] | "
            "no, limit 1.56x (target 1.8x) (above the two-thread copy ceiling 1.25x) |") in text
    assert ("| op.b | 10.00 | 5.00 | 1.90x [1.85..2.00] | 2.00x [2.00..2.00] | 0.60x [0.40..0.80] | "
            "yes, limit 3.33x (target 1.8x) |") in text
    assert "| op.d | 6.00 | 5.00 | 1.20x [1.20..1.20] | - | - | no |" in text
    assert "two-thread copy speed-up (ceiling) [q1..q3]" in text


def test_statistics():
    assert report.med([3, 1, 2]) == 2
    assert report.iqr([1, 2]) == (1, 2)
    assert report.iqr([1, 2, 3, 4, 5]) == (2, 4)


def test_same_traffic_copy_moves_the_operations_bytes():
    copy = same_traffic_copy(8, 1, elements=1000)       # 8 B read + 1 B written per element
    cells = copy.__closure__
    arrays = [c.cell_contents for c in cells if isinstance(c.cell_contents, np.ndarray)]
    assert sorted(a.nbytes for a in arrays) == [4500, 4500]


def test_blocks_cover_every_element_once():
    a = np.arange(10)
    out = np.zeros(10, np.int64)
    t = np.empty(3, np.int64)

    def f(x, o, tt):
        assert tt.size == x.size <= 3
        o += x + 1
    blocks(f, (a, out), (t,), chunk=3)
    assert np.array_equal(out, a + 1)


class _FakeBenchmark:
    disabled = False

    def __init__(self):
        self.extra_info = {}
        self.group = None

    def pedantic(self, fn, rounds, iterations):
        for _ in range(rounds):
            fn()


def test_interleaved_rotates_and_records_ratios():
    calls = []
    b = _FakeBenchmark()
    res = interleaved(b, "g", {"core1t": lambda: calls.append("c") or 1,
                               "memcpy": lambda: calls.append("m") or 2,
                               "reference": (lambda: calls.append("r") or 3, 10)},
                      elements=100, rounds=4, check=lambda r: calls.append("checked"))
    assert res == {"core1t": 1, "memcpy": 2, "reference": 3}
    assert calls[:4] == ["c", "m", "r", "checked"]
    rounds = calls[4:16]
    assert rounds[:3] == ["c", "m", "r"] and rounds[3:6] == ["m", "r", "c"]
    info = b.extra_info
    assert info["rounds"] == 4 and len(info["load"]) == 4 and b.group == "g"
    assert set(info["ratios"]) == {"core1t/memcpy", "core1t/reference"}
    assert all(len(v) == 4 for v in info["ns_per_elem"].values())
    assert info["case_elements"] == {"core1t": 100, "memcpy": 100, "reference": 10}


def test_interleaved_self_timed_records_the_workloads_own_seconds():
    """``self_timed``: each case returns (seconds, ...) and those seconds, not the harness's
    clock, give ns per element and the per-round ratios (baseline / subject)."""
    def timed(seconds):
        it = iter(seconds)
        return lambda: (next(it, 1.0), "x")
    b = _FakeBenchmark()
    res = interleaved(b, "w", {"core": timed([9.0, 1.0, 2.0, 4.0]),
                               "slow": timed([9.0, 2.0, 2.0, 2.0])},
                      elements=1000, rounds=3, self_timed=True, bench_rounds=1)
    assert res == {"core": (9.0, "x"), "slow": (9.0, "x")}            # the warm-up
    info = b.extra_info
    assert info["ns_per_elem"] == {"core": [1e6, 2e6, 4e6], "slow": [2e6, 2e6, 2e6]}
    assert info["ratios"] == {"core/slow": [2.0, 1.0, 0.5]}


def test_report_judges_the_compute_bound_goal_only_where_the_run_is_compute_bound(tmp_path):
    """A 1.8x goal "when compute-bound" is judged where the bandwidth limit (median of per-round
    C / min(r, 1): C the copy's two-thread speed-up, r the one-thread speed vs the copy) reaches
    1.8x, and reported unjudged, with the limit and the share of it reached, where it does not;
    the count says how many were not judged."""
    goal = [{"subject": "2 threads", "vs": "1 thread", "min": 1.8, "when": "compute-bound"}]
    th = dict(threads=True, kind="2 threads", elements=1_000_000)
    text = _render(tmp_path, [
        _bench("threads m", {"2 threads": [8, 8, 8], "1 thread": [12, 12, 12],
                             "copy 1 thread": [10, 10, 10], "copy 2 threads": [8, 8, 9]},
               {"2 threads/1 thread": [1.5, 1.5, 1.5]}, goal, op="op.m", **th),     # limit 1.50x
        _bench("threads k", {"2 threads": [6, 6, 6], "1 thread": [10, 10, 10],
                             "copy 1 thread": [4, 4, 4], "copy 2 threads": [3, 3, 3]},
               {"2 threads/1 thread": [1.6, 1.7, 1.65]}, goal, op="op.k", **th),    # limit 3.33x
        _bench("threads f", {"2 threads": [4, 4, 4], "1 thread": [4.8, 4.8, 4.8],
                             "copy 1 thread": [9.6, 9.6, 9.6], "copy 2 threads": [7.2, 7.2, 7.2]},
               {"2 threads/1 thread": [1.2, 1.2, 1.2]}, goal, op="op.f", **th),     # limit 1.33x
        _bench("threads j", {"2 threads": [5, 5, 5], "1 thread": [10, 10, 10],
                             "copy 1 thread": [4, 4, 4], "copy 2 threads": [3, 3, 3]},
               {"2 threads/1 thread": [1.9, 2.0, 1.95]}, goal, op="op.j", **th),
    ])
    lines = text.splitlines()
    assert ("- [n/a] threads m: 2 threads >= 1.8x 1 thread (compute-bound batches): not judged, "
            "memory-bound in this run: its bandwidth limit is 1.50x [1.33..1.50] (two-thread copy "
            "speed-up / min(1, its speed vs the copy)); measured 1.50x [1.50..1.50] = 100% of that "
            "limit") in lines
    # faster than the copy with one thread (r = 2): the limit is the copy's own speed-up, 1.33x
    assert ("- [n/a] threads f: 2 threads >= 1.8x 1 thread (compute-bound batches): not judged, "
            "memory-bound in this run: its bandwidth limit is 1.33x [1.33..1.33] (two-thread copy "
            "speed-up / min(1, its speed vs the copy)); measured 1.20x [1.20..1.20] = 90% of that "
            "limit") in lines
    assert ("- [**NOT met**] threads k: 2 threads >= 1.8x 1 thread: median 1.65x [1.60..1.70] "
            "(above the two-thread copy ceiling 1.33x)") in lines
    assert "- [met] threads j: 2 threads >= 1.8x 1 thread: median 1.95x [1.90..2.00]" in text
    assert ("1 of 2 target lines met (2 not judged: a goal for compute-bound batches on a batch "
            "memory-bound in this run)") in text
    assert "| op.m | 12.00 | 8.00 | 1.50x [1.50..1.50] | 1.25x [1.11..1.25] | 0.83x [0.83..0.83] | no, limit 1.50x |" in text
    assert "yes, limit 3.33x (target 1.8x)" in text

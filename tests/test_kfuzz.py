"""Differential kernel fuzzing (pykvmmu.kfuzz, `pykvmmu fuzz kernel`, `pykvmmu fuzz --replay X.kvmcap`).

Offline tests need nothing; the live ones need /dev/kvm, root and tracefs and are skipped with the
reason elsewhere (they take a few seconds)."""
from __future__ import annotations

import glob
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pykvmmu import cli, kfuzz
from pykvmmu import kvmrun as K
from pykvmmu import record as R
from pykvmmu.audit import AuditReport, Verdict
from pykvmmu.errors import InputError

HERE = os.path.dirname(os.path.abspath(__file__))
REPROS = sorted(glob.glob(os.path.join(HERE, "data", "live", "kfuzz-*.kvmcap"))
                + glob.glob(os.path.join(HERE, "data", "audit", "kfuzz-*.kvmcap")))
CORPUS = kfuzz.load_corpus()
WHY = kfuzz.live_unavailable()
live = pytest.mark.skipif(WHY is not None, reason=f"live kernel fuzzing: {WHY}")


# ------------------------------------------------------------------------------ corpus
def test_corpus_loads_and_every_description_is_valid_and_runnable():
    assert len(CORPUS) >= 10
    for name, d in CORPUS:
        d.check()
        assert kfuzz.runnable_problem(d) is None, name
        assert K.GuestDesc.from_json(d.to_json()) == d


def test_corpus_covers_the_features_it_is_for():
    ds = [d for _, d in CORPUS]
    maps = [m for d in ds for m in d.page_tables.mappings]
    ops = [o for d in ds for r in d.runs for o in r.program]
    changes = [c for d in ds for r in d.runs for c in r.changes]
    assert any(m.page == "2M" for m in maps)
    assert any(len({m.gpa for m in d.page_tables.mappings}) < len(d.page_tables.mappings) for d in ds)  # alias
    assert {o.flush for o in ops if o.kind == "pte_write"} == {"invlpg", "cr3", "none"}
    assert {"cr3_reload", "invlpg", "fetch", "read", "write"} <= {o.kind for o in ops}
    assert any(d.slot_of(m.gpa) is None for d in ds for m in d.page_tables.mappings)                 # MMIO
    assert {"move", "delete", "flags"} <= {c.action for c in changes}
    slots = [s for d in ds for s in d.memslots]
    assert any("readonly" in s.flags for s in slots) and any("dirty_log" in s.flags for s in slots)
    assert any(s.guest_memfd for s in slots) and any(not d.registers.cr0_wp for d in ds)


def test_load_corpus_refuses_a_missing_directory(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        kfuzz.load_corpus(str(tmp_path / "nope"))
    (tmp_path / "bad.json").write_text('{"memslots": []}')
    with pytest.raises(InputError, match="memslot"):
        kfuzz.load_corpus(str(tmp_path))


# ------------------------------------------------------------------------------ runnability, mutation
def _base():
    return dict(CORPUS)["aliases"]


@pytest.mark.parametrize("edit,msg", [
    (lambda d: d.runs[0].program.append(K.Op("write", d.page_tables.mappings[1].gva, 1)), "not writable"),
    (lambda d: d.runs[0].program.append(K.Op("read", 0x7000000000)), "no present mapping"),
    (lambda d: d.runs[0].program.append(K.Op("read", d.page_tables.mappings[0].gva + 4)), "aligned 8-byte"),
    (lambda d: d.runs[0].program.append(K.Op("spin")), "never reaches its HLT"),
    (lambda d: d.runs[0].program.append(K.Op("pte_write", d.page_tables.mappings[0].gva,
                                             0x40000 | K.PT_P | K.PT_U)), "changes P/W/U/NX"),
    (lambda d: d.runs[0].program.append(K.Op("pte_write", d.page_tables.mappings[0].gva,
                                             0x90000 | K.PT_P | K.PT_W | K.PT_U)), "outside its mapping"),
    (lambda d: d.runs[0].program.append(K.Op("fetch", d.page_tables.mappings[0].gva)), "fetch"),
    (lambda d: d.page_tables.mappings.append(K.Mapping(0x7000000, 0x10000)) or
        d.runs[0].program.append(K.Op("write", 0x7000000, 1)), "fixed page"),
    (lambda d: setattr(d.page_tables.mappings[0], "u", False), "U=0"),
])
def test_runnable_problem_names_what_would_fault(edit, msg):
    d = kfuzz._copy(_base())
    assert kfuzz.runnable_problem(d) is None
    edit(d)
    assert msg in kfuzz.runnable_problem(d)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, 100), depth=st.integers(1, 4))
def test_mutation_keeps_descriptions_valid_and_runnable(seed, which, depth):
    rng = random.Random(seed)
    name, d = CORPUS[which % len(CORPUS)]
    before = d.to_json()
    for _ in range(depth):
        d = kfuzz.mutate(d, rng)
        d.check()
        assert kfuzz.runnable_problem(d) is None
        assert K.GuestDesc.from_json(d.to_json()) == d
    assert CORPUS[which % len(CORPUS)][1].to_json() == before        # the parent is never changed


def test_mutation_changes_descriptions_and_is_seeded():
    d = _base()
    muts = [kfuzz.mutate(d, random.Random(s)) for s in range(40)]
    assert sum(m != d for m in muts) >= 30
    assert kfuzz.mutate(d, random.Random(3)) == kfuzz.mutate(d, random.Random(3))
    with pytest.raises(InputError, match="GuestDesc"):
        kfuzz.mutate({}, random.Random(1))
    with pytest.raises(InputError, match="random.Random"):
        kfuzz.mutate(d, 1)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_guests_are_runnable(seed):
    assert kfuzz.runnable_problem(kfuzz.random_desc(random.Random(seed))) is None


# ------------------------------------------------------------------------------ evidence, coverage
def test_evidence_names_check_event_values_and_bits():
    rep = AuditReport()
    rep.add(Verdict("set_spte", "disagreed", 17, "kvm_mmu_set_spte", what="spte at sptep 0xffff8880",
                    model=0x8000000001234a07, kernel=0x8000000001234a05, diff=0x2, bits=("W",),
                    inferred=("old SPTE: last seen",)))
    text = kfuzz.evidence(rep)
    for s in ("undecided", "model wrong", "not knowable from the trace", "kernel differs from upstream",
              "check set_spte, record 17 kvm_mmu_set_spte", "model  0x8000000001234a07",
              "kernel 0x8000000001234a05", "differing 0x2: W", "inferred inputs: old SPTE"):
        assert s in text, s


def test_coverage_counts_kvmmmu_kinds_and_role_words():
    class Rec:
        def __init__(self, event, role=None):
            self.event, self.role = event, role
    cap = R.Capture(meta={}, header_page="", header_event="",
                    formats={"kvmmmu/kvm_mmu_get_page": "", "kvmmmu/kvm_mmu_set_spte": "", "kvm/kvm_exit": ""})
    cov = kfuzz.Coverage()
    assert cov.add(cap, [Rec("kvm_mmu_get_page", 0x3704), Rec("kvm_exit"), Rec("kvm_mmu_get_page", 0x3704)]) == 2
    assert cov.add(cap, [Rec("kvm_mmu_get_page", 0x3701)]) == 1
    assert cov.line() == "events 1/2, roles 2"
    assert "       0 kvm_mmu_set_spte" in cov.table() and "0x3704" in cov.table()


# ------------------------------------------------------------------------------ replay offline
@pytest.mark.parametrize("path", REPROS, ids=os.path.basename)
def test_stored_reproducers_replay_offline_and_agree(path):
    """The fuzzer's past findings, fixed in the model since: regression tests."""
    out = []
    (res,) = kfuzz.replay_kernel(path, live=False, emit=out.append)
    assert res.offline == [] and not res.still_fails and res.live is None
    rep = res.offline_report
    assert rep.records > 0 and rep.total("agreed") > 0 and rep.total("disagreed") == 0
    assert "offline (6.18.44" in out[0] and ": ok [" in out[0] and "skipped" in out[1]


def _failing_copy(tmp_path):
    cap = R.read_capture(REPROS[0])
    cap.meta["guest_error"] = "run 0: no HLT within 2.0 s"
    p = str(tmp_path / "kernel-guest-0-1.kvmcap")
    R.write_capture(p, cap)
    return p


def test_replay_offline_reports_a_finding_and_exit_status(tmp_path, capsys):
    p = _failing_copy(tmp_path)
    (res,) = kfuzz.replay_kernel(p, live=False, emit=lambda s: None)
    assert res.still_fails and res.offline[0][0] == "guest"
    assert cli.main(["fuzz", "--replay", p, "--offline"]) == 1
    assert "guest: run 0: no HLT" in capsys.readouterr().out
    assert cli.main(["fuzz", "--replay", REPROS[0], "--offline"]) == 0
    assert cli.main(["fuzz", "--replay", str(tmp_path), "--offline"]) == 1      # a directory of them
    (tmp_path / "x.txt").write_text("notes")                                   # .txt files are skipped
    assert cli.main(["fuzz", "kernel", "--replay", str(tmp_path), "--offline"]) == 1


def test_replay_refuses_a_capture_without_a_guest(tmp_path, capsys):
    cap = R.read_capture(REPROS[0])
    cap.guest = None
    p = str(tmp_path / "cmd.kvmcap")
    R.write_capture(p, cap)
    with pytest.raises(InputError, match="no guest.json"):
        kfuzz.replay_kernel(p, live=False)
    assert cli.main(["fuzz", "--replay", p]) == 1
    assert "no guest.json" in capsys.readouterr().err
    assert cli.main(["fuzz", "--replay", str(tmp_path / "missing.kvmcap")]) == 2


# ------------------------------------------------------------------------------ CLI dispatch
def test_fuzz_list_mentions_the_kernel_target(capsys):
    assert cli.main(["fuzz", "--list"]) == 0
    out = capsys.readouterr().out
    assert "kernel   (live, root)" in out and f"seed corpus: {len(CORPUS)} guest descriptions" in out


@pytest.mark.parametrize("argv", [["fuzz", "kernel"], ["fuzz-kernel"]])
def test_fuzz_kernel_dispatch_passes_the_options(argv, monkeypatch, tmp_path, capsys):
    got = {}

    def fake(seconds, **kw):
        got.update(kw, seconds=seconds)
        s = kfuzz.KernelStats(seed=kw["seed"], runs=3, from_corpus=3, audited=30, agreed_runs=3, elapsed=1.5)
        s.total = AuditReport()
        s.findings = [kfuzz.Finding("audit", "1 disagreements: ...", str(tmp_path / "k.kvmcap"))]
        return s
    monkeypatch.setattr(kfuzz, "live_unavailable", lambda: None)
    monkeypatch.setattr(kfuzz, "fuzz_kernel", fake)
    rc = cli.main(argv + ["--time", "7", "--runs", "3", "--seed", "9", "--out", str(tmp_path), "--keep-going",
                          "--shrink", "0"])
    assert rc == 1
    assert got["seconds"] == 7 and got["runs"] == 3 and got["seed"] == 9 and got["out_dir"] == str(tmp_path)
    assert got["keep_going"] is True and got["shrink_s"] == 0 and got["corpus"] is None
    cap = capsys.readouterr()
    assert "kernel: 3 runs (2.0/s), 30 records audited, runs agreed 3 disagreed 0" in cap.err
    assert "check" in cap.out and "agreement: 100.00%" in cap.out and "reproducer: " in cap.out


def test_fuzz_kernel_without_a_live_kernel_says_why(monkeypatch, capsys):
    monkeypatch.setattr(kfuzz, "live_unavailable", lambda: "no /dev/kvm on this host")
    assert cli.main(["fuzz", "kernel", "--time", "1"]) == 2
    assert "cannot run guests here: no /dev/kvm on this host" in capsys.readouterr().err
    assert cli.main(["fuzz", "kernel", "--engine", "atheris"]) == 2


# ------------------------------------------------------------------------------ live
@live
def test_live_fuzz_runs_the_corpus_and_audits_every_run(tmp_path):
    seen = []
    s = kfuzz.fuzz_kernel(30, runs=4, seed=1, out_dir=str(tmp_path), progress=seen.append, shrink_s=0)
    assert s.runs == 4 and s.from_corpus == 4 and len(seen) == 4
    assert s.audited_runs == 4 and s.audited > 0 and s.total.records == s.audited
    assert s.findings == [] and s.disagreed_runs == 0 and list(tmp_path.iterdir()) == []
    assert "kvm_mmu_get_page" in s.coverage.events and len(s.coverage.roles) >= 2
    assert len(s.coverage.known) >= 10


@live
def test_live_replay_reruns_the_guest(capsys):
    out = []
    (res,) = kfuzz.replay_kernel(REPROS[0], emit=out.append)
    assert res.live == [] and res.live_report.total("disagreed") == 0 and res.live_report.records > 0
    assert not res.still_fails and "live (" in out[1] and ": ok [" in out[1]


@live
def test_live_cli_fuzz_kernel(tmp_path, capsys):
    assert cli.main(["fuzz", "kernel", "--runs", "2", "--time", "30", "--out", str(tmp_path), "--seed", "4"]) == 0
    cap = capsys.readouterr()
    assert "kernel: 2 runs" in cap.err and "kvmmmu event kinds" in cap.out and "role words" in cap.out


def test_merged_report_sums_counts_and_tags_verdicts_with_the_guest():
    a, b, total = AuditReport(records=5), AuditReport(records=7), AuditReport()
    a.add(Verdict("role", "agreed", 1, "kvm_mmu_get_page"))
    a.add(Verdict("role", "disagreed", 2, "kvm_mmu_get_page", what="root", model=1, kernel=3, diff=2))
    b.add(Verdict("set_spte", "not_checkable", 4, "kvm_mmu_set_spte", reason="no gfn"))
    b.add(Verdict("set_spte", "agreed", 5, "kvm_mmu_set_spte", inferred=("old SPTE: x",)))
    kfuzz._merge(total, a, 1)
    kfuzz._merge(total, b, 2)
    assert total.records == 12 and total.total("agreed") == 2 and total.total("disagreed") == 1
    assert total.total("not_checkable") == 1 and total.inferred_inputs["old SPTE"] == 1
    assert [v.what for v in total.verdicts] == ["guest 1: root", "guest 2"]
    assert a.verdicts[0].what == "root"                       # the run's own report is unchanged
    assert "agreement: 66.67%" in total.format_table()


def test_mutants_reach_every_kind_of_edit():
    rng = random.Random(5)
    seen = set()
    for i in range(400):
        d = kfuzz.mutate(CORPUS[i % len(CORPUS)][1], rng)
        pt = d.page_tables
        seen |= {k for k in ("efer_nx", "cr4_pke") if getattr(d.registers, k) != (k == "efer_nx")}
        seen |= {"cr0_wp"} if not d.registers.cr0_wp and CORPUS[i % len(CORPUS)][1].registers.cr0_wp else set()
        seen |= {"2M over slot 0" for m in pt.mappings if m.page == "2M" and m.gpa == 0}
        seen |= {"page table mapped" for m in pt.mappings if pt.base <= m.gpa < pt.base + pt.size}
        seen |= {"runs added" for _ in [0] if len(d.runs) > len(CORPUS[i % len(CORPUS)][1].runs)}
        seen |= {c.action for r in d.runs for c in r.changes}
    assert seen >= {"efer_nx", "cr4_pke", "cr0_wp", "2M over slot 0", "page table mapped", "runs added",
                    "delete", "move", "flags"}, seen


def test_a_fault_through_a_page_table_clears_its_flood_count():
    """kfuzz-flood-clear: three emulated writes to a 2 MiB PDE (gfn 0x12, level-2 SP role 0x3702)
    with a read fault through the same page directory after the first: FNAME(fetch) clears the
    flood count of every SP on its shadow walk before kvm_mmu_spte_requested, so the kernel does
    not zap (the audit once predicted a flood zap here)."""
    from pykvmmu import audit as A
    path = os.path.join(HERE, "data", "live", "kfuzz-flood-clear.kvmcap")
    rep = A.audit(path)
    assert rep.total("disagreed") == 0 and rep.events["kvm_mmu_spte_requested"] >= 1
    recs = kfuzz._records(path)
    writes = [r for r in recs if r.event == "kvm_mmu_pagetable_walk" and r.fields["addr"] == 0x602000]
    assert [r.fields["pferr"] for r in writes] == [2, 2, 3, 2, 3, 2]       # write walks of the PDE
    read = [r for r in recs if r.event == "kvm_mmu_pagetable_walk" and r.fields["addr"] == 0x40400fa8]
    assert writes[1].line_no < read[0].line_no < writes[2].line_no         # a fault through the PD
    zaps = [r for r in recs if r.event == "kvm_mmu_prepare_zap_page" and r.fields["gfn"] == 0x12]
    assert len(zaps) == 1 and zaps[0].line_no > writes[-1].line_no + 10    # only the teardown


def test_progress_line_only_on_a_terminal():
    from pykvmmu.commands.kfuzz import _Status

    class Tty:
        def __init__(self, tty):
            self.tty, self.text = tty, ""

        def isatty(self):
            return self.tty

        def write(self, s):
            self.text += s

        def flush(self):
            pass
    s = kfuzz.KernelStats(runs=2, elapsed=1.0, audited=9)
    on, off, quiet = Tty(True), Tty(False), Tty(True)
    for stream, q in ((on, False), (off, False), (quiet, True)):
        st = _Status(q, stream)
        st(s)
        st(s)                                   # within 0.5 s: not redrawn
        st.clear()
    assert on.text == "\r\033[K" + s.line() + "\r\033[K" and off.text == "" and quiet.text == ""
    assert s.line().startswith("kernel: 2 runs (2.0/s), 9 records audited, runs agreed 0 disagreed 0")


@live
def test_live_replay_skips_a_guest_the_host_refuses(tmp_path):
    cap = R.read_capture(REPROS[0])
    cap.guest["registers"]["cr4_smep"] = True
    p = str(tmp_path / "smep.kvmcap")
    R.write_capture(p, cap)
    if K.host_refusal(K.GuestDesc.from_dict(cap.guest), K.detect_host()) is None:
        pytest.skip("this host runs SMEP guests")
    (res,) = kfuzz.replay_kernel(p, emit=lambda s: None)
    assert res.live is None and "cannot run the guest" in res.live_skipped and not res.still_fails


@live
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_live_cli_fuzz_kernel_interrupted_summarises_and_restores(tmp_path, sig):
    from test_live_kvm import _cli_env, _kvm_fds, _snapshot

    def private_mounts():
        return [m for m in R._tracefs_mounts() if "pykvmmu-tracefs-" in m]
    before, mounts = _snapshot(), private_mounts()
    p = subprocess.Popen([sys.executable, "-m", "pykvmmu", "fuzz", "kernel", "--time", "60", "--out",
                          str(tmp_path), "--seed", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=_cli_env(), cwd=str(tmp_path),
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(2.5)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "(interrupted)" in out and "kernel: " in err and "agreement:" in out
    assert _snapshot() == before and _kvm_fds() == []
    deadline = time.monotonic() + 5                         # another user's recorder may be mid-run
    while not set(private_mounts()) <= set(mounts) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(private_mounts()) <= set(mounts)             # the child's private tracefs is unmounted

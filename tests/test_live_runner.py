"""The guest runner's host-independent parts: instruction encoder, page-table builder, guest
descriptions (JSON round trip, refusals), host refusals, capture file round trip.  No KVM needed."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import subprocess

import pytest

from pykvmmu import kvmrun as K
from pykvmmu import record as R
from pykvmmu.errors import InputError, PykvmmuError

DATA = os.path.join(os.path.dirname(__file__), "data", "live")


# --- encoder --------------------------------------------------------------------------------
# (assembler call, bytes) from the SDM vol. 2 encodings
ENCODINGS = [
    (lambda a: a.mov_imm(K.RAX, 0x1122334455667788), "48b88877665544332211"),
    (lambda a: a.mov_imm(12, 1), "49bc0100000000000000"),
    (lambda a: a.mov_imm(K.RDX, (1 << 64) - 1), "48baffffffffffffffff"),
    (lambda a: a.store(K.RBX, K.RAX), "488903"),
    (lambda a: a.store(K.RSP, K.RAX), "48890424"),
    (lambda a: a.store(K.RBP, K.RCX), "48894d00"),
    (lambda a: a.store(9, 10), "4d8911"),
    (lambda a: a.load(K.RAX, K.RBX), "488b03"),
    (lambda a: a.load(9, 13), "4d8b4d00"),
    (lambda a: a.load(K.RDX, 12), "498b1424"),
    (lambda a: a.call(K.RBX), "ffd3"),
    (lambda a: a.call(11), "41ffd3"),
    (lambda a: a.jmp(K.RBX), "ffe3"),
    (lambda a: a.invlpg(K.RAX), "0f0138"),
    (lambda a: a.invlpg(K.RBX), "0f013b"),
    (lambda a: a.invlpg(8), "410f0138"),
    (lambda a: a.mov_to_cr3(K.RAX), "0f22d8"),
    (lambda a: a.mov_from_cr3(K.RAX), "0f20d8"),
    (lambda a: a.mov_to_cr3(15), "410f22df"),
    (lambda a: a.wrmsr(), "0f30"),
    (lambda a: a.rdmsr(), "0f32"),
    (lambda a: a.out_dx_al(), "ee"),
    (lambda a: a.hlt(), "f4"),
    (lambda a: a.ret(), "c3"),
    (lambda a: a.jmp_self(), "ebfe"),
]


@pytest.mark.parametrize("emit,hexbytes", ENCODINGS)
def test_encoder_bytes(emit, hexbytes):
    assert emit(K.Asm()).code.hex() == hexbytes


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) not installed")
def test_encoder_agrees_with_objdump(tmp_path):
    a = K.Asm()
    a.mov_imm(K.RBX, 0x1000).store(K.RBX, K.RAX).load(K.RAX, K.RBX).call(K.RBX).jmp(K.RBX).invlpg(K.RBX)
    a.mov_from_cr3(K.RAX).mov_to_cr3(K.RAX).wrmsr().rdmsr().out_dx_al().hlt()
    f = tmp_path / "code.bin"
    f.write_bytes(bytes(a.code))
    out = subprocess.run(["objdump", "-D", "-b", "binary", "-mi386:x86-64", "-M", "intel", str(f)],
                         capture_output=True, text=True, check=True).stdout
    insns = [" ".join(line.split("\t")[2].split()) for line in out.splitlines() if line.count("\t") >= 2]
    assert insns == ["movabs rbx,0x1000", "mov QWORD PTR [rbx],rax", "mov rax,QWORD PTR [rbx]", "call rbx",
                     "jmp rbx", "invlpg BYTE PTR [rbx]", "mov rax,cr3", "mov cr3,rax", "wrmsr", "rdmsr",
                     "out dx,al", "hlt"]


@pytest.mark.parametrize("bad", [-1, 16, True, "rax", 1.0])
def test_encoder_refuses_bad_register(bad):
    with pytest.raises(InputError, match="register"):
        K.Asm().store(bad, K.RAX)


@pytest.mark.parametrize("imm", [-1, 1 << 64])
def test_encoder_refuses_wide_immediate(imm):
    with pytest.raises(InputError, match="imm64"):
        K.Asm().mov_imm(K.RAX, imm)


# --- page tables ----------------------------------------------------------------------------
def _entry(tables, table_gpa, idx):
    return struct.unpack_from("<Q", tables[table_gpa], idx * 8)[0]


def _walk(tables, root, gva, levels):
    """Follow the built tables like the MMU: the entries met from the root to the leaf."""
    out, table = [], root
    for level in range(levels, 0, -1):
        e = _entry(tables, table, (gva >> (12 + 9 * (level - 1))) & 0x1FF)
        out.append(e)
        if level == 2 and e & K.PT_PS or level == 1:
            break
        table = e & 0x000FFFFFFFFFF000
    return out


def test_page_tables_4k_leaf_bits_and_walk():
    m = K.Mapping(gva=0x7F1234000, gpa=0x55000, w=False, nx=True, a=True, d=True)
    tables, leaves, root = K.build_page_tables(4, 0x10000, 0x10000, [m])
    assert root == 0x10000 and len(tables) == 4
    walk = _walk(tables, root, m.gva, 4)
    assert len(walk) == 4
    for e in walk[:3]:                   # non-leaf: P|W|U|A, next table in the region
        assert e & 0xFFF == K.PT_P | K.PT_W | K.PT_U | K.PT_A and 0x10000 < e & ~0xFFF < 0x20000
    assert walk[3] == 0x55000 | K.PT_P | K.PT_U | K.PT_A | K.PT_D | K.PT_NX
    ea, pte, lvl = leaves[m.gva]
    assert pte == walk[3] and lvl == 1 and _entry(tables, ea & ~0xFFF, (ea & 0xFFF) // 8) == pte


def test_page_tables_2m_leaf_has_ps_at_level_2():
    m = K.Mapping(gva=0x40000000, gpa=0x600000, page="2M", count=2)
    tables, leaves, root = K.build_page_tables(4, 0, 0x10000, [m])
    for k in range(2):
        walk = _walk(tables, root, m.gva + k * K.HUGE, 4)
        assert len(walk) == 3
        assert walk[2] == (0x600000 + k * K.HUGE) | K.PT_P | K.PT_W | K.PT_U | K.PT_PS
        assert leaves[m.gva + k * K.HUGE][2] == 2


def test_page_tables_5_level_uses_bits_48_to_56():
    gva = (3 << 48) | 0x5000
    tables, leaves, root = K.build_page_tables(5, 0, 0x10000, [K.Mapping(gva=gva, gpa=0x9000)])
    assert len(tables) == 5
    assert _entry(tables, root, 3) & K.PT_P and all(_entry(tables, root, i) == 0 for i in range(512) if i != 3)
    assert _walk(tables, root, gva, 5)[-1] == 0x9000 | K.PT_P | K.PT_W | K.PT_U


def test_page_tables_aliases_share_the_gpa_and_tables():
    ms = [K.Mapping(gva=0x1000000, gpa=0x20000), K.Mapping(gva=0x1001000, gpa=0x20000, w=False)]
    tables, leaves, root = K.build_page_tables(4, 0, 0x10000, ms)
    assert len(tables) == 4                                  # one table per level, shared
    assert leaves[0x1000000][1] & ~0xFFF == leaves[0x1001000][1] & ~0xFFF == 0x20000
    assert leaves[0x1000000][1] & K.PT_W and not leaves[0x1001000][1] & K.PT_W


def test_page_tables_refusals():
    with pytest.raises(InputError, match="mapped twice"):
        K.build_page_tables(4, 0, 0x10000, [K.Mapping(gva=0x1000, gpa=0), K.Mapping(gva=0x1000, gpa=0x2000)])
    with pytest.raises(InputError, match="2M page already maps"):
        K.build_page_tables(4, 0, 0x10000, [K.Mapping(gva=0, gpa=0, page="2M"), K.Mapping(gva=0x3000, gpa=0)])
    with pytest.raises(InputError, match="page_tables.size"):
        K.build_page_tables(4, 0, 0x3000, [K.Mapping(gva=0x1000, gpa=0)])


# --- descriptions ---------------------------------------------------------------------------
def test_demo_description_round_trips_through_json():
    for gm in (False, True):
        d = K.demo_guest(guest_memfd=gm)
        text = d.to_json()
        assert K.GuestDesc.from_json(text) == d
        assert json.loads(text) == d.to_dict()


def test_fixture_description_is_the_demo_guest():
    with open(os.path.join(DATA, "demo.guest.json")) as f:
        assert K.GuestDesc.from_json(f.read()) == K.demo_guest(guest_memfd=True)


def test_compile_layout():
    d = K.demo_guest()
    tables, leaves, root, code, entries, fetch = d.compile()
    assert len(entries) == len(d.runs) + 1
    for r in range(len(d.runs)):                 # each run's code ends in the HLT before the next entry
        assert code[entries[r + 1] - 1] == 0xF4
    pro = code[entries[-1]:]                     # the PVM prologue: WRMSR 0x4b564d10 <- vif_gpa, jmp run 0
    assert pro.startswith(bytes.fromhex("48b9") + struct.pack("<Q", K.PVM_MSR_VIF))
    assert bytes.fromhex("48b8") + struct.pack("<Q", d.vif_gpa) in pro and b"\x0f\x30" in pro
    assert fetch == [0x25000, 0x25000]           # both runs fetch the RET page
    assert root == d.page_tables.base
    # the code, stack and page-table window mappings the runner adds
    assert leaves[d.code_gva][1] & ~0xFFF == d.code_gpa and not leaves[d.code_gva][1] & K.PT_W
    assert leaves[d.stack_gva][1] & K.PT_NX
    assert leaves[d.page_tables.window_gva][1] & 0x000FFFFFFFFFF000 == d.page_tables.base


def test_pte_write_targets_the_leaf_through_the_window():
    d = K.demo_guest()
    d.runs = [K.Run(program=[K.Op("pte_write", 0x1B00000, 0x27067, "none")])]
    tables, leaves, root, code, entries, fetch = d.compile()
    ea = leaves[0x1B00000][0]
    want = d.page_tables.window_gva + (ea - d.page_tables.base)
    assert code.startswith(bytes.fromhex("48bb") + struct.pack("<Q", want)
                           + bytes.fromhex("48b8") + struct.pack("<Q", 0x27067) + bytes.fromhex("488903f4"))


def _bad(mutate):
    d = K.demo_guest()
    mutate(d)
    return d


BAD = [
    (lambda d: setattr(d, "memslots", []), "at least one memslot"),
    (lambda d: d.memslots.append(K.Memslot(0, 0x9000000, 0x1000)), "used twice"),
    (lambda d: d.memslots.append(K.Memslot(9, 0x100000, 0x1000)), "overlaps"),
    (lambda d: d.memslots.append(K.Memslot(9, 0x9000001, 0x1000)), "gpa=0x9000001: must be a multiple"),
    (lambda d: d.memslots.append(K.Memslot(9, 0x9000000, 0x1000, ["huge"])), "flags"),
    (lambda d: d.memslots.append(K.Memslot(9, 0x9000000, 0x1000, ["readonly"], True)), "guest_memfd"),
    (lambda d: d.memslots.append(K.Memslot(9, 0x9000000, 0x1000, ["dirty_log"], True)), "dirty-logged"),
    (lambda d: (d.memslots.append(K.Memslot(9, 0x9000000, 0x1000, [], True)),
                d.runs[1].changes.append(K.SlotChange("flags", 9, flags=["dirty_log"]))), "dirty-logged"),
    (lambda d: setattr(d.page_tables, "levels", 3), "levels=3"),
    (lambda d: d.page_tables.mappings.append(K.Mapping(0x5000000, 0, page="1G")), "1 GiB"),
    (lambda d: d.page_tables.mappings.append(K.Mapping(0x5001000, 0, page="2M")), "multiple of 0x200000"),
    (lambda d: d.page_tables.mappings.append(K.Mapping(0x5000000, 0, w=1)), "w=1: must be true or false"),
    (lambda d: d.page_tables.mappings.append(K.Mapping(1 << 47, 0)), "gva"),
    (lambda d: setattr(d, "code_gpa", 0x800000), "code .* writable memslot"),
    (lambda d: setattr(d, "stack_gpa", 0x1000), "overlaps"),
    (lambda d: setattr(d.registers, "cr0_wp", "yes"), "cr0_wp"),
    (lambda d: setattr(d.registers, "efer_nx", False), "reserved bit when EFER.NX=0"),
    (lambda d: setattr(d, "timeout", 0), "timeout"),
    (lambda d: setattr(d, "runs", []), "at least one run"),
    (lambda d: d.runs[0].program.append(K.Op("jump")), "kind='jump'"),
    (lambda d: d.runs[0].program.append(K.Op("out", 0x10000)), "port"),
    (lambda d: d.runs[0].program.append(K.Op("write", 0x1000, 1 << 64)), "value"),
    (lambda d: d.runs[0].program.append(K.Op("pte_write", 0x7000000, 0)), "not mapped by a leaf"),
    (lambda d: d.runs[0].program.append(K.Op("fetch", 0x7000000)), "not mapped"),
    (lambda d: d.runs[0].program.append(K.Op("invlpg", 0, flush="sfence")), "flush"),
    (lambda d: d.runs[0].program.extend([K.Op("write", 0x1000000, 1)] * 400), "do not fit"),
    (lambda d: d.runs[1].changes.append(K.SlotChange("resize", 1)), "action"),
    (lambda d: d.runs[1].changes.append(K.SlotChange("delete", 42)), "no such memslot"),
    (lambda d: d.runs[1].changes.append(K.SlotChange("delete", 0)), "outside a writable memslot"),
    (lambda d: d.runs[1].changes.append(K.SlotChange("move", 1, 0x800000)), "overlaps"),
    (lambda d: setattr(d.page_tables, "window_gva", None), "window_gva"),
]


@pytest.mark.parametrize("mutate,msg", BAD)
def test_bad_descriptions_are_refused(mutate, msg):
    with pytest.raises(InputError, match=msg):
        _bad(mutate).check()


@pytest.mark.parametrize("text,msg", [("[1]", "JSON object"), ("{", "not JSON"),
                                      ('{"memslots": [], "bogus": 1}', "unknown or missing field"),
                                      ('{"memslots": [{"slot": 0}]}', "unknown or missing field")])
def test_bad_json_is_refused(text, msg):
    with pytest.raises(InputError, match=msg):
        K.GuestDesc.from_json(text)


def test_load_desc_missing_file(tmp_path):
    with pytest.raises(InputError, match="No such file"):
        K.load_desc(str(tmp_path / "nope.json"))


def test_run_guest_refuses_a_bad_description_before_touching_kvm():
    with pytest.raises(InputError, match="GuestDesc"):
        K.run_guest({"memslots": []})
    with pytest.raises(InputError, match="levels"):
        K.run_guest(_bad(lambda d: setattr(d.page_tables, "levels", 6)), kvm_path="/nonexistent/kvm")


# --- hosts ----------------------------------------------------------------------------------
def _host(kind="pvm", la57=False, **caps):
    c = {"user_memory2": 1, "guest_memfd": 1, "readonly_mem": 1, "guest_memfd_flags": 3}
    c.update(caps)
    return K.HostInfo(kind=kind, api_version=12, caps=c, la57=la57, modules=["kvm"])


def test_host_refusals_name_the_reason():
    d = K.demo_guest(guest_memfd=True)
    assert K.host_refusal(d, _host()) is None
    assert "U=1" in K.host_refusal(_bad(lambda x: x.page_tables.mappings.append(
        K.Mapping(0x5000000, 0x20000, u=False))), _host())
    assert K.host_refusal(_bad(lambda x: x.page_tables.mappings.append(
        K.Mapping(0x5000000, 0x20000, u=False))), _host("vmx")) is None
    five = _bad(lambda x: setattr(x.page_tables, "levels", 5))
    assert "LA57" in K.host_refusal(five, _host())
    assert K.host_refusal(five, _host(la57=True)) is None
    assert "guest_memfd" in K.host_refusal(d, _host(guest_memfd=0))
    assert "mmap" in K.host_refusal(d, _host(guest_memfd_flags=0))
    assert "READONLY" in K.host_refusal(d, _host(readonly_mem=0))
    assert "unknown KVM vendor" in K.host_refusal(d, _host("unknown"))
    for reg in ("cr4_smep", "cr4_smap"):
        x = K.demo_guest()
        setattr(x.registers, reg, True)
        assert "SMEP/SMAP" in K.host_refusal(x, _host()) and K.host_refusal(x, _host("svm")) is None


def test_runner_pages_follow_the_registers():
    d = K.demo_guest()
    own = d.all_mappings()[-3:]                                  # code, stack, page-table window
    assert all(m.u for m in own) and own[1].nx and own[2].nx
    d.registers.cr4_smep, d.registers.efer_nx = True, False
    for m in d.page_tables.mappings:
        m.nx = False
    d.check()
    own = d.all_mappings()[-3:]
    assert not any(m.u or m.nx for m in own)


def test_detect_host_without_dev_kvm(tmp_path):
    with pytest.raises(K.HostUnsupported, match="does not exist"):
        K.detect_host(str(tmp_path / "kvm"))
    with pytest.raises(K.HostUnsupported, match="does not exist"):
        K.run_guest(K.demo_guest(), kvm_path=str(tmp_path / "kvm"))


def test_errors_are_pykvmmu_errors():
    for cls in (K.KvmError, K.HostUnsupported, K.GuestTimeout, R.RecordError):
        assert issubclass(cls, PykvmmuError)


# --- recorder argument checks and the capture file --------------------------------------------
@pytest.mark.parametrize("kw,msg", [({"events": []}, "events"), ({"events": "kvmmmu/../x"}, "system/event"),
                                    ({"buffer_kb": 1}, "buffer_kb"), ({"buffer_kb": True}, "buffer_kb"),
                                    ({"tracefs": 3}, "tracefs")])
def test_recorder_refuses_bad_arguments(kw, msg):
    with pytest.raises(InputError, match=msg):
        R.Recorder(**kw)


def test_recorder_says_it_needs_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(R.RecordError, match="needs root"):
        with R.Recorder():
            pass


def test_capture_file_round_trip(tmp_path):
    cap = R.Capture(meta={"format": "pykvmmu-capture", "version": 1, "lost": {"cpu0": {"overrun": 2}},
                          "kernel_release": "6.18.44"},
                    header_page="hp", header_event="he", formats={"kvmmmu/kvm_mmu_get_page": "fmt"},
                    raw={0: b"\x01" * 4096, 1: b""}, params={"kvm/tdp_mmu": "N\n"}, guest={"x": 1})
    for name in ("c.kvmcap", "c.tar"):
        R.write_capture(str(tmp_path / name), cap)
        back = R.read_capture(str(tmp_path / name))
        assert dataclasses.replace(back, text={}) == cap
        assert back.lost == 2
    assert (tmp_path / "c.kvmcap").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "c.tar").read_bytes()[257:262] == b"ustar"


def test_read_capture_refusals(tmp_path):
    (tmp_path / "x").write_bytes(b"not a tar")
    with pytest.raises(InputError, match="not a tar"):
        R.read_capture(str(tmp_path / "x"))
    with pytest.raises(InputError, match="No such file"):
        R.read_capture(str(tmp_path / "y"))


@pytest.mark.parametrize("text", ['{"runs": [5]}', '{"page_tables": 5}', '{"memslots": [1]}',
                                  '{"page_tables": {"mappings": ["x"]}}'])
def test_malformed_structure_is_refused(text):
    with pytest.raises(InputError, match="guest description"):
        K.GuestDesc.from_json(text)


def test_lost_events_sums_every_counter():
    lost = {"cpu0": {"overrun": 1, "commit overrun": 2, "dropped events": 3, "missed_pages": 4, "entries": 9},
            "cpu1": {"overrun": 10, "read events": 100}}
    assert R.lost_events(lost) == 20
    with pytest.raises(InputError, match="drain_interval"):
        R.Recorder(drain_interval=0)


class _FakeRecorder:
    """Stands in for Recorder so the CLI's reporting can be checked without root."""
    lost = {"cpu0": {"overrun": 7, "commit overrun": 0, "dropped events": 0, "missed_pages": 1,
                     "read events": 5}}

    def __init__(self, **kw):
        self.kw = kw

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def stop(self):
        meta = {"format": "pykvmmu-capture", "version": 1, "lost": self.lost, "cpus": [0], "events": ["kvmmmu/x"]}
        return R.Capture(meta=meta, header_page="", header_event="", text={"trace": "T\n", "fields": "F\n"})


def test_record_cli_reports_lost_events(monkeypatch, tmp_path, capsys):
    from pykvmmu.cli import main
    monkeypatch.setattr(R, "Recorder", _FakeRecorder)
    monkeypatch.setattr(K, "run_guest", lambda desc: K.RunResult(host="fake", runs=[], elapsed=0.0))
    out = tmp_path / "c.kvmcap"
    assert main(["record", "-o", str(out), "--demo-guest", "--text", str(tmp_path / "t")]) == 3
    err = capsys.readouterr().err
    assert "8 events were lost" in err and "overrun 7" in err and "pages with missed events 1" in err
    cap = R.read_capture(str(out))
    assert cap.meta["guest_result"]["host"] == "fake" and K.GuestDesc.from_dict(cap.guest) == K.demo_guest()
    assert (tmp_path / "t.trace.txt").read_text() == "T\n" and (tmp_path / "t.fields.txt").read_text() == "F\n"


def test_record_cli_keeps_the_capture_of_a_failing_guest(monkeypatch, tmp_path, capsys):
    from pykvmmu.cli import main

    def boom(desc):
        raise K.GuestTimeout(62, "run 0: no HLT within 5.0 s")
    class NoLoss(_FakeRecorder):
        lost = {"cpu0": {"overrun": 0, "read events": 3}}
    monkeypatch.setattr(R, "Recorder", NoLoss)
    monkeypatch.setattr(K, "run_guest", boom)
    out = tmp_path / "c.kvmcap"
    assert main(["record", "-o", str(out), "--demo-guest"]) == 1
    assert "the guest failed" in capsys.readouterr().err
    assert "no HLT" in R.read_capture(str(out)).meta["guest_error"]


def test_random_guests_are_valid_and_seeded():
    import random
    from pykvmmu import kfuzz
    seen = {}
    for seed in range(200):
        d = kfuzz.random_desc(random.Random(seed))
        d.check()                                            # valid by construction
        assert K.host_refusal(d, _host()) is None            # and runnable on kvm_pvm
        assert K.GuestDesc.from_json(d.to_json()) == d
        for r in d.runs:
            for o in r.program:
                seen[o.kind] = seen.get(o.kind, 0) + 1
            for c in r.changes:
                seen[c.action] = seen.get(c.action, 0) + 1
    assert kfuzz.random_desc(random.Random(7)) == kfuzz.random_desc(random.Random(7))
    for k in ("read", "write", "fetch", "invlpg", "cr3_reload", "pte_write", "delete", "move", "flags"):
        assert seen.get(k, 0) > 0, k


@pytest.mark.parametrize("kw,msg", [({"seconds": 0}, "seconds"), ({"seconds": 1, "runs": 0}, "runs")])
def test_fuzz_kernel_refuses_bad_budgets(kw, msg):
    from pykvmmu import kfuzz
    with pytest.raises(InputError, match=msg):
        kfuzz.fuzz_kernel(**kw)


def test_shrink_candidates_are_smaller_and_idle_mappings_go_first():
    from pykvmmu import kfuzz
    d = K.demo_guest()
    d.page_tables.mappings.append(K.Mapping(0x5000000, 0x30000))         # touched by no op
    cands = list(kfuzz._candidates(d))
    first = cands[0]
    assert len(first.page_tables.mappings) == len(d.page_tables.mappings) - 1
    assert K.Mapping(0x5000000, 0x30000) not in first.page_tables.mappings

    def size(x):
        return (len(x.runs), sum(len(r.program) + len(r.changes) for r in x.runs), len(x.page_tables.mappings))
    assert all(size(c) != size(d) and all(a <= b for a, b in zip(size(c), size(d))) for c in cands)
    assert len(d.page_tables.mappings) == len(K.demo_guest().page_tables.mappings) + 1     # d untouched


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupt_while_the_command_starts_is_deferred(monkeypatch, sig):
    import signal
    import subprocess as sp
    from pykvmmu.commands import record as C
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    class FakePopen:
        def __init__(self, cmd):
            os.kill(os.getpid(), getattr(signal, sig))      # arrives while Popen runs
            self.cmd = cmd
    monkeypatch.setattr(sp, "Popen", FakePopen)
    proc, early = C._start(["true"])
    assert early and proc.cmd == ["true"]
    assert {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} == before

"""Decode ``kvmmmu`` tracepoint text: the kernel's print format (ftrace ``trace`` /
``trace_pipe``, ``trace-cmd report``, with ftrace ``<stack trace>`` blocks), ftrace
``options/fields`` (``gfn=0x1 (1)``), ``trace-cmd report -R`` (``name=value``), the
libtraceevent plugin's page lines and the old trace-cmd plugin's (``1/4 q3 ... !pge``).

Every event of the fact sheet (role-hash-trace.md section 6) is parsed into a
:class:`TraceRecord`; page events get their role word decoded under a chosen era.  A text
line carries only some role bits (level, gpte size, quadrant, direct, access, invalid, nx,
ad): the record keeps the partial word and ``role_known`` (the mask of bits the text
states).  A raw ``role=`` field gives the whole word.  Malformed lines are collected in
``TraceResult.errors`` with their line number and skipped; parsing never raises on input.
SPTE values can be decoded by an optional callable ``spte_decoder(spte, level) -> str``.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Iterator

from ..role import get_era, unpack
from .. import _check as C
from .record import (FULL_ROLE, PAGE_EVENTS, SPTE_FIELDS, TraceArgumentError, TraceRecord, TraceResult,
                     decorate)

__all__ = ["parse", "parse_file", "parse_line", "EVENTS", "PAGE_EVENTS", "SPTE_FIELDS",
           "ALL_EVENTS", "STACK", "STACK_LINE", "CHAIN_LINE"]

_HEX = r"(?:0x)?[0-9a-fA-F]+"
_DEC = r"-?\d+"

# One line: "comm-pid [cpu] flags timestamp: event: payload"; trace-cmd report may omit the
# flags column and may print "(tgid)" after the pid; `trace-cmd report -l` prints the CPU
# number straight before the flags ("0...1.": the irqs-off flag is never a digit; with -R,
# "0-0x0": the CPU, a dash and a hex number, kept as the flags text), and `--ts-diff`
# "(+usecs)" after the timestamp.  A timestamp without a dot is a clock's count (the kernel
# prints one for a trace clock that does not count ns, such as counter or x86-tsc, and
# trace-cmd --raw-ts prints the uncorrected count), straight after "[cpu]" with --raw-ts;
# ftrace's options/latency-format prints the CPU and flags as -l does and the time as
# "<usecs>us" and a delay mark ("60844413501us+:").
# trace-cmd report prefixes records of an instance with "name:".  The event may carry its
# system ("kvmmmu:kvm_mmu_get_page"); ftrace stack traces print "<stack trace>" as the event.
_HEADER = re.compile(
    r"^\s*(?P<comm>(?:\S.*?)?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?"
    r"(?:\[(?P<cpu>\d+)\]\s*(?:(?P<flags>[.a-zA-Z0-9]{4,6})\s+)?"
    r"|(?P<lcpu>\d+)(?:(?P<lflags>[.a-zA-Z][.a-zA-Z0-9]{3,5})|-(?P<rflags>0x[0-9a-fA-F]+))\s+)"
    r"(?P<ts>\d+\.\d+|(?P<rawts>\d+)|(?P<usts>\d+)us[ +!#*@$]?):\s+(?:\(\+\d+\)\s+)?"
    r"(?:(?P<stack><(?:user )?stack trace>)|(?:(?P<system>\w+):)?(?P<event>\w+):)\s*"
    r"(?P<payload>(?:.*\S)?)\s*$")
# perf script (tools/perf/Documentation/perf-script.txt): "comm tid [cpu] secs.usecs: sys:event: payload"
# by default for tracepoints; -F may drop comm, tid or cpu (the line may then start with the
# time), print "pid/tid", the period after the time, and --ns nine decimals.  Time and
# "system:event:" are required (they tell a perf line from others).  Each column takes the
# blanks after it and the comm starts and ends with a non-blank, so that a long run of
# blanks is crossed once (no polynomial backtracking on a damaged line).
_PERF_HEADER = re.compile(
    r"^\s*(?:(?P<comm>\S(?:.*?\S)?)\s+)??(?:(?P<pid>\d+)(?:/(?P<tid>\d+))?\s+)?(?:\[(?P<cpu>\d+)\]\s+)?"
    r"(?P<ts>\d+\.\d+):\s+(?:(?P<period>\d+)\s+)?(?P<system>\w+):(?P<event>\w+):"
    r"(?:\s+(?P<payload>.*\S))?\s*$")
# -F ...,ip[,sym][,symoff][,dso]: " " and the sample's address ("%16lx": 16 wide), its symbol
# and "(dso)" after the event's text.  Taken off only where the text does not parse with them
# (a payload may end in a hex value of its own).
_PERF_IP = re.compile(r"^(?P<keep>.*\S) (?P<ip> *[0-9a-f]{1,16})(?: (?!\()\S+)?(?: \([^()]*\))?$")
# perf trace -e 'kvmmmu:*' (tools/perf/builtin-trace.c): "<ms> comm/tid sys:event(name: value, ...)",
# the time in milliseconds ("%10.3f": since the first event, or since boot with -T), no CPU,
# every record field as "name: value" (decimal, or 0x-hex), a field equal to zero left out
# unless the perf config has trace.show_zeros; with --libtraceevent_print, what perf script
# prints for the event (its print format, or "[FAILED TO PARSE] name=value ...") instead.
_PERF_TRACE = re.compile(r"^\s*(?P<ms>\d+\.\d+)\s+(?:(?P<comm>.*?)/)?(?P<tid>\d+)\s+"
                         r"(?P<system>\w+):(?P<event>\w+)\((?P<args>.*)\)\s*$")
_PERF_TRACE_ARG = re.compile(r"(\w+): (-?(?:0x[0-9a-f]+|\d+))$")
_PERF_TRACE_NAMED = re.compile(r"^\w+: ")
# perf trace's system calls: "<ms> (<dur> ms): comm/tid name(args) = ret", "(         )" and a
# trailing "..." for one a later line finishes ("... [continued]: name()) = ret")
_PERF_TRACE_SYSCALL = re.compile(r"^\s*\d+\.\d+\s+\(\s*(?:[\d.]+ ms)?\s*\):\s+(?:.*?/)?\d+\s+"
                                 r"(?:\.\.\. \[continued\]: )?(?P<name>\w+)\(")
# ftrace with options/context-info=0 and perf script -F event,trace: "[system:]event: payload",
# no task, CPU or time (read for the kvmmmu events only: any "word: text" line would look like
# another event)
_BARE = re.compile(r"^\s*(?:(?P<system>\w+):)?(?P<event>\w+):\s*(?P<payload>(?:.*\S)?)\s*$")
# perf script --show-task-events / --show-mmap-events / --show-round-events: side-band
# records ("... 0.000000: PERF_RECORD_COMM: perf-exec:28763/28763", "PERF_RECORD_FINISHED_ROUND")
_PERF_SIDEBAND = re.compile(r"PERF_RECORD_[A-Z][A-Z0-9_]*(?=[\s:(]|$)")
_PERF_SIDEBAND_TIME = re.compile(r"\d\.\d+:\s+\Z")         # what may come before it
# libtraceevent prints "[FAILED TO PARSE] name=value ..." (decimal) for an event whose print
# fmt it cannot evaluate (the page events' statement expression in perf 6.1).
_FAILED = "[FAILED TO PARSE] "
# perf trace --call-graph: a callchain line "<deep indent><symbol> (<dso>)" after its record
# (no address; tried after every record form, since a record's payload may end in "(4)")
_PERF_TRACE_CHAIN = re.compile(r"^ {20,}(?P<sym>\S.*?) \((?P<dso>[^()]*)\)\s*$")
# perf script -g: a callchain line "\t<hex address> <symbol> (<dso>)" after its record
_PERF_CHAIN = re.compile(r"^\t\s*(?P<addr>[0-9a-f]+) (?P<sym>.*?) \((?P<dso>.*)\)\s*$")
_INSTANCE = re.compile(r"^\S+:\s+")
_COLON_SPACE = re.compile(r":\s")
_SKIP = re.compile(r"^\s*(?:$|#|(?:cpus|version)\s*=)")
#: parse_line's answers for the lines of an ftrace stack-trace block, and for a perf script
#: callchain line (it belongs to the record before it).
STACK, STACK_LINE, CHAIN_LINE = "stack", "stack_line", "chain_line"
#: parse_line's answer for a line that counts lost events: (LOST, (cpu or None, count, key)).
LOST = "lost"
# ftrace (kernel/trace/trace.c print_trace_line): "CPU:%d [LOST %lu EVENTS]" where the ring
# buffer overwrote events; perf trace (builtin-trace.c): "LOST %llu events!" per PERF_RECORD_LOST
_LOST_LINE = re.compile(r"^\s*(?:CPU:(?P<cpu>\d+) \[LOST (?P<n>\d+) EVENTS\]|LOST (?P<pn>\d+) events!)\s*$")
_STACK_LINE = re.compile(r"^ => (?P<func>.*?)\s*$")

# KVM_MMU_PAGE_PRINTK of every era (the optional groups cover the history in sec. 6.2).
_PAGE_TEXT = re.compile(
    r"^sp (?:gen (?P<gen>[0-9a-f]+) )?gfn (?P<gfn>[0-9a-f]+) l?(?P<level>\d+)"
    r"(?: (?P<gsz>[48])-byte| ?(?P<pae> pae)?) q(?P<quadrant>\d)(?P<direct> direct)? "
    r"(?P<access>[-w][-u][-x])(?P<invalid> invalid)? (?P<nx>!?)nxe(?: (?P<ad>!?)ad)? "
    r"root (?P<root_count>\d+) (?P<sync>sync|unsync)(?: (?P<created>new|existing))?$")
# libtraceevent plugin_kvm.c (pre-v4.12 role union):
# "[new |existing ]sp gfn %llx %u q%u%s %s%s %spae %snxe %swp%s%s%s root %u %s"; only
# kvm_mmu_get_page prints "sp gfn %llx" (sync/unsync/zap print the role alone).
_PAGE_PLUGIN = re.compile(
    r"^(?:(?P<created>new|existing) )?(?:sp gfn (?P<gfn>[0-9a-f]+) )?(?P<level>\d+) q(?P<quadrant>\d)"
    r"(?P<direct> direct)? (?P<access>[-w][-u][-x])(?P<invalid> invalid)? (?P<pae>!?)pae "
    r"(?P<nx>!?)nxe (?P<wp>!?)wp(?P<smep> smep)?(?P<smap> smap)?(?P<smm> smm)?"
    r"\s+root (?P<root_count>\d+)\s+(?P<sync>sync|unsync)$")
# old trace-cmd plugin_kvm.c (2008 role layout): "%u/%u q%u%s %s%s %spge %snxe" (level/glevels)
_PAGE_OLD_PLUGIN = re.compile(
    r"^(?:(?P<created>new|existing) )?sp gfn (?P<gfn>[0-9a-f]+) (?P<level>\d+)/(?P<glevels>\d+) "
    r"q(?P<quadrant>\d)(?P<direct> direct)? (?P<access>[-w][-u][-x])(?P<invalid> invalid)? "
    r"(?P<pge>!?)pge (?P<nx>!?)nxe\s+root (?P<root_count>\d+)\s+(?P<sync>sync|unsync)$")
# perf-prof `kvmmmu` (OpenCloudOS/perf-prof kvmmmu.c): per-record output is libtraceevent's
# (the plugin lines above); its interval dump prints, per mmu_valid_gen, counters, a count of
# shadow pages per level and (--detail) the shadow-page tree with the raw role word.
_PP_GEN = re.compile(r"^(?P<time>.*?)kvm_mmu_gen (?P<mmu_valid_gen>\d+) (?P<obsoleted>obsoleted )?"
                     r"get_page (?P<get_page>\d+) created (?P<created>\d+) zap_page (?P<zap_page>\d+) "
                     r"set_spte (?P<set_spte>\d+)\s*$")
_PP_LEVEL = re.compile(r"^\s+level (?P<level>\d+) nr (?P<nr>\d+)\s*$")
_PP_SP = re.compile(r"^(?P<indent>\s*)sp(?P<level>\d) 0x(?P<gfn>[0-9a-f]+)-0x(?P<gfn_end>[0-9a-f]+) "
                    r"role 0x(?P<role>[0-9a-f]+)(?: root_count (?P<root_count>-?\d+))?"
                    r"(?: ref (?P<refcount>\d+))? ; l\d+ q\d.*$")
_PP_SPTE = re.compile(r"^\s+spte 0x(?P<gfn>[0-9a-f]+)-0x(?P<gfn_end>[0-9a-f]+)(?P<mmio> mmio)?\s*$")
_RAW_FIELD = re.compile(r"(\w+)=(\S+)")
# trace-cmd report -R prints a field in hex (no "0x" unless the format has it) when the
# event's print fmt converts it with %x/%llx, else in decimal; the page events' print fmt is
# a statement expression, so their fields print decimal.
RAW_HEX_FIELDS = {
    "kvm_mmu_pagetable_walk": {"addr", "pferr"}, "kvm_mmu_paging_element": {"pte"},
    "kvm_mmu_set_accessed_bit": {"gpa"}, "kvm_mmu_set_dirty_bit": {"gpa"},
    "kvm_mmu_walker_error": {"pferr"}, "mark_mmio_spte": {"sptep", "gfn", "access", "gen"},
    "handle_mmio_page_fault": {"addr", "gfn", "access"},
    "fast_page_fault": {"cr2_or_gpa", "sptep", "old_spte", "new_spte"},
    "kvm_mmu_zap_all_fast": {"mmu_used_pages"},
    "kvm_mmu_invalidate_zap_all_pages": {"mmu_valid_gen", "mmu_used_pages"},
    "check_mmio_spte": {"spte", "kvm_gen", "spte_gen"},
    "kvm_mmu_set_spte": {"gfn", "spte", "sptep"}, "kvm_mmu_spte_requested": {"gfn", "pfn"},
    "kvm_tdp_mmu_spte_changed": {"gfn", "old_spte", "new_spte"},
    "kvm_mmu_split_huge_page": {"gfn", "spte"}}
_RAW_LINE = re.compile(r"^\w+=\S+(?:\s+\w+=\S+)*\s*$")      # pairs apart: no backtracking blow-up
# ftrace options/fields: "name=0x1 (1)" for integers (u64 decimals print signed or
# truncated: the hex is the value), "name=text" for strings.
# A bool prints as "name=(1)" (no hex).
_FIELDS_ITEM = re.compile(r"(\w+)=(?:\((-?\d+)\)|(\S*?)(?: \((-?\d+)\))?)(?=\s+\w+=|\s*$)")
_FIELDS_VALUE = r"\w+=\S*(?: \(-?\d+\))?"     # "(1)" is one \S*: one way to read each value
_FIELDS_LINE = re.compile(rf"^{_FIELDS_VALUE}(?:\s+{_FIELDS_VALUE})*\s*$")

# __print_flags(pferr, "|", kvm_mmu_trace_pferr_flags): P, W, U, RSVD, F joined by "|", bits
# without a name as one 0x number after them; nothing when no bit is set
_PFERR_FLAGS = r"(?P<pferr_flags>(?:[A-Z]+|0x[0-9a-f]+)(?:\|(?:[A-Z]+|0x[0-9a-f]+))*|)"
# (payload regex, {field: "x" hex | "d" decimal | "s" string})
EVENTS = {
    "kvm_mmu_pagetable_walk": (rf"addr (?P<addr>{_HEX}) pferr (?P<pferr>{_HEX})\s*{_PFERR_FLAGS}",
                               {"addr": "x", "pferr": "x", "pferr_flags": "s"}),
    "kvm_mmu_paging_element": (rf"pte (?P<pte>{_HEX}) level (?P<level>\d+)", {"pte": "x", "level": "d"}),
    "kvm_mmu_set_accessed_bit": (rf"gpa (?P<gpa>{_HEX})", {"gpa": "x"}),
    "kvm_mmu_set_dirty_bit": (rf"gpa (?P<gpa>{_HEX})", {"gpa": "x"}),
    "kvm_mmu_walker_error": (rf"pferr (?P<pferr>{_HEX})\s*{_PFERR_FLAGS}",
                             {"pferr": "x", "pferr_flags": "s"}),
    "mark_mmio_spte": (rf"sptep:(?P<sptep>\S+) gfn (?P<gfn>{_HEX}) access (?P<access>{_HEX}) "
                       rf"gen (?P<gen>{_HEX})",
                       {"sptep": "s", "gfn": "x", "access": "x", "gen": "x"}),
    "handle_mmio_page_fault": (rf"addr:(?P<addr>{_HEX}) gfn (?P<gfn>{_HEX}) access (?P<access>{_HEX})",
                               {"addr": "x", "gfn": "x", "access": "x"}),
    "fast_page_fault": (rf"vcpu (?P<vcpu_id>{_DEC}) gva (?P<gva>{_HEX}) error_code (?P<error_code>.*?) "
                        rf"sptep (?P<sptep>\S+) old (?P<old_spte>{_HEX}) new (?P<new_spte>{_HEX}) "
                        rf"spurious (?P<spurious>\d) fixed (?P<fixed>\d)",
                        {"vcpu_id": "d", "gva": "x", "error_code": "s", "sptep": "s", "old_spte": "x",
                         "new_spte": "x", "spurious": "d", "fixed": "d"}),
    "kvm_mmu_zap_all_fast": (rf"kvm-mmu-valid-gen (?P<mmu_valid_gen>{_HEX}) used_pages (?P<used_pages>{_HEX})",
                             {"mmu_valid_gen": "x", "used_pages": "x"}),
    "kvm_mmu_invalidate_zap_all_pages": (rf"kvm-mmu-valid-gen (?P<mmu_valid_gen>{_HEX}) "
                                         rf"used_pages (?P<used_pages>{_HEX})",
                                         {"mmu_valid_gen": "x", "used_pages": "x"}),
    "check_mmio_spte": (rf"spte (?P<spte>{_HEX}) kvm_gen (?P<kvm_gen>{_HEX}) spte-gen (?P<spte_gen>{_HEX}) "
                        rf"valid (?P<valid>\d)",
                        {"spte": "x", "kvm_gen": "x", "spte_gen": "x", "valid": "d"}),
    "kvm_mmu_set_spte": (rf"gfn (?P<gfn>{_HEX}) spte (?P<spte>{_HEX}) \((?P<perm>[^)]*)\) "
                         rf"level (?P<level>\d+) at (?P<sptep>{_HEX})",
                         {"gfn": "x", "spte": "x", "perm": "s", "level": "d", "sptep": "x"}),
    "kvm_mmu_spte_requested": (rf"gfn (?P<gfn>{_HEX}) pfn (?P<pfn>{_HEX}) level (?P<level>\d+)",
                               {"gfn": "x", "pfn": "x", "level": "d"}),
    "kvm_tdp_mmu_spte_changed": (rf"as id (?P<as_id>\d+) gfn (?P<gfn>{_HEX}) level (?P<level>\d+) "
                                 rf"old_spte (?P<old_spte>{_HEX}) new_spte (?P<new_spte>{_HEX})",
                                 {"as_id": "d", "gfn": "x", "level": "d", "old_spte": "x",
                                  "new_spte": "x"}),
    "kvm_mmu_split_huge_page": (rf"gfn (?P<gfn>{_HEX}) spte (?P<spte>{_HEX}) level (?P<level>\d+) "
                                rf"errno (?P<errno>{_DEC})",
                                {"gfn": "x", "spte": "x", "level": "d", "errno": "d"}),
}
_EVENT_RE = {k: re.compile("^" + v[0] + "$") for k, v in EVENTS.items()}
ALL_EVENTS = tuple(EVENTS) + PAGE_EVENTS
_PAGE_FIELDS = (("mmu_valid_gen", "u8"), ("gfn", "u64"), ("role", "u32"), ("root_count", "u32"),
                ("unsync", "bool"))
#: Each event's record fields (TP_STRUCT__entry, current layout: role-hash-trace.md sec. 6.1)
#: with their C types, the names perf.data, trace.dat and perf trace give; perf trace leaves
#: out those equal to 0 and prints each as a long of the field's bytes read unsigned.
RECORD_FIELDS = {
    "kvm_mmu_pagetable_walk": (("addr", "u64"), ("pferr", "u32")),
    "kvm_mmu_paging_element": (("pte", "u64"), ("level", "u32")),
    "kvm_mmu_set_accessed_bit": (("gpa", "u64"),), "kvm_mmu_set_dirty_bit": (("gpa", "u64"),),
    "kvm_mmu_walker_error": (("pferr", "u32"),),
    "mark_mmio_spte": (("sptep", "u64"), ("gfn", "u64"), ("access", "u32"), ("gen", "u32")),
    "handle_mmio_page_fault": (("addr", "u64"), ("gfn", "u64"), ("access", "u32")),
    "fast_page_fault": (("vcpu_id", "s32"), ("cr2_or_gpa", "u64"), ("error_code", "u32"),
                        ("sptep", "u64"), ("old_spte", "u64"), ("new_spte", "u64"), ("ret", "s32")),
    "kvm_mmu_zap_all_fast": (("mmu_valid_gen", "u8"), ("mmu_used_pages", "u32")),
    "kvm_mmu_invalidate_zap_all_pages": (("mmu_valid_gen", "u64"), ("mmu_used_pages", "u32")),
    "check_mmio_spte": (("kvm_gen", "u32"), ("spte_gen", "u32"), ("spte", "u64")),
    "kvm_mmu_set_spte": (("gfn", "u64"), ("spte", "u64"), ("sptep", "u64"), ("level", "u8"),
                         ("r", "bool"), ("x", "bool"), ("u", "s8")),
    "kvm_mmu_spte_requested": (("gfn", "u64"), ("pfn", "u64"), ("level", "u8")),
    "kvm_tdp_mmu_spte_changed": (("gfn", "u64"), ("old_spte", "u64"), ("new_spte", "u64"),
                                 ("level", "u8"), ("as_id", "u8")),
    "kvm_mmu_split_huge_page": (("gfn", "u64"), ("spte", "u64"), ("level", "s32"), ("errno", "s32")),
    "kvm_mmu_get_page": _PAGE_FIELDS + (("created", "bool"),),
    **{e: _PAGE_FIELDS for e in PAGE_EVENTS if e != "kvm_mmu_get_page"},
}
#: C type -> (bits, signed)
_CTYPES = {"u8": (8, False), "bool": (8, False), "s8": (8, True), "u32": (32, False),
           "s32": (32, True), "u64": (64, False)}

_ACC = {"---": 0, "--x": 1, "w--": 2, "w-x": 3, "-u-": 4, "-ux": 5, "wu-": 6, "wux": 7}


def _int(v: str, kind: str):
    if kind == "d":
        return int(v, 10)
    if kind == "x":
        return int(v, 16)
    return v


def _ns(ts: str) -> int | None:
    """Exact nanoseconds of a perf script time ("secs.usecs" or, with --ns, "secs.nsecs"):
    None when it has fewer than 9 decimals (then only ``ts`` in seconds is known)."""
    sec, _, frac = ts.partition(".")
    return int(sec) * 1_000_000_000 + int(frac) if len(frac) == 9 else None


def _raw_int(v: str) -> int:
    v = v.rstrip(",")
    if v.lower().startswith("0x"):
        return int(v, 16)
    if v.lstrip("-").isdigit():
        return int(v, 10)
    return int(v, 16)


def _partial_role(era, fields: dict, known) -> tuple:
    """(role word of the ``fields`` the era's layout has, mask of the ``known`` ones there)."""
    idx = era.base.index
    word = era.base.pack({k: v for k, v in fields.items() if k in idx})
    mask = 0
    for k in known:
        if k in idx:
            mask |= era.base.field(k).mask
    return word, mask


def _decode_page_text(era, m, plugin: bool) -> tuple:
    """(partial role word, mask of bits the text states) from a page line."""
    g = m.groupdict()
    f = {"level": int(g["level"]), "quadrant": int(g["quadrant"]), "direct": int(bool(g["direct"])),
         "access": _ACC[g["access"]], "invalid": int(bool(g["invalid"]))}
    known = ["level", "quadrant", "direct", "access", "invalid", era.nx]
    f[era.nx] = 0 if g["nx"] == "!" else 1
    if plugin:
        # plugin_kvm.c's own (pre-v4.12) union: "pae" is the raw bit 4, whatever its name.
        f[era.bit4] = 0 if g["pae"] == "!" else 1
        f["cr0_wp"] = 0 if g["wp"] == "!" else 1
        f["smep_andnot_wp"] = int(bool(g["smep"]))
        f["smap_andnot_wp"] = int(bool(g["smap"]))
        f["smm"] = int(bool(g["smm"]))
        known += [era.bit4, "cr0_wp", "smep_andnot_wp", "smap_andnot_wp", "smm"]
    else:
        if g["gsz"]:
            eight = g["gsz"] == "8"
            f[era.bit4] = int(eight) if era.bit4 != "has_4_byte_gpte" else int(not eight)
        else:
            # " pae" token (<= v5.0 printk): cr4_pae; absent means 0.
            f[era.bit4] = int(bool(g["pae"]))
        known.append(era.bit4)
        if g["ad"] is not None and "ad_disabled" in era.base.index:
            f["ad_disabled"] = 1 if g["ad"] == "!" else 0
            known.append("ad_disabled")
    return _partial_role(era, f, known)


def _fields_payload(payload: str) -> dict:
    """ftrace options/fields payload -> {name: int or str} (the hex, not the decimal)."""
    out = {}
    for name, bare, val, dec in _FIELDS_ITEM.findall(payload):
        if bare:
            out[name] = int(bare)
            continue
        if dec:
            if val.lower().startswith("0x"):
                try:
                    out[name] = int(val, 16)
                    continue
                except ValueError:
                    pass
            out[name] = int(dec) if not val else val   # a symbol (%pS): keep its text
            if val:
                out[name + "_dec"] = int(dec)
        else:
            out[name] = val
    return out


def _old_plugin_role(era, g) -> tuple:
    """(partial word, known mask) from an old trace-cmd plugin line: only level, quadrant,
    direct, access, invalid and nxe carry over (its cr4_pge/glevels have no modern bit)."""
    f = {"level": int(g["level"]), "quadrant": int(g["quadrant"]), "direct": int(bool(g["direct"])),
         "access": _ACC[g["access"]], "invalid": int(bool(g["invalid"])),
         era.nx: 0 if g["nx"] == "!" else 1}
    return _partial_role(era, f, f)


def _perf_prof(s: str, line_no: int, era):
    """A record for a line of perf-prof kvmmmu's interval dump, else None.  Events:
    ``perfprof_gen`` (per-generation counters), ``perfprof_level`` (pages per level),
    ``perfprof_sp`` (one shadow page: gfn range and the whole role word), ``perfprof_spte``
    (a run of set SPTEs of the page above)."""
    for ev, rx in (("perfprof_sp", _PP_SP), ("perfprof_spte", _PP_SPTE),
                   ("perfprof_gen", _PP_GEN), ("perfprof_level", _PP_LEVEL)):
        m = rx.match(s)
        if m is None:
            continue
        g = m.groupdict()
        rec = TraceRecord(line_no, "", 0, 0, "", 0.0, ev, {}, source="perf-prof",
                          system="perf-prof", payload=s.strip())
        if ev == "perfprof_sp":
            rec.fields = {"level": int(g["level"]), "gfn": int(g["gfn"], 16),
                          "gfn_end": int(g["gfn_end"], 16), "role": int(g["role"], 16),
                          "root_count": int(g["root_count"] or 0), "refcount": int(g["refcount"] or 1)}
            if rec.fields["role"] >> 32:
                raise ValueError(f"perf-prof sp: role {g['role']} wider than 32 bits")
            rec.role, rec.role_known = unpack(era, rec.fields["role"]), FULL_ROLE
        elif ev == "perfprof_spte":
            rec.fields = {"gfn": int(g["gfn"], 16), "gfn_end": int(g["gfn_end"], 16),
                          "mmio": int(bool(g["mmio"]))}
        elif ev == "perfprof_gen":
            rec.fields = {k: int(g[k]) for k in ("mmu_valid_gen", "get_page", "created", "zap_page",
                                                 "set_spte")}
            rec.fields["obsoleted"] = int(bool(g["obsoleted"]))
        else:
            rec.fields = {"level": int(g["level"]), "nr": int(g["nr"])}
        return rec
    return None


def _unfailed(payload: str) -> tuple:
    """(payload without libtraceevent's "[FAILED TO PARSE] " prefix, whether it had it)."""
    if payload.startswith(_FAILED):
        return payload[len(_FAILED):], True
    return payload, False


def _perf_trace(m, line_no: int, era, spte_decoder, all_events: bool):
    """parse_line() of a perf trace line: every record field, those perf left out as 0."""
    ev, system = m["event"], m["system"]
    if system != "kvmmmu" and not all_events:
        return ("other", ev)
    ms = m["ms"]
    whole, frac = ms.split(".")
    rec = TraceRecord(line_no, m["comm"] or "", int(m["tid"]), -1, "", float(ms) / 1000, ev, {},
                      system=system, payload=m["args"], source="perf-trace",
                      ts_ns=int(whole) * 1_000_000 + int(frac[:6].ljust(6, "0")))
    if m["args"] and not _PERF_TRACE_NAMED.match(m["args"]):       # --libtraceevent_print
        payload, failed = _unfailed(m["args"])
        rec.payload, rec.source = payload, "text"
        return _fill(rec, ev, system, payload, failed, all_events, era, spte_decoder)
    fields = {}
    for part in m["args"].split(", ") if m["args"] else ():
        am = _PERF_TRACE_ARG.match(part)
        if am is None:
            if system == "kvmmmu":
                raise ValueError(f"{ev}: perf trace argument {part!r} is not 'name: number'")
            fields[part.split(":", 1)[0]] = part.split(": ", 1)[-1]
            continue
        if am[1] in fields:
            raise ValueError(f"{ev}: perf trace field {am[1]!r} given twice")
        fields[am[1]] = int(am[2], 16) if am[2].startswith("0x") else int(am[2])
    if system == "kvmmmu":
        types = RECORD_FIELDS.get(ev)
        if types is None:
            raise ValueError(f"{ev}: not a kvmmmu event this reader knows the record fields of")
        extra = set(fields) - {k for k, _ in types}
        if extra:
            raise ValueError(f"{ev}: perf trace field {sorted(extra)[0]!r} is not one of its record "
                             f"fields {tuple(k for k, _ in types)}")
        out = {}
        for k, t in types:
            v = fields.get(k, 0) & 0xFFFFFFFFFFFFFFFF       # "%ld" of the unsigned read
            bits, signed = _CTYPES[t]
            if v >> bits:
                raise ValueError(f"{ev}: {k}={fields[k]} does not fit its {t} field")
            out[k] = v - (1 << bits) if signed and v >> (bits - 1) else v
        fields = out
    rec.fields = fields
    return decorate(rec, era, spte_decoder)


def parse_line(line: str, line_no: int = 0, era="latest", spte_decoder=None,
               all_events: bool = False):
    """Parse one line: a TraceRecord; None for a blank/comment line; ``("other", event)``
    for a non-kvmmmu event (a record instead when ``all_events``); ``(STACK, None)`` for a
    ``<stack trace>`` header and ``(STACK_LINE, func)`` for a `` => func`` line (they belong
    to the record before them).  Raises ValueError with the reason for a malformed line."""
    if not isinstance(line, str):
        raise TraceArgumentError(f"line={line!r}: expected a str (one line of trace text)")
    C.uint("line_no", line_no, 64, err=TraceArgumentError)
    check_decoder(spte_decoder)
    C.boolean("all_events", all_events, err=TraceArgumentError)
    era = get_era(era)
    s = line.rstrip("\n")
    if len(s) > LINE_MAX:
        raise ValueError(f"a line of {len(s)} characters or more: longer than any trace line "
                         f"({LINE_MAX}; the kernel prints an event within one page)")
    if _SKIP.match(s):
        return None
    lm = _LOST_LINE.match(s)
    if lm is not None:
        if lm["cpu"] is not None:
            return (LOST, (int(lm["cpu"]), int(lm["n"]), "ftrace lost events"))
        return (LOST, (None, int(lm["pn"]), "perf trace lost events"))
    if s.startswith(" =>"):
        sm = _STACK_LINE.match(s)
        if sm:
            return (STACK_LINE, sm["func"])
    if s.startswith("\t"):
        cm = _PERF_CHAIN.match(s)
        if cm:
            addr = f"{int(cm['addr'], 16):#x}"
            return (CHAIN_LINE, addr if cm["sym"] == "[unknown]" else f"{addr} {cm['sym']} ({cm['dso']})")
    m = _HEADER.match(s)
    if m and _COLON_SPACE.search(m["comm"]):
        m = _HEADER.match(_INSTANCE.sub("", s.lstrip(), count=1))
    perf = False
    if not m:
        m = _PERF_HEADER.match(s)
        perf = m is not None
    if not m:
        pt = _PERF_TRACE.match(s)
        if pt is not None:
            return _perf_trace(pt, line_no, era, spte_decoder, all_events)
        sc = _PERF_TRACE_SYSCALL.match(s)
        if sc is not None:
            return ("other", sc["name"])
        sb = _perf_sideband(s)
        if sb is not None:
            return ("other", sb)
        tc = _PERF_TRACE_CHAIN.match(s)
        if tc is not None:
            return (CHAIN_LINE, f"{tc['sym']} ({tc['dso']})")
        bm = _BARE.match(s)
        if bm is not None and bm["event"] in ALL_EVENTS and bm["system"] in (None, "kvmmmu"):
            payload, failed = _unfailed(bm["payload"])
            rec = TraceRecord(line_no, "", -1, -1, "", 0.0, bm["event"], {}, payload=payload)
            return _fill(rec, bm["event"], "kvmmmu", payload, failed, all_events, era, spte_decoder)
        pp = _perf_prof(s, line_no, era)
        if pp is not None:
            return pp
        raise ValueError("not a trace line (expected 'comm-pid [cpu] ts: event: ...')")
    if not perf and m["stack"]:
        return (STACK, m["stack"])
    ev, payload = m["event"], m["payload"] or ""
    system = m["system"] or ("kvmmmu" if ev in ALL_EVENTS else "")
    payload, failed = _unfailed(payload)
    pid = (m["tid"] or m["pid"]) if perf else m["pid"]   # perf script may leave out tid and cpu
    cpu = m["cpu"] if perf else m["cpu"] or m["lcpu"]
    flags = "" if perf else m["flags"] or m["lflags"] or m["rflags"] or ""

    def record(payload):
        return TraceRecord(line_no, m["comm"] or "", int(pid) if pid else -1, int(cpu) if cpu else -1,
                           flags, _secs(m, perf), ev, {}, system=system,
                           payload=payload, ts_ns=_ns(m["ts"]) if perf else None)
    try:
        return _fill(record(payload), ev, system, payload, failed, all_events, era, spte_decoder)
    except ValueError:
        im = _PERF_IP.match(payload) if perf else None
        if im is None or len(im["ip"]) < 16:
            raise
        payload = im["keep"]
        return _fill(record(payload), ev, system, payload, failed, all_events, era, spte_decoder)


def _perf_sideband(s: str) -> str | None:
    """The PERF_RECORD_* name of a perf script side-band line (alone, or after the time)."""
    i = s.find("PERF_RECORD_")
    if i < 0:
        return None
    m = _PERF_SIDEBAND.match(s, i)
    if m is None or s[:i].strip() and not _PERF_SIDEBAND_TIME.search(s[:i]):
        return None
    return m[0]


def _secs(m, perf: bool) -> float:
    """TraceRecord.ts of a header match: seconds, a latency-format line's microseconds in
    seconds, or a bare count as it is (a clock that does not count time: no seconds)."""
    if perf or m["rawts"] is None and m["usts"] is None:
        return float(m["ts"])
    return float(m["rawts"]) if m["rawts"] is not None else int(m["usts"]) / 1e6


def _fill(rec: TraceRecord, ev: str, system: str, payload: str, failed: bool, all_events: bool,
          era, spte_decoder):
    """parse_line's record ``rec`` of event ``ev`` with the fields of its payload."""
    if ev not in ALL_EVENTS or system != "kvmmmu":
        if not all_events:
            return ("other", ev)
        if "=" in payload and "(" in payload and _FIELDS_LINE.match(payload):
            rec.fields, rec.source = _fields_payload(payload), "fields"
        elif "=" in payload and _RAW_LINE.match(payload):
            rec.fields, rec.source = dict(_RAW_FIELD.findall(payload)), "raw"
            for k, v in rec.fields.items():
                try:
                    rec.fields[k] = _raw_int(v)
                except ValueError:
                    pass
        return rec
    if "=" in payload and "(" in payload and _FIELDS_LINE.match(payload):
        rec.fields, rec.source = _fields_payload(payload), "fields"
        if ev in PAGE_EVENTS and not isinstance(rec.fields.get("role"), int):
            raise ValueError(f"{ev}: fields record without an integer role=")
    elif "=" in payload and _RAW_LINE.match(payload):
        raw = dict(_RAW_FIELD.findall(payload))
        hexes = () if failed else RAW_HEX_FIELDS.get(ev, ())
        try:
            rec.fields = {k: int(v.rstrip(","), 16) if k in hexes else _raw_int(v)
                          for k, v in raw.items()}
        except ValueError:
            raise ValueError(f"{ev}: raw field value is not a number") from None
        rec.source = "raw"
        if ev in PAGE_EVENTS:
            if "role" not in rec.fields or "gfn" not in rec.fields:
                raise ValueError(f"{ev}: raw record without role= or gfn=")
            if rec.fields["role"] >> 32:
                raise ValueError(f"{ev}: role={rec.fields['role']:#x} wider than 32 bits")
    elif ev in PAGE_EVENTS:
        pm = _PAGE_TEXT.match(payload)
        kind = "text"
        if not pm:
            pm = _PAGE_PLUGIN.match(payload)
            kind = "plugin"
        if not pm:
            pm = _PAGE_OLD_PLUGIN.match(payload)
            kind = "plugin-old"
        if not pm:
            raise ValueError(f"{ev}: page payload does not match KVM_MMU_PAGE_PRINTK of any era")
        g = pm.groupdict()
        rec.fields = {"root_count": int(g["root_count"]), "unsync": int(g["sync"] == "unsync")}
        if g["gfn"] is not None:
            rec.fields = {"gfn": int(g["gfn"], 16), **rec.fields}
        if g.get("gen") is not None:
            rec.fields["mmu_valid_gen"] = int(g["gen"], 16)
        if g.get("created"):
            rec.fields["created"] = int(g["created"] == "new")
        if kind == "plugin-old":
            rec.fields["glevels"] = int(g["glevels"])
            rec.fields["cr4_pge"] = 0 if g["pge"] == "!" else 1
            word, known = _old_plugin_role(era, g)
        else:
            word, known = _decode_page_text(era, pm, kind == "plugin")
        rec.role, rec.role_known = unpack(era, word), known
        rec.source = kind
    else:
        em = _EVENT_RE[ev].match(payload)
        if not em:
            raise ValueError(f"{ev}: payload does not match the event's TP_printk format")
        kinds = EVENTS[ev][1]
        rec.fields = {k: _int(v, kinds[k]) for k, v in em.groupdict().items()}
    return decorate(rec, era, spte_decoder)


#: The longest line parse_line reads (a damaged file read as text may hold megabytes without
#: a newline: its line is refused, and bounded_lines never holds more of it than this).
LINE_MAX = 1 << 16


def bounded_lines(f) -> Iterator[str]:
    """The lines of a text file object, each at most LINE_MAX + 1 characters: the rest of a
    longer one is read and dropped (parse_line refuses what is kept)."""
    while True:
        line = f.readline(LINE_MAX + 1)
        if not line:
            return
        if len(line) > LINE_MAX and not line.endswith("\n"):
            while True:
                rest = f.readline(LINE_MAX)
                if not rest or rest.endswith("\n"):
                    break
        yield line


def iter_text(lines: Iterable[str], era="latest", spte_decoder: Callable | None = None, *,
              all_events: bool = False, on_error: Callable | None = None,
              on_other: Callable | None = None, on_lost: Callable | None = None):
    """Stream records from text lines; a stack-trace block is attached to the record before
    it (``record.stack``); malformed lines go to ``on_error(line_no, reason, text)``, lines
    that count lost events to ``on_lost(cpu or None, count, key)``."""
    era = get_era(era)
    pending = None
    in_stack = False
    for n, line in enumerate(lines, 1):
        try:
            r = parse_line(line, n, era, spte_decoder, all_events)
        except (ValueError, KeyError, OverflowError) as e:
            in_stack = False
            if on_error is not None:
                on_error(n, str(e), line.rstrip("\n"))
            continue
        if r is None:
            continue
        if isinstance(r, tuple):
            kind, what = r
            if kind == STACK:
                in_stack = True
                continue
            if kind == CHAIN_LINE:
                if pending is not None:
                    pending.stack = pending.stack + (what,)
                elif on_error is not None:
                    on_error(n, "perf callchain line without a record before it", line.rstrip("\n"))
                continue
            if kind == LOST:
                in_stack = False
                if on_lost is not None:
                    on_lost(*what)
                continue
            if kind == STACK_LINE:
                if not in_stack:
                    if on_error is not None:
                        on_error(n, "' => ' stack line outside a <stack trace> block",
                                 line.rstrip("\n"))
                elif pending is not None:
                    pending.stack = pending.stack + (what,)
                continue
            in_stack = False
            pending_other = what
            if pending is not None:
                yield pending
                pending = None
            if on_other is not None:
                on_other(pending_other)
            continue
        in_stack = False
        if pending is not None:
            yield pending
        pending = r
    if pending is not None:
        yield pending


def check_decoder(spte_decoder) -> None:
    """An ``spte_decoder``: None or a callable ``(spte, level) -> str``."""
    if spte_decoder is not None and not callable(spte_decoder):
        raise TraceArgumentError(f"spte_decoder={spte_decoder!r}: expected a callable "
                                 "(spte, level) -> str, or None")


def parse(lines: Iterable[str], era="latest", spte_decoder: Callable | None = None) -> TraceResult:
    """Parse trace text into memory; malformed lines go to ``errors`` as (line_no, reason,
    text).  ``open_trace`` streams instead."""
    era = get_era(era)
    check_decoder(spte_decoder)
    try:
        lines = list(lines)
    except TypeError:
        raise TraceArgumentError(f"lines={lines!r}: expected an iterable of str") from None
    for i, s in enumerate(lines):
        if not isinstance(s, str):
            raise TraceArgumentError(f"lines[{i}]={s!r}: expected a str (one line of trace text)")
    res = TraceResult(era=era, format="text")
    res.records = list(iter_text(lines, era, spte_decoder,
                                 on_error=lambda n, why, s: res.errors.append((n, why, s)),
                                 on_other=lambda ev: res.other_events.update([ev])))
    return res


def parse_file(path: str, era="latest", spte_decoder=None) -> TraceResult:
    """Any supported trace file (text, gzip, capture, trace.dat) read into a TraceResult."""
    from .stream import open_trace
    with open_trace(path, era=era, spte_decoder=spte_decoder, check_era=False) as st:
        res = TraceResult(era=st.era, kernel_version=st.kernel_version, format=st.format)
        res.records = list(st)
        res.errors = list(st.errors)
        res.other_events = st.other_events
    return res

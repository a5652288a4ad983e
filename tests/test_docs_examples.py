"""The documentation never lies: every example of README.md and docs/*.md is run.

* Every fenced ```python block runs (in a tmp dir holding the fixtures of ``FIXTURES``, one
  namespace per block, statement by statement).  The docs state a value in a comment on an
  expression line: ``expr   # 'value'`` (or ``expr   # -> value``).  The stated value is a Python
  literal; it is evaluated and its repr must equal the repr of the expression's value, so
  ``hex(s)   # '0x8600000012345b77'`` states a string and ``w.gfn   # 0x9`` the int 9 (the docs
  write bit words in hex).  Strict: a stated value that differs fails, a comment on an
  expression line that starts like a value (a quote, digit, bracket, ``-``, ``True``...) but is
  not a literal fails, and a literal comment on a line that is not an expression fails.  Prose
  comments (``# no software A/D bits in that era``) are prose.
* Every ``pykvmmu ...`` command line of a fenced or indented block, and every inline
  ```pykvmmu ...``` of the prose, is checked against the CLI's own argparse parser.  Lines with
  placeholders (``TRACE``, ``FILE``, ``[--runs N]``, ``a|b``, ``...``) and inline names in
  prose or headings are synopses: the subcommands and every option they name must exist (the
  README's command list gives a concrete instance for its synopses, ``INSTANCES``, which runs).
  Concrete lines must parse; those that need root, /dev/kvm or a long run are skipped with
  their reason (``needs_root``); the others run in-process (``pykvmmu.cli.main``, as
  tests/test_cli.py does) in the tmp dir with the fixtures under the documented names, and
  must exit 0 or the status the doc states (``EXPECTED``).  Where a doc prints the output
  (``$ pykvmmu ...`` followed by its output) the output must match line for line; only the
  tmp dir's path may vary (``VARYING``): none of the documented outputs has a timestamp.
* ``test_extractor_*`` plant stale values, options and outputs into copies of the docs and
  show that the checks fail.
"""
from __future__ import annotations

import ast
import contextlib
import gzip
import io
import os
import re
import shlex
import shutil
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pykvmmu.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
DOCS = ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))

# A pasted kernel log for ``pykvmmu rmp decode dmesg.txt`` (mainline dump_rmpentry() lines).
DMESG = ("[ 8123.123456] SEV-SNP: PFN 0x1234200, RMP entry: [0x0028000001234003 - 0x000000000000001f]\n"
         "[ 8124.000001] SEV-SNP: PFN 0x5005 unassigned, dumping non-zero entries in 2M PFN region: "
         "[0x5000 - 0x5200]\n"
         "[ 8124.000002] SEV-SNP: PFN: 0x5007, [0x0000000000000001 - 0x0000000000000000]\n")

#: The file names the examples use -> what the tmp dir holds under that name.
FIXTURES = {
    "run.kvmcap": "tests/data/live/demo.kvmcap",
    "demo.kvmcap": "tests/data/live/demo.kvmcap",
    "tests/data/live/demo.kvmcap": "tests/data/live/demo.kvmcap",
    "trace.dat": "gunzip of tests/data/live/demo-v7-nocomp.dat.gz (v7, uncompressed: the zstd "
                 "demo-v7.dat needs the optional zstandard package)",
    "trace.txt.gz": "gzip of tests/data/live/demo.trace.txt",
    "fuzz-crashes/": "tests/data/live/kfuzz-unsync-min.kvmcap (a directory with one reproducer)",
    "dmesg.txt": "DMESG above (mainline dump_rmpentry() lines with dmesg prefixes)",
    "rmp.bin": "a 64 MiB RMP table made by `pykvmmu rmp create --memory 64M rmp.bin`",
    "cat /sys/kernel/tracing/trace |": "standard input from tests/data/live/demo.trace.txt "
                                       "(tracefs needs root)",
}

#: README's command-list synopses -> a concrete instance that runs.
INSTANCES = {
    "pykvmmu role decode ...": "pykvmmu role decode 0x3704 0x3681",
    "pykvmmu walk ADDR PFERR PTE:LEVEL ...":
        "pykvmmu walk 5000 2 2007:4 3007:3 4007:2 9007:1 --cr3 1000",
    "pykvmmu rmp show --table FILE PFN": "pykvmmu rmp show --table rmp.bin 0x201",
}

#: Concrete command lines the docs state a result for: exit status and text the output holds.
EXPECTED = {
    # docs/live.md: "# the kernel target and its corpus size"
    "pykvmmu fuzz --list": dict(out=["kernel   (live, root)", "guest descriptions"]),
    # docs/live.md: "# re-audit only: no root, no KVM"
    "pykvmmu fuzz --replay fuzz-crashes/ --offline":
        dict(out=["kfuzz-unsync-min.kvmcap: offline (6.18.44-fc-v669): ok",
                  "kfuzz-unsync-min.kvmcap: live: skipped (not asked to (offline only))"]),
    # docs/mmio.md: "`mmio check` exits 1 when the strict validator objects ..."
    "pykvmmu mmio check --mode npt --value 0x8000000000001 --mask 0x8000000000801 --access-mask 6":
        dict(status=1, out=["mask_overlaps_mmu_present", "strict validator:"]),
    "pykvmmu mmio make 0xfee00 --mode ept --generation 0x12345": dict(out=["= 0x12300000fee0022e"]),
    # docs/mmio.md: "MMIO SPTEs print gfn, access, generation"
    "pykvmmu decode 0x12300000fee0022e --mode ept":
        dict(out=["kind      : mmio", "gfn       : 0xfee00", "access    : 0x0", "generation: 0x12345"]),
    "pykvmmu decode 0x8600000012345b77 --mode ept --profile v6.19": dict(out=["pfn       : 0x12345"]),
    # docs/spte.md: "prints the mapping as its first line and the warning on stderr"
    "pykvmmu config --profile 6.18.44-fc-v669":
        dict(first="profile v6.15 (v6.15-v7.1) for '6.18.44-fc-v669': unverified (warned)",
             err_first="pykvmmu: warning: kernel '6.18.44-fc-v669'"),
    # README: "any kernel version maps to its profile"
    "pykvmmu config --mode npt-sme --profile 6.6.75": dict(first="profile v6.6.64 (6.6.64 and later 6.6.y) "
                                                            "for '6.6.75': stable-line rule"),
    # docs/walk.md: "does the same from the command line" (as the python example above it)
    "pykvmmu walk 5000 2 2007:4 3007:3 4007:2 9007:1 --cr3 1000 --events":
        dict(out=["-> gfn 0x9 level 1 pte_access wux dirty", "child  0x00003701",
                  "kvm_mmu_set_dirty_bit: gpa 4028"]),
    "pykvmmu decode --arch ept --level 1 9077": dict(out=["memory type: WB (6) ignore-PAT"]),
}

#: What may differ between a documented output and the real one (pattern, replacement).
VARYING = [(re.compile(r"/\S*/pytest-\d+/\S*?(?=/|\s|$)"), "<tmp>")]

#: Python blocks that need root or /dev/kvm: (doc, text of the block's first line) -> reason.
PY_SKIP: dict = {}

_ROOT_REASONS = [
    (re.compile(r"^sudo\b"), "run with sudo: needs root"),
    (re.compile(r"^pykvmmu record\b"), "records a guest on /dev/kvm through tracefs: needs root"),
    (re.compile(r"^pykvmmu guest run\b"), "runs a guest on /dev/kvm: needs root"),
    (re.compile(r"^pykvmmu fuzz(-kernel| kernel)\b"), "random guests on /dev/kvm, recorded: needs root"),
    (re.compile(r"^pykvmmu fuzz --replay(?!.*--offline)"),
     "replays on the live kernel too (root, /dev/kvm) unless --offline"),
    (re.compile(r"^pykvmmu fuzz all\b"), "every fuzz target for 60 s each: a long run"),
]


def needs_root(line: str) -> str | None:
    for pat, reason in _ROOT_REASONS:
        if pat.search(line):
            return reason
    return None


# ---------------------------------------------------------------- extraction

@dataclass
class PyBlock:
    doc: str
    line: int                 # line of the opening fence
    code: str

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass
class CliExample:
    doc: str
    line: int
    text: str                 # the shell line as documented (comment stripped)
    where: str                # "block", "inline", "heading"
    output: list | None = None     # the output the doc prints after a "$ " line
    stdin: str | None = None       # "cmd |" in front of pykvmmu
    redirect: str | None = None    # "> FILE" after it
    cmd: str = field(default="")   # "pykvmmu ..." alone

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}:{self.cmd[8:] or self.cmd}"


_FENCE = re.compile(r"^```\s*(\S*)\s*$")


def _join(words: list) -> str:
    return " ".join(w if re.fullmatch(r"[^\s'\"]+", w) else shlex.quote(w) for w in words)


def _split_shell(doc: str, line: int, text: str, where: str) -> CliExample | None:
    """A shell line holding a pykvmmu command -> CliExample (None if it holds none)."""
    text = text.strip()
    if text.startswith("$ "):
        text = text[2:]
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        words = text.split()
    segments, seps = [[]], []
    for w in words:
        if w in ("&&", "|"):
            segments.append([])
            seps.append(w)
        else:
            segments[-1].append(w)
    idx = next((k for k, seg in enumerate(segments)
                if seg[:1] == ["pykvmmu"] or seg[:2] == ["sudo", "pykvmmu"]), None)
    if idx is None:
        return None
    seg = segments[idx]
    ex = CliExample(doc, line, _join(words), where)
    if ">" in seg:
        ex.redirect = seg[seg.index(">") + 1]
        seg = seg[:seg.index(">")]
    if idx and seps[idx - 1] == "|":
        ex.stdin = _join(segments[idx - 1]) + " |"
    ex.cmd = _join(seg)
    return ex


def extract(doc: str, text: str) -> tuple[list, list]:
    """The python blocks and the CLI examples of one markdown text."""
    lines = text.split("\n")
    pys, clis = [], []
    prose = list(lines)                 # blocks blanked out, for the inline scan
    i = 0
    prev_blank = True
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m:
            lang, start = m.group(1), i
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            body = lines[i + 1:j]
            if lang == "python":
                pys.append(PyBlock(doc, start + 1, "\n".join(body) + "\n"))
            elif lang in ("", "sh", "shell", "console", "bash"):
                clis += _block_commands(doc, start + 2, body)
            for k in range(i, min(j + 1, len(lines))):
                prose[k] = ""
            i = j + 1
            prev_blank = True
            continue
        if lines[i].startswith("    ") and prev_blank and lines[i].strip():
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            while j > i and not lines[j - 1].strip():
                j -= 1
            clis += _block_commands(doc, i + 1, [ln[4:] for ln in lines[i:j]])
            for k in range(i, j):
                prose[k] = ""
            i = j
            prev_blank = False
            continue
        prev_blank = not lines[i].strip()
        i += 1
    flat = "\n".join(prose)
    for m in re.finditer(r"`([^`]+)`", flat):
        code = " ".join(m.group(1).split())
        if not code.startswith("pykvmmu "):
            continue
        lineno = flat.count("\n", 0, m.start()) + 1
        where = "heading" if lines[lineno - 1].startswith("#") else "inline"
        ex = _split_shell(doc, lineno, code, where)
        if ex is not None:
            clis.append(ex)
    return pys, clis


def _block_commands(doc: str, first_line: int, body: list) -> list:
    """The pykvmmu command lines of a code block; a ``$ `` line owns the output below it."""
    out = []
    cur, cur_indent = None, 0
    for k, ln in enumerate(body):
        s = ln.strip()
        if cur is not None and cur.output is None and ln.startswith(" ") and s and \
                len(ln) - len(ln.lstrip()) > cur_indent:
            cur.text += " " + s                  # a continuation line of a synopsis
            cur.cmd = _join(shlex.split(cur.cmd) + shlex.split(s, comments=True))
            continue
        ex = _split_shell(doc, first_line + k, s, "block") if s else None
        if ex is not None:
            if s.startswith("$ "):
                ex.output = []
            out.append(ex)
            cur, cur_indent = ex, len(ln) - len(ln.lstrip())
        elif cur is not None and cur.output is not None:
            cur.output.append(ln.rstrip())
    for ex in out:
        if ex.output is not None:
            while ex.output and not ex.output[-1]:
                ex.output.pop()
    return out


def all_examples(texts: dict | None = None) -> tuple[list, list]:
    pys, clis = [], []
    for doc in DOCS:
        text = texts[doc] if texts and doc in texts else (ROOT / doc).read_text()
        p, c = extract(doc, text)
        pys += p
        clis += c
    return pys, clis


# ---------------------------------------------------------------- fixtures

def make_fixtures(tmp: Path) -> None:
    """The files of FIXTURES, under the names the examples use, in ``tmp``."""
    for name in ("run.kvmcap", "demo.kvmcap"):
        shutil.copy(DATA / "live" / "demo.kvmcap", tmp / name)
    (tmp / "tests" / "data" / "live").mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "live" / "demo.kvmcap", tmp / "tests" / "data" / "live" / "demo.kvmcap")
    (tmp / "trace.dat").write_bytes(gzip.decompress((DATA / "live" / "demo-v7-nocomp.dat.gz").read_bytes()))
    with gzip.open(tmp / "trace.txt.gz", "wb") as f:
        f.write((DATA / "live" / "demo.trace.txt").read_bytes())
    (tmp / "fuzz-crashes").mkdir(exist_ok=True)
    shutil.copy(DATA / "live" / "kfuzz-unsync-min.kvmcap", tmp / "fuzz-crashes")
    (tmp / "dmesg.txt").write_text(DMESG)
    with _captured():
        assert main(["rmp", "create", "--memory", "64M", "--force", str(tmp / "rmp.bin")]) == 0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("docs")
    make_fixtures(tmp)
    return tmp


@contextlib.contextmanager
def _captured(stdin: Path | None = None):
    """stdout/stderr into text streams with a binary buffer (as a terminal has)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="\n")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="\n")
    old_in = sys.stdin
    f = open(stdin, "rb") if stdin else None
    try:
        if f:
            sys.stdin = io.TextIOWrapper(f, encoding="utf-8")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            res = {}
            yield res
        out.flush()
        err.flush()
        res["out"] = out.buffer.getvalue().decode()
        res["err"] = err.buffer.getvalue().decode()
    finally:
        sys.stdin = old_in
        if f:
            f.close()


# ---------------------------------------------------------------- python blocks

_VALUE_START = re.compile(r"""^(['"\[\(\{\d-]|True\b|False\b|None\b)""")


def comments_of(code: str) -> dict:
    """line -> (comment text, whether it says ``->``) of each comment in ``code``."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT:
            c = tok.string[1:].strip()
            out[tok.start[0]] = (c[2:].strip(), True) if c.startswith("->") else (c, False)
    return out


def _literal(text: str):
    """(True, value) if ``text`` is a Python literal, else (False, None)."""
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def stated_values(block: PyBlock) -> tuple:
    """({line: (stated text, value)} of the top-level expression lines, [problems]).

    A comment states a value when it is a Python literal (or says ``-> value``); it may do so
    only on the last line of a top-level expression statement, and a comment there that starts
    like a value must be one."""
    tree = ast.parse(block.code, filename=block.id)
    expr_lines = {stmt.end_lineno for stmt in tree.body if isinstance(stmt, ast.Expr)}
    stated, problems = {}, []
    for line, (text, arrow) in comments_of(block.code).items():
        where = f"{block.doc}:{block.line + line}"
        ok, value = _literal(text)
        if line in expr_lines:
            if ok:
                stated[line] = (text, value)
            elif arrow or _VALUE_START.match(text):
                problems.append(f"{where}: the comment {text!r} starts like a stated value but "
                                "is not a Python literal")
        elif ok or arrow:
            problems.append(f"{where}: a stated value ({text!r}) on a line that is not the end of "
                            "a top-level expression: nothing checks it")
    return stated, problems


def run_python_block(block: PyBlock, cwd: Path) -> list:
    """Run one block; the problems found (stated values that differ, misplaced ones)."""
    stated, problems = stated_values(block)
    tree = ast.parse(block.code, filename=block.id)
    ns: dict = {"__name__": "__docs__"}
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with _captured():
            for stmt in tree.body:
                if stmt.end_lineno in stated:
                    text, want = stated[stmt.end_lineno]
                    value = eval(compile(ast.Expression(stmt.value), block.id, "eval"), ns)
                    if repr(value) != repr(want):
                        problems.append(f"{block.doc}:{block.line + stmt.end_lineno}: "
                                        f"{ast.unparse(stmt.value)} is {value!r}, the doc says {text}")
                else:
                    exec(compile(ast.Module([stmt], []), block.id, "exec"), ns)
    finally:
        os.chdir(old)
    return problems


# ---------------------------------------------------------------- command lines

_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(:[A-Z]+)?(\.\.\.|\.[a-z]+)?$")


def is_synopsis(ex: CliExample) -> bool:
    if ex.where == "heading":
        return True
    words = ex.cmd.split()
    if "--" in words:
        words = words[:words.index("--")]
    return any(_PLACEHOLDER.match(w) or "..." in w or "[" in w or "]" in w or
               re.search(r"\w[|/]\w", w) and not w.startswith(("-", "0x")) and "." not in w
               for w in words[1:])


def _argv(cmd: str) -> list:
    words = shlex.split(cmd)
    if words and words[0] == "sudo":
        words = words[1:]
    assert words[0] == "pykvmmu", cmd
    return words[1:]


def _subparsers(parser):
    for a in parser._actions:
        if a.__class__.__name__ == "_SubParsersAction":
            return a
    return None


def _options(parser) -> set:
    return {s for a in parser._actions for s in a.option_strings}


def synopsis_problems(cmd: str) -> list:
    """The subcommands and options a synopsis names must exist."""
    words = _argv(cmd.replace("[", " ").replace("]", " "))
    if "--" in words:
        words = words[:words.index("--")]
    parser, i, problems = build_parser(), 0, []
    while i < len(words):
        sp = _subparsers(parser)
        w = words[i]
        if sp is None or w.startswith("-") or _PLACEHOLDER.match(w) or "..." in w:
            break
        alts = re.split(r"[|/]", w)
        if w in sp.choices:
            parser = sp.choices[w]
        elif all(a in sp.choices for a in alts):
            return [f"{cmd}: {a} {o}: no such option" for a in alts
                    for o in _option_words(words[i + 1:]) if o not in _options(sp.choices[a])]
        else:
            return [f"{cmd}: {w!r} is not a subcommand (choices: {', '.join(sp.choices)})"]
        i += 1
    opts = _options(parser)
    problems += [f"{cmd}: {o}: no such option" for o in _option_words(words[i:]) if o not in opts]
    actions = {s: a for a in parser._actions for s in a.option_strings}
    for opt, val in zip(words[i:], words[i + 1:]):        # "--arch a|b|c": every choice exists
        a = actions.get(opt)
        if a is not None and a.choices and "|" in val:
            problems += [f"{cmd}: {opt} {c}: not a choice ({', '.join(map(str, a.choices))})"
                         for c in val.split("|") if c not in a.choices]
    return problems


def _option_words(words: list) -> list:
    return [m.group(1) for w in words for m in [re.match(r"^(--?[A-Za-z][\w-]*)", w)] if m]


def parse_problems(cmd: str) -> list:
    """A concrete line must parse with the CLI's own parser (as it would on a root shell)."""
    argv = _argv(cmd)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
    except SystemExit as e:
        if e.code == 0:
            return []
        return [f"{cmd}: argparse refuses it: {err.getvalue().strip().splitlines()[-1]}"]
    if not getattr(args, "func", None):
        return [f"{cmd}: names no command"]
    return []


def _normalise(text: str, cwd: Path) -> list:
    text = text.replace(str(cwd), "<tmp>")
    for pat, rep in VARYING:
        text = pat.sub(rep, text)
    return [ln.rstrip() for ln in text.rstrip("\n").split("\n")]


def run_cli(ex: CliExample, cwd: Path) -> list:
    """Run one concrete, unprivileged command line in ``cwd``: the problems found."""
    cmd = ex.cmd
    stdin = None
    if ex.stdin:
        if ex.stdin != "cat /sys/kernel/tracing/trace |":
            return [f"{ex.id}: no fixture for the input {ex.stdin!r} (FIXTURES)"]
        stdin = DATA / "live" / "demo.trace.txt"
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with _captured(stdin) as res:
            try:
                rc = main(_argv(cmd))
            except SystemExit as e:
                rc = e.code or 0
    finally:
        os.chdir(old)
    if ex.redirect:
        (cwd / ex.redirect).write_text(res["out"])
    problems = []
    want = EXPECTED.get(cmd, {})
    status = want.get("status", 0)
    if rc != status:
        problems.append(f"{ex.id}: {cmd}: exit status {rc}, the doc says {status}\n{res['err'][-2000:]}")
    for needle in want.get("out", []):
        if needle not in res["out"]:
            problems.append(f"{ex.id}: {cmd}: the output lacks {needle!r}")
    if "first" in want and res["out"].split("\n", 1)[0] != want["first"]:
        problems.append(f"{ex.id}: {cmd}: first line {res['out'].split(chr(10), 1)[0]!r}, "
                        f"the doc says {want['first']!r}")
    if "err_first" in want and not res["err"].startswith(want["err_first"]):
        problems.append(f"{ex.id}: {cmd}: stderr {res['err'][:200]!r}, "
                        f"the doc says it starts {want['err_first']!r}")
    if ex.output is not None:
        got, doc = _normalise(res["out"], cwd), _normalise("\n".join(ex.output), cwd)
        if got != doc:
            import difflib
            diff = "\n".join(difflib.unified_diff(doc, got, "documented", "actual", lineterm=""))
            problems.append(f"{ex.id}: {cmd}: the output differs from the doc's\n{diff}")
    return problems


def check_cli(ex: CliExample, cwd: Path) -> tuple[list, str | None]:
    """(problems, skip reason) of one CLI example."""
    if is_synopsis(ex):
        problems = synopsis_problems(ex.cmd)
        inst = INSTANCES.get(ex.cmd)
        if inst and not problems:
            problems += run_cli(CliExample(ex.doc, ex.line, inst, "instance", cmd=inst), cwd)
        return problems, None
    if ex.where == "inline" and all_subcommands(ex.cmd):
        return synopsis_problems(ex.cmd), None          # a command's name in prose
    problems = parse_problems(ex.cmd) or synopsis_problems(ex.cmd)   # no abbreviated options
    if ex.where == "inline" and problems and "expected one argument" in problems[0] and \
            ex.cmd.split()[-1].startswith("-"):
        return synopsis_problems(ex.cmd), None          # an option's name in prose
    reason = needs_root(ex.cmd)
    if problems or reason:
        return problems, reason
    return run_cli(ex, cwd), None


def all_subcommands(cmd: str) -> bool:
    parser = build_parser()
    for w in _argv(cmd):
        sp = _subparsers(parser)
        if sp is None or w not in sp.choices:
            return False
        parser = sp.choices[w]
    return True


# ---------------------------------------------------------------- the tests

PYS, CLIS = all_examples()


def test_the_docs_have_examples():
    assert len(PYS) >= 3 and len(CLIS) >= 40
    assert {b.doc for b in PYS} >= {"README.md", "docs/trace.md", "docs/walk.md"}
    assert any(ex.output for ex in CLIS)
    for key in PY_SKIP:
        assert any((b.doc, b.code.split("\n", 1)[0]) == key for b in PYS), f"stale PY_SKIP {key}"
    stated = [c for c in CLIS if c.cmd in EXPECTED or c.cmd in INSTANCES]
    assert len({c.cmd for c in stated}) == len(EXPECTED) + len(INSTANCES), "stale EXPECTED/INSTANCES"


@pytest.mark.parametrize("block", PYS, ids=[b.id for b in PYS])
def test_python_example(block, workdir):
    reason = PY_SKIP.get((block.doc, block.code.split("\n", 1)[0]))
    if reason:
        pytest.skip(reason)
    problems = run_python_block(block, workdir)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("ex", CLIS, ids=[c.id for c in CLIS])
def test_cli_example(ex, workdir):
    problems, reason = check_cli(ex, workdir)
    assert not problems, "\n".join(problems)
    if reason:
        pytest.skip(f"{ex.cmd}: {reason} (parsed by the CLI's parser only)")


# ---------------------------------------------------------------- the extractor itself

def _planted(doc: str, old: str, new: str) -> dict:
    text = (ROOT / doc).read_text()
    assert old in text, (doc, old)
    return {doc: text.replace(old, new, 1)}


def generated_tables(doc: str, text: str) -> list:
    """[(line, module, tables)]: a heading "generated by `python -m pykvmmu.X`" and the markdown
    tables of its section, which must be that command's output."""
    out = []
    lines = text.split("\n")
    for i, ln in enumerate(lines):
        m = re.search(r"generated by `python -m (pykvmmu[\w.]*)`", ln)
        if not m:
            continue
        tables, prev = [], False
        for ln2 in lines[i + 1:]:
            if ln2.startswith("#"):
                break
            if ln2.startswith("|"):
                if not prev and tables:
                    tables.append("")
                tables.append(ln2.rstrip())
            prev = ln2.startswith("|")
        out.append((i + 1, m.group(1), tables))
    return out


GENERATED = [(doc, *g) for doc in DOCS for g in generated_tables(doc, (ROOT / doc).read_text())]


def run_module(module: str) -> str:
    import runpy
    import warnings
    with _captured() as res, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)        # runpy: already imported
        runpy.run_module(module, run_name="__main__", alter_sys=False)
    return res["out"]


@pytest.mark.parametrize("doc, line, module, tables", GENERATED,
                         ids=[f"{g[0]}:{g[1]}" for g in GENERATED])
def test_generated_tables(doc, line, module, tables):
    assert tables, f"{doc}:{line}: no table below the heading"
    got = [ln.rstrip() for ln in run_module(module).rstrip("\n").split("\n")]
    assert got == tables, f"{doc}:{line}: the tables are not what `python -m {module}` prints"


def test_extractor_a_changed_generated_table_fails():
    text = (ROOT / "docs" / "private.md").read_text()
    (_, module, tables), = generated_tables("docs/private.md", text)
    bad = text.replace("| snp | none | shared | ENC | - | exit:P | mmio |", "| snp | none | shared | ENC | - | exit:S | mmio |")
    (_, _, planted), = generated_tables("docs/private.md", bad)
    got = [ln.rstrip() for ln in run_module(module).rstrip("\n").split("\n")]
    assert got == tables and got != planted


def test_extractor_finds_the_known_examples():
    ids = {(c.doc, c.cmd) for c in CLIS}
    assert ("README.md", "pykvmmu decode 0x8600000012345b77 --mode ept --profile v6.19") in ids
    assert ("docs/trace.md", "pykvmmu trace - --era v6.18") in ids
    assert ("docs/live.md", "sudo pykvmmu fuzz kernel --time 600 [--runs N] [--seed S] [--out DIR] "
            "[--keep-going] [--shrink SECONDS] [--corpus DIR] [-q]") in ids
    audit = [c for c in CLIS if c.cmd == "pykvmmu audit tests/data/live/demo.kvmcap"]
    assert len(audit) == 1 and audit[0].output[0].startswith("audit: 478 records")
    guest = [c for c in CLIS if c.cmd == "pykvmmu guest demo"]
    assert [g.redirect for g in guest if g.where == "block"] == ["desc.json"]


def test_extractor_a_changed_stated_value_fails(workdir):
    pys, _ = all_examples(_planted("README.md", "# '0x8600000012345b77'", "# '0x8600000012345b76'"))
    problems = run_python_block([b for b in pys if b.doc == "README.md"][0], workdir)
    assert len(problems) == 1 and "the doc says '0x8600000012345b76'" in problems[0]


def test_extractor_a_value_in_other_words_fails(workdir):
    pys, _ = all_examples(_planted("docs/walk.md", "# ['0x3704',", "# ['0x3704' and"))
    problems = run_python_block([b for b in pys if b.doc == "docs/walk.md"][0], workdir)
    assert len(problems) == 1 and "not a Python literal" in problems[0]


def test_extractor_a_changed_output_line_fails(workdir):
    _, clis = all_examples(_planted("docs/audit.md", "guest_walk             91", "guest_walk             92"))
    ex = [c for c in clis if c.output is not None][0]
    problems, _ = check_cli(ex, workdir)
    assert len(problems) == 1 and "+guest_walk             91" in problems[0]


@pytest.mark.parametrize("doc, old, new, why", [
    ("docs/mmio.md", "--mode ept --generation 0x12345", "--mode ept --gen 0x12345", "--gen: no such option"),
    ("docs/mmio.md", "--mode ept --generation 0x12345", "--mode ept --generations 0x12345", "argparse refuses"),
    ("docs/live.md", "[--keep-going]", "[--keep-on]", "--keep-on: no such option"),
    ("docs/live.md", "sudo pykvmmu record -o x.kvmcap --text x", "sudo pykvmmu record -o x.kvmcap --txt x",
     "argparse refuses"),
    ("docs/role.md", "`pykvmmu role eras`", "`pykvmmu role era`", "is not a subcommand"),
    ("docs/walk.md", "x86-64|pae|32bit|ept [", "x86-64|pae|32|ept [", "--arch 32: not a choice"),
    ("README.md", "--mode tdx`", "--mode tdx2`", "argparse refuses"),
    ("docs/trace.md", "--era v6.14 --mode shadow", "--era v6.14 --mode shadowx", "exit status 1, the doc says 0"),
])
def test_extractor_a_stale_command_fails(workdir, doc, old, new, why):
    _, clis = all_examples(_planted(doc, old, new))
    bad = [c for c in clis if c.doc == doc and new.strip("`") in c.cmd]
    assert bad
    problems = [p for c in bad for p in check_cli(c, workdir)[0]]
    assert problems and why in problems[0]


def test_extractor_a_wrong_exit_status_fails(workdir):
    ex = CliExample("x.md", 1, "", "block", cmd="pykvmmu decode 0x1 --level 7")
    assert "exit status 1, the doc says 0" in run_cli(ex, workdir)[0]


def test_audit_md_disagreement_line():
    """docs/audit.md: "Change one bit of a recorded SPTE and the audit names it:" + the line."""
    import copy

    from pykvmmu import audit as A
    from pykvmmu import trace as T
    text = (ROOT / "docs" / "audit.md").read_text()
    block = text.split("Change one bit of a recorded SPTE and the audit names it:", 1)[1]
    stated = block.strip("\n").split("\n", 1)[0].strip()
    m = re.match(r"record (\d+) kvm_mmu_set_spte: .* model (0x[0-9a-f]+) kernel (0x[0-9a-f]+),", stated)
    line, model, kernel = int(m.group(1)), int(m.group(2), 16), int(m.group(3), 16)
    recs = [copy.copy(r) for r in T.open_trace(str(DATA / "live" / "demo.kvmcap"))]
    for r in recs:
        if r.line_no == line:
            assert r.fields["spte"] == model
            r.fields = dict(r.fields, spte=kernel)
    got = [str(v) for v in A.audit_records(recs).disagreements]
    assert got == [stated]


def test_extractor_the_arrow_form_and_misplaced_values(workdir):
    block = PyBlock("x.md", 1, "x = 2\nx + 1     # -> 3\nhex(x * 2)     # '0x5'\n"
                               "for i in range(2):\n    i     # 0\nx     # 2 pages\n")
    problems = run_python_block(block, workdir)
    assert len(problems) == 3, problems
    assert "hex(x * 2) is '0x4', the doc says '0x5'" in problems[2]
    assert "x.md:6: a stated value ('0') on a line that is not the end" in problems[0]
    assert "x.md:7: the comment '2 pages' starts like a stated value" in problems[1]


def test_fixtures_are_there_and_used(workdir):
    _, clis = all_examples()
    used = " ".join(f"{c.stdin or ''} {c.cmd}" for c in clis) + " ".join(INSTANCES.values())
    used += " ".join(b.code for b in PYS)
    for name in FIXTURES:
        assert name in used, f"FIXTURES names {name!r}, which no example uses"
        if " " not in name:
            assert (workdir / name).exists(), name

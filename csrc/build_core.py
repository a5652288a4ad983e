"""cffi build script for the pykvmmu C core (API mode, out-of-line).

Used by setuptools through ``cffi_modules`` (see setup.py).  Run it directly
(``python csrc/build_core.py``) to rebuild ``pykvmmu/_core*.so`` in place for
development; the new library is moved into place atomically, so processes that
have the old one loaded are not disturbed.

Environment:
  PYKVMMU_SANITIZE=1  build with AddressSanitizer + UndefinedBehaviorSanitizer
                      (tests must then run with libasan preloaded; see Makefile)
  PYKVMMU_FUZZ=1      build with -fsanitize=fuzzer-no-link,address,undefined (clang)
  PYKVMMU_CFLAGS      extra compiler flags, split on white space
"""
import glob
import os
import re
import shutil
import sys
import sysconfig

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HEADER = os.path.join(HERE, "pykvmmu.h")

_DEFINE = re.compile(r"^#define\s+[A-Z][A-Z0-9_]*\s+(0x[0-9A-Fa-f]+|[0-9]+)\s*$")


def cdef_text(path=HEADER):
    """The header with preprocessor lines removed, except plain integer #defines."""
    out = []
    with open(path) as f:
        for line in f:
            s = line.strip()
            if s.startswith("#") and not _DEFINE.match(s):
                continue
            out.append(line)
    return "".join(out)


def _is_gcc():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or ""
    return "clang" not in cc


def compile_args():
    args = ["-std=c11", "-O3", "-Wall", "-Wextra", "-fno-strict-aliasing"]
    if _is_gcc():
        # spte.c's one-predicate batch loops branch on era rules (loop invariants); let gcc
        # unswitch all of them so each loop vectorises (csrc/spte_rules.h, SEL).
        args += ["--param=max-unswitch-level=8", "--param=max-unswitch-insns=400"]
    link = []
    if os.environ.get("PYKVMMU_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
               "-fno-omit-frame-pointer", "-g", "-O1"]
        args = [a for a in args if a != "-O3"] + san
        link += ["-fsanitize=address,undefined"]
    if os.environ.get("PYKVMMU_FUZZ") == "1":
        fz = ["-fsanitize=fuzzer-no-link,address,undefined", "-fno-omit-frame-pointer", "-g"]
        args += fz
        link += ["-fsanitize=fuzzer-no-link,address,undefined"]
    extra = os.environ.get("PYKVMMU_CFLAGS", "").split()
    return args + extra, link


def flags_stamp(cflags, ldflags):
    """build/core-flags.stamp holds the compiler and linker flags of the last build; it is
    rewritten (so it becomes newer than the built core) only when they change, and the
    extension depends on it: a change of PYKVMMU_CFLAGS or of the sanitizer switches then
    rebuilds the core instead of reusing a stale build/."""
    stamp = os.path.join(ROOT, "build", "core-flags.stamp")
    text = " ".join(cflags) + "\n" + " ".join(ldflags) + "\n"
    try:
        with open(stamp) as f:
            if f.read() == text:
                return stamp
    except OSError:
        pass
    os.makedirs(os.path.dirname(stamp), exist_ok=True)
    with open(stamp, "w") as f:
        f.write(text)
    return stamp


def make_ffibuilder(absolute=False):
    rel = HERE if absolute else os.path.relpath(HERE, os.getcwd())
    sources = sorted(os.path.join(rel, os.path.basename(p))
                     for p in glob.glob(os.path.join(HERE, "*.c")))
    headers = sorted(os.path.join(rel, os.path.basename(p))
                     for p in glob.glob(os.path.join(HERE, "*.h")))
    cflags, ldflags = compile_args()
    fb = FFI()
    fb.cdef(cdef_text())
    # The module source also defines the rule-text table (csrc/errors.h, included once).
    # depends: an edited header or changed flags make setuptools rebuild every source.
    fb.set_source("pykvmmu._core", '#include "pykvmmu.h"\n#include "errors.h"\n',
                  sources=sources, include_dirs=[rel], depends=headers + [flags_stamp(cflags, ldflags)],
                  extra_compile_args=cflags, extra_link_args=ldflags)
    return fb


ffibuilder = make_ffibuilder()


def build_inplace():
    """Compile into build/inplace and atomically replace pykvmmu/_core*.so."""
    os.chdir(ROOT)
    fb = make_ffibuilder(absolute=True)
    tmp = os.path.join(ROOT, "build", "inplace-%d" % os.getpid())
    os.makedirs(tmp, exist_ok=True)
    so = fb.compile(tmpdir=tmp, verbose=False)
    dest = os.path.join(ROOT, "pykvmmu", os.path.basename(so))
    staged = dest + ".new-%d" % os.getpid()
    os.replace(so, staged)
    os.replace(staged, dest)
    shutil.rmtree(tmp, ignore_errors=True)
    print("built", os.path.relpath(dest, ROOT))


if __name__ == "__main__":
    sys.exit(build_inplace())

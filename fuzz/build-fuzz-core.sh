#!/usr/bin/env bash
# Build an instrumented copy of pykvmmu for coverage-guided fuzzing with atheris:
# the C core compiled by clang with -fsanitize=fuzzer-no-link,address,undefined
# (PYKVMMU_FUZZ=1, see csrc/build_core.py).  The in-place pykvmmu/_core*.so is NOT
# touched (other processes may be using it): the copy goes to OUT (default build/fuzz).
#
#   fuzz/build-fuzz-core.sh [OUT]
#   then run what it prints (LD_PRELOAD of atheris' ASan runtime + PYTHONPATH=OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/fuzz}
PY=${PY:-python}
CC=${CC:-clang}
if ! command -v "$CC" >/dev/null; then
    echo "build-fuzz-core: $CC not found. Install clang (Debian/Ubuntu: apt-get install clang)," >&2
    echo "or set CC to a clang binary." >&2
    exit 2
fi
rm -rf "$OUT/pykvmmu" "$OUT/tmp"
mkdir -p "$OUT"
cp -r pykvmmu "$OUT/"
rm -f "$OUT"/pykvmmu/_core*.so "$OUT"/pykvmmu/_core*.so.new-*
find "$OUT/pykvmmu" -name __pycache__ -prune -exec rm -rf {} +
ln -sfn "$(pwd)/fuzz" "$OUT/fuzz"          # the seed corpus, found relative to pykvmmu/
# -DPYKVMMU_NO_CLONES: clang 14 emits the target_clones variants and resolver of the hot batch
# loops but not the ifunc symbol itself (undefined symbol at import); the fuzz build does not
# need the AVX2 clones.
CC="$CC" LDSHARED="$CC -shared" PYKVMMU_FUZZ=1 OUT="$OUT" \
PYKVMMU_CFLAGS="-DPYKVMMU_NO_CLONES ${PYKVMMU_CFLAGS:-}" "$PY" - <<'PYEOF'
import glob, os, shutil, sys
sys.path.insert(0, "csrc")
import build_core
out = os.path.abspath(os.environ["OUT"])
fb = build_core.make_ffibuilder(absolute=True)
so = fb.compile(tmpdir=os.path.join(out, "tmp"), verbose=False)
dest = os.path.join(out, "pykvmmu", os.path.basename(so))
shutil.move(so, dest)
shutil.rmtree(os.path.join(out, "tmp"), ignore_errors=True)
print("built", dest)
PYEOF
OUT=$(cd "$OUT" && pwd)
cat <<EOM

Instrumented build ready in $OUT.  Run from $OUT: started from the repository root,
python would import ./pykvmmu, whose core is not instrumented.  Fuzz a target with atheris (pip install 'pykvmmu[fuzz]'):

  ATHERIS_LIB=\$($PY -c 'import atheris; print(atheris.path())')
  LD_PRELOAD=\$ATHERIS_LIB/asan_with_fuzzer.so ASAN_OPTIONS=detect_leaks=0 \\
    sh -c "cd $OUT && $PY -m pykvmmu fuzz spte --engine atheris --time 60"

Without atheris the same build runs the built-in engine under ASan+UBSan:

  LD_PRELOAD=\$($CC -print-file-name=libclang_rt.asan-x86_64.so) ASAN_OPTIONS=detect_leaks=0 \\
    sh -c "cd $OUT && $PY -m pykvmmu fuzz all --time 10"
EOM

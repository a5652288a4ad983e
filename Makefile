# Developer targets.  CI (.ci/run) uses the same ones.
PY ?= python
ASAN_LIB := $(shell gcc -print-file-name=libasan.so)
UBSAN_LIB := $(shell gcc -print-file-name=libubsan.so)

.PHONY: dev test cwarn lint sanitize bench clean

dev:            ## rebuild pykvmmu/_core*.so in place
	$(PY) csrc/build_core.py

test: dev
	$(PY) -m pytest -q

cwarn:          ## the C sources alone must be -Wall -Wextra clean (C11), with gcc and (if present) clang
	for f in csrc/*.c; do gcc -std=c11 -Wall -Wextra -Wpedantic -Werror -Icsrc -fsyntax-only $$f || exit 1; done
	gcc -std=c11 -Wall -Wextra -Wpedantic -Werror -Icsrc -fsyntax-only -x c csrc/errors.h   # the cffi module's table
	if command -v clang >/dev/null; then for f in csrc/*.c; do \
	  clang -std=c11 -Wall -Wextra -Werror -DPYKVMMU_NO_CLONES -Icsrc -fsyntax-only $$f || exit 1; done; fi

lint:           ## pinned ruff and mypy (pip install '.[lint]'), configured in pyproject.toml
	ruff check pykvmmu tests bench fuzz csrc setup.py
	mypy

sanitize:       ## the whole test suite against an ASan+UBSan build of the core
	PYKVMMU_SANITIZE=1 $(PY) csrc/build_core.py
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  LD_PRELOAD="$(ASAN_LIB) $(UBSAN_LIB)" PYKVMMU_SANITIZED=1 $(PY) -m pytest -q -p no:cacheprovider; \
	  rc=$$?; $(PY) csrc/build_core.py; exit $$rc

bench:          ## the benchmark suite (see bench/README.md)
	$(PY) -m pytest bench/ --benchmark-only

clean:
	rm -rf build pykvmmu/_core*.so pykvmmu/_core.c

"""Type stub for the compiled C core (cffi, API mode): ``ffi`` and ``lib`` of csrc/pykvmmu.h."""
from typing import Any

ffi: Any
lib: Any

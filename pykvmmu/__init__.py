"""pykvmmu: a bit-exact user-space model of the Linux KVM x86 MMU's bit-level machinery.

Engines (one module per concept): ``config`` (MmuConfig) and ``profile`` (kernel eras),
``spte``, ``mmio`` and ``memslots``, ``role`` with ``sphash``, ``prevroots``, ``wflood`` and
``trace``, ``rmp``, ``private``, ``attrs``, ``gmem`` and ``vm``; pure-Python reference
models in ``pykvmmu.ref``; the fuzzing harness in ``pykvmmu.fuzz``.  Every error raised is a
``PykvmmuError``.
"""
from .config import MmuConfig
from .errors import ArrayError, ConfigError, InputError, ProfileError, PykvmmuError
from .profile import DEFAULT_PROFILE, PROFILES, LayoutProfile, get_profile
from ._version import __version__

__all__ = ["MmuConfig", "LayoutProfile", "PROFILES", "DEFAULT_PROFILE", "get_profile",
           "PykvmmuError", "InputError", "ArrayError", "ConfigError", "ProfileError",
           "__version__"]

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=300, deadline=None)
settings.register_profile("ci", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("sanitize", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
_default = "sanitize" if os.environ.get("PYKVMMU_SANITIZED") == "1" else (
    "ci" if os.environ.get("CI") else "dev")
settings.load_profile(os.environ.get("PYKVMMU_HYPOTHESIS", _default))

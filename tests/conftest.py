"""Test-session settings. XLA's CPU backend compiles with its cheap LLVM pipeline: the suite is dominated by
compiling many small programs, which this speeds up by about a third. Still IEEE fp32 (no fast math), but two
different programs computing the same values may round differently (compare them to ~1e-6, not bit for bit)."""

import os

FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
_flags = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join([_flags, *(f for f in FAST_COMPILE if f.split("=")[0] not in _flags)]).strip()

"""The one door to the C library: every module reaches the shim as
``_c.lib`` / ``_c.ffi`` through this module, looked up at call time.

That makes it the seam for policy tests: retry, fallback and error
mapping can be exercised without root or a kernel by replacing
``loopcore._c.lib`` (or one function on a stand-in) for the length of a
test, while the real-kernel tests cover the C itself.
"""
from __future__ import annotations

from ._native import ffi, lib

__all__ = ["ffi", "lib"]

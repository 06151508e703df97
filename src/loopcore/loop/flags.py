""":class:`Flags`, the public enum of a loop device's ``lo_flags``.

Its own module because :mod:`enum` (with functools and collections) is a
tenth of a ``loopcore list`` process: a :class:`~loopcore.LoopInfo` keeps
the bits as an int and makes its ``flags`` a :class:`Flags` when asked
(the CLI and the library's own code test the bits as ints), and
``loopcore.loop.info.Flags`` imports this module on first use.
"""
from __future__ import annotations

import enum

from .. import _c

__all__ = ["Flags"]

class Flags(enum.IntFlag):
    """``lo_flags`` of a loop device (``LO_FLAGS_*`` in linux/loop.h).  The
    values come from the shim, whose scan flags are these very bits (the C
    asserts it against the kernel's header at compile time)."""

    READ_ONLY = _c.lib.LC_SCAN_RO
    AUTOCLEAR = _c.lib.LC_SCAN_AUTOCLEAR
    PARTSCAN = _c.lib.LC_SCAN_PARTSCAN
    DIRECT_IO = _c.lib.LC_SCAN_DIO

"""The mirror legs behind a log device, and flushing their caches.

A mirror's clean bits may only reach stable storage once the data written
to the legs has: otherwise a power loss can leave a region marked clean
while the legs disagree in what their volatile caches lost.  The kernel's
own ``disk`` log flushes the legs (a PREFLUSH to each) before it writes
clean bits; ``dm-log-userspace`` does not do that for a userspace log, so
the server does it itself: it finds the mirror whose holders include the
log device (``/sys/block/dm-N/slaves``: every device a dm table holds, the
legs and the log device) and ``fsync``s each other slave, which sends a
cache flush down to the leg.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

from .. import _sysfs
from .._log import get_logger

__all__ = ["mirror_legs", "LegFlusher"]

_log = get_logger("dmlog")


def mirror_legs(log_devnum: Optional[int]) -> Tuple[List[Tuple[str, int]], bool]:
    """The legs of the mirror(s) that use ``log_devnum`` as their log
    device: the other slaves of each dm device holding it, and True.  With
    no log device (or none found): the slaves of every dm device, which
    flushes more than needed but never less, and False."""
    found: List[Tuple[str, int]] = []
    every: List[Tuple[str, int]] = []
    for held in _sysfs.dm_slaves().values():
        every += held
        if log_devnum is not None and any(d == log_devnum for _, d in held):
            found += [(n, d) for n, d in held if d != log_devnum]
    if found:
        return sorted(set(found)), True
    return sorted({(n, d) for n, d in every if d != log_devnum}), False


def _open(name: str, devnum: int) -> int:
    for path in (f"/dev/{name}", f"/dev/block/{os.major(devnum)}:{os.minor(devnum)}"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        if os.fstat(fd).st_rdev == devnum:
            return fd
        os.close(fd)
    raise FileNotFoundError(f"no device node for {name} ({os.major(devnum)}:{os.minor(devnum)})")


class LegFlusher:
    """Flushes the write caches of the legs of the mirror whose log device
    is ``log_devnum``.  The legs are looked up at the first flush and kept
    open until :meth:`reset` (called at every RESUME: a reloaded table may
    have other legs), so that a flush is one ``fsync`` per leg.  A flush
    that fails raises OSError: the caller must then not trust the legs."""

    def __init__(self, log_devnum: Optional[int]) -> None:
        self.log_devnum = log_devnum
        self._fds: Optional[List[Tuple[str, int]]] = None

    def __call__(self) -> None:
        fds = self._fds
        if fds is None:
            legs, exact = mirror_legs(self.log_devnum)
            if not legs:
                _log.warning("no mirror legs found for log device %s: nothing to flush",
                             _devname(self.log_devnum))
            fds = []
            try:
                for name, devnum in legs:
                    fds.append((name, _open(name, devnum)))
            except OSError:
                for _, fd in fds:
                    os.close(fd)
                raise
            if exact:
                self._fds = fds  # the mirror's own legs: keep them
        try:
            for _, fd in fds:
                os.fsync(fd)
        finally:
            if fds is not self._fds:
                for _, fd in fds:
                    os.close(fd)

    def reset(self) -> None:
        """Close the legs; the next flush looks them up again."""
        fds, self._fds = self._fds, None
        for _, fd in fds or ():
            os.close(fd)


def _devname(devnum: Optional[int]) -> str:
    return "(none)" if devnum is None else f"{os.major(devnum)}:{os.minor(devnum)}"

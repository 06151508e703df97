"""Is it still the same disk?  The kernel gives a loop device a new disk
sequence number (diskseq, Linux 5.15+) at every bind and every detach, so
a device reopened by path, or changed after a while, is checked to be the
binding that was meant: same dev_t, same diskseq."""
from __future__ import annotations

import errno
import os
import stat
from typing import Optional

from .. import _c
from ..errors import DiskseqMismatchError, LoopError

__all__ = ["read_diskseq", "check_diskseq", "reopen", "check_not_rebound"]


def read_diskseq(fd: int) -> Optional[int]:
    """The disk sequence number of an open block device; None before Linux
    5.15 (no BLKGETDISKSEQ)."""
    value = _c.ffi.new("uint64_t *")
    if _c.lib.lc_get_diskseq(fd, value) != 0 or not value[0]:
        return None
    return int(value[0])


def check_diskseq(fd: int, path: str, expected: Optional[int]) -> None:
    """Raise DiskseqMismatchError (ESTALE) unless the disk open as ``fd``
    still has diskseq ``expected``: a different one means the binding that
    was meant is gone.  None expects nothing (a kernel without diskseq)."""
    if expected is None:
        return
    actual = read_diskseq(fd)
    if actual is None:
        raise LoopError(errno.EOPNOTSUPP, "this kernel has no diskseq (Linux 5.15+): "
                        "cannot tell whether it is the same disk", path)
    if actual != expected:
        raise DiskseqMismatchError(errno.ESTALE, f"diskseq is {actual}, not {expected}: the "
                                   "device was detached (and maybe reused) since", path)


def reopen(path: str, devnum: int, diskseq: Optional[int], flags: int) -> int:
    """A new fd on the node ``path``, checked to be the disk ``devnum``
    with ``diskseq`` (DiskseqMismatchError otherwise)."""
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISBLK(st.st_mode) or st.st_rdev != devnum:
            raise DiskseqMismatchError(errno.ESTALE, "the node now names another device", path)
        check_diskseq(fd, path, diskseq)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_not_rebound(path: str, expected: Optional[int], current: int) -> None:
    """Refuse to change a device whose diskseq is now ``current`` (0: the
    kernel did not say) when the caller knew it as ``expected``: an unbound
    device opened, then bound by someone else."""
    if expected is not None and current not in (0, expected):
        raise DiskseqMismatchError(errno.ESTALE, f"diskseq is {current}, not {expected}: "
                                   "bound anew since it was opened", path)

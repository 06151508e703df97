"""attach(reuse=True), ``losetup --nooverlap``: the device already bound
to the same bytes of the same file, found and opened under the control
lock; LoopOverlapError for one over an overlapping but different range
(util-linux's loopcxt_find_overlap rules)."""
from __future__ import annotations

import errno
import os
from typing import List, Optional

from .. import _c, _retry
from .._log import get_logger
from ..errors import LoopBusyError, LoopOverlapError, PermissionError, error_from_errno
from . import _calls, discovery
from .backing import BackingFile
from .device import LoopDevice
from .diskseq import check_diskseq, read_diskseq
from .info import LoopInfo
from .locks import LOCK_EXCLUSIVE
from .request import AttachRequest

__all__: List[str] = []  # attach()'s own: nothing public

log = get_logger("loop")


def find_reusable(bf: BackingFile, request: AttachRequest) -> Optional[LoopDevice]:
    """Under the control lock: the device bound to the same bytes of the
    same file, open (and locked, if asked), or None when there is none and
    a new device may be bound; LoopOverlapError for one over an
    overlapping range set up differently."""
    for _ in range(_calls.REUSE_ATTEMPTS):
        match = _find_overlap(bf, request)
        if match is None:
            return None
        if match.read_only and not request.read_only:
            raise PermissionError(errno.EROFS, f"{match.path} covers the same bytes read-only; "
                                  "pass read_only=True to share it", bf.name)
        device = _open_match(match, request.read_only)
        if device is None:
            continue  # detached (autoclear) or rebound while we looked: look again
        try:
            if request.lock_mode is not None:
                # held until unlock(), detach() or close()
                device.lock(exclusive=request.lock_mode == LOCK_EXCLUSIVE,
                            timeout=_retry.seconds_left(request.deadline_ns))
        except BaseException:
            device.close()
            raise
        log.debug("%s: reusing %s (offset %d, size limit %d)", bf.name, device.path,
                  request.offset, request.size_limit)
        return device
    raise LoopBusyError(errno.EBUSY, "the device to reuse kept changing while it was "
                        "opened", bf.name)


def _find_overlap(bf: BackingFile, request: AttachRequest) -> Optional[LoopInfo]:
    """The device bound to exactly these bytes of the backing file (same
    device and inode, offset and size limit), or None if no device touches
    them; LoopOverlapError for a device over an overlapping range that is
    not the same (a size limit of 0 reaches to the end of the file)."""
    offset, size_limit, block_size = request.offset, request.size_limit, request.block_size
    same_file = [info for info in discovery.scan()
                 if info.has_status and (info.backing_devnum, info.backing_inode)
                 == (bf.dev, bf.ino)]
    for info in same_file:
        if (info.offset, info.size_limit) != (offset, size_limit):
            continue
        if request.number >= 0 and info.number != request.number:
            raise LoopOverlapError(errno.EBUSY, f"the same bytes are bound as {info.path}, "
                                   f"not /dev/loop{request.number}", bf.name, None, info.path)
        if block_size and info.block_size != block_size:
            raise LoopOverlapError(errno.EBUSY, f"the same bytes are bound with "
                                   f"{info.block_size}-byte sectors, not {block_size}",
                                   bf.name, None, info.path)
        return info
    for info in same_file:
        if ranges_overlap(info.offset, info.size_limit, offset, size_limit):
            raise LoopOverlapError(
                errno.EBUSY, f"bytes {_range(info.offset, info.size_limit)} are bound as "
                f"{info.path}, which overlaps the requested {_range(offset, size_limit)}",
                bf.name, None, info.path)
    return None


def ranges_overlap(offset_a: int, limit_a: int, offset_b: int, limit_b: int) -> bool:
    """Whether two loop ranges (offset, size limit; 0: to the end) overlap."""
    end_a = offset_a + limit_a if limit_a else None
    end_b = offset_b + limit_b if limit_b else None
    return (end_a is None or offset_b < end_a) and (end_b is None or offset_a < end_b)


def _range(offset: int, size_limit: int) -> str:
    return f"{offset}-{offset + size_limit - 1}" if size_limit else f"{offset}-end"


def _open_match(match: LoopInfo, read_only: bool) -> Optional[LoopDevice]:
    """Open the device to reuse and check, on the fd (which pins the
    binding), that it is still bound to those bytes; None if not."""
    try:
        fd = os.open(match.path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENXIO, errno.ENODEV):
            return None
        raise error_from_errno(e.errno or errno.EIO, match.path) from None
    try:
        status = _c.ffi.new("struct lc_loop_info64 *")
        rc = _c.lib.lc_get_status64(fd, status)
        if rc == -errno.ENXIO or (rc == 0 and (
                (int(status.lo_device), int(status.lo_inode), int(status.lo_offset),
                 int(status.lo_sizelimit)) != (match.backing_devnum, match.backing_inode,
                                               match.offset, match.size_limit))):
            os.close(fd)
            return None
        _calls.check(rc, match.path)
        diskseq = read_diskseq(fd)
        check_diskseq(fd, match.path, diskseq)
    except BaseException:
        os.close(fd)
        raise
    device = LoopDevice(match.number, fd, match.devnum, diskseq)
    device.reused = True
    return device

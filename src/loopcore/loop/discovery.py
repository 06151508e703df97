"""Discovery: which loop devices exist, what they are bound to, their partitions.

One C call (``lc_scan_loops``) walks ``/sys/block/loop*`` and reads every
device's attributes -- the backing path from sysfs, the values the other
sysfs attributes print through one open of ``/dev/loopN`` (see
``csrc/lc_scan.h``), the sysfs files themselves where there is no node --
plus the backing file's device and inode (LOOP_GET_STATUS64, as losetup)
into one buffer; this module parses it.  Nothing here opens a per-device
file from Python.
"""
from __future__ import annotations

import errno
import os
import time

from .. import _c, _sysfs
from ..errors import TimeoutError, ValueError, error_from_errno, translate
from .info import FLAG_MASK, SCAN_DETAIL_BITS, LoopInfo, device_path, partition_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterator, List, Optional, Tuple, Union

    # struct lc_scan_rec's integers (_RECORD_INTS), then the backing name.
    _RawRecord = Tuple[int, int, int, int, int, int, int, int, int, int, int, int, Optional[str]]

__all__ = [
    "list_devices",
    "find",
    "partitions",
    "wait_for_partitions",
    "scan",
    "DELETED_SUFFIX",
]

#: What the kernel appends to ``loop/backing_file`` once the file is unlinked.
DELETED_SUFFIX = " (deleted)"

PARTITION_POLL_S = 0.01
INITIAL_BUFFER = 64 * 1024

# struct lc_scan_rec (csrc/lc_scan.h), packed as the compiler lays it out.
# The scan takes a record's integers in the cdef's order, up to name_off;
# _RECORD_INTS is the order scan() unpacks them in, checked here once.
_REC_VIEW = _c.struct_view("struct lc_scan_rec")
_REC = _REC_VIEW.struct
_RECORD_INTS = ("offset", "sizelimit", "size_sectors", "diskseq", "backing_dev",
                "backing_ino", "number", "major", "minor", "block_size", "flags", "status_err")
_INTS = len(_RECORD_INTS)
_NAME_OFF = _REC_VIEW.names.index("name_off")
_NAME_LEN = _REC_VIEW.names.index("name_len")
_FLAGS = _REC_VIEW.names.index("flags")
assert _REC_VIEW.names[:_INTS] == _RECORD_INTS and _NAME_OFF == _INTS, _REC_VIEW.names

_buffer_size = INITIAL_BUFFER


def scan(*, include_unbound: bool = False, backing_status: bool = True,
         sysfs: bool = False) -> List[LoopInfo]:
    """Every loop device (bound ones only unless ``include_unbound``), by number.

    By default the backing path comes from sysfs and the rest from one
    open of ``/dev/loopN`` (GET_STATUS64 and block ioctls: the fields the
    sysfs attributes print, much cheaper); ``sysfs=True`` reads the sysfs
    attribute files instead.  ``backing_status=False`` never opens
    ``/dev/loopN`` (sysfs only; backing device and inode are then 0).
    """
    flags = 0
    if include_unbound:
        flags |= _c.lib.LC_SCAN_INCLUDE_UNBOUND
    if not backing_status:
        flags |= _c.lib.LC_SCAN_NO_STATUS
    if sysfs:
        flags |= _c.lib.LC_SCAN_SYSFS
    detail_bits = SCAN_DETAIL_BITS
    # LoopInfo's fields in order: a NamedTuple is built as fast as a tuple.
    # The flags stay an int (LoopInfo.flags makes the Flags when read).
    make = LoopInfo._make
    return [make((number, device_path(number), name, bdev, bino, offset, sizelimit,
                  rflags & FLAG_MASK, block_size,
                  sectors * 512, diskseq if rflags & _HAS_DISKSEQ else None,
                  major, minor, rflags & detail_bits, status_err))
            for (offset, sizelimit, sectors, diskseq, bdev, bino, number, major, minor,
                 block_size, rflags, status_err, name) in _scan_raw(flags)]


_BOUND = _c.lib.LC_SCAN_BOUND
_HAS_DISKSEQ = _c.lib.LC_SCAN_HAS_DISKSEQ


def _scan_raw(flags: int) -> Iterator[_RawRecord]:
    """(offset, sizelimit, sectors, diskseq, bdev, bino, number, major, minor,
    block_size, flags, status_err, backing name or None) per device."""
    global _buffer_size
    needed = _c.ffi.new("uint64_t *")
    while True:
        size = _buffer_size
        buf = _c.ffi.new("uint64_t[]", size // 8)
        count = _c.lib.lc_scan_loops(buf, size, flags, needed)
        if count != -errno.ERANGE:
            break
        # Devices come and go between calls: grow with slack.
        _buffer_size = max(size * 2, (int(needed[0]) * 3 // 2 + 4096) & ~7)
    if count < 0:
        raise error_from_errno(-count, _sysfs.SYS_BLOCK)
    raw = _c.ffi.buffer(buf, size)[:]
    fsdecode = os.fsdecode
    ints, name_at, length_at, flags_at, bound = _INTS, _NAME_OFF, _NAME_LEN, _FLAGS, _BOUND
    for rec in _REC.iter_unpack(raw[: count * _REC.size]):
        name_off = rec[name_at]
        yield rec[:ints] + (fsdecode(raw[name_off:name_off + rec[length_at]])
                            if rec[flags_at] & bound else None,)


@translate
def list_devices(*, include_unbound: bool = False) -> List[LoopInfo]:
    """Every bound loop device (all of them with ``include_unbound``), by number.

    Values are what the sysfs attributes show (read more cheaply through
    ioctls on the device where it has a node): ``flags`` has READ_ONLY
    from ``ro`` (the disk's, so BLKROSET counts too), AUTOCLEAR/PARTSCAN/
    DIRECT_IO from ``loop/*``; ``size_bytes`` is ``size`` * 512;
    ``backing_file`` is the full path as sysfs shows it (ending in
    " (deleted)" once the file is unlinked, None when unbound) -- except
    for a path longer than a page, which sysfs cannot show: then it is the
    name LOOP_GET_STATUS64 holds (``lo_file_name``: 63 bytes at most, the
    last one '*' when all are used, as util-linux marks it; "" without a
    ``/dev`` node to ask);
    ``backing_devnum``/``backing_inode`` come from LOOP_GET_STATUS64 and
    are 0 when ``/dev/loopN`` is missing or could not be opened.  A device
    in sysfs without a ``/dev`` node is listed all the same.
    """
    return scan(include_unbound=include_unbound)


def strip_deleted(name: str) -> str:
    """A sysfs backing path without the kernel's " (deleted)" suffix."""
    return name[: -len(DELETED_SUFFIX)] if name.endswith(DELETED_SUFFIX) else name


def _find_records(backing: Union[str, bytes, "os.PathLike[str]"],
                  offset: Optional[int]) -> List[LoopInfo]:
    name = os.fsdecode(backing)
    if not name:
        raise ValueError("backing path is empty")
    if offset is not None:
        from .._validate import check_int

        check_int("offset", offset)
    try:
        st: Optional[os.stat_result] = os.stat(name)
    except OSError:
        st = None
    candidates = {name}
    for spelling in (os.path.abspath, os.path.realpath):
        try:
            candidates.add(spelling(name))
        except OSError:
            # realpath("/proc/self/fd/N") of a file whose path is longer than
            # a page: ENAMETOOLONG.  stat() worked; (dev, ino) will decide.
            pass
    found = []
    for rec in scan():
        if st is not None and rec.has_status:
            # Device and inode decide; never the name (util-linux does the same).
            if (rec.backing_devnum, rec.backing_inode) != (st.st_dev, st.st_ino):
                continue
        elif rec.backing_file is None or not (
                rec.backing_file in candidates
                or strip_deleted(rec.backing_file) in candidates):
            continue
        if offset is not None and rec.offset != offset:
            continue
        found.append(rec)
    return found


@translate
def find(backing: Union[str, bytes, "os.PathLike[str]"], *,
         offset: Optional[int] = None) -> List[LoopInfo]:
    """The devices bound to ``backing``, by number (``losetup -j``).

    Matched by the file's (st_dev, st_ino); when the file cannot be
    stat()ed (it was deleted, say) by its path, also against sysfs names
    that end in " (deleted)".  ``offset`` keeps only devices at that
    offset, like ``losetup -j FILE -o OFFSET``.
    """
    return _find_records(backing, offset)


def _partition_numbers(number: int) -> List[int]:
    parts = _sysfs.loop_partition_numbers(number)
    if parts is None:
        raise error_from_errno(errno.ENODEV, device_path(number), "no such loop device")
    return parts


@translate
def partitions(number: int) -> List[str]:
    """Paths of the partitions the kernel has for ``/dev/loopN`` (from sysfs).

    ``["/dev/loop3p1", "/dev/loop3p2"]``; empty without partscan or a
    partition table.  The ``/dev`` nodes may lag a moment behind (udev or
    devtmpfs creates them); :func:`wait_for_partitions` waits for them.
    """
    from .._validate import check_number

    check_number(number)
    return [partition_path(number, p) for p in _partition_numbers(number)]


@translate
def wait_for_partitions(number: int, count: int, timeout: float = 5.0) -> List[str]:
    """Wait until ``/dev/loopN`` has at least ``count`` partitions with nodes.

    Returns their paths (as :func:`partitions`); TimeoutError (ETIMEDOUT,
    naming the device) if they did not all appear within ``timeout`` s.
    """
    # the checks and the deadline imported here: a listing needs neither
    from .. import _retry
    from .._validate import check_int, check_number, check_timeout

    check_number(number)
    check_int("count", count)
    check_timeout(timeout)
    deadline_ns = _retry.deadline_after(timeout)
    while True:
        paths = partitions(number)
        ready = [p for p in paths if os.path.exists(p)]
        if len(paths) >= count and len(ready) == len(paths):
            return paths
        if _retry.seconds_left(deadline_ns) == 0:  # None: no deadline
            raise TimeoutError(errno.ETIMEDOUT,
                               f"{len(ready)} of {count} partitions appeared in {timeout} s",
                               device_path(number))
        time.sleep(PARTITION_POLL_S)

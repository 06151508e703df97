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

import dataclasses
import errno
import os
import struct
import time
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

from ._native import ffi, lib
from .errors import error_from_errno
from .loop import Flags, LoopInfo, check_number, device_path

__all__ = [
    "list_devices",
    "find",
    "partitions",
    "wait_for_partitions",
    "DELETED_SUFFIX",
]

#: What the kernel appends to ``loop/backing_file`` once the file is unlinked.
DELETED_SUFFIX = " (deleted)"

SYS_BLOCK = "/sys/block"
PARTITION_POLL_S = 0.01
INITIAL_BUFFER = 64 * 1024

# struct lc_scan_rec (csrc/lc_scan.h): six u64, five u32, one i32, two u32.
_REC = struct.Struct("=6Q5Ii2I")
assert _REC.size == ffi.sizeof("struct lc_scan_rec")

_FLAG_BITS = int(Flags.READ_ONLY | Flags.AUTOCLEAR | Flags.PARTSCAN | Flags.DIRECT_IO)
_flags_cache: Dict[int, Flags] = {}


class ScanRecord(NamedTuple):
    """One device as ``lc_scan_loops`` saw it (internal; the CLI uses it)."""

    number: int
    backing_file: Optional[str]   # as sysfs shows it, " (deleted)" included (or see
                                  # backing_partial)
    offset: int
    size_limit: int
    size_sectors: int
    diskseq: Optional[int]
    backing_devnum: int           # 0 unless has_status
    backing_inode: int
    major: int
    minor: int
    block_size: int
    flags: int                    # LC_SCAN_* bits
    status_errno: int

    @property
    def bound(self) -> bool:
        return bool(self.flags & lib.LC_SCAN_BOUND)

    @property
    def has_node(self) -> bool:
        return bool(self.flags & lib.LC_SCAN_HAS_NODE)

    @property
    def has_status(self) -> bool:
        return bool(self.flags & lib.LC_SCAN_HAS_STATUS)

    @property
    def backing_partial(self) -> bool:
        """Bound, but sysfs could not show the backing path (longer than a
        page): ``backing_file`` is the kernel's 63-byte ``lo_file_name``,
        ending in '*' where it may have been cut, or "" without a node."""
        return bool(self.flags & lib.LC_SCAN_NAME_PARTIAL)


_buffer_size = INITIAL_BUFFER


def scan(*, include_unbound: bool = False, backing_status: bool = True,
         sysfs: bool = False) -> List[ScanRecord]:
    """Every loop device (bound ones only unless ``include_unbound``), by number.

    By default the backing path comes from sysfs and the rest from one
    open of ``/dev/loopN`` (GET_STATUS64 and block ioctls: the fields the
    sysfs attributes print, much cheaper); ``sysfs=True`` reads the sysfs
    attribute files instead.  ``backing_status=False`` never opens
    ``/dev/loopN`` (sysfs only; backing device and inode are then 0).
    """
    flags = 0
    if include_unbound:
        flags |= lib.LC_SCAN_INCLUDE_UNBOUND
    if not backing_status:
        flags |= lib.LC_SCAN_NO_STATUS
    if sysfs:
        flags |= lib.LC_SCAN_SYSFS
    return [ScanRecord(number, name, offset, sizelimit, sectors,
                       diskseq if rflags & _HAS_DISKSEQ else None, bdev, bino, major, minor,
                       block_size, rflags, status_err)
            for (offset, sizelimit, sectors, diskseq, bdev, bino, number, major, minor,
                 block_size, rflags, status_err, name) in _scan_raw(flags)]


_BOUND = lib.LC_SCAN_BOUND
_HAS_DISKSEQ = lib.LC_SCAN_HAS_DISKSEQ


# struct lc_scan_rec's twelve integers (as _scan_raw lists them), then the backing name.
_RawRecord = Tuple[int, int, int, int, int, int, int, int, int, int, int, int, Optional[str]]


def _scan_raw(flags: int) -> Iterator[_RawRecord]:
    """(offset, sizelimit, sectors, diskseq, bdev, bino, number, major, minor,
    block_size, flags, status_err, backing name or None) per device."""
    global _buffer_size
    needed = ffi.new("uint64_t *")
    while True:
        size = _buffer_size
        buf = ffi.new("uint64_t[]", size // 8)
        count = lib.lc_scan_loops(buf, size, flags, needed)
        if count != -errno.ERANGE:
            break
        # Devices come and go between calls: grow with slack.
        _buffer_size = max(size * 2, (int(needed[0]) * 3 // 2 + 4096) & ~7)
    if count < 0:
        raise error_from_errno(-count, SYS_BLOCK)
    raw = ffi.buffer(buf, size)[:]
    fsdecode = os.fsdecode
    for rec in _REC.iter_unpack(raw[: count * _REC.size]):
        name_off, name_len = rec[12], rec[13]
        yield rec[:12] + (fsdecode(raw[name_off:name_off + name_len])
                          if rec[10] & _BOUND else None,)


def _flags_of(scan_flags: int) -> Flags:
    bits = scan_flags & _FLAG_BITS
    flags = _flags_cache.get(bits)
    if flags is None:
        flags = _flags_cache[bits] = Flags(bits)
    return flags


def _info(rec: ScanRecord) -> LoopInfo:
    return LoopInfo(
        number=rec.number,
        path=device_path(rec.number),
        backing_file=rec.backing_file,
        backing_devnum=rec.backing_devnum,
        backing_inode=rec.backing_inode,
        offset=rec.offset,
        size_limit=rec.size_limit,
        flags=_flags_of(rec.flags),
        block_size=rec.block_size,
        size_bytes=rec.size_sectors * 512,
        diskseq=rec.diskseq,
    )


_INFO_FIELDS = tuple(f.name for f in dataclasses.fields(LoopInfo))
# LoopInfo is a plain frozen dataclass: filling its __dict__ directly is what
# its __init__ does, minus eleven object.__setattr__ calls.
_FAST_INFO = (_INFO_FIELDS == ("number", "path", "backing_file", "backing_devnum",
                               "backing_inode", "offset", "size_limit", "flags",
                               "block_size", "size_bytes", "diskseq")
              and not hasattr(LoopInfo, "__post_init__") and not hasattr(LoopInfo, "__slots__"))


def _infos(include_unbound: bool) -> List[LoopInfo]:
    flags = lib.LC_SCAN_INCLUDE_UNBOUND if include_unbound else 0
    infos: List[LoopInfo] = []
    append = infos.append
    new = object.__new__
    cache = _flags_cache
    for (offset, sizelimit, sectors, diskseq, bdev, bino, number, _major, _minor,
         block_size, rflags, _err, name) in _scan_raw(flags):
        bits = rflags & _FLAG_BITS
        lo_flags = cache.get(bits) or _flags_of(bits)
        values = (number, f"/dev/loop{number}", name, bdev, bino, offset, sizelimit, lo_flags,
                  block_size, sectors * 512, diskseq if rflags & _HAS_DISKSEQ else None)
        if _FAST_INFO:
            info = new(LoopInfo)
            info.__dict__.update(zip(_INFO_FIELDS, values))
        else:
            info = LoopInfo(*values)
        append(info)
    return infos


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
    return _infos(include_unbound)


def strip_deleted(name: str) -> str:
    """A sysfs backing path without the kernel's " (deleted)" suffix."""
    return name[: -len(DELETED_SUFFIX)] if name.endswith(DELETED_SUFFIX) else name


def _find_records(backing: Union[str, bytes, "os.PathLike[str]"],
                  offset: Optional[int]) -> List[ScanRecord]:
    name = os.fsdecode(backing)
    if not name:
        raise ValueError("backing path is empty")
    if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool)
                               or offset < 0):
        raise ValueError(f"offset must be a non-negative int, not {offset!r}")
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


def find(backing: Union[str, bytes, "os.PathLike[str]"], *,
         offset: Optional[int] = None) -> List[LoopInfo]:
    """The devices bound to ``backing``, by number (``losetup -j``).

    Matched by the file's (st_dev, st_ino); when the file cannot be
    stat()ed (it was deleted, say) by its path, also against sysfs names
    that end in " (deleted)".  ``offset`` keeps only devices at that
    offset, like ``losetup -j FILE -o OFFSET``.
    """
    return [_info(rec) for rec in _find_records(backing, offset)]


def _partition_numbers(number: int) -> List[int]:
    prefix = f"loop{number}p"
    try:
        names = os.listdir(f"{SYS_BLOCK}/loop{number}")
    except FileNotFoundError as e:
        raise error_from_errno(errno.ENODEV, device_path(number), "no such loop device") from e
    parts = []
    for entry in names:
        if entry.startswith(prefix) and entry[len(prefix):].isdigit():
            parts.append(int(entry[len(prefix):]))
    parts.sort()
    return parts


def partitions(number: int) -> List[str]:
    """Paths of the partitions the kernel has for ``/dev/loopN`` (from sysfs).

    ``["/dev/loop3p1", "/dev/loop3p2"]``; empty without partscan or a
    partition table.  The ``/dev`` nodes may lag a moment behind (udev or
    devtmpfs creates them); :func:`wait_for_partitions` waits for them.
    """
    check_number(number)
    return [f"/dev/loop{number}p{p}" for p in _partition_numbers(number)]


def wait_for_partitions(number: int, count: int, timeout: float = 5.0) -> List[str]:
    """Wait until ``/dev/loopN`` has at least ``count`` partitions with nodes.

    Returns their paths (as :func:`partitions`); TimeoutError (ETIMEDOUT,
    naming the device) if they did not all appear within ``timeout`` s.
    """
    check_number(number)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"count must be a non-negative int, not {count!r}")
    if timeout < 0:
        raise ValueError(f"timeout must not be negative, not {timeout!r}")
    deadline = time.monotonic() + timeout
    while True:
        paths = partitions(number)
        ready = [p for p in paths if os.path.exists(p)]
        if len(paths) >= count and len(ready) == len(paths):
            return paths
        if time.monotonic() >= deadline:
            raise TimeoutError(errno.ETIMEDOUT,
                               f"{len(ready)} of {count} partitions appeared in {timeout} s",
                               device_path(number))
        time.sleep(PARTITION_POLL_S)

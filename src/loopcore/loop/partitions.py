"""Partitions registered by the library (what ``partx --add`` and
``kpartx`` do), for kernels without partition-table parsers and devices
attached without partscan: the kernel's side (BLKPG through ``lc_blkpg``,
the ``/dev`` nodes devtmpfs did not make) and what a
:class:`~loopcore.LoopDevice` added (:class:`AddedPartitions`, behind its
``add_partitions``, ``remove_partitions`` and ``partition_table``).  The
tables themselves are read by ``partition_table``.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from typing import TYPE_CHECKING, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from .. import _c, _retry, _sysfs
from .._devnodes import make_block_node
from .._log import get_logger
from ..errors import LoopBusyError, error_from_errno
from . import _calls
from .info import Flags, device_path, partition_path
from .partition_table import PartitionTable, read_table

if TYPE_CHECKING:
    from .device import LoopDevice

__all__ = ["AddedPartitions", "read_device_table", "register", "unregister", "current",
           "wait_for_nodes"]

log = get_logger("loop")


# --- a LoopDevice's partitions ------------------------------------------------------

def read_device_table(device: LoopDevice) -> Optional[PartitionTable]:
    """LoopDevice.partition_table(): the table in the device's logical block size."""
    _, state = device._state()
    return read_table(device._fd, int(state.size_bytes), int(state.block_size))


@contextlib.contextmanager
def _partition_change(device: LoopDevice) -> Iterator[None]:
    """Around a change of the partitions: a fresh open of the node,
    checked to be this disk, held exclusively locked unless the device
    holds a lock already.

    The lock keeps udev from probing (and holding open) partitions while
    they are added or deleted, and its BLKRRPART out.  The open itself
    matters too: after a bind the kernel marks the disk for a partition
    rescan on its next open (Linux 5.x-6.x), which drops every partition
    -- the ones BLKPG adds included -- so that open has to come first,
    from here, not later from a udev probe.  loopcore's own fds were all
    opened before the bind.
    """
    fd = device._reopen(os.O_RDONLY)
    try:
        if device.locked is None:
            _calls.flock_wait(fd, fcntl.LOCK_EX, 0)
        yield
    finally:
        os.close(fd)  # read-only: no IN_CLOSE_WRITE, so udev does not rescan


class AddedPartitions:
    """What the library registered on one LoopDevice: the partition
    numbers (deleted again by detach() and remove_partitions()) and the
    ``/dev`` nodes it made.  Made at a device's first add_partitions() or
    remove_partitions(): a device that never uses them pays nothing."""

    __slots__ = ("numbers", "nodes", "scanned")

    def __init__(self) -> None:
        self.numbers: Set[int] = set()
        self.nodes: Set[str] = set()
        # attach(partscan=True) made the device: detach deletes the
        # kernel's partitions first (see remove_added)
        self.scanned = False

    def add(self, device: LoopDevice) -> List[str]:
        """LoopDevice.add_partitions() (see there)."""
        status, state = device._state()
        device._check_same_disk(state)
        number = device.number
        have = current(number)
        if status.lo_flags & Flags.PARTSCAN and have and not self.numbers:
            log.info("%s: the kernel scanned the partition table itself (partscan): "
                     "nothing added", device.path)
            return [partition_path(number, pno) for pno in sorted(have)]
        table = read_table(device._fd, int(state.size_bytes), int(state.block_size))
        if table is None:
            log.info("%s: no partition table: nothing added", device.path)
            if self.numbers:
                self.remove(device)
            return []
        try:
            with _partition_change(device):
                paths, added = register(device._fd, number, table, self.nodes)
        finally:
            self.numbers &= set(current(number))
        self.numbers = (self.numbers | set(added)) & {p.number for p in table.partitions}
        return paths

    def remove(self, device: LoopDevice) -> List[str]:
        """LoopDevice.remove_partitions() (see there)."""
        status, state = device._state()
        device._check_same_disk(state)
        have = current(device.number)
        partscan = bool(status.lo_flags & Flags.PARTSCAN)
        if partscan and not self.numbers:
            if have:
                log.info("%s: the partitions are the kernel's own (partscan): nothing removed",
                         device.path)
            return []
        removed = self._unregister(device, set(self.numbers) if partscan else set(have))
        return [partition_path(device.number, pno) for pno in removed]

    def remove_added(self, device: LoopDevice) -> None:
        """Before a detach: delete the partitions add() registered, and on
        a device attach() scanned, the kernel's own too -- under the lock,
        a probe's brief open retried (BLKPG's EBUSY) -- since LOOP_CLR_FD's
        own deletion gives up at once on a partition a probe holds open,
        leaving it behind on the unbound device.  One still busy after
        the retries (mounted) stays: LOOP_CLR_FD then defers the detach."""
        pnos = set(self.numbers)
        if self.scanned:
            pnos |= set(current(device.number))
        if not pnos:
            return
        try:
            self._unregister(device, pnos)
        except LoopBusyError as e:
            if not self.scanned:
                raise
            log.info("%s: %s; detaching anyway", device.path, e)

    def _unregister(self, device: LoopDevice, pnos: Iterable[int]) -> List[int]:
        try:
            with _partition_change(device):
                return unregister(device._fd, device.number, pnos, self.nodes)
        finally:
            self.numbers &= set(current(device.number))


# --- the kernel's side: BLKPG and /dev nodes ---------------------------------------

def current(number: int) -> Dict[int, Tuple[int, int, int]]:
    """The partitions the kernel has for ``/dev/loopN``: {M: (start, size,
    dev_t)}, start and size in bytes."""
    found = {}
    for pno in _sysfs.loop_partition_numbers(number) or ():
        geometry = _sysfs.loop_partition(number, pno)
        if geometry is not None:
            found[pno] = geometry
    return found


def wait_for_nodes(number: int) -> List[str]:
    """After the kernel's partition scan of ``/dev/loopN``: wait, within
    the PARTITION_NODE_ATTEMPTS backoff, until each partition it found
    has its ``/dev`` node; returns the paths still missing.  devtmpfs makes
    them before the scan returns, so this normally looks once; a ``/dev``
    without it (a container) may never get them."""
    missing: List[str] = []
    for pause in _retry.pauses(_calls.PARTITION_NODE_ATTEMPTS, _calls.REMOVE_FIRST_SLEEP_S):
        missing = [path for path in (partition_path(number, pno) for pno in
                                     _sysfs.loop_partition_numbers(number) or ())
                   if not os.path.exists(path)]
        if not missing:
            break
        time.sleep(pause)
    return missing


def _blkpg(fd: int, op: int, number: int, pno: int, start: int = 0, length: int = 0) -> None:
    # A probe (udev's, blkid's) may hold a partition open briefly.
    attempts = _calls.PARTITION_DEL_ATTEMPTS if op == _c.lib.LC_BLKPG_DEL else 1
    rc = _calls.retry_ebusy(lambda: _c.lib.lc_blkpg(fd, op, pno, start, length), attempts)
    if rc == 0:
        return
    path = partition_path(number, pno)
    if rc == -errno.EBUSY:
        what = "is in use (open or mounted)" if op == _c.lib.LC_BLKPG_DEL else \
            "overlaps a partition the kernel has"
        raise LoopBusyError(errno.EBUSY, f"partition {pno} {what}", path)
    raise error_from_errno(-rc, path)


def _ensure_node(number: int, pno: int, devnum: int, made: Set[str]) -> None:
    """Create ``/dev/loopNpM`` if devtmpfs (or udev) did not; replace a node
    left over from an earlier device, which would name another disk."""
    path = partition_path(number, pno)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISBLK(st.st_mode) and st.st_rdev == devnum:
            return
        if not stat.S_ISBLK(st.st_mode):
            raise error_from_errno(errno.EEXIST, path, "exists and is not a block device")
        log.info("%s: stale node (%d:%d), replaced", path, os.major(st.st_rdev),
                 os.minor(st.st_rdev))
        os.unlink(path)
    make_block_node(path, devnum)
    made.add(path)
    log.debug("%s: created the node (%d:%d)", path, os.major(devnum), os.minor(devnum))


def _drop_node(path: str, devnum: Optional[int], made: Set[str]) -> None:
    """Remove a node loopcore created (devtmpfs removes its own)."""
    if path not in made:
        return
    made.discard(path)
    try:
        st = os.stat(path)
        if devnum is None or (stat.S_ISBLK(st.st_mode) and st.st_rdev == devnum):
            os.unlink(path)
    except FileNotFoundError:
        pass


def register(fd: int, number: int, table: PartitionTable,
             made_nodes: Set[str]) -> Tuple[List[str], List[int]]:
    """Make the kernel's partitions of ``/dev/loopN`` (open as ``fd``) those
    of ``table``, as ``partx --update`` would.

    Partitions already registered with the same start and size are kept;
    one registered under the same number with another geometry, or not
    in the table, is deleted first (LoopBusyError if it is in use).  If an
    add fails, the partitions this call added are deleted again.  Nodes
    devtmpfs did not create are made and recorded in ``made_nodes``.
    Returns (paths of the table's partitions, numbers this call added).
    """
    have = current(number)
    want = {p.number: (p.start, p.kernel_size) for p in table.partitions}
    stale = [pno for pno, (start, size, _dev) in sorted(have.items())
             if want.get(pno) != (start, size)]
    for pno in stale:
        _blkpg(fd, _c.lib.LC_BLKPG_DEL, number, pno)
        _drop_node(partition_path(number, pno), have[pno][2], made_nodes)
        log.debug("%s: partition %d deleted (not in the table as registered)",
                  device_path(number), pno)
    added: List[int] = []
    try:
        for part in table.partitions:
            if part.number in have and part.number not in stale:
                continue
            _blkpg(fd, _c.lib.LC_BLKPG_ADD, number, part.number, part.start, part.kernel_size)
            added.append(part.number)
        now = current(number)
        for part in table.partitions:
            if part.number not in now:
                raise error_from_errno(errno.ENXIO, partition_path(number, part.number),
                                       "partition vanished right after it was added")
            _ensure_node(number, part.number, now[part.number][2], made_nodes)
    except BaseException:
        for pno in reversed(added):
            _c.lib.lc_blkpg(fd, _c.lib.LC_BLKPG_DEL, pno, 0, 0)
            _drop_node(partition_path(number, pno), None, made_nodes)
        raise
    log.debug("%s: partitions %s registered (%s table, %d-byte sectors)", device_path(number),
              added, table.label, table.sector_size)
    return [partition_path(number, p.number) for p in table.partitions], added


def unregister(fd: int, number: int, pnos: Iterable[int], made_nodes: Set[str]) -> List[int]:
    """Delete partitions ``pnos`` of ``/dev/loopN`` that the kernel has, and
    the nodes loopcore made for them.  Tries them all; raises the first
    failure (LoopBusyError for one in use) after.  Returns the numbers
    deleted."""
    have = current(number)
    deleted: List[int] = []
    first_error: Optional[BaseException] = None
    for pno in sorted(set(pnos), reverse=True):
        if pno not in have:
            _drop_node(partition_path(number, pno), None, made_nodes)
            continue
        try:
            _blkpg(fd, _c.lib.LC_BLKPG_DEL, number, pno)
        except OSError as e:
            first_error = first_error or e
            continue
        _drop_node(partition_path(number, pno), have[pno][2], made_nodes)
        deleted.append(pno)
    if first_error is not None:
        raise first_error
    return sorted(deleted)

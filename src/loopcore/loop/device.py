"""An attached loop device: :class:`LoopDevice`.  Its lock lives in
``locks``, the partitions it registers in ``partitions``, the same-disk
checks in ``diskseq``, its detach in ``teardown``; :func:`open` and
:func:`detach` for devices that exist already in ``existing``."""
from __future__ import annotations

import builtins
import errno
import os
import warnings
from typing import TYPE_CHECKING, FrozenSet, List, Optional, Tuple

from .. import _c, _sysfs
from .._validate import check_timeout
from ..errors import LoopError, ValueError, converted, error_from_errno, translate
from . import _calls, discovery, diskseq, teardown
from .backing import Backing, BackingFile, expected_size, partial_file_name
from .diskseq import read_diskseq
from .info import (
    FLAG_MASK,
    FROM_DEVICE,
    PAGE_SIZE,
    Flags,
    LoopInfo,
    block_size_refused,
    check_block_size,
    device_path,
)
from .locks import DeviceLock, DeviceLocks
from .partition_table import PartitionTable
from .partitions import AddedPartitions, read_device_table

if TYPE_CHECKING:
    from .._native import CData  # cffi cdata (struct pointers); only in the stub

# LOCK_*, the block size and diskseq checks: imported from here by policy
# and burst, which may import them from their homes instead.
__all__ = ["LoopDevice"]


class LoopDevice:
    """An open loop device.  Detaches on leaving a ``with`` block (a device
    ``attach(..., reuse=True)`` found bound already is only closed).

    ``close()`` only closes loopcore's fd (an autoclear device then detaches
    when nobody else holds it open); ``detach()`` unbinds the backing file.
    """

    __slots__ = ("_fd", "number", "devnum", "diskseq", "reused", "_locks", "_partitions",
                 "_made_nodes", "__weakref__")

    def __init__(self, number: int, fd: int, devnum: int, diskseq: Optional[int]) -> None:
        self._fd = fd
        #: N of /dev/loopN
        self.number = number
        #: the device's dev_t
        self.devnum = devnum
        #: the kernel's disk sequence number (None before Linux 5.15):
        #: methods that open the node again check it is still this disk
        self.diskseq = diskseq
        #: attach(reuse=True) returned a device that was bound already
        self.reused = False
        # made at first use (locks.py, partitions.py): attach and detach
        # of a device that never locks or adds partitions pay nothing
        self._locks: Optional[DeviceLocks] = None
        self._partitions: Optional[AddedPartitions] = None
        # partition nodes make_nodes=True created (nodes.py), removed at detach
        self._made_nodes: Tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return device_path(self.number)

    @property
    @translate
    def backing_file(self) -> Optional[str]:
        """The backing file's full path (from sysfs), None if unbound.

        A path longer than sysfs shows (a page) comes from the kernel's
        64-byte ``lo_file_name`` instead, ending in ``*`` where cut.
        """
        try:
            return _sysfs.loop_backing_file(self.number)
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG:
                raise
        return partial_file_name(_c.ffi.buffer(self._status().lo_file_name)[:])

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        self._check_open()
        return self._fd

    def _check_open(self) -> None:
        if self._fd < 0:
            raise ValueError(f"{self.path}: operation on a closed LoopDevice")

    def _state(self) -> Tuple[CData, CData]:
        """(GET_STATUS64 answer, block-level state), in one C call."""
        self._check_open()
        status = _c.ffi.new("struct lc_loop_info64 *")
        state = _c.ffi.new("struct lc_attach_result *")
        _calls.check(_c.lib.lc_read_state(self._fd, status, state), self.path)
        return status, state

    def _status(self) -> CData:
        self._check_open()
        info = _c.ffi.new("struct lc_loop_info64 *")
        _calls.check(_c.lib.lc_get_status64(self._fd, info), self.path)
        return info

    @translate
    def info(self) -> LoopInfo:
        """The kernel's view of this device (GET_STATUS64, block ioctls, sysfs)."""
        status, state = self._state()
        return LoopInfo(
            number=self.number,
            path=self.path,
            backing_file=self.backing_file,
            backing_devnum=int(status.lo_device),
            backing_inode=int(status.lo_inode),
            offset=int(status.lo_offset),
            size_limit=int(status.lo_sizelimit),
            flags=Flags(status.lo_flags & FLAG_MASK),
            block_size=int(state.block_size),
            size_bytes=int(state.size_bytes),
            diskseq=int(state.diskseq) or None,
            major=os.major(self.devnum),
            minor=os.minor(self.devnum),
            scan_flags=FROM_DEVICE,
        )

    @translate
    def partitions(self) -> List[str]:
        """Paths of this device's partitions (``/dev/loopNpM``), from sysfs."""
        return discovery.partitions(self.number)

    @translate
    def wait_for_partitions(self, count: int, timeout: float = 5.0) -> List[str]:
        """Wait until ``count`` partitions and their nodes exist; return their paths."""
        return discovery.wait_for_partitions(self.number, count, timeout)

    # --- locks (systemd's block device locking convention): locks.py --------------

    @property
    def locked(self) -> Optional[str]:
        """LOCK_EXCLUSIVE or LOCK_SHARED while this object holds a flock on
        the device (attach(lock=...) or :meth:`lock`), else None."""
        return None if self._locks is None else self._locks.mode

    @translate
    def lock(self, exclusive: bool = True, timeout: Optional[float] = None) -> DeviceLock:
        """Take a BSD lock (flock) on the device, as systemd's tools do:
        udev does not probe a device it cannot lock shared, and builders
        that honour the convention wait.  Use as a context manager::

            with dev.lock():            # exclusive: write the partition table
                ...

        The lock lives on a second fd of the node (reopened, its diskseq
        checked: DiskseqMismatchError if the device was detached since),
        so it is released without closing the device.  ``timeout``
        (seconds) polls; TimeoutError when it runs out, None waits.  If
        this object holds a lock already, its mode is converted (flock
        unlocks before it relocks, so while an upgrade to exclusive waits
        nothing is held; a timed-out upgrade takes the shared lock back
        if it can).  ``detach()``, ``close()`` and :meth:`unlock` drop it.
        """
        check_timeout(timeout)
        self._check_open()
        if self._locks is None:
            self._locks = DeviceLocks()
        return self._locks.take(self, exclusive, timeout)

    @translate
    def unlock(self) -> None:
        """Drop the lock this object holds, whatever took it."""
        self._drop_lock()

    @property
    def _lock_fd(self) -> int:
        """The fd holding the flock, -1 for none."""
        return -1 if self._locks is None else self._locks.fd

    def _adopt_lock(self, fd: int, mode: str) -> None:
        """Take over a lock fd attach() got from lc_attach (LOCK_EX), and
        downgrade it to ``mode``."""
        if self._locks is None:
            self._locks = DeviceLocks()
        self._locks.adopt(fd, mode)

    def _drop_lock(self) -> None:
        if self._locks is not None:
            self._locks.drop()

    def _reopen(self, flags: int) -> int:
        """A new fd on the node, checked to be this very disk: same dev_t
        and same diskseq (DiskseqMismatchError otherwise)."""
        return diskseq.reopen(self.path, self.devnum, self.diskseq, flags)

    def _check_same_disk(self, state: CData) -> None:
        """Refuse to change a device this object no longer describes (an
        unbound device open()ed, then bound by someone else)."""
        diskseq.check_not_rebound(self.path, self.diskseq, int(state.diskseq))

    # --- partitions without the kernel's parsers: partitions.py --------------------

    @property
    def added_partitions(self) -> FrozenSet[int]:
        """Numbers of the partitions :meth:`add_partitions` registered (and
        detach() and :meth:`remove_partitions` will delete); empty when the
        kernel scanned them itself."""
        return frozenset(() if self._partitions is None else self._partitions.numbers)

    @translate
    def partition_table(self) -> Optional[PartitionTable]:
        """The device's partition table (GPT or MBR) as the library reads it
        in the device's logical block size; None if it has none."""
        return read_device_table(self)

    @translate
    def add_partitions(self) -> List[str]:
        """Register the partitions of the device's table with the kernel
        (BLKPG) and return their paths (``/dev/loopNpM``), as ``partx
        --add``/``--update`` would, for kernels without partition-table
        parsers and devices attached without partscan.

        The table (GPT behind a protective MBR, its backup when the primary
        is damaged, or MBR with extended and logical partitions) is read
        here, in the device's logical block size.  Partitions registered
        already with the same geometry are kept, others updated; nodes
        devtmpfs did not make are created.  When partscan is on and the
        kernel made partitions itself it does nothing, logs so (INFO,
        logger ``loopcore.loop``) and returns the kernel's; then
        :attr:`added_partitions` stays empty.  PartitionTableError for an
        unusable table; [] without one.
        """
        return self._added().add(self)

    @translate
    def remove_partitions(self) -> List[str]:
        """Delete the partitions :meth:`add_partitions` (or, on a device
        without partscan, anyone: ``partx``) registered, and the nodes
        loopcore made; return the paths removed.  Partitions the kernel
        scanned itself (partscan) are its own: nothing is done and a line
        logged.  LoopBusyError for one in use (open, mounted), after the
        others are gone."""
        return self._added().remove(self)

    def _added(self) -> AddedPartitions:
        if self._partitions is None:
            self._partitions = AddedPartitions()
        return self._partitions

    @translate
    def set_capacity(self) -> None:
        """Re-read the backing file's size (after it grew or shrank)."""
        self._check_open()
        _calls.check(_calls.retry_eagain(lambda: _c.lib.lc_set_capacity(self._fd)), self.path)

    @translate
    def set_block_size(self, block_size: int) -> None:
        """Set the logical block size: a power of two from 512 to the page
        size, or up to 64 KiB where the kernel takes it (6.15+)."""
        check_block_size(block_size, allow_zero=False)
        self._check_open()
        rc = _calls.retry_eagain(lambda: _c.lib.lc_set_block_size(self._fd, block_size))
        if rc == -errno.EINVAL and block_size > PAGE_SIZE:
            raise block_size_refused(block_size, error_from_errno(errno.EINVAL, self.path))
        _calls.check(rc, self.path)

    @translate
    def set_direct_io(self, enable: bool) -> None:
        """Switch direct I/O to the backing file on or off.

        The kernel refuses (EINVAL) when the backing file or offset does
        not allow direct I/O.
        """
        self._check_open()
        value = 1 if enable else 0
        _calls.check(_calls.retry_eagain(lambda: _c.lib.lc_set_direct_io(self._fd, value)),
                     self.path)

    @translate
    def set_autoclear(self, enable: bool) -> None:
        """Set or clear AUTOCLEAR (detach when the last opener closes)."""
        status = self._status()
        if enable:
            status.lo_flags |= Flags.AUTOCLEAR
        else:
            status.lo_flags &= ~Flags.AUTOCLEAR
        _calls.check(_calls.retry_eagain(lambda: _c.lib.lc_set_status64(self._fd, status)),
                     self.path)

    @translate
    def change_fd(self, backing: Backing) -> None:
        """Swap the backing file of a read-only device for one of the same size.

        The kernel allows this only on read-only devices (it is meant for
        replacing a live CD image); both conditions are checked first.
        """
        status, state = self._state()
        if not status.lo_flags & Flags.READ_ONLY:
            raise ValueError(f"{self.path}: change_fd needs a read-only device")
        with BackingFile.open(backing, read_only=True) as new:
            # The kernel wants the same device size from the new file.
            new_size = expected_size(new.size, int(status.lo_offset),
                                     int(status.lo_sizelimit))
            current = int(state.size_bytes)
            if new_size != current:
                raise ValueError(f"{new.name}: would give a {new_size}-byte device, "
                                 f"the current one has {current}")
            _calls.check(_c.lib.lc_change_fd(self._fd, new.fd), self.path)
        # a new medium: the kernel may count it as a new disk
        self.diskseq = read_diskseq(self._fd) or self.diskseq

    def detach(self, *, wait: Optional[float] = None) -> bool:
        """Write back the device's page cache, unbind the backing file
        (LOOP_CLR_FD) and close loopcore's fd.

        Returns True if the kernel released the backing file now, False if
        it deferred that: while another process (a udev or blkid probe, a
        mount, a dm map) holds the device open, LOOP_CLR_FD only marks it
        autoclear and the kernel unbinds at the last close; the image is
        still in use until then.  ``wait`` (seconds) waits for that
        release, woken by the kernel's uevents, and returns True; when it
        runs out, TimeoutError (ETIMEDOUT) names who still holds the device
        (processes with it or a partition open, holders such as ``dm-0``,
        mounts).  Ctrl-C ends the wait at once; the detach stays done.

        If the cached writes cannot reach the backing file (its file system
        is full, an I/O error), this raises and the device stays bound and
        this object usable: the data is not thrown away, and the caller can
        make room and detach again.  LOOP_CLR_FD's EAGAIN is retried (10 x
        250 ms); another failure also leaves the device bound and this
        object open.  If other processes hold the device open the kernel
        detaches it when the last of them closes it.  LoopError(ENXIO) if
        it was not bound (this object is closed then).

        Partitions :meth:`add_partitions` registered are deleted first
        (the kernel keeps them past LOOP_CLR_FD without partscan;
        LoopBusyError, still bound, if one is in use), and the lock is
        dropped (a second open fd would make LOOP_CLR_FD a deferred
        detach), both after the write-back succeeded.
        """
        # The translate decorator's work, inline: a wrapper frame costs a
        # measurable share of a 50 us cycle.
        try:
            if wait is not None:
                check_timeout(wait, "wait")
            return teardown.detach(self, wait)
        except (builtins.OSError, builtins.ValueError, builtins.TypeError) as e:
            new = converted(e)
            if new is e:
                raise
            raise new.with_traceback(e.__traceback__) from None

    def close(self) -> None:
        """Close loopcore's fd (and drop its lock) without detaching;
        partitions it added stay registered."""
        self._drop_lock()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> "LoopDevice":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._fd < 0:
            return
        if self.reused:
            self.close()  # someone else's binding: not ours to take down
            return
        try:
            self.detach()
        except LoopError as e:
            if e.errno != errno.ENXIO:  # already unbound (autoclear): fine
                raise

    def __del__(self) -> None:
        try:
            fd, locks = self._fd, self._locks
        except AttributeError:  # __init__ did not run to its end
            return
        if fd >= 0:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2)
            self.close()
        elif locks is not None:
            self._drop_lock()

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"fd={self._fd}"
        return f"<LoopDevice {self.path} {state}>"


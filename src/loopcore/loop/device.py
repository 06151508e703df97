"""An attached loop device (:class:`LoopDevice`), and :func:`open` and
:func:`detach` for devices that exist already."""
from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import os
import stat
import time
import warnings
from typing import TYPE_CHECKING, FrozenSet, Iterator, List, Optional, Set, Tuple, Union

from .. import _c, _sysfs
from .._log import get_logger
from .._validate import U64_MAX, check_int, check_number, check_timeout
from ..errors import (
    DiskseqMismatchError,
    LoopError,
    NotALoopDeviceError,
    TimeoutError,
    TypeError,
    ValueError,
    converted,
    error_from_errno,
    translate,
)
from . import _calls, discovery
from . import partition_table as ptable
from .backing import Backing, BackingFile, expected_size, partial_file_name
from .info import FROM_DEVICE, MAX_BLOCK_SIZE, PAGE_SIZE, Flags, LoopInfo, device_path
from .partition_table import PartitionTable

if TYPE_CHECKING:
    from .._native import CData  # cffi cdata (struct pointers); only in the stub

__all__ = ["DeviceRef", "DeviceLock", "LoopDevice", "open", "detach", "loop_number_of",
           "check_block_size", "block_size_refused", "read_diskseq", "check_diskseq",
           "LOCK_EXCLUSIVE", "LOCK_SHARED"]

log = get_logger("loop")

#: LoopDevice.locked: an exclusive flock on the device (udev skips it)
LOCK_EXCLUSIVE = "exclusive"
#: LoopDevice.locked: a shared flock (others may read and probe, nobody
#: who honours the convention rewrites it)
LOCK_SHARED = "shared"
_LOCK_OPS = {LOCK_EXCLUSIVE: fcntl.LOCK_EX, LOCK_SHARED: fcntl.LOCK_SH}

DeviceRef = Union[str, bytes, "os.PathLike[str]", int]
"""A loop device: its path (``/dev/loop3``) or its number (``3``)."""

_ALL_FLAGS = int(Flags.READ_ONLY | Flags.AUTOCLEAR | Flags.PARTSCAN | Flags.DIRECT_IO)


def check_block_size(block_size: int, *, allow_zero: bool) -> None:
    """A logical block size: 0 (the kernel's default) where allowed, else a
    power of two from 512 to 64 KiB (the running kernel may take less)."""
    check_int("block_size", block_size, maximum=MAX_BLOCK_SIZE)
    if block_size == 0 and allow_zero:
        return
    if block_size < 512 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two from 512 to {MAX_BLOCK_SIZE}, "
                         f"not {block_size}")


def read_diskseq(fd: int) -> Optional[int]:
    """The disk sequence number of an open block device; None before Linux
    5.15 (no BLKGETDISKSEQ)."""
    value = _c.ffi.new("uint64_t *")
    if _c.lib.lc_get_diskseq(fd, value) != 0 or not value[0]:
        return None
    return int(value[0])


def check_diskseq(fd: int, path: str, expected: Optional[int]) -> None:
    """Raise DiskseqMismatchError (ESTALE) unless the disk open as ``fd``
    still has diskseq ``expected``.  The kernel gives a loop device a new
    diskseq at every bind and every detach, so a different one means the
    binding that was meant is gone.  None expects nothing (a kernel
    without diskseq)."""
    if expected is None:
        return
    actual = read_diskseq(fd)
    if actual is None:
        raise LoopError(errno.EOPNOTSUPP, "this kernel has no diskseq (Linux 5.15+): "
                        "cannot tell whether it is the same disk", path)
    if actual != expected:
        raise DiskseqMismatchError(errno.ESTALE, f"diskseq is {actual}, not {expected}: the "
                                   "device was detached (and maybe reused) since", path)


def block_size_refused(block_size: int, error: OSError) -> ValueError:
    """The ValueError for a block size the kernel refused (EINVAL): kernels
    before 6.15 take no block size above the page size."""
    return ValueError(f"block_size {block_size}: this kernel refuses it ({error.strerror}); "
                      f"every kernel takes powers of two from 512 to the page size, {PAGE_SIZE}")


class DeviceLock:
    """A flock held on a loop device (:meth:`LoopDevice.lock`); leaving its
    ``with`` block or :meth:`release` puts back the lock state from
    before (unlocked, or the mode an outer lock held).  Nest them like
    ``with`` blocks; releasing twice, or after ``LoopDevice.unlock()``,
    does nothing."""

    __slots__ = ("_device", "_previous", "_generation", "mode")

    def __init__(self, device: "LoopDevice", previous: Optional[str], generation: int,
                 mode: str) -> None:
        self._device = device
        self._previous = previous
        self._generation = generation
        #: LOCK_EXCLUSIVE or LOCK_SHARED
        self.mode = mode

    @property
    def device(self) -> "LoopDevice":
        return self._device

    @translate
    def release(self) -> None:
        if self._generation != self._device._lock_generation:
            return  # released already, or the device dropped its lock since
        self._generation = -1
        self._device._restore_lock(self._previous)

    def __enter__(self) -> "DeviceLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<DeviceLock {self._device.path} {self.mode}>"


class LoopDevice:
    """An open loop device.  Detaches on leaving a ``with`` block (a device
    ``attach(..., reuse=True)`` found bound already is only closed).

    ``close()`` only closes loopcore's fd (an autoclear device then detaches
    when nobody else holds it open); ``detach()`` unbinds the backing file.
    """

    __slots__ = ("_fd", "number", "devnum", "diskseq", "reused", "_lock_fd", "_lock_mode",
                 "_lock_generation", "_added_partitions", "_made_nodes", "__weakref__")

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
        self._lock_fd = -1
        self._lock_mode: Optional[str] = None
        self._lock_generation = 0
        self._added_partitions: Set[int] = set()
        self._made_nodes: Set[str] = set()

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
            flags=Flags(status.lo_flags & _ALL_FLAGS),
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

    # --- locks (systemd's block device locking convention) ----------------------

    @property
    def locked(self) -> Optional[str]:
        """LOCK_EXCLUSIVE or LOCK_SHARED while this object holds a flock on
        the device (attach(lock=...) or :meth:`lock`), else None."""
        return self._lock_mode

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
        mode = LOCK_EXCLUSIVE if exclusive else LOCK_SHARED
        deadline_ns = _calls.deadline_after(timeout)
        previous = self._lock_mode
        if self._lock_fd < 0:
            fd = self._reopen(os.O_RDONLY)
            try:
                if not _calls.flock_wait(fd, _LOCK_OPS[mode], deadline_ns):
                    raise self._lock_timeout(timeout)
            except BaseException:
                os.close(fd)
                raise
            self._lock_fd = fd
        elif previous != mode:
            if not _calls.flock_wait(self._lock_fd, _LOCK_OPS[mode], deadline_ns):
                self._regain_lock(previous)
                raise self._lock_timeout(timeout)
        self._lock_mode = mode
        return DeviceLock(self, previous, self._lock_generation, mode)

    @translate
    def unlock(self) -> None:
        """Drop the lock this object holds, whatever took it."""
        self._drop_lock()

    def _lock_timeout(self, timeout: Optional[float]) -> TimeoutError:
        return TimeoutError(errno.ETIMEDOUT, f"the device stayed locked by another process "
                            f"for {timeout} s", self.path)

    def _regain_lock(self, previous: Optional[str]) -> None:
        """After a failed conversion, which dropped the lock: take the old
        mode back without waiting, or record that nothing is held."""
        if previous is not None:
            try:
                fcntl.flock(self._lock_fd, _LOCK_OPS[previous] | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                log.warning("%s: lost the %s lock while waiting to convert it",
                            self.path, previous)
        self._drop_lock()

    def _restore_lock(self, previous: Optional[str]) -> None:
        if self._lock_fd < 0:
            return
        if previous is None:
            self._drop_lock()
        elif previous != self._lock_mode:
            # a downgrade never waits; an upgrade back waits for readers
            # (udev's probe) that came in while the inner lock was shared
            _calls.flock_wait(self._lock_fd, _LOCK_OPS[previous], 0)
            self._lock_mode = previous

    def _drop_lock(self) -> None:
        if self._lock_fd >= 0:
            fd, self._lock_fd = self._lock_fd, -1
            os.close(fd)
        self._lock_mode = None
        self._lock_generation += 1

    def _adopt_lock(self, fd: int, mode: str) -> None:
        """Take over a lock fd attach() got from lc_attach (LOCK_EX), and
        downgrade it to ``mode``."""
        self._lock_fd = fd
        self._lock_mode = LOCK_EXCLUSIVE
        if mode != LOCK_EXCLUSIVE:
            fcntl.flock(fd, _LOCK_OPS[mode])  # a downgrade: never waits
            self._lock_mode = mode

    def _reopen(self, flags: int) -> int:
        """A new fd on the node, checked to be this very disk: same dev_t
        and same diskseq (DiskseqMismatchError otherwise)."""
        fd = os.open(self.path, flags | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISBLK(st.st_mode) or st.st_rdev != self.devnum:
                raise DiskseqMismatchError(errno.ESTALE, "the node now names another device",
                                           self.path)
            check_diskseq(fd, self.path, self.diskseq)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_same_disk(self, state: CData) -> None:
        """Refuse to change a device this object no longer describes (an
        unbound device open()ed, then bound by someone else)."""
        if self.diskseq is not None and int(state.diskseq) not in (0, self.diskseq):
            raise DiskseqMismatchError(errno.ESTALE, f"diskseq is {int(state.diskseq)}, not "
                                       f"{self.diskseq}: bound anew since it was opened",
                                       self.path)

    # --- partitions without the kernel's parsers ---------------------------------

    @contextlib.contextmanager
    def _partition_change(self) -> Iterator[None]:
        """Around a change of the partitions: a fresh open of the node,
        checked to be this disk, held exclusively locked unless this object
        holds a lock already.

        The lock keeps udev from probing (and holding open) partitions while
        they are added or deleted, and its BLKRRPART out.  The open itself
        matters too: after a bind the kernel marks the disk for a partition
        rescan on its next open (Linux 5.x-6.x), which drops every partition
        -- the ones BLKPG adds included -- so that open has to come first,
        from here, not later from a udev probe.  loopcore's own fds were all
        opened before the bind.
        """
        fd = self._reopen(os.O_RDONLY)
        try:
            if self._lock_fd < 0:
                _calls.flock_wait(fd, fcntl.LOCK_EX, 0)
            yield
        finally:
            os.close(fd)  # read-only: no IN_CLOSE_WRITE, so udev does not rescan

    @property
    def added_partitions(self) -> FrozenSet[int]:
        """Numbers of the partitions :meth:`add_partitions` registered (and
        detach() and :meth:`remove_partitions` will delete); empty when the
        kernel scanned them itself."""
        return frozenset(self._added_partitions)

    @translate
    def partition_table(self) -> Optional[PartitionTable]:
        """The device's partition table (GPT or MBR) as the library reads it
        in the device's logical block size; None if it has none."""
        _, state = self._state()
        return ptable.read_table(self._fd, int(state.size_bytes), int(state.block_size))

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
        status, state = self._state()
        self._check_same_disk(state)
        have = ptable.current(self.number)
        if status.lo_flags & Flags.PARTSCAN and have and not self._added_partitions:
            log.info("%s: the kernel scanned the partition table itself (partscan): "
                     "nothing added", self.path)
            return [ptable.partition_path(self.number, pno) for pno in sorted(have)]
        table = ptable.read_table(self._fd, int(state.size_bytes), int(state.block_size))
        if table is None:
            log.info("%s: no partition table: nothing added", self.path)
            if self._added_partitions:
                self.remove_partitions()
            return []
        try:
            with self._partition_change():
                paths, added = ptable.register(self._fd, self.number, table,
                                               self._made_nodes)
        finally:
            self._added_partitions &= set(ptable.current(self.number))
        self._added_partitions = (self._added_partitions | set(added)) & {
            p.number for p in table.partitions}
        return paths

    @translate
    def remove_partitions(self) -> List[str]:
        """Delete the partitions :meth:`add_partitions` (or, on a device
        without partscan, anyone: ``partx``) registered, and the nodes
        loopcore made; return the paths removed.  Partitions the kernel
        scanned itself (partscan) are its own: nothing is done and a line
        logged.  LoopBusyError for one in use (open, mounted), after the
        others are gone."""
        status, state = self._state()
        self._check_same_disk(state)
        have = ptable.current(self.number)
        partscan = bool(status.lo_flags & Flags.PARTSCAN)
        if partscan and not self._added_partitions:
            if have:
                log.info("%s: the partitions are the kernel's own (partscan): nothing removed",
                         self.path)
            return []
        targets = set(self._added_partitions) if partscan else set(have)
        try:
            with self._partition_change():
                removed = ptable.unregister(self._fd, self.number, targets, self._made_nodes)
        finally:
            self._added_partitions &= set(ptable.current(self.number))
        return [ptable.partition_path(self.number, pno) for pno in removed]

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

    def detach(self) -> None:
        """Write back the device's page cache, unbind the backing file
        (LOOP_CLR_FD) and close loopcore's fd.

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
            self._detach()
        except (builtins.OSError, builtins.ValueError, builtins.TypeError) as e:
            new = converted(e)
            if new is e:
                raise
            raise new.with_traceback(e.__traceback__) from None

    def _detach(self) -> None:
        self._check_open()
        if self._added_partitions or self._lock_fd >= 0:
            self._write_back()
            if self._added_partitions:
                try:
                    with self._partition_change():
                        ptable.unregister(self._fd, self.number, self._added_partitions,
                                          self._made_nodes)
                finally:
                    self._added_partitions &= set(ptable.current(self.number))
            self._drop_lock()
        step = _c.ffi.new("uint32_t *")
        rc = _c.lib.lc_detach_fd(self._fd, step)
        if rc == 0:  # the common case, without the loop below
            self._fd = -1
            return
        self._detach_failed(rc, step)

    def _detach_failed(self, rc: int, step: CData) -> None:
        """After a failed lc_detach_fd: retry, or raise (still bound)."""
        # EAGAIN (the kernel is busy) and EINTR (a signal: its handler runs
        # between tries) share util-linux's budget of 10 tries; only EAGAIN
        # sleeps.  A detach that keeps failing raises, still bound.
        for _ in range(1, _calls.EAGAIN_ATTEMPTS):
            if rc not in (-errno.EAGAIN, -errno.EINTR):
                break
            if rc == -errno.EAGAIN:
                time.sleep(_calls.EAGAIN_SLEEP_S)
            rc = _c.lib.lc_detach_fd(self._fd, step)
        if rc == 0:
            self._fd = -1
            return
        err = -rc
        if step[0] == _c.lib.LC_STEP_WRITE_BACK:
            raise error_from_errno(err, self.path, f"{os.strerror(err)}: the device's cached "
                                   "writes could not be written back; it stays bound")
        if err == errno.ENXIO and self._unbound():
            self.close()  # nothing bound to keep open for
        raise error_from_errno(err, self.path)

    def _write_back(self) -> None:
        """lc_flush, EINTR retried (a handler that raises ends it)."""
        while True:
            rc = _c.lib.lc_flush(self._fd)
            if rc != -errno.EINTR:
                break
        if rc < 0:
            raise error_from_errno(-rc, self.path, f"{os.strerror(-rc)}: the device's cached "
                                   "writes could not be written back; it stays bound")

    def _unbound(self) -> bool:
        """Whether the kernel says this device has no backing file."""
        info = _c.ffi.new("struct lc_loop_info64 *")
        return bool(_c.lib.lc_get_status64(self._fd, info) == -errno.ENXIO)

    def _unbind(self) -> None:
        """Unbind and close a device attach() bound moments ago and is not
        handing out: nobody wrote to it, so there is nothing to write back,
        and a failure to unbind could not be acted on."""
        self._drop_lock()  # first: another opener defers LOOP_CLR_FD
        fd, self._fd = self._fd, -1
        _calls.retry_eagain(lambda: _c.lib.lc_clr_fd(fd))
        os.close(fd)

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
        if getattr(self, "_fd", -1) >= 0:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2)
            self.close()
        elif getattr(self, "_lock_fd", -1) >= 0:
            self._drop_lock()

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"fd={self._fd}"
        return f"<LoopDevice {self.path} {state}>"


# --- existing devices --------------------------------------------------------

def loop_number_of(path: str, st: os.stat_result) -> int:
    """N for a loop device node, or raise NotALoopDeviceError."""
    if not stat.S_ISBLK(st.st_mode):
        raise NotALoopDeviceError(errno.ENOTBLK, "not a loop device", path)
    # sysfs names the disk: loopN for a loop device (loopNpM is a partition).
    name = _sysfs.block_name(st.st_rdev) or ""
    if not (name.startswith("loop") and name[4:].isdigit()):
        raise NotALoopDeviceError(errno.ENODEV, "not a loop device", path)
    return int(name[4:])


def _device_from_ref(ref: DeviceRef) -> str:
    if isinstance(ref, bool):
        raise TypeError("a loop device is a path or a number, not a bool")
    if isinstance(ref, int):
        check_number(ref)
        return device_path(ref)
    if isinstance(ref, (str, bytes, os.PathLike)):
        return os.fsdecode(ref)
    raise TypeError(f"a loop device is a path or a number, not {type(ref).__name__}")


@translate
def open(path: DeviceRef, *, diskseq: Optional[int] = None) -> LoopDevice:  # noqa: A001
    """Open an existing loop device by path (or number).

    Opens read-write, falling back to read-only where the node or the
    device refuses writing.  NotALoopDeviceError for anything else.

    ``diskseq`` (a ``LoopDevice.diskseq`` or udev's ``DISKSEQ`` noted
    earlier) makes it refuse, with DiskseqMismatchError (ESTALE), a device
    that is no longer that disk: detached, and maybe bound to something
    else, since.  The check is made on the open fd, which pins the
    binding, so it cannot go stale between check and use.
    """
    if diskseq is not None:
        check_int("diskseq", diskseq, minimum=1, maximum=U64_MAX)
    name = _device_from_ref(path)
    st = os.stat(name)
    number = loop_number_of(name, st)
    try:
        fd = os.open(name, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        check_diskseq(fd, name, diskseq)
    except BaseException:
        os.close(fd)
        raise
    return LoopDevice(number, fd, st.st_rdev, read_diskseq(fd))


@translate
def detach(path_or_number: DeviceRef, *, diskseq: Optional[int] = None) -> None:
    """Detach a loop device by path or number (``losetup -d``); with
    ``diskseq``, only if it is still that disk (see :func:`open`)."""
    device = open(path_or_number, diskseq=diskseq)
    try:
        device.detach()
    finally:
        device.close()  # still open if detach failed

"""The flock a :class:`~loopcore.LoopDevice` holds on its node (systemd's
block device locking convention): :class:`DeviceLocks`, the state behind
``LoopDevice.lock()``/``unlock()``/``locked``, and :class:`DeviceLock`,
what ``lock()`` hands out.

udev does not probe a device it cannot lock shared, and builders that
honour the convention wait.  The lock lives on a second fd of the node, so
it is released without closing the device.
"""
from __future__ import annotations

import errno
import fcntl
import os
from typing import TYPE_CHECKING, Optional

from .. import _retry
from .._log import get_logger
from ..errors import TimeoutError, translate
from . import _calls

if TYPE_CHECKING:
    from .device import LoopDevice

__all__ = ["LOCK_EXCLUSIVE", "LOCK_SHARED", "DeviceLock", "DeviceLocks"]

log = get_logger("loop")

#: LoopDevice.locked: an exclusive flock on the device (udev skips it)
LOCK_EXCLUSIVE = "exclusive"
#: LoopDevice.locked: a shared flock (others may read and probe, nobody
#: who honours the convention rewrites it)
LOCK_SHARED = "shared"
_LOCK_OPS = {LOCK_EXCLUSIVE: fcntl.LOCK_EX, LOCK_SHARED: fcntl.LOCK_SH}


class DeviceLocks:
    """The flock one LoopDevice holds: its fd (-1 for none), its mode, and
    a generation that every drop moves on, so that a :class:`DeviceLock`
    from before a drop releases nothing.  Made at a device's first lock:
    a device that never locks pays nothing for it."""

    __slots__ = ("fd", "mode", "generation")

    def __init__(self) -> None:
        self.fd = -1
        self.mode: Optional[str] = None
        self.generation = 0

    def take(self, device: LoopDevice, exclusive: bool, timeout: Optional[float]) -> DeviceLock:
        """LoopDevice.lock(): lock (or convert the lock held) and return the
        handle that puts the previous state back."""
        mode = LOCK_EXCLUSIVE if exclusive else LOCK_SHARED
        deadline_ns = _retry.deadline_after(timeout)
        previous = self.mode
        if self.fd < 0:
            fd = device._reopen(os.O_RDONLY)
            try:
                if not _calls.flock_wait(fd, _LOCK_OPS[mode], deadline_ns):
                    raise _timed_out(device.path, timeout)
            except BaseException:
                os.close(fd)
                raise
            self.fd = fd
        elif previous != mode:
            if not _calls.flock_wait(self.fd, _LOCK_OPS[mode], deadline_ns):
                self._regain(device.path, previous)
                raise _timed_out(device.path, timeout)
        self.mode = mode
        return DeviceLock(device, self, previous, mode)

    def _regain(self, path: str, previous: Optional[str]) -> None:
        """After a failed conversion, which dropped the lock: take the old
        mode back without waiting, or record that nothing is held."""
        if previous is not None:
            try:
                fcntl.flock(self.fd, _LOCK_OPS[previous] | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                log.warning("%s: lost the %s lock while waiting to convert it", path, previous)
        self.drop()

    def restore(self, previous: Optional[str]) -> None:
        """Put back the state from before a lock() (a DeviceLock's release)."""
        if self.fd < 0:
            return
        if previous is None:
            self.drop()
        elif previous != self.mode:
            # a downgrade never waits; an upgrade back waits for readers
            # (udev's probe) that came in while the inner lock was shared
            _calls.flock_wait(self.fd, _LOCK_OPS[previous], 0)
            self.mode = previous

    def drop(self) -> None:
        """Close the lock fd (releasing the flock), whatever took it."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
        self.mode = None
        self.generation += 1

    def adopt(self, fd: int, mode: str) -> None:
        """Take over a lock fd attach() got from lc_attach (LOCK_EX), and
        downgrade it to ``mode``."""
        self.fd = fd
        self.mode = LOCK_EXCLUSIVE
        if mode != LOCK_EXCLUSIVE:
            fcntl.flock(fd, _LOCK_OPS[mode])  # a downgrade: never waits
            self.mode = mode


def _timed_out(path: str, timeout: Optional[float]) -> TimeoutError:
    return TimeoutError(errno.ETIMEDOUT, f"the device stayed locked by another process "
                        f"for {timeout} s", path)


class DeviceLock:
    """A flock held on a loop device (:meth:`LoopDevice.lock`); leaving its
    ``with`` block or :meth:`release` puts back the lock state from
    before (unlocked, or the mode an outer lock held).  Nest them like
    ``with`` blocks; releasing twice, or after ``LoopDevice.unlock()``,
    does nothing."""

    __slots__ = ("_device", "_locks", "_previous", "_generation", "mode")

    def __init__(self, device: LoopDevice, locks: DeviceLocks, previous: Optional[str],
                 mode: str) -> None:
        self._device = device
        self._locks = locks
        self._previous = previous
        self._generation = locks.generation
        #: LOCK_EXCLUSIVE or LOCK_SHARED
        self.mode = mode

    @property
    def device(self) -> LoopDevice:
        """The LoopDevice this lock is on."""
        return self._device

    @translate
    def release(self) -> None:
        """Put back the lock state from before (see the class)."""
        if self._generation != self._locks.generation:
            return  # released already, or the device dropped its lock since
        self._generation = -1
        self._locks.restore(self._previous)

    def __enter__(self) -> DeviceLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<DeviceLock {self._device.path} {self.mode}>"

"""``/dev/loop-control``: the public :class:`LoopControl`, and the
process's shared control state for attach (:data:`control`): its fd and
locks, fork handling, the LOOP_CONFIGURE probe and the legacy switch."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from typing import Iterator, Optional, Tuple

from .. import _c, _retry, _sysfs
from .._log import get_logger
from .._validate import check_number
from ..errors import (
    FileNotFoundError,
    LoopBusyError,
    NoFreeDeviceError,
    TimeoutError,
    error_from_errno,
    translate,
)
from . import _calls
from .info import device_path

# control (the shared state), CONTROL_PATH and the helpers are loop's own.
__all__ = ["FORCE_LEGACY_ENV", "LoopControl", "kernel_supports_configure"]

CONTROL_PATH = "/dev/loop-control"
FORCE_LEGACY_ENV = "LOOPCORE_FORCE_LEGACY"
MAKE_NODES_ENV = "LOOPCORE_MAKE_NODES"  # nodes.py

log = get_logger("loop")


def no_free_device(err: int) -> NoFreeDeviceError:
    return NoFreeDeviceError(err, f"no free loop device: {os.strerror(err)}", CONTROL_PATH)


def control_timeout() -> TimeoutError:
    return TimeoutError(errno.ETIMEDOUT, "timed out waiting for another attach to release "
                        "/dev/loop-control, or for a free loop device", CONTROL_PATH)


def missing_node_error(number: int) -> Optional[FileNotFoundError]:
    """The error for a ``/dev/loopN`` that does not exist though the
    kernel has ``loopN``; None if the node is there or the device is not
    (gone meanwhile: an ordinary race, retried)."""
    path = device_path(number)
    if os.path.exists(path) or _sysfs.block_dev(f"loop{number}") is None:
        return None
    return FileNotFoundError(errno.ENOENT, "does not exist though the kernel made "
                             f"loop{number} (a /dev without devtmpfs?): pass make_nodes=True, "
                             f"--make-nodes, or {MAKE_NODES_ENV}=1", path)


def get_free(ctl_fd: int) -> int:
    rc = _c.lib.lc_ctl_get_free(ctl_fd)
    if rc < 0:
        raise no_free_device(-rc)
    return rc


class SharedControl:
    """What every attach in this process shares.

    One ``/dev/loop-control`` fd: flock() on it serializes GET_FREE..bind
    against other processes; ``lock`` does the same between this process's
    threads (they share the open file description, so flock cannot tell
    them apart).  A forked child reopens it so it does not share the
    parent's lock.  Also what this process knows of the kernel: whether it
    has LOOP_CONFIGURE (probed once, turned off if the kernel was caught
    ignoring part of one) and whether the environment forces the legacy
    path (read once: a missing variable costs microseconds per lookup).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._fd = -1
        self.configure_supported: Optional[bool] = None
        self._force_legacy: Optional[bool] = None
        # (major, minor shift) of loop devices, once learnt: see devnum()
        self._devnum_layout: Optional[Tuple[int, int]] = None
        # lc_attach's option to read the devnum back: until the layout is
        # learnt (an attribute, not a method: it is read on every attach)
        self.read_devnum_option: int = _c.lib.LC_ATTACH_READ_DEVNUM

    def fd(self) -> int:
        if self._fd < 0:
            self._fd = _calls.check(_c.lib.lc_ctl_open(), CONTROL_PATH)
        return self._fd

    @contextlib.contextmanager
    def held(self, deadline_ns: int = 0) -> Iterator[int]:
        """Hold the control lock (this process's threads and, by flock,
        other processes) around a decision that must stay true until a
        bind: no cooperating attach can bind in between.  Yields the
        control fd, for ``lc_attach(..., LC_ATTACH_CONTROL_HELD)``.
        ``deadline_ns`` (time.monotonic_ns(), 0: none) bounds the wait:
        TimeoutError."""
        self.acquire_thread_lock(deadline_ns)
        try:
            fd = self.fd()
            try:
                locked = _calls.flock_wait(fd, fcntl.LOCK_EX, deadline_ns)
            except OSError as e:
                raise error_from_errno(e.errno or errno.EIO, CONTROL_PATH) from None
            if not locked:
                raise control_timeout()
            try:
                yield fd
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self.lock.release()

    def acquire_thread_lock(self, deadline_ns: int = 0) -> None:
        """Take ``lock`` (this process's threads), waiting until
        ``deadline_ns`` (time.monotonic_ns(), 0: no deadline): TimeoutError."""
        if not deadline_ns:
            self.lock.acquire()
        elif not self.lock.acquire(timeout=_retry.seconds_left(deadline_ns) or 0.0):
            raise control_timeout()

    def after_fork(self) -> None:
        self.lock = threading.Lock()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def force_legacy(self) -> bool:
        """LOOPCORE_FORCE_LEGACY=1 in the environment (at the first attach)."""
        if self._force_legacy is None:
            self._force_legacy = os.environ.get(FORCE_LEGACY_ENV, "") not in ("", "0")
        return self._force_legacy

    def legacy_default(self) -> bool:
        """Whether an attach that does not choose binds the pre-5.8 way:
        forced by the environment, or no LOOP_CONFIGURE (one call: it is
        asked on every attach)."""
        force, supported = self._force_legacy, self.configure_supported
        if force is None or supported is None:
            return self.force_legacy() or not self.supports_configure()
        return force or not supported

    def supports_configure(self) -> bool:
        """Whether LOOP_CONFIGURE (Linux 5.8+) is there, probed once with
        ``loop_config.fd = -1`` on a free device: EBADF means the ioctl
        exists, EINVAL/ENOTTY/ENOSYS that it does not."""
        if self.configure_supported is None:
            with self.lock:
                self.configure_supported = self._probe()
            log.debug("LOOP_CONFIGURE %s", "present" if self.configure_supported else "absent")
        return self.configure_supported

    def _probe(self) -> bool:
        ctl = self.fd()
        for _ in range(_calls.ATTACH_ATTEMPTS):
            number = get_free(ctl)
            dev_fd = _c.lib.lc_dev_open(number, 1)
            if dev_fd in (-errno.ENXIO, -errno.ENOENT):
                missing = dev_fd == -errno.ENOENT and missing_node_error(number)
                if missing:
                    raise missing
                continue  # being torn down or removed meanwhile
            _calls.check(dev_fd, device_path(number))
            try:
                return bool(_calls.check(_c.lib.lc_probe_configure(dev_fd),
                                         device_path(number)))
            finally:
                os.close(dev_fd)
        raise LoopBusyError(errno.EBUSY, "no loop device to probe", CONTROL_PATH)

    def learn_devnum_layout(self, number: int, devnum: int) -> None:
        """Note the layout of loop device numbers from /dev/loopN's dev_t.

        The loop driver gives /dev/loopN the minor N << part_shift under
        its one major, part_shift being fls(max_part) (the module
        parameter, fixed while the module is loaded), so once one device
        confirmed it, attach computes the dev_t instead of asking statx."""
        if self._devnum_layout is not None:
            return
        max_part = _sysfs.loop_max_part()
        if max_part is None:
            return  # no loop module parameters to read: keep asking statx
        shift = max_part.bit_length()
        if number << shift == os.minor(devnum):
            self._devnum_layout = (os.major(devnum), shift)
            self.read_devnum_option = 0

    def devnum(self, number: int) -> int:
        """/dev/loopN's dev_t from the layout learnt (0 if not learnt yet)."""
        if self._devnum_layout is None:
            return 0
        major, shift = self._devnum_layout
        return os.makedev(major, number << shift)

    def distrust_configure(self) -> None:
        """The kernel ignored part of a LOOP_CONFIGURE (Linux 5.8): use the
        legacy path for the rest of the process, as systemd does."""
        log.debug("LOOP_CONFIGURE ignored settings: using the legacy path from now on")
        self.configure_supported = False


#: the process's shared control state
control = SharedControl()
os.register_at_fork(after_in_child=control.after_fork)


@translate
def kernel_supports_configure() -> bool:
    """Whether attach uses LOOP_CONFIGURE (Linux 5.8+) in this process.

    Probed once per process with ``loop_config.fd = -1`` on a free device:
    EBADF means the ioctl exists, EINVAL/ENOTTY/ENOSYS that it does not.
    It also turns False once the kernel was caught ignoring part of a
    LOOP_CONFIGURE (Linux 5.8's PARTSCAN and block size bugs).
    """
    return control.supports_configure()


class LoopControl:
    """``/dev/loop-control``: add, remove and find free loop devices.

    Use as a context manager or call :meth:`close`.
    """

    @translate
    def __init__(self) -> None:
        self._fd = _calls.check(_c.lib.lc_ctl_open(), CONTROL_PATH)

    def fileno(self) -> int:
        return self._fd

    @translate
    def add(self, number: int) -> int:
        """Create ``/dev/loopN``; FileExistsError if it exists."""
        check_number(number)
        return _calls.check(_c.lib.lc_ctl_add(self._fd, number), device_path(number))

    @translate
    def remove(self, number: int) -> None:
        """Remove ``/dev/loopN``; retries EBUSY briefly, as systemd does."""
        check_number(number)
        rc = _calls.retry_ebusy(lambda: _c.lib.lc_ctl_remove(self._fd, number),
                                _calls.REMOVE_ATTEMPTS, f"LOOP_CTL_REMOVE {number}")
        _calls.check(rc, device_path(number))

    @translate
    def get_free(self) -> int:
        """The number of a free loop device, allocating one if needed."""
        return get_free(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "LoopControl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

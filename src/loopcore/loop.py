"""Loop devices: attach, inspect, reconfigure and detach.

The C shim (``loopcore._native``) does the syscalls; this module holds the
policy: argument validation, retry constants, the LOOP_CONFIGURE probe and
the SET_FD + SET_STATUS64 fallback for kernels before 5.8, and the mapping
of errnos to exceptions.
"""
from __future__ import annotations

import dataclasses
import enum
import errno
import fcntl
import os
import stat
import threading
import time
import warnings
from typing import IO, TYPE_CHECKING, Any, Callable, Optional, Tuple, Union

from ._native import ffi, lib
from .errors import (
    DeviceBusyError,
    LoopError,
    NoFreeDeviceError,
    NotALoopDeviceError,
    error_from_errno,
)

if TYPE_CHECKING:
    from ._native import CData  # cffi cdata (struct pointers); only in the stub

__all__ = [
    "Flags",
    "LoopInfo",
    "LoopDevice",
    "LoopControl",
    "attach",
    "open",
    "detach",
    "kernel_supports_configure",
    "Backing",
    "DeviceRef",
]

_builtin_open = open

Backing = Union[str, bytes, "os.PathLike[str]", int, IO[Any]]
"""A backing file: a path, an open file descriptor or a file object."""
DeviceRef = Union[str, bytes, "os.PathLike[str]", int]
"""A loop device: its path (``/dev/loop3``) or its number (``3``)."""

LOOP_MAJOR = 7
LO_NAME_SIZE = 64
_INT_MAX = (1 << 31) - 1  # the C int the LOOP_CTL_* ioctls take
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# The largest logical block size any kernel takes (BLK_MAX_BLOCK_SIZE, 64
# KiB since Linux 6.15; the page size before).  Sizes above the page size
# are left to the running kernel to accept or refuse.
MAX_BLOCK_SIZE = 65536
FORCE_LEGACY_ENV = "LOOPCORE_FORCE_LEGACY"

# Retry policy (REFERENCE.md section 1).  Attach: systemd's 64 attempts
# with a random sleep below 10 ms + 240 ms * attempt/64; the C loop makes
# the first retry at once since a fresh GET_FREE usually names another
# device.  EAGAIN from the other loop ioctls: util-linux's 10 x 250 ms.
ATTACH_ATTEMPTS = 64
ATTACH_SLEEP_BASE_US = 10_000
ATTACH_SLEEP_SPAN_US = 240_000
EAGAIN_ATTEMPTS = 10
EAGAIN_SLEEP_S = 0.25
# LOOP_CTL_REMOVE of a device still being released: systemd's backoff.
REMOVE_ATTEMPTS = 8
REMOVE_FIRST_SLEEP_S = 0.005


class Flags(enum.IntFlag):
    """``lo_flags`` of a loop device (``LO_FLAGS_*`` in linux/loop.h)."""

    READ_ONLY = 1
    AUTOCLEAR = 4
    PARTSCAN = 8
    DIRECT_IO = 16


@dataclasses.dataclass(frozen=True)
class LoopInfo:
    """A loop device's state as the kernel reports it.

    ``backing_file`` is the full path from sysfs (``None`` when unbound);
    ``size_bytes`` is the device's size; ``diskseq`` is ``None`` on kernels
    before 5.15.
    """

    number: int
    path: str
    backing_file: Optional[str]
    backing_devnum: int
    backing_inode: int
    offset: int
    size_limit: int
    flags: Flags
    block_size: int
    size_bytes: int
    diskseq: Optional[int]

    @property
    def read_only(self) -> bool:
        return Flags.READ_ONLY in self.flags

    @property
    def autoclear(self) -> bool:
        return Flags.AUTOCLEAR in self.flags

    @property
    def partscan(self) -> bool:
        return Flags.PARTSCAN in self.flags

    @property
    def direct_io(self) -> bool:
        return Flags.DIRECT_IO in self.flags


_READ_ONLY, _AUTOCLEAR, _PARTSCAN, _DIRECT_IO = (int(f) for f in Flags)
_ALL_FLAGS = _READ_ONLY | _AUTOCLEAR | _PARTSCAN | _DIRECT_IO


def device_path(number: int) -> str:
    """``/dev/loopN`` for device number N."""
    return f"/dev/loop{number}"


def sysfs_backing_file(number: int) -> Optional[str]:
    """The full backing path from sysfs, or None if the device is unbound."""
    try:
        with _builtin_open(f"/sys/block/loop{number}/loop/backing_file", "rb") as f:
            raw = f.read()
    except OSError as e:
        # ENODEV/ENXIO: the device is being removed while we look
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENODEV, errno.ENXIO):
            return None
        raise
    return os.fsdecode(raw[:-1] if raw.endswith(b"\n") else raw)


def _check(rc: int, filename: object = None, message: Optional[str] = None) -> int:
    """Raise the matching OSError for a negative shim return value."""
    if rc < 0:
        raise error_from_errno(-rc, filename, message)  # type: ignore[arg-type]
    return rc


def _retry_eagain(call: Callable[[], int]) -> int:
    """Run a loop ioctl wrapper, retrying EAGAIN (kernel >= 5.0 may say it)."""
    for _ in range(EAGAIN_ATTEMPTS - 1):
        rc = call()
        if rc != -errno.EAGAIN:
            return rc
        time.sleep(EAGAIN_SLEEP_S)
    return call()


# --- /dev/loop-control ----------------------------------------------------

class _SharedControl:
    """One /dev/loop-control fd per process for the attach hot path.

    flock() on it serializes GET_FREE..bind against other processes; the
    threading lock does the same between this process's threads (they share
    the open file description, so flock cannot tell them apart).  A forked
    child reopens it so it does not share the parent's lock.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._fd = -1

    def fd(self) -> int:
        if self._fd < 0:
            self._fd = _check(lib.lc_ctl_open(), "/dev/loop-control")
        return self._fd

    def after_fork(self) -> None:
        self.lock = threading.Lock()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


_control = _SharedControl()
os.register_at_fork(after_in_child=_control.after_fork)

_configure_supported: Optional[bool] = None


def _no_free_device(err: int) -> NoFreeDeviceError:
    return NoFreeDeviceError(err, f"no free loop device: {os.strerror(err)}", "/dev/loop-control")


def _get_free(ctl_fd: int) -> int:
    rc = lib.lc_ctl_get_free(ctl_fd)
    if rc < 0:
        raise _no_free_device(-rc)
    return rc


def kernel_supports_configure() -> bool:
    """Whether attach uses LOOP_CONFIGURE (Linux 5.8+) in this process.

    Probed once per process with ``loop_config.fd = -1`` on a free device:
    EBADF means the ioctl exists, EINVAL/ENOTTY/ENOSYS that it does not.
    It also turns False once the kernel was caught ignoring part of a
    LOOP_CONFIGURE (Linux 5.8's PARTSCAN and block size bugs).
    """
    global _configure_supported
    if _configure_supported is None:
        with _control.lock:
            ctl = _control.fd()
            for _ in range(ATTACH_ATTEMPTS):
                number = _get_free(ctl)
                dev_fd = lib.lc_dev_open(number, 1)
                if dev_fd in (-errno.ENXIO, -errno.ENOENT):
                    continue  # being torn down or not created yet
                _check(dev_fd, device_path(number))
                try:
                    answer = _check(lib.lc_probe_configure(dev_fd), device_path(number))
                finally:
                    os.close(dev_fd)
                _configure_supported = bool(answer)
                break
            else:
                raise DeviceBusyError(errno.EBUSY, "no loop device to probe", "/dev/loop-control")
    return _configure_supported


class LoopControl:
    """``/dev/loop-control``: add, remove and find free loop devices.

    Use as a context manager or call :meth:`close`.
    """

    def __init__(self) -> None:
        self._fd = _check(lib.lc_ctl_open(), "/dev/loop-control")

    def fileno(self) -> int:
        return self._fd

    def add(self, number: int) -> int:
        """Create ``/dev/loopN``; FileExistsError if it exists."""
        check_number(number)
        return _check(lib.lc_ctl_add(self._fd, number), device_path(number))

    def remove(self, number: int) -> None:
        """Remove ``/dev/loopN``; retries EBUSY briefly, as systemd does."""
        check_number(number)
        delay = REMOVE_FIRST_SLEEP_S
        for _ in range(REMOVE_ATTEMPTS - 1):
            rc = lib.lc_ctl_remove(self._fd, number)
            if rc != -errno.EBUSY:
                break
            time.sleep(delay)
            delay *= 2
        else:
            rc = lib.lc_ctl_remove(self._fd, number)
        _check(rc, device_path(number))

    def get_free(self) -> int:
        """The number of a free loop device, allocating one if needed."""
        return _get_free(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "LoopControl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- validation -------------------------------------------------------------

def check_number(number: int) -> None:
    """ValueError unless ``number`` is a valid loop device number."""
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise ValueError(f"loop device number must be a non-negative int, not {number!r}")
    # The LOOP_CTL_* ioctls take a C int: a bigger number would be an
    # OverflowError out of cffi, and no loop device has one anyway.
    if number > _INT_MAX:
        raise ValueError(f"loop device number is too large: {number}")


def _check_block_size(block_size: int, *, allow_zero: bool) -> None:
    if not isinstance(block_size, int) or isinstance(block_size, bool):
        raise TypeError(f"block_size must be an int, not {type(block_size).__name__}")
    if block_size == 0 and allow_zero:
        return
    if block_size < 512 or block_size > MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two from 512 to {MAX_BLOCK_SIZE}, "
                         f"not {block_size}")


def _block_size_refused(block_size: int, error: OSError) -> ValueError:
    """The ValueError for a block size the kernel refused (EINVAL): kernels
    before 6.15 take no block size above the page size."""
    return ValueError(f"block_size {block_size}: this kernel refuses it ({error.strerror}); "
                      f"every kernel takes powers of two from 512 to the page size, {PAGE_SIZE}")


def _check_fd(fd: int) -> None:
    """ValueError unless ``fd`` can be a file descriptor (a C int, >= 0)."""
    if fd < 0 or fd > _INT_MAX:
        raise ValueError(f"backing fd must be from 0 to {_INT_MAX}, not {fd}")


def _check_timeout(timeout: Optional[float]) -> None:
    if timeout is None:
        return
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise TypeError(f"timeout must be a number of seconds or None, not "
                        f"{type(timeout).__name__}")
    if not timeout >= 0:  # also NaN
        raise ValueError(f"timeout must not be negative, not {timeout}")


def _check_nonneg(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value}")
    if value >= 1 << 63:
        raise ValueError(f"{name} is too large: {value}")


def _device_from_ref(ref: DeviceRef) -> str:
    if isinstance(ref, bool):
        raise TypeError("a loop device is a path or a number, not a bool")
    if isinstance(ref, int):
        check_number(ref)
        return device_path(ref)
    if isinstance(ref, (str, bytes, os.PathLike)):
        return os.fsdecode(ref)
    raise TypeError(f"a loop device is a path or a number, not {type(ref).__name__}")


# --- backing files ----------------------------------------------------------

def _fd_name(fd: int) -> str:
    """The path behind an fd, for the kernel's ``lo_file_name`` and for
    errors (losetup records a path too); ``fd N`` when it has none."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"fd {fd}"
    return target if target.startswith("/") else f"fd {fd}"


# O_NONBLOCK: opening a FIFO read-only would otherwise wait for a writer
# forever; attach refuses anything but regular files and block devices
# right after, and clears the flag on what it keeps.
_BACKING_OPEN_FLAGS = os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _open_backing(backing: Backing, read_only: bool) -> Tuple[int, bool, str]:
    """Return (fd, owned, name) for a backing path, fd or file object."""
    if isinstance(backing, bool):
        raise TypeError("backing must be a path, an fd or a file object, not a bool")
    if isinstance(backing, int):
        _check_fd(backing)
        return backing, False, _fd_name(backing)
    if isinstance(backing, (str, bytes, os.PathLike)):
        name = os.fsdecode(backing)
        if not name:
            raise ValueError("backing path is empty")
        fd = os.open(name, (os.O_RDONLY if read_only else os.O_RDWR) | _BACKING_OPEN_FLAGS)
        return fd, True, name if name.startswith("/") else os.path.abspath(name)
    fileno = getattr(backing, "fileno", None)
    if fileno is None:
        raise TypeError(
            f"backing must be a path, an fd or a file object, not {type(backing).__name__}")
    fd = fileno()
    _check_fd(fd)
    given = getattr(backing, "name", None)
    if isinstance(given, (str, bytes)) and given:
        return fd, False, os.path.abspath(os.fsdecode(given))
    return fd, False, _fd_name(fd)


def _stat_backing(fd: int, owned: bool, name: str) -> os.stat_result:
    """fstat the backing fd (naming the file in the error); for an fd
    loopcore opened, clear the O_NONBLOCK it was opened with."""
    try:
        st = os.fstat(fd)
    except OSError as e:
        raise error_from_errno(e.errno or errno.EBADF, name) from None
    if owned and (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        fcntl.fcntl(fd, fcntl.F_SETFL, 0)
    return st


def _backing_size(fd: int, st: os.stat_result, name: str) -> int:
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if stat.S_ISBLK(st.st_mode):
        size = ffi.new("uint64_t *")
        _check(lib.lc_get_size64(fd, size), name)
        return int(size[0])
    raise LoopError(errno.EINVAL, "backing file is not a regular file or block device", name)


def _file_name_field(name: str) -> bytes:
    """The 64-byte ``lo_file_name`` (NUL-terminated, truncated like losetup);
    empty for an fd with no path to record (``fd N`` means nothing to anyone
    else)."""
    if not name.startswith("/"):
        return b""
    return os.fsencode(name)[: LO_NAME_SIZE - 1]


def _partial_file_name(raw: bytes) -> str:
    """``lo_file_name`` as a name, its last byte ``*`` when all 63 are used
    and it may have been cut (util-linux's mark)."""
    name = bytes(raw).split(b"\0", 1)[0]
    if len(name) >= LO_NAME_SIZE - 1:
        name = name[: LO_NAME_SIZE - 2] + b"*"
    return os.fsdecode(name)


# --- the device -------------------------------------------------------------

class LoopDevice:
    """An open loop device.  Detaches on leaving a ``with`` block.

    ``close()`` only closes loopcore's fd (an autoclear device then detaches
    when nobody else holds it open); ``detach()`` unbinds the backing file.
    """

    __slots__ = ("_fd", "number", "devnum", "diskseq", "__weakref__")

    def __init__(self, number: int, fd: int, devnum: int, diskseq: Optional[int]) -> None:
        self._fd = fd
        #: N of /dev/loopN
        self.number = number
        #: the device's dev_t
        self.devnum = devnum
        #: the kernel's disk sequence number (None before Linux 5.15)
        self.diskseq = diskseq

    @property
    def path(self) -> str:
        return device_path(self.number)

    @property
    def backing_file(self) -> Optional[str]:
        """The backing file's full path (from sysfs), None if unbound.

        A path longer than sysfs shows (a page) comes from the kernel's
        64-byte ``lo_file_name`` instead, ending in ``*`` where cut.
        """
        try:
            return sysfs_backing_file(self.number)
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG:
                raise
        return _partial_file_name(ffi.buffer(self._status().lo_file_name)[:])

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
        status = ffi.new("struct lc_loop_info64 *")
        state = ffi.new("struct lc_attach_result *")
        _check(lib.lc_read_state(self._fd, status, state), self.path)
        return status, state

    def _status(self) -> CData:
        self._check_open()
        info = ffi.new("struct lc_loop_info64 *")
        _check(lib.lc_get_status64(self._fd, info), self.path)
        return info

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
        )

    def partitions(self) -> list[str]:
        """Paths of this device's partitions (``/dev/loopNpM``), from sysfs."""
        from .discovery import partitions
        return partitions(self.number)

    def wait_for_partitions(self, count: int, timeout: float = 5.0) -> list[str]:
        """Wait until ``count`` partitions and their nodes exist; return their paths."""
        from .discovery import wait_for_partitions
        return wait_for_partitions(self.number, count, timeout)

    def set_capacity(self) -> None:
        """Re-read the backing file's size (after it grew or shrank)."""
        self._check_open()
        _check(_retry_eagain(lambda: lib.lc_set_capacity(self._fd)), self.path)

    def set_block_size(self, block_size: int) -> None:
        """Set the logical block size: a power of two from 512 to the page
        size, or up to 64 KiB where the kernel takes it (6.15+)."""
        _check_block_size(block_size, allow_zero=False)
        self._check_open()
        rc = _retry_eagain(lambda: lib.lc_set_block_size(self._fd, block_size))
        if rc == -errno.EINVAL and block_size > PAGE_SIZE:
            raise _block_size_refused(block_size, error_from_errno(errno.EINVAL, self.path))
        _check(rc, self.path)

    def set_direct_io(self, enable: bool) -> None:
        """Switch direct I/O to the backing file on or off.

        The kernel refuses (EINVAL) when the backing file or offset does
        not allow direct I/O.
        """
        self._check_open()
        _check(_retry_eagain(lambda: lib.lc_set_direct_io(self._fd, 1 if enable else 0)),
               self.path)

    def set_autoclear(self, enable: bool) -> None:
        """Set or clear AUTOCLEAR (detach when the last opener closes)."""
        status = self._status()
        if enable:
            status.lo_flags |= Flags.AUTOCLEAR
        else:
            status.lo_flags &= ~Flags.AUTOCLEAR
        _check(_retry_eagain(lambda: lib.lc_set_status64(self._fd, status)), self.path)

    def change_fd(self, backing: Backing) -> None:
        """Swap the backing file of a read-only device for one of the same size.

        The kernel allows this only on read-only devices (it is meant for
        replacing a live CD image); both conditions are checked first.
        """
        status, state = self._state()
        if not status.lo_flags & Flags.READ_ONLY:
            raise ValueError(f"{self.path}: change_fd needs a read-only device")
        fd, owned, name = _open_backing(backing, read_only=True)
        try:
            # The kernel wants the same device size from the new file.
            new_size = _expected_size(_backing_size(fd, _stat_backing(fd, owned, name), name),
                                      int(status.lo_offset), int(status.lo_sizelimit))
            current = int(state.size_bytes)
            if new_size != current:
                raise ValueError(f"{name}: would give a {new_size}-byte device, "
                                 f"the current one has {current}")
            _check(lib.lc_change_fd(self._fd, fd), self.path)
        finally:
            if owned:
                os.close(fd)

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
        """
        self._check_open()
        step = ffi.new("uint32_t *")
        # EAGAIN (the kernel is busy) and EINTR (a signal: its handler runs
        # between tries) share util-linux's budget of 10 tries; only EAGAIN
        # sleeps.  A detach that keeps failing raises, still bound.
        for attempt in range(EAGAIN_ATTEMPTS):
            rc = lib.lc_detach_fd(self._fd, step)
            if rc not in (-errno.EAGAIN, -errno.EINTR) or attempt == EAGAIN_ATTEMPTS - 1:
                break
            if rc == -errno.EAGAIN:
                time.sleep(EAGAIN_SLEEP_S)
        if rc == 0:
            self._fd = -1
            return
        err = -rc
        if step[0] == lib.LC_STEP_WRITE_BACK:
            raise error_from_errno(err, self.path, f"{os.strerror(err)}: the device's cached "
                                   "writes could not be written back; it stays bound")
        if err == errno.ENXIO and self._unbound():
            self.close()  # nothing bound to keep open for
        raise error_from_errno(err, self.path)

    def _unbound(self) -> bool:
        """Whether the kernel says this device has no backing file."""
        info = ffi.new("struct lc_loop_info64 *")
        return bool(lib.lc_get_status64(self._fd, info) == -errno.ENXIO)

    def _unbind(self) -> None:
        """Unbind and close a device attach() bound moments ago and is not
        handing out: nobody wrote to it, so there is nothing to write back,
        and a failure to unbind could not be acted on."""
        fd, self._fd = self._fd, -1
        _retry_eagain(lambda: lib.lc_clr_fd(fd))
        os.close(fd)

    def close(self) -> None:
        """Close loopcore's fd without detaching."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> "LoopDevice":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._fd < 0:
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

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"fd={self._fd}"
        return f"<LoopDevice {self.path} {state}>"


# --- attach ------------------------------------------------------------------

_force_legacy_env: Optional[bool] = None


def _use_legacy(legacy: Optional[bool]) -> bool:
    """The attach path: the caller's choice, else LOOPCORE_FORCE_LEGACY (read
    once, at the first attach: a missing variable costs microseconds per
    lookup), else the probe."""
    global _force_legacy_env
    if legacy is not None:
        return legacy
    if _force_legacy_env is None:
        _force_legacy_env = os.environ.get(FORCE_LEGACY_ENV, "") not in ("", "0")
    return _force_legacy_env or not kernel_supports_configure()


def _expected_size(backing_size: int, offset: int, size_limit: int) -> int:
    size = max(backing_size - offset, 0)
    if size_limit:
        size = min(size, size_limit)
    return size & ~511


_retry: Optional[Tuple[Tuple[int, int, int], CData]] = None


def _lock_timeout(deadline_ns: int) -> TimeoutError:
    return TimeoutError(errno.ETIMEDOUT, "timed out waiting for another attach to release "
                        "/dev/loop-control, or for a free loop device", "/dev/loop-control")


def _bind(backing_fd: int, use_configure: bool, flags: int, offset: int, size_limit: int,
          block_size: int, name: str, deadline_ns: int = 0) -> CData:
    """One C call: lock, GET_FREE, open, bind, read back.  Raises on failure.

    ``deadline_ns`` (time.monotonic_ns(), 0 for none) bounds the waits.
    """
    global _retry
    policy = (ATTACH_ATTEMPTS, ATTACH_SLEEP_BASE_US, ATTACH_SLEEP_SPAN_US)
    if _retry is None or _retry[0] != policy:
        _retry = (policy, ffi.new("struct lc_retry *", policy))
    result = ffi.new("struct lc_attach_result *")
    file_name = _file_name_field(name)
    attempt = 0
    while True:
        if deadline_ns:
            left = (deadline_ns - time.monotonic_ns()) / 1e9
            if not _control.lock.acquire(timeout=max(left, 0.0)):
                raise _lock_timeout(deadline_ns)
        else:
            _control.lock.acquire()
        try:
            rc = lib.lc_attach(_control.fd(), backing_fd, use_configure, flags, offset,
                               size_limit, block_size, file_name, _retry[1], attempt,
                               deadline_ns, result)
        finally:
            _control.lock.release()
        if rc != -errno.EINTR:
            break
        # A signal interrupted a wait (PEP 475): its Python handler runs
        # before the next loop iteration and may raise (Ctrl-C); if it does
        # not, carry on from the attempt the C loop stopped at.
        attempt = result.attempts
        if deadline_ns and time.monotonic_ns() >= deadline_ns:
            raise _lock_timeout(deadline_ns)
    if rc >= 0:
        return result
    step = result.failed_step
    if rc == -errno.ETIMEDOUT and step in (lib.LC_STEP_LOCK, lib.LC_STEP_BACKOFF):
        raise _lock_timeout(deadline_ns)
    if step == lib.LC_STEP_GET_FREE:
        raise _no_free_device(-rc)
    if rc == -errno.EBUSY and step == lib.LC_STEP_BIND:
        raise DeviceBusyError(errno.EBUSY, f"every free loop device was taken by others "
                              f"({result.attempts} attempts)", name)
    if step == lib.LC_STEP_OPEN and rc in (-errno.ENXIO, -errno.ENOENT):
        raise DeviceBusyError(-rc, f"free loop devices kept vanishing "
                              f"({result.attempts} attempts)", device_path(result.number))
    if step in (lib.LC_STEP_OPEN, lib.LC_STEP_READ_BACK) and result.number >= 0:
        raise error_from_errno(-rc, device_path(result.number))
    if step == lib.LC_STEP_LOCK:
        raise error_from_errno(-rc, "/dev/loop-control")
    raise error_from_errno(-rc, name)


def _finish_legacy(dev_fd: int, flags: int, offset: int, size_limit: int,
                   block_size: int, name: str) -> None:
    """After LOOP_SET_FD: status, block size, direct I/O (pre-5.8 kernels)."""
    info = ffi.new("struct lc_loop_info64 *")
    info.lo_offset = offset
    info.lo_sizelimit = size_limit
    # READ_ONLY comes from the fd's open mode; DIRECT_IO has its own ioctl.
    info.lo_flags = flags & (_AUTOCLEAR | _PARTSCAN)
    info.lo_file_name = _file_name_field(name)
    _check(_retry_eagain(lambda: lib.lc_set_status64(dev_fd, info)), name)
    if block_size:
        _check(_retry_eagain(lambda: lib.lc_set_block_size(dev_fd, block_size)), name)
    if flags & _DIRECT_IO:
        # Best effort, like LOOP_CONFIGURE: the kernel says EINVAL when the
        # backing file or the offset does not allow direct I/O.
        rc = _retry_eagain(lambda: lib.lc_set_direct_io(dev_fd, 1))
        if rc not in (0, -errno.EINVAL):
            _check(rc, name)


def attach(
    backing: Backing,
    *,
    read_only: bool = False,
    autoclear: bool = False,
    partscan: bool = False,
    direct_io: bool = True,
    block_size: int = 0,
    offset: int = 0,
    size_limit: int = 0,
    legacy: Optional[bool] = None,
    timeout: Optional[float] = None,
) -> LoopDevice:
    """Bind ``backing`` to a free loop device and return it, open.

    ``backing`` is a path, an fd or a file object; a path is opened
    read-write unless ``read_only``.  ``direct_io`` asks for direct I/O
    where the backing file allows it and falls back to buffered I/O where
    it does not (``info().direct_io`` says which).  ``block_size`` 0 keeps
    the kernel's default (512).  ``offset`` and ``size_limit`` are bytes.

    ``legacy`` forces (True) or forbids (False) the pre-5.8 path
    (LOOP_SET_FD + LOOP_SET_STATUS64); None picks LOOP_CONFIGURE when the
    kernel has it, unless the environment sets LOOPCORE_FORCE_LEGACY=1.

    ``timeout`` bounds, in seconds, the time spent waiting for other
    attaches to release ``/dev/loop-control`` and for busy devices; None
    (the default, as systemd) waits as long as it takes, and TimeoutError
    says it ran out.  A signal handler that returns does not interrupt
    the wait; one that raises (Ctrl-C) does, at once.

    Raises ValueError/TypeError for bad arguments before any syscall, an
    OSError (PermissionError for a read-write attach of a backing that
    cannot be written) otherwise; on failure nothing stays bound.  A
    block size above the page size is up to the kernel: ValueError if it
    refuses.
    """
    _check_nonneg("offset", offset)
    _check_nonneg("size_limit", size_limit)
    _check_block_size(block_size, allow_zero=True)
    _check_timeout(timeout)
    deadline_ns = 0 if timeout is None else time.monotonic_ns() + int(timeout * 1e9)
    # Plain ints on the hot path: IntFlag arithmetic costs microseconds.
    flags = ((_READ_ONLY if read_only else 0) | (_AUTOCLEAR if autoclear else 0)
             | (_PARTSCAN if partscan else 0) | (_DIRECT_IO if direct_io else 0))

    backing_fd, owned, name = _open_backing(backing, read_only)
    try:
        st = _stat_backing(backing_fd, owned, name)
        backing_size = _backing_size(backing_fd, st, name)
        if offset >= backing_size > 0 or offset > backing_size:
            raise ValueError(f"{name}: offset {offset} is at or past the end "
                             f"({backing_size} bytes)")
        if not read_only and not owned:  # a caller's fd may be open read-only
            if fcntl.fcntl(backing_fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
                raise PermissionError(errno.EACCES,
                                      "backing is open read-only; pass read_only=True", name)
        if flags & _DIRECT_IO and lib.lc_direct_io_refused(backing_fd) == 1:
            flags &= ~_DIRECT_IO  # the kernel would say yes, then fail every I/O
        use_legacy = _use_legacy(legacy)
        try:
            device, state = (_attach_legacy if use_legacy else _attach_configure)(
                backing_fd, flags, offset, size_limit, block_size, name, deadline_ns)
        except LoopError as e:
            if e.errno == errno.EINVAL and block_size > PAGE_SIZE:
                raise _block_size_refused(block_size, e) from None
            raise
        ignored = _ignored_settings(state, flags, block_size)
        if ignored and not use_legacy:
            # Linux 5.8 could ignore LOOP_CONFIGURE's PARTSCAN and block size
            # (fixed in 5.9).  Like systemd: distrust LOOP_CONFIGURE for the
            # rest of the process and bind a new device the old way (the
            # detached one may still be winding down).
            device._unbind()
            _distrust_configure()
            device, state = _attach_legacy(backing_fd, flags, offset, size_limit,
                                           block_size, name, deadline_ns)
            ignored = _ignored_settings(state, flags, block_size)
        try:
            if ignored:
                raise LoopError(errno.EINVAL, f"the kernel ignored {ignored}", name)
            if state.flags & _READ_ONLY and not read_only:
                raise PermissionError(errno.EROFS, "the kernel made the device read-only: "
                                      "the backing file cannot be written", name)
            if state.disk_read_only and not read_only:
                # A BLKROSET policy (blockdev --setro) outlives detach: the
                # last user of this device number left it read-only.
                _check(lib.lc_set_read_only(device.fileno(), 0), device.path)
            if state.size_bytes != _expected_size(backing_size, offset, size_limit):
                # util-linux: some kernels miss offset/sizelimit in the first size.
                _check(_retry_eagain(lambda: lib.lc_set_capacity(device.fileno())), name)
        except BaseException:
            device._unbind()
            raise
        return device
    finally:
        if owned:
            os.close(backing_fd)


def _device_from_result(result: CData) -> LoopDevice:
    return LoopDevice(int(result.number), int(result.fd), int(result.devnum),
                      int(result.diskseq) or None)


def _attach_configure(backing_fd: int, flags: int, offset: int, size_limit: int,
                      block_size: int, name: str, deadline_ns: int = 0
                      ) -> Tuple[LoopDevice, CData]:
    """LOOP_CONFIGURE: bind and configure in one ioctl, inside lc_attach."""
    try:
        result = _bind(backing_fd, True, flags, offset, size_limit, block_size, name,
                       deadline_ns)
    except LoopError as e:
        # Kernels that refuse LO_FLAGS_DIRECT_IO outright for a backing file
        # without O_DIRECT support say EINVAL: fall back to buffered I/O.
        if e.errno != errno.EINVAL or not flags & _DIRECT_IO:
            raise
        result = _bind(backing_fd, True, flags & ~_DIRECT_IO, offset, size_limit, block_size,
                       name, deadline_ns)
    return _device_from_result(result), result


def _attach_legacy(backing_fd: int, flags: int, offset: int, size_limit: int,
                   block_size: int, name: str, deadline_ns: int = 0
                   ) -> Tuple[LoopDevice, CData]:
    """LOOP_SET_FD inside lc_attach, then the settings one ioctl at a time."""
    # flags: READ_ONLY only, which picks the device's open mode for SET_FD
    result = _bind(backing_fd, False, flags & _READ_ONLY, 0, 0, 0, name, deadline_ns)
    device = _device_from_result(result)
    try:
        _finish_legacy(device.fileno(), flags, offset, size_limit, block_size, name)
        _, state = device._state()
        device.diskseq = int(state.diskseq) or None
    except BaseException:
        device._unbind()  # nothing stays bound
        raise
    return device, state


def _ignored_settings(state: CData, flags: int, block_size: int) -> str:
    """What the kernel left out of the requested configuration ('' if nothing)."""
    ignored = []
    if flags & _PARTSCAN and not state.flags & _PARTSCAN:
        ignored.append("PARTSCAN")
    if block_size and state.block_size != block_size:
        ignored.append(f"block size {block_size} (got {state.block_size})")
    return ", ".join(ignored)


def _distrust_configure() -> None:
    global _configure_supported
    _configure_supported = False


# --- existing devices --------------------------------------------------------

def loop_number_of(path: str, st: os.stat_result) -> int:
    """N for a loop device node, or raise NotALoopDeviceError."""
    if not stat.S_ISBLK(st.st_mode):
        raise NotALoopDeviceError(errno.ENOTBLK, "not a loop device", path)
    # sysfs names the disk: loopN for a loop device (loopNpM is a partition).
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    try:
        name = os.path.basename(os.readlink(f"/sys/dev/block/{major}:{minor}"))
    except OSError:
        name = ""
    if not (name.startswith("loop") and name[4:].isdigit()):
        raise NotALoopDeviceError(errno.ENODEV, "not a loop device", path)
    return int(name[4:])


def open(path: DeviceRef) -> LoopDevice:  # noqa: A001 - mirrors os.open's role
    """Open an existing loop device by path (or number).

    Opens read-write, falling back to read-only where the node or the
    device refuses writing.  NotALoopDeviceError for anything else.
    """
    name = _device_from_ref(path)
    st = os.stat(name)
    number = loop_number_of(name, st)
    try:
        fd = os.open(name, os.O_RDWR)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise
        fd = os.open(name, os.O_RDONLY)
    seq = ffi.new("uint64_t *")
    diskseq = int(seq[0]) if lib.lc_get_diskseq(fd, seq) == 0 else 0
    return LoopDevice(number, fd, st.st_rdev, diskseq or None)


def detach(path_or_number: DeviceRef) -> None:
    """Detach a loop device by path or number (``losetup -d``)."""
    device = open(path_or_number)
    try:
        device.detach()
    finally:
        device.close()  # still open if detach failed

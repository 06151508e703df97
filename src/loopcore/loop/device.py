"""An attached loop device (:class:`LoopDevice`), and :func:`open` and
:func:`detach` for devices that exist already."""
from __future__ import annotations

import errno
import os
import stat
import time
import warnings
from typing import TYPE_CHECKING, List, Optional, Tuple, Union

from .. import _c, _sysfs
from .._validate import check_int, check_number
from ..errors import (
    LoopError,
    NotALoopDeviceError,
    TypeError,
    ValueError,
    error_from_errno,
    translate,
)
from . import _calls, discovery
from .backing import Backing, BackingFile, expected_size, partial_file_name
from .info import FROM_DEVICE, MAX_BLOCK_SIZE, PAGE_SIZE, Flags, LoopInfo, device_path

if TYPE_CHECKING:
    from .._native import CData  # cffi cdata (struct pointers); only in the stub

__all__ = ["DeviceRef", "LoopDevice", "open", "detach", "loop_number_of",
           "check_block_size", "block_size_refused"]

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


def block_size_refused(block_size: int, error: OSError) -> ValueError:
    """The ValueError for a block size the kernel refused (EINVAL): kernels
    before 6.15 take no block size above the page size."""
    return ValueError(f"block_size {block_size}: this kernel refuses it ({error.strerror}); "
                      f"every kernel takes powers of two from 512 to the page size, {PAGE_SIZE}")


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

    @translate
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
        step = _c.ffi.new("uint32_t *")
        # EAGAIN (the kernel is busy) and EINTR (a signal: its handler runs
        # between tries) share util-linux's budget of 10 tries; only EAGAIN
        # sleeps.  A detach that keeps failing raises, still bound.
        for attempt in range(_calls.EAGAIN_ATTEMPTS):
            rc = _c.lib.lc_detach_fd(self._fd, step)
            if rc not in (-errno.EAGAIN, -errno.EINTR) or attempt == _calls.EAGAIN_ATTEMPTS - 1:
                break
            if rc == -errno.EAGAIN:
                time.sleep(_calls.EAGAIN_SLEEP_S)
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

    def _unbound(self) -> bool:
        """Whether the kernel says this device has no backing file."""
        info = _c.ffi.new("struct lc_loop_info64 *")
        return bool(_c.lib.lc_get_status64(self._fd, info) == -errno.ENXIO)

    def _unbind(self) -> None:
        """Unbind and close a device attach() bound moments ago and is not
        handing out: nobody wrote to it, so there is nothing to write back,
        and a failure to unbind could not be acted on."""
        fd, self._fd = self._fd, -1
        _calls.retry_eagain(lambda: _c.lib.lc_clr_fd(fd))
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
    seq = _c.ffi.new("uint64_t *")
    diskseq = int(seq[0]) if _c.lib.lc_get_diskseq(fd, seq) == 0 else 0
    return LoopDevice(number, fd, st.st_rdev, diskseq or None)


@translate
def detach(path_or_number: DeviceRef) -> None:
    """Detach a loop device by path or number (``losetup -d``)."""
    device = open(path_or_number)
    try:
        device.detach()
    finally:
        device.close()  # still open if detach failed

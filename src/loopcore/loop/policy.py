"""The attach policy, top to bottom.

:func:`attach` checks its arguments, opens the backing file, picks the
path (LOOP_CONFIGURE on 5.8+, else the legacy LOOP_SET_FD +
LOOP_SET_STATUS64; forced either way by ``legacy=`` or
LOOPCORE_FORCE_LEGACY=1), binds in one C call (:func:`bind`: lock,
GET_FREE, open, bind, read back, with systemd's retries), checks what the
kernel did -- distrusting LOOP_CONFIGURE for the process if it ignored
settings, as Linux 5.8 could -- and fixes the rest (a stale BLKROSET, a
size that missed the offset).  On any failure nothing stays bound.
"""
from __future__ import annotations

import errno
import logging
import time
from typing import TYPE_CHECKING, Optional, Tuple

from .. import _c
from .._log import get_logger
from .._validate import check_int, check_timeout
from ..errors import (
    LoopBusyError,
    LoopError,
    PermissionError,
    TimeoutError,
    ValueError,
    error_from_errno,
    translate,
)
from . import _calls
from .backing import Backing, BackingFile, expected_size
from .control import CONTROL_PATH, control, no_free_device
from .device import LoopDevice, block_size_refused, check_block_size
from .info import PAGE_SIZE, Flags, device_path

if TYPE_CHECKING:
    from .._native import CData

__all__ = ["attach"]

log = get_logger("loop")

# Plain ints on the hot path: IntFlag arithmetic costs microseconds.
_READ_ONLY, _AUTOCLEAR, _PARTSCAN, _DIRECT_IO = (int(f) for f in Flags)
_S64_MAX = (1 << 63) - 1


@translate
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
    check_int("offset", offset, maximum=_S64_MAX)
    check_int("size_limit", size_limit, maximum=_S64_MAX)
    check_block_size(block_size, allow_zero=True)
    check_timeout(timeout)
    deadline_ns = 0 if timeout is None else time.monotonic_ns() + int(timeout * 1e9)
    flags = ((_READ_ONLY if read_only else 0) | (_AUTOCLEAR if autoclear else 0)
             | (_PARTSCAN if partscan else 0) | (_DIRECT_IO if direct_io else 0))

    with BackingFile.open(backing, read_only) as bf:
        if offset >= bf.size > 0 or offset > bf.size:
            raise ValueError(f"{bf.name}: offset {offset} is at or past the end "
                             f"({bf.size} bytes)")
        if not read_only and not bf.owned and not bf.writable():
            raise PermissionError(errno.EACCES,
                                  "backing is open read-only; pass read_only=True", bf.name)
        if flags & _DIRECT_IO and _c.lib.lc_direct_io_refused(bf.fd) == 1:
            # overlayfs over a file system without O_DIRECT: the kernel
            # would say yes, then fail every I/O
            log.debug("%s: direct I/O refused below overlayfs: buffered", bf.name)
            flags &= ~_DIRECT_IO
        use_legacy = legacy if legacy is not None else (
            control.force_legacy() or not control.supports_configure())
        try:
            device, state = (_attach_legacy if use_legacy else _attach_configure)(
                bf, flags, offset, size_limit, block_size, deadline_ns)
        except LoopError as e:
            if e.errno == errno.EINVAL and block_size > PAGE_SIZE:
                raise block_size_refused(block_size, e) from None
            raise
        ignored = _ignored_settings(state, flags, block_size)
        if ignored and not use_legacy:
            # Linux 5.8 could ignore LOOP_CONFIGURE's PARTSCAN and block size
            # (fixed in 5.9).  Like systemd: distrust LOOP_CONFIGURE for the
            # rest of the process and bind a new device the old way (the
            # detached one may still be winding down).
            device._unbind()
            control.distrust_configure()
            device, state = _attach_legacy(bf, flags, offset, size_limit, block_size,
                                           deadline_ns)
            ignored = _ignored_settings(state, flags, block_size)
        try:
            if ignored:
                raise LoopError(errno.EINVAL, f"the kernel ignored {ignored}", bf.name)
            if state.flags & _READ_ONLY and not read_only:
                raise PermissionError(errno.EROFS, "the kernel made the device read-only: "
                                      "the backing file cannot be written", bf.name)
            if state.disk_read_only and not read_only:
                # A BLKROSET policy (blockdev --setro) outlives detach: the
                # last user of this device number left it read-only.
                _calls.check(_c.lib.lc_set_read_only(device.fileno(), 0), device.path)
            if state.size_bytes != expected_size(bf.size, offset, size_limit):
                # util-linux: some kernels miss offset/sizelimit in the first size.
                _calls.check(_calls.retry_eagain(
                    lambda: _c.lib.lc_set_capacity(device.fileno())), bf.name)
        except BaseException:
            device._unbind()
            raise
        return device


def _attach_configure(bf: BackingFile, flags: int, offset: int, size_limit: int,
                      block_size: int, deadline_ns: int) -> Tuple[LoopDevice, CData]:
    """LOOP_CONFIGURE: bind and configure in one ioctl, inside lc_attach."""
    try:
        result = bind(bf, True, flags, offset, size_limit, block_size, deadline_ns)
    except LoopError as e:
        # Kernels that refuse LO_FLAGS_DIRECT_IO outright for a backing file
        # without O_DIRECT support say EINVAL: fall back to buffered I/O.
        if e.errno != errno.EINVAL or not flags & _DIRECT_IO:
            raise
        log.debug("%s: LOOP_CONFIGURE with direct I/O: EINVAL; again, buffered", bf.name)
        result = bind(bf, True, flags & ~_DIRECT_IO, offset, size_limit, block_size,
                      deadline_ns)
    return _device_from_result(result), result


def _attach_legacy(bf: BackingFile, flags: int, offset: int, size_limit: int,
                   block_size: int, deadline_ns: int) -> Tuple[LoopDevice, CData]:
    """LOOP_SET_FD inside lc_attach, then the settings one ioctl at a time
    (pre-5.8 kernels)."""
    # flags: READ_ONLY only, which picks the device's open mode for SET_FD
    result = bind(bf, False, flags & _READ_ONLY, 0, 0, 0, deadline_ns)
    device = _device_from_result(result)
    try:
        _finish_legacy(device, bf, flags, offset, size_limit, block_size)
        _, state = device._state()
        device.diskseq = int(state.diskseq) or None
    except BaseException:
        device._unbind()  # nothing stays bound
        raise
    return device, state


def _finish_legacy(device: LoopDevice, bf: BackingFile, flags: int, offset: int,
                   size_limit: int, block_size: int) -> None:
    """After LOOP_SET_FD: status, block size, direct I/O."""
    dev_fd = device.fileno()
    info = _c.ffi.new("struct lc_loop_info64 *")
    info.lo_offset = offset
    info.lo_sizelimit = size_limit
    # READ_ONLY comes from the fd's open mode; DIRECT_IO has its own ioctl.
    info.lo_flags = flags & (_AUTOCLEAR | _PARTSCAN)
    info.lo_file_name = bf.file_name_field()
    _calls.check(_calls.retry_eagain(lambda: _c.lib.lc_set_status64(dev_fd, info)), bf.name)
    if block_size:
        _calls.check(_calls.retry_eagain(lambda: _c.lib.lc_set_block_size(dev_fd, block_size)),
                     bf.name)
    if flags & _DIRECT_IO:
        # Best effort, like LOOP_CONFIGURE: the kernel says EINVAL when the
        # backing file or the offset does not allow direct I/O.
        rc = _calls.retry_eagain(lambda: _c.lib.lc_set_direct_io(dev_fd, 1))
        if rc not in (0, -errno.EINVAL):
            _calls.check(rc, bf.name)


def _ignored_settings(state: CData, flags: int, block_size: int) -> str:
    """What the kernel left out of the requested configuration ('' if nothing)."""
    ignored = []
    if flags & _PARTSCAN and not state.flags & _PARTSCAN:
        ignored.append("PARTSCAN")
    if block_size and state.block_size != block_size:
        ignored.append(f"block size {block_size} (got {state.block_size})")
    return ", ".join(ignored)


def _device_from_result(result: CData) -> LoopDevice:
    return LoopDevice(int(result.number), int(result.fd), int(result.devnum),
                      int(result.diskseq) or None)


# --- the one C call ---------------------------------------------------------------

_retry: Optional[Tuple[Tuple[int, int, int], CData]] = None


def _lock_timeout() -> TimeoutError:
    return TimeoutError(errno.ETIMEDOUT, "timed out waiting for another attach to release "
                        "/dev/loop-control, or for a free loop device", CONTROL_PATH)


def bind(bf: BackingFile, use_configure: bool, flags: int, offset: int, size_limit: int,
         block_size: int, deadline_ns: int = 0) -> CData:
    """One C call: lock, GET_FREE, open, bind, read back.  Raises on failure.

    ``deadline_ns`` (time.monotonic_ns(), 0 for none) bounds the waits.
    """
    global _retry
    policy = (_calls.ATTACH_ATTEMPTS, _calls.ATTACH_SLEEP_BASE_US, _calls.ATTACH_SLEEP_SPAN_US)
    if _retry is None or _retry[0] != policy:
        _retry = (policy, _c.ffi.new("struct lc_retry *", policy))
    result = _c.ffi.new("struct lc_attach_result *")
    file_name = bf.file_name_field()
    attempt = 0
    while True:
        if deadline_ns:
            left = (deadline_ns - time.monotonic_ns()) / 1e9
            if not control.lock.acquire(timeout=max(left, 0.0)):
                raise _lock_timeout()
        else:
            control.lock.acquire()
        try:
            rc = _c.lib.lc_attach(control.fd(), bf.fd, use_configure, flags, offset,
                                  size_limit, block_size, file_name, _retry[1], attempt,
                                  deadline_ns, result)
        finally:
            control.lock.release()
        if rc != -errno.EINTR:
            break
        # A signal interrupted a wait (PEP 475): its Python handler runs
        # before the next loop iteration and may raise (Ctrl-C); if it does
        # not, carry on from the attempt the C loop stopped at.
        attempt = result.attempts
        if deadline_ns and time.monotonic_ns() >= deadline_ns:
            raise _lock_timeout()
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s: %s on /dev/loop%d: %s after %d attempt(s) (%d busy, %d vanished)",
                  bf.name, "LOOP_CONFIGURE" if use_configure else "LOOP_SET_FD",
                  result.number, "ok" if rc >= 0 else f"errno {-rc}", result.attempts,
                  result.busy_retries, result.vanished_retries)
    if rc >= 0:
        return result
    step = result.failed_step
    if rc == -errno.ETIMEDOUT and step in (_c.lib.LC_STEP_LOCK, _c.lib.LC_STEP_BACKOFF):
        raise _lock_timeout()
    if step == _c.lib.LC_STEP_GET_FREE:
        raise no_free_device(-rc)
    if rc == -errno.EBUSY and step == _c.lib.LC_STEP_BIND:
        raise LoopBusyError(errno.EBUSY, f"every free loop device was taken by others "
                            f"({result.attempts} attempts)", bf.name)
    if step == _c.lib.LC_STEP_OPEN and rc in (-errno.ENXIO, -errno.ENOENT):
        raise LoopBusyError(-rc, f"free loop devices kept vanishing "
                            f"({result.attempts} attempts)", device_path(result.number))
    if step in (_c.lib.LC_STEP_OPEN, _c.lib.LC_STEP_READ_BACK) and result.number >= 0:
        raise error_from_errno(-rc, device_path(result.number))
    if step == _c.lib.LC_STEP_LOCK:
        raise error_from_errno(-rc, CONTROL_PATH)
    raise error_from_errno(-rc, bf.name)

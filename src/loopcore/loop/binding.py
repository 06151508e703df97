"""The bind and what follows it, for attach() and attach_many() alike:
:func:`bind` (the one C call, lc_attach), :func:`bind_error` (its failure
as a typed exception), :func:`device_from_result` and :func:`check_bound`,
the one post-bind check of what the kernel did."""
from __future__ import annotations

import errno
import logging
import threading
from typing import TYPE_CHECKING, List

from .. import _c, _retry
from .._log import get_logger
from ..errors import (
    LoopBusyError,
    LoopError,
    PermissionError,
    TimeoutError,
    error_from_errno,
)
from . import _calls, partitions
from .backing import BackingFile, backing_error, expected_size
from .control import (
    CONTROL_PATH,
    control,
    control_timeout,
    missing_node_error,
    no_free_device,
)
from .device import LoopDevice
from .info import PAGE_SIZE, block_size_refused, device_path
from .locks import LOCK_EXCLUSIVE
from .request import DIRECT_IO, PARTSCAN, READ_ONLY, AttachRequest, offset_past_end

if TYPE_CHECKING:
    from .._native import CData

__all__: List[str] = []  # the attach paths' own: nothing public

log = get_logger("loop")

_RESULT = _c.ffi.typeof("struct lc_attach_result *")
_SET_FD = _c.lib.LC_ATTACH_SET_FD
_CONTROL_HELD = _c.lib.LC_ATTACH_CONTROL_HELD
_READ_SETTINGS = _c.lib.LC_ATTACH_READ_SETTINGS
_DEBUG = logging.DEBUG
# Each thread's one lc_attach result, reused by its binds (none allocates
# one): a bind's result is read before the same thread binds again.
_scratch = threading.local()


class SettingsIgnored(LoopError):
    """The kernel bound the device but left out part of the configuration
    (Linux 5.8's LOOP_CONFIGURE could drop PARTSCAN and the block size)."""


def bind(bf: BackingFile, request: AttachRequest, flags: int, *,
         set_fd: bool = False) -> CData:
    """One C call: (an :meth:`~BackingFile.unopened` backing file: open
    it,) lock, GET_FREE (or the chosen device), open, bind, read back;
    returns lc_attach's result, this thread's until its next bind; raises
    on failure.

    ``flags`` are the lo_flags for this backing file; ``set_fd`` binds
    with LOOP_SET_FD alone (the legacy path sets the rest).  With
    LOOP_CONFIGURE, a kernel that refuses direct I/O for this file outright
    (EINVAL) gets it again, buffered.  ``request.created`` learns whether
    LOOP_CTL_ADD made the chosen device.
    """
    # READ_DEVNUM until this process knows how numbers map to dev_t
    options = request.options | control.read_devnum_option
    if set_fd:
        options |= _SET_FD
    path = bf.path  # lc_attach opens it (and names the device after it)
    file_name = b"" if path else bf.file_name_field()
    # Under attach(reuse=True) the caller holds control.lock already.
    take_lock = not options & _CONTROL_HELD
    result: CData
    try:
        result = _scratch.result
    except AttributeError:
        result = _scratch.result = _c.ffi.new(_RESULT)
    lib = _c.lib  # looked up per call: tests put their own in _c
    first_attempt = 0
    while True:
        if take_lock:
            if request.deadline_ns:
                control.acquire_thread_lock(request.deadline_ns)
            else:
                control.lock.acquire()
        try:
            rc = lib.lc_attach(control.fd(), request.fill(bf.fd, options, flags, file_name,
                                                          first_attempt), path, result)
        finally:
            if take_lock:
                control.lock.release()
        if rc >= 0:
            if path and options & _READ_SETTINGS:
                bf.found = result.backing  # check_bound compares the size with it
            if request.number >= 0 and result.created:
                request.created = True
            if log.isEnabledFor(_DEBUG):
                _log_bind(bf, set_fd, rc, result)
            return result
        if result.created:  # a failed attempt may have made the device
            request.created = True
        if rc == -errno.EINTR:
            # A signal interrupted a wait (PEP 475): its Python handler runs
            # before the next loop iteration and may raise (Ctrl-C); if it
            # does not, carry on from the attempt the C loop stopped at.
            if _retry.expired(request.deadline_ns):
                raise attach_timeout(result.failed_step, result.number)
            first_attempt = result.attempts
        elif not set_fd and refuses_direct_io(rc, result, flags):
            log.debug("%s: LOOP_CONFIGURE with direct I/O: EINVAL; again, buffered", bf.name)
            flags &= ~DIRECT_IO
            first_attempt = 0
        else:
            break
    if path:
        bf.found = result.backing
    if log.isEnabledFor(logging.DEBUG):
        _log_bind(bf, set_fd, rc, result)
    raise bind_error(rc, result, request, bf.name)


def _log_bind(bf: BackingFile, set_fd: bool, rc: int, result: CData) -> None:
    log.debug("%s: %s on /dev/loop%d: %s after %d attempt(s) (%d busy, %d vanished)",
              bf.name, "LOOP_SET_FD" if set_fd else "LOOP_CONFIGURE", result.number,
              "ok" if rc >= 0 else f"errno {-rc}", result.attempts,
              result.busy_retries, result.vanished_retries)


def refuses_direct_io(rc: int, result: CData, flags: int) -> bool:
    """Whether LOOP_CONFIGURE failed only for its direct I/O: kernels that
    refuse LO_FLAGS_DIRECT_IO outright for a backing file without O_DIRECT
    support say EINVAL; the bind is tried again, buffered."""
    return (rc == -errno.EINVAL and result.failed_step == _c.lib.LC_STEP_BIND
            and bool(flags & DIRECT_IO))


def attach_timeout(step: int, number: int) -> TimeoutError:
    if step == _c.lib.LC_STEP_DEVICE_LOCK and number >= 0:
        return TimeoutError(errno.ETIMEDOUT, "timed out waiting for another process's lock "
                            "on the device", device_path(number))
    return control_timeout()


def bind_error(rc: int, result: CData, request: AttachRequest, name: str) -> BaseException:
    """The exception for lc_attach's failure rc (``name``: the backing
    file's)."""
    step = result.failed_step
    number = request.number
    if step == _c.lib.LC_STEP_BACKING:
        return backing_error(rc, result.backing, name)
    if step == _c.lib.LC_STEP_OFFSET:
        return offset_past_end(name, request.offset, result.backing.size)
    if rc == -errno.ETIMEDOUT and step in (_c.lib.LC_STEP_LOCK, _c.lib.LC_STEP_BACKOFF,
                                           _c.lib.LC_STEP_DEVICE_LOCK):
        return attach_timeout(step, result.number)
    if step == _c.lib.LC_STEP_GET_FREE:
        return no_free_device(-rc)
    if rc == -errno.EBUSY and step == _c.lib.LC_STEP_BIND and number >= 0:
        return LoopBusyError(errno.EBUSY, "the device is bound" if result.attempts <= 1 else
                             f"the device stayed busy ({result.attempts} attempts)",
                             device_path(number))
    if rc == -errno.EBUSY and step == _c.lib.LC_STEP_BIND:
        return LoopBusyError(errno.EBUSY, f"every free loop device was taken by others "
                             f"({result.attempts} attempts)", name)
    if rc == -errno.EINVAL and step == _c.lib.LC_STEP_BIND and request.block_size > PAGE_SIZE:
        return block_size_refused(request.block_size, error_from_errno(errno.EINVAL))
    if step in (_c.lib.LC_STEP_ADD, _c.lib.LC_STEP_DEVICE_LOCK) and result.number >= 0:
        return error_from_errno(-rc, device_path(result.number))
    if step == _c.lib.LC_STEP_OPEN and rc == -errno.ENOENT and result.number >= 0:
        missing = missing_node_error(result.number)  # a /dev without devtmpfs
        if missing is not None:
            return missing
    if step == _c.lib.LC_STEP_OPEN and rc in (-errno.ENXIO, -errno.ENOENT):
        return LoopBusyError(-rc, f"free loop devices kept vanishing "
                             f"({result.attempts} attempts)", device_path(result.number))
    if step in (_c.lib.LC_STEP_OPEN, _c.lib.LC_STEP_READ_BACK,
                _c.lib.LC_STEP_PARTSCAN) and result.number >= 0:
        return error_from_errno(-rc, device_path(result.number))
    if step == _c.lib.LC_STEP_LOCK:
        return error_from_errno(-rc, CONTROL_PATH)
    return error_from_errno(-rc, name)


def device_from_result(result: CData) -> LoopDevice:
    """The LoopDevice lc_attach bound (its fd, and its lock fd, taken over)."""
    number = result.number
    devnum = result.devnum
    if devnum:
        control.learn_devnum_layout(number, devnum)
    else:
        devnum = control.devnum(number)
    device = LoopDevice(number, result.fd, devnum, result.diskseq or None)
    if result.lock_fd >= 0:
        device._adopt_lock(int(result.lock_fd), LOCK_EXCLUSIVE)
    return device


def ignored_settings(state: CData, request: AttachRequest) -> str:
    """What the kernel left out of the requested configuration ('' if nothing)."""
    ignored = []
    if request.flags & PARTSCAN and not state.flags & PARTSCAN:
        ignored.append("PARTSCAN")
    if request.block_size and state.block_size != request.block_size:
        ignored.append(f"block size {request.block_size} (got {state.block_size})")
    return ", ".join(ignored)


def check_bound(device: LoopDevice, bf: BackingFile, request: AttachRequest,
                state: CData) -> None:
    """The post-bind check, of attach() and of each device of a burst:
    what the kernel did (``state``: lc_attach's result, or lc_read_state's
    answer) against the request, and the fixes losetup and systemd make.
    SettingsIgnored if the kernel left settings out; the caller unbinds on
    any failure."""
    ignored = (request.flags & PARTSCAN or request.block_size) and ignored_settings(
        state, request)
    if ignored:
        raise SettingsIgnored(errno.EINVAL, f"the kernel ignored {ignored}", bf.name)
    if request.flags & PARTSCAN:
        device._added().scanned = True  # detach deletes them, probes retried
        missing = partitions.wait_for_nodes(device.number)
        if missing:
            log.info("%s: no /dev node for %s", device.path, ", ".join(missing))
        if request.lock_mode is None:
            device._drop_lock()  # taken for the scan only: udev may probe now
    if state.disk_read_only and not request.read_only:
        # Read-only: either the kernel made the device so, or a BLKROSET
        # policy (blockdev --setro) outlived the detach of the last user of
        # this device number.
        if not request.options & _c.lib.LC_ATTACH_READ_SETTINGS:
            _, state = device._state()
        if state.flags & READ_ONLY:
            raise PermissionError(errno.EROFS, "the kernel made the device read-only: "
                                  "the backing file cannot be written", bf.name)
        _calls.check(_c.lib.lc_set_read_only(device.fileno(), 0), device.path)
    if (request.offset or request.size_limit) and state.size_bytes != expected_size(
            bf.size, request.offset, request.size_limit):
        # util-linux: some kernels miss offset/sizelimit in the first size.
        _calls.check(_calls.retry_eagain(lambda: _c.lib.lc_set_capacity(device.fileno())),
                     bf.name)

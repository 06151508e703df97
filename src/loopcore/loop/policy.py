"""The attach policy, top to bottom.

:func:`attach` checks its arguments, opens the backing file, picks the
path (LOOP_CONFIGURE on 5.8+, else the legacy LOOP_SET_FD +
LOOP_SET_STATUS64; forced either way by ``legacy=`` or
LOOPCORE_FORCE_LEGACY=1), binds in one C call (:func:`bind`: lock,
GET_FREE, open, bind, read back, with systemd's retries), checks what the
kernel did -- distrusting LOOP_CONFIGURE for the process if it ignored
settings, as Linux 5.8 could -- and fixes the rest (a stale BLKROSET, a
size that missed the offset).  On any failure nothing stays bound.

The builders' variants: ``number=`` binds a chosen device (made with
LOOP_CTL_ADD if missing), ``reuse=True`` returns a device bound to the
same bytes already (losetup --nooverlap) -- decided and bound under the
control lock -- and ``lock=`` hands the device back flock()ed, the lock
taken inside lc_attach before the bind so no udev probe comes between.
"""
from __future__ import annotations

import builtins
import errno
import logging
import os
import time
from typing import TYPE_CHECKING, Optional, Tuple, Union

from .. import _c
from .._log import get_logger
from .._validate import check_int, check_number, check_timeout
from ..errors import (
    LoopBusyError,
    LoopError,
    LoopOverlapError,
    PermissionError,
    TimeoutError,
    TypeError,
    ValueError,
    converted,
    error_from_errno,
)
from . import _calls, discovery
from .backing import Backing, BackingFile, expected_size
from .control import CONTROL_PATH, control, control_timeout, no_free_device
from .device import (
    LOCK_EXCLUSIVE,
    LOCK_SHARED,
    LoopDevice,
    block_size_refused,
    check_block_size,
    check_diskseq,
    read_diskseq,
)
from .info import PAGE_SIZE, Flags, LoopInfo, device_path

if TYPE_CHECKING:
    from .._native import CData

__all__ = ["attach", "LockArg", "bind", "bind_error", "device_from_result", "retry_policy",
           "attach_timeout"]

LockArg = Union[bool, str, None]
"""attach(lock=...): False/None (no lock), True or "exclusive", "shared"."""

log = get_logger("loop")

# Plain ints on the hot path: IntFlag arithmetic costs microseconds.
_READ_ONLY, _AUTOCLEAR, _PARTSCAN, _DIRECT_IO = (int(f) for f in Flags)
_S64_MAX = (1 << 63) - 1


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
    number: Optional[int] = None,
    reuse: bool = False,
    lock: LockArg = False,
    legacy: Optional[bool] = None,
    timeout: Optional[float] = None,
) -> LoopDevice:
    """Bind ``backing`` to a free loop device and return it, open.

    ``backing`` is a path, an fd or a file object; a path is opened
    read-write unless ``read_only``.  ``direct_io`` asks for direct I/O
    where the backing file allows it and falls back to buffered I/O where
    it does not (``info().direct_io`` says which).  ``block_size`` 0 keeps
    the kernel's default (512).  ``offset`` and ``size_limit`` are bytes.

    ``number`` binds ``/dev/loopN`` instead of a free device (``losetup
    /dev/loopN FILE``), making it with LOOP_CTL_ADD if it does not exist
    (and removing it again if the attach then fails); LoopBusyError
    (EBUSY) if it is bound.

    ``reuse`` (``losetup --nooverlap``): if a device is bound to the same
    file (device and inode) at the same offset and size limit, return it
    (``reused`` set; leaving its ``with`` block closes it without
    detaching) instead of binding another.  It must be read-only only if
    this call is (PermissionError, EROFS, otherwise) and have the block
    size asked for, if one is.  A device over an overlapping but
    different byte range raises LoopOverlapError (EBUSY) -- the same bytes
    cached twice would corrupt them.  Look-up and bind happen under the
    control lock, so cooperating attaches cannot race in between.

    ``lock`` (True or "exclusive", "shared") hands the device back with a
    flock held (``locked``; see LoopDevice.lock): taken before the bind,
    so udev, which skips a device it cannot lock shared, never probes it
    half set up, and a shared lock is the exclusive one downgraded once
    the device is ready.  Released by unlock(), detach() or close().

    ``legacy`` forces (True) or forbids (False) the pre-5.8 path
    (LOOP_SET_FD + LOOP_SET_STATUS64); None picks LOOP_CONFIGURE when the
    kernel has it, unless the environment sets LOOPCORE_FORCE_LEGACY=1.

    ``timeout`` bounds, in seconds, the time spent waiting for other
    attaches to release ``/dev/loop-control``, for busy devices and for
    the device lock; None (the default, as systemd) waits as long as it
    takes, and TimeoutError says it ran out.  A signal handler that
    returns does not interrupt the wait; one that raises (Ctrl-C) does,
    at once.

    Raises ValueError/TypeError for bad arguments before any syscall, an
    OSError (PermissionError for a read-write attach of a backing that
    cannot be written) otherwise; on failure nothing stays bound.  A
    block size above the page size is up to the kernel: ValueError if it
    refuses.
    """
    # The translate decorator's work, inline: a wrapper frame costs a
    # measurable share of a 50 us cycle.
    try:
        return _attach(backing, read_only, autoclear, partscan, direct_io, block_size, offset,
                       size_limit, number, reuse, lock, legacy, timeout)
    except (builtins.OSError, builtins.ValueError, builtins.TypeError) as e:
        new = converted(e)
        if new is e:
            raise
        raise new.with_traceback(e.__traceback__) from None


def _attach(backing: Backing, read_only: bool, autoclear: bool, partscan: bool,
            direct_io: bool, block_size: int, offset: int, size_limit: int,
            number: Optional[int], reuse: bool, lock: LockArg, legacy: Optional[bool],
            timeout: Optional[float]) -> LoopDevice:
    # The common arguments pass one cheap test; anything else gets the
    # full checks (and their messages).
    if not (type(offset) is int and type(size_limit) is int and type(block_size) is int
            and 0 <= offset <= _S64_MAX and 0 <= size_limit <= _S64_MAX and not block_size):
        check_int("offset", offset, maximum=_S64_MAX)
        check_int("size_limit", size_limit, maximum=_S64_MAX)
        check_block_size(block_size, allow_zero=True)
    check_timeout(timeout)
    deadline_ns = _calls.deadline_after(timeout)
    chosen = -1 if number is None else check_number(number)
    lock_mode = None if lock is False or lock is None else _lock_mode(lock)
    flags = ((_READ_ONLY if read_only else 0) | (_AUTOCLEAR if autoclear else 0)
             | (_PARTSCAN if partscan else 0) | (_DIRECT_IO if direct_io else 0))

    with BackingFile.open(backing, read_only, probe_direct_io=bool(direct_io)) as bf:
        if offset and (offset >= bf.size > 0 or offset > bf.size):
            raise ValueError(f"{bf.name}: offset {offset} is at or past the end "
                             f"({bf.size} bytes)")
        if not read_only and not bf.owned and not bf.writable():
            raise PermissionError(errno.EACCES,
                                  "backing is open read-only; pass read_only=True", bf.name)
        if flags & _DIRECT_IO and bf.direct_io_refused:
            # overlayfs over a file system without O_DIRECT: the kernel
            # would say yes, then fail every I/O
            log.debug("%s: direct I/O refused below overlayfs: buffered", bf.name)
            flags &= ~_DIRECT_IO
        use_legacy = legacy if legacy is not None else (
            control.force_legacy() or not control.supports_configure())
        options = _read_back_options(flags, offset, size_limit, block_size)
        if lock_mode:
            options |= _c.lib.LC_ATTACH_LOCK_DEVICE
        how = _How(chosen, options, deadline_ns)
        if not reuse:
            device = _attach_new(bf, flags, offset, size_limit, block_size, use_legacy, how)
        else:
            with control.held(deadline_ns):
                device_or_none = _reusable(bf, read_only, offset, size_limit, block_size,
                                           chosen, lock_mode, deadline_ns)
                if device_or_none is not None:
                    return device_or_none
                how.options |= _c.lib.LC_ATTACH_CONTROL_HELD
                device = _attach_new(bf, flags, offset, size_limit, block_size, use_legacy,
                                     how)
        if lock_mode == LOCK_SHARED:
            # Exclusive until the device was ready; now others may read.
            try:
                device._adopt_lock(device._lock_fd, lock_mode)
            except BaseException:
                device._unbind()
                raise
        return device


def _read_back_options(flags: int, offset: int, size_limit: int, block_size: int) -> int:
    """What lc_attach reads back after the bind: the settings only when an
    option's outcome has to be checked (PARTSCAN and a block size, which
    Linux 5.8 could ignore; the size with an offset or a size limit, as
    util-linux), the devnum only until its layout is known."""
    options = 0
    if flags & _PARTSCAN or block_size or offset or size_limit:
        options = _c.lib.LC_ATTACH_READ_SETTINGS
    if not control.devnum_layout_known():
        options |= _c.lib.LC_ATTACH_READ_DEVNUM
    return options


class _How:
    """How lc_attach binds, the same for every bind of one attach() call:
    the chosen device (-1: GET_FREE), lc_attach's options, the deadline;
    ``created`` notes that LOOP_CTL_ADD made the chosen device."""

    __slots__ = ("number", "options", "deadline_ns", "created")

    def __init__(self, number: int, options: int, deadline_ns: int) -> None:
        self.number = number
        self.options = options
        self.deadline_ns = deadline_ns
        self.created = False


def _lock_mode(lock: LockArg) -> Optional[str]:
    if lock is None or lock is False:
        return None
    if lock is True or lock == LOCK_EXCLUSIVE:
        return LOCK_EXCLUSIVE
    if lock == LOCK_SHARED:
        return LOCK_SHARED
    if isinstance(lock, str):
        raise ValueError(f"lock must be True, False, \"exclusive\" or \"shared\", not {lock!r}")
    raise TypeError(f"lock must be a bool or \"exclusive\"/\"shared\", not "
                    f"{type(lock).__name__}")


def _attach_new(bf: BackingFile, flags: int, offset: int, size_limit: int, block_size: int,
                use_legacy: bool, how: _How) -> LoopDevice:
    """Bind a device (lc_attach), check what the kernel did, fix the rest;
    on failure nothing stays bound, and a device LOOP_CTL_ADD made for
    this call is removed again."""
    read_only = bool(flags & _READ_ONLY)
    try:
        try:
            device, state = (_attach_legacy if use_legacy else _attach_configure)(
                bf, flags, offset, size_limit, block_size, how)
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
            device, state = _attach_legacy(bf, flags, offset, size_limit, block_size, how)
            ignored = _ignored_settings(state, flags, block_size)
        try:
            if ignored:
                raise LoopError(errno.EINVAL, f"the kernel ignored {ignored}", bf.name)
            if state.disk_read_only and not read_only:
                # Read-only: either the kernel made the device so, or a
                # BLKROSET policy (blockdev --setro) outlived the detach of
                # the last user of this device number.
                if not how.options & _c.lib.LC_ATTACH_READ_SETTINGS:
                    _, state = device._state()
                if state.flags & _READ_ONLY:
                    raise PermissionError(errno.EROFS, "the kernel made the device read-only: "
                                          "the backing file cannot be written", bf.name)
                _calls.check(_c.lib.lc_set_read_only(device.fileno(), 0), device.path)
            if (offset or size_limit) and state.size_bytes != expected_size(
                    bf.size, offset, size_limit):
                # util-linux: some kernels miss offset/sizelimit in the first size.
                _calls.check(_calls.retry_eagain(
                    lambda: _c.lib.lc_set_capacity(device.fileno())), bf.name)
        except BaseException:
            device._unbind()
            raise
    except BaseException:
        if how.created:
            _remove_created(how.number)
        raise
    return device


def _remove_created(number: int) -> None:
    """Best effort: remove a device this attach made and then failed to
    bind (systemd's backoff for a device still winding down)."""
    ctl = control.fd()
    rc = _calls.retry_ebusy(lambda: _c.lib.lc_ctl_remove(ctl, number), _calls.REMOVE_ATTEMPTS)
    log.debug("/dev/loop%d: made for a failed attach; LOOP_CTL_REMOVE: %s", number,
              "ok" if rc >= 0 else f"errno {-rc}")


# --- reuse (losetup --nooverlap) ---------------------------------------------------

def _reusable(bf: BackingFile, read_only: bool, offset: int, size_limit: int, block_size: int,
              chosen: int, lock_mode: Optional[str], deadline_ns: int) -> Optional[LoopDevice]:
    """Under the control lock: the device bound to the same bytes of the
    same file, open (and locked, if asked), or None when there is none and
    a new device may be bound; LoopOverlapError for one over an
    overlapping range set up differently."""
    for _ in range(_calls.REUSE_ATTEMPTS):
        match = _find_overlap(bf, offset, size_limit, block_size, chosen)
        if match is None:
            return None
        if match.read_only and not read_only:
            raise PermissionError(errno.EROFS, f"{match.path} covers the same bytes read-only; "
                                  "pass read_only=True to share it", bf.name)
        device = _open_match(match, bf, read_only)
        if device is None:
            continue  # detached (autoclear) or rebound while we looked: look again
        try:
            if lock_mode is not None:
                # held until unlock(), detach() or close()
                device.lock(exclusive=lock_mode == LOCK_EXCLUSIVE,
                            timeout=_calls.seconds_left(deadline_ns))
        except BaseException:
            device.close()
            raise
        log.debug("%s: reusing %s (offset %d, size limit %d)", bf.name, device.path, offset,
                  size_limit)
        return device
    raise LoopBusyError(errno.EBUSY, "the device to reuse kept changing while it was "
                        "opened", bf.name)


def _find_overlap(bf: BackingFile, offset: int, size_limit: int, block_size: int,
                  chosen: int) -> Optional[LoopInfo]:
    """The device bound to exactly these bytes of the backing file (same
    device and inode, offset and size limit), or None if no device touches
    them; LoopOverlapError for a device over an overlapping range that is
    not the same (util-linux's loopcxt_find_overlap rules: a size limit of
    0 reaches to the end of the file)."""
    same_file = [info for info in discovery.scan()
                 if info.has_status and (info.backing_devnum, info.backing_inode)
                 == (bf.dev, bf.ino)]
    for info in same_file:
        if (info.offset, info.size_limit) != (offset, size_limit):
            continue
        if chosen >= 0 and info.number != chosen:
            raise LoopOverlapError(errno.EBUSY, f"the same bytes are bound as {info.path}, "
                                   f"not /dev/loop{chosen}", bf.name, None, info.path)
        if block_size and info.block_size != block_size:
            raise LoopOverlapError(errno.EBUSY, f"the same bytes are bound with "
                                   f"{info.block_size}-byte sectors, not {block_size}",
                                   bf.name, None, info.path)
        return info
    for info in same_file:
        if _ranges_overlap(info.offset, info.size_limit, offset, size_limit):
            raise LoopOverlapError(
                errno.EBUSY, f"bytes {_range(info.offset, info.size_limit)} are bound as "
                f"{info.path}, which overlaps the requested {_range(offset, size_limit)}",
                bf.name, None, info.path)
    return None


def _ranges_overlap(offset_a: int, limit_a: int, offset_b: int, limit_b: int) -> bool:
    end_a = offset_a + limit_a if limit_a else None
    end_b = offset_b + limit_b if limit_b else None
    return (end_a is None or offset_b < end_a) and (end_b is None or offset_a < end_b)


def _range(offset: int, size_limit: int) -> str:
    return f"{offset}-{offset + size_limit - 1}" if size_limit else f"{offset}-end"


def _open_match(match: LoopInfo, bf: BackingFile, read_only: bool) -> Optional[LoopDevice]:
    """Open the device to reuse and check, on the fd (which pins the
    binding), that it is still bound to those bytes; None if not."""
    try:
        fd = os.open(match.path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENXIO, errno.ENODEV):
            return None
        raise error_from_errno(e.errno or errno.EIO, match.path) from None
    try:
        status = _c.ffi.new("struct lc_loop_info64 *")
        rc = _c.lib.lc_get_status64(fd, status)
        if rc == -errno.ENXIO or (rc == 0 and (
                (int(status.lo_device), int(status.lo_inode), int(status.lo_offset),
                 int(status.lo_sizelimit)) != (match.backing_devnum, match.backing_inode,
                                               match.offset, match.size_limit))):
            os.close(fd)
            return None
        _calls.check(rc, match.path)
        diskseq = read_diskseq(fd)
        check_diskseq(fd, match.path, diskseq)
    except BaseException:
        os.close(fd)
        raise
    device = LoopDevice(match.number, fd, match.devnum, diskseq)
    device.reused = True
    return device


def _attach_configure(bf: BackingFile, flags: int, offset: int, size_limit: int,
                      block_size: int, how: _How) -> Tuple[LoopDevice, CData]:
    """LOOP_CONFIGURE: bind and configure in one ioctl, inside lc_attach."""
    try:
        result = bind(bf, True, flags, offset, size_limit, block_size, how.deadline_ns,
                      how=how)
    except LoopError as e:
        # Kernels that refuse LO_FLAGS_DIRECT_IO outright for a backing file
        # without O_DIRECT support say EINVAL: fall back to buffered I/O.
        if e.errno != errno.EINVAL or not flags & _DIRECT_IO:
            raise
        log.debug("%s: LOOP_CONFIGURE with direct I/O: EINVAL; again, buffered", bf.name)
        result = bind(bf, True, flags & ~_DIRECT_IO, offset, size_limit, block_size,
                      how.deadline_ns, how=how)
    return device_from_result(result), result


def _attach_legacy(bf: BackingFile, flags: int, offset: int, size_limit: int,
                   block_size: int, how: _How) -> Tuple[LoopDevice, CData]:
    """LOOP_SET_FD inside lc_attach, then the settings one ioctl at a time
    (pre-5.8 kernels); a device lock, if asked for, is held throughout."""
    # flags: READ_ONLY only, which picks the device's open mode for SET_FD
    result = bind(bf, False, flags & _READ_ONLY, 0, 0, 0, how.deadline_ns, how=how)
    device = device_from_result(result)
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


def device_from_result(result: CData) -> LoopDevice:
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


# --- the one C call ---------------------------------------------------------------

_retry: Optional[Tuple[Tuple[int, int, int], CData]] = None


def retry_policy() -> CData:
    """lc_attach's retry policy (struct lc_retry) from the constants in
    _calls, made again only when they change (tests shrink them)."""
    global _retry
    policy = (_calls.ATTACH_ATTEMPTS, _calls.ATTACH_SLEEP_BASE_US, _calls.ATTACH_SLEEP_SPAN_US)
    if _retry is None or _retry[0] != policy:
        _retry = (policy, _c.ffi.new("struct lc_retry *", policy))
    return _retry[1]


def attach_timeout(step: int, number: int) -> TimeoutError:
    if step == _c.lib.LC_STEP_DEVICE_LOCK and number >= 0:
        return TimeoutError(errno.ETIMEDOUT, "timed out waiting for another process's lock "
                            "on the device", device_path(number))
    return control_timeout()


def bind(bf: BackingFile, use_configure: bool, flags: int, offset: int, size_limit: int,
         block_size: int, deadline_ns: int = 0, *, how: Optional[_How] = None) -> CData:
    """One C call: lock, GET_FREE (or the chosen device), open, bind, read
    back.  Raises on failure.

    ``deadline_ns`` (time.monotonic_ns(), 0 for none) bounds the waits;
    ``how`` carries the chosen device and lc_attach's options (and learns
    whether LOOP_CTL_ADD made the device).
    """
    retry = retry_policy()
    number, options = (how.number, how.options) if how is not None else (-1, 0)
    # Under attach(reuse=True) the caller holds control.lock already.
    take_lock = not options & _c.lib.LC_ATTACH_CONTROL_HELD
    result = _c.ffi.new("struct lc_attach_result *")
    file_name = bf.file_name_field()
    attempt = 0
    while True:
        if take_lock:
            control.acquire_thread_lock(deadline_ns)
        try:
            rc = _c.lib.lc_attach(control.fd(), bf.fd, number, options, use_configure, flags,
                                  offset, size_limit, block_size, file_name, retry,
                                  attempt, deadline_ns, result)
        finally:
            if take_lock:
                control.lock.release()
        if how is not None and result.created:
            how.created = True
        if rc != -errno.EINTR:
            break
        # A signal interrupted a wait (PEP 475): its Python handler runs
        # before the next loop iteration and may raise (Ctrl-C); if it does
        # not, carry on from the attempt the C loop stopped at.
        attempt = result.attempts
        if deadline_ns and time.monotonic_ns() >= deadline_ns:
            raise attach_timeout(result.failed_step, result.number)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s: %s on /dev/loop%d: %s after %d attempt(s) (%d busy, %d vanished)",
                  bf.name, "LOOP_CONFIGURE" if use_configure else "LOOP_SET_FD",
                  result.number, "ok" if rc >= 0 else f"errno {-rc}", result.attempts,
                  result.busy_retries, result.vanished_retries)
    if rc >= 0:
        return result
    raise bind_error(rc, result, number, bf.name)


def bind_error(rc: int, result: CData, number: int, name: str) -> BaseException:
    """The exception for lc_attach's failure rc (``number``: the chosen
    device, -1 for GET_FREE; ``name``: the backing file's)."""
    step = result.failed_step
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
    if step in (_c.lib.LC_STEP_ADD, _c.lib.LC_STEP_DEVICE_LOCK) and result.number >= 0:
        return error_from_errno(-rc, device_path(result.number))
    if step == _c.lib.LC_STEP_OPEN and rc in (-errno.ENXIO, -errno.ENOENT):
        return LoopBusyError(-rc, f"free loop devices kept vanishing "
                            f"({result.attempts} attempts)", device_path(result.number))
    if step in (_c.lib.LC_STEP_OPEN, _c.lib.LC_STEP_READ_BACK) and result.number >= 0:
        return error_from_errno(-rc, device_path(result.number))
    if step == _c.lib.LC_STEP_LOCK:
        return error_from_errno(-rc, CONTROL_PATH)
    return error_from_errno(-rc, name)

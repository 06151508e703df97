"""Bursts: :func:`attach_many` binds many backing files under one hold
of the control lock, a chunk of them per C call, all or nothing; :func:`detach_many`
detaches many devices in one C loop.

A burst pays the per-attach costs once -- the lock, the Python around
each bind -- so what is left is the kernel's work: LOOP_CONFIGURE, and
LOOP_CTL_GET_FREE making a new device where none is free.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from typing import TYPE_CHECKING, Iterable, Iterator, List, Optional, Sequence

from .. import _c
from .._log import get_logger
from .._validate import check_timeout
from ..errors import LoopError, PermissionError, TypeError, error_from_errno, translate
from . import _calls
from .backing import Backing, BackingFile
from .control import control
from .device import LoopDevice, block_size_refused, check_block_size
from .info import LO_NAME_SIZE, PAGE_SIZE, Flags
from .policy import attach, attach_timeout, bind_error, device_from_result, retry_policy

if TYPE_CHECKING:
    from .._native import CData

__all__ = ["attach_many", "detach_many"]

log = get_logger("loop")

_READ_ONLY, _AUTOCLEAR, _PARTSCAN, _DIRECT_IO = (int(f) for f in Flags)
# Backing files open at once: a burst binds chunk after chunk, so it needs
# one fd per device it returns plus this many, not two per device.
CHUNK = 256


@translate
def attach_many(backings: Iterable[Backing], *, read_only: bool = False,
                autoclear: bool = False, partscan: bool = False, direct_io: bool = True,
                block_size: int = 0, timeout: Optional[float] = None) -> List[LoopDevice]:
    """Bind each of ``backings`` (paths, fds or file objects) to a free
    loop device and return the devices, open, in the same order.

    The options are :func:`attach`'s and hold for every device.  All the
    binds happen in one C call under one hold of ``/dev/loop-control``'s
    lock (the kernel makes new devices as the free ones run out), so a
    burst costs little more than the kernel's work.

    All or nothing: if one backing file cannot be opened or bound, or a
    signal handler raises (Ctrl-C) part-way, the devices this call bound
    are detached again before the error propagates, and no fd stays open.
    ``timeout`` bounds the waits for the lock and for busy devices, for
    the whole burst.  The pre-5.8 path (no LOOP_CONFIGURE, or
    LOOPCORE_FORCE_LEGACY=1) binds one by one, with the same guarantee.
    """
    check_block_size(block_size, allow_zero=True)
    check_timeout(timeout)
    if isinstance(backings, (str, bytes)):
        raise TypeError("attach_many takes an iterable of backing files, not one path")
    items = list(backings)
    if not items:
        return []
    deadline_ns = _calls.deadline_after(timeout)
    flags = ((_READ_ONLY if read_only else 0) | (_AUTOCLEAR if autoclear else 0)
             | (_PARTSCAN if partscan else 0) | (_DIRECT_IO if direct_io else 0))
    if control.force_legacy() or not control.supports_configure():
        return _attach_one_by_one(items, read_only, autoclear, partscan, direct_io,
                                  block_size, deadline_ns)
    read_settings = bool(flags & _PARTSCAN or block_size)
    devices: List[LoopDevice] = []
    try:
        with control.held(deadline_ns):  # one hold for the whole burst
            for first in range(0, len(items), CHUNK):
                _attach_chunk(items[first:first + CHUNK], read_only, flags, block_size,
                              read_settings, deadline_ns, devices)
    except BaseException:
        for device in devices:
            device._unbind()  # bound moments ago by this call; nobody wrote to it
        raise
    return devices


def _attach_chunk(chunk: Sequence[Backing], read_only: bool, flags: int, block_size: int,
                  read_settings: bool, deadline_ns: int, devices: List[LoopDevice]) -> None:
    """Open, bind and check one chunk of a burst (the control lock held),
    appending its devices to ``devices``; its backing fds are closed."""
    opened: List[BackingFile] = []
    try:
        for backing in chunk:
            opened.append(BackingFile.open(backing, read_only,
                                           probe_direct_io=bool(flags & _DIRECT_IO)))
        for bf in opened:
            if not read_only and not bf.owned and not bf.writable():
                raise PermissionError(errno.EACCES,
                                      "backing is open read-only; pass read_only=True", bf.name)
        results = _bind_all(opened, flags, block_size, read_settings, deadline_ns)
        # From here the LoopDevices own the fds: made with signals held, so
        # a Ctrl-C cannot fall between a device and its fd.
        first = len(devices)
        with _signals_held():
            devices.extend([device_from_result(results[i]) for i in range(len(opened))])
        for i, bf in enumerate(opened):
            _check(devices[first + i], bf, results[i], flags, block_size, read_settings)
    finally:
        for bf in opened:
            bf.close()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back signals (their Python handlers run when the block ends)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _bind_all(opened: Sequence[BackingFile], flags: int, block_size: int, read_settings: bool,
              deadline_ns: int) -> CData:
    """lc_attach_many until every file is bound: the results (fd, number,
    ...), one per file.  If this raises, nothing stays bound."""
    count = len(opened)
    ffi = _c.ffi
    fds = ffi.new("int32_t[]", [bf.fd for bf in opened])
    item_flags = ffi.new("uint32_t[]", [
        flags & ~_DIRECT_IO if flags & _DIRECT_IO and bf.direct_io_refused else flags
        for bf in opened])
    names = ffi.new("uint8_t[]", b"".join(
        bf.file_name_field().ljust(LO_NAME_SIZE, b"\0") for bf in opened))
    results = ffi.new("struct lc_attach_result[]", count)
    for i in range(count):
        results[i].fd = results[i].lock_fd = -1
    done = ffi.new("uint32_t *")
    # The caller holds the control lock (control.held) for the whole burst.
    options = _c.lib.LC_ATTACH_CONTROL_HELD
    if read_settings:
        options |= _c.lib.LC_ATTACH_READ_SETTINGS
    if not control.devnum_layout_known():
        options |= _c.lib.LC_ATTACH_READ_DEVNUM
    start = first_attempt = 0
    try:
        while start < count:
            rc = _c.lib.lc_attach_many(
                control.fd(), fds + start, item_flags + start, names + start * LO_NAME_SIZE,
                count - start, options, block_size, retry_policy(), first_attempt,
                deadline_ns, results + start, done)
            start += done[0]
            if rc >= 0:
                break
            failed = results[start]
            first_attempt = 0
            if rc == -errno.EINTR:
                # A signal interrupted a wait: its handler runs now and may
                # raise (Ctrl-C: everything is undone below); else go on.
                first_attempt = failed.attempts
                if deadline_ns and time.monotonic_ns() >= deadline_ns:
                    raise attach_timeout(failed.failed_step, failed.number)
                continue
            if (rc == -errno.EINVAL and failed.failed_step == _c.lib.LC_STEP_BIND
                    and item_flags[start] & _DIRECT_IO):
                # As attach(): a kernel that refuses direct I/O for this
                # backing file outright says EINVAL; bind it buffered.
                log.debug("%s: LOOP_CONFIGURE with direct I/O: EINVAL; again, buffered",
                          opened[start].name)
                item_flags[start] &= ~_DIRECT_IO
                continue
            if rc == -errno.EINVAL and block_size > PAGE_SIZE:
                raise block_size_refused(block_size, error_from_errno(errno.EINVAL))
            raise bind_error(rc, failed, -1, opened[start].name)
    except BaseException:
        # Every result with an fd is bound (also the ones of a call a
        # signal handler interrupted the bookkeeping of).
        for i in range(count):
            if results[i].fd >= 0:
                _c.lib.lc_clr_fd(results[i].fd)
                os.close(results[i].fd)
                results[i].fd = -1
        raise
    return results


def _check(device: LoopDevice, bf: BackingFile, result: CData, flags: int, block_size: int,
           read_settings: bool) -> None:
    """attach()'s checks of what the kernel did, for one device of a burst."""
    ignored = []
    if flags & _PARTSCAN and not result.flags & _PARTSCAN:
        ignored.append("PARTSCAN")
    if block_size and result.block_size != block_size:
        ignored.append(f"block size {block_size} (got {result.block_size})")
    if ignored:
        # Linux 5.8's LOOP_CONFIGURE bugs: attach() falls back to the legacy
        # path; a burst says so (nothing stays bound).
        raise LoopError(errno.EINVAL, f"the kernel ignored {', '.join(ignored)}", bf.name)
    if result.disk_read_only and not flags & _READ_ONLY:
        state = result if read_settings else device._state()[1]
        if state.flags & _READ_ONLY:
            raise PermissionError(errno.EROFS, "the kernel made the device read-only: "
                                  "the backing file cannot be written", bf.name)
        # a BLKROSET policy left by the last user of this device number
        rc = _c.lib.lc_set_read_only(device.fileno(), 0)
        if rc < 0:
            raise error_from_errno(-rc, device.path)


def _attach_one_by_one(items: Sequence[Backing], read_only: bool, autoclear: bool,
                       partscan: bool, direct_io: bool, block_size: int,
                       deadline_ns: int) -> List[LoopDevice]:
    """The legacy path: attach() each, undoing them all if one fails."""
    devices: List[LoopDevice] = []
    try:
        for backing in items:
            left = None if not deadline_ns else max(deadline_ns - time.monotonic_ns(), 0) / 1e9
            devices.append(attach(backing, read_only=read_only, autoclear=autoclear,
                                  partscan=partscan, direct_io=direct_io,
                                  block_size=block_size, timeout=left))
    except BaseException:
        for device in devices:
            device._unbind()
        raise
    return devices


@translate
def detach_many(devices: Iterable[LoopDevice]) -> None:
    """Detach each of ``devices`` as :meth:`LoopDevice.detach` does, in
    one C loop (write back, LOOP_CLR_FD, close, for each).

    It goes on past a device that fails (which stays bound and open, as
    with detach()) and raises the first failure once all were tried.
    Devices with partitions added or a lock held take detach() itself.
    """
    simple: List[LoopDevice] = []
    first_error: Optional[BaseException] = None
    for device in devices:
        if not isinstance(device, LoopDevice):
            raise TypeError(f"detach_many takes LoopDevices, not {type(device).__name__}")
        if device.added_partitions or device.locked:
            try:
                device.detach()
            except Exception as e:  # noqa: BLE001 -- the first is raised below
                first_error = first_error or e
        else:
            simple.append(device)
    if simple:
        count = len(simple)
        fds = _c.ffi.new("int32_t[]", [device.fileno() for device in simple])
        rcs = _c.ffi.new("int32_t[]", count)
        steps = _c.ffi.new("uint32_t[]", count)
        _c.lib.lc_detach_many(fds, count, rcs, steps)
        for i, device in enumerate(simple):
            if rcs[i] == 0:
                device._fd = -1
                continue
            try:
                device._detach_failed(rcs[i], steps + i)
            except Exception as e:  # noqa: BLE001 -- the first is raised below
                first_error = first_error or e
    if first_error is not None:
        raise first_error

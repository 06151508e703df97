"""Taking a :class:`~loopcore.LoopDevice` down: ``LoopDevice.detach()``'s
work (partitions and lock first, after a write-back; then LOOP_CLR_FD, its
retries, and what stays when it fails), and the quiet unbind of a device
attach() bound moments ago and is not handing out."""
from __future__ import annotations

import errno
import fcntl
import os
from typing import TYPE_CHECKING, Optional

from .. import _c, _retry, _sysfs
from .._log import get_logger
from .._uevents import KernelUevents
from ..errors import TimeoutError, error_from_errno
from . import _calls, nodes
from .holders import holders
from .info import device_path

if TYPE_CHECKING:
    from .device import LoopDevice

__all__ = ["detach", "detach_failed", "unbind_fresh", "after_unbind"]

log = get_logger("loop")

_NOT_WRITTEN_BACK = _c.lib.LC_NOT_WRITTEN_BACK


def detach(device: LoopDevice, wait: Optional[float] = None) -> bool:
    """LoopDevice.detach() (see there), errors untranslated: True if the
    backing file was released now, False if the kernel deferred it."""
    fd = device._fd
    if fd < 0:
        device._check_open()  # raises
    if device._partitions is not None or device._locks is not None:
        _before_detach(device)
        fd = device._fd
    rc = _c.lib.lc_detach(fd)
    if rc >= 0:  # the common case, without the retries
        device._fd = -1
    else:
        try:
            detach_failed(device, rc)
        finally:
            if device._fd >= 0 and device._partitions is not None:
                fcntl.flock(device._fd, fcntl.LOCK_UN)  # still bound: _lock_for_unbind's
    if device._made_nodes:
        nodes.remove_nodes(device._made_nodes)
        device._made_nodes = ()
    # 0: lc_detach saw the kernel unbind it (no look in sysfs)
    return rc == 0 or after_unbind(device.number, device.diskseq, wait)


def _before_detach(device: LoopDevice) -> None:
    """Delete the partitions add_partitions() registered (a partscan
    attach's: all) and drop the lock (a second open fd would make
    LOOP_CLR_FD a deferred detach), after writing back the page cache,
    which could fail; then, on a device with partitions, lock the fd
    LOOP_CLR_FD goes through."""
    partitions = device._partitions
    if (partitions is not None and (partitions.numbers or partitions.scanned)) \
            or device._lock_fd >= 0:
        _write_back(device)
        if partitions is not None:
            partitions.remove_added(device)
        device._drop_lock()
    if partitions is not None:
        _lock_for_unbind(device)


def _lock_for_unbind(device: LoopDevice) -> None:
    """A device with partitions: flock LOCK_EX on the fd LOOP_CLR_FD goes
    through (a second open would defer it; its close releases the lock),
    so no udev probe, which holds a shared one, interleaves with the
    teardown.  A lock held past _calls.DETACH_LOCK_WAIT_S (not a probe)
    does not stop the detach."""
    deadline_ns = _retry.deadline_after(_calls.DETACH_LOCK_WAIT_S)
    if not _calls.flock_wait(device._fd, fcntl.LOCK_EX, deadline_ns):
        log.warning("%s: still locked by another process after %s s; detaching anyway",
                    device.path, _calls.DETACH_LOCK_WAIT_S)


def detach_failed(device: LoopDevice, rc: int) -> None:
    """After a failed lc_detach (``rc``: its answer): retry, or raise with
    the device still bound and open (closed if it was not bound)."""
    if rc in (-errno.EAGAIN, -errno.EINTR):
        # the kernel is busy, or a signal (its handler ran): the EAGAIN policy
        rc = _calls.retry_eagain(lambda: _c.lib.lc_detach(device._fd))
    if rc >= 0:
        device._fd = -1
        return
    if rc <= -_NOT_WRITTEN_BACK:
        raise _not_written_back(-rc - _NOT_WRITTEN_BACK, device.path)
    if rc == -errno.ENXIO and _unbound(device._fd):
        device.close()  # nothing bound to keep open for
    raise error_from_errno(-rc, device.path)


def _write_back(device: LoopDevice) -> None:
    """lc_flush, EINTR retried (a handler that raises ends it)."""
    while True:
        rc = _c.lib.lc_flush(device._fd)
        if rc != -errno.EINTR:
            break
    if rc < 0:
        raise _not_written_back(-rc, device.path)


def _not_written_back(err: int, path: str) -> OSError:
    return error_from_errno(err, path, f"{os.strerror(err)}: the device's cached writes "
                            "could not be written back; it stays bound")


def _unbound(fd: int) -> bool:
    """Whether the kernel says the device open as ``fd`` has no backing file."""
    info = _c.ffi.new("struct lc_loop_info64 *")
    return bool(_c.lib.lc_get_status64(fd, info) == -errno.ENXIO)


def unbind_fresh(device: LoopDevice) -> None:
    """Unbind and close a device attach() bound moments ago and is not
    handing out: nobody wrote to it, so there is nothing to write back,
    and a failure to unbind could not be acted on."""
    device._drop_lock()  # first: another opener defers LOOP_CLR_FD
    nodes.remove_nodes(device._made_nodes)
    device._made_nodes = ()
    fd, device._fd = device._fd, -1
    _calls.retry_eagain(lambda: _c.lib.lc_clr_fd(fd))
    os.close(fd)


# --- a deferred detach: LOOP_CLR_FD while others hold the device open
# only marks it autoclear; the kernel unbinds at the last close ---------------------

def released(number: int, diskseq: Optional[int]) -> bool:
    """Whether the binding that had ``diskseq`` is gone from ``loopN``:
    unbound, or bound again since (a new disk sequence number)."""
    if not _sysfs.loop_bound(number):
        return True
    if diskseq is None:
        return False
    now = _sysfs.block_diskseq(f"loop{number}")
    return now is not None and now != diskseq


def after_unbind(number: int, diskseq: Optional[int], wait: Optional[float],
                 deadline_ns: int = 0) -> bool:
    """After a successful LOOP_CLR_FD: True if the backing file is
    released, False if the kernel deferred it (without ``wait``);
    with ``wait`` seconds, wait for it (until ``deadline_ns`` if given:
    a burst's) or raise TimeoutError naming who still holds the device."""
    if released(number, diskseq):
        return True
    if wait is None:
        log.debug("%s: still open elsewhere; the kernel detaches it at the last close",
                  device_path(number))
        return False
    deadline_ns = deadline_ns or _retry.deadline_after(wait)
    with KernelUevents() as events:  # before the next check: no event missed
        if events.wait_until(lambda: released(number, diskseq), deadline_ns):
            return True
    raise TimeoutError(errno.ETIMEDOUT, f"still bound {wait:g} s after the detach: "
                       f"{holders(number)}", device_path(number))

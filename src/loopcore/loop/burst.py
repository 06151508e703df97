"""Bursts: :func:`attach_many` binds many backing files under one hold
of the control lock, a chunk of them per C call, all or nothing
(:func:`detach_many`, its counterpart, is :mod:`.detach_burst`'s: a
process that detaches does not import the attach machinery).

A burst pays the per-attach costs once -- the lock, the Python around
each bind -- so what is left is the kernel's work: LOOP_CONFIGURE, and
LOOP_CTL_GET_FREE making a new device where none is free.
"""
from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's core: signal imports enum
import errno
import os
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence  # run time: get_type_hints

from .. import _c, _retry
from .._log import get_logger
from ..errors import TypeError, translate
from . import nodes, teardown
from .backing import Backing, BackingFile
from .binding import attach_timeout, bind_error, check_bound, device_from_result, refuses_direct_io
from .control import control
from .device import LoopDevice
from .info import LO_NAME_SIZE
from .policy import attach_making_nodes, attach_request
from .request import DIRECT_IO, AttachRequest, check_backing

if TYPE_CHECKING:
    from .._native import CData

__all__ = ["attach_many"]

log = get_logger("loop")

# Backing files open at once: a burst binds chunk after chunk, so it needs
# one fd per device it returns plus this many, not two per device.
CHUNK = 256


@translate
def attach_many(backings: Iterable[Backing], *, read_only: bool = False,
                autoclear: bool = False, partscan: bool = False, direct_io: bool = True,
                block_size: int = 0, offset: int = 0, size_limit: int = 0,
                timeout: Optional[float] = None, make_nodes: bool = False) -> List[LoopDevice]:
    """Bind each of ``backings`` (paths, fds or file objects) to a free
    loop device and return the devices, open, in the same order.

    The options are :func:`attach`'s and hold for every device (``offset``
    and ``size_limit`` too, as losetup applies them to each file).  All the
    binds happen in one C call under one hold of ``/dev/loop-control``'s
    lock (the kernel makes new devices as the free ones run out), so a
    burst costs little more than the kernel's work.

    All or nothing: if one backing file cannot be opened or bound, or a
    signal handler raises (Ctrl-C) part-way, the devices this call bound
    are detached again before the error propagates, and no fd stays open.
    ``timeout`` bounds the waits for the lock and for busy devices, for
    the whole burst.  The pre-5.8 path (no LOOP_CONFIGURE, or
    LOOPCORE_FORCE_LEGACY=1) binds one by one, with the same guarantee,
    and so does ``make_nodes`` (see :func:`attach`).
    """
    request = AttachRequest(read_only=read_only, autoclear=autoclear, partscan=partscan,
                            direct_io=direct_io, block_size=block_size, offset=offset,
                            size_limit=size_limit, timeout=timeout)
    if isinstance(backings, (str, bytes)):
        raise TypeError("attach_many takes an iterable of backing files, not one path")
    items = list(backings)
    if not items:
        return []
    devices: List[LoopDevice] = []
    try:
        if make_nodes or nodes.wanted(False):
            for backing in items:  # one by one, each device's nodes made
                devices.append(attach_making_nodes(
                    lambda: attach_request(backing, request), request))  # noqa: B023
        elif request.use_legacy():
            for backing in items:  # one by one
                devices.append(attach_request(backing, request))
        else:
            with control.held(request.deadline_ns):  # one hold for the whole burst
                request.options |= _c.lib.LC_ATTACH_CONTROL_HELD
                for first in range(0, len(items), CHUNK):
                    _attach_chunk(items[first:first + CHUNK], request, devices)
    except BaseException:
        for device in devices:
            teardown.unbind_fresh(device)  # bound moments ago by this call; nobody wrote to it
        raise
    return devices


def _attach_chunk(chunk: Sequence[Backing], request: AttachRequest,
                  devices: List[LoopDevice]) -> None:
    """Open, bind and check one chunk of a burst (the control lock held),
    appending its devices to ``devices``; its backing fds are closed."""
    opened: List[BackingFile] = []
    try:
        probe = bool(request.flags & DIRECT_IO)
        for backing in chunk:
            opened.append(BackingFile.open(backing, request.read_only, probe_direct_io=probe))
        flags = [check_backing(request, bf) for bf in opened]
        results = _bind_all(opened, flags, request)
        # From here the LoopDevices own the fds: made with signals held (their
        # Python handlers run when the block ends), so a Ctrl-C cannot fall
        # between a device and its fd.
        first = len(devices)
        held = _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
        try:
            devices.extend([device_from_result(results[i]) for i in range(len(opened))])
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, held)
        for i, bf in enumerate(opened):
            check_bound(devices[first + i], bf, request, results[i])
    finally:
        for bf in opened:
            bf.close()


def _bind_all(opened: Sequence[BackingFile], flags: List[int],
              request: AttachRequest) -> CData:
    """lc_attach_many until every file is bound: the results (fd, number,
    ...), one per file.  If this raises, nothing stays bound."""
    count = len(opened)
    ffi = _c.ffi
    fds = ffi.new("int32_t[]", [bf.fd for bf in opened])
    item_flags = ffi.new("uint32_t[]", flags)
    names = ffi.new("uint8_t[]", b"".join(
        bf.file_name_field().ljust(LO_NAME_SIZE, b"\0") for bf in opened))
    results = ffi.new("struct lc_attach_result[]", count)
    for i in range(count):
        results[i].fd = results[i].lock_fd = -1
    done = ffi.new("uint32_t *")
    # with CONTROL_HELD: the burst holds the lock; READ_DEVNUM until learnt
    options = request.options | control.read_devnum_option
    start = first_attempt = 0
    try:
        while start < count:
            req = request.fill(-1, options, 0, b"", first_attempt)
            rc = _c.lib.lc_attach_many(control.fd(), req, fds + start, item_flags + start,
                                       names + start * LO_NAME_SIZE, count - start,
                                       results + start, done)
            start += done[0]
            if rc >= 0:
                break
            failed = results[start]
            first_attempt = 0
            if rc == -errno.EINTR:
                # A signal interrupted a wait: its handler runs now and may
                # raise (Ctrl-C: everything is undone below); else go on.
                if _retry.expired(request.deadline_ns):
                    raise attach_timeout(failed.failed_step, failed.number)
                first_attempt = failed.attempts
                continue
            if refuses_direct_io(rc, failed, item_flags[start]):
                log.debug("%s: LOOP_CONFIGURE with direct I/O: EINVAL; again, buffered",
                          opened[start].name)
                item_flags[start] &= ~DIRECT_IO
                continue
            raise bind_error(rc, failed, request, opened[start].name)
    except BaseException:
        # Every result with an fd is bound (also the ones of a call a
        # signal handler interrupted the bookkeeping of).
        for i in range(count):
            if results[i].fd >= 0:
                if results[i].lock_fd >= 0:  # first: a second opener defers LOOP_CLR_FD
                    os.close(results[i].lock_fd)
                    results[i].lock_fd = -1
                _c.lib.lc_clr_fd(results[i].fd)
                os.close(results[i].fd)
                results[i].fd = -1
        raise
    return results

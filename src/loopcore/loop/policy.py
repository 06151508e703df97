"""The attach policy, top to bottom.

:func:`attach` checks its arguments, opens the backing file, picks the
path (LOOP_CONFIGURE on 5.8+, else the legacy LOOP_SET_FD +
LOOP_SET_STATUS64; forced either way by ``legacy=`` or
LOOPCORE_FORCE_LEGACY=1), binds in one C call (``binding.bind``: lock,
GET_FREE, open, bind, read back, with systemd's retries), checks what the
kernel did -- distrusting LOOP_CONFIGURE for the process if it ignored
settings, as Linux 5.8 could -- and fixes the rest (a stale BLKROSET, a
size that missed the offset).  On any failure nothing stays bound.

The builders' variants: ``number=`` binds a chosen device (made with
LOOP_CTL_ADD if missing), ``reuse=True`` returns a device bound to the
same bytes already (losetup --nooverlap, in ``reuse``) -- decided and
bound under the control lock -- and ``lock=`` hands the device back
flock()ed, the lock taken inside lc_attach before the bind so no udev
probe comes between.

The arguments become one :class:`~.request.AttachRequest`, checked once
and shared with attach_many(); the bind and the post-bind check are
``binding``'s, the pre-5.8 path ``legacy``'s.
"""
from __future__ import annotations

import builtins
import os
from typing import TYPE_CHECKING, Callable, Optional

from .. import _c
from .._log import get_logger
from ..errors import converted
from . import _calls, binding, nodes, teardown
from .backing import Backing, BackingFile
from .control import control, missing_node_error
from .device import LoopDevice
from .legacy import bind_legacy
from .locks import LOCK_SHARED
from .request import (
    DIRECT_IO,
    READ_SETTINGS,
    AttachRequest,
    LockArg,
    check_backing,
    plain_request,
)
from .reuse import find_reusable

if TYPE_CHECKING:
    from .._native import CData

__all__ = ["attach"]  # attach_request, attach_making_nodes: attach_many's, not public

log = get_logger("loop")

_ZERO = 0  # attach()'s default offset, size limit and block size


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
    make_nodes: bool = False,
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

    ``make_nodes`` (or LOOPCORE_MAKE_NODES=1 in the environment), for a
    ``/dev`` without devtmpfs (a container's static tmpfs): make the
    device's node and, after a partition scan, its partitions' nodes from
    the numbers in sysfs (mode 0660, group disk); detach() removes the
    partition nodes made.  Without it a missing node is FileNotFoundError
    (ENOENT) saying so.

    Raises ValueError/TypeError for bad arguments before any syscall, an
    OSError (PermissionError for a read-write attach of a backing that
    cannot be written) otherwise; on failure nothing stays bound.  A
    block size above the page size is up to the kernel: ValueError if it
    refuses.
    """
    # The translate decorator's work, inline: a wrapper frame costs a
    # measurable share of a 50 us cycle.
    try:
        making_nodes = make_nodes or nodes.wanted(False)
        # The common attach, by identity with the defaults (an equal value
        # of another type, 0.0 or False, takes the checked path below): its
        # request is made once, and shared.
        if (number is None and lock is False and timeout is None and legacy is None
                and offset is _ZERO and size_limit is _ZERO and block_size is _ZERO
                and not partscan and not reuse and not making_nodes):
            request = plain_request(read_only, autoclear, direct_io)
        else:
            # positional: keywords cost a measurable share here too
            request = AttachRequest(read_only, autoclear, partscan, direct_io, block_size,
                                    offset, size_limit, number, lock, legacy, timeout)
        if making_nodes:
            return attach_making_nodes(lambda: attach_request(backing, request, reuse), request)
        return attach_request(backing, request, reuse)
    except (builtins.OSError, builtins.ValueError, builtins.TypeError) as e:
        new = converted(e)
        if new is e:
            raise
        raise new.with_traceback(e.__traceback__) from None


def attach_making_nodes(attach_one: Callable[[], LoopDevice],
                        request: AttachRequest) -> LoopDevice:
    """``attach_one()`` with the nodes a /dev without devtmpfs lacks made
    first (the device's) and after (its partitions'); a device another
    attach took meanwhile, its node missing, is tried again."""
    for attempt in range(_calls.ATTACH_ATTEMPTS):
        chosen = request.number if request.number >= 0 else None  # -1: GET_FREE's
        request.created = nodes.prepare(chosen) or request.created
        try:
            device = attach_one()
        except builtins.FileNotFoundError as e:
            number = nodes.loop_number_of_path(e.filename)
            if number is None or attempt == _calls.ATTACH_ATTEMPTS - 1 \
                    or missing_node_error(number) is None:
                raise
            continue
        try:
            device._made_nodes = nodes.make_partition_nodes(device.number)
        except BaseException:
            teardown.unbind_fresh(device)
            raise
        return device
    raise AssertionError("unreachable")


def attach_request(backing: Backing, request: AttachRequest,
                   reuse_bound: bool = False) -> LoopDevice:
    """attach() of one backing file with a checked request (attach_many's
    legacy path binds each of its files so)."""
    device = None
    if (type(backing) is str or isinstance(backing, (bytes, os.PathLike))) \
            and not reuse_bound and not request.use_legacy():
        # A path, the common case: lc_attach opens it itself (one C call).
        bf = BackingFile.unopened(backing if type(backing) is str else os.fsdecode(backing))
        if bf is not None:
            try:
                device = _attach_new(bf, request, request.flags, False)
            except binding.SettingsIgnored:
                # Linux 5.8 ignored part of LOOP_CONFIGURE (fixed in 5.9):
                # like systemd, the legacy path from now on, with the file
                # opened below, as the legacy bind needs it.
                control.distrust_configure()
    if device is None:
        with BackingFile.open(backing, request.read_only,
                              probe_direct_io=bool(request.flags & DIRECT_IO)) as bf:
            flags = check_backing(request, bf)
            use_legacy = request.use_legacy()
            if not reuse_bound:
                device = _attach_new(bf, request, flags, use_legacy)
            else:
                with control.held(request.deadline_ns):
                    reused = find_reusable(bf, request)
                    if reused is not None:
                        return reused
                    request.options |= _c.lib.LC_ATTACH_CONTROL_HELD
                    device = _attach_new(bf, request, flags, use_legacy)
    if request.lock_mode == LOCK_SHARED:
        # Exclusive until the device was ready; now others may read.
        try:
            device._adopt_lock(device._lock_fd, LOCK_SHARED)
        except BaseException:
            teardown.unbind_fresh(device)
            raise
    return device


def _attach_new(bf: BackingFile, request: AttachRequest, flags: int,
                use_legacy: bool) -> LoopDevice:
    """Bind a device, check what the kernel did, fix the rest; on failure
    nothing stays bound, and a device LOOP_CTL_ADD made for this call is
    removed again."""
    try:
        if use_legacy:
            device, state = bind_legacy(bf, request, flags)
        else:  # LOOP_CONFIGURE: bind and configure in one ioctl, inside lc_attach
            state = binding.bind(bf, request, flags)
            device = binding.device_from_result(state)
        try:
            # check_bound checks the outcome of the options that read the
            # settings back, and a read-only disk: without either, nothing
            if request.options & READ_SETTINGS or state.disk_read_only:
                _check_or_unbind(device, bf, request, state)
        except binding.SettingsIgnored:
            if use_legacy or bf.fd < 0:
                raise  # an unopened file: attach_request opens it for the legacy bind
            # Linux 5.8 could ignore LOOP_CONFIGURE's PARTSCAN and block size
            # (fixed in 5.9).  Like systemd: distrust LOOP_CONFIGURE for the
            # rest of the process and bind a new device the old way (the
            # detached one may still be winding down).
            control.distrust_configure()
            device, state = bind_legacy(bf, request, flags)
            _check_or_unbind(device, bf, request, state)
    except BaseException:
        if request.created:
            _remove_created(request.number)
        raise
    return device


def _check_or_unbind(device: LoopDevice, bf: BackingFile, request: AttachRequest,
                     state: CData) -> None:
    """The post-bind check; a device that fails it is unbound."""
    try:
        binding.check_bound(device, bf, request, state)
    except BaseException:
        teardown.unbind_fresh(device)
        raise


def _remove_created(number: int) -> None:
    """Best effort: remove a device this attach made and then failed to
    bind (systemd's backoff for a device still winding down)."""
    ctl = control.fd()
    rc = _calls.retry_ebusy(lambda: _c.lib.lc_ctl_remove(ctl, number), _calls.REMOVE_ATTEMPTS)
    log.debug("/dev/loop%d: made for a failed attach; LOOP_CTL_REMOVE: %s", number,
              "ok" if rc >= 0 else f"errno {-rc}")

"""Loop devices that exist already: :func:`open` and :func:`detach` by
path or number, and :func:`loop_number_of` (is this node a loop device?)."""
from __future__ import annotations

import builtins
import errno
import os
import stat
from typing import Optional, Union

from .. import _sysfs
from .._validate import U64_MAX, check_int, check_number, check_timeout
from ..errors import LoopBusyError, NotALoopDeviceError, TypeError, translate
from . import nodes
from .control import missing_node_error
from .device import LoopDevice
from .diskseq import check_diskseq, read_diskseq
from .info import device_path

__all__ = ["DeviceRef", "open", "detach", "loop_number_of"]

DeviceRef = Union[str, bytes, "os.PathLike[str]", int]
"""A loop device: its path (``/dev/loop3``) or its number (``3``)."""


def loop_number_of(path: str, st: os.stat_result) -> int:
    """N for a loop device node, or raise NotALoopDeviceError."""
    if not stat.S_ISBLK(st.st_mode):
        raise NotALoopDeviceError(errno.ENOTBLK, "not a loop device", path)
    number = _sysfs.loop_number(st.st_rdev)
    if number is None:
        raise NotALoopDeviceError(errno.ENODEV, "not a loop device", path)
    return number


def _device_from_ref(ref: DeviceRef) -> str:
    if isinstance(ref, int):  # a bool too: check_number refuses it
        return device_path(check_number(ref))
    if isinstance(ref, (str, bytes, os.PathLike)):
        return os.fsdecode(ref)
    raise TypeError(f"a loop device is a path or a number, not {type(ref).__name__}")


@translate
def open(path: DeviceRef, *, diskseq: Optional[int] = None,  # noqa: A001
         make_nodes: bool = False) -> LoopDevice:
    """Open an existing loop device by path (or number).

    Opens read-write, falling back to read-only where the node or the
    device refuses writing.  NotALoopDeviceError for anything else.

    ``diskseq`` (a ``LoopDevice.diskseq`` or udev's ``DISKSEQ`` noted
    earlier) makes it refuse, with DiskseqMismatchError (ESTALE), a device
    that is no longer that disk: detached, and maybe bound to something
    else, since.  The check is made on the open fd, which pins the
    binding, so it cannot go stale between check and use.

    ``make_nodes`` (or LOOPCORE_MAKE_NODES=1): make ``/dev/loopN`` and
    its partitions' nodes where no devtmpfs did (see :func:`attach`);
    detach() removes the partition nodes made.
    """
    if diskseq is not None:
        check_int("diskseq", diskseq, minimum=1, maximum=U64_MAX)
    name = _device_from_ref(path)
    by_number = nodes.loop_number_of_path(name)
    make = nodes.wanted(make_nodes)
    if make and by_number is not None:
        nodes.make_node(f"loop{by_number}")
    try:
        st = os.stat(name)
    except builtins.FileNotFoundError:
        missing = None if by_number is None else missing_node_error(by_number)
        if missing is not None:
            raise missing from None
        raise
    number = loop_number_of(name, st)
    try:
        fd = os.open(name, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        check_diskseq(fd, name, diskseq)
    except BaseException:
        os.close(fd)
        raise
    device = LoopDevice(number, fd, st.st_rdev, read_diskseq(fd))
    if make:
        try:
            device._made_nodes = nodes.make_partition_nodes(number)
        except BaseException:
            device.close()
            raise
    return device


@translate
def detach(path_or_number: DeviceRef, *, diskseq: Optional[int] = None,
           wait: Optional[float] = None) -> bool:
    """Detach a loop device by path or number (``losetup -d``); with
    ``diskseq``, only if it is still that disk (see :func:`open`).

    True if the kernel released the backing file now, False if it
    deferred that because others hold the device open; ``wait`` seconds
    wait for the release (TimeoutError naming the holders): see
    :meth:`LoopDevice.detach`."""
    check_timeout(wait, "wait")
    device = open(path_or_number, diskseq=diskseq)
    try:
        if _sysfs.loop_partition_numbers(device.number):
            _remove_partitions_left(device)
        return device.detach(wait=wait)
    finally:
        device.close()  # still open if detach failed


def _remove_partitions_left(device: LoopDevice) -> None:
    """Partitions BLKPG registered on a device without partscan (by
    add_partitions() or partx in a process that died before its detach)
    outlive LOOP_CLR_FD, and even the device's next bind: delete them
    first.  A partscan device's are the kernel's, which LOOP_CLR_FD drops;
    one in use (mounted) stays, and LOOP_CLR_FD defers the detach."""
    try:
        device.remove_partitions()
    except LoopBusyError:
        pass

"""kpartx's verbs: map a disk's partitions with device-mapper, list,
update and delete the maps.

>>> from loopcore.dm import kpartx
>>> maps = kpartx.add("disk.img")          # kpartx -a -s disk.img
>>> [m.name for m in maps]                 # ['loop0p1', 'loop0p2']
>>> kpartx.delete("disk.img")              # kpartx -d: maps removed, loop0 detached

The names, uuids and tables are kpartx's (see :mod:`.partmaps`).  What
kpartx does not do: ``add`` is all or nothing (a failure part-way removes
the maps it made, and detaches the loop device it attached), every name is
checked before the first ioctl, a map in use stops ``delete`` before it
removes anything, and the calls return once udev has made the nodes
(``sync``; kpartx's ``-s``).
"""
from __future__ import annotations

import errno
import os
import stat
import time
from itertools import chain
from typing import Iterator, List, NamedTuple, Optional, Tuple, Union

from .. import _sysfs, errors
from .._log import get_logger
from .._retry import pauses
from ..loop import LoopDevice, attach, detach, find, read_partition_table
from .client import REMOVE_RETRIES, REMOVE_RETRY_DELAY, DeviceMapper
from .names import DevId, DevIdArg, KernelName
from .nodes import node_path
from .partmaps import PartMap, is_part_of, parent_uuid, plan
from .records import DeviceEntry, DeviceInfo
from .targets import LinearParams, device_arg

__all__ = ["add", "check_source", "delete", "list", "update", "PartMap"]

log = get_logger("dm")

PathArg = Union[str, "os.PathLike[str]"]


class _Parent(NamedTuple):
    path: str                      # the node the maps are on
    devnum: int
    name: str                      # what the maps are named after
    uuid: str                      # what their uuids are made of
    attached: Optional[LoopDevice]  # bound here for an image, None otherwise
    loop: Optional[int]            # the image's loop device number


def _mapper(mapper: Optional[DeviceMapper], sync: bool) -> Tuple[DeviceMapper, bool]:
    """(the client to use, whether it is ours to close)."""
    if mapper is not None:
        return mapper, False
    return DeviceMapper(udev="auto" if sync else "off"), True


def check_source(source: PathArg) -> Tuple[str, os.stat_result]:
    """(path, stat) of ``source`` if it is a block device or an image file:
    what every verb checks before it opens anything (ValueError,
    FileNotFoundError, DmError(ENODEV) for anything else)."""
    path = os.fspath(source)
    if not isinstance(path, str) or not path:
        raise errors.ValueError(f"no device or image given: {source!r}")
    st = os.stat(path)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise errors.error_from_errno(errno.ENODEV, path, "not a block device or an image file",
                                      dm=True)
    return path, st


def _check_delimiter(delimiter: Optional[str]) -> None:
    if delimiter is not None and not isinstance(delimiter, str):
        raise errors.TypeError(f"delimiter must be a str, not {type(delimiter).__name__}")


def _parent(mapper: Optional[DeviceMapper], source: PathArg, *, bind: bool,
            read_only: bool) -> Optional[_Parent]:
    """The device whose partitions are mapped: a block device as given, or
    for an image file the loop device bound to it (attached now when
    ``bind`` and there is none, as kpartx does).  None for an unbound image
    when not ``bind``."""
    path, st = check_source(source)
    attached, loop = None, None
    if stat.S_ISREG(st.st_mode):
        bound = sorted(find(os.path.realpath(path)), key=lambda info: info.number)
        if bound:
            loop = bound[0].number
            path = bound[0].path
        elif not bind:
            return None
        else:
            attached = attach(path, read_only=read_only)
            loop, path = attached.number, attached.path
        st = os.stat(path)
    try:
        entry = _dm_entry(mapper, st.st_rdev)
    except BaseException:
        _undo_attach(attached)
        raise
    name = entry.name if entry is not None else os.path.basename(path)
    uuid = parent_uuid(entry.uuid if entry is not None else None, st.st_rdev)
    return _Parent(path, st.st_rdev, name, uuid, attached, loop)


def _dm_entry(mapper: Optional[DeviceMapper], devnum: int) -> Optional[DeviceEntry]:
    """The device-mapper device ``devnum`` is, None for another device
    (asked of the kernel only for a ``dm-N``: listing needs no dm)."""
    if not (_sysfs.block_name(devnum) or "").startswith("dm-"):
        return None
    client = mapper if mapper is not None else DeviceMapper(udev="off")
    try:
        return next((e for e in client.list_devices() if e.devnum == devnum), None)
    finally:
        if mapper is None:
            client.close()


def _undo_attach(attached: Optional[LoopDevice]) -> None:
    if attached is not None:
        try:
            attached.detach()
        except OSError as exc:
            log.warning("could not detach %s again: %s", attached.path, exc)


def _plan(parent: _Parent, delimiter: Optional[str]) -> List[PartMap]:
    table = read_partition_table(parent.path)
    return plan(table, parent=parent.name, devnum=parent.devnum, device=parent.path,
                uuid=parent.uuid, delimiter=delimiter)


def _partmaps(mapper: DeviceMapper, parent: _Parent) -> Iterator[Tuple[KernelName, int]]:
    """(kernel name, partition number) of every map kpartx -d would remove:
    one linear target on the parent and a ``part<N>-<parent uuid>`` uuid."""
    device = device_arg(parent.devnum)
    for entry in mapper.list_devices():
        if entry.devnum == parent.devnum:
            continue
        number = is_part_of(entry.uuid, parent.uuid)
        if number is None:
            continue
        targets = mapper.table(KernelName.stored(entry.kernel_name))
        if len(targets) != 1 or targets[0].target_type != "linear":
            continue
        if LinearParams.parse(targets[0].params).device != device:
            continue
        yield KernelName.stored(entry.kernel_name), number


def _info(mapper: DeviceMapper, dev: DevIdArg) -> Optional[DeviceInfo]:
    """The device's state, None if there is no such device (one ioctl)."""
    try:
        return mapper.info(dev)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return None
        raise


def _make(mapper: DeviceMapper, maps: List[PartMap], parent_uuid: str,
          read_only: bool) -> None:
    """Create (or reload, or rename and reload, as kpartx does) every map;
    all or nothing: the maps made here are removed again on a failure."""
    ops = []
    for m in maps:  # every question asked before the first change
        by_name = _info(mapper, m.name)
        if by_name is not None:
            owner = by_name.uuid or ""
            if is_part_of(owner, parent_uuid) is None:  # kpartx's check_uuid()
                why = ("a partition of a different device" if owner.startswith("part")
                       and "-" in owner else "not a kpartx partition")
                raise errors.error_from_errno(errno.EEXIST, node_path(m.name),
                                              f"already in use, and {why}", dm=True)
            ops.append((m, "reload", ""))
            continue
        by_uuid = _info(mapper, DevId.uuid(m.uuid))
        old = by_uuid.name if by_uuid is not None else ""
        ops.append((m, "rename" if old else "create", old))
    made: List[str] = []
    try:
        for m, op, old in ops:
            if op == "create":
                mapper.create(m.name, uuid=m.uuid, table=[m.target], read_only=read_only)
                made.append(m.name)
            else:
                if op == "rename":
                    mapper.rename(old, m.name)
                mapper.load(m.name, [m.target], read_only=read_only)
                mapper.resume(m.name)
            log.debug("%s map %s: %s", op, m.name, m.target)
    except BaseException:
        for name in reversed(made):
            try:
                mapper.remove(name)
            except OSError as exc:
                log.warning("could not remove %s again: %s", name, exc)
        raise


def _run(source: PathArg, delimiter: Optional[str], read_only: bool, sync: bool,
         mapper: Optional[DeviceMapper], prune: bool) -> List[PartMap]:
    check_source(source)
    _check_delimiter(delimiter)
    client, own = _mapper(mapper, sync)
    try:
        parent = _parent(client, source, bind=True, read_only=read_only)
        assert parent is not None
        try:
            maps = _plan(parent, delimiter)
            _make(client, maps, parent.uuid, read_only)
            if prune:
                wanted = {m.number for m in maps}
                for name, number in _partmaps(client, parent):
                    if number not in wanted:
                        client.remove(name)
        except BaseException:
            _undo_attach(parent.attached)
            raise
        if parent.attached is not None:
            parent.attached.close()  # stays bound, as kpartx leaves it
        return maps
    finally:
        if own:
            client.close()


@errors.translate
def add(source: PathArg, *, delimiter: Optional[str] = None, read_only: bool = False,
        sync: bool = True, mapper: Optional[DeviceMapper] = None) -> List[PartMap]:
    """``kpartx -a``: map every partition of ``source`` (a block device, or
    an image file: attached to a loop device first unless one is bound to
    it) and return the maps, in the order made.

    ``delimiter`` is kpartx's ``-p``; ``read_only`` its ``-r`` (read-only
    maps, and a read-only loop device for an image); ``sync`` its ``-s``
    (return once udev made the nodes; False is ``-n``).  ``mapper``: a
    :class:`DeviceMapper` to use instead of a new one.  A map of that name
    with kpartx's uuid is reloaded, one with that uuid under another name
    renamed; a map of that name that is not this disk's partition is an
    error (FileExistsError) and nothing is made.  Partitions that are gone
    keep their maps (see :func:`update`)."""
    return _run(source, delimiter, read_only, sync, mapper, prune=False)


@errors.translate
def update(source: PathArg, *, delimiter: Optional[str] = None, read_only: bool = False,
           sync: bool = True, mapper: Optional[DeviceMapper] = None) -> List[PartMap]:
    """``kpartx -u``: :func:`add`, then remove this disk's maps of
    partitions that are no longer in its table."""
    return _run(source, delimiter, read_only, sync, mapper, prune=True)


@errors.translate
def delete(source: PathArg, *, sync: bool = True,
           mapper: Optional[DeviceMapper] = None) -> List[str]:
    """``kpartx -d``: remove the maps of ``source``'s partitions (found by
    their table and uuid, whatever their names) and return their names.
    For an image file, the loop device bound to it is detached after, as
    kpartx does; an image with none has nothing to delete.  A map that
    stays open (past a probe's moment, remove()'s retry budget) stops the
    call before anything is removed (DmBusyError)."""
    check_source(source)
    client, own = _mapper(mapper, sync)
    try:
        parent = _parent(client, source, bind=False, read_only=True)
        if parent is None:
            return []
        found = sorted(_partmaps(client, parent), key=lambda item: -item[1])
        # A udev or blkid probe holds a fresh map open for a moment: look
        # again with remove()'s budget before calling a map in use
        # (kpartx -d gives up on the first EBUSY and leaves the rest).
        for pause in chain(pauses(REMOVE_RETRIES, REMOVE_RETRY_DELAY, 1.0), [None]):
            busy = [str(name) for name, _ in found if client.info(name).open_count]
            if not busy:
                break
            if pause is None:
                raise errors.error_from_errno(errno.EBUSY, node_path(busy[0]),
                                              f"in use (open): {', '.join(busy)}", dm=True)
            time.sleep(pause)
        for name, _ in found:
            client.remove(name)
        if parent.loop is not None:
            detach(parent.loop)
        return [str(name) for name, _ in found]
    finally:
        if own:
            client.close()


@errors.translate
def list(source: PathArg, *, delimiter: Optional[str] = None,  # noqa: A001
         mapper: Optional[DeviceMapper] = None) -> List[PartMap]:
    """``kpartx -l``: the maps :func:`add` would make, without making them.
    An image no loop device is bound to is attached for the reading and
    detached after, as kpartx does (the names need its number)."""
    _check_delimiter(delimiter)
    parent = _parent(mapper, source, bind=True, read_only=True)
    assert parent is not None
    try:
        return _plan(parent, delimiter)
    finally:
        _undo_attach(parent.attached)

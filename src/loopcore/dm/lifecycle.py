"""The verbs that make, change and end a device: create, load, suspend,
resume, rename, remove, and keeping ``/dev/mapper`` in step with them.

Each one that sends a uevent cooperates with udev the same way (see
:mod:`.udev`): a listener opened before the ioctl, the udev cookie in
the header, a wait after it, and the node made by hand when udev made
none (:meth:`Session._settle`).
"""
from __future__ import annotations

import dataclasses
import errno
import time
from itertools import chain
from typing import Iterator, List, Optional, Tuple

from .. import errors
from .._log import get_logger
from .._retry import pauses
from .._validate import check_int, check_timeout
from .ioctl import (
    F_DEFERRED_REMOVE,
    F_NOFLUSH,
    F_READONLY,
    F_SKIP_LOCKFS,
    F_SUSPEND,
    F_UUID,
    Cmd,
    wipe,
)
from .names import DevIdArg, KernelName, as_name, as_uuid, decode
from .nodes import node_path, sync_nodes
from .queries import Queries
from .records import DeviceInfo
from .session import api, only_name
from .table import TableArg, as_table, has_keys, pack_targets
from .targets import error as error_target
from .udev import UDEV_COOKIE

__all__ = ["REMOVE_RETRIES", "REMOVE_RETRY_DELAY", "Lifecycle"]

log = get_logger("dm")

# EBUSY on remove: libdevmapper's 25 tries, 200 ms apart (the caller's to
# change, per call: a fixed pause, not loopcore's own backoff).
REMOVE_RETRIES = 25
REMOVE_RETRY_DELAY = 0.2



class Lifecycle(Queries):
    """:class:`~loopcore.dm.DeviceMapper`'s verbs that change devices."""

    @api
    def create(self, name: str, *, uuid: Optional[str] = None,
               table: Optional[TableArg] = None, read_only: bool = False) -> DeviceInfo:
        """Create a device and, given a table, load it and resume.

        Without a table the device stays suspended with no table (like
        ``dmsetup create --notable``).  If loading or resuming fails the
        device is removed again and the error raised.  ``/dev/mapper/<name>``
        is created (``<name>`` mangled).  A table with keys goes to the
        kernel with SECURE_DATA and loopcore's copy is wiped after.  Returns
        the device's state.
        """
        only_name(name, "the name of a new device")
        raw, kernel_name, filename = self._name(name)
        dm_uuid = as_uuid(uuid, self.name_mangling) if uuid is not None else None
        payload, count, secure = bytearray(), 0, False
        if table is not None:
            targets = as_table(table)
            payload, count = pack_targets(targets)
            secure = has_keys(targets)
        ro = F_READONLY if read_only else 0
        # udev makes the node on the resume's change event; a device
        # without a table gets no link from udev, so loopcore's node.
        waiter = self._waiter() if table is not None else None
        try:
            reply = self._channel.call(Cmd.DEV_CREATE, name=raw,
                                       uuid=dm_uuid.raw if dm_uuid is not None else b"",
                                       flags=ro, filename=filename)
            try:
                if waiter is None:
                    self._add_node(kernel_name, reply.dev)
                if table is not None:
                    self._channel.call(Cmd.TABLE_LOAD, name=raw, flags=ro,
                                       payload=payload, target_count=count, secure=secure,
                                       filename=filename)
                    reply = self._channel.call(Cmd.DEV_SUSPEND, name=raw,
                                               filename=filename,
                                               event_nr=UDEV_COOKIE if waiter else 0)
                    if waiter is not None:
                        self._settle(waiter, reply, reply.dev, "change", kernel_name)
            except BaseException as exc:
                log.debug("create %s failed (%r): removing it again", kernel_name, exc)
                try:
                    self._remove(name, deferred=False, retries=REMOVE_RETRIES,
                                 retry_delay=0.05)
                except OSError:
                    pass
                raise
        finally:
            if secure:
                wipe(payload)
            if waiter is not None:
                waiter.close()
        return self._info(reply)

    @api
    def load(self, name: DevIdArg, table: TableArg, *, read_only: bool = False) -> DeviceInfo:
        """Load ``table`` as the device's inactive table (resume swaps it in).
        A table with keys goes with SECURE_DATA, as in :meth:`create`."""
        raw, uuid, filename = self._address(name)
        targets = as_table(table)
        payload, count = pack_targets(targets)
        secure = has_keys(targets)
        try:
            return self._info(self._channel.call(
                Cmd.TABLE_LOAD, name=raw, uuid=uuid, filename=filename,
                flags=F_READONLY if read_only else 0, payload=payload, target_count=count,
                secure=secure))
        finally:
            if secure:
                wipe(payload)

    @api
    def clear(self, name: DevIdArg) -> DeviceInfo:
        """Drop the device's inactive table."""
        return self._info(self._call(Cmd.TABLE_CLEAR, name))

    @api
    def wipe_table(self, name: DevIdArg) -> DeviceInfo:
        """Replace the live table with one error target of the same size and
        resume (``dmsetup wipe_table``): I/O in flight completes, new I/O
        fails, and the devices the old table used are let go."""
        size = sum(line.length for line in self.status(name))
        if not size:
            raise errors.error_from_errno(errno.ENXIO, self._address(name)[2],
                                          "the device has no live table", dm=True)
        self.load(name, [error_target(0, size)])
        return self.resume(name)

    @api
    def suspend(self, name: DevIdArg, *, noflush: bool = False,
                skip_lockfs: bool = False) -> DeviceInfo:
        """Suspend the device (``noflush`` keeps queued I/O; ``skip_lockfs``
        does not freeze a file system on it)."""
        flags = F_SUSPEND | (F_NOFLUSH if noflush else 0) | (F_SKIP_LOCKFS if skip_lockfs else 0)
        return self._info(self._call(Cmd.DEV_SUSPEND, name, flags=flags))

    @api
    def resume(self, name: DevIdArg) -> DeviceInfo:
        """Resume the device, making a loaded inactive table live (cooperating
        with udev, once udev has processed the change)."""
        waiter = self._waiter()
        if waiter is None:
            return self._info(self._call(Cmd.DEV_SUSPEND, name))
        with waiter:
            reply = self._call(Cmd.DEV_SUSPEND, name, event_nr=UDEV_COOKIE)
            self._settle(waiter, reply, reply.dev, "change", reply.kernel_name)
        return self._info(reply)

    def _remove(self, dev: DevIdArg, *, deferred: bool, retries: int,
                retry_delay: float) -> bool:
        name, uuid, filename = self._address(dev)
        flags = F_DEFERRED_REMOVE if deferred else 0
        # The remove reply carries no device number: udev's event is
        # matched by the one asked for first.
        devnum = self._channel.call(Cmd.DEV_STATUS, name=name, uuid=uuid,
                                    filename=filename).dev if self.udev_sync else 0
        waiter = self._waiter()
        try:
            # libdevmapper's fixed pause between EBUSY tries (growth 1), the
            # schedule made only once a try failed
            schedule: Optional[Iterator[Tuple[int, Optional[float]]]] = None
            while True:
                try:
                    reply = self._channel.call(Cmd.DEV_REMOVE, name=name, uuid=uuid,
                                               flags=flags, filename=filename,
                                               event_nr=UDEV_COOKIE if waiter else 0)
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    if schedule is None:
                        schedule = enumerate(chain(pauses(retries + 1, retry_delay, 1.0),
                                                   [None]), 1)
                    attempt, pause = next(schedule)
                    if pause is None:
                        raise
                log.debug("DM_DEV_REMOVE %s: EBUSY, retry %d of %d in %g s", filename,
                          attempt, retries, pause)
                time.sleep(pause)
            if deferred and reply.flags & F_DEFERRED_REMOVE:
                log.debug("%s still open: removed on last close", filename)
                return False
            # By uuid, the kernel's reply names the device (it fills in both).
            kernel_name = decode(name) if name else reply.kernel_name
            if waiter is not None:
                self._settle(waiter, reply, devnum, "remove", kernel_name)
            else:
                self._remove_node(kernel_name)
        finally:
            if waiter is not None:
                waiter.close()
        return True

    @api
    def remove(self, name: DevIdArg, *, deferred: bool = False, retries: int = REMOVE_RETRIES,
               retry_delay: float = REMOVE_RETRY_DELAY) -> bool:
        """Remove the device and its ``/dev/mapper`` node.

        EBUSY (the device is open) is retried ``retries`` times,
        ``retry_delay`` seconds apart, as libdevmapper does; then
        :class:`~loopcore.errors.DmBusyError` (a ``DeviceBusyError``).  With
        ``deferred`` an open device is instead marked for removal on last
        close: returns False then (the node stays until :meth:`mknodes`),
        True when it was removed now.
        """
        check_int("retries", retries)
        if retry_delay is None:  # check_timeout's None (no limit) means nothing here
            raise errors.TypeError("retry_delay must be a number of seconds, not None")
        check_timeout(retry_delay, "retry_delay")
        return self._remove(name, deferred=deferred, retries=0 if deferred else retries,
                            retry_delay=retry_delay)

    @api
    def remove_all(self, *, deferred: bool = False) -> List[str]:
        """Remove every device that is not open (REMOVE_ALL); with
        ``deferred`` open ones go on last close.  Returns the removed names."""
        before = {d.kernel_name: d.name for d in self.list_devices()}
        self._channel.call(Cmd.REMOVE_ALL, flags=F_DEFERRED_REMOVE if deferred else 0)
        after = {d.kernel_name for d in self.list_devices()}
        gone = [k for k in before if k not in after]
        for k in gone:
            self._remove_node(k)
        return [before[k] for k in gone]

    @api
    def rename(self, name: DevIdArg, new_name: str) -> DeviceInfo:
        """Rename the device (and its node); both names are mangled."""
        only_name(new_name, "the new name")
        new_raw = as_name(new_name, self.name_mangling).raw
        raw = self._stored_name(name)
        new_kernel = decode(new_raw)
        waiter = self._waiter()
        try:
            reply = self._channel.call(Cmd.DEV_RENAME, name=raw, payload=new_raw + b"\0",
                                       filename=node_path(decode(raw), self.dev_dir),
                                       event_nr=UDEV_COOKIE if waiter else 0)
            if waiter is not None:
                self._wait_udev(waiter, reply, reply.dev, "change")
        finally:
            if waiter is not None:
                waiter.close()
        self._remove_node(decode(raw))
        self._add_node(new_kernel, reply.dev)
        return dataclasses.replace(self._info(reply), name=self._unmangle(new_kernel),
                                   kernel_name=KernelName.stored(new_kernel))

    @api
    def set_uuid(self, name: DevIdArg, uuid: str) -> DeviceInfo:
        """Give a device without a uuid one (the kernel refuses to change a set uuid)."""
        new_uuid = as_uuid(uuid, self.name_mangling)
        raw = self._stored_name(name)
        reply = self._channel.call(Cmd.DEV_RENAME, name=raw, flags=F_UUID,
                                   payload=new_uuid.raw + b"\0",
                                   filename=node_path(decode(raw), self.dev_dir))
        return dataclasses.replace(self._info(reply), uuid=self._unmangle(decode(new_uuid.raw)))

    @api
    def mknodes(self, name: Optional[DevIdArg] = None) -> None:
        """Make ``/dev/mapper`` match the kernel (``dmsetup mknodes``): create
        missing nodes, fix wrong ones, and, without ``name``, remove block
        nodes of devices that are gone (after a deferred remove, say)."""
        if name is not None:
            info = self.info(name)
            self._add_node(info.kernel_name, info.devnum)
            return
        devices = {d.kernel_name: d.devnum for d in self.list_devices()}
        if self.manage_nodes:
            sync_nodes(self.dev_dir, devices)


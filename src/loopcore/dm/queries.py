"""The verbs that read what device-mapper knows: the interface version,
the devices, one device's state, table, status and dependencies, and the
target types loaded.  Nothing here changes a device.
"""
from __future__ import annotations

import errno
from typing import List, Tuple

from .. import errors
from .ioctl import (
    DM_MAX_TYPE_NAME,
    F_NOFLUSH,
    F_QUERY_INACTIVE_TABLE,
    F_STATUS_TABLE,
    F_UUID,
    Cmd,
)
from .names import DevIdArg, encode
from .records import (
    DeviceEntry,
    DeviceInfo,
    Status,
    StatusLine,
    TargetVersion,
    parse_deps,
    parse_name_list,
    parse_versions,
)
from .session import Session, api
from .table import Table, Target, mask_keys, unpack_specs

__all__ = ["Queries"]



class Queries(Session):
    """:class:`~loopcore.dm.DeviceMapper`'s reading verbs."""

    @api
    def version(self) -> Tuple[int, int, int]:
        """The kernel's dm ioctl interface version, e.g. (4, 47, 0)."""
        return self._channel.call(Cmd.VERSION).version

    @api
    def list_devices(self) -> List[DeviceEntry]:
        """Every device: name, uuid, devnum, event_nr (kernel order); names
        and uuids unmangled, ``kernel_name`` as stored."""
        # UUID asks kernels >= 4.46 to add each uuid (and say when there is none)
        reply = self._channel.call(Cmd.LIST_DEVICES, flags=F_UUID, out=True)
        return parse_name_list(reply.payload, self._unmangle)

    @api
    def info(self, name: DevIdArg) -> DeviceInfo:
        """The device's state (DEV_STATUS).  ENXIO if it does not exist."""
        return self._info(self._call(Cmd.DEV_STATUS, name))

    @api
    def exists(self, name: DevIdArg) -> bool:
        """Whether the device exists."""
        try:
            self.info(name)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return False
            raise
        return True

    @api
    def table(self, name: DevIdArg, *, inactive: bool = False, showkeys: bool = False) -> Table:
        """The live (or the inactive) table, as the kernel reports it, with
        dm-crypt and dm-integrity keys replaced by zeros unless ``showkeys``
        (as ``dmsetup table [--showkeys]``; see :func:`mask_keys`).

        The read is a SECURE_DATA ioctl (the kernel wipes its copy; a table
        may hold keys) and loopcore's ioctl buffer is wiped after it."""
        flags = F_STATUS_TABLE | (F_QUERY_INACTIVE_TABLE if inactive else 0)
        reply = self._call(Cmd.TABLE_STATUS, name, flags=flags, out=True, secure=True)
        table = Table(Target(*spec) for spec in unpack_specs(reply.payload,
                                                             reply.target_count))
        return table if showkeys else mask_keys(table)

    @api
    def status(self, name: DevIdArg, *, inactive: bool = False,
               noflush: bool = False) -> Status:
        """Each target's status line (``str()`` reads like ``dmsetup status``).
        Status lines, not a table: they cannot be loaded."""
        flags = (F_QUERY_INACTIVE_TABLE if inactive else 0) | (F_NOFLUSH if noflush else 0)
        reply = self._call(Cmd.TABLE_STATUS, name, flags=flags, out=True)
        return Status(StatusLine(*spec) for spec in unpack_specs(reply.payload,
                                                                 reply.target_count))

    @api
    def deps(self, name: DevIdArg, *, inactive: bool = False) -> List[int]:
        """Devnums of the devices the table uses."""
        flags = F_QUERY_INACTIVE_TABLE if inactive else 0
        return parse_deps(self._call(Cmd.TABLE_DEPS, name, flags=flags, out=True).payload)

    @api
    def target_versions(self) -> List[TargetVersion]:
        """The target types loaded in the kernel (``dmsetup targets``)."""
        return parse_versions(self._channel.call(Cmd.LIST_VERSIONS, out=True).payload)

    @api
    def target_version(self, target_type: str) -> TargetVersion:
        """One target type's version, loading its module if needed.
        Unknown types raise OSError (EINVAL, the kernel's answer)."""
        if not isinstance(target_type, str):
            raise errors.TypeError(f"target type must be a str, not {type(target_type).__name__}")
        if not target_type or len(encode(target_type)) >= DM_MAX_TYPE_NAME \
                or "/" in target_type:
            raise errors.ValueError(f"bad target type {target_type!r}")
        if not self._channel.supports(Cmd.GET_TARGET_VERSION):
            for tv in self.target_versions():
                if tv.name == target_type:
                    return tv
            raise self._unknown_target(target_type)
        try:
            data = self._channel.call(Cmd.GET_TARGET_VERSION, name=encode(target_type),
                                      out=True).payload
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise self._unknown_target(target_type) from None
            raise
        found = parse_versions(data)
        if not found:
            raise self._unknown_target(target_type)
        return found[0]

    def _unknown_target(self, target_type: str) -> OSError:
        return errors.error_from_errno(errno.EINVAL, self.control,
                                       f"unknown target type {target_type!r}", dm=True)

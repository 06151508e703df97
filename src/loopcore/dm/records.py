"""What device-mapper reports, as records: a device's state
(:class:`DeviceInfo`), a listed device (:class:`DeviceEntry`), a loaded
target type (:class:`TargetVersion`), a target's status line
(:class:`StatusLine`); and the parsers that read the last three from the
kernel's payloads.
"""
from __future__ import annotations

import dataclasses
import os
import struct
from typing import TYPE_CHECKING, Callable, Dict, List, NamedTuple, Optional, Tuple

from .ioctl import (
    ALIGN,
    DEPS,
    NAME_LIST,
    NAME_LIST_HAS_UUID,
    NAME_LIST_NO_UUID,
    NAME_LIST_TRAILER,
    VERSIONS,
    Flag,
)
from .names import KernelName, decode
from .nodes import node_path

if TYPE_CHECKING:
    from .targets import TargetStatus

__all__ = ["DeviceEntry", "DeviceInfo", "Status", "StatusLine", "TargetVersion",
           "parse_deps", "parse_name_list", "parse_versions"]


class _HasDevnum:
    """major and minor of a record's ``devnum`` (a dev_t)."""

    devnum: int

    @property
    def major(self) -> int:
        return os.major(self.devnum)

    @property
    def minor(self) -> int:
        return os.minor(self.devnum)


@dataclasses.dataclass(frozen=True)
class DeviceInfo(_HasDevnum):
    """What DEV_STATUS (and most commands) report about a device.

    ``name`` and ``uuid`` are unmangled (as dmsetup shows them);
    ``kernel_name`` is the name as the kernel stores it, which names the
    ``/dev/mapper`` node (:attr:`path`)."""

    name: str
    uuid: str
    devnum: int
    open_count: int
    event_nr: int
    target_count: int
    flags: Flag
    kernel_name: str = ""

    @property
    def suspended(self) -> bool:
        return Flag.SUSPEND in self.flags

    @property
    def read_only(self) -> bool:
        return Flag.READONLY in self.flags

    @property
    def active(self) -> bool:
        """A live table is present (dmsetup: "Tables present: LIVE")."""
        return Flag.ACTIVE_PRESENT in self.flags

    live_table = active

    @property
    def inactive_table(self) -> bool:
        return Flag.INACTIVE_PRESENT in self.flags

    @property
    def deferred_remove(self) -> bool:
        return Flag.DEFERRED_REMOVE in self.flags

    @property
    def path(self) -> str:
        return node_path(self.kernel_name or self.name)

    def as_dict(self) -> Dict[str, object]:
        return {
            "name": self.name, "kernel_name": self.kernel_name or self.name,
            "uuid": self.uuid or None, "major": self.major,
            "minor": self.minor, "open_count": self.open_count, "event_nr": self.event_nr,
            "target_count": self.target_count, "suspended": self.suspended,
            "read_only": self.read_only, "live_table": self.active,
            "inactive_table": self.inactive_table, "deferred_remove": self.deferred_remove,
        }


@dataclasses.dataclass(frozen=True)
class DeviceEntry(_HasDevnum):
    """One device of :meth:`DeviceMapper.list_devices`.  ``uuid`` is "" for
    none, None where the kernel (before 4.46) does not report it.  ``name``
    and ``uuid`` are unmangled; ``kernel_name`` (a :class:`KernelName`) is
    the stored name, which addresses this very device in any method."""

    name: str
    uuid: Optional[str]
    devnum: int
    event_nr: Optional[int]
    kernel_name: str = ""


@dataclasses.dataclass(frozen=True)
class TargetVersion:
    """A target type the kernel has loaded, as ``dmsetup targets`` lists it."""

    name: str
    version: Tuple[int, int, int]

    def __str__(self) -> str:
        return f"{self.name:<16} v{self.version[0]}.{self.version[1]}.{self.version[2]}"


class StatusLine(NamedTuple):
    """One target's status, as ``dmsetup status`` prints it: the target's
    sectors and type, and the status text the target reports (not a
    table line: it cannot be loaded)."""

    start: int
    length: int
    target_type: str
    params: str

    def __str__(self) -> str:
        return f"{self.start} {self.length} {self.target_type} {self.params}"

    def parsed(self) -> "TargetStatus":
        """The typed status (:class:`~loopcore.dm.ThinPoolStatus`,
        :class:`~loopcore.dm.MirrorStatus` ...); DmParseError for a type
        loopcore does not model or text it cannot read."""
        from .targets import parse_status  # status records are built on top of these
        return parse_status(self.target_type, self.params)


class Status(tuple[StatusLine, ...]):  # not typing.Tuple, which would add a Generic base
    """A device's status: one :class:`StatusLine` per target;
    ``str()`` reads like ``dmsetup status``."""

    def __str__(self) -> str:
        return "\n".join(str(line) for line in self)

    def __repr__(self) -> str:
        return f"Status({list(self)!r})"


# Where each record's string starts, and its fixed part (views of lc_dm.h's structs).
_NAME_LIST, _NAME_AT = NAME_LIST.struct, NAME_LIST.offsets["name"]
_TRAILER, _UUID_AT = NAME_LIST_TRAILER.struct, NAME_LIST_TRAILER.offsets["uuid"]
_VERSIONS, _VERSION_NAME_AT = VERSIONS.struct, VERSIONS.offsets["name"]
_DEPS, _DEVS_AT = DEPS.struct, DEPS.offsets["dev"]


def _string(data: bytes, start: int, end: int) -> str:
    """The NUL-terminated string at ``start`` (or up to ``end``)."""
    stop = data.find(b"\0", start, end)
    return decode(data[start:stop if stop >= 0 else end])


def parse_name_list(data: bytes, unmangle: Callable[[str], str]) -> List[DeviceEntry]:
    """LIST_DEVICES output: ``dm_name_list`` records chained by ``next``
    (relative to the record), each name followed, 8-aligned, by event_nr
    and (when asked with UUID, 4.46+) flags and the uuid."""
    if len(data) < _NAME_AT:
        return []
    devices = []
    pos = 0
    while True:
        dev, nxt = _NAME_LIST.unpack_from(data, pos)
        if dev == 0 and pos == 0 and nxt == 0:
            return []  # "no devices" marker
        name_start = pos + _NAME_AT
        name_end = data.find(b"\0", name_start)
        if name_end < 0:
            name_end = len(data)
        kernel_name = decode(data[name_start:name_end])
        entry_end = pos + nxt if nxt else len(data)
        extra = name_end + 1
        extra += -extra % ALIGN
        event_nr: Optional[int] = None
        uuid: Optional[str] = None
        if extra + _UUID_AT <= entry_end:
            event_nr, lflags = _TRAILER.unpack_from(data, extra)
            if lflags & NAME_LIST_HAS_UUID:
                uuid = unmangle(_string(data, extra + _UUID_AT, len(data)))
            elif lflags & NAME_LIST_NO_UUID:
                uuid = ""
        devices.append(DeviceEntry(unmangle(kernel_name), uuid, dev, event_nr,
                                   KernelName.stored(kernel_name)))
        if not nxt:
            return devices
        pos += nxt


def parse_versions(data: bytes) -> List[TargetVersion]:
    """LIST_VERSIONS / GET_TARGET_VERSION output: ``dm_target_versions``
    records chained by ``next`` (relative to the record)."""
    found = []
    pos = 0
    while pos + _VERSION_NAME_AT <= len(data):
        nxt, v0, v1, v2 = _VERSIONS.unpack_from(data, pos)
        name = _string(data, pos + _VERSION_NAME_AT, len(data))
        if name:
            found.append(TargetVersion(name, (v0, v1, v2)))
        if not nxt:
            break
        pos += nxt
    return found


def parse_deps(data: bytes) -> List[int]:
    """TABLE_DEPS output: ``dm_target_deps``, a count and as many dev_t's."""
    if len(data) < _DEVS_AT:
        return []
    count, _pad = _DEPS.unpack_from(data, 0)
    return list(struct.unpack_from(f"={count}Q", data, _DEVS_AT))

"""The device-mapper ioctl: the kernel's structs, commands and flags, and
the one call every command goes through (:meth:`Channel.call`).

A DM ioctl passes one buffer: ``struct dm_ioctl`` (the header) followed by
the command's payload, read and rewritten in place by the kernel.  The C
shim only issues the ioctl (``lc_dm_ioctl``); packing is done here, with
views (:data:`VIEWS`) derived from the structs as ``csrc/lc_dm.h``
declares them, where the compiler checks them against
``<linux/dm-ioctl.h>``.

Per command, :data:`COMMANDS` says which flags it takes and which
interface version it needs.  A flag a command does not take is a
programming error (ValueError before the ioctl); a command the kernel is
too old for is an OSError(EOPNOTSUPP) before the ioctl.
"""
from __future__ import annotations

import enum
import errno
import os
from typing import Dict, NamedTuple, Optional, Tuple, Union

from .. import _c, errors
from .._c import StructView
from .._log import DEBUG, get_logger
from . import nodes
from .names import decode, encode

__all__ = ["ALIGN", "COMMANDS", "DEPS", "DM_MAX_TYPE_NAME", "HEADER", "HEADER_SIZE",
           "MAX_SIZE", "NAME_LIST", "NAME_LIST_HAS_UUID", "NAME_LIST_NO_UUID",
           "NAME_LIST_TRAILER", "OUT_SIZE", "SPEC", "TARGET_MSG", "VERSIONS", "VIEWS",
           "Channel", "Cmd", "CmdSpec", "Flag", "Reply", "flag_names", "wipe"]

log = get_logger("dm")

ALIGN = 8  # payload records start 8-aligned (the kernel's align_ptr)

# Each kernel struct by its <linux/dm-ioctl.h> name, as Python packs it:
# derived from lc_dm.h's ``struct lc_<name>``, the one place its fields
# are written.  A flexible array's offset (``offsets["name"]``) is where
# the record's string starts, which may be before the struct's padded
# size (dm_name_list: 12 of 16).
VIEWS: Dict[str, StructView] = {
    name: _c.struct_view(f"struct lc_{name}")
    for name in ("dm_ioctl", "dm_target_spec", "dm_target_deps", "dm_name_list",
                 "dm_target_versions", "dm_target_msg")
}
HEADER = VIEWS["dm_ioctl"].struct
HEADER_SIZE = HEADER.size                        # 312
SPEC = VIEWS["dm_target_spec"].struct            # 40, then the params string
DEPS = VIEWS["dm_target_deps"]                   # count, then as many dev_t's
NAME_LIST = VIEWS["dm_name_list"]                # dev, next, then the name
VERSIONS = VIEWS["dm_target_versions"]           # next, version, then the name
TARGET_MSG = VIEWS["dm_target_msg"].struct       # sector, then the message
# After each dm_name_list name, 8-aligned (4.37+): event_nr, then (4.46+,
# when asked with UUID) flags saying whether a uuid string follows.
NAME_LIST_TRAILER = _c.struct_view("struct lc_dm_name_list_trailer")
NAME_LIST_HAS_UUID = 1
NAME_LIST_NO_UUID = 2
# A target type's name, NUL included (dm_target_spec.target_type).
DM_MAX_TYPE_NAME: int = dict(_c.ffi.typeof("struct lc_dm_target_spec").fields)[
    "target_type"].type.length

# Buffer policy (libdevmapper's): 16 KiB for commands that return data,
# doubled on BUFFER_FULL; the size that last worked is remembered.
OUT_SIZE = 16 * 1024
MAX_SIZE = 256 * 1024 * 1024


class Cmd(enum.IntEnum):
    """DM ioctl command numbers (the ``nr`` of ``_IOWR(0xfd, nr, struct dm_ioctl)``)."""

    VERSION = 0
    REMOVE_ALL = 1
    LIST_DEVICES = 2
    DEV_CREATE = 3
    DEV_REMOVE = 4
    DEV_RENAME = 5
    DEV_SUSPEND = 6
    DEV_STATUS = 7
    DEV_WAIT = 8
    TABLE_LOAD = 9
    TABLE_CLEAR = 10
    TABLE_DEPS = 11
    TABLE_STATUS = 12
    LIST_VERSIONS = 13
    TARGET_MSG = 14
    DEV_SET_GEOMETRY = 15
    DEV_ARM_POLL = 16
    GET_TARGET_VERSION = 17


class Flag(enum.IntFlag):
    """``struct dm_ioctl`` flags."""

    READONLY = 1 << 0
    SUSPEND = 1 << 1
    PERSISTENT_DEV = 1 << 3
    STATUS_TABLE = 1 << 4
    ACTIVE_PRESENT = 1 << 5
    INACTIVE_PRESENT = 1 << 6
    BUFFER_FULL = 1 << 8
    SKIP_BDGET = 1 << 9
    SKIP_LOCKFS = 1 << 10
    NOFLUSH = 1 << 11
    QUERY_INACTIVE_TABLE = 1 << 12
    UEVENT_GENERATED = 1 << 13
    UUID = 1 << 14
    SECURE_DATA = 1 << 15
    DATA_OUT = 1 << 16
    DEFERRED_REMOVE = 1 << 17
    INTERNAL_SUSPEND = 1 << 18
    IMA_MEASUREMENT = 1 << 19


class CmdSpec(NamedTuple):
    """What one command accepts: the flags it may be sent with (a plain
    int, tested on every call), and the interface version that introduced
    it (also sent as the request's version, as libdevmapper does)."""

    valid_flags: int
    min_version: Tuple[int, int, int]


_V4 = (4, 0, 0)
_F = Flag

# Valid flags and minimum versions per command (the minimum versions are
# libdevmapper's _cmd_data_v4 table).  SECURE_DATA goes with every command
# whose buffer may carry a key: tables in and out, and target messages
# ("key set" to dm-crypt).
COMMANDS: Dict[Cmd, CmdSpec] = {cmd: CmdSpec(int(flags), version) for cmd, flags, version in (
    (Cmd.VERSION, 0, _V4),
    (Cmd.REMOVE_ALL, _F.DEFERRED_REMOVE, _V4),
    # UUID: 4.46+ also report each device's uuid (older kernels ignore it)
    (Cmd.LIST_DEVICES, _F.UUID, _V4),
    (Cmd.DEV_CREATE, _F.READONLY | _F.PERSISTENT_DEV, _V4),
    (Cmd.DEV_REMOVE, _F.DEFERRED_REMOVE, _V4),
    # UUID: the payload is a uuid to set, not a new name
    (Cmd.DEV_RENAME, _F.UUID, _V4),
    # no SUSPEND: resume
    (Cmd.DEV_SUSPEND, _F.SUSPEND | _F.NOFLUSH | _F.SKIP_LOCKFS, _V4),
    (Cmd.DEV_STATUS, 0, _V4),
    # returns the status (or, with STATUS_TABLE, the table) like TABLE_STATUS
    (Cmd.DEV_WAIT, _F.QUERY_INACTIVE_TABLE | _F.NOFLUSH | _F.STATUS_TABLE | _F.SECURE_DATA,
     _V4),
    (Cmd.TABLE_LOAD, _F.READONLY | _F.SECURE_DATA, _V4),
    (Cmd.TABLE_CLEAR, 0, _V4),
    (Cmd.TABLE_DEPS, _F.QUERY_INACTIVE_TABLE, _V4),
    (Cmd.TABLE_STATUS, _F.QUERY_INACTIVE_TABLE | _F.NOFLUSH | _F.STATUS_TABLE
     | _F.SECURE_DATA, _V4),
    (Cmd.LIST_VERSIONS, 0, (4, 1, 0)),
    (Cmd.TARGET_MSG, _F.SECURE_DATA, (4, 2, 0)),
    (Cmd.DEV_SET_GEOMETRY, 0, (4, 6, 0)),
    # libdevmapper says 4.36, but the command came after 4.36.0 (as
    # devicemapper-rs notes): 4.37 is the first that reliably has it.
    (Cmd.DEV_ARM_POLL, 0, (4, 37, 0)),
    (Cmd.GET_TARGET_VERSION, 0, (4, 41, 0)),
)}

# Interface versions this code speaks: 4.x (the kernel refuses a request
# whose major differs or whose minor is newer than its own).
SUPPORTED_MAJOR = 4

# The flags the call path sets and tests, as plain ints, for every dm
# module: any operation on an IntFlag builds a new enum member (~0.5 us
# each), so Flag is for display and records.
F_BUFFER_FULL = int(Flag.BUFFER_FULL)
F_DATA_OUT = int(Flag.DATA_OUT)
F_DEFERRED_REMOVE = int(Flag.DEFERRED_REMOVE)
F_NOFLUSH = int(Flag.NOFLUSH)
F_QUERY_INACTIVE_TABLE = int(Flag.QUERY_INACTIVE_TABLE)
F_READONLY = int(Flag.READONLY)
F_SECURE_DATA = int(Flag.SECURE_DATA)
F_SKIP_LOCKFS = int(Flag.SKIP_LOCKFS)
F_STATUS_TABLE = int(Flag.STATUS_TABLE)
F_SUSPEND = int(Flag.SUSPEND)
F_UEVENT_GENERATED = int(Flag.UEVENT_GENERATED)
F_UUID = int(Flag.UUID)

# The command numbers the call path tests, as plain ints.
_NR_VERSION = int(Cmd.VERSION)
_NR_TARGET_MSG = int(Cmd.TARGET_MSG)


class _CmdEntry(NamedTuple):
    """What :meth:`Channel.call` reads per command, by number: the flags it
    takes, the version the header asks for, and whether this channel's
    kernel has the command (True until its version is known)."""

    valid_flags: int
    version: Tuple[int, int, int]
    supported: bool


def _entries(kernel: Optional[Tuple[int, int, int]]) -> Tuple[_CmdEntry, ...]:
    """Every command's :class:`_CmdEntry`, indexed by number, for a kernel
    of interface ``kernel`` (None: not known yet)."""
    assert sorted(COMMANDS) == list(range(len(COMMANDS)))  # numbers index the tuple
    return tuple(_CmdEntry(spec.valid_flags, spec.min_version,
                           kernel is None or kernel >= spec.min_version)
                 for _cmd, spec in sorted(COMMANDS.items()))


class Reply:
    """The kernel's answer: the header as it rewrote it (``flags`` a plain
    int; ``Flag(reply.flags)`` to show it), and the payload (``data_start``
    to ``data_size``; empty unless the call asked for it).  Names are as
    the kernel stores them (mangled), decoded when asked for: most replies'
    are never read."""

    __slots__ = ("version", "target_count", "open_count", "flags", "event_nr", "dev",
                 "_raw_name", "_raw_uuid", "payload")

    def __init__(self, version: Tuple[int, int, int], target_count: int, open_count: int,
                 flags: int, event_nr: int, dev: int, raw_name: bytes, raw_uuid: bytes,
                 payload: bytes) -> None:
        self.version = version
        self.target_count = target_count
        self.open_count = open_count
        self.flags = flags
        self.event_nr = event_nr
        self.dev = dev
        self._raw_name = raw_name
        self._raw_uuid = raw_uuid
        self.payload = payload

    @property
    def kernel_name(self) -> str:
        return decode(self._raw_name)

    @property
    def kernel_uuid(self) -> str:
        return decode(self._raw_uuid)


def wipe(buf: bytearray) -> None:
    """Overwrite ``buf`` with zeros in place (it may have held a key)."""
    buf[:] = bytes(len(buf))


def flag_names(flags: Union[Flag, int]) -> str:
    """``flags`` as the kernel header's names, "SUSPEND|NOFLUSH" ("0": none)."""
    return "|".join(f.name or "" for f in Flag if f & flags) or "0"


def _version_text(version: Tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


class _Buffer:
    """A request buffer kept for the next call: the bytes, the cffi pointer
    to them (made once), and how far the last call filled them (updated
    in place: a call makes no new record)."""

    __slots__ = ("data", "ptr", "used")

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.ptr = _c.ffi.from_buffer("uint8_t[]", self.data)
        self.used = 0


class Channel:
    """An open control node: its fd, the kernel's interface version, the
    reply-buffer size that last sufficed, and one request buffer reused
    from call to call (a call running in another thread meanwhile makes
    its own)."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.version: Optional[Tuple[int, int, int]] = None
        self.out_size = OUT_SIZE
        self._spare: Optional[_Buffer] = None
        self._commands = _ALL_SUPPORTED

    @classmethod
    def open(cls, path: str = nodes.CONTROL_PATH) -> "Channel":
        """Open ``path`` (making the node if needed, see
        :func:`nodes.ensure_control`) and ask the kernel's version.
        OSError(EPROTO) for an interface other than 4.x."""
        fd = _c.lib.lc_dm_open(encode(path))
        if fd in (-errno.ENOENT, -errno.ENODEV, -errno.ENXIO):
            nodes.ensure_control(path)
            fd = _c.lib.lc_dm_open(encode(path))
        if fd < 0:
            raise errors.error_from_errno(-fd, path, dm=True)
        channel = cls(fd, path)
        try:
            version = channel.call(Cmd.VERSION).version
            if version[0] != SUPPORTED_MAJOR:
                raise errors.error_from_errno(
                    errno.EPROTO, path, f"unsupported device-mapper interface "
                    f"{_version_text(version)} (need {SUPPORTED_MAJOR}.x)", dm=True)
        except BaseException:
            channel.close()
            raise
        log.debug("%s: interface %s", path, _version_text(version))
        return channel

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        """Close the fd (once)."""
        self._spare = None
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def supports(self, cmd: Cmd) -> bool:
        """Whether the kernel's interface version has ``cmd``."""
        return self._commands[cmd].supported

    def call(self, cmd: int, *, name: bytes = b"", uuid: bytes = b"", flags: int = 0,
             payload: Union[bytes, bytearray] = b"", event_nr: int = 0, target_count: int = 0,
             out: bool = False, grow: bool = True, secure: bool = False,
             filename: Optional[str] = None) -> Reply:
        """One DM ioctl.

        ``cmd`` is a :class:`Cmd` (or its number); ``name`` or ``uuid``
        (kernel form) address a device; ``flags`` are :class:`Flag` bits
        (a plain int is cheapest); ``payload`` follows the header.  ``out``
        selects a buffer with room for data coming back; BUFFER_FULL then
        doubles it and retries (when ``grow``).  ``secure`` (the buffer
        holds keys, going in or out) sets SECURE_DATA, so the kernel wipes
        its copies, and wipes this side's buffer after each attempt.
        Errors are OSErrors with ``filename`` (default: the control node)
        set.
        """
        if self.fd < 0:
            raise errors.ValueError("DeviceMapper is closed")
        valid_flags, version, supported = self._commands[cmd]
        if secure:
            flags |= F_SECURE_DATA
        if flags & ~valid_flags:
            raise errors.ValueError(f"DM_{Cmd(cmd).name} does not take "
                                    f"{flag_names(flags & ~valid_flags)}")
        if type(flags) is not int:
            flags = int(flags)  # a Flag is accepted; the header takes its value
        if not supported:
            raise self._unsupported(cmd, filename)
        need = HEADER_SIZE + len(payload)
        size = max(need + (-need % ALIGN), self.out_size if out else 0)
        debug = log.isEnabledFor(DEBUG)
        if debug:
            who = decode(name) or (f"uuid {decode(uuid)}" if uuid else "-")
            log.debug("DM_%s %s flags=%s, %d bytes", Cmd(cmd).name, who, flag_names(flags),
                      size)
        # the spare buffer if it is large enough (bytes the last call left
        # past ``need`` zeroed, so the kernel sees only this request)
        buf = self._spare
        self._spare = None
        if buf is None or len(buf.data) < size:
            # at least a reply buffer's size: the next calls fit in it too
            buf = _Buffer(max(size, self.out_size))
        elif buf.used > need:
            buf.data[need:buf.used] = bytes(buf.used - need)
        while True:
            data = buf.data
            try:
                HEADER.pack_into(data, 0, *version, size, HEADER_SIZE, target_count, 0,
                                 flags, event_nr, 0, 0, name, uuid, b"")
                if payload:
                    data[HEADER_SIZE:need] = payload
                while True:
                    rc = _c.lib.lc_dm_ioctl(self.fd, cmd, buf.ptr)
                    # Signal handlers have run by now (a raising one has
                    # raised): resume, as PEP 475 does.  Not a message: the
                    # target may have acted on it before the interruption.
                    if rc != -errno.EINTR or cmd == _NR_TARGET_MSG:
                        break
                    if debug:
                        log.debug("DM_%s: EINTR, again", Cmd(cmd).name)
                if rc < 0:
                    raise self._failed(cmd, -rc, name or uuid, filename, debug)
                (v0, v1, v2, data_size, data_start, tcount, open_count, rflags, revent, _pad,
                 dev, rname, ruuid, _data) = HEADER.unpack_from(data, 0)
                if rflags & F_BUFFER_FULL and grow and out:
                    if size * 2 > MAX_SIZE:
                        raise errors.error_from_errno(
                            errno.ENOBUFS, filename or self.path,
                            "device-mapper reply too large", dm=True)
                    if debug:
                        log.debug("DM_%s: buffer full at %d bytes, retrying with %d",
                                  Cmd(cmd).name, size, size * 2)
                    size *= 2
                    self.out_size = max(self.out_size, size)
                    buf = _Buffer(size)
                    continue
                reply_data = bytes(memoryview(data)[data_start:data_size]) \
                    if out and data_size > data_start else b""
            finally:
                if secure:
                    wipe(data)
            # Kept for the next call, with how far this one (or the kernel)
            # wrote; not one that held a key (wiped, and let go).
            if not secure:
                buf.used = max(need, min(data_size, size))
                self._spare = buf
            reply = Reply((v0, v1, v2), tcount, open_count, rflags, revent, dev, rname, ruuid,
                          reply_data)
            if cmd == _NR_VERSION:
                self.version = reply.version
                self._commands = _entries(reply.version)
            return reply

    def _unsupported(self, cmd: int, filename: Optional[str]) -> OSError:
        """EOPNOTSUPP: the kernel's interface is older than ``cmd``."""
        return errors.error_from_errno(
            errno.EOPNOTSUPP, filename or self.path,
            f"DM_{Cmd(cmd).name} needs device-mapper interface "
            f"{_version_text(COMMANDS[Cmd(cmd)].min_version)} (the kernel has "
            f"{_version_text(self.version or (0, 0, 0))})", dm=True)

    def _failed(self, cmd: int, err: int, who: bytes, filename: Optional[str],
                debug: bool) -> OSError:
        """The error of an ioctl that returned -``err``."""
        if debug:
            log.debug("DM_%s: %s", Cmd(cmd).name, errno.errorcode.get(err, err))
        message = "No such device-mapper device" if err == errno.ENXIO and who else None
        return errors.error_from_errno(err, filename or self.path, message, dm=True)


_ALL_SUPPORTED = _entries(None)

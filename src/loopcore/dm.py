"""Device-mapper through ``/dev/mapper/control``: no libdevmapper, no dmsetup.

The C shim issues the ioctl (``lc_dm_ioctl``); this module packs and parses
the version-4 buffers (``struct dm_ioctl`` plus payload), validates names
before any ioctl, grows the buffer on BUFFER_FULL, retries EBUSY on remove
like libdevmapper, and, since nobody else does it without udev, creates and
removes the ``/dev/mapper/<name>`` nodes itself.

>>> from loopcore import dm
>>> with dm.DeviceMapper() as mapper:
...     mapper.create("scratch", table=dm.Table([dm.zero(0, 2048)]))
...     print(mapper.table("scratch"))           # 0 2048 zero
...     mapper.remove("scratch")
"""
from __future__ import annotations

import dataclasses
import enum
import errno
import os
import stat
import struct
import subprocess
import time
import warnings
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ._native import ffi, lib
from .errors import error_from_errno

__all__ = [
    "DeviceMapper",
    "DeviceInfo",
    "DeviceEntry",
    "Flag",
    "Target",
    "Table",
    "TargetVersion",
    "linear",
    "striped",
    "zero",
    "error",
    "device_arg",
    "validate_name",
    "validate_uuid",
    "KernelName",
    "MANGLING_MODES",
    "mangle",
    "unmangle",
    "mask_keys",
    "CONTROL_PATH",
    "DEV_DIR",
]

CONTROL_PATH = "/dev/mapper/control"
DEV_DIR = "/dev/mapper"
MISC_MAJOR = 10

# struct dm_ioctl (linux/dm-ioctl.h), 312 bytes.
_HEADER = struct.Struct("=3IIIIiIIIQ128s129s7s")
HEADER_SIZE = _HEADER.size
_SPEC = struct.Struct("=QQiI16s")          # struct dm_target_spec, 40 bytes
_U32x2 = struct.Struct("=II")
_U64 = struct.Struct("=Q")
_VERSIONS = struct.Struct("=I3I")          # struct dm_target_versions head
_NAME_LIST = struct.Struct("=QI")          # struct dm_name_list head (dev, next)
DM_NAME_LEN = 128
DM_UUID_LEN = 129
DM_MAX_TYPE_NAME = 16
_ALIGN = 8

# Interface version we speak.  The kernel accepts any request whose minor
# is not newer than its own and writes its version back.
_REQUEST_VERSION = (4, 0, 0)

# Buffer policy (libdevmapper: 16 KiB for commands that return data,
# doubled on BUFFER_FULL).  The size that last worked is remembered.
_OUT_SIZE = 16 * 1024
_MAX_SIZE = 256 * 1024 * 1024

# EBUSY on remove: libdevmapper's 25 tries, 200 ms apart.
REMOVE_RETRIES = 25
REMOVE_RETRY_DELAY = 0.2


class Cmd(enum.IntEnum):
    """DM ioctl command numbers."""

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


_NAME_LIST_HAS_UUID = 1
_NAME_LIST_NO_UUID = 2


# --- names ----------------------------------------------------------------------

def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _decode(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


# Name mangling, as libdevmapper does it (dmsetup --manglename, "auto" by
# default).  The kernel takes any byte but '/' and NUL in a name, but udev
# names /dev/mapper nodes after it, so libdevmapper stores every byte outside
# this whitelist as "\xNN" (two lower-case hex digits) and decodes names
# (and uuids) it reads back.  A stored name with a byte outside the
# whitelist other than '\' makes libdevmapper fail the whole listing.
_WHITELIST = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                       b"abcdefghijklmnopqrstuvwxyz#+-.:=@_")
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
MANGLING_MODES = ("auto", "hex", "none")


class KernelName(str):
    """A device name exactly as the kernel stores it (``DeviceEntry.kernel_name``,
    ``DeviceInfo.kernel_name``).  Passed where a name is expected it is used
    as it is, whatever the mangling mode."""

    __slots__ = ()


def _check_mode(mode: str) -> str:
    if mode not in MANGLING_MODES:
        raise ValueError(f"name mangling mode must be one of {', '.join(MANGLING_MODES)}, "
                         f"got {mode!r}")
    return mode


def _mangle(raw: bytes, mode: str, what: str, text: str) -> bytes:
    if mode == "none":
        return raw
    if mode == "auto" and b"\\x5cx" in raw:
        raise ValueError(f"{what} {text!r} seems to be mangled more than once, which the "
                         "auto mangling mode does not allow")
    mixed = ValueError(f"{what} {text!r} contains mixed mangled and unmangled characters "
                       "or is mangled improperly")
    out = bytearray()
    # None: nothing to decide yet; True: this call encoded a byte; False:
    # the text holds "\x" sequences, i.e. it is already mangled.
    state: Optional[bool] = None
    i = 0
    while i < len(raw):
        # auto: "\x" and the next two characters are kept as they are,
        # unchecked, as libdevmapper does.
        if mode == "auto" and raw[i:i + 2] == b"\\x":
            if len(raw) - i < 4 or state is True:
                raise mixed
            out += raw[i:i + 4]
            state = False
            i += 4
            continue
        c = raw[i]
        if c in _WHITELIST:
            out.append(c)
        else:
            if mode == "auto" and state is False:
                raise mixed
            out += b"\\x%02x" % c
            state = True
        i += 1
    return bytes(out)


def _unmangle(raw: bytes, mode: str) -> bytes:
    if mode == "none" or b"\\" not in raw:
        return raw
    # Not a mangled name (libdevmapper refuses these): shown as stored.
    if any(c not in _WHITELIST and c != 0x5C for c in raw) or \
            (mode == "auto" and b"\\x5cx" in raw):
        return raw
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i:i + 2] == b"\\x" and i + 4 <= len(raw) \
                and raw[i + 2] in _HEX_DIGITS and raw[i + 3] in _HEX_DIGITS \
                and raw[i + 2:i + 4] != b"00":  # a name cannot hold NUL: kept
            out.append(int(raw[i + 2:i + 4], 16))
            i += 4
            continue
        out.append(raw[i])
        i += 1
    return bytes(out)


def mangle(text: str, mode: str = "auto") -> str:
    """``text`` (a device name or uuid) in the form dmsetup stores it.

    ``mode`` is dmsetup's ``--manglename``: "auto" (its default) encodes
    every byte outside ``[0-9A-Za-z#+-.:=@_]`` as ``\\xNN`` and keeps text
    that is already encoded (has ``\\x`` sequences) as it is; "hex" encodes
    every such byte, backslashes included; "none" changes nothing.  Raises
    ValueError where dmsetup refuses: in auto mode, text mixing encoded and
    unencoded characters, a ``\\x`` cut short, or ``\\x5cx`` (encoded twice).
    """
    raw = _mangle(_encode(text), _check_mode(mode), "name", text)
    return raw.decode("utf-8", "surrogateescape")


def unmangle(text: str, mode: str = "auto") -> str:
    """A stored name or uuid as dmsetup shows it: ``\\xNN`` decoded.

    Text that is not in mangled form (it holds a byte outside the whitelist
    other than '\\', or, in auto mode, ``\\x5cx``) is returned as it is:
    libdevmapper refuses such names.  A ``\\x`` without two hex digits
    after it, and ``\\x00``, stay as they are.  "none" changes nothing.
    """
    raw = _unmangle(_encode(text), _check_mode(mode))
    return raw.decode("utf-8", "surrogateescape")


def validate_name(name: str, mangling: str = "auto") -> bytes:
    """Check a device name as the kernel and libdevmapper would; return the
    name the kernel is given (mangled per ``mangling``, see :func:`mangle`;
    a :class:`KernelName` is taken as it is).

    Raises ValueError for an empty name, one containing '/' or NUL, one
    whose mangled form has 128 bytes or more, "control", "." and "..", and
    what :func:`mangle` refuses.
    """
    if not isinstance(name, str):
        raise TypeError(f"device name must be a str, not {type(name).__name__}")
    raw = _encode(name)
    if not raw:
        raise ValueError("device name is empty")
    if b"/" in raw or b"\0" in raw:
        raise ValueError(f"device name {name!r} contains '/' or NUL")
    if not isinstance(name, KernelName):
        raw = _mangle(raw, _check_mode(mangling), "device name", name)
    if len(raw) >= DM_NAME_LEN:
        mangled = f" mangled as {_decode(raw)!r}" if raw != _encode(name) else ""
        raise ValueError(f"device name {name!r} is too long ({len(raw)} bytes{mangled}, max "
                         f"{DM_NAME_LEN - 1})")
    if raw in (b"control", b".", b".."):
        raise ValueError(f"device name {name!r} is reserved")
    return raw


def validate_uuid(uuid: str, mangling: str = "auto") -> bytes:
    """Check a device uuid (non-empty, no NUL, under 129 bytes once mangled
    per ``mangling`` as libdevmapper mangles uuids); return the uuid the
    kernel is given."""
    if not isinstance(uuid, str):
        raise TypeError(f"uuid must be a str, not {type(uuid).__name__}")
    raw = _encode(uuid)
    if not raw:
        raise ValueError("uuid is empty")
    if b"\0" in raw:
        raise ValueError(f"uuid {uuid!r} contains NUL")
    raw = _mangle(raw, _check_mode(mangling), "uuid", uuid)
    if len(raw) >= DM_UUID_LEN:
        mangled = f" mangled as {_decode(raw)!r}" if raw != _encode(uuid) else ""
        raise ValueError(f"uuid {uuid!r} is too long ({len(raw)} bytes{mangled}, max "
                         f"{DM_UUID_LEN - 1})")
    return raw


def _node(name: str, dev_dir: str = DEV_DIR) -> str:
    return os.path.join(dev_dir, name)


# --- tables ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Target:
    """One line of a table: ``start`` and ``length`` in 512-byte sectors,
    the target ``type`` and its parameter string, as dmsetup writes them."""

    start: int
    length: int
    type: str
    params: str = ""

    def __post_init__(self) -> None:
        for field in ("start", "length"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"target {field} must be a non-negative int, got {value!r}")
            if value >= 1 << 64:
                raise ValueError(f"target {field} {value} does not fit in 64 bits")
        if not isinstance(self.type, str) or not self.type:
            raise ValueError(f"target type must be a non-empty str, got {self.type!r}")
        if len(_encode(self.type)) >= DM_MAX_TYPE_NAME or any(c.isspace() for c in self.type) \
                or "\0" in self.type:
            raise ValueError(f"bad target type {self.type!r} (max {DM_MAX_TYPE_NAME - 1} "
                             "bytes, no whitespace)")
        if not isinstance(self.params, str):
            raise TypeError(f"target params must be a str, not {type(self.params).__name__}")
        if "\0" in self.params or "\n" in self.params:
            # the params are not echoed: they may hold a key
            raise ValueError(f"{self.type} target params contain NUL or a newline")

    @property
    def end(self) -> int:
        """First sector after this target."""
        return self.start + self.length

    def __str__(self) -> str:
        # dmsetup prints "%llu %llu %s %s", a space after the type even
        # when the parameters are empty.
        return f"{self.start} {self.length} {self.type} {self.params}"


class Table(tuple[Target, ...]):  # not typing.Tuple, which would add a Generic base
    """A device's table: a sequence of :class:`Target`.

    ``str(table)`` is dmsetup's syntax, one target per line;
    :meth:`parse` reads that syntax back.
    """

    def __new__(cls, targets: Iterable[Target] = ()) -> "Table":
        items = tuple(targets)
        for t in items:
            if not isinstance(t, Target):
                raise TypeError(f"a Table holds Target records, not {type(t).__name__}")
        return super().__new__(cls, items)

    @classmethod
    def parse(cls, text: str) -> "Table":
        """Read dmsetup's table syntax: ``start length type params`` per line.

        Blank lines and '#' comments are skipped; surrounding whitespace is
        trimmed, as dmsetup does.  Raises ValueError on a malformed line.
        """
        targets = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split(None, 3)
            if len(parts) < 3:
                raise ValueError(f"table line {lineno}: expected 'start length type "
                                 f"[params]', got {raw!r}")
            try:
                start, length = int(parts[0], 10), int(parts[1], 10)
            except ValueError:
                # only the two fields: the rest of the line may hold a key
                raise ValueError(f"table line {lineno}: start and length must be integers, "
                                 f"got {parts[0]!r} {parts[1]!r}") from None
            targets.append(Target(start, length, parts[2], parts[3].strip() if len(parts) > 3
                                  else ""))
        return cls(targets)

    @property
    def size(self) -> int:
        """Sectors the table covers (end of its last target)."""
        return max((t.end for t in self), default=0)

    def __str__(self) -> str:
        return "\n".join(str(t) for t in self)

    def __repr__(self) -> str:
        return f"Table({list(self)!r})"

    def __add__(self, other: Iterable[Target]) -> "Table":  # type: ignore[override]
        return Table(tuple(self) + tuple(other))


DeviceArg = Union[str, "os.PathLike[str]", int, object]


def device_arg(device: DeviceArg) -> str:
    """A device for a table line: "major:minor" for a devnum (int) or an
    object with a ``devnum`` (a LoopDevice), else the path as given.

    The kernel splits parameters on whitespace and libdevmapper passes
    backslashes literally, so a path with whitespace cannot be named:
    ValueError (pass the device or its devnum instead).
    """
    if isinstance(device, bool):
        raise TypeError("device must be a path, a devnum or an object with .devnum")
    if isinstance(device, int):
        return f"{os.major(device)}:{os.minor(device)}"
    devnum = getattr(device, "devnum", None)
    if isinstance(devnum, int):
        return f"{os.major(devnum)}:{os.minor(devnum)}"
    if isinstance(device, (str, os.PathLike)):
        path = os.fspath(device)
        if not isinstance(path, str) or not path or any(c.isspace() for c in path) \
                or "\0" in path:
            raise ValueError(f"device path {path!r} is empty or contains whitespace; "
                             "pass the device number instead")
        return path
    raise TypeError(f"device must be a path, a devnum or an object with .devnum, "
                    f"not {type(device).__name__}")


def _sectors(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int (sectors), got {value!r}")
    return value


def linear(start: int, length: int, device: DeviceArg, offset: int = 0) -> Target:
    """``start length linear <device> <offset>`` (sectors)."""
    return Target(start, length, "linear", f"{device_arg(device)} {_sectors('offset', offset)}")


def striped(start: int, length: int, chunk_sectors: int,
            devices: Sequence[Union[DeviceArg, Tuple[DeviceArg, int]]]) -> Target:
    """``start length striped <n> <chunk> <dev> <offset> ...``.

    ``devices`` are devices or (device, offset) pairs; ``chunk_sectors``
    must be a power of two of at least 8 (4 KiB), and ``length`` a multiple
    of ``chunk_sectors * len(devices)``'s chunk (the kernel checks that too).
    """
    _sectors("chunk_sectors", chunk_sectors)
    if chunk_sectors < 8 or chunk_sectors & (chunk_sectors - 1):
        raise ValueError(f"chunk_sectors must be a power of two >= 8, got {chunk_sectors}")
    if not devices:
        raise ValueError("striped needs at least one device")
    if length % chunk_sectors:
        raise ValueError(f"length {length} is not a multiple of the chunk ({chunk_sectors})")
    if (length // chunk_sectors) % len(devices):
        raise ValueError(f"length {length} does not divide into {len(devices)} stripes of "
                         f"whole chunks")
    parts = [str(len(devices)), str(chunk_sectors)]
    for entry in devices:
        dev, off = entry if isinstance(entry, tuple) else (entry, 0)
        parts += [device_arg(dev), str(_sectors("offset", off))]
    return Target(start, length, "striped", " ".join(parts))


def zero(start: int, length: int) -> Target:
    """A target that reads zeros and discards writes."""
    return Target(start, length, "zero")


def error(start: int, length: int) -> Target:
    """A target that fails every I/O."""
    return Target(start, length, "error")


# --- keys -----------------------------------------------------------------------
#
# dmsetup table prints zeros in place of keys unless --showkeys, byte for
# byte over the text the kernel returned:
# - crypt ("cipher key iv_offset device offset ..."): the word after the
#   first space, unless it starts with ':' (":32:logon:desc" names a key in
#   the kernel keyring, which is no secret);
# - integrity: for the first occurrence of each of these option names, if a
#   ':' comes before the next space after it ("name:algorithm:key"), the
#   rest of that word.
_INTEGRITY_KEYED = (b"internal_hash:", b"journal_crypt:", b"journal_mac:")


def _zero_word(raw: bytearray, pos: int) -> None:
    while pos < len(raw) and raw[pos] != 0x20:
        raw[pos] = 0x30  # '0'
        pos += 1


def _mask_params(target_type: str, params: str) -> str:
    if target_type not in ("crypt", "integrity"):
        return params
    raw = bytearray(_encode(params))
    if target_type == "crypt":
        space = raw.find(b" ")
        if space >= 0 and raw[space + 1:space + 2] != b":":
            _zero_word(raw, space + 1)
    else:
        for option in _INTEGRITY_KEYED:
            at = raw.find(option)
            if at < 0:
                continue
            pos = at + len(option)
            while pos < len(raw) and raw[pos] not in b" :":
                pos += 1
            if pos < len(raw) and raw[pos] == 0x3A:  # ':' before a space: a key follows
                _zero_word(raw, pos + 1)
    return raw.decode("utf-8", "surrogateescape")


def mask_keys(table: Union[Table, Iterable[Target], str]) -> Table:
    """``table`` with dm-crypt and dm-integrity keys replaced by zeros, as
    ``dmsetup table`` prints it without ``--showkeys``.  Keyring references
    (a crypt key starting with ':') and other targets are left alone."""
    return Table(dataclasses.replace(t, params=_mask_params(t.type, t.params))
                 if t.type in ("crypt", "integrity") else t for t in _as_table(table))


def _has_keys(table: Iterable[Target]) -> bool:
    return any(_mask_params(t.type, t.params) != t.params for t in table)


def _wipe(buf: bytearray) -> None:
    buf[:] = bytes(len(buf))  # same length: overwritten in place


def _table_payload(table: Iterable[Target]) -> Tuple[bytearray, int]:
    """TABLE_LOAD payload: dm_target_spec + params per target, 8-aligned,
    ``next`` relative to the current spec.  Backslashes are doubled as
    libdevmapper does, so the kernel's unescaping hands targets the text.
    Built in one buffer, so that a caller can wipe the keys in it."""
    items = []
    for t in table:
        if not isinstance(t, Target):
            raise TypeError(f"a table holds Target records, not {type(t).__name__}")
        params = _encode(t.params.replace("\\", "\\\\")) + b"\0"
        size = _SPEC.size + len(params)
        items.append((t, params, size + (-size % _ALIGN)))
    if not items:
        raise ValueError("a table needs at least one target")
    payload = bytearray(sum(size for _t, _p, size in items))
    pos = 0
    for t, params, size in items:
        _SPEC.pack_into(payload, pos, t.start, t.length, 0, size, _encode(t.type))
        payload[pos + _SPEC.size:pos + _SPEC.size + len(params)] = params
        pos += size
    return payload, len(items)


def _as_table(table: Union[Table, Iterable[Target], str]) -> Table:
    if isinstance(table, Table):
        return table
    if isinstance(table, str):
        return Table.parse(table)
    return Table(table)


def _parse_specs(payload: bytes, count: int) -> Table:
    """TABLE_STATUS/WAIT output: ``next`` is relative to the payload start."""
    targets = []
    pos = 0
    for _ in range(count):
        start, length, _status, nxt, ttype = _SPEC.unpack_from(payload, pos)
        p0 = pos + _SPEC.size
        p1 = payload.find(b"\0", p0)
        params = payload[p0:p1 if p1 >= 0 else len(payload)]
        targets.append(Target(start, length, _decode(ttype), _decode(params)))
        if nxt <= pos:
            break
        pos = nxt
    return Table(targets)


# --- records --------------------------------------------------------------------

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
        return _node(self.kernel_name or self.name)

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


@dataclasses.dataclass(frozen=True)
class _Reply:
    version: Tuple[int, int, int]
    target_count: int
    open_count: int
    flags: Flag
    event_nr: int
    dev: int
    name: str          # unmangled
    uuid: str          # unmangled
    payload: bytes
    kernel_name: str

    def info(self) -> DeviceInfo:
        return DeviceInfo(self.name, self.uuid, self.dev, self.open_count, self.event_nr,
                          self.target_count, self.flags, KernelName(self.kernel_name))


# --- the control node -----------------------------------------------------------

def _misc_minor(name: str = "device-mapper") -> Optional[int]:
    try:
        with open("/proc/misc") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1] == name:
                    return int(parts[0])
    except FileNotFoundError:
        pass
    return None


def _ensure_control(path: str) -> None:
    """Create the control node (misc 10:<minor> from /proc/misc), loading
    dm-mod first if the kernel has no device-mapper misc device yet."""
    minor = _misc_minor()
    if minor is None:
        try:
            subprocess.run(["modprobe", "dm-mod"], check=False, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.SubprocessError):
            pass
        minor = _misc_minor()
        if minor is None:
            raise FileNotFoundError(errno.ENOENT,
                                    "device-mapper is not available (no dm-mod in this kernel)",
                                    path)
    want = os.makedev(MISC_MAJOR, minor)
    try:
        st = os.lstat(path)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == want:
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, want)
    except FileExistsError:
        pass  # created by udev or another process meanwhile


# --- the client -----------------------------------------------------------------

_ERR_MESSAGES = {
    errno.ENXIO: "No such device-mapper device",
}


class DeviceMapper:
    """A connection to the kernel's device-mapper (``/dev/mapper/control``).

    Methods name devices by name; every name and uuid is checked before any
    ioctl (ValueError).  A missing device raises an OSError with ENXIO;
    other kernel errors their errno (EBUSY as :class:`DeviceBusyError`),
    with ``filename`` set to the device's node, ``/dev/mapper/<name>``
    (the mangled name).

    ``manage_nodes`` (default True) makes the library create and remove
    ``/dev/mapper/<name>`` block nodes itself, as libdevmapper does
    without udev.

    ``name_mangling`` is dmsetup's ``--manglename`` (see :func:`mangle`):
    with "auto" (the default) and "hex", names and uuids are mangled on the
    way to the kernel and unmangled on the way back, so that a name with a
    space or non-ASCII characters reads the same here and in dmsetup and
    ``/dev/mapper/<mangled name>`` is the node udev would make.  "none"
    passes them through as stored.  A :class:`KernelName` (from
    ``DeviceEntry.kernel_name``) always addresses the device as stored.
    """

    name_mangling = "auto"

    def __init__(self, control: str = CONTROL_PATH, *, dev_dir: str = DEV_DIR,
                 manage_nodes: bool = True, name_mangling: str = "auto") -> None:
        self._fd = -1
        self.name_mangling = _check_mode(name_mangling)
        self.control = control
        self.dev_dir = dev_dir
        self.manage_nodes = manage_nodes
        self._out_size = _OUT_SIZE
        fd = lib.lc_dm_open(_encode(control))
        if fd in (-errno.ENOENT, -errno.ENODEV, -errno.ENXIO):
            _ensure_control(control)
            fd = lib.lc_dm_open(_encode(control))
        if fd < 0:
            raise error_from_errno(-fd, control)
        self._fd = fd
        try:
            self._version = self._ioctl(Cmd.VERSION).version
        except BaseException:
            self.close()
            raise
        if self._version[0] != 4:
            self.close()
            raise OSError(errno.EPROTO, f"unsupported device-mapper interface "
                          f"{'.'.join(map(str, self._version))} (need 4.x)", control)

    # -- plumbing --

    def fileno(self) -> int:
        """The control fd, for poll() after :meth:`arm_poll`."""
        if self._fd < 0:
            raise ValueError("DeviceMapper is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> "DeviceMapper":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"fd={self._fd}"
        return f"<DeviceMapper {self.control} {state}>"

    def _ioctl(self, cmd: int, name: bytes = b"", *, uuid: bytes = b"", flags: int = 0,
               payload: Union[bytes, bytearray] = b"", event_nr: int = 0,
               target_count: int = 0, out: bool = False, grow: bool = True,
               filename: Optional[str] = None, secure: bool = False) -> _Reply:
        """One DM ioctl.  ``out`` selects a buffer with room for returned
        data; BUFFER_FULL then doubles it and retries (when ``grow``).
        ``secure`` (the buffer holds keys, going in or out) sets
        SECURE_DATA, so the kernel wipes its copies and the caller's buffer
        after reading it, and wipes our buffer after each attempt."""
        if self._fd < 0:
            raise ValueError("DeviceMapper is closed")
        if secure:
            flags |= Flag.SECURE_DATA
        need = HEADER_SIZE + len(payload)
        size = max(need + (-need % _ALIGN), self._out_size if out else 0)
        while True:
            buf = bytearray(size)
            try:
                _HEADER.pack_into(buf, 0, *_REQUEST_VERSION, size, HEADER_SIZE, target_count,
                                  0, flags, event_nr, 0, 0, name, uuid, b"")
                if payload:
                    buf[HEADER_SIZE:need] = payload
                while True:
                    rc = lib.lc_dm_ioctl(self._fd, cmd, ffi.from_buffer("uint8_t[]", buf))
                    if rc != -errno.EINTR or cmd == Cmd.TARGET_MSG:
                        break
                    # signal handlers have run; a raising one has raised
                if rc < 0:
                    err = -rc
                    if filename is None and name:
                        filename = _node(_decode(name), self.dev_dir)
                    raise error_from_errno(err, filename or self.control,
                                           _ERR_MESSAGES.get(err) if name else None)
                (v0, v1, v2, data_size, data_start, tcount, open_count, rflags, revent, _pad,
                 dev, rname, ruuid, _data) = _HEADER.unpack_from(buf, 0)
                if rflags & Flag.BUFFER_FULL and grow and out:
                    if size * 2 > _MAX_SIZE:
                        raise OSError(errno.ENOBUFS, "device-mapper reply too large",
                                      filename or self.control)
                    size *= 2
                    self._out_size = max(self._out_size, size)
                    continue
                data = bytes(memoryview(buf)[data_start:data_size]) \
                    if out and data_size > data_start else b""
            finally:
                if secure:
                    _wipe(buf)
            kernel_name = _decode(rname)
            return _Reply((v0, v1, v2), tcount, open_count, Flag(rflags), revent, dev,
                          self._unmangle(kernel_name), self._unmangle(_decode(ruuid)), data,
                          kernel_name)

    def _kname(self, name: str) -> bytes:
        """The name as the kernel is given it (checked and mangled)."""
        return validate_name(name, self.name_mangling)

    def _unmangle(self, stored: str) -> str:
        return unmangle(stored, self.name_mangling) if stored else stored

    # -- nodes: named after the stored (mangled) name, as udev names them --

    def _add_node(self, name: str, devnum: int) -> None:
        if not self.manage_nodes:
            return
        path = _node(name, self.dev_dir)
        try:
            st = os.stat(path)
            if stat.S_ISBLK(st.st_mode) and st.st_rdev == devnum:
                return  # ours already, or udev's symlink to the right device
            os.unlink(path)
        except FileNotFoundError:
            try:
                os.unlink(path)  # a dangling symlink
            except FileNotFoundError:
                pass
        try:
            os.mknod(path, 0o600 | stat.S_IFBLK, devnum)
        except FileNotFoundError:
            os.makedirs(self.dev_dir, mode=0o755, exist_ok=True)
            os.mknod(path, 0o600 | stat.S_IFBLK, devnum)
        except FileExistsError:
            st = os.stat(path)
            if not (stat.S_ISBLK(st.st_mode) and st.st_rdev == devnum):
                raise

    def _remove_node(self, name: str) -> None:
        if not self.manage_nodes:
            return
        path = _node(name, self.dev_dir)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode) and os.path.exists(path):
            return  # udev's link to a live device: udev removes it
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            warnings.warn(f"could not remove {path}: {exc}", RuntimeWarning, stacklevel=3)

    def mknodes(self, name: Optional[str] = None) -> None:
        """Make ``/dev/mapper`` match the kernel (``dmsetup mknodes``): create
        missing nodes, fix wrong ones, and, without ``name``, remove block
        nodes of devices that are gone (after a deferred remove, say)."""
        if name is not None:
            info = self.info(name)
            self._add_node(info.kernel_name, info.devnum)
            return
        devices = {d.kernel_name: d.devnum for d in self.list_devices()}
        for dev_name, devnum in devices.items():
            self._add_node(dev_name, devnum)
        try:
            entries = os.listdir(self.dev_dir)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry == "control" or entry in devices:
                continue
            try:
                st = os.lstat(_node(entry, self.dev_dir))
            except FileNotFoundError:
                continue
            if stat.S_ISBLK(st.st_mode) or (stat.S_ISLNK(st.st_mode)
                                             and not os.path.exists(_node(entry, self.dev_dir))):
                self._remove_node(entry)

    # -- the interface --

    def version(self) -> Tuple[int, int, int]:
        """The kernel's dm ioctl interface version, e.g. (4, 47, 0)."""
        self._version = self._ioctl(Cmd.VERSION).version
        return self._version

    def list_devices(self) -> List[DeviceEntry]:
        """Every device: name, uuid, devnum, event_nr (kernel order); names
        and uuids unmangled, ``kernel_name`` as stored."""
        # UUID asks kernels >= 4.46 to add each uuid (and say when there is none)
        reply = self._ioctl(Cmd.LIST_DEVICES, flags=Flag.UUID, out=True)
        data = reply.payload
        if len(data) < _NAME_LIST.size:
            return []
        devices = []
        pos = 0
        while True:
            dev, nxt = _NAME_LIST.unpack_from(data, pos)
            if dev == 0 and pos == 0 and nxt == 0:
                return []  # "no devices" marker
            name_start = pos + _NAME_LIST.size
            name_end = data.find(b"\0", name_start)
            if name_end < 0:
                name_end = len(data)
            kernel_name = _decode(data[name_start:name_end])
            entry_end = pos + nxt if nxt else len(data)
            extra = name_end + 1
            extra += -extra % _ALIGN
            event_nr: Optional[int] = None
            uuid: Optional[str] = None
            if extra + 8 <= entry_end:
                event_nr, lflags = _U32x2.unpack_from(data, extra)
                if lflags & _NAME_LIST_HAS_UUID:
                    u0 = extra + 8
                    u1 = data.find(b"\0", u0)
                    uuid = self._unmangle(_decode(data[u0:u1 if u1 >= 0 else len(data)]))
                elif lflags & _NAME_LIST_NO_UUID:
                    uuid = ""
            devices.append(DeviceEntry(self._unmangle(kernel_name), uuid, dev, event_nr,
                                       KernelName(kernel_name)))
            if not nxt:
                return devices
            pos += nxt

    def info(self, name: str) -> DeviceInfo:
        """The device's state (DEV_STATUS).  ENXIO if it does not exist."""
        return self._ioctl(Cmd.DEV_STATUS, self._kname(name)).info()

    def exists(self, name: str) -> bool:
        try:
            self.info(name)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return False
            raise
        return True

    def create(self, name: str, *, uuid: Optional[str] = None,
               table: Union[Table, Iterable[Target], str, None] = None,
               read_only: bool = False) -> DeviceInfo:
        """Create a device and, given a table, load it and resume.

        Without a table the device stays suspended with no table (like
        ``dmsetup create --notable``).  If loading or resuming fails the
        device is removed again and the error raised.  ``/dev/mapper/<name>``
        is created (``<name>`` mangled).  A table with keys goes to the
        kernel with SECURE_DATA and loopcore's copy is wiped after.  Returns
        the device's state.
        """
        raw_name = self._kname(name)
        raw_uuid = validate_uuid(uuid, self.name_mangling) if uuid is not None else b""
        payload, count, secure = bytearray(), 0, False
        if table is not None:
            targets = _as_table(table)
            payload, count = _table_payload(targets)
            secure = _has_keys(targets)
        ro = Flag.READONLY if read_only else 0
        try:
            reply = self._ioctl(Cmd.DEV_CREATE, raw_name, uuid=raw_uuid, flags=ro)
            try:
                self._add_node(_decode(raw_name), reply.dev)
                if table is not None:
                    self._ioctl(Cmd.TABLE_LOAD, raw_name, flags=ro, payload=payload,
                                target_count=count, secure=secure)
                    reply = self._ioctl(Cmd.DEV_SUSPEND, raw_name)
            except BaseException:
                try:
                    self._remove(raw_name, deferred=False, retries=REMOVE_RETRIES,
                                 retry_delay=0.05)
                except OSError:
                    pass
                raise
        finally:
            if secure:
                _wipe(payload)
        return reply.info()

    def load(self, name: str, table: Union[Table, Iterable[Target], str], *,
             read_only: bool = False) -> DeviceInfo:
        """Load ``table`` as the device's inactive table (resume swaps it in).
        A table with keys goes with SECURE_DATA, as in :meth:`create`."""
        raw_name = self._kname(name)
        targets = _as_table(table)
        payload, count = _table_payload(targets)
        secure = _has_keys(targets)
        try:
            return self._ioctl(Cmd.TABLE_LOAD, raw_name,
                               flags=Flag.READONLY if read_only else 0, payload=payload,
                               target_count=count, secure=secure).info()
        finally:
            if secure:
                _wipe(payload)

    def clear(self, name: str) -> DeviceInfo:
        """Drop the device's inactive table."""
        return self._ioctl(Cmd.TABLE_CLEAR, self._kname(name)).info()

    def suspend(self, name: str, *, noflush: bool = False,
                skip_lockfs: bool = False) -> DeviceInfo:
        """Suspend the device (``noflush`` keeps queued I/O; ``skip_lockfs``
        does not freeze a file system on it)."""
        flags = Flag.SUSPEND
        if noflush:
            flags |= Flag.NOFLUSH
        if skip_lockfs:
            flags |= Flag.SKIP_LOCKFS
        return self._ioctl(Cmd.DEV_SUSPEND, self._kname(name), flags=flags).info()

    def resume(self, name: str) -> DeviceInfo:
        """Resume the device, making a loaded inactive table live."""
        return self._ioctl(Cmd.DEV_SUSPEND, self._kname(name)).info()

    def _remove(self, raw_name: bytes, *, deferred: bool, retries: int,
                retry_delay: float) -> bool:
        flags = Flag.DEFERRED_REMOVE if deferred else 0
        attempt = 0
        while True:
            try:
                reply = self._ioctl(Cmd.DEV_REMOVE, raw_name, flags=flags)
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or attempt >= retries:
                    raise
            attempt += 1
            time.sleep(retry_delay)
        if deferred and reply.flags & Flag.DEFERRED_REMOVE:
            return False  # still open: the kernel removes it on last close
        self._remove_node(_decode(raw_name))
        return True

    def remove(self, name: str, *, deferred: bool = False, retries: int = REMOVE_RETRIES,
               retry_delay: float = REMOVE_RETRY_DELAY) -> bool:
        """Remove the device and its ``/dev/mapper`` node.

        EBUSY (the device is open) is retried ``retries`` times,
        ``retry_delay`` seconds apart, as libdevmapper does; then
        :class:`DeviceBusyError`.  With ``deferred`` an open device is
        instead marked for removal on last close: returns False then (the
        node stays until :meth:`mknodes`), True when it was removed now.
        """
        if retries < 0 or retry_delay < 0:
            raise ValueError("retries and retry_delay must be >= 0")
        return self._remove(self._kname(name), deferred=deferred,
                            retries=0 if deferred else retries, retry_delay=retry_delay)

    def remove_all(self, *, deferred: bool = False) -> List[str]:
        """Remove every device that is not open (REMOVE_ALL); with
        ``deferred`` open ones go on last close.  Returns the removed names."""
        before = {d.kernel_name: d.name for d in self.list_devices()}
        self._ioctl(Cmd.REMOVE_ALL, flags=Flag.DEFERRED_REMOVE if deferred else 0)
        after = {d.kernel_name for d in self.list_devices()}
        gone = [k for k in before if k not in after]
        for k in gone:
            self._remove_node(k)
        return [before[k] for k in gone]

    def rename(self, name: str, new_name: str) -> DeviceInfo:
        """Rename the device (and its node); both names are mangled."""
        raw = self._kname(name)
        new_raw = self._kname(new_name)
        reply = self._ioctl(Cmd.DEV_RENAME, raw, payload=new_raw + b"\0")
        new_kernel = _decode(new_raw)
        self._remove_node(_decode(raw))
        self._add_node(new_kernel, reply.dev)
        return dataclasses.replace(reply.info(), name=self._unmangle(new_kernel),
                                   kernel_name=KernelName(new_kernel))

    def set_uuid(self, name: str, uuid: str) -> DeviceInfo:
        """Give a device without a uuid one (the kernel refuses to change a set uuid)."""
        raw = self._kname(name)
        raw_uuid = validate_uuid(uuid, self.name_mangling)
        reply = self._ioctl(Cmd.DEV_RENAME, raw, flags=Flag.UUID, payload=raw_uuid + b"\0")
        return dataclasses.replace(reply.info(), uuid=self._unmangle(_decode(raw_uuid)))

    def table(self, name: str, *, inactive: bool = False, showkeys: bool = False) -> Table:
        """The live (or the inactive) table, as the kernel reports it, with
        dm-crypt and dm-integrity keys replaced by zeros unless ``showkeys``
        (as ``dmsetup table [--showkeys]``; see :func:`mask_keys`).

        The read is a SECURE_DATA ioctl (the kernel wipes its copy; a table
        may hold keys) and loopcore's ioctl buffer is wiped after it."""
        flags = Flag.STATUS_TABLE | (Flag.QUERY_INACTIVE_TABLE if inactive else 0)
        reply = self._ioctl(Cmd.TABLE_STATUS, self._kname(name), flags=flags, out=True,
                            secure=True)
        table = _parse_specs(reply.payload, reply.target_count)
        return table if showkeys else mask_keys(table)

    def status(self, name: str, *, inactive: bool = False, noflush: bool = False) -> Table:
        """Each target's status line (``str()`` reads like ``dmsetup status``)."""
        flags = (Flag.QUERY_INACTIVE_TABLE if inactive else 0) | (Flag.NOFLUSH if noflush else 0)
        reply = self._ioctl(Cmd.TABLE_STATUS, self._kname(name), flags=flags, out=True)
        return _parse_specs(reply.payload, reply.target_count)

    def deps(self, name: str, *, inactive: bool = False) -> List[int]:
        """Devnums of the devices the table uses."""
        flags = Flag.QUERY_INACTIVE_TABLE if inactive else 0
        data = self._ioctl(Cmd.TABLE_DEPS, self._kname(name), flags=flags, out=True).payload
        if len(data) < _U32x2.size:
            return []
        count, _pad = _U32x2.unpack_from(data, 0)
        return list(struct.unpack_from(f"={count}Q", data, _U32x2.size))

    def wait(self, name: str, event_nr: int) -> DeviceInfo:
        """Block until the device's event number differs from ``event_nr``
        (pass ``info(name).event_nr``); returns the new state.  The GIL is
        released while waiting; EINTR is retried after signal handlers run."""
        if not isinstance(event_nr, int) or not 0 <= event_nr < 1 << 32:
            raise ValueError(f"event_nr must be a 32-bit unsigned int, got {event_nr!r}")
        return self._ioctl(Cmd.DEV_WAIT, self._kname(name), event_nr=event_nr,
                           out=True, grow=False).info()

    def arm_poll(self) -> None:
        """Arm poll() on :meth:`fileno` for the next device event anywhere
        (POLLIN then; re-arm after each wakeup).  Kernel 4.37+."""
        self._ioctl(Cmd.DEV_ARM_POLL)

    def target_versions(self) -> List[TargetVersion]:
        """The target types loaded in the kernel (``dmsetup targets``)."""
        data = self._ioctl(Cmd.LIST_VERSIONS, out=True).payload
        return _parse_versions(data)

    def target_version(self, target_type: str) -> TargetVersion:
        """One target type's version, loading its module if needed.
        Unknown types raise OSError (EINVAL, the kernel's answer)."""
        if not isinstance(target_type, str) or not target_type \
                or len(_encode(target_type)) >= DM_MAX_TYPE_NAME or "/" in target_type:
            raise ValueError(f"bad target type {target_type!r}")
        if self._version[1] < 41:
            for tv in self.target_versions():
                if tv.name == target_type:
                    return tv
            raise OSError(errno.EINVAL, f"unknown target type {target_type!r}", self.control)
        try:
            data = self._ioctl(Cmd.GET_TARGET_VERSION, _encode(target_type), out=True,
                               filename=self.control).payload
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise OSError(errno.EINVAL, f"unknown target type {target_type!r}",
                              self.control) from None
            raise
        found = _parse_versions(data)
        if not found:
            raise OSError(errno.EINVAL, f"unknown target type {target_type!r}", self.control)
        return found[0]

    def message(self, name: str, sector: int, text: str) -> Optional[str]:
        """Send a target message (``@...`` messages go to dm core); returns
        the target's reply, or None when it sends none."""
        raw = self._kname(name)
        _sectors("sector", sector)
        if not isinstance(text, str) or not text.strip() or "\0" in text:
            raise ValueError(f"message must be a non-empty str without NUL, got {text!r}")
        payload = _U64.pack(sector) + _encode(text) + b"\0"
        reply = self._ioctl(Cmd.TARGET_MSG, raw, payload=payload, out=True)
        if reply.flags & Flag.DATA_OUT:
            return _decode(reply.payload)
        return None

    def set_geometry(self, name: str, cylinders: int, heads: int, sectors: int,
                     start: int) -> DeviceInfo:
        """Set the device's CHS geometry as HDIO_GETGEO reports it."""
        raw = self._kname(name)
        for label, value in (("cylinders", cylinders), ("heads", heads),
                             ("sectors", sectors), ("start", start)):
            _sectors(label, value)
        if heads > 255 or sectors > 255 or cylinders > 0xFFFF:
            raise ValueError("geometry out of range (heads, sectors <= 255; cylinders <= 65535)")
        text = f"{cylinders} {heads} {sectors} {start}"
        return self._ioctl(Cmd.DEV_SET_GEOMETRY, raw, payload=_encode(text) + b"\0").info()


def _parse_versions(data: bytes) -> List[TargetVersion]:
    found = []
    pos = 0
    while pos + _VERSIONS.size <= len(data):
        nxt, v0, v1, v2 = _VERSIONS.unpack_from(data, pos)
        n0 = pos + _VERSIONS.size
        n1 = data.find(b"\0", n0)
        name = _decode(data[n0:n1 if n1 >= 0 else len(data)])
        if name:
            found.append(TargetVersion(name, (v0, v1, v2)))
        if not nxt:
            break
        pos += nxt
    return found


def read_ahead(devnum: int) -> Optional[int]:
    """A block device's read-ahead in sectors (what ``dmsetup info`` shows)."""
    base = f"/sys/dev/block/{os.major(devnum)}:{os.minor(devnum)}"
    for attr in ("bdi/read_ahead_kb", "queue/read_ahead_kb"):
        try:
            with open(f"{base}/{attr}") as f:
                return int(f.read().strip()) * 2
        except (OSError, ValueError):
            continue
    return None


def block_name(devnum: int) -> Optional[str]:
    """The kernel name of a block device (``loop3``, ``dm-0``), from sysfs."""
    try:
        link = os.readlink(f"/sys/dev/block/{os.major(devnum)}:{os.minor(devnum)}")
    except OSError:
        return None
    return os.path.basename(link)

"""Device-mapper names and uuids, checked once, when they are made.

:class:`DmName` and :class:`DmUuid` are ``str`` subclasses: the text as
given (what dmsetup shows) plus :attr:`DmName.raw`, the bytes the kernel
is given.  Every method of :class:`~loopcore.dm.DeviceMapper` that takes a
device takes either; a plain ``str`` is a name, checked and mangled per the
client's ``name_mangling``.  :class:`DevId` spells the choice out, as
devicemapper-rs's ``DevId::{Name, Uuid}`` does.

Mangling, as libdevmapper does it (dmsetup ``--manglename``, "auto" by
default): the kernel takes any byte but '/' and NUL in a name, but udev
names ``/dev/mapper`` nodes after it, so libdevmapper stores every byte
outside ``[0-9A-Za-z#+-.:=@_]`` as ``\\xNN`` (two lower-case hex digits)
and decodes names and uuids it reads back.  A stored name with a byte
outside the whitelist other than '\\' makes libdevmapper fail a whole
listing.
"""
from __future__ import annotations

from typing import Optional, Union

from .. import _c, errors

__all__ = ["DM_NAME_LEN", "DM_UUID_LEN", "MANGLING_MODES", "DmName", "DmUuid", "KernelName",
           "DevId", "DevIdArg", "as_name", "as_uuid", "check_mode", "decode", "encode",
           "mangle", "unmangle", "validate_name", "validate_uuid"]

# The kernel's limits, NUL included: the sizes of struct dm_ioctl's name
# and uuid, as csrc/lc_dm.h declares the struct.
_HEADER_FIELDS = dict(_c.ffi.typeof("struct lc_dm_ioctl").fields)
DM_NAME_LEN: int = _HEADER_FIELDS["name"].type.length    # 128
DM_UUID_LEN: int = _HEADER_FIELDS["uuid"].type.length    # 129

MANGLING_MODES = ("auto", "hex", "none")

_WHITELIST = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                       b"abcdefghijklmnopqrstuvwxyz#+-.:=@_")
_WHITELIST_BYTES = bytes(sorted(_WHITELIST))  # for bytes.translate's delete
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_RESERVED = (b"control", b".", b"..")  # the control node, and what is no file name


def encode(text: str) -> bytes:
    """Text to the bytes the kernel sees (undecodable bytes round-trip)."""
    return text.encode("utf-8", "surrogateescape")


def decode(raw: bytes) -> str:
    """A NUL-terminated kernel string to text (undecodable bytes kept)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MANGLING_MODES`, else ValueError."""
    if mode not in MANGLING_MODES:
        raise errors.ValueError(f"name mangling mode must be one of "
                                f"{', '.join(MANGLING_MODES)}, got {mode!r}")
    return mode


def _mangle(raw: bytes, mode: str, what: str, text: str) -> bytes:
    if mode == "none" or not raw.translate(None, _WHITELIST_BYTES):
        return raw  # nothing outside the whitelist: nothing to encode, no "\x" to keep
    if mode == "auto" and b"\\x5cx" in raw:
        raise errors.ValueError(f"{what} {text!r} seems to be mangled more than once, which "
                                "the auto mangling mode does not allow")
    mixed = errors.ValueError(f"{what} {text!r} contains mixed mangled and unmangled "
                              "characters or is mangled improperly")
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
    return decode(_mangle(encode(text), check_mode(mode), "name", text))


def unmangle(text: str, mode: str = "auto") -> str:
    """A stored name or uuid as dmsetup shows it: ``\\xNN`` decoded.

    Text that is not in mangled form (it holds a byte outside the whitelist
    other than '\\', or, in auto mode, ``\\x5cx``) is returned as it is:
    libdevmapper refuses such names.  A ``\\x`` without two hex digits
    after it, and ``\\x00``, stay as they are.  "none" changes nothing.
    """
    return _unmangle(encode(text), check_mode(mode)).decode("utf-8", "surrogateescape")


def _too_long(what: str, text: str, raw: bytes, limit: int) -> errors.ValueError:
    mangled = f" mangled as {decode(raw)!r}" if raw != encode(text) else ""
    return errors.ValueError(f"{what} {text!r} is too long ({len(raw)} bytes{mangled}, max "
                             f"{limit - 1})")


def _checked_raw(text: object, what: str, forbidden: bytes, forbidden_names: str,
                 mangling: Optional[str], limit: int) -> bytes:
    """The bytes the kernel is given for ``text`` (a name or uuid): a
    non-empty str without any of the ``forbidden`` bytes, mangled per ``mangling``
    (None: as is), shorter than the kernel's ``limit`` with its NUL."""
    if not isinstance(text, str):
        raise errors.TypeError(f"{what} must be a str, not {type(text).__name__}")
    raw = encode(text)
    if not raw:
        raise errors.ValueError(f"{what} is empty")
    if len(raw.translate(None, forbidden)) != len(raw):
        raise errors.ValueError(f"{what} {text!r} contains {forbidden_names}")
    if mangling is not None:
        raw = _mangle(raw, check_mode(mangling), what, text)
    if len(raw) >= limit:
        raise _too_long(what, text, raw, limit)
    return raw


class DmName(str):
    """A device name, checked as the kernel and libdevmapper check it.

    The ``str`` is the name as given; :attr:`raw` is what the kernel is
    given: the name mangled per ``mangling`` (see :func:`mangle`).  Raises
    ValueError for an empty name, one containing '/' or NUL, one whose
    mangled form has 128 bytes or more, "control", "." and "..", and what
    :func:`mangle` refuses; TypeError for a non-str.
    """

    raw: bytes
    mangling: str

    def __new__(cls, name: str, mangling: str = "auto") -> "DmName":
        raw = _checked_raw(name, "device name", b"/\0", "'/' or NUL",
                           None if issubclass(cls, KernelName) else mangling, DM_NAME_LEN)
        if raw in _RESERVED:
            raise errors.ValueError(f"device name {name!r} is reserved")
        self = super().__new__(cls, name)
        self.raw = raw
        self.mangling = "none" if issubclass(cls, KernelName) else mangling
        return self

    @property
    def kernel(self) -> "KernelName":
        """The name as the kernel stores it."""
        return KernelName.stored(decode(self.raw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class KernelName(DmName):
    """A device name exactly as the kernel stores it (``DeviceEntry.kernel_name``,
    ``DeviceInfo.kernel_name``).  Passed where a name is expected it is used
    as it is, whatever the mangling mode: only the kernel's own rules
    (non-empty, no '/' or NUL, under 128 bytes, not reserved) apply."""

    def __new__(cls, name: str, mangling: str = "none") -> "KernelName":
        self = super().__new__(cls, name, "none")
        assert isinstance(self, KernelName)
        return self

    @classmethod
    def stored(cls, name: str) -> "KernelName":
        """A name the kernel reported (or "" for none): not checked again."""
        self = str.__new__(cls, name)
        self.raw = encode(name)
        self.mangling = "none"
        return self


class DmUuid(str):
    """A device uuid: non-empty, no NUL, under 129 bytes once mangled per
    ``mangling`` (libdevmapper mangles uuids as it mangles names).  The
    ``str`` is the uuid as given, :attr:`raw` what the kernel is given."""

    raw: bytes
    mangling: str

    def __new__(cls, uuid: str, mangling: str = "auto") -> "DmUuid":
        raw = _checked_raw(uuid, "uuid", b"\0", "NUL", mangling, DM_UUID_LEN)
        self = super().__new__(cls, uuid)
        self.raw = raw
        self.mangling = mangling
        return self

    def __repr__(self) -> str:
        return f"DmUuid({str(self)!r})"


# What a method takes to find a device: a DmUuid finds it by uuid, a
# DmName (or KernelName) or plain str by name.
DevIdArg = Union[str, DmName, DmUuid]


class DevId:
    """Addressing a device either way, as devicemapper-rs's ``DevId``::

        m.info(DevId.uuid("MYAPP-data"))
        m.remove(DevId.name("data"))      # the same as m.remove("data")

    Both check their argument now, with the given mangling mode (dmsetup's
    default "auto"), whatever the client's ``name_mangling``.
    """

    def __init__(self) -> None:
        raise errors.TypeError("use DevId.name(...) or DevId.uuid(...)")

    @staticmethod
    def name(name: str, mangling: str = "auto") -> DmName:
        """Address a device by name."""
        return as_name(name, mangling)

    @staticmethod
    def uuid(uuid: str, mangling: str = "auto") -> DmUuid:
        """Address a device by uuid."""
        return as_uuid(uuid, mangling)


def as_name(name: str, mangling: str = "auto") -> DmName:
    """``name`` if it is a :class:`DmName` already (checked when made),
    else ``DmName(name, mangling)``."""
    return name if isinstance(name, DmName) else DmName(name, mangling)


def as_uuid(uuid: str, mangling: str = "auto") -> DmUuid:
    """``uuid`` if it is a :class:`DmUuid` already, else ``DmUuid(uuid, mangling)``."""
    return uuid if isinstance(uuid, DmUuid) else DmUuid(uuid, mangling)


def validate_name(name: str, mangling: str = "auto") -> bytes:
    """Check a device name as the kernel and libdevmapper would; return the
    name the kernel is given (see :class:`DmName`; a :class:`DmName` or
    :class:`KernelName` keeps the form it was made with)."""
    return as_name(name, mangling).raw


def validate_uuid(uuid: str, mangling: str = "auto") -> bytes:
    """Check a device uuid (see :class:`DmUuid`); return the uuid the
    kernel is given."""
    return as_uuid(uuid, mangling).raw

"""Targets, typed: one parameter class per target type, and builders.

A parameter class (:class:`LinearParams`, :class:`ThinPoolParams` ...) is
a frozen dataclass that checks its fields when made (ValueError/TypeError
before any ioctl, as the kernel would refuse them only after a device was
made), writes the kernel's parameter string (``str(params)``), and reads
the kernel's own ``table`` output back (``XParams.parse(text)``), so that
``XParams.parse(str(p)) == p`` and, for the text the kernel writes,
``str(XParams.parse(text)) == text``.  ``params.target(start, length)`` is
the table line; :func:`parse_params` (or :meth:`Target.parsed
<loopcore.dm.Target.parsed>`) reads any known target's parameters.
Devices are strings as :func:`device_arg` writes them: "major:minor" (what
the kernel reports) or a path.

The builder functions (:func:`linear`, :func:`striped`, :func:`zero`,
:func:`error`, :func:`mirror`) take devices in any form :func:`device_arg`
does (a LoopDevice, a devnum, a path) and check what needs the target's
length; they return the :class:`~loopcore.dm.Target`.

Adding a target type means adding its parameter class here and listing it
in ``PARAMS_TYPES``.  If the parameters hold a key, also give the type a
masking rule in :mod:`loopcore.dm.table` (keys section) so that
``table()`` prints zeros and loads go with SECURE_DATA; its status goes in
:mod:`loopcore.dm.status`.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import (
    Callable,
    ClassVar,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from .. import errors
from .table import Target, mask_params

__all__ = [
    "DeviceArg", "device_arg", "TargetParams", "PARAMS_TYPES", "parse_params",
    "LinearParams", "StripedParams", "ZeroParams", "ErrorParams", "CryptParams",
    "VerityParams", "SnapshotOriginParams", "SnapshotParams", "ThinPoolParams", "ThinParams",
    "MirrorParams", "IntegrityParams",
    "linear", "striped", "zero", "error", "mirror", "MIRROR_LOG_TYPES",
]

# A device for a table line: a path, a devnum, or an object with .devnum
# (a LoopDevice).
DeviceArg = Union[str, "os.PathLike[str]", int, object]


def device_arg(device: DeviceArg) -> str:
    """A device for a table line: "major:minor" for a devnum (int) or an
    object with a ``devnum`` (a LoopDevice), else the path as given.

    The kernel splits parameters on whitespace and libdevmapper passes
    backslashes literally, so a path with whitespace cannot be named:
    ValueError (pass the device or its devnum instead).
    """
    if isinstance(device, bool):
        raise errors.TypeError("device must be a path, a devnum or an object with .devnum")
    if isinstance(device, int):
        return f"{os.major(device)}:{os.minor(device)}"
    devnum = getattr(device, "devnum", None)
    if isinstance(devnum, int):
        return f"{os.major(devnum)}:{os.minor(devnum)}"
    if isinstance(device, (str, os.PathLike)):
        path = os.fspath(device)
        if not isinstance(path, str) or not path or any(c.isspace() for c in path) \
                or "\0" in path:
            raise errors.ValueError(f"device path {path!r} is empty or contains whitespace; "
                                    "pass the device number instead")
        return path
    raise errors.TypeError(f"device must be a path, a devnum or an object with .devnum, "
                           f"not {type(device).__name__}")


def sectors(name: str, value: int) -> int:
    """``value`` if it is a non-negative int (a count of 512-byte sectors),
    else ValueError."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise errors.ValueError(f"{name} must be a non-negative int (sectors), got {value!r}")
    return value


# --- field checks -------------------------------------------------------------------

def _int(name: str, value: object, minimum: int = 0, maximum: int = (1 << 64) - 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise errors.ValueError(f"{name} must be from {minimum} to {maximum}, got {value}")
    return value


def _bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise errors.TypeError(f"{name} must be a bool, not {type(value).__name__}")


def _word(name: str, value: object, *, optional: bool = False) -> None:
    """A single non-empty word of printable text (the kernel splits on spaces)."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise errors.TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        raise errors.ValueError(f"{name} must be one word of printable characters, "
                                f"got {value!r}")


def _device(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise errors.TypeError(f"{name} must be a str (\"major:minor\" or a path; "
                               f"see device_arg()), not {type(value).__name__}")
    device_arg(value)


def _power_of_two(name: str, value: int, minimum: int, maximum: int) -> None:
    _int(name, value, minimum, maximum)
    if value & (value - 1):
        raise errors.ValueError(f"{name} must be a power of two, got {value}")


def _hex(name: str, value: object, *, empty: bool = False) -> None:
    if not isinstance(value, str):
        raise errors.TypeError(f"{name} must be a str of hex digits, not "
                               f"{type(value).__name__}")
    if (not value and not empty) or len(value) % 2 \
            or not all(c in "0123456789abcdefABCDEF" for c in value):
        raise errors.ValueError(f"{name} must be an even number of hex digits")


def _choice(name: str, value: object, choices: Sequence[Optional[str]]) -> None:
    if value not in choices:
        raise errors.ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                                f"got {value!r}")


def _legs(name: str, value: object) -> Tuple[Tuple[str, int], ...]:
    """(device, offset) pairs, as a tuple of tuples."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise errors.TypeError(f"{name} must be a sequence of (device, offset) pairs")
    out = []
    for entry in value:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise errors.TypeError(f"{name}: each entry is a (device, offset) pair, "
                                   f"got {entry!r}")
        _device(f"{name} device", entry[0])
        out.append((entry[0], _int(f"{name} offset", entry[1])))
    return tuple(out)


# --- reading the kernel's text --------------------------------------------------------

class _Words:
    """The words of a parameter string, read front to back; anything not in
    the kernel's form is a DmParseError naming the target type (and the
    text with its keys masked)."""

    def __init__(self, target_type: str, text: str) -> None:
        if not isinstance(text, str):
            raise errors.TypeError(f"parameters must be a str, not {type(text).__name__}")
        self.target_type = target_type
        self.text = text
        self.words = text.split()
        self.pos = 0

    def fail(self, why: str) -> errors.DmParseError:
        shown = mask_params(self.target_type, self.text)
        return errors.DmParseError(f"{self.target_type} parameters {shown!r}: {why}")

    def more(self) -> bool:
        return self.pos < len(self.words)

    def peek(self) -> Optional[str]:
        return self.words[self.pos] if self.more() else None

    def word(self, what: str) -> str:
        if not self.more():
            raise self.fail(f"{what} is missing")
        self.pos += 1
        return self.words[self.pos - 1]

    def int(self, what: str) -> int:
        word = self.word(what)
        if not word.isascii() or not word.isdigit():
            raise self.fail(f"{what} must be a decimal number, got {word!r}")
        return int(word)

    def done(self) -> None:
        if self.more():
            raise self.fail(f"unexpected {' '.join(self.words[self.pos:])!r} at the end")


P = TypeVar("P", bound="TargetParams")


class TargetParams:
    """Base of the typed parameter classes: ``str()`` is the kernel's
    parameter string, :meth:`parse` reads it back, :meth:`target` makes the
    table line.  Subclasses are frozen dataclasses."""

    target_type: ClassVar[str] = ""

    def words(self) -> List[str]:
        """The parameter string's words, in the kernel's order."""
        raise NotImplementedError

    def __str__(self) -> str:
        return " ".join(self.words())

    @classmethod
    def parse(cls: Type[P], params: str) -> P:
        """Read a parameter string (the kernel's ``table`` output, or one
        written by :func:`str`); :class:`~loopcore.errors.DmParseError` if
        it is not in the kernel's form or its values are out of range."""
        words = _Words(cls.target_type, params)
        try:
            obj = cls._read(words)
        except (errors.ValueError, errors.TypeError) as exc:
            if isinstance(exc, errors.DmParseError):
                raise
            raise words.fail(str(exc)) from None
        words.done()
        return obj

    @classmethod
    def _read(cls: Type[P], words: _Words) -> P:
        raise NotImplementedError

    def target(self, start: int, length: int) -> Target:
        """The table line ``start length <type> <these parameters>``."""
        return Target(start, length, self.target_type, str(self))


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _feature_args(words: _Words, what: str = "feature") -> List[str]:
    """``<#args> <arg>...`` when present (absent means none)."""
    if not words.more():
        return []
    count = words.int(f"number of {what} arguments")
    return [words.word(f"{what} argument") for _ in range(count)]


def _with_count(args: List[str]) -> List[str]:
    return [str(len(args)), *args] if args else []


# --- linear, striped, zero, error -----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LinearParams(TargetParams):
    """``<device> <offset>``: sectors from ``offset`` of ``device``."""

    target_type: ClassVar[str] = "linear"
    device: str
    offset: int = 0

    def __post_init__(self) -> None:
        _device("device", self.device)
        _int("offset", self.offset)

    def words(self) -> List[str]:
        return [self.device, str(self.offset)]

    @classmethod
    def _read(cls, words: _Words) -> "LinearParams":
        return cls(words.word("device"), words.int("offset"))


@dataclasses.dataclass(frozen=True)
class StripedParams(TargetParams):
    """``<#stripes> <chunk sectors> <device> <offset>...``."""

    target_type: ClassVar[str] = "striped"
    chunk_sectors: int
    devices: Tuple[Tuple[str, int], ...]

    def __post_init__(self) -> None:
        _int("chunk_sectors", self.chunk_sectors, 1, (1 << 32) - 1)
        _set(self, "devices", _legs("devices", self.devices))
        if not self.devices:
            raise errors.ValueError("striped needs at least one device")

    def words(self) -> List[str]:
        out = [str(len(self.devices)), str(self.chunk_sectors)]
        for dev, off in self.devices:
            out += [dev, str(off)]
        return out

    @classmethod
    def _read(cls, words: _Words) -> "StripedParams":
        count = words.int("number of stripes")
        chunk = words.int("chunk size")
        return cls(chunk, tuple((words.word("device"), words.int("offset"))
                                for _ in range(count)))


@dataclasses.dataclass(frozen=True)
class ZeroParams(TargetParams):
    """No parameters: reads zeros, discards writes."""

    target_type: ClassVar[str] = "zero"

    def words(self) -> List[str]:
        return []

    @classmethod
    def _read(cls, words: _Words) -> "ZeroParams":
        return cls()


@dataclasses.dataclass(frozen=True)
class ErrorParams(TargetParams):
    """No parameters: fails every I/O."""

    target_type: ClassVar[str] = "error"

    def words(self) -> List[str]:
        return []

    @classmethod
    def _read(cls, words: _Words) -> "ErrorParams":
        return cls()


# --- crypt ----------------------------------------------------------------------------

_KEYRING_KEY = re.compile(r":[0-9]+:(logon|user|encrypted|trusted):\S+")


@dataclasses.dataclass(frozen=True)
class CryptParams(TargetParams):
    """``<cipher> <key> <iv_offset> <device> <offset> [<#opt> <opt>...]``.

    ``key``: hex digits, ``"-"`` for none (``cipher_null``), or a kernel
    keyring reference ``:<size>:<logon|user|encrypted|trusted>:<description>``.
    ``repr()`` hides a hex key; ``str()`` holds it (that is what gets loaded),
    and the kernel's ``table`` output shows it as zeros unless asked to show
    keys.  ``integrity``: ``"<tag bytes>:<aead|hmac(...)>"``.
    """

    target_type: ClassVar[str] = "crypt"
    cipher: str
    key: str = dataclasses.field(repr=False)
    iv_offset: int
    device: str
    offset: int
    allow_discards: bool = False
    same_cpu_crypt: bool = False
    submit_from_crypt_cpus: bool = False
    no_read_workqueue: bool = False
    no_write_workqueue: bool = False
    integrity: Optional[str] = None
    sector_size: int = 512
    iv_large_sectors: bool = False

    _FLAGS: ClassVar[Tuple[str, ...]] = ("allow_discards", "same_cpu_crypt",
                                         "submit_from_crypt_cpus", "no_read_workqueue",
                                         "no_write_workqueue")

    def __post_init__(self) -> None:
        _word("cipher", self.cipher)
        _word("key", self.key)
        # hex digits of any count: the kernel's masked output writes a "-"
        # key as "0" too
        if self.key != "-" and not _KEYRING_KEY.fullmatch(self.key) \
                and not all(c in "0123456789abcdefABCDEF" for c in self.key):
            raise errors.ValueError("key must be hex digits, '-' or a keyring reference "
                                    "':<size>:<type>:<description>'")
        _int("iv_offset", self.iv_offset)
        _device("device", self.device)
        _int("offset", self.offset)
        for flag in self._FLAGS + ("iv_large_sectors",):
            _bool(flag, getattr(self, flag))
        if self.integrity is not None:
            _word("integrity", self.integrity)
            if not re.fullmatch(r"[0-9]+:\S+", self.integrity):
                raise errors.ValueError(f"integrity must be '<tag bytes>:<type>', "
                                        f"got {self.integrity!r}")
        _power_of_two("sector_size", self.sector_size, 512, 4096)
        if self.iv_offset % (self.sector_size // 512):
            raise errors.ValueError(f"iv_offset must be a multiple of sector_size "
                                    f"({self.sector_size // 512} sectors)")

    def words(self) -> List[str]:
        opts = [flag for flag in self._FLAGS if getattr(self, flag)]
        if self.integrity is not None:
            opts.append(f"integrity:{self.integrity}")
        if self.sector_size != 512:
            opts.append(f"sector_size:{self.sector_size}")
        if self.iv_large_sectors:
            opts.append("iv_large_sectors")
        return [self.cipher, self.key, str(self.iv_offset), self.device, str(self.offset),
                *_with_count(opts)]

    @classmethod
    def _read(cls, words: _Words) -> "CryptParams":
        head = (words.word("cipher"), words.word("key"), words.int("iv_offset"),
                words.word("device"), words.int("offset"))
        kwargs: Dict[str, object] = {}
        for opt in _feature_args(words, "optional"):
            name, _, value = opt.partition(":")
            if opt in cls._FLAGS or opt == "iv_large_sectors":
                kwargs[opt] = True
            elif name == "integrity" and value:
                kwargs["integrity"] = value
            elif name == "sector_size" and value.isdigit():
                kwargs["sector_size"] = int(value)
            else:
                raise words.fail(f"unknown optional argument {opt!r}")
        return cls(*head, **kwargs)  # type: ignore[arg-type]


# --- verity ---------------------------------------------------------------------------

_VERITY_MODES = ("ignore_corruption", "restart_on_corruption", "panic_on_corruption")
# I/O errors on the devices (Linux 6.12+)
_VERITY_ERROR_MODES = ("restart_on_error", "panic_on_error")


@dataclasses.dataclass(frozen=True)
class VerityParams(TargetParams):
    """``<version> <data dev> <hash dev> <data block size> <hash block size>
    <#data blocks> <hash start block> <algorithm> <root digest> <salt|->
    [<#opt> <opt>...]``.

    ``salt`` is hex ("" for none, written ``-``); ``mode`` is None (EIO on
    corruption) or ignore/restart/panic_on_corruption, ``error_mode`` None
    or restart/panic_on_error; the forward error correction device comes
    with all four ``fec_*`` fields.  Options are written in the kernel's
    order.
    """

    target_type: ClassVar[str] = "verity"
    version: int
    data_device: str
    hash_device: str
    data_block_size: int
    hash_block_size: int
    data_blocks: int
    hash_start_block: int
    algorithm: str
    root_digest: str
    salt: str = ""
    mode: Optional[str] = None
    error_mode: Optional[str] = None
    ignore_zero_blocks: bool = False
    check_at_most_once: bool = False
    try_verify_in_tasklet: bool = False
    fec_device: Optional[str] = None
    fec_blocks: Optional[int] = None
    fec_start: Optional[int] = None
    fec_roots: Optional[int] = None
    root_hash_sig_key_desc: Optional[str] = None

    _FLAGS: ClassVar[Tuple[str, ...]] = ("ignore_zero_blocks", "check_at_most_once",
                                         "try_verify_in_tasklet")

    def __post_init__(self) -> None:
        _int("version", self.version, 0, 1)
        _device("data_device", self.data_device)
        _device("hash_device", self.hash_device)
        _power_of_two("data_block_size", self.data_block_size, 512, 1 << 30)
        _power_of_two("hash_block_size", self.hash_block_size, 512, 1 << 30)
        _int("data_blocks", self.data_blocks)
        _int("hash_start_block", self.hash_start_block)
        _word("algorithm", self.algorithm)
        _hex("root_digest", self.root_digest)
        _hex("salt", self.salt, empty=True)
        _choice("mode", self.mode, (None,) + _VERITY_MODES)
        _choice("error_mode", self.error_mode, (None,) + _VERITY_ERROR_MODES)
        for flag in self._FLAGS:
            _bool(flag, getattr(self, flag))
        fec = (self.fec_device, self.fec_blocks, self.fec_start, self.fec_roots)
        if any(f is not None for f in fec):
            if any(f is None for f in fec):
                raise errors.ValueError("forward error correction needs fec_device, "
                                        "fec_blocks, fec_start and fec_roots")
            _device("fec_device", self.fec_device)
            _int("fec_blocks", self.fec_blocks)
            _int("fec_start", self.fec_start)
            _int("fec_roots", self.fec_roots, 2, 24)
        _word("root_hash_sig_key_desc", self.root_hash_sig_key_desc, optional=True)

    def words(self) -> List[str]:
        opts = [self.mode] if self.mode else []
        opts += [self.error_mode] if self.error_mode else []
        opts += [flag for flag in self._FLAGS if getattr(self, flag)]
        if self.fec_device is not None:
            opts += ["use_fec_from_device", self.fec_device, "fec_blocks", str(self.fec_blocks),
                     "fec_start", str(self.fec_start), "fec_roots", str(self.fec_roots)]
        if self.root_hash_sig_key_desc is not None:
            opts += ["root_hash_sig_key_desc", self.root_hash_sig_key_desc]
        return [str(self.version), self.data_device, self.hash_device,
                str(self.data_block_size), str(self.hash_block_size), str(self.data_blocks),
                str(self.hash_start_block), self.algorithm, self.root_digest,
                self.salt or "-", *_with_count(opts)]

    @classmethod
    def _read(cls, words: _Words) -> "VerityParams":
        head = (words.int("version"), words.word("data device"), words.word("hash device"),
                words.int("data block size"), words.int("hash block size"),
                words.int("number of data blocks"), words.int("hash start block"),
                words.word("algorithm"), words.word("root digest"))
        salt = words.word("salt")
        kwargs: Dict[str, object] = {}
        opts = _Words(cls.target_type, " ".join(_feature_args(words, "optional")))
        values = {"use_fec_from_device": "fec_device", "fec_roots": "fec_roots",
                  "fec_blocks": "fec_blocks", "fec_start": "fec_start",
                  "root_hash_sig_key_desc": "root_hash_sig_key_desc"}
        while opts.more():
            opt = opts.word("optional argument")
            if opt in _VERITY_MODES:
                kwargs["mode"] = opt
            elif opt in _VERITY_ERROR_MODES:
                kwargs["error_mode"] = opt
            elif opt in cls._FLAGS:
                kwargs[opt] = True
            elif opt in values:
                field = values[opt]
                kwargs[field] = opts.word(opt) if field in ("fec_device",
                                                            "root_hash_sig_key_desc") \
                    else opts.int(opt)
            else:
                raise words.fail(f"unknown optional argument {opt!r}")
        return cls(*head, "" if salt == "-" else salt, **kwargs)  # type: ignore[arg-type]


# --- snapshots ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SnapshotOriginParams(TargetParams):
    """``<origin device>``: the origin that its snapshots copy from on write."""

    target_type: ClassVar[str] = "snapshot-origin"
    device: str

    def __post_init__(self) -> None:
        _device("device", self.device)

    def words(self) -> List[str]:
        return [self.device]

    @classmethod
    def _read(cls, words: _Words) -> "SnapshotOriginParams":
        return cls(words.word("device"))


@dataclasses.dataclass(frozen=True)
class SnapshotParams(TargetParams):
    """``<origin> <COW device> <P|PO|N> <chunk sectors> [<#feat> <feat>...]``.

    ``persistent``: the exception store survives a reboot (P) or not (N);
    ``overflow`` (PO, persistent only) makes a full snapshot report
    Overflow and refuse writes instead of being invalidated.
    """

    target_type: ClassVar[str] = "snapshot"
    origin: str
    cow_device: str
    chunk_sectors: int
    persistent: bool = True
    overflow: bool = False
    discard_zeroes_cow: bool = False
    discard_passdown_origin: bool = False

    def __post_init__(self) -> None:
        _device("origin", self.origin)
        _device("cow_device", self.cow_device)
        _power_of_two("chunk_sectors", self.chunk_sectors, 1, 1 << 31)
        for flag in ("persistent", "overflow", "discard_zeroes_cow", "discard_passdown_origin"):
            _bool(flag, getattr(self, flag))
        if self.overflow and not self.persistent:
            raise errors.ValueError("overflow (PO) needs a persistent snapshot")
        if self.discard_passdown_origin and not self.discard_zeroes_cow:
            raise errors.ValueError("discard_passdown_origin needs discard_zeroes_cow")

    def words(self) -> List[str]:
        store = ("PO" if self.overflow else "P") if self.persistent else "N"
        feats = [f for f in ("discard_zeroes_cow", "discard_passdown_origin") if getattr(self, f)]
        return [self.origin, self.cow_device, store, str(self.chunk_sectors),
                *_with_count(feats)]

    @classmethod
    def _read(cls, words: _Words) -> "SnapshotParams":
        origin, cow = words.word("origin"), words.word("COW device")
        store = words.word("persistence").upper()
        if store not in ("P", "PO", "N"):
            raise words.fail(f"persistence must be P, PO or N, got {store!r}")
        chunk = words.int("chunk size")
        kwargs = {}
        for feat in _feature_args(words):
            if feat not in ("discard_zeroes_cow", "discard_passdown_origin"):
                raise words.fail(f"unknown feature {feat!r}")
            kwargs[feat] = True
        return cls(origin, cow, chunk, store != "N", store == "PO", **kwargs)


# --- thin provisioning ----------------------------------------------------------------

# The pool's data block size: 64 KiB to 1 GiB, a multiple of 64 KiB.
THIN_BLOCK_MIN, THIN_BLOCK_MAX = 128, 2097152
# Thin device ids are 24 bits.
THIN_DEV_ID_MAX = (1 << 24) - 1


@dataclasses.dataclass(frozen=True)
class ThinPoolParams(TargetParams):
    """``<metadata dev> <data dev> <block sectors> <low water mark>
    <#feat> <feat>...``.

    ``low_water_blocks``: when free data blocks fall to this, the pool
    raises a device event.  The kernel writes the features with a space
    after each (and after the count), so its text ends in a space; ``str()``
    writes the same.
    """

    target_type: ClassVar[str] = "thin-pool"
    metadata_device: str
    data_device: str
    block_sectors: int
    low_water_blocks: int
    skip_block_zeroing: bool = False
    ignore_discard: bool = False
    no_discard_passdown: bool = False
    read_only: bool = False
    error_if_no_space: bool = False

    _FLAGS: ClassVar[Tuple[str, ...]] = ("skip_block_zeroing", "ignore_discard",
                                         "no_discard_passdown", "read_only",
                                         "error_if_no_space")

    def __post_init__(self) -> None:
        _device("metadata_device", self.metadata_device)
        _device("data_device", self.data_device)
        _int("block_sectors", self.block_sectors, THIN_BLOCK_MIN, THIN_BLOCK_MAX)
        if self.block_sectors % THIN_BLOCK_MIN:
            raise errors.ValueError(f"block_sectors must be a multiple of {THIN_BLOCK_MIN} "
                                    f"(64 KiB), got {self.block_sectors}")
        _int("low_water_blocks", self.low_water_blocks)
        for flag in self._FLAGS:
            _bool(flag, getattr(self, flag))

    def words(self) -> List[str]:
        feats = [flag for flag in self._FLAGS if getattr(self, flag)]
        return [self.metadata_device, self.data_device, str(self.block_sectors),
                str(self.low_water_blocks), str(len(feats)), *feats]

    def __str__(self) -> str:
        return " ".join(self.words()) + " "

    @classmethod
    def _read(cls, words: _Words) -> "ThinPoolParams":
        head = (words.word("metadata device"), words.word("data device"),
                words.int("block size"), words.int("low water mark"))
        kwargs = {}
        for feat in _feature_args(words):
            if feat not in cls._FLAGS:
                raise words.fail(f"unknown feature {feat!r}")
            kwargs[feat] = True
        return cls(*head, **kwargs)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class ThinParams(TargetParams):
    """``<pool dev> <dev id> [<external origin dev>]``: the thin volume
    ``dev_id`` of a pool (made first with the pool message
    ``create_thin``/``create_snap``, see :mod:`loopcore.dm.thin_messages`)."""

    target_type: ClassVar[str] = "thin"
    pool_device: str
    dev_id: int
    external_origin: Optional[str] = None

    def __post_init__(self) -> None:
        _device("pool_device", self.pool_device)
        _int("dev_id", self.dev_id, 0, THIN_DEV_ID_MAX)
        _device("external_origin", self.external_origin, optional=True)

    def words(self) -> List[str]:
        return [self.pool_device, str(self.dev_id)] + (
            [self.external_origin] if self.external_origin is not None else [])

    @classmethod
    def _read(cls, words: _Words) -> "ThinParams":
        pool, dev_id = words.word("pool device"), words.int("device id")
        return cls(pool, dev_id, words.word("external origin") if words.more() else None)


# --- mirror ---------------------------------------------------------------------------

MIRROR_LOG_TYPES = ("core", "disk", "userspace")
_USERSPACE_KINDS = ("clustered-core", "clustered-disk")


@dataclasses.dataclass(frozen=True)
class MirrorParams(TargetParams):
    """``<log type> <#log args> <log args...> <#legs> <dev> <offset>...
    [<#features> <features...>]`` (dm-raid1).

    - ``core``: ``core <1|2> <region_size> [sync|nosync]``;
    - ``disk``: ``disk <2|3> <log dev> <region_size> [sync|nosync]``;
    - ``userspace``: ``userspace <N> <uuid> [integrated_flush] clustered-core
      <region_size> [sync|nosync]`` or ``... clustered-disk <log dev>
      <region_size> ...``; ``N`` counts the words after it up to the leg
      count.  ``integrated_flush`` (Linux 3.14+) goes right after the uuid:
      the kernel then sends marks inside FLUSH requests instead of separate
      MARK_REGION ones.
    - features: ``handle_errors`` (lvm2's modern form of error handling;
      ``block_on_error`` in the log arguments is a pre-2.6.22 leftover) and
      ``keep_log``.

    The region size (sectors) must be a power of two of at least 2:
    dm-region-hash uses it as a shift, and the userspace log does not check
    it.
    """

    target_type: ClassVar[str] = "mirror"
    legs: Tuple[Tuple[str, int], ...]
    region_size: int
    log: str = "core"
    log_device: Optional[str] = None
    uuid: Optional[str] = None
    sync: Optional[str] = None
    handle_errors: bool = False
    keep_log: bool = False
    integrated_flush: bool = False

    def __post_init__(self) -> None:
        _set(self, "legs", _legs("legs", self.legs))
        if not 2 <= len(self.legs) <= 8:
            # dm-raid1 takes at most DM_KCOPYD_MAX_REGIONS + 1 = 8 legs
            raise errors.ValueError(f"a mirror needs 2 to 8 legs, got {len(self.legs)}")
        _int("region_size", self.region_size)
        if self.region_size < 2 or self.region_size & (self.region_size - 1):
            raise errors.ValueError(f"region_size must be a power of two of at least 2, "
                                    f"got {self.region_size}")
        _choice("log", self.log, MIRROR_LOG_TYPES)
        _choice("sync", self.sync, (None, "sync", "nosync"))
        for flag in ("handle_errors", "keep_log", "integrated_flush"):
            _bool(flag, getattr(self, flag))
        if self.keep_log and not self.handle_errors:
            raise errors.ValueError("keep_log needs handle_errors (the kernel refuses it alone)")
        if self.integrated_flush and self.log != "userspace":
            raise errors.ValueError("integrated_flush needs a userspace log")
        if self.log == "core" and self.log_device is not None:
            raise errors.ValueError("a core log has no log device")
        if self.log == "disk" and self.log_device is None:
            raise errors.ValueError("a disk log needs log_device")
        _device("log_device", self.log_device, optional=True)
        if self.log == "userspace":
            if not self.uuid or not isinstance(self.uuid, str) or len(self.uuid) > 128 \
                    or any(c.isspace() or not c.isprintable() for c in self.uuid):
                raise errors.ValueError(f"a userspace log needs a uuid of 1 to 128 printable "
                                        f"characters without spaces, got {self.uuid!r}")
        elif self.uuid is not None:
            raise errors.ValueError("only a userspace log has a uuid")

    def log_words(self) -> List[str]:
        """The log's arguments after its count (what a userspace log server
        gets, after the uuid and integrated_flush)."""
        tail = [str(self.region_size)] + ([self.sync] if self.sync else [])
        if self.log == "core":
            return tail
        if self.log == "disk":
            return [str(self.log_device)] + tail
        kind = ["clustered-core"] if self.log_device is None \
            else ["clustered-disk", self.log_device]
        return kind + tail

    def words(self) -> List[str]:
        log_args = self.log_words()
        if self.log == "userspace":
            log_args = [str(self.uuid)] + (["integrated_flush"] if self.integrated_flush
                                           else []) + log_args
        out = [self.log, str(len(log_args)), *log_args, str(len(self.legs))]
        for dev, offset in self.legs:
            out += [dev, str(offset)]
        features = [f for f in ("handle_errors", "keep_log") if getattr(self, f)]
        return out + _with_count(features)

    @classmethod
    def _read(cls, words: _Words) -> "MirrorParams":
        log = words.word("log type")
        count = words.int("number of log arguments")
        args = [words.word("log argument") for _ in range(count)]
        kwargs: Dict[str, object] = {"log": log}
        if log == "userspace":
            if not args:
                raise words.fail("a userspace log needs a uuid")
            kwargs["uuid"] = args.pop(0)
            if args[:1] == ["integrated_flush"]:
                kwargs["integrated_flush"] = True
                args.pop(0)
            kind = args.pop(0) if args else None
            if kind not in _USERSPACE_KINDS:
                raise words.fail(f"userspace log type must be one of "
                                 f"{', '.join(_USERSPACE_KINDS)}, got {kind!r}")
            if kind == "clustered-disk":
                kwargs["log_device"] = args.pop(0) if args else None
        elif log == "disk":
            kwargs["log_device"] = args.pop(0) if args else None
        elif log != "core":
            raise words.fail(f"log type must be one of {', '.join(MIRROR_LOG_TYPES)}, "
                             f"got {log!r}")
        if not args or not args[0].isdigit():
            raise words.fail("the log's region size is missing")
        kwargs["region_size"] = int(args.pop(0))
        if args:
            kwargs["sync"] = args.pop(0)
        if args:
            raise words.fail(f"unexpected log arguments {args!r}")
        nlegs = words.int("number of legs")
        legs = tuple((words.word("leg device"), words.int("leg offset")) for _ in range(nlegs))
        for feat in _feature_args(words):
            if feat not in ("handle_errors", "keep_log"):
                raise words.fail(f"unknown feature {feat!r}")
            kwargs[feat] = True
        return cls(legs, **kwargs)  # type: ignore[arg-type]


# --- integrity ------------------------------------------------------------------------

_INTEGRITY_MODES = ("J", "B", "D", "R")
# The options with a value, in the order the kernel writes them
# (dm-integrity's status function), between the flags around them.
_INTEGRITY_ORDER: Tuple[Tuple[str, str], ...] = (
    ("meta_device", "device"), ("block_size", "int"), ("recalculate", "flag"),
    ("reset_recalculate", "flag"), ("allow_discards", "flag"), ("journal_sectors", "int"),
    ("interleave_sectors", "int"), ("buffer_sectors", "int"), ("journal_watermark", "int"),
    ("commit_time", "int"), ("sectors_per_bit", "int"), ("bitmap_flush_interval", "int"),
    ("fix_padding", "flag"), ("fix_hmac", "flag"), ("legacy_recalculate", "flag"),
    ("internal_hash", "alg"), ("journal_crypt", "alg"), ("journal_mac", "alg"),
)


@dataclasses.dataclass(frozen=True)
class IntegrityParams(TargetParams):
    """``<device> <offset> <tag size> <J|B|D|R> <#opt> <opt>...``.

    ``mode``: J (journal), B (bitmap), D (direct, no journal), R (recovery,
    read-only, no checks).  Options are None/False when not given;
    ``internal_hash``, ``journal_crypt``, ``journal_mac`` are
    ``"<algorithm>"`` or ``"<algorithm>:<hex key>"`` (the key is shown as
    zeros in the kernel's table output, and hidden by ``repr()``).
    """

    target_type: ClassVar[str] = "integrity"
    device: str
    offset: int
    tag_size: int
    mode: str = "J"
    meta_device: Optional[str] = None
    block_size: Optional[int] = None
    recalculate: bool = False
    reset_recalculate: bool = False
    allow_discards: bool = False
    journal_sectors: Optional[int] = None
    interleave_sectors: Optional[int] = None
    buffer_sectors: Optional[int] = None
    journal_watermark: Optional[int] = None
    commit_time: Optional[int] = None
    sectors_per_bit: Optional[int] = None
    bitmap_flush_interval: Optional[int] = None
    fix_padding: bool = False
    fix_hmac: bool = False
    legacy_recalculate: bool = False
    internal_hash: Optional[str] = dataclasses.field(default=None, repr=False)
    journal_crypt: Optional[str] = dataclasses.field(default=None, repr=False)
    journal_mac: Optional[str] = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        _device("device", self.device)
        _int("offset", self.offset)
        _int("tag_size", self.tag_size, 0, (1 << 32) - 1)
        _choice("mode", self.mode, _INTEGRITY_MODES)
        for name, kind in _INTEGRITY_ORDER:
            value = getattr(self, name)
            if kind == "flag":
                _bool(name, value)
            elif value is None:
                continue
            elif kind == "int":
                _int(name, value, 0, (1 << 64) - 1)
            elif kind == "device":
                _device(name, value)
            else:
                _word(name, value)
                alg, _, key = value.partition(":")
                if not alg:
                    raise errors.ValueError(f"{name} must be '<algorithm>[:<hex key>]'")
                if key:
                    _hex(f"{name} key", key)
        if self.block_size is not None:
            _power_of_two("block_size", self.block_size, 512, 4096)

    def words(self) -> List[str]:
        opts = []
        for name, kind in _INTEGRITY_ORDER:
            value = getattr(self, name)
            if kind == "flag":
                if value:
                    opts.append(name)
            elif value is not None:
                opts.append(f"{name}:{value}")
        return [self.device, str(self.offset), str(self.tag_size), self.mode, str(len(opts)),
                *opts]

    @classmethod
    def _read(cls, words: _Words) -> "IntegrityParams":
        head = (words.word("device"), words.int("offset"), words.int("tag size"),
                words.word("mode"))
        kinds = dict(_INTEGRITY_ORDER)
        kwargs: Dict[str, object] = {}
        for opt in _feature_args(words, "optional"):
            name, colon, value = opt.partition(":")
            kind = kinds.get(name)
            if kind == "flag" and not colon:
                kwargs[name] = True
            elif kind == "int" and value.isascii() and value.isdigit():
                kwargs[name] = int(value)
            elif kind in ("device", "alg") and value:
                kwargs[name] = value
            else:
                raise words.fail(f"unknown or malformed optional argument {name!r}")
        return cls(*head, **kwargs)  # type: ignore[arg-type]


# --- all types ------------------------------------------------------------------------

PARAMS_TYPES: Dict[str, Type[TargetParams]] = {
    cls.target_type: cls for cls in (
        LinearParams, StripedParams, ZeroParams, ErrorParams, CryptParams, VerityParams,
        SnapshotOriginParams, SnapshotParams, ThinPoolParams, ThinParams, MirrorParams,
        IntegrityParams)
}
# snapshot-merge takes a snapshot's parameters
_PARSE_AS: Dict[str, Callable[[str], TargetParams]] = {"snapshot-merge": SnapshotParams.parse}


def parse_params(target_type: str, params: str) -> TargetParams:
    """The typed parameters of a ``target_type`` target from its parameter
    string (as the kernel's ``table`` output writes it);
    :class:`~loopcore.errors.DmParseError` for a type loopcore does not
    model or text it cannot read."""
    parse = _PARSE_AS.get(target_type)
    if parse is None:
        cls = PARAMS_TYPES.get(target_type)
        if cls is None:
            raise errors.DmParseError(f"no typed parameters for target type {target_type!r} "
                                      f"(known: {', '.join(sorted(PARAMS_TYPES))})")
        parse = cls.parse
    return parse(params)


# --- builders -------------------------------------------------------------------------

def linear(start: int, length: int, device: DeviceArg, offset: int = 0) -> Target:
    """``start length linear <device> <offset>`` (sectors)."""
    return LinearParams(device_arg(device), offset).target(start, length)


def striped(start: int, length: int, chunk_sectors: int,
            devices: Sequence[Union[DeviceArg, Tuple[DeviceArg, int]]]) -> Target:
    """``start length striped <n> <chunk> <dev> <offset> ...``.

    ``devices`` are devices or (device, offset) pairs; ``chunk_sectors``
    must be a power of two of at least 8 (4 KiB), and ``length`` a multiple
    of ``chunk_sectors * len(devices)``'s chunk (the kernel checks that too).
    """
    sectors("length", length)
    sectors("chunk_sectors", chunk_sectors)
    if chunk_sectors < 8 or chunk_sectors & (chunk_sectors - 1):
        raise errors.ValueError(f"chunk_sectors must be a power of two >= 8, "
                                f"got {chunk_sectors}")
    if not devices:
        raise errors.ValueError("striped needs at least one device")
    if length % chunk_sectors:
        raise errors.ValueError(f"length {length} is not a multiple of the chunk "
                                f"({chunk_sectors})")
    if (length // chunk_sectors) % len(devices):
        raise errors.ValueError(f"length {length} does not divide into {len(devices)} "
                                f"stripes of whole chunks")
    pairs = []
    for entry in devices:
        dev, off = entry if isinstance(entry, tuple) else (entry, 0)
        pairs.append((device_arg(dev), off))
    return StripedParams(chunk_sectors, tuple(pairs)).target(start, length)


def zero(start: int, length: int) -> Target:
    """A target that reads zeros and discards writes."""
    return ZeroParams().target(start, length)


def error(start: int, length: int) -> Target:
    """A target that fails every I/O."""
    return ErrorParams().target(start, length)


Leg = Union[DeviceArg, Tuple[DeviceArg, int]]


def mirror(start: int, length: int, legs: Sequence[Leg], region_size: int, *,
           log: str = "core", log_device: Optional[DeviceArg] = None,
           uuid: Optional[str] = None, sync: Optional[str] = None,
           handle_errors: bool = False, keep_log: bool = False,
           integrated_flush: bool = False) -> Target:
    """A ``mirror`` target (see :class:`MirrorParams`) over ``legs``
    (devices, or (device, offset) pairs; the first is the default leg
    resyncs copy from).

    ``log``: ``"core"`` (in kernel memory), ``"disk"`` (on ``log_device``)
    or ``"userspace"`` (served by a dm-log-userspace server such as
    :class:`~loopcore.dmlog.DirtyLogServer` under ``uuid``, a clustered-disk
    log if ``log_device`` is given, else clustered-core).  ``sync``: None
    (resync what the log does not know to be in sync), ``"sync"`` (resync
    everything) or ``"nosync"`` (trust that the legs are equal).
    ``integrated_flush`` needs a userspace log.  ``region_size`` must not
    exceed ``length``.

    >>> mirror(0, 65536, [a, b], 1024, log="userspace", uuid="LVM-m1", log_device=c)
    ...     # 0 65536 mirror userspace 4 LVM-m1 clustered-disk 7:2 1024 2 7:0 0 7:1 0
    """
    sectors("start", start)
    sectors("length", length)
    sectors("region_size", region_size)
    if length < 1:
        raise errors.ValueError("a mirror needs a length of at least one sector")
    if region_size > length:
        raise errors.ValueError(f"region_size must be a power of two from 2 to the length "
                                f"({length}), got {region_size}")
    if isinstance(legs, (str, bytes)):
        raise errors.TypeError("legs must be a sequence of devices or (device, offset) pairs")
    pairs = []
    for leg in legs:
        dev, offset = leg if isinstance(leg, tuple) else (leg, 0)
        pairs.append((device_arg(dev), offset))
    params = MirrorParams(tuple(pairs), region_size, log=log,
                          log_device=None if log_device is None else device_arg(log_device),
                          uuid=uuid, sync=sync, handle_errors=handle_errors,
                          keep_log=keep_log, integrated_flush=integrated_flush)
    if log == "userspace":
        # The kernel sends "<length> <args after the uuid>" to the server:
        # at most 332 bytes, and 331 so that the NUL-terminated copy it sends
        # when it reconnects to a restarted server fits too (else it retries
        # that reconnect forever).
        ctr = " ".join([str(length)] + params.log_words())
        if len(ctr) > 331:
            raise errors.ValueError(f"the log arguments are too long for dm-log-userspace "
                                    f"({len(ctr)} bytes, at most 331): name the log device "
                                    f"by its device number")
    return params.target(start, length)

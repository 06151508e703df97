"""Typed target status: what each target type's status line says, as a
record (:class:`ThinPoolStatus`, :class:`MirrorStatus` ...), read from the
text the kernel writes (its ``*_status`` functions with STATUSTYPE_INFO,
as ``dmsetup status`` prints it).

:func:`parse_status` (or :meth:`StatusLine.parsed
<loopcore.dm.StatusLine.parsed>`) reads one line; a type loopcore does not
model, or text not in the kernel's form, raises
:class:`~loopcore.errors.DmParseError` rather than guessing.  A target that
reports a state word instead of its numbers (a failed thin pool's
``Fail``, an invalidated snapshot's ``Invalid``) gives
:class:`UnavailableStatus`.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Dict, Optional, Tuple, Union

from .. import errors

__all__ = [
    "DeviceHealth", "TargetStatus", "EmptyStatus", "UnavailableStatus", "StripedStatus",
    "ThinPoolStatus", "ThinStatus", "SnapshotStatus", "VerityStatus", "MirrorStatus",
    "IntegrityStatus", "parse_status", "STATUS_TYPES",
]


class DeviceHealth(str, enum.Enum):
    """A device's health character in a striped or mirror status (and a
    mirror's disk log): A alive; D dead (striped) or write failure;
    S sync, R read, F flush failure; U unclassified."""

    ALIVE = "A"
    DEAD = "D"
    SYNC_FAILED = "S"
    READ_FAILED = "R"
    FLUSH_FAILED = "F"
    UNCLASSIFIED = "U"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class EmptyStatus:
    """The status of a target that reports nothing (linear, zero, error,
    crypt, snapshot-origin)."""

    target_type: str


@dataclasses.dataclass(frozen=True)
class UnavailableStatus:
    """A state word in place of the numbers: ``Fail`` or ``Error`` (thin
    pool, thin), ``-`` (a thin volume without its device yet), ``Invalid``,
    ``Overflow``, ``Merge failed`` or ``Unknown`` (snapshot)."""

    target_type: str
    state: str

    @property
    def failed(self) -> bool:
        """The target cannot serve I/O any more (not a passing state)."""
        return self.state in ("Fail", "Error", "Invalid", "Overflow", "Merge failed")


@dataclasses.dataclass(frozen=True)
class StripedStatus:
    """``<#stripes> <dev>... 1 <health chars>``."""

    devices: Tuple[str, ...]
    health: Tuple[DeviceHealth, ...]

    @property
    def healthy(self) -> bool:
        return all(h is DeviceHealth.ALIVE for h in self.health)


@dataclasses.dataclass(frozen=True)
class ThinPoolStatus:
    """``<transaction id> <used>/<total metadata blocks> <used>/<total data
    blocks> <held metadata root|-> <rw|ro|out_of_data_space>
    <discard_passdown|no_discard_passdown|ignore_discard>
    <error_if_no_space|queue_if_no_space> <needs_check|->
    [<metadata low watermark>]``.

    Metadata blocks are 4 KiB; data blocks are the pool's block size.
    ``metadata_low_watermark`` (metadata blocks; kernels from 4.19) is None
    when the kernel does not report it.
    """

    transaction_id: int
    used_metadata_blocks: int
    total_metadata_blocks: int
    used_data_blocks: int
    total_data_blocks: int
    held_metadata_root: Optional[int]
    mode: str
    discard: str
    no_space: str
    needs_check: bool
    metadata_low_watermark: Optional[int] = None

    @property
    def read_only(self) -> bool:
        return self.mode != "rw"

    @property
    def free_data_blocks(self) -> int:
        return self.total_data_blocks - self.used_data_blocks

    @property
    def free_metadata_blocks(self) -> int:
        return self.total_metadata_blocks - self.used_metadata_blocks


@dataclasses.dataclass(frozen=True)
class ThinStatus:
    """``<mapped sectors> <highest mapped sector|->``: sectors with a data
    block behind them (whole pool blocks), and the last sector of the
    highest mapped block (None when nothing is mapped)."""

    mapped_sectors: int
    highest_mapped_sector: Optional[int]


@dataclasses.dataclass(frozen=True)
class SnapshotStatus:
    """``<allocated>/<total sectors> <metadata sectors>`` of the COW store
    (allocated includes the metadata)."""

    allocated_sectors: int
    total_sectors: int
    metadata_sectors: int


@dataclasses.dataclass(frozen=True)
class VerityStatus:
    """``V`` (verified so far) or ``C`` (a corrupted block was found);
    later kernels (6.4+) add the blocks corrected by forward error
    correction, or ``-`` without it (``fec_corrected`` None then, and on
    kernels that do not report it)."""

    corrupted: bool
    fec_corrected: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class MirrorStatus:
    """``<#legs> <dev>... <in sync>/<total regions> 1 <health chars>
    <#log args> <log args...>``.

    The log's words are its own: ``core`` ("1 core"), ``disk`` ("3 disk
    <dev> <A|D|F>"), or what a userspace log server answers
    (``clustered-core``, ``clustered-disk <dev> <A|D>``).
    """

    devices: Tuple[str, ...]
    health: Tuple[DeviceHealth, ...]
    in_sync_regions: int
    total_regions: int
    log_args: Tuple[str, ...]

    @property
    def in_sync(self) -> bool:
        return self.in_sync_regions == self.total_regions

    @property
    def log_type(self) -> str:
        return self.log_args[0] if self.log_args else ""

    @property
    def log_device(self) -> Optional[str]:
        """The log device of a disk log, else None."""
        return self.log_args[1] if len(self.log_args) == 3 else None

    @property
    def log_health(self) -> Optional[DeviceHealth]:
        """The health of a disk log's device, else None."""
        return DeviceHealth(self.log_args[2]) if len(self.log_args) == 3 else None


@dataclasses.dataclass(frozen=True)
class IntegrityStatus:
    """``<mismatches> <provided data sectors> <recalculating sector|->``:
    integrity mismatches seen, sectors the device offers above its tags
    and journal, and how far a recalculation got (None when none runs)."""

    mismatches: int
    provided_data_sectors: int
    recalculating_sector: Optional[int]


TargetStatus = Union[EmptyStatus, UnavailableStatus, StripedStatus, ThinPoolStatus,
                     ThinStatus, SnapshotStatus, VerityStatus, MirrorStatus, IntegrityStatus]


# --- parsers ------------------------------------------------------------------------

class _Fail(Exception):
    """Internal: this text is not in the kernel's form (why)."""


def _int(word: str, what: str) -> int:
    if not word.isascii() or not word.isdigit():
        raise _Fail(f"{what} must be a decimal number, got {word!r}")
    return int(word)


def _fraction(word: str, what: str) -> Tuple[int, int]:
    used, slash, total = word.partition("/")
    if not slash:
        raise _Fail(f"{what} must be <used>/<total>, got {word!r}")
    return _int(used, what), _int(total, what)


def _health(chars: str, count: int) -> Tuple[DeviceHealth, ...]:
    if len(chars) != count:
        raise _Fail(f"{count} health characters expected, got {chars!r}")
    try:
        return tuple(DeviceHealth(c) for c in chars)
    except ValueError:
        raise _Fail(f"unknown health character in {chars!r}") from None


def _one_of(word: str, what: str, choices: Tuple[str, ...]) -> str:
    if word not in choices:
        raise _Fail(f"{what} must be one of {', '.join(choices)}, got {word!r}")
    return word


def _empty(target_type: str) -> Callable[[str], TargetStatus]:
    def parse(text: str) -> TargetStatus:
        if text.strip():
            raise _Fail("this target reports no status")
        return EmptyStatus(target_type)
    return parse


def _striped(text: str) -> StripedStatus:
    words = text.split()
    if not words:
        raise _Fail("empty")
    count = _int(words[0], "number of stripes")
    if len(words) != count + 3 or words[count + 1] != "1":
        raise _Fail(f"expected {count} devices, '1' and the health characters")
    return StripedStatus(tuple(words[1:count + 1]), _health(words[count + 2], count))


def _thin_pool(text: str) -> TargetStatus:
    words = text.split()
    if len(words) == 1 and words[0] in ("Fail", "Error"):
        return UnavailableStatus("thin-pool", words[0])
    if len(words) not in (8, 9):
        raise _Fail(f"8 or 9 fields expected, got {len(words)}")
    used_meta, total_meta = _fraction(words[1], "metadata blocks")
    used_data, total_data = _fraction(words[2], "data blocks")
    return ThinPoolStatus(
        transaction_id=_int(words[0], "transaction id"),
        used_metadata_blocks=used_meta, total_metadata_blocks=total_meta,
        used_data_blocks=used_data, total_data_blocks=total_data,
        held_metadata_root=None if words[3] == "-" else _int(words[3], "held metadata root"),
        mode=_one_of(words[4], "mode", ("rw", "ro", "out_of_data_space")),
        discard=_one_of(words[5], "discard mode",
                        ("discard_passdown", "no_discard_passdown", "ignore_discard")),
        no_space=_one_of(words[6], "no-space policy", ("error_if_no_space",
                                                       "queue_if_no_space")),
        needs_check=_one_of(words[7], "needs_check", ("needs_check", "-")) == "needs_check",
        metadata_low_watermark=_int(words[8], "metadata low watermark")
        if len(words) == 9 else None)


def _thin(text: str) -> TargetStatus:
    words = text.split()
    if len(words) == 1 and words[0] in ("Fail", "Error", "-"):
        return UnavailableStatus("thin", words[0])
    if len(words) != 2:
        raise _Fail(f"2 fields expected, got {len(words)}")
    return ThinStatus(_int(words[0], "mapped sectors"),
                      None if words[1] == "-" else _int(words[1], "highest mapped sector"))


def _snapshot(text: str) -> TargetStatus:
    stripped = text.strip()
    if stripped in ("Invalid", "Overflow", "Merge failed", "Unknown"):
        return UnavailableStatus("snapshot", stripped)
    words = stripped.split()
    if len(words) != 2:
        raise _Fail(f"2 fields expected, got {len(words)}")
    allocated, total = _fraction(words[0], "sectors")
    return SnapshotStatus(allocated, total, _int(words[1], "metadata sectors"))


def _verity(text: str) -> VerityStatus:
    words = text.split()
    if not 1 <= len(words) <= 2 or words[0] not in ("V", "C"):
        raise _Fail("V or C expected, then the corrected block count or '-'")
    corrected = None
    if len(words) == 2 and words[1] != "-":
        corrected = _int(words[1], "corrected blocks")
    return VerityStatus(words[0] == "C", corrected)


def _mirror(text: str) -> MirrorStatus:
    words = text.split()
    if not words:
        raise _Fail("empty")
    count = _int(words[0], "number of legs")
    if len(words) < count + 5 or words[count + 2] != "1":
        raise _Fail(f"expected {count} legs, the regions, '1' and the health characters")
    in_sync, total = _fraction(words[count + 1], "regions")
    health = _health(words[count + 3], count)
    nlog = _int(words[count + 4], "number of log arguments")
    log_args = tuple(words[count + 5:])
    if len(log_args) != nlog or not log_args:
        raise _Fail(f"{nlog} log arguments expected, got {len(log_args)}")
    if len(log_args) == 3:
        _health(log_args[2], 1)
    return MirrorStatus(tuple(words[1:count + 1]), health, in_sync, total, log_args)


def _integrity(text: str) -> IntegrityStatus:
    words = text.split()
    if len(words) != 3:
        raise _Fail(f"3 fields expected, got {len(words)}")
    return IntegrityStatus(_int(words[0], "mismatches"), _int(words[1], "provided sectors"),
                           None if words[2] == "-" else _int(words[2], "recalculating sector"))


STATUS_TYPES: Dict[str, Callable[[str], TargetStatus]] = {
    "linear": _empty("linear"),
    "zero": _empty("zero"),
    "error": _empty("error"),
    "crypt": _empty("crypt"),
    "snapshot-origin": _empty("snapshot-origin"),
    "striped": _striped,
    "thin-pool": _thin_pool,
    "thin": _thin,
    "snapshot": _snapshot,
    "snapshot-merge": _snapshot,
    "verity": _verity,
    "mirror": _mirror,
    "integrity": _integrity,
}


def parse_status(target_type: str, params: str) -> TargetStatus:
    """The typed status of a ``target_type`` target from its status text
    (``StatusLine.params``); :class:`~loopcore.errors.DmParseError` for a
    type loopcore does not model or text not in the kernel's form."""
    parse = STATUS_TYPES.get(target_type)
    if parse is None:
        raise errors.DmParseError(f"no typed status for target type {target_type!r} "
                                  f"(known: {', '.join(sorted(STATUS_TYPES))})")
    if not isinstance(params, str):
        raise errors.TypeError(f"status must be a str, not {type(params).__name__}")
    try:
        return parse(params)
    except _Fail as exc:
        raise errors.DmParseError(f"{target_type} status {params!r}: {exc}") from None

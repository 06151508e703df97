"""mirror (dm-raid1): parameters, status and the builder."""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Dict, List, Optional, Sequence, Tuple, Union

from ... import errors
from .base import Target, TargetParams
from .declaration import Opt
from .kinds import (
    DEVICE,
    FLAG,
    LEGS,
    Choice,
    DeviceArg,
    Uint,
    Word,
    Words,
    decimal,
    device_arg,
    leg_pairs,
)
from .status import CARRIED, Counted, DeviceHealth, Fraction, Health, TargetStatus

__all__ = ["MirrorParams", "MirrorStatus", "mirror", "MIRROR_LOG_TYPES"]

MIRROR_LOG_TYPES = ("core", "disk", "userspace")
_USERSPACE_KINDS = ("clustered-core", "clustered-disk")
# The kernel sends "<length> <log args after the uuid>" to a userspace log
# server: at most 332 bytes, and 331 so that the NUL-terminated copy it
# sends when it reconnects to a restarted server fits too (else it retries
# that reconnect forever).
_USERSPACE_CTR_MAX = 331

_DEVICES, _HEALTH, _REGIONS = Counted(), Health(), Fraction("total_regions")
_LOG_ARGS = Counted(nonempty=True)


@dataclasses.dataclass(frozen=True)
class MirrorStatus(TargetStatus):
    """``<#legs> <dev>... <in sync>/<total regions> 1 <health chars>
    <#log args> <log args...>``.

    The log's words are its own: ``core`` ("1 core"), ``disk`` ("3 disk
    <dev> <A|D|F>"), or what a userspace log server answers
    (``clustered-core``, ``clustered-disk <dev> <A|D>``).
    """

    devices: Annotated[Tuple[str, ...], _DEVICES]
    health: Annotated[Tuple[DeviceHealth, ...], _HEALTH]
    in_sync_regions: Annotated[int, _REGIONS]
    total_regions: Annotated[int, CARRIED]
    log_args: Annotated[Tuple[str, ...], _LOG_ARGS]

    @classmethod
    def read_fields(cls, target_type: str, words: Words) -> Dict[str, Any]:
        # the regions come between the devices and their health
        out: Dict[str, Any] = {}
        for name, kind in (("devices", _DEVICES), ("in_sync_regions", _REGIONS),
                           ("health", _HEALTH), ("log_args", _LOG_ARGS)):
            kind.read_into(words, name, out)
        if len(out["log_args"]) == 3:
            Health.chars(out["log_args"][2], 1)
        return out

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
class MirrorParams(TargetParams, target_type="mirror", status=MirrorStatus):
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
    it.  A mirror has 2 to 8 legs (dm-raid1 takes at most
    DM_KCOPYD_MAX_REGIONS + 1).
    """

    legs: Annotated[Tuple[Tuple[str, int], ...], LEGS]
    region_size: Annotated[int, Uint(2, power_of_two=True)]
    log: Annotated[str, Choice(*MIRROR_LOG_TYPES)] = "core"
    log_device: Annotated[Optional[str], DEVICE] = None
    uuid: Annotated[Optional[str], Word()] = None
    sync: Annotated[Optional[str], Choice("sync", "nosync")] = None
    handle_errors: Annotated[bool, Opt(FLAG)] = False
    keep_log: Annotated[bool, Opt(FLAG)] = False
    integrated_flush: Annotated[bool, FLAG] = False

    def check(self) -> None:
        if not 2 <= len(self.legs) <= 8:
            raise errors.ValueError(f"a mirror needs 2 to 8 legs, got {len(self.legs)}")
        if self.keep_log and not self.handle_errors:
            raise errors.ValueError("keep_log needs handle_errors (the kernel refuses it alone)")
        if self.integrated_flush and self.log != "userspace":
            raise errors.ValueError("integrated_flush needs a userspace log")
        if self.log == "core" and self.log_device is not None:
            raise errors.ValueError("a core log has no log device")
        if self.log == "disk" and self.log_device is None:
            raise errors.ValueError("a disk log needs log_device")
        if (self.log == "userspace") != (self.uuid is not None) or len(self.uuid or "") > 128:
            raise errors.ValueError("a userspace log needs a uuid of 1 to 128 printable "
                                    "characters without spaces, and only a userspace log "
                                    "has one")

    def check_length(self, length: int) -> None:
        if not self.region_size <= length:
            raise errors.ValueError(f"region_size must be a power of two from 2 to the "
                                    f"length ({length}), got {self.region_size}")
        ctr = " ".join([str(length)] + self.log_words())
        if self.log == "userspace" and len(ctr) > _USERSPACE_CTR_MAX:
            raise errors.ValueError(f"the log arguments are too long for dm-log-userspace "
                                    f"({len(ctr)} bytes, at most {_USERSPACE_CTR_MAX}): "
                                    f"name the log device by its device number")

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

    # the log's arguments, then the legs, each after its count
    def head_words(self) -> List[str]:
        log_args = self.log_words()
        if self.log == "userspace":
            log_args = [str(self.uuid)] + (["integrated_flush"] if self.integrated_flush
                                           else []) + log_args
        return [self.log, str(len(log_args)), *log_args, str(len(self.legs)),
                *LEGS.words(self.legs)]

    @classmethod
    def read_head(cls, words: Words) -> Dict[str, Any]:
        log = words.word("log type")
        count = words.int("number of log arguments")
        args = [words.word("log argument") for _ in range(count)]
        out: Dict[str, Any] = {"log": log}
        if log == "userspace":
            if not args:
                raise words.fail("a userspace log needs a uuid")
            out["uuid"] = args.pop(0)
            if args[:1] == ["integrated_flush"]:
                out["integrated_flush"] = True
                args.pop(0)
            kind = args.pop(0) if args else None
            if kind not in _USERSPACE_KINDS:
                raise words.fail(f"userspace log type must be one of "
                                 f"{', '.join(_USERSPACE_KINDS)}, got {kind!r}")
            if kind == "clustered-disk":
                out["log_device"] = args.pop(0) if args else None
        elif log == "disk":
            out["log_device"] = args.pop(0) if args else None
        elif log != "core":
            raise words.fail(f"log type must be one of {', '.join(MIRROR_LOG_TYPES)}, "
                             f"got {log!r}")
        if not args:
            raise words.fail("the log's region size is missing")
        out["region_size"] = decimal("region_size", args.pop(0))
        if args:
            out["sync"] = args.pop(0)
        if args:
            raise words.fail(f"unexpected log arguments {args!r}")
        out["legs"] = LEGS.read(words, "legs", words.int("number of legs"))
        return out


Leg = Union[DeviceArg, Tuple[DeviceArg, int]]


def mirror(start: int, length: int, legs: Sequence[Leg], region_size: int, *,
           log: str = "core", log_device: Optional[DeviceArg] = None,
           uuid: Optional[str] = None, sync: Optional[str] = None,
           handle_errors: bool = False, keep_log: bool = False,
           integrated_flush: bool = False) -> Target:
    """A ``mirror`` target (see :class:`MirrorParams`, whose rules these
    are) over ``legs`` (devices, or (device, offset) pairs; the first is the
    default leg resyncs copy from).

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
    params = MirrorParams(leg_pairs("legs", legs), region_size, log=log,
                          log_device=None if log_device is None else device_arg(log_device),
                          uuid=uuid, sync=sync, handle_errors=handle_errors,
                          keep_log=keep_log, integrated_flush=integrated_flush)
    return params.target(start, length)

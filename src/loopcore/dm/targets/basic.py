"""linear, striped, zero and error: parameters, status and builders."""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Dict, List, Sequence, Tuple, Union

from ... import errors
from .base import Target, TargetParams
from .kinds import DEVICE, LEGS, SECTORS, DeviceArg, Uint, Words, device_arg, leg_pairs
from .status import Counted, DeviceHealth, EmptyStatus, Health, TargetStatus

__all__ = ["LinearParams", "StripedParams", "ZeroParams", "ErrorParams", "StripedStatus",
           "linear", "striped", "zero", "error"]


@dataclasses.dataclass(frozen=True)
class LinearParams(TargetParams, target_type="linear", status=EmptyStatus):
    """``<device> <offset>``: sectors from ``offset`` of ``device``."""

    device: Annotated[str, DEVICE]
    offset: Annotated[int, SECTORS] = 0


@dataclasses.dataclass(frozen=True)
class StripedStatus(TargetStatus):
    """``<#stripes> <dev>... 1 <health chars>``."""

    devices: Annotated[Tuple[str, ...], Counted()]
    health: Annotated[Tuple[DeviceHealth, ...], Health()]

    @property
    def healthy(self) -> bool:
        return all(h is DeviceHealth.ALIVE for h in self.health)


@dataclasses.dataclass(frozen=True)
class StripedParams(TargetParams, target_type="striped", status=StripedStatus):
    """``<#stripes> <chunk sectors> <device> <offset>...``.

    The kernel's rules: a chunk of any size from 1 sector (a power of two
    maps faster), and a length that splits into whole chunks on every
    stripe (checked by :meth:`target`)."""

    chunk_sectors: Annotated[int, Uint(1, (1 << 32) - 1)]
    devices: Annotated[Tuple[Tuple[str, int], ...], LEGS]

    def check(self) -> None:
        if not self.devices:
            raise errors.ValueError("striped needs at least one device")

    def check_length(self, length: int) -> None:
        if length % (self.chunk_sectors * len(self.devices)):
            raise errors.ValueError(f"length {length} does not divide into "
                                    f"{len(self.devices)} stripes of whole chunks "
                                    f"({self.chunk_sectors} sectors)")

    # the stripe count comes before the chunk size
    def head_words(self) -> List[str]:
        return [str(len(self.devices)), str(self.chunk_sectors), *LEGS.words(self.devices)]

    @classmethod
    def read_head(cls, words: Words) -> Dict[str, Any]:
        count = words.int("number of stripes")
        chunk = words.int("chunk_sectors")
        return {"chunk_sectors": chunk, "devices": LEGS.read(words, "devices", count)}


@dataclasses.dataclass(frozen=True)
class ZeroParams(TargetParams, target_type="zero", status=EmptyStatus):
    """No parameters: reads zeros, discards writes."""


@dataclasses.dataclass(frozen=True)
class ErrorParams(TargetParams, target_type="error", status=EmptyStatus):
    """No parameters: fails every I/O."""


def linear(start: int, length: int, device: DeviceArg, offset: int = 0) -> Target:
    """``start length linear <device> <offset>`` (sectors)."""
    return LinearParams(device_arg(device), offset).target(start, length)


def striped(start: int, length: int, chunk_sectors: int,
            devices: Sequence[Union[DeviceArg, Tuple[DeviceArg, int]]]) -> Target:
    """``start length striped <n> <chunk> <dev> <offset> ...``.

    ``devices`` are devices or (device, offset) pairs; the rules are
    :class:`StripedParams`' (``length`` a whole number of chunks on each
    stripe)."""
    return StripedParams(chunk_sectors, leg_pairs("devices", devices)).target(start, length)


def zero(start: int, length: int) -> Target:
    """A target that reads zeros and discards writes."""
    return ZeroParams().target(start, length)


def error(start: int, length: int) -> Target:
    """A target that fails every I/O."""
    return ErrorParams().target(start, length)

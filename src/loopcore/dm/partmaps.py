"""What kpartx would map: one dm-linear map per partition, with its names
and uuids, planned from a partition table without touching the kernel.

The rules are those of kpartx (multipath-tools 0.9.4, Debian 12):

- a map is named ``<parent><delimiter><number>``; the parent is the dm
  name of a dm device, else the device node's base name (``loop0``); the
  delimiter, unless given, is ``p`` when the parent ends in a digit and
  nothing otherwise (``loop0p1``, ``sda1``); a ``/`` in the result is
  written ``!``;
- its uuid is ``part<number>-<parent uuid>``: the parent's dm uuid, or for
  a device that has none (a loop device, a disk) the fixed
  ``devnode_<major>:<minor>_Wh5pYvM``;
- its table is one ``linear`` target on the parent (``major:minor``) at
  the partition's start, in 512-byte sectors; an MBR extended partition
  is mapped as its first 1 KiB (two sectors; one logical block where the
  blocks are larger), and logical partitions are mapped on the parent
  too, after the others.
"""
from __future__ import annotations

import os
from typing import List, NamedTuple, Optional, Sequence

from .. import errors
from ..loop.partition_table import PartitionTable
from .names import validate_name, validate_uuid
from .targets import Target, linear

__all__ = ["PartMap", "default_delimiter", "parent_uuid", "part_name", "part_uuid",
           "is_part_of", "plan", "listing", "NONDM_UUID_SUFFIX", "UUID_PREFIX"]

UUID_PREFIX = "part"
# kpartx's made-up uuid of a parent without one: fixed, not random, so a
# later kpartx -d finds the maps again.
NONDM_UUID_PREFIX = "devnode"
NONDM_UUID_SUFFIX = "Wh5pYvM"
SECTOR = 512


class PartMap(NamedTuple):
    """One partition map: ``name`` and ``uuid`` as kpartx gives them,
    ``number`` the partition's, ``start`` and ``sectors`` on the parent
    (512-byte sectors), ``parent`` its devnum and ``device`` its node,
    ``container`` the number of the extended partition holding a logical
    one (0 for the others)."""

    name: str
    uuid: str
    number: int
    start: int
    sectors: int
    parent: int
    device: str
    container: int = 0

    @property
    def target(self) -> Target:
        """The map's one table line: ``0 <sectors> linear <major:minor> <start>``."""
        return linear(0, self.sectors, self.parent, self.start)


def default_delimiter(parent: str) -> str:
    """``p`` when ``parent`` ends in a digit (``loop0p1``), else "" (``sda1``)."""
    return "p" if parent[-1:].isdigit() else ""


def part_name(parent: str, delimiter: str, number: int) -> str:
    """``<parent><delimiter><number>``, a ``/`` after the first character
    written ``!`` (kpartx's strip_slash)."""
    name = f"{parent}{delimiter}{number}"
    return name[:1] + name[1:].replace("/", "!")


def parent_uuid(dm_uuid: Optional[str], devnum: int) -> str:
    """The uuid partition maps are named after: the parent's dm uuid, or
    kpartx's ``devnode_<major>:<minor>_Wh5pYvM`` for a device without one."""
    if dm_uuid:
        return dm_uuid
    return f"{NONDM_UUID_PREFIX}_{os.major(devnum)}:{os.minor(devnum)}_{NONDM_UUID_SUFFIX}"


def part_uuid(number: int, parent: str) -> str:
    """``part<number>-<parent uuid>``."""
    return f"{UUID_PREFIX}{number}-{parent}"


def is_part_of(uuid: Optional[str], parent: str) -> Optional[int]:
    """The partition number if ``uuid`` is ``part<N>-<parent>``, else None."""
    if not uuid or not uuid.startswith(UUID_PREFIX):
        return None
    digits, sep, rest = uuid[len(UUID_PREFIX):].partition("-")
    if not sep or not digits.isdigit() or rest != parent:
        return None
    return int(digits)


def plan(table: Optional[PartitionTable], *, parent: str, devnum: int, device: str,
         uuid: str, delimiter: Optional[str] = None) -> List[PartMap]:
    """The maps kpartx makes for ``table`` on the device ``devnum`` whose
    maps are named after ``parent`` and ``uuid`` (see :func:`parent_uuid`),
    in the order it makes them: primary and extended partitions and GPT
    entries by number, then logical partitions.  Every name and uuid is
    checked (ValueError) so that nothing is made when one would fail."""
    if not parent:
        raise errors.ValueError("the parent device has no name")
    delim = default_delimiter(parent) if delimiter is None else delimiter
    if not isinstance(delim, str):
        raise errors.TypeError(f"delimiter must be a str, not {type(delim).__name__}")
    if table is None:
        return []
    extended = [p for p in table.partitions if p.extended]
    maps = []
    for part in table.partitions:
        size = part.kernel_size
        if not size:
            continue
        holder = next((e.number for e in extended if not part.extended
                       and e.start <= part.start < e.start + e.size), 0)
        name = part_name(parent, delim, part.number)
        puuid = part_uuid(part.number, uuid)
        validate_name(name)
        validate_uuid(puuid)
        maps.append(PartMap(name, puuid, part.number, part.start // SECTOR, size // SECTOR,
                            devnum, device, holder))
    return sorted(maps, key=lambda m: (m.container > 0, m.number))


def listing(maps: Sequence[PartMap]) -> List[str]:
    """``kpartx -l``'s lines for ``maps``: a
    logical partition is shown, as kpartx shows it, relative to its
    extended partition's map as ``/dev/dm-<index of that map in this
    list>`` -- what kpartx prints, not a device it makes."""
    index = {m.number: i for i, m in enumerate(m for m in maps if not m.container)}
    starts = {m.number: m.start for m in maps}
    lines = []
    for m in maps:
        if m.container:
            where = f"/dev/dm-{index[m.container]} {m.start - starts[m.container]}"
        else:
            where = f"{m.device} {m.start}"
        lines.append(f"{m.name} : 0 {m.sectors} {where}")
    return lines

"""Partition tables read in the library, as the kernel's parsers read them.

A kernel built without partition-table parsers (or a device attached
without partscan) shows no ``/dev/loopNpM``.  :func:`read_table` parses
the table itself -- a GPT behind its protective MBR (the backup header at
the last sector when the primary is damaged) or an MBR with primary,
extended and logical partitions -- in the device's logical block size,
following the kernel's own parsers so that the result is what a kernel
with them would register.  Registering the result with the kernel (BLKPG)
is ``partitions``'s job.
"""
from __future__ import annotations

import errno
import os
import stat
import struct
import zlib
from typing import Callable, List, NamedTuple, Optional, Set, Tuple, Union

from .. import _c
from .._log import get_logger
from .._validate import check_fd
from ..errors import PartitionTableError, translate
from . import _calls

__all__ = ["Partition", "PartitionTable", "read_table", "read_partition_table",
           "MAX_PARTITIONS"]

log = get_logger("loop")

#: DISK_MAX_PARTS: BLKPG takes partition numbers below it, and the kernel's
#: parsers (GPT entries, msdos logicals) number theirs 1 to MAX_PARTITIONS - 1
MAX_PARTITIONS = 256
# A GPT entry array larger than this is damage, not a table (the usual one
# is 128 entries x 128 bytes = 16 KiB).
_MAX_GPT_ARRAY = 1 << 22
# Logical blocks sizes a table may have been written for: probed only to
# explain a GPT that is not where the device's block size puts it.
_SECTOR_SIZES = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)

_GPT_SIGNATURE = b"EFI PART"
_GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")   # 92 bytes
_GPT_ENTRY = struct.Struct("<16s16sQQQ72s")          # 128 bytes
_MBR_ENTRY = struct.Struct("<B3sB3sII")              # 16 bytes
_MBR_TABLE = 446
_MBR_MAGIC = b"\x55\xaa"
_PMBR_TYPE = 0xEE
_GPT_HEADER_LBA = 1   # where a protective MBR entry must start (pmbr_part_valid())
_EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
_ZERO_GUID = bytes(16)
# Links followed without finding a logical partition before giving up on
# an EBR chain (the kernel's limit; also ends loops in damaged chains).
_MAX_EMPTY_LINKS = 100


class Partition(NamedTuple):
    """One entry of a partition table, as the kernel would register it.

    ``start`` and ``size`` are bytes from the start of the device (the
    table's sectors times the logical block size).  ``type`` is the GPT
    type GUID or the MBR type as two hex digits (``"83"``); ``uuid`` the
    GPT partition GUID or, for MBR, the kernel's PARTUUID
    (``"<disk signature>-<number>"``); ``name`` the GPT name.
    ``attributes`` holds the GPT attribute bits, or 0x80 for an MBR boot
    flag.  An MBR ``extended`` partition is registered, as the kernel
    does, as its first sector or two only (:attr:`kernel_size`), so that
    nothing mistakes the container for a file system.
    """

    number: int
    start: int
    size: int
    type: str
    uuid: str
    name: str = ""
    attributes: int = 0
    extended: bool = False
    sector_size: int = 512

    @property
    def kernel_size(self) -> int:
        """The length registered with the kernel: :attr:`size`, or for an
        extended partition one logical sector, at least 1 KiB (the
        kernel's msdos parser)."""
        if self.extended:
            return min(self.size, max(self.sector_size, 1024))
        return self.size


class PartitionTable(NamedTuple):
    """A parsed partition table.  ``label`` is ``"gpt"`` or ``"dos"``
    (sfdisk's names), ``id`` the disk GUID or the MBR disk signature
    (``"0x1234abcd"``), ``sector_size`` the logical block size it was read
    with; ``backup`` says the GPT came from the backup header because the
    primary one is damaged."""

    label: str
    id: str
    sector_size: int
    partitions: Tuple[Partition, ...]
    backup: bool = False


Reader = Callable[[int, int], bytes]


def _reader(fd: int) -> Reader:
    def read(offset: int, length: int) -> bytes:
        return os.pread(fd, length, offset)
    return read


def read_table(fd: int, size: int, sector_size: int) -> Optional[PartitionTable]:
    """The partition table of the ``size``-byte disk open as ``fd``, read
    in ``sector_size``-byte logical blocks; None if it has none.

    PartitionTableError for a table that cannot be used: a protective MBR
    without a valid GPT header (neither the primary nor the backup), or a
    GPT written for another sector size.
    """
    if sector_size < 512 or sector_size & (sector_size - 1):
        raise PartitionTableError(errno.EINVAL, f"bad logical block size {sector_size}")
    read = _reader(fd)
    first = read(0, 512)
    if len(first) < 512 or first[510:512] != _MBR_MAGIC:
        return None
    entries = [_MBR_ENTRY.unpack_from(first, _MBR_TABLE + 16 * i) for i in range(4)]
    if any(boot not in (0, 0x80) for boot, *_ in entries):
        return None  # a boot sector (FAT, say) with the 55AA mark, not a table
    protective = [start for _, _, ptype, _, start, _ in entries if ptype == _PMBR_TYPE]
    if protective:
        if _GPT_HEADER_LBA not in protective:
            # the kernel's GPT parser takes no such MBR and its msdos one
            # ignores a disk with a GPT entry: nothing would be registered
            raise PartitionTableError(errno.EINVAL, f"protective MBR entry starts at LBA "
                                      f"{protective[0]}, not {_GPT_HEADER_LBA}")
        return _gpt(read, size, sector_size)
    return _fit(_mbr(read, first, entries, sector_size), size)


def _fit(table: PartitionTable, size: int) -> PartitionTable:
    """Drop partitions that start past the end of the disk and cut the
    ones that run over it, as the kernel does when it registers them: to
    its capacity, whole 512-byte sectors (an image's odd tail is not part
    of its loop device)."""
    size -= size % 512
    kept = []
    for part in table.partitions:
        if part.start >= size:
            log.warning("partition %d starts past the end of the disk (%d >= %d): skipped",
                        part.number, part.start, size)
            continue
        if part.start + part.size > size:
            log.warning("partition %d runs past the end of the disk: cut to %d bytes",
                        part.number, size - part.start)
            part = part._replace(size=size - part.start)
        kept.append(part)
    return table._replace(partitions=tuple(kept))


# --- GPT ---------------------------------------------------------------------------

def _gpt(read: Reader, size: int, sector_size: int) -> PartitionTable:
    import uuid  # here: only a GPT has GUIDs (uuid imports platform: start-up time)

    last_lba = size // sector_size - 1
    if last_lba < 2:
        raise PartitionTableError(errno.EINVAL, "protective MBR on a disk too small for a GPT")
    header = _gpt_header(read, _GPT_HEADER_LBA, sector_size, last_lba)
    backup = False
    if header is None:
        # The kernel reads the backup only through the primary's pointer
        # (or with the gpt boot option); libblkid and partx look at the
        # last sector, which is where every tool writes it.
        header = _gpt_header(read, last_lba, sector_size, last_lba)
        backup = header is not None
        if backup:
            log.warning("primary GPT header damaged: using the backup at LBA %d", last_lba)
    if header is None:
        for other in _SECTOR_SIZES:
            if other != sector_size and read(other, 8) == _GPT_SIGNATURE:
                raise PartitionTableError(
                    errno.EINVAL, f"the GPT was written for {other}-byte sectors, the "
                    f"device has {sector_size}-byte sectors (attach with block_size={other})")
        raise PartitionTableError(errno.EINVAL, "protective MBR but no valid GPT header "
                                  "(neither the primary nor the backup)")
    disk_guid, entries, count = header
    parts = []
    # the kernel reads entries 1 to MAX_PARTITIONS - 1 only
    for index in range(min(count, MAX_PARTITIONS - 1)):
        (type_guid, part_guid, first, last, attributes,
         name) = _GPT_ENTRY.unpack_from(entries, index * _GPT_ENTRY.size)
        if type_guid == _ZERO_GUID:
            continue
        number = index + 1
        if first > last or last > last_lba:
            # the kernel's is_pte_valid(): such entries are not registered
            log.warning("GPT entry %d (LBA %d-%d) is outside the disk: skipped",
                        number, first, last)
            continue
        parts.append(Partition(
            number=number, start=first * sector_size, size=(last - first + 1) * sector_size,
            type=str(uuid.UUID(bytes_le=type_guid)), uuid=str(uuid.UUID(bytes_le=part_guid)),
            name=name.decode("utf-16-le", "replace").split("\0", 1)[0],
            attributes=attributes, sector_size=sector_size))
    return PartitionTable("gpt", str(uuid.UUID(bytes_le=disk_guid)), sector_size,
                          tuple(parts), backup)


def _gpt_header(read: Reader, lba: int, sector_size: int,
                last_lba: int) -> Optional[Tuple[bytes, bytes, int]]:
    """(disk GUID, entry array, entry count) of a valid GPT
    header at ``lba``, else None: the checks of the kernel's
    is_gpt_valid() -- signature, header size and CRC, its own LBA, usable
    range, entry size (exactly 128 bytes), entry array CRC."""
    raw = read(lba * sector_size, sector_size)
    if len(raw) < _GPT_HEADER.size or raw[:8] != _GPT_SIGNATURE:
        return None
    (_sig, _revision, header_size, header_crc, _reserved, my_lba, _alternate, first_usable,
     last_usable, disk_guid, entries_lba, count, entry_size,
     entries_crc) = _GPT_HEADER.unpack_from(raw)
    if not _GPT_HEADER.size <= header_size <= sector_size:
        return None
    if zlib.crc32(raw[:16] + bytes(4) + raw[20:header_size]) != header_crc:
        return None
    if my_lba != lba or not first_usable <= last_usable <= last_lba:
        return None
    if entry_size != _GPT_ENTRY.size or not 0 < count * entry_size \
            <= _MAX_GPT_ARRAY or entries_lba > last_lba:
        return None
    entries = read(entries_lba * sector_size, count * entry_size)
    if len(entries) != count * entry_size or zlib.crc32(entries) != entries_crc:
        return None
    return disk_guid, entries, count


# --- MBR ---------------------------------------------------------------------------

def _mbr(read: Reader, first: bytes, entries: List[Tuple[int, bytes, int, bytes, int, int]],
         sector_size: int) -> PartitionTable:
    disksig = struct.unpack_from("<I", first, 440)[0]
    parts: List[Partition] = []
    for slot, (boot, _chs, ptype, _chs_end, start, count) in enumerate(entries, 1):
        if not count:
            continue
        part = Partition(number=slot, start=start * sector_size, size=count * sector_size,
                         type=f"{ptype:02x}", uuid=f"{disksig:08x}-{slot:02x}",
                         attributes=boot, extended=ptype in _EXTENDED_TYPES,
                         sector_size=sector_size)
        parts.append(part)
    # Logical partitions are numbered from 5 in the order the chains are
    # walked; like the kernel, every extended primary has its chain.
    logicals: List[Partition] = []
    for part in list(parts):
        if part.extended:
            _logicals(read, part.start, part.size, sector_size, disksig, logicals)
    return PartitionTable("dos", f"0x{disksig:08x}", sector_size, tuple(parts + logicals))


def _logicals(read: Reader, first: int, first_size: int, sector_size: int, disksig: int,
              out: List[Partition]) -> None:
    """Walk the chain of extended boot records of the extended partition at
    byte ``first``: each holds data partitions (start relative to the
    record) and a link to the next record (start relative to ``first``)."""
    this, this_size = first, first_size
    seen: Set[int] = set()
    empty_links = 0
    while True:
        empty_links += 1
        if empty_links > _MAX_EMPTY_LINKS or this in seen:
            return
        seen.add(this)
        record = read(this, 512)
        if len(record) < 512 or record[510:512] != _MBR_MAGIC:
            return
        entries = [_MBR_ENTRY.unpack_from(record, _MBR_TABLE + 16 * i) for i in range(4)]
        for i, (boot, _chs, ptype, _chs_end, start, count) in enumerate(entries):
            if not count or ptype in _EXTENDED_TYPES:
                continue
            offset, size = start * sector_size, count * sector_size
            at = this + offset
            # entries 3 and 4 sometimes hold garbage: only ones inside
            # the extended partition count (the kernel's check)
            if i >= 2 and (offset + size > this_size or at < first
                           or at + size > first + first_size):
                continue
            number = 5 + len(out)
            if number >= MAX_PARTITIONS:
                return
            out.append(Partition(number=number, start=at, size=size, type=f"{ptype:02x}",
                                 uuid=f"{disksig:08x}-{number:02x}", attributes=boot,
                                 sector_size=sector_size))
            empty_links = 0
        link = next(((start, count) for _b, _c1, ptype, _c2, start, count in entries
                     if count and ptype in _EXTENDED_TYPES), None)
        if link is None:
            return
        this, this_size = first + link[0] * sector_size, link[1] * sector_size


@translate
def read_partition_table(source: Union[str, bytes, "os.PathLike[str]", int], *,
                         sector_size: Optional[int] = None) -> Optional[PartitionTable]:
    """The partition table of an image file or a block device (a path or
    an open fd), None if it has none.

    ``sector_size`` defaults to the logical block size of a block device
    and to 512 for a file (an image made for 4096-byte sectors needs
    ``sector_size=4096``, as ``sfdisk --sector-size 4096`` does).
    """
    if isinstance(source, int):  # a bool too: check_fd refuses it
        fd, name, own = check_fd(source), f"fd {source}", False
    else:
        name = os.fsdecode(source)
        fd, own = os.open(name, os.O_RDONLY | os.O_CLOEXEC), True
    try:
        st = os.fstat(fd)
        if stat.S_ISBLK(st.st_mode):
            value = _c.ffi.new("uint64_t *")
            _calls.check(_c.lib.lc_get_size64(fd, value), name)
            size = int(value[0])
            if sector_size is None:
                ssz = _c.ffi.new("uint32_t *")
                _calls.check(_c.lib.lc_get_sector_size(fd, ssz), name)
                sector_size = int(ssz[0])
        else:
            size = st.st_size
        return read_table(fd, size, sector_size or 512)
    finally:
        if own:
            os.close(fd)

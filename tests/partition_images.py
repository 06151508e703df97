"""Partition tables built in memory, for the tests that read damaged or
unusual ones (not what sfdisk would write): a GPT behind its protective
MBR, an MBR with an extended chain, and :func:`read_image` to read one
with loopcore's reader (from a memfd, no file or device needed)."""
from __future__ import annotations

import os
import struct
import zlib
from typing import Optional, Sequence, Tuple

from loopcore.loop.partition_table import PartitionTable, read_table

__all__ = ["gpt_image", "mbr_sector", "ebr_chain_image", "read_image", "MBR_ENTRY", "Image"]

MBR_ENTRY = struct.Struct("<B3sB3sII")
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")


def gpt_image(size: int, entries: Sequence[Tuple[int, int, int]], *, sector: int = 512,
              count: int = 128, entry_size: int = 128, pmbr_start: int = 1,
              backup: bool = True) -> bytearray:
    """A ``size``-byte disk with a GPT: ``(index, first LBA, last LBA)`` per
    used entry (index from 0), ``count`` entries of ``entry_size`` bytes."""
    last_lba = size // sector - 1
    array = bytearray(count * entry_size)
    for index, first, last in entries:
        struct.pack_into("<16s16sQQQ72s", array, index * entry_size, b"\x01" * 16,
                         (index + 1).to_bytes(16, "little"), first, last, 0,
                         "p".encode("utf-16-le"))
    array_sectors = (len(array) + sector - 1) // sector

    def header(my_lba: int, alternate: int, entries_lba: int) -> bytes:
        raw = bytearray(_HEADER.pack(b"EFI PART", 0x10000, 92, 0, 0, my_lba, alternate,
                                     2 + array_sectors, max(last_lba - 1 - array_sectors, 0),
                                     b"\x02" * 16, entries_lba, count, entry_size,
                                     zlib.crc32(array)))
        struct.pack_into("<I", raw, 16, zlib.crc32(raw[:92]))
        return bytes(raw)

    image = bytearray(size)
    image[446:462] = MBR_ENTRY.pack(0, b"", 0xEE, b"", pmbr_start, min(last_lba, 0xFFFFFFFF))
    image[510:512] = b"\x55\xaa"
    image[sector:sector + 92] = header(1, last_lba, 2)
    image[2 * sector:2 * sector + len(array)] = array
    if backup:
        at = (last_lba - array_sectors) * sector
        image[at:at + len(array)] = array
        image[last_lba * sector:last_lba * sector + 92] = header(last_lba, 1,
                                                                 last_lba - array_sectors)
    return image


def mbr_sector(entries: Sequence[Tuple[int, int, int, int]], sig: int = 0x11223344) -> bytes:
    """A 512-byte MBR (or EBR): ``(boot, type, start, count)`` per slot."""
    raw = bytearray(512)
    struct.pack_into("<I", raw, 440, sig)
    for i, entry in enumerate(entries):
        MBR_ENTRY.pack_into(raw, 446 + 16 * i, entry[0], b"", entry[1], b"", entry[2], entry[3])
    raw[510:512] = b"\x55\xaa"
    return bytes(raw)


def ebr_chain_image(logicals: int, *, sector: int = 512, size: Optional[int] = None) -> bytearray:
    """An MBR whose extended partition (from LBA 2048) chains ``logicals``
    EBRs, each holding a one-sector logical partition right after it."""
    span = logicals * 2 + 2
    size = size or (2048 + span + 16) * sector
    image = bytearray(size)
    image[:512] = mbr_sector([(0, 0x05, 2048, span)])
    for n in range(logicals):
        rel = 2 * n
        link = [(0, 0x05, rel + 2, 2)] if n + 1 < logicals else []
        at = (2048 + rel) * sector
        image[at:at + 512] = mbr_sector([(0, 0x83, 1, 1), *link])
    return image


def read_image(image: bytes, sector: int = 512, size: Optional[int] = None
               ) -> Optional[PartitionTable]:
    """loopcore's reading of ``image`` as a disk of ``size`` bytes (default:
    the image's length) with ``sector``-byte logical blocks."""
    fd = os.memfd_create("partition-image", os.MFD_CLOEXEC)
    try:
        view = memoryview(image)
        while view:
            view = view[os.write(fd, view):]
        os.ftruncate(fd, max(len(image), size or 0))
        return read_table(fd, len(image) if size is None else size, sector)
    finally:
        os.close(fd)


class Image(bytearray):
    """A disk image whose repr is short (hypothesis prints failing cases)."""

    def __repr__(self) -> str:
        return f"Image({len(self)} bytes, crc32 {zlib.crc32(self):#010x})"

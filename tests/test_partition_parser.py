"""The partition-table parser on image files (no root, no device)."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import List, Tuple

import pytest

import loopcore
from loopcore.loop.info import partition_path
from loopcore.loop.partition_table import Partition, PartitionTable, read_partition_table

from loop_helpers import LAYOUTS, MiB, needs_sfdisk, ours, sfdisk, sfdisk_view


def _gpt_image(tmp_path: Path, entries: List[Tuple[int, int]], *, sector: int = 512,
               size: int = 8 * MiB, count: int = 128) -> Path:
    """A GPT made here (not by sfdisk): (first LBA, last LBA) per entry."""
    last_lba = size // sector - 1
    array_sectors = (count * 128 + sector - 1) // sector
    array = bytearray(count * 128)
    for i, (first, last) in enumerate(entries):
        struct.pack_into("<16s16sQQQ72s", array, i * 128, b"\x01" * 16,
                         bytes([i + 1]) * 16, first, last, 0, "p".encode("utf-16-le"))

    def header(my_lba: int, alternate: int, entries_lba: int) -> bytes:
        raw = bytearray(struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0,
                                    my_lba, alternate, 2 + array_sectors,
                                    last_lba - 1 - array_sectors, b"\x02" * 16, entries_lba,
                                    count, 128, zlib.crc32(array)))
        struct.pack_into("<I", raw, 16, zlib.crc32(raw[:92]))
        return bytes(raw)

    image = bytearray(size)
    image[446:462] = struct.pack("<B3sB3sII", 0, b"", 0xEE, b"", 1, last_lba)
    image[510:512] = b"\x55\xaa"
    image[sector:sector + 92] = header(1, last_lba, 2)
    image[2 * sector:2 * sector + len(array)] = array
    backup_array = (last_lba - array_sectors) * sector
    image[backup_array:backup_array + len(array)] = array
    image[last_lba * sector:last_lba * sector + 92] = header(last_lba, 1, last_lba - array_sectors)
    path = tmp_path / "gpt.img"
    path.write_bytes(bytes(image))
    return path


def _mbr(entries: List[Tuple[int, int, int, int]], sig: int = 0x11223344) -> bytes:
    sector = bytearray(512)
    struct.pack_into("<I", sector, 440, sig)
    for i, (boot, ptype, start, count) in enumerate(entries):
        struct.pack_into("<B3sB3sII", sector, 446 + 16 * i, boot, b"", ptype, b"", start, count)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


class TestParser:
    def test_gpt_slots_names_and_guids(self, tmp_path: Path):
        path = _gpt_image(tmp_path, [(2048, 4095), (0, 0), (4096, 8191)])
        table = read_partition_table(path)
        assert table is not None and table.label == "gpt" and not table.backup
        # slot 2 is unused only if its type GUID is zero: here all three
        # have one, and the empty range 0-0 is a 1-sector partition
        assert [p.number for p in table.partitions] == [1, 2, 3]
        assert table.partitions[0] == Partition(
            1, 2048 * 512, 2048 * 512, "01010101-0101-0101-0101-010101010101",
            "01010101-0101-0101-0101-010101010101", "p", 0, False, 512)

    def test_gpt_bad_crc_falls_back_to_the_backup(self, tmp_path: Path):
        path = _gpt_image(tmp_path, [(2048, 4095)])
        with open(path, "r+b") as f:
            f.seek(512 + 24)  # my_lba: the header CRC no longer matches
            f.write(b"\x07")
        table = read_partition_table(path)
        assert table is not None and table.backup
        assert [(p.start, p.size) for p in table.partitions] == [(MiB, MiB)]

    def test_gpt_entries_outside_the_disk_are_skipped(self, tmp_path: Path):
        path = _gpt_image(tmp_path, [(2048, 4095), (4096, 1 << 40), (9000, 8000)])
        table = read_partition_table(path)
        assert table is not None and [p.number for p in table.partitions] == [1]

    def test_gpt_4096(self, tmp_path: Path):
        path = _gpt_image(tmp_path, [(256, 511)], sector=4096)
        table = read_partition_table(path, sector_size=4096)
        assert table is not None and table.partitions[0].start == MiB
        with pytest.raises(loopcore.PartitionTableError):
            read_partition_table(path)

    def test_mbr_chain_cycles_and_garbage_end(self, tmp_path: Path):
        image = bytearray(8 * MiB)
        image[0:512] = _mbr([(0x80, 0x83, 2048, 2048), (0, 0x05, 4096, 8192)])
        # first EBR: a logical, then a link back to itself (a cycle)
        image[4096 * 512:4097 * 512] = _mbr([(0, 0x83, 64, 128), (0, 0x05, 0, 8192),
                                            (0, 0x83, 100000, 1), (0, 0x83, 1, 1 << 30)])
        path = tmp_path / "mbr.img"
        path.write_bytes(bytes(image))
        table = read_partition_table(path)
        assert table is not None and table.label == "dos" and table.id == "0x11223344"
        parts = {p.number: p for p in table.partitions}
        assert sorted(parts) == [1, 2, 5]  # the garbage 3rd/4th EBR entries dropped
        assert parts[1].attributes == 0x80 and parts[1].uuid == "11223344-01"
        assert parts[2].extended and parts[2].kernel_size == 1024
        assert (parts[5].start, parts[5].size) == ((4096 + 64) * 512, 128 * 512)

    def test_not_a_table(self, tmp_path: Path):
        path = tmp_path / "fat.img"
        boot = bytearray(_mbr([(0x80, 0x83, 1, 10)]))
        boot[446] = 0x3C  # a boot indicator no table has: a FAT boot sector
        path.write_bytes(bytes(boot) + bytes(MiB))
        assert read_partition_table(path) is None
        (tmp_path / "zero.img").write_bytes(bytes(MiB))
        assert read_partition_table(tmp_path / "zero.img") is None

    def test_mbr_partitions_past_the_end_are_cut_or_dropped(self, tmp_path: Path):
        path = tmp_path / "short.img"
        path.write_bytes(_mbr([(0, 0x83, 1024, 4096), (0, 0x83, 1 << 20, 8)]) + bytes(MiB))
        table = read_partition_table(path)
        assert table is not None
        assert [(p.number, p.start, p.size) for p in table.partitions] == [
            (1, 1024 * 512, MiB + 512 - 1024 * 512)]

    @needs_sfdisk
    @pytest.mark.parametrize("layout", [k for k, v in LAYOUTS.items() if v[1] == 512])
    def test_images_agree_with_sfdisk(self, tmp_path: Path, layout: str):
        img = tmp_path / "t.img"
        img.write_bytes(b"")
        os.truncate(img, 32 * MiB)
        sfdisk(str(img), LAYOUTS[layout][0].replace("IMG", str(img)))
        table = read_partition_table(img)
        label, _, parts = sfdisk_view(str(img))
        assert table is not None and table.label == label and ours(table) == parts

    @pytest.mark.parametrize("source, error", [(True, TypeError), (-1, ValueError),
                                               (2.5, TypeError)])
    def test_a_bad_source_is_a_typed_error(self, source: object, error: type):
        with pytest.raises(error) as e:
            read_partition_table(source)  # type: ignore[arg-type]
        assert isinstance(e.value, loopcore.Error)

    def test_partition_path_and_module_surface(self):
        assert partition_path(3, 12) == "/dev/loop3p12"
        assert loopcore.PartitionTable is PartitionTable

"""Partitions registered by the library (``add_partitions()``) from tables
made by sfdisk, compared with what sfdisk, partx and the kernel say."""
from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

import pytest

import loopcore
from loopcore.loop.partition_table import read_partition_table

from conftest import (
    BLKPG_ADD_PARTITION,
    BLKPG_DEL_PARTITION,
    blkpg_partition,
    bound_backing,
)
from loop_helpers import (
    LAYOUTS,
    MiB,
    leak_checked,
    make_table,
    needs_sfdisk,
    ours,
    partitions_in_sysfs,
    partx_view,
    root,
    sfdisk,
    sfdisk_view,
)


@root
@leak_checked
@needs_sfdisk
class TestPartitions:
    @pytest.mark.parametrize("layout", list(LAYOUTS))
    def test_add_and_remove_match_sfdisk_partx_and_the_kernel(self, make_image, layout: str):
        img, sector_size = make_table(make_image, layout)
        with loopcore.attach(img, block_size=sector_size) as dev:
            table = dev.partition_table()
            assert table is not None and table.sector_size == sector_size
            label, sfdisk_sector, sfdisk_parts = sfdisk_view(dev.path)
            assert (table.label, table.sector_size) == (label, sfdisk_sector)
            assert ours(table) == sfdisk_parts
            assert {p.number: (p.start, p.size) for p in table.partitions} == partx_view(dev.path)

            paths = dev.add_partitions()
            numbers = sorted(sfdisk_parts)
            assert paths == [f"{dev.path}p{n}" for n in numbers]
            assert dev.added_partitions == set(numbers)
            # the kernel registered what a kernel with the parser would:
            # an extended partition as its first sector (at least 1 KiB)
            assert partitions_in_sysfs(dev.number) == {
                p.number: (p.start, min(p.size, max(sector_size, 1024)) if p.extended
                           else p.size) for p in table.partitions}
            for part, path in zip(table.partitions, paths):
                st = os.stat(path)
                assert stat.S_ISBLK(st.st_mode)
                assert f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" == Path(
                    f"/sys/block/loop{dev.number}/loop{dev.number}p{part.number}/dev"
                ).read_text().strip()
                if not part.extended:  # the bytes go where the table says
                    tag = f"partition {part.number} of {layout}".encode()
                    with open(path, "r+b") as f:
                        f.write(tag)
                    with open(img, "rb") as f:
                        f.seek(part.start)
                        assert f.read(len(tag)) == tag
            assert dev.add_partitions() == paths  # again: nothing changes

            removed = dev.remove_partitions()
            assert removed == paths
            assert partitions_in_sysfs(dev.number) == {}
            assert not any(os.path.exists(p) for p in paths)
            assert dev.added_partitions == set()

    def test_backup_gpt_when_the_primary_is_damaged(self, make_image):
        img, _ = make_table(make_image, "gpt")
        expected = ours(read_partition_table(img))
        with open(img, "r+b") as f:  # the primary header and its entry array
            f.seek(512)
            f.write(bytes(33 * 512))
        table = read_partition_table(img)
        assert table is not None and table.backup and ours(table) == expected
        with loopcore.attach(img) as dev:
            assert partx_view(dev.path) == {n: v[:2] for n, v in expected.items()}
            dev.add_partitions()
            assert partitions_in_sysfs(dev.number) == {n: v[:2] for n, v in expected.items()}
            size = os.path.getsize(img)
            with open(img, "r+b") as f:  # now the backup too
                f.seek(size - 512)
                f.write(bytes(512))
        with loopcore.attach(img) as dev:
            with pytest.raises(loopcore.PartitionTableError) as e:
                dev.add_partitions()
            assert e.value.errno == errno.EINVAL and "no valid GPT" in str(e.value)
            assert partitions_in_sysfs(dev.number) == {}

    def test_a_table_for_other_sectors_is_explained(self, make_image):
        img, _ = make_table(make_image, "gpt-4096")
        with loopcore.attach(img) as dev:  # 512-byte sectors
            with pytest.raises(loopcore.PartitionTableError) as e:
                dev.add_partitions()
            assert "block_size=4096" in str(e.value)
            assert partitions_in_sysfs(dev.number) == {}

    def test_no_table_adds_nothing(self, image: Path):
        with loopcore.attach(image) as dev:
            assert dev.partition_table() is None
            assert dev.add_partitions() == [] and dev.remove_partitions() == []

    def test_detach_deletes_what_was_added(self, make_image):
        # Without partscan the kernel keeps BLKPG partitions past LOOP_CLR_FD.
        img, _ = make_table(make_image, "dos-extended-logical")
        dev = loopcore.attach(img)
        try:
            paths = dev.add_partitions()
            number = dev.number
        finally:
            dev.detach()
        assert not any(os.path.exists(p) for p in paths)
        assert not [e for e in os.listdir(f"/sys/block/loop{number}")
                    if e.startswith(f"loop{number}p")]

    def test_a_partition_in_use_is_a_busy_error_and_nothing_is_lost(self, make_image):
        img, _ = make_table(make_image, "gpt")
        with loopcore.attach(img) as dev:
            paths = dev.add_partitions()
            holder = os.open(paths[0], os.O_RDONLY)
            try:
                with pytest.raises(loopcore.LoopBusyError) as e:
                    dev.remove_partitions()
                assert e.value.errno == errno.EBUSY and e.value.filename == paths[0]
                assert sorted(partitions_in_sysfs(dev.number)) == [1]  # the others went
                assert dev.added_partitions == {1}
                with pytest.raises(loopcore.LoopBusyError):
                    dev.detach()
                assert bound_backing(dev.number) == str(img)  # still bound, usable
            finally:
                os.close(holder)
            assert dev.remove_partitions() == [paths[0]]

    def test_a_changed_table_is_brought_up_to_date(self, make_image):
        img, _ = make_table(make_image, "gpt")
        with loopcore.attach(img) as dev:
            dev.add_partitions()
            with dev.lock():  # as a partitioning tool should
                sfdisk(dev.path, "label: gpt\nstart=2048, size=4096\nstart=16384, size=2048\n")
            paths = dev.add_partitions()
            assert paths == [f"{dev.path}p1", f"{dev.path}p2"]
            assert partitions_in_sysfs(dev.number) == {1: (MiB, 2 * MiB),
                                                       2: (8 * MiB, MiB)}
            assert not os.path.exists(f"{dev.path}p3")

    def test_missing_and_stale_nodes_are_made(self, make_image):
        img, _ = make_table(make_image, "dos")
        with loopcore.attach(img) as dev:
            paths = dev.add_partitions()
            os.unlink(paths[0])  # as if devtmpfs had not made it
            os.unlink(paths[1])
            os.mknod(paths[1], stat.S_IFBLK | 0o600, os.makedev(1, 3))  # a stale node
            assert dev.add_partitions() == paths
            for path, pno in zip(paths, (1, 2)):
                st = os.stat(path)
                dev_attr = Path(f"/sys/block/loop{dev.number}/loop{dev.number}p{pno}/dev")
                assert f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" == \
                    dev_attr.read_text().strip()
            dev.remove_partitions()
            assert not any(os.path.exists(p) for p in paths)  # ours removed too

    def test_partitions_the_kernel_scanned_are_left_alone(self, make_image, caplog):
        # partscan on a kernel with the parser: the kernel registers the
        # partitions at bind.  This host has no parser, so they are put
        # there the way the kernel would (BLKPG, from outside loopcore).
        img, _ = make_table(make_image, "gpt")
        table = read_partition_table(img)
        assert table is not None
        with loopcore.attach(img, partscan=True) as dev:
            for p in table.partitions:
                blkpg_partition(dev.path, BLKPG_ADD_PARTITION, p.number, p.start, p.size)
            before = partitions_in_sysfs(dev.number)
            with caplog.at_level(logging.INFO, logger="loopcore"):
                paths = dev.add_partitions()
                assert dev.remove_partitions() == []
            assert paths == [f"{dev.path}p{p.number}" for p in table.partitions]
            assert dev.added_partitions == set()
            assert partitions_in_sysfs(dev.number) == before
            messages = [r.getMessage() for r in caplog.records]
            assert any("scanned the partition table itself" in m for m in messages), messages
            assert any("kernel's own" in m for m in messages), messages
            for p in table.partitions:
                blkpg_partition(dev.path, BLKPG_DEL_PARTITION, p.number)

    def test_partscan_without_a_parser_gets_them_added(self, make_image):
        img, _ = make_table(make_image, "gpt")
        with loopcore.attach(img, partscan=True) as dev:
            if partitions_in_sysfs(dev.number):
                pytest.skip("this kernel parses GPT itself")
            assert len(dev.add_partitions()) == 3
            assert dev.added_partitions == {1, 2, 3}
            assert len(dev.remove_partitions()) == 3

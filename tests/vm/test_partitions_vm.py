"""Partitions on Debian's kernel, which parses GPT and MBR tables itself
(the development host's kernel has no parsers): the library's parser must
register exactly what the kernel's parsers register, and add_partitions()
must leave the partitions of a kernel that scanned them alone."""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Dict, Tuple

import pytest

import loopcore
from loopcore.loop import read_partition_table

MiB = 1 << 20

# sfdisk scripts, sizes in the table's sectors; 4096-byte tables are
# written through a loop device with 4096-byte sectors.
LAYOUTS = {
    "gpt": ("label: gpt\nstart=2048, size=4096, name=esp\nstart=6144, size=8192, name=root\n"
            "start=14336, size=8192\n", 512),
    "dos-extended-logical": ("label: dos\nlabel-id: 0x12345678\nstart=2048, size=4096, type=83\n"
                             "start=8192, size=20480, type=5\nstart=30720, size=2048, type=c\n"
                             "start=10240, size=2048, type=83\nstart=14336, size=4096, "
                             "type=82\n", 512),
    "gpt-4096": ("label: gpt\nstart=256, size=512\nstart=768, size=1024\n", 4096),
    "dos-extended-logical-4096": ("label: dos\nstart=256, size=512, type=83\n"
                                  "start=1024, size=2048, type=5\nstart=1280, size=512, "
                                  "type=83\nstart=2048, size=512, type=83\n", 4096),
}


def sysfs_partitions(number: int) -> Dict[int, Tuple[int, int]]:
    """The kernel's partitions of loopN once udev is done: its probe in the
    guest can make the kernel drop and re-add them (and a device it holds
    open is detached at its close), so wait until its queue is empty."""
    subprocess.run(["udevadm", "settle", "--timeout=60"], check=True)
    found = {}
    base = Path(f"/sys/block/loop{number}")
    for entry in base.iterdir() if base.exists() else ():
        if entry.name.startswith(f"loop{number}p"):
            found[int(entry.name[len(f"loop{number}p"):])] = (
                int((entry / "start").read_text()) * 512,
                int((entry / "size").read_text()) * 512)
    return found


def sfdisk(target: str, script: str) -> None:
    proc = subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", target],
                          input=script, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr


def make_image(tmp_path: Path, layout: str) -> Tuple[Path, int]:
    script, sector_size = LAYOUTS[layout]
    img = tmp_path / f"{layout}.img"
    img.write_bytes(b"")
    os.truncate(img, 32 * MiB)
    if sector_size == 512:
        sfdisk(str(img), script)
    else:
        with loopcore.attach(img, block_size=sector_size) as dev:
            sfdisk(dev.path, script)
    return img, sector_size


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_library_registers_what_the_kernels_parser_does(tmp_path: Path, layout: str,
                                                             caplog):
    img, sector_size = make_image(tmp_path, layout)
    with loopcore.attach(img, partscan=True, block_size=sector_size) as dev:
        kernels = sysfs_partitions(dev.number)  # the scan ran inside LOOP_CONFIGURE
        assert kernels, "this kernel did not parse the table"
        table = dev.partition_table()
        assert table is not None
        assert {p.number: (p.start, p.kernel_size) for p in table.partitions} == kernels
        with caplog.at_level(logging.INFO, logger="loopcore"):
            paths = dev.add_partitions()
            assert dev.remove_partitions() == []
        assert paths == [f"{dev.path}p{n}" for n in sorted(kernels)]
        assert dev.added_partitions == set()
        assert sysfs_partitions(dev.number) == kernels  # untouched
        assert any("scanned the partition table itself" in r.getMessage()
                   for r in caplog.records)
    with loopcore.attach(img, block_size=sector_size) as dev:  # no partscan: no scan
        assert sysfs_partitions(dev.number) == {}
        paths = dev.add_partitions()
        assert sysfs_partitions(dev.number) == kernels
        assert dev.added_partitions == set(kernels)
        number = dev.number
    assert sysfs_partitions(number) == {}  # detach deleted them


def test_backup_gpt_where_the_kernel_gives_up(tmp_path: Path):
    # Without the gpt boot option the kernel reads the backup GPT only
    # through a valid primary header; the library reads it from the last
    # sector, as partx and libblkid do.
    img, _ = make_image(tmp_path, "gpt")
    expected = read_partition_table(img)
    assert expected is not None
    with open(img, "r+b") as f:
        f.seek(512)
        f.write(bytes(33 * 512))
    with loopcore.attach(img, partscan=True) as dev:
        assert sysfs_partitions(dev.number) == {}
        paths = dev.add_partitions()
        assert len(paths) == 3 and dev.added_partitions == {1, 2, 3}
        assert sysfs_partitions(dev.number) == {p.number: (p.start, p.size)
                                                for p in expected.partitions}

"""kpartx on the host: the maps planned (names, uuids, tables) and ``-l``
against the real ``kpartx -l`` (Debian's kpartx package, which lists
without device-mapper), and the /dev/mapper node mode.  Making and
removing maps needs device-mapper: tests/vm/test_kpartx_vm.py."""
from __future__ import annotations

import grp
import os
import re
import shutil
import stat
import subprocess

import pytest

import loopcore
from loopcore import _devnodes, errors
from loopcore.dm import kpartx, nodes, partmaps

from cli_runner import loopcore_cmd, one_line
from loop_helpers import LAYOUTS, leak_checked, make_table, needs_sfdisk, root

KPARTX = shutil.which("kpartx") or "/usr/sbin/kpartx"
needs_kpartx = pytest.mark.skipif(not os.path.exists(KPARTX),
                                  reason="needs kpartx (Debian: kpartx)")
DELIMITERS = [None, "-part", "", "p"]


def real_listing(target: str, delimiter=None) -> str:
    """``kpartx -l``'s stdout (its complaints about a missing
    device-mapper go to stderr and do not matter to a listing)."""
    args = [KPARTX, "-l"] + (["-p", delimiter] if delimiter is not None else []) + [target]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def our_listing(target: str, delimiter=None) -> str:
    return "".join(line + "\n" for line in
                   partmaps.listing(kpartx.list(target, delimiter=delimiter)))


# --- the naming rules ---------------------------------------------------------------

@pytest.mark.parametrize("parent, delimiter, name", [
    ("loop0", None, "loop0p1"), ("sda", None, "sda1"), ("nvme0n1", None, "nvme0n1p1"),
    ("loop0", "-part", "loop0-part1"), ("loop0", "", "loop01"), ("sda", "p", "sdap1"),
    ("vg-disk", "/", "vg-disk!1"),
])
def test_names_follow_kpartx(parent, delimiter, name):
    delim = partmaps.default_delimiter(parent) if delimiter is None else delimiter
    assert partmaps.part_name(parent, delim, 1) == name


def test_uuids_follow_kpartx():
    dev = os.makedev(7, 3)
    assert partmaps.parent_uuid(None, dev) == "devnode_7:3_Wh5pYvM"
    assert partmaps.parent_uuid("", dev) == "devnode_7:3_Wh5pYvM"
    assert partmaps.parent_uuid("mpath-3600", dev) == "mpath-3600"
    assert partmaps.part_uuid(5, "devnode_7:3_Wh5pYvM") == "part5-devnode_7:3_Wh5pYvM"
    assert partmaps.is_part_of("part12-mpath-x", "mpath-x") == 12
    for other in ("part1-mpath-y", "partx-mpath-x", "mpath-x", "", None, "part1mpath-x"):
        assert partmaps.is_part_of(other, "mpath-x") is None


def test_plan_checks_names_before_anything(tmp_path):
    table = loopcore.loop.PartitionTable("dos", "0x1", 512, (
        loopcore.loop.Partition(1, 1 << 20, 1 << 20, "83", "x"),))
    with pytest.raises(errors.ValueError):
        partmaps.plan(table, parent="x" * 200, devnum=0, device="/dev/x", uuid="u")
    with pytest.raises(errors.TypeError):
        partmaps.plan(table, parent="loop0", devnum=0, device="/dev/x", uuid="u",
                      delimiter=3)


# --- -l against kpartx -l -------------------------------------------------------------

@root
@leak_checked
@needs_kpartx
@needs_sfdisk
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_listing_is_kpartx_byte_for_byte(make_image, layout):
    img, sector_size = make_table(make_image, layout)
    with loopcore.attach(img, block_size=sector_size) as dev:
        for delimiter in DELIMITERS:
            expected = real_listing(dev.path, delimiter)
            assert expected, "kpartx listed nothing"
            assert our_listing(dev.path, delimiter) == expected, delimiter


@root
@leak_checked
@needs_kpartx
@needs_sfdisk
def test_logical_partitions_and_the_two_sector_extended(make_image):
    img, _ = make_table(make_image, "dos-extended-logical")
    with loopcore.attach(img) as dev:
        maps = kpartx.list(dev.path)
    byname = {m.number: m for m in maps}
    assert sorted(byname) == [1, 2, 3, 5, 6, 7]
    assert byname[2].sectors == 2 and byname[2].start == 8192   # the extended one
    assert [m.number for m in maps] == [1, 2, 3, 5, 6, 7]       # logicals made last
    assert {m.container for m in maps if m.number >= 5} == {2}
    for m in maps:
        assert m.uuid == f"part{m.number}-devnode_7:{dev.number}_Wh5pYvM"
        assert str(m.target) == (f"0 {m.sectors} linear 7:{dev.number} {m.start}")


@root
@leak_checked
@needs_kpartx
@needs_sfdisk
def test_listing_an_image_attaches_and_detaches_as_kpartx(make_image):
    """kpartx -l IMAGE binds a loop device to read it and unbinds it after;
    the device number depends on what else runs, so it is masked."""
    img, _ = make_table(make_image, "dos-extended-logical")
    mask = re.compile(r"loop\d+")
    expected = mask.sub("loopN", real_listing(str(img)))
    assert mask.sub("loopN", our_listing(str(img))) == expected
    assert loopcore.find(img) == []
    out = loopcore_cmd("dm", "kpartx", "-l", "-p-part", str(img), check=True).stdout
    assert mask.sub("loopN", out.decode()) == mask.sub("loopN", real_listing(str(img), "-part"))
    assert loopcore.find(img) == []


@root
@leak_checked
def test_no_table_lists_nothing(make_image):
    img = make_image()
    assert kpartx.list(img) == []
    assert loopcore.find(img) == []


@root
@leak_checked
@needs_sfdisk
def test_cli_listing_needs_no_device_mapper(make_image):
    img, _ = make_table(make_image, "gpt")
    with loopcore.attach(img) as dev:
        out = loopcore_cmd("dm", "kpartx", "-l", dev.path, check=True).stdout.decode()
        assert out == our_listing(dev.path)
        assert out.splitlines()[0] == f"loop{dev.number}p1 : 0 4096 {dev.path} 2048"


@pytest.mark.parametrize("verb", [kpartx.list, kpartx.add, kpartx.update, kpartx.delete])
def test_bad_sources_are_typed_errors(tmp_path, verb):
    with pytest.raises(FileNotFoundError) as info:
        verb(tmp_path / "missing.img")
    assert isinstance(info.value, loopcore.Error)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(loopcore.Error) as bad:
        verb(fifo)
    assert isinstance(bad.value, OSError) and bad.value.filename == str(fifo)
    with pytest.raises(errors.ValueError):
        verb("")


@pytest.mark.parametrize("action", ["-a", "-d", "-u", "-l"])
def test_cli_names_a_bad_source_before_device_mapper(tmp_path, action):
    proc = loopcore_cmd("dm", "kpartx", action, str(tmp_path))
    assert proc.returncode != 0
    assert one_line(proc.stderr) == (f"loopcore: {tmp_path}: not a block device or an "
                                     "image file")


# --- item 7: the nodes loopcore makes ----------------------------------------------------

@root
@leak_checked
def test_mapper_nodes_are_0660_group_disk_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        nodes.add_node(str(tmp_path), "lc-node", os.makedev(254, 250))
    finally:
        os.umask(old)
    st = os.lstat(tmp_path / "lc-node")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(254, 250)
    assert stat.S_IMODE(st.st_mode) == 0o660
    try:
        disk = grp.getgrnam("disk").gr_gid
    except KeyError:
        disk = 0
    assert (st.st_uid, st.st_gid) == (0, disk)
    assert _devnodes.node_gid() == disk


# --- all or nothing, without device-mapper: a client that fails on cue -------------------

class FailingMapper:
    """Enough of a DeviceMapper for add(): no device exists, the
    ``fail_at``-th create fails with EIO, removes are recorded."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at, self.created, self.removed = fail_at, [], []

    def info(self, name):
        raise errors.error_from_errno(6, str(name), dm=True)  # ENXIO: no such device

    def create(self, name, *, uuid, table, read_only):
        if len(self.created) + 1 == self.fail_at:
            raise errors.error_from_errno(5, f"/dev/mapper/{name}", dm=True)
        self.created.append((name, uuid, str(table[0])))

    def remove(self, name):
        self.removed.append(name)


@root
@leak_checked
@needs_sfdisk
def test_a_failure_part_way_removes_the_maps_made_and_detaches_the_image(make_image):
    img, _ = make_table(make_image, "dos-extended-logical")
    mapper = FailingMapper(fail_at=4)
    with pytest.raises(loopcore.DmError) as info:
        kpartx.add(img, mapper=mapper)
    assert info.value.errno == 5
    made = [name for name, _, _ in mapper.created]
    assert len(made) == 3 and mapper.removed == made[::-1]
    assert loopcore.find(img) == []          # the loop device add attached is gone


@root
@leak_checked
@needs_sfdisk
def test_add_plans_kpartx_maps_for_an_attached_disk(make_image):
    img, _ = make_table(make_image, "gpt")
    mapper = FailingMapper(fail_at=0)
    with loopcore.attach(img) as dev:
        maps = kpartx.add(dev.path, mapper=mapper, delimiter="-part")
        assert [m.name for m in maps] == [f"loop{dev.number}-part{n}" for n in (1, 2, 3)]
        assert mapper.created == [(m.name, m.uuid, str(m.target)) for m in maps]
        assert mapper.created[0] == (f"loop{dev.number}-part1",
                                     f"part1-devnode_7:{dev.number}_Wh5pYvM",
                                     f"0 4096 linear 7:{dev.number} 2048")

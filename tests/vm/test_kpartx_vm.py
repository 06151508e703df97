"""loopcore's kpartx against Debian's (multipath-tools 0.9.4) in the guest,
on the same images: map names, ``dmsetup table`` lines and uuids after
``-a`` (with and without ``-p``), ``-l`` byte for byte, ``-d``/``-u``, and
each one deleting the other's maps.  Then what kpartx does not promise:
all or nothing, a busy map stopping ``-d``, the nodes there when ``add``
returns with udev running, and item 7, the mode and group of the nodes
loopcore makes.

kpartx's uuid of a partition of a loop device is
``part<N>-devnode_<major>:<minor>_Wh5pYvM``: the suffix is a constant of
kpartx's source, not random, so the uuids are compared as they are, and
the test shows the form explicitly.
"""
from __future__ import annotations

import grp
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

import loopcore
from loopcore import dm
from loopcore.dm import kpartx, partmaps, udev

from vmhelpers import DMSETUP, udev_settle

MiB = 1 << 20
KPARTX = "/sbin/kpartx" if os.path.exists("/sbin/kpartx") else "kpartx"

# sfdisk scripts in the table's sectors: MBR with primaries, an extended
# partition and three logicals; GPT; GPT written for 4096-byte sectors.
LAYOUTS = {
    "dos-logical": (512, "label: dos\nlabel-id: 0x12345678\n"
                         "start=2048, size=4096, type=83\n"
                         "start=8192, size=20480, type=5\n"
                         "start=30720, size=2048, type=c\n"
                         "start=10240, size=2048, type=83\n"
                         "start=14336, size=4096, type=82\n"
                         "start=20480, size=6144, type=83\n"),
    "gpt": (512, "label: gpt\n"
                 "start=2048, size=4096, name=esp, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n"
                 "start=6144, size=8192, name=root\n"
                 "start=14336, size=8192, name=home\n"),
    "gpt-4096": (4096, "label: gpt\n"
                       "start=256, size=512, name=one\n"
                       "start=768, size=1024, name=two\n"),
}
DELIMITERS = [None, "-part", ""]


def run(*args: str, env: Optional[Dict[str, str]] = None) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=env)
    assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc.stdout


def make_image(tmp_path: Path, layout: str) -> Tuple[Path, int]:
    sector_size, script = LAYOUTS[layout]
    img = tmp_path / f"{layout}.img"
    img.write_bytes(b"")
    os.truncate(img, 32 * MiB)
    target = str(img)
    dev = loopcore.attach(img, block_size=sector_size) if sector_size != 512 else None
    try:
        proc = subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel",
                               dev.path if dev else target], input=script, text=True,
                              capture_output=True)
        assert proc.returncode == 0, proc.stderr
    finally:
        if dev is not None:
            dev.detach()
    return img, sector_size


def maps_on(devnum: int) -> Dict[str, Tuple[str, str]]:
    """{name: (uuid, table)} of every dm device whose table uses ``devnum``,
    as dmsetup shows them."""
    use = f"{os.major(devnum)}:{os.minor(devnum)}"
    found = {}
    for line in run(DMSETUP, "table").splitlines():
        name, _, table = line.partition(": ")
        if f" {use} " in table:
            uuid = run(DMSETUP, "info", "-c", "--noheadings", "-o", "uuid", name).strip()
            found[name] = (uuid, table)
    return found


def kpartx_cmd(*args: str) -> str:
    if "-d" in args:
        # kpartx -d gives up on a map a udev probe holds open for a moment
        # (its own race, which loopcore's delete retries): let udev's
        # queue drain first, so the reference run is deterministic
        udev_settle()
    return run(KPARTX, *args)


def kp_args(delimiter: Optional[str]) -> List[str]:
    return ["-p", delimiter] if delimiter is not None else []


@pytest.fixture
def disk(tmp_path: Path, request) -> Iterator[loopcore.LoopDevice]:
    """A loop device over the layout's image; after the test, whatever
    partition maps are left on it are removed and it is detached."""
    img, sector_size = make_image(tmp_path, request.param)
    dev = loopcore.attach(img, block_size=sector_size)
    yield dev
    with dm.DeviceMapper() as m:
        for name in maps_on(dev.devnum):
            m.remove(name)
    dev.detach()


@pytest.mark.parametrize("disk", sorted(LAYOUTS), indirect=True)
@pytest.mark.parametrize("delimiter", DELIMITERS)
def test_add_makes_what_kpartx_makes(disk, delimiter, capsys):
    listed = kpartx_cmd("-l", *kp_args(delimiter), disk.path)
    kpartx_cmd("-a", "-v", *kp_args(delimiter), disk.path)
    theirs = maps_on(disk.devnum)
    kpartx_cmd("-d", disk.path)
    assert maps_on(disk.devnum) == {}

    made = kpartx.add(disk.path, delimiter=delimiter)
    ours = maps_on(disk.devnum)
    with capsys.disabled():
        print(f"\n{disk.path} -p {delimiter!r}: kpartx made {sorted(theirs.items())}")
    assert ours == theirs                                   # names, uuids, tables
    assert sorted(m.name for m in made) == sorted(theirs)
    assert "".join(line + "\n" for line in partmaps.listing(made)) == listed
    for name, (uuid, table) in ours.items():
        # the name is the disk's, the separator (kpartx puts "p" after a
        # name ending in a digit), then the number: loop1 + "" + 1 = loop11
        sep = "p" if delimiter is None else delimiter
        number = int(name[len(os.path.basename(disk.path)) + len(sep):])
        assert uuid == f"part{number}-devnode_7:{disk.number}_Wh5pYvM"  # no random part
        assert table.split()[2:4] == ["linear", f"7:{disk.number}"]
    assert kpartx.delete(disk.path) and maps_on(disk.devnum) == {}


@pytest.mark.parametrize("disk", ["dos-logical"], indirect=True)
def test_each_deletes_the_others_maps(disk):
    kpartx_cmd("-a", disk.path)
    assert len(kpartx.delete(disk.path)) == 6 and maps_on(disk.devnum) == {}
    kpartx.add(disk.path, delimiter="-part")
    kpartx_cmd("-d", disk.path)
    assert maps_on(disk.devnum) == {}


@pytest.mark.parametrize("disk", ["dos-logical"], indirect=True)
def test_update_drops_a_deleted_partition_like_kpartx(disk):
    """-a, then primary 3 deleted from the table, then -u: by each tool
    from the same table (sector 0 is put back in between)."""
    fd = os.open(disk.path, os.O_RDWR)
    try:
        mbr = os.pread(fd, 512, 0)
        after = {}
        for tool in ("kpartx", "loopcore"):
            os.pwrite(fd, mbr, 0)
            os.fsync(fd)
            kpartx_cmd("-a", disk.path) if tool == "kpartx" else kpartx.add(disk.path)
            assert len(maps_on(disk.devnum)) == 6
            run("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--delete",
                disk.path, "3")
            kpartx_cmd("-u", disk.path) if tool == "kpartx" else kpartx.update(disk.path)
            after[tool] = maps_on(disk.devnum)
            kpartx.delete(disk.path)
    finally:
        os.close(fd)
    assert f"loop{disk.number}p3" not in after["loopcore"]
    assert len(after["loopcore"]) == 5
    assert after["loopcore"] == after["kpartx"]


@pytest.mark.parametrize("disk", ["gpt"], indirect=True)
def test_add_again_renames_like_kpartx(disk):
    """A second add with another delimiter finds the maps by uuid and
    renames them (kpartx does), instead of making a second set."""
    kpartx.add(disk.path)
    kpartx.add(disk.path, delimiter="-part")
    ours = maps_on(disk.devnum)
    kpartx.delete(disk.path)
    kpartx_cmd("-a", disk.path)
    kpartx_cmd("-a", "-p", "-part", disk.path)
    assert sorted(ours) == [f"loop{disk.number}-part{n}" for n in (1, 2, 3)]
    assert ours == maps_on(disk.devnum)


def test_an_image_gets_its_loop_device_and_delete_detaches_it(tmp_path):
    img, _ = make_image(tmp_path, "dos-logical")
    made = kpartx.add(img)
    bound = loopcore.find(img)
    assert len(bound) == 1 and made[0].device == bound[0].path
    ours = maps_on(bound[0].devnum)
    assert sorted(ours) == sorted(m.name for m in made)
    assert kpartx.delete(img) and loopcore.find(img) == []
    assert maps_on(bound[0].devnum) == {}
    assert kpartx.delete(img) == []        # nothing bound: nothing to do, as kpartx

    kpartx_cmd("-a", str(img))
    theirs_loop = loopcore.find(img)
    assert len(theirs_loop) == 1
    theirs = maps_on(theirs_loop[0].devnum)
    kpartx_cmd("-d", str(img))
    assert loopcore.find(img) == []
    mask = re.compile(r"loop\d+|7:\d+")
    assert {mask.sub("L", k): tuple(mask.sub("L", x) for x in v) for k, v in ours.items()} \
        == {mask.sub("L", k): tuple(mask.sub("L", x) for x in v) for k, v in theirs.items()}


@pytest.mark.parametrize("disk", ["dos-logical"], indirect=True)
def test_add_is_all_or_nothing(disk):
    """A map of a partition's name that is not this disk's stops add before
    it makes anything (kpartx makes the others and reports the one)."""
    blocker = f"loop{disk.number}p6"
    with dm.DeviceMapper() as m:
        m.create(blocker, uuid="LCT-not-a-partition", table=[dm.zero(0, 8)])
        try:
            with pytest.raises(FileExistsError) as info:
                kpartx.add(disk.path)
            assert isinstance(info.value, loopcore.Error)
            assert "not a kpartx partition" in str(info.value)
            assert maps_on(disk.devnum) == {}
            assert m.table(blocker)[0].target_type == "zero"
        finally:
            m.remove(blocker)


@pytest.mark.parametrize("disk", ["gpt"], indirect=True)
def test_delete_of_a_busy_map_removes_nothing(disk):
    made = kpartx.add(disk.path)
    fd = os.open(os.path.join(dm.DEV_DIR, made[1].name), os.O_RDONLY)
    try:
        with pytest.raises(loopcore.DmBusyError):
            kpartx.delete(disk.path)
        assert len(maps_on(disk.devnum)) == 3
    finally:
        os.close(fd)
    assert len(kpartx.delete(disk.path)) == 3


@pytest.mark.parametrize("disk", ["gpt"], indirect=True)
def test_sync_add_returns_with_udevs_nodes(disk, monkeypatch):
    """With udevd running (DM_DISABLE_UDEV unset, as outside the test
    script), add returns once udev has made each map's links."""
    monkeypatch.delenv("DM_DISABLE_UDEV", raising=False)
    assert udev.udev_running()
    made = kpartx.add(disk.path, sync=True)
    for m in made:
        assert os.path.islink(os.path.join(dm.DEV_DIR, m.name)), m.name
        assert os.path.islink(f"/dev/disk/by-id/dm-uuid-{m.uuid}"), m.uuid
    kpartx.delete(disk.path)
    for m in made:
        assert not os.path.lexists(os.path.join(dm.DEV_DIR, m.name))


@pytest.mark.parametrize("disk", ["gpt"], indirect=True)
def test_cli_matches_kpartx_output(disk):
    loopcore_py = [sys.executable, "-m", "loopcore", "dm", "kpartx"]
    assert run(*loopcore_py, "-l", disk.path) == kpartx_cmd("-l", disk.path)
    ours = run(*loopcore_py, "-a", "-v", disk.path)
    run(*loopcore_py, "-d", disk.path)
    theirs = kpartx_cmd("-a", "-v", disk.path)
    kpartx_cmd("-d", disk.path)
    # the dm minors differ run to run
    mask = re.compile(r"\(\d+:\d+\)")
    assert mask.sub("(M:m)", ours) == mask.sub("(M:m)", theirs)


def test_nodes_loopcore_makes_are_0660_group_disk(tmp_path, names):
    """Item 7: without udev loopcore makes the node, as libdm does."""
    old = os.umask(0o077)
    try:
        with dm.DeviceMapper(dev_dir=str(tmp_path), udev="off") as m:
            name = names("mode")
            info = m.create(name, table=[dm.zero(0, 8)])
            st = os.lstat(tmp_path / name)
            m.remove(name)
    finally:
        os.umask(old)
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == info.devnum
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == grp.getgrnam("disk").gr_gid and st.st_uid == 0


@pytest.mark.parametrize("disk", ["dos-logical"], indirect=True)
def test_a_dm_disk_names_the_maps_after_its_name_and_uuid(disk, names, mapper):
    """kpartx on a dm device (a linear map of the whole loop device, as
    multipath's): maps named after the dm name, uuids after its uuid."""
    name = names("disk")
    size = disk.info().size_bytes // 512
    info = mapper.create(name, uuid=f"LCT-{name}", table=[dm.linear(0, size, disk.devnum)])
    node = os.path.join(dm.DEV_DIR, name)
    try:
        listed = kpartx_cmd("-l", node)
        kpartx_cmd("-a", node)
        theirs = maps_on(info.devnum)
        kpartx_cmd("-d", node)
        made = kpartx.add(node)
        ours = maps_on(info.devnum)
        assert "".join(line + "\n" for line in partmaps.listing(made)) == listed
        kpartx.delete(node)
        assert maps_on(info.devnum) == {}
    finally:
        for leftover in maps_on(info.devnum):
            mapper.remove(leftover)
    assert ours == theirs
    assert sorted(ours) == sorted(f"{name}p{n}" for n in (1, 2, 3, 5, 6, 7))
    assert all(uuid == f"part{n[len(name) + 1:]}-LCT-{name}" for n, (uuid, _) in ours.items())

"""loopcore dm against dmsetup, byte for byte, on the same devices in the
same guest: the commands image builders run (osbuild's ``info -c -o
major,minor,open --noheadings --separator :``, diskimage-builder's
``mknodes``, kiwi's ``remove``, LVM-style ``splitname``) and the rest of
dmsetup's reporting.  Where the two must differ the test says why and
normalises only that.

Listings without a device name cover every device in the guest: the VM
runs only this test session, and each test's devices are gone after it,
so a listing holds this test's devices only (dmsetup's column widths
depend on every row, so filtering lines would not do).
"""
from __future__ import annotations

import fcntl
import os
import stat
import struct
from typing import List, Tuple

import pytest

from loopcore import cli as loopcore_cli
from loopcore import dm
from loopcore.cli import dm_report

from vmhelpers import dmsetup

HDIO_GETGEO = 0x0301


def ours(capsys: pytest.CaptureFixture, *argv: str) -> Tuple[int, str]:
    """``loopcore dm ARGV`` through the real entry point: (status, stdout)."""
    capsys.readouterr()
    status = loopcore_cli.main(["dm", *argv])
    return status, capsys.readouterr().out


def agree(capsys: pytest.CaptureFixture, *argv: str) -> None:
    """Both succeed with the same output, or both fail printing nothing."""
    theirs = dmsetup(*argv, check=False)
    status, out = ours(capsys, *argv)
    assert (status, out) == (theirs.returncode, theirs.stdout), (argv, theirs.stderr)


def same(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run ARGV with both tools; both succeed and print the same bytes."""
    theirs = dmsetup(*argv, check=False)
    status, out = ours(capsys, *argv)
    assert theirs.returncode == 0, (argv, theirs.stderr)
    assert status == 0, argv
    assert out == theirs.stdout, argv
    return out


@pytest.fixture
def stack(mapper, names, loops):
    """An LVM-looking stack: base (linear on a loop, uuid LVM-...), top
    (base + another loop), z (zero, read-only), notab (no table), and
    one device with a loaded inactive table."""
    a, b = loops(1 << 20), loops(1 << 20)
    base = names("vg-lv_a-_real")
    base_info = mapper.create(base, uuid=f"LVM-{base}", table=[dm.linear(0, 256, a)])
    top = names("top")
    mapper.create(top, table=[dm.linear(0, 128, base_info), dm.linear(128, 128, b)])
    z = names("z")
    mapper.create(z, uuid=f"LCT-{z}", table=[dm.zero(0, 64)], read_only=True)
    notab = names("notab")
    mapper.create(notab)
    pending = names("pending")
    mapper.create(pending, table=[dm.zero(0, 16)])
    mapper.load(pending, [dm.zero(0, 32)])
    yield {"base": base, "top": top, "z": z, "notab": notab, "pending": pending,
           "a": a, "b": b}
    if mapper.exists(top):
        mapper.remove(top, retries=10, retry_delay=0.05)  # before base, which it uses


ALL_FIELDS = ",".join(dm_report.FIELDS)


@pytest.mark.parametrize("args", [
    [],
    ["-o", "name,major,minor,attr,open,segments,events,uuid"],
    ["-o", "major,minor,open", "--noheadings", "--separator", ":"],
    ["--noheadings"],
    ["--separator", " | ", "-o", "name,attr"],
    ["--nameprefixes"],
    ["--nameprefixes", "--noheadings", "-o", "name,uuid,blkdevs_used"],
    ["-o", "name,blkdevname,devno,tables_loaded,suspended,readonly,read_ahead"],
    ["-o", "name,mangled_name,unmangled_name,uuid,mangled_uuid,unmangled_uuid"],
    ["-o", "name,device_count,devs_used,devnos_used,blkdevs_used"],
    ["-o", "name,device_ref_count,names_using_dev,devnos_using_dev"],
    ["-o", "name,subsystem,vg_name,lv_name,lv_layer"],
    ["-o", "+devno"],
    ["-o", "name_all"],
    ["-o", "info_all,deps_all,splitname_all"],
    ["-o", ALL_FIELDS],
    ["--sort", "name"],
    ["--sort=-name"],           # "-O -name": argparse takes "-name" for an option
    ["-O-minor", "-o", "name,minor"],
])
def test_info_columns_all_devices(stack, capsys, args):
    # blkdevname fails in both for the device without a table (it is no
    # disk yet: no sysfs entry); the other rows would be the same.
    agree(capsys, "info", "-c", *args)


def test_info_columns_one_device(stack, capsys, mapper):
    top, base = stack["top"], stack["base"]
    # osbuild's luks2 device: major:minor:open of one device
    out = same(capsys, "info", "-c", "-o", "major,minor,open", "--noheadings",
               "--separator", ":", top)
    assert out.count(":") == 2 and out.endswith(":0\n")
    same(capsys, "info", "-c", top, base)
    same(capsys, "info", "-C", stack["notab"])
    same(capsys, "info", "-c", "-u", f"LVM-{base}")
    info = mapper.info(top)
    same(capsys, "info", "-c", "-j", str(info.major), "-m", str(info.minor))
    same(capsys, "info", "-c", "-o", ALL_FIELDS, stack["pending"])
    agree(capsys, "info", "-c", "-o", "name,blkdevname", stack["notab"])  # both fail


def test_device_selection_everywhere(stack, capsys, mapper):
    """-u UUID and -j/-m for the commands that take a device."""
    base, z = stack["base"], stack["z"]
    info = mapper.info(z)
    for sel in (["-u", f"LVM-{base}"], ["-j", str(info.major), "-m", str(info.minor)]):
        for command in ("info", "table", "status", "deps"):
            same(capsys, command, *sel)


@pytest.mark.parametrize("name, subsystem", [
    ("vg0-lv_a-_real", None), ("vg--x-lv--y-layer", "LVM"), ("foo", None),
    ("a-b-c-d", None), ("vg0-lv_a", "XYZ"), ("vg-", None), ("vg---lv", None),
    ("-lead", None),
])
def test_splitname(capsys, name, subsystem):
    extra = [subsystem] if subsystem else []
    # "--" ends dmsetup's options so that a name starting with '-' is a name
    for opts in ([], ["--noheadings", "--separator", ":"], ["-c", "--nameprefixes"],
                 ["-o", "vg_name,lv_name"], ["-o", "splitname_all"]):
        theirs = dmsetup("splitname", *opts, "--", name, *extra, check=False)
        status, out = ours(capsys, "splitname", *opts, "--", name, *extra)
        assert (status, out) == (theirs.returncode, theirs.stdout), (name, opts)


def test_target_version(capsys):
    same(capsys, "target-version", "linear", "zero", "striped", "error")
    theirs = dmsetup("target-version", "no-such-target", check=False)
    status, out = ours(capsys, "target-version", "no-such-target")
    assert theirs.returncode == status == 1 and out == theirs.stdout == ""


@pytest.mark.parametrize("options", [
    None, "ascii", "device", "blkdevname", "nodevice", "uuid", "active,open,rw,uuid",
    "inverted", "ascii,inverted,uuid", "notrunc", "nodevice,inverted", "blkdevname,nodevice",
])
def test_ls_tree(stack, capsys, options):
    # dmsetup draws with UTF-8 box characters in a UTF-8 locale; the test
    # environment's locale is C (ASCII), as is loopcore's default.
    same(capsys, "ls", "--tree", *(["-o", options] if options else []))


def test_reload_wipe_table_and_clear(mapper, names, loops, capsys):
    """Run each changing command with dmsetup on one device and loopcore on
    its twin; the two then report the same (names aside: they differ)."""
    loop = loops(1 << 20)
    pair = []
    for tag in ("theirs", "ours"):
        name = names(tag)
        mapper.create(name, table=[dm.linear(0, 64, loop), dm.zero(64, 64)])
        pair.append(name)
    theirs, mine = pair

    def state() -> List[str]:
        rows = []
        for name in pair:
            rows.append(dmsetup("info", "-c", "--noheadings", "-o",
                                "attr,open,segments,events", name).stdout)
            rows.append(dmsetup("table", name).stdout + dmsetup("table", "--inactive",
                                                                name).stdout)
        return rows

    dmsetup("reload", theirs, "--table", "0 32 zero")
    assert ours(capsys, "reload", mine, "--table", "0 32 zero")[0] == 0
    a, b, c, d = state()
    assert (a, b) == (c, d) and "LI-w" in a
    dmsetup("resume", theirs)
    assert ours(capsys, "resume", mine)[0] == 0
    dmsetup("wipe_table", theirs)
    assert ours(capsys, "wipe_table", mine)[0] == 0
    a, b, c, d = state()
    assert (a, b) == (c, d) and b.startswith("0 32 error")
    uuid_sel = []
    for name in pair:
        mapper.set_uuid(name, f"LCT-{name}")
        uuid_sel.append(["-u", f"LCT-{name}"])
    dmsetup("reload", *uuid_sel[0], "--table", "0 8 zero")
    assert ours(capsys, "reload", *uuid_sel[1], "--table", "0 8 zero")[0] == 0
    dmsetup("clear", *uuid_sel[0])
    assert ours(capsys, "clear", *uuid_sel[1])[0] == 0
    a, b, c, d = state()
    assert (a, b) == (c, d) and "L--w" in a


def test_remove_force_on_open_device(mapper, names, capsys):
    """kiwi's `dmsetup remove`: on an open device, -f wipes the table (its
    users' I/O fails from then on) and the remove still fails (EBUSY)."""
    pair = []
    for tag in ("theirs", "ours"):
        name = names(tag)
        mapper.create(name, table=[dm.zero(0, 32), dm.zero(32, 32)])
        pair.append(name)
    fds = [os.open(os.path.join(dm.DEV_DIR, n), os.O_RDONLY) for n in pair]
    try:
        theirs = dmsetup("remove", "-f", pair[0], check=False)
        status, _ = ours(capsys, "remove", "-f", pair[1])
        assert theirs.returncode == status == 1
        assert dmsetup("table", pair[0]).stdout == dmsetup("table", pair[1]).stdout \
            == "0 64 error \n"
    finally:
        for fd in fds:
            os.close(fd)
    dmsetup("remove", pair[0])
    assert ours(capsys, "remove", pair[1])[0] == 0
    assert not mapper.exists(pair[0]) and not mapper.exists(pair[1])


def _geometry(name: str) -> Tuple[int, int, int, int]:
    fd = os.open(os.path.join(dm.DEV_DIR, name), os.O_RDONLY)
    try:
        heads, sectors, cylinders, start = struct.unpack(
            "BBHL", fcntl.ioctl(fd, HDIO_GETGEO, bytes(struct.calcsize("BBHL"))))
    finally:
        os.close(fd)
    return cylinders, heads, sectors, start


def test_setgeometry(mapper, names, capsys):
    pair = []
    for tag in ("theirs", "ours"):
        name = names(tag)
        mapper.create(name, table=[dm.zero(0, 100 * 16 * 63)])
        pair.append(name)
    dmsetup("setgeometry", pair[0], "100", "16", "63", "0")
    assert ours(capsys, "setgeometry", pair[1], "100", "16", "63", "0")[0] == 0
    assert _geometry(pair[0]) == _geometry(pair[1]) == (100, 16, 63, 0)
    info = mapper.info(pair[1])
    assert ours(capsys, "setgeometry", "-j", str(info.major), "-m", str(info.minor),
                "50", "32", "63", "0")[0] == 0
    assert _geometry(pair[1]) == (50, 32, 63, 0)


def test_mknodes_matches(mapper, names, capsys):
    """diskimage-builder's `dmsetup --noudevsync mknodes`: both tools put
    back a missing node, and remove a stale one, the same way.  Normalised:
    the node's mode and group (libdevmapper makes root:disk 0660, loopcore
    root:root 0600: loopcore does not widen access on its own)."""
    name, gone = names("mk"), names("gone")
    mapper.create(name, table=[dm.zero(0, 8)])
    devnum = mapper.info(name).devnum
    path = os.path.join(dm.DEV_DIR, name)
    stale = os.path.join(dm.DEV_DIR, gone)

    def reset() -> None:
        os.unlink(path)
        os.mknod(stale, 0o600 | stat.S_IFBLK, os.makedev(7, 250))  # no dm device of that name

    def after() -> Tuple[bool, int, bool]:
        st = os.stat(path)
        return stat.S_ISBLK(st.st_mode), st.st_rdev, os.path.lexists(stale)

    try:
        reset()
        dmsetup("--noudevsync", "mknodes")
        theirs = after()
        reset()
        assert ours(capsys, "--noudevsync", "mknodes")[0] == 0
        assert after() == theirs == (True, devnum, False)
    finally:
        if os.path.lexists(stale):
            os.unlink(stale)

"""Host tests of dmsetup's report formats (loopcore.cli.dm_report, dm_tree) and of the
udev knob (loopcore.dm.udev, DeviceMapper(udev=...)) without a kernel:
the VM tests compare the reports with dmsetup byte for byte and run udev
for real."""
from __future__ import annotations

import os
import socket
import struct

import pytest

from loopcore import dm, errors
from loopcore.cli import dm_report as report
from loopcore.cli.dm_tree import DeviceTree
from loopcore.dm import udev
from loopcore.dm.records import DeviceInfo

from dmfake import FakeKernel, fake_mapper  # noqa: F401 - the fixture


def info(name: str, minor: int, flags: dm.Flag = dm.Flag.ACTIVE_PRESENT, uuid: str = "",
         open_count: int = 0, targets: int = 1) -> DeviceInfo:
    return DeviceInfo(name, uuid, os.makedev(254, minor), open_count, 0, targets, flags, name)


@pytest.mark.parametrize("name, split", [
    ("vg0-lv_a-_real", ("vg0", "lv_a", "_real")),
    ("vg--x-lv--y-layer", ("vg-x", "lv-y", "layer")),
    ("foo", ("foo", "", "")),
    ("a-b-c-d", ("a", "b", "c")),      # what follows the layer is dropped
    ("-a", ("", "a", "")),
    ("vg-", ("vg-", "", "")),          # a last '-' is a character, not a separator
    ("vg---lv", ("vg-", "lv", "")),
    ("", ("", "", "")),
])
def test_split_lvm_name(name, split):
    assert report.split_lvm_name(name) == split


def test_splitname_only_for_lvm():
    assert report.split_name_values("vg-lv", "XYZ") == {
        "subsystem": "XYZ", "vg_name": "", "lv_name": "", "lv_layer": ""}


def test_report_aligned_like_dmsetup():
    # dmsetup info -c with two devices, as printed in the guest
    rows = report.device_rows([info("pb-notab", 3, dm.Flag(0), targets=0),
                               info("vg0-lv_a-_real", 0, uuid="LVM-abcdef", open_count=1)],
                              report.DEFAULT_FIELDS, lambda i: (), lambda: pytest.fail())
    assert report.format_report(report.DEFAULT_FIELDS, rows) == (
        "Name             Maj Min Stat Open Targ Event  UUID                            \n"
        "pb-notab         254   3 ---w    0    0      0                                 \n"
        "vg0-lv_a-_real   254   0 L--w    1    1      0 LVM-abcdef                      \n")


def test_report_unaligned_forms():
    fields = ["major", "minor", "open"]
    rows = report.device_rows([info("x", 2)], fields, lambda i: (), lambda: pytest.fail())
    assert report.format_report(fields, rows, headings=False, separator=":") == "254:2:0\n"
    assert report.format_report(fields, rows, headings=False) == "254:2:0\n"  # old dmsetup
    assert report.format_report(fields, rows, separator=" | ") == "Maj | Min | Open\n" \
        "254 | 2 | 0\n"
    assert report.format_report(["name", "uuid"], report.device_rows(
        [info("x", 2)], ["name", "uuid"], lambda i: (), lambda: pytest.fail()),
        nameprefixes=True) == "Name UUID\nDM_NAME='x' DM_UUID=''\n"


def test_deps_and_tree_fields_only_when_asked():
    calls = []
    devs = [info("top", 2), info("base", 0)]
    deps = {os.makedev(254, 2): [os.makedev(7, 1), os.makedev(254, 0)],
            os.makedev(254, 0): [os.makedev(7, 0)]}

    def get_deps(i):
        calls.append(i.name)
        return deps[i.devnum]

    def tree():
        calls.append("tree")
        return DeviceTree((i, deps[i.devnum]) for i in devs)

    report.device_rows(devs, report.DEFAULT_FIELDS, get_deps, tree)
    assert calls == []
    rows = report.device_rows(devs, ["name", "devnos_used", "devs_used", "names_using_dev",
                                     "device_ref_count", "devnos_using_dev"], get_deps, tree)
    assert rows[0]["devnos_used"] == "7:1,254:0" and rows[0]["devs_used"] == "base"
    assert rows[1]["names_using_dev"] == "top" and rows[1]["devnos_using_dev"] == "254:2"
    assert rows[0]["device_ref_count"] == "0" and rows[1]["device_ref_count"] == "1"
    assert calls == ["tree", "top", "base"]


def test_tree_drawing():
    devs = [info("notab", 3, dm.Flag(0)), info("top", 2), info("z", 1), info("base", 0)]
    deps = {os.makedev(254, 2): [os.makedev(7, 1), os.makedev(254, 0)],
            os.makedev(254, 0): [os.makedev(7, 0)]}
    tree = DeviceTree((i, deps.get(i.devnum, [])) for i in devs)
    assert tree.render() == ("notab (254:3)\ntop (254:2)\n |- (7:1)\n `-base (254:0)\n"
                             "    `- (7:0)\nz (254:1)\n")
    assert tree.render(["nodevice"]) == "notab\ntop\n `-base\nz\n"
    assert tree.render(["inverted"]) == ("notab (254:3)\n (7:1)\n `-top (254:2)\n (7:0)\n"
                                         " `-base (254:0)\n    `-top (254:2)\nz (254:1)\n")


def test_fields_and_sort_parsing():
    assert report.parse_fields(None, report.DEFAULT_FIELDS) == list(report.DEFAULT_FIELDS)
    assert report.parse_fields("+devno", ("name",)) == ["name", "devno"]
    assert report.parse_fields("splitname_all", ()) == list(report.FIELD_GROUPS["splitname_all"])
    with pytest.raises(errors.ValueError, match="Unrecognised field: size"):
        report.parse_fields("name,size", ())
    rows = [{"name": "b", "minor": "10"}, {"name": "a", "minor": "9"}]
    assert [r["name"] for r in report.sort_rows(rows, "name")] == ["a", "b"]
    assert [r["minor"] for r in report.sort_rows(rows, "minor")] == ["9", "10"]  # numeric
    assert [r["name"] for r in report.sort_rows(rows, "-name")] == ["b", "a"]


# --- udev -----------------------------------------------------------------------------

def test_use_udev_modes(monkeypatch, tmp_path):
    control = tmp_path / "control"
    monkeypatch.setattr(udev, "UDEV_CONTROL", str(control))
    monkeypatch.delenv("DM_DISABLE_UDEV", raising=False)
    assert not udev.use_udev("auto")          # udev does not run
    control.touch()
    assert udev.use_udev("auto") and udev.use_udev("wait") and not udev.use_udev("off")
    monkeypatch.setenv("DM_DISABLE_UDEV", "1")
    assert not udev.use_udev("auto") and udev.use_udev("wait")


def test_udev_message_parsing():
    props = b"ACTION=change\0MAJOR=254\0MINOR=1\0SUBSYSTEM=block\0SEQNUM=7\0"
    head = struct.pack("=8sIIII", b"libudev\0", socket.htonl(0xFEEDCAFE), 40, 40, len(props))
    data = head + bytes(40 - len(head)) + props
    assert udev.parse_udev_message(data) == {"ACTION": "change", "MAJOR": "254", "MINOR": "1",
                                            "SUBSYSTEM": "block", "SEQNUM": "7"}
    assert udev.parse_udev_message(b"change@/devices/virtual/block/dm-1\0ACTION=change") is None
    assert udev.parse_udev_message(data[:30]) is None
    bad_magic = data[:8] + b"\0\0\0\0" + data[12:]
    assert udev.parse_udev_message(bad_magic) is None


def test_cookie_is_flags_only():
    # the low 16 bits are zero: `dmsetup udevcomplete` finds no semaphore to
    # wait on and returns at once; the flags ask 55-dm.rules for every rule
    assert udev.UDEV_COOKIE & 0xFFFF == 0
    assert udev.UDEV_COOKIE >> 16 == 0x60


class EventKernel(FakeKernel):
    """Records each request's event_nr and says a uevent was sent."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.event_nrs = []

    def lc_dm_ioctl(self, fd, cmd, cbuf):
        view = _buffer(cbuf)
        self.event_nrs.append((cmd, struct.unpack_from("=I", view, 32)[0]))
        rc = super().lc_dm_ioctl(fd, cmd, cbuf)
        if cmd in (dm.Cmd.DEV_SUSPEND, dm.Cmd.DEV_REMOVE, dm.Cmd.DEV_RENAME):
            flags = struct.unpack_from("=I", view, 28)[0]
            struct.pack_into("=I", view, 28, flags | dm.Flag.UEVENT_GENERATED)
        return rc


def _buffer(cbuf):
    from loopcore import _c
    return _c.ffi.buffer(cbuf)


class FakeWaiter:
    made = []

    def __init__(self) -> None:
        self.waits = []
        self.closed = False
        FakeWaiter.made.append(self)

    def wait(self, devnum, action, timeout=udev.UDEV_TIMEOUT):
        self.waits.append((action, timeout))
        return True

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_udev_off_path_unchanged(fake_mapper, monkeypatch):  # noqa: F811
    """Without udev: the same ioctls as ever, no cookie, no listener."""
    monkeypatch.setattr("loopcore.dm.session.UeventWaiter", lambda: pytest.fail("listener"))
    kernel = EventKernel()
    m = fake_mapper(kernel, udev="off")
    m.create("a", table=[dm.zero(0, 8)])
    m.resume("a")
    m.rename("a", "b")
    m.remove("b")
    assert kernel.event_nrs == [(dm.Cmd.VERSION, 0), (dm.Cmd.DEV_CREATE, 0),
                                (dm.Cmd.TABLE_LOAD, 0), (dm.Cmd.DEV_SUSPEND, 0),
                                (dm.Cmd.DEV_SUSPEND, 0), (dm.Cmd.DEV_RENAME, 0),
                                (dm.Cmd.DEV_REMOVE, 0)]


def test_udev_wait_path(fake_mapper, monkeypatch):  # noqa: F811
    """With udev: the cookie on every ioctl that sends an event, a listener
    opened first and closed after, one wait per event."""
    FakeWaiter.made.clear()
    monkeypatch.setattr("loopcore.dm.session.UeventWaiter", FakeWaiter)
    kernel = EventKernel()
    m = fake_mapper(kernel, udev="wait", udev_timeout=3)
    assert m.udev_sync
    m.create("a", table=[dm.zero(0, 8)])
    m.create("notable")
    m.resume("a")
    m.rename("a", "b")
    m.remove("b")
    cookie = udev.UDEV_COOKIE
    assert [e for e in kernel.event_nrs if e[1]] == [
        (dm.Cmd.DEV_SUSPEND, cookie), (dm.Cmd.DEV_SUSPEND, cookie),
        (dm.Cmd.DEV_RENAME, cookie), (dm.Cmd.DEV_REMOVE, cookie)]
    assert [w.waits for w in FakeWaiter.made] == [
        [("change", 3.0)], [("change", 3.0)], [("change", 3.0)], [("remove", 3.0)]]
    assert all(w.closed for w in FakeWaiter.made)


@pytest.mark.parametrize("kwargs, error", [
    ({"udev": "sometimes"}, errors.ValueError), ({"udev_timeout": 0}, errors.ValueError),
    ({"udev_timeout": True}, errors.TypeError), ({"udev_timeout": "1"}, errors.TypeError)])
def test_udev_arguments_checked(kwargs, error):
    with pytest.raises(error):
        dm.DeviceMapper(control="/nonexistent/control", **kwargs)


def test_row_that_fails_is_left_out_like_dmsetup(monkeypatch):
    """A device without a table has no block device name yet: dmsetup prints
    the other rows, then fails; so does the report, given a list."""
    monkeypatch.setattr(report, "block_name",
                        lambda devnum: "dm-0" if devnum == os.makedev(254, 0) else None)
    devs = [info("a", 0), info("notab", 250, dm.Flag(0))]
    failed = []
    rows = report.device_rows(devs, ["name", "blkdevname"], lambda i: (),
                              lambda: pytest.fail(), failed)
    assert rows == [{"name": "a", "blkdevname": "dm-0"}]
    assert len(failed) == 1 and "254:250" in str(failed[0])
    with pytest.raises(OSError):
        report.device_rows(devs, ["name", "blkdevname"], lambda i: (), lambda: pytest.fail())

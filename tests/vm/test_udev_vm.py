"""udev cooperation in the guest, where systemd-udevd runs with the host's
device-mapper rules (55-dm.rules, 60-persistent-storage-dm.rules,
95-dm-notify.rules from Debian's dmsetup package).

scripts/vm-tests exports DM_DISABLE_UDEV=1 for the whole run; the tests of
udev mode unset it for their own part (monkeypatch), as a program started
outside the test script would see it.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from loopcore import dm
from loopcore.dm import udev

from vmhelpers import PREFIX


@pytest.fixture
def udev_mapper(monkeypatch, mapper):
    """A DeviceMapper in the default mode ("auto") with DM_DISABLE_UDEV unset."""
    monkeypatch.delenv("DM_DISABLE_UDEV", raising=False)
    assert udev.udev_running(), "systemd-udevd does not run in the guest"
    m = dm.DeviceMapper()
    yield m
    m.close()


def links(name: str, uuid: str) -> dict:
    return {"mapper": Path(dm.DEV_DIR, name), "by-name": Path(f"/dev/disk/by-id/dm-name-{name}"),
            "by-uuid": Path(f"/dev/disk/by-id/dm-uuid-{uuid}")}


def test_udev_mode_links_exist_on_return_and_go_with_remove(udev_mapper, names):
    m = udev_mapper
    assert m.udev_sync
    name = names("udev")
    uuid = f"LCT-{name}"
    info = m.create(name, uuid=uuid, table=[dm.zero(0, 64)])
    kname = f"dm-{info.minor}"
    for what, path in links(name, uuid).items():
        # udev's symlinks, not a node of loopcore's, right after create returns
        assert path.is_symlink(), what
        assert os.path.basename(os.readlink(path)) == kname, what
        assert os.stat(path).st_rdev == info.devnum, what

    new = name + "-renamed"
    m.rename(name, new)
    assert Path(dm.DEV_DIR, new).is_symlink()
    assert Path(f"/dev/disk/by-id/dm-name-{new}").is_symlink()
    assert not os.path.lexists(Path(dm.DEV_DIR, name))
    assert not os.path.lexists(f"/dev/disk/by-id/dm-name-{name}")

    m.load(new, [dm.zero(0, 128)])
    m.resume(new)
    assert os.stat(Path(dm.DEV_DIR, new)).st_rdev == info.devnum
    assert Path(f"/dev/disk/by-id/dm-name-{new}").is_symlink()

    m.remove(new)
    for what, path in links(new, uuid).items():
        assert not os.path.lexists(path), what


def test_udev_mode_device_without_table_gets_our_node(udev_mapper, names):
    """udev links a device only once it has a live table: until then the
    node is loopcore's (dmsetup leaves it missing)."""
    name = names("notable")
    info = udev_mapper.create(name)
    st = os.lstat(Path(dm.DEV_DIR, name))
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == info.devnum
    udev_mapper.remove(name)
    assert not os.path.lexists(Path(dm.DEV_DIR, name))


def test_dm_disable_udev_means_our_nodes(monkeypatch, mapper, names, tmp_path):
    """DM_DISABLE_UDEV=1 turns "auto" off, as in libdevmapper; off, loopcore
    makes the node itself (in a directory udev does not manage, so that
    udev's later change event cannot replace it under the test)."""
    monkeypatch.setenv("DM_DISABLE_UDEV", "1")
    with dm.DeviceMapper(dev_dir=str(tmp_path)) as m:
        assert not m.udev_sync
        name = names("noudev")
        info = m.create(name, table=[dm.zero(0, 8)])
        st = os.lstat(tmp_path / name)
        assert stat.S_ISBLK(st.st_mode) and st.st_rdev == info.devnum
        m.remove(name)
        assert not os.path.lexists(tmp_path / name)
    monkeypatch.delenv("DM_DISABLE_UDEV")
    with dm.DeviceMapper(udev="off") as m:
        assert not m.udev_sync


def test_no_udev_node_falls_back_to_ours(monkeypatch, mapper, names, tmp_path, caplog):
    """udev processed the event but made no node where loopcore looks (as
    with the dm rules missing): the wait ends with udev's event, then
    loopcore makes the node itself."""
    monkeypatch.delenv("DM_DISABLE_UDEV", raising=False)
    with dm.DeviceMapper(dev_dir=str(tmp_path), udev="wait", udev_timeout=60) as m:
        name = names("fallback")
        info = m.create(name, table=[dm.zero(0, 8)])
        st = os.lstat(tmp_path / name)
        assert stat.S_ISBLK(st.st_mode) and st.st_rdev == info.devnum
        # udev's event ended the wait, not the timeout (which says so)
        assert "did not report" not in caplog.text, "waited for the timeout, not for udev"
        m.remove(name)
        assert not os.path.lexists(tmp_path / name)


def test_wait_is_bounded(caplog):
    """No event ever comes for a device that does not exist: the wait ends
    at its timeout (and says so) instead of hanging."""
    with udev.UeventWaiter() as waiter:
        assert waiter.wait(os.makedev(254, 250), "change", timeout=0.5) is False
    assert "did not report the change event of device 254:250 within 0.5 s" in caplog.text


def test_cli_udev_sync(monkeypatch, mapper, names, capsys):
    """`loopcore dm create` waits for udev by default; `--noudevsync` does not."""
    from loopcore import cli
    monkeypatch.delenv("DM_DISABLE_UDEV", raising=False)
    name = names("cli")
    assert cli.main(["dm", "create", name, "--uuid", f"LCT-{name}", "--table",
                     "0 8 zero"]) == 0
    assert Path(f"/dev/disk/by-id/dm-name-{name}").is_symlink()
    assert cli.main(["dm", "remove", name]) == 0
    assert not os.path.lexists(f"/dev/disk/by-id/dm-name-{name}")
    assert not os.path.lexists(Path(dm.DEV_DIR, name))
    assert name.startswith(PREFIX)


@pytest.mark.parametrize("mode", ["auto", "wait"])
def test_a_wait_that_runs_out_stops_auto_mode_waiting(monkeypatch, mapper, names, tmp_path,
                                                     caplog, mode):
    """udev's event never arrives (as for a udevd in another network
    namespace, simulated: the waiter reports a timeout): "auto" makes the
    node itself and stops waiting for the rest of the client's life, so
    only the first call pays the timeout; "wait" keeps waiting."""
    monkeypatch.delenv("DM_DISABLE_UDEV", raising=False)
    waits = []

    def timed_out(self, devnum, action, timeout=udev.UDEV_TIMEOUT):
        waits.append(action)
        return False

    monkeypatch.setattr(udev.UeventWaiter, "wait", timed_out)
    with dm.DeviceMapper(dev_dir=str(tmp_path), udev=mode) as m:
        assert m.udev_sync
        name = names("timeout")
        info = m.create(name, table=[dm.zero(0, 8)])
        st = os.lstat(tmp_path / name)
        assert stat.S_ISBLK(st.st_mode) and st.st_rdev == info.devnum
        assert m.udev_sync == (mode == "wait")
        m.remove(name)
        assert not os.path.lexists(tmp_path / name)
    assert waits == (["change"] if mode == "auto" else ["change", "remove"])
    assert ("makes /dev/mapper nodes itself" in caplog.text) == (mode == "auto")

"""loopcore.dm against a real device-mapper (inside the qemu guest).

Data tests write through /dev/mapper/<name> and read the bytes back from
the loop devices' backing files at the offsets the table maps them to.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import struct
import subprocess
import threading

import pytest

from loopcore import DeviceBusyError, dm, errors

from uevents import Uevents
from vmhelpers import (
    PREFIX,
    backing_bytes,
    cli,
    dmsetup,
    node_devnum,
    our_devices,
    read_dm,
    udev_settle,
    write_dm,
)

S = 512  # sector


def pattern(tag: int, size: int) -> bytes:
    return bytes((tag + i) & 0xFF for i in range(256)) * (size // 256)


# --- basics ---------------------------------------------------------------------

def test_version_and_targets(mapper):
    major, minor, _patch = mapper.version()
    assert major == 4 and minor >= 37
    names = {t.name: t for t in mapper.target_versions()}
    assert {"linear", "striped", "zero", "error"} <= set(names)
    assert mapper.target_version("linear") == names["linear"]
    mirror = mapper.target_version("mirror")  # loads dm-mirror if needed
    assert mirror.name == "mirror" and mirror.version[0] >= 1
    with pytest.raises(OSError) as exc:
        mapper.target_version("no-such-target")
    assert exc.value.errno == errno.EINVAL


def test_linear_bytes_at_offsets(mapper, names, loops):
    a, b = loops(1 << 20), loops(1 << 20)
    name = names("linear")
    table = dm.Table([dm.linear(0, 256, a, 1024), dm.linear(256, 512, b.path, 0)])
    info = mapper.create(name, table=table)
    assert info.active and not info.suspended and info.target_count == 2
    assert node_devnum(name) == info.devnum
    assert str(mapper.table(name)) == (f"0 256 linear {a.devnum >> 8}:{a.devnum & 0xff} 1024\n"
                                       f"256 512 linear {os.major(b.devnum)}:"
                                       f"{os.minor(b.devnum)} 0")
    data = pattern(1, 768 * S)
    write_dm(name, 0, data)
    assert backing_bytes(a, 1024 * S, 256 * S) == data[:256 * S]
    assert backing_bytes(b, 0, 512 * S) == data[256 * S:]
    assert backing_bytes(a, 0, 1024 * S) == bytes(1024 * S)  # before the offset: untouched
    assert read_dm(name, 100 * S, 300 * S) == data[100 * S:400 * S]
    mapper.remove(name)
    assert node_devnum(name) is None
    assert name not in our_devices(mapper)


def test_striped_bytes(mapper, names, loops):
    a, b = loops(1 << 20), loops(1 << 20)
    name = names("striped")
    chunk = 8  # sectors
    mapper.create(name, table=[dm.striped(0, 1024, chunk, [(a, 16), (b, 0)])])
    data = pattern(7, 1024 * S)
    write_dm(name, 0, data)
    c = chunk * S
    for i in range(1024 // chunk):
        dev, base = (a, 16 * S) if i % 2 == 0 else (b, 0)
        assert backing_bytes(dev, base + (i // 2) * c, c) == data[i * c:(i + 1) * c], i


def test_zero_and_error(mapper, names):
    name = names("zeroerr")
    mapper.create(name, table=[dm.zero(0, 64), dm.error(64, 64)])
    assert read_dm(name, 0, 64 * S) == bytes(64 * S)
    write_dm(name, 0, b"\xff" * 4096)  # discarded
    assert read_dm(name, 0, 4096) == bytes(4096)
    fd = os.open(os.path.join(dm.DEV_DIR, name), os.O_RDONLY | os.O_DIRECT)
    try:
        with pytest.raises(OSError) as exc:
            import mmap
            buf = mmap.mmap(-1, 4096)
            os.preadv(fd, [buf], 64 * S)
        assert exc.value.errno == errno.EIO
    finally:
        os.close(fd)
    assert [s.target_type for s in mapper.status(name)] == ["zero", "error"]


def test_read_only_create(mapper, names, loops):
    a = loops(1 << 20)
    name = names("ro")
    info = mapper.create(name, table=[dm.linear(0, 64, a)], read_only=True)
    assert info.read_only and mapper.info(name).read_only
    fd = os.open(os.path.join(dm.DEV_DIR, name), os.O_WRONLY)
    try:
        with pytest.raises(OSError) as exc:
            os.pwrite(fd, b"x" * 4096, 0)
        assert exc.value.errno in (errno.EACCES, errno.EROFS, errno.EPERM)
    finally:
        os.close(fd)


# --- table changes, suspend, rename, uuid, deps ------------------------------------

def test_load_resume_swaps_table(mapper, names, loops):
    a, b = loops(1 << 20, fill=b"A"), loops(1 << 20, fill=b"B")
    name = names("swap")
    mapper.create(name, table=[dm.linear(0, 64, a)])
    assert read_dm(name, 0, 4) == b"AAAA"
    new = dm.Table([dm.linear(0, 128, b, 8)])
    info = mapper.load(name, new)
    assert info.inactive_table and info.active
    assert mapper.table(name, inactive=True) == dm.Table.parse(str(mapper.table(name,
                                                                                 inactive=True)))
    assert mapper.table(name, inactive=True)[0].length == 128
    assert mapper.table(name)[0].length == 64  # live table unchanged until resume
    assert read_dm(name, 0, 4) == b"AAAA"
    info = mapper.resume(name)
    assert not info.inactive_table and info.target_count == 1
    assert mapper.table(name)[0].length == 128
    assert read_dm(name, 0, 4) == b"BBBB"
    # load then clear: the inactive table goes away, the live one stays
    mapper.load(name, [dm.zero(0, 8)])
    assert mapper.clear(name).inactive_table is False
    assert mapper.table(name) == dm.Table([dm.linear(0, 128, b.devnum, 8)])


def test_suspend_resume_noflush(mapper, names, loops):
    a = loops(1 << 20)
    name = names("susp")
    mapper.create(name, table=[dm.linear(0, 64, a)])
    info = mapper.suspend(name, noflush=True, skip_lockfs=True)
    assert info.suspended and mapper.info(name).suspended
    assert mapper.suspend(name).suspended  # suspending twice is fine
    assert "SUSPENDED" in cli_info_state(name)
    info = mapper.resume(name)
    assert not info.suspended and not mapper.info(name).suspended
    mapper.suspend(name)
    assert mapper.resume(name).suspended is False


def cli_info_state(name: str) -> str:
    return dmsetup("info", name).stdout.splitlines()[1]


def test_rename_and_set_uuid(mapper, names):
    name = names("ren")
    new = name + "-renamed"
    devnum = mapper.create(name, table=[dm.zero(0, 8)]).devnum
    info = mapper.rename(name, new)
    assert info.name == new and info.devnum == devnum
    assert node_devnum(name) is None and node_devnum(new) == devnum
    with pytest.raises(OSError) as exc:
        mapper.info(name)
    assert exc.value.errno == errno.ENXIO
    assert mapper.info(new).uuid == ""
    uuid = f"LOOPCORE-{new}"
    assert mapper.set_uuid(new, uuid).uuid == uuid
    assert mapper.info(new).uuid == uuid
    entry = [d for d in mapper.list_devices() if d.name == new][0]
    assert entry.uuid == uuid and entry.devnum == devnum
    with pytest.raises(OSError):
        mapper.set_uuid(new, uuid + "-again")  # the kernel will not change a set uuid
    mapper.remove(new)
    assert node_devnum(new) is None


def test_deps_names_the_loop_devices(mapper, names, loops):
    a, b = loops(1 << 20), loops(1 << 20)
    name = names("deps")
    mapper.create(name, table=[dm.linear(0, 64, a), dm.linear(64, 64, b)])
    assert sorted(mapper.deps(name)) == sorted([a.devnum, b.devnum])
    assert dm.block_name(a.devnum) == os.path.basename(a.path)


def test_by_uuid(mapper, names, loops):
    """Every verb finds a device by uuid too (DevId.uuid / a DmUuid)."""
    a = loops(1 << 20)
    name = names("byuuid")
    uuid = dm.DevId.uuid(f"LCT-BY UUID-{name}")
    devnum = mapper.create(name, uuid=uuid, table=[dm.linear(0, 64, a)]).devnum
    info = mapper.info(uuid)
    assert info.name == name and info.devnum == devnum and info.uuid == uuid
    assert mapper.table(uuid) == mapper.table(name)
    assert mapper.status(uuid) == mapper.status(name)
    assert mapper.deps(uuid) == [a.devnum]
    assert mapper.suspend(uuid).suspended and not mapper.resume(uuid).suspended
    mapper.load(uuid, [dm.zero(0, 128)])
    assert mapper.resume(uuid).target_count == 1 and mapper.table(name)[0].target_type == "zero"
    renamed = name + "-renamed"
    assert mapper.rename(uuid, renamed).name == renamed
    assert node_devnum(renamed) == devnum and node_devnum(name) is None
    assert mapper.remove(uuid) is True
    assert node_devnum(renamed) is None and renamed not in our_devices(mapper)
    with pytest.raises(OSError) as exc:
        mapper.info(uuid)
    assert exc.value.errno == errno.ENXIO and exc.value.filename == f"uuid {uuid}"


def test_status_lines_are_not_a_table(mapper, names):
    name = names("statuslines")
    mapper.create(name, table=[dm.zero(0, 8)])
    status = mapper.status(name)
    assert status == (dm.StatusLine(0, 8, "zero", ""),)
    with pytest.raises(TypeError):
        mapper.load(name, status)


def test_set_geometry(mapper, names):
    name = names("geo")
    mapper.create(name, table=[dm.zero(0, 2048)])
    mapper.set_geometry(name, 16, 4, 32, 0)
    fd = os.open(os.path.join(dm.DEV_DIR, name), os.O_RDONLY)
    try:
        raw = fcntl.ioctl(fd, 0x0301, bytes(struct.calcsize("BBHL")))  # HDIO_GETGEO
    finally:
        os.close(fd)
    heads, sectors, cylinders, start = struct.unpack("BBHL", raw)
    assert (cylinders, heads, sectors, start) == (16, 4, 32, 0)


# --- events -------------------------------------------------------------------------

def test_wait_returns_after_mirror_resync(mapper, names, loops):
    a, b = loops(1 << 20), loops(1 << 20)
    name = names("mirror")
    sectors = (1 << 20) // S
    table = [dm.Target(0, sectors, "mirror",
                       f"core 1 64 2 {dm.device_arg(a)} 0 {dm.device_arg(b)} 0")]
    result = {}

    def waiter(event_nr: int) -> None:
        result["info"] = mapper.wait(name, event_nr)

    info = mapper.create(name, table=table)
    # event_nr starts at 0; the finished resync raises it.  wait() returns
    # at once if it has already moved on.
    thread = threading.Thread(target=waiter, args=(0,), daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "wait() did not return after the mirror's resync"
    assert info.event_nr == 0 and result["info"].event_nr > 0
    status = mapper.status(name)[0]
    assert status.target_type == "mirror"
    fields = status.params.split()
    in_sync, total = map(int, fields[3].split("/"))
    assert in_sync == total and fields[4] == "1" and fields[5] == "AA", status.params
    # a second wait with the current number blocks until the next event,
    # which a reloaded mirror raises when its new resync finishes
    current = mapper.info(name).event_nr
    thread = threading.Thread(target=waiter, args=(current,), daemon=True)
    result.clear()
    thread.start()
    # No sleep to see it block: a wait() that returned without a new event
    # would report event_nr == current, which the last line refuses.
    mapper.load(name, table)
    mapper.resume(name)  # resync of the reloaded mirror raises the next event
    thread.join(120)
    assert not thread.is_alive() and result["info"].event_nr > current


def test_arm_poll(mapper, names):
    mapper.arm_poll()
    poller = select.poll()
    poller.register(mapper.fileno(), select.POLLIN)
    assert poller.poll(0) == []
    name = names("poll")
    mapper.create(name, table=[dm.zero(0, 8)])
    assert poller.poll(5000), "no poll event after creating a device"
    mapper.arm_poll()
    assert poller.poll(0) == []


def test_deferred_remove_and_cancel(mapper, names):
    name = names("deferred")
    mapper.create(name, table=[dm.zero(0, 8)])
    path = os.path.join(dm.DEV_DIR, name)
    # udev's rules make /dev/mapper links and remove them with the device;
    # a node loopcore made (udev made none) is loopcore's to remove
    made_by_udev = os.path.islink(path)
    fd = os.open(path, os.O_RDONLY)
    with Uevents() as uevents:
        try:
            devnum = mapper.info(name).devnum
            assert mapper.info(name).open_count == 1
            assert mapper.remove(name, deferred=True) is False
            assert mapper.info(name).deferred_remove
            assert mapper.message(name, 0, "@cancel_deferred_remove") is None
            assert not mapper.info(name).deferred_remove
            assert mapper.remove(name, deferred=True) is False
            assert mapper.info(name).deferred_remove
        finally:
            os.close(fd)
        # The last close removed it: the kernel queues that removal on a
        # workqueue, so it lands after close() returns, with its uevent.
        assert uevents.wait_for("remove", devnum), "the deferred remove never happened"
    with pytest.raises(OSError) as exc:
        mapper.info(name)
    assert exc.value.errno == errno.ENXIO
    udev_settle()  # udev saw it too
    if made_by_udev:
        assert node_devnum(name) is None  # udev removed its link with the device
    else:
        assert node_devnum(name) is not None  # our node outlives a deferred remove...
    mapper.mknodes()
    assert node_devnum(name) is None  # ...until mknodes() syncs /dev/mapper


def test_message_with_reply(mapper, names):
    name = names("stats")
    mapper.create(name, table=[dm.zero(0, 64)])
    region = mapper.message(name, 0, "@stats_create - /1")
    assert region is not None and region.strip().isdigit()
    listing = mapper.message(name, 0, "@stats_list")
    assert listing and listing.split(":")[0] == region.strip()
    mapper.message(name, 0, f"@stats_delete {region.strip()}")


# --- error paths: the exception, and nothing left behind ----------------------------

def assert_nothing_left(mapper, name):
    assert name not in our_devices(mapper)
    assert node_devnum(name) is None


@pytest.mark.parametrize("call", ["info", "remove", "table", "status", "suspend", "resume",
                                  "deps", "clear", "rename", "message", "wait", "load"])
def test_missing_device_is_enxio(mapper, call):
    name = PREFIX + "missing"
    args = {"rename": (name, name + "2"), "message": (name, 0, "@cancel_deferred_remove"),
            "wait": (name, 0), "load": (name, [dm.zero(0, 8)])}.get(call, (name,))
    kwargs = {"remove": {"retries": 0}}.get(call, {})
    with pytest.raises(OSError) as exc:
        getattr(mapper, call)(*args, **kwargs)
    assert exc.value.errno == errno.ENXIO, exc.value
    assert exc.value.filename == f"/dev/mapper/{name}"
    assert isinstance(exc.value, errors.DmError) and not isinstance(exc.value, errors.LoopError)
    assert_nothing_left(mapper, name)


@pytest.mark.parametrize("bad", ["a/b", "control", ".", "..", "x" * 128, ""])
def test_bad_name_rejected_before_ioctl(mapper, bad):
    before = our_devices(mapper)
    with pytest.raises(ValueError):
        mapper.create(bad, table=[dm.zero(0, 8)])
    with pytest.raises(ValueError):
        mapper.create(PREFIX + "ok", uuid="u" * 129)
    assert our_devices(mapper) == before


def test_unknown_target_type(mapper, names):
    name = names("unknown")
    with pytest.raises(OSError) as exc:
        mapper.create(name, table=[dm.Target(0, 8, "no-such-target")])
    assert exc.value.errno == errno.EINVAL
    assert_nothing_left(mapper, name)


@pytest.mark.parametrize("table", [
    "0 8 linear /dev/does-not-exist 0",   # no such device
    "0 8 zero\n16 8 zero",                 # a gap
    "0 64 striped 2 6 7:0 0 7:1 0",        # chunk not a power of two
    "0 8 linear",                          # missing parameters
])
def test_kernel_rejected_table(mapper, names, table):
    name = names("rejected")
    with pytest.raises(OSError) as exc:
        mapper.create(name, table=dm.Table.parse(table))
    assert exc.value.errno in (errno.EINVAL, errno.ENXIO, errno.ENODEV, errno.ENOENT)
    assert_nothing_left(mapper, name)


def test_rejected_load_keeps_device(mapper, names):
    name = names("keep")
    mapper.create(name, table=[dm.zero(0, 8)])
    with pytest.raises(OSError):
        mapper.load(name, "0 8 no-such-target")
    info = mapper.info(name)
    assert info.active and not info.inactive_table


def test_busy_device(mapper, names, caplog):
    name = names("busy")
    devnum = mapper.create(name, table=[dm.zero(0, 8)]).devnum
    # creating the same name again is EBUSY and must not remove the first one
    with pytest.raises(DeviceBusyError) as exc:
        mapper.create(name, table=[dm.zero(0, 16)])
    assert exc.value.errno == errno.EBUSY
    assert mapper.info(name).devnum == devnum and mapper.table(name)[0].length == 8
    caplog.set_level(logging.DEBUG, logger="loopcore.dm")
    fd = os.open(os.path.join(dm.DEV_DIR, name), os.O_RDONLY)
    try:
        with pytest.raises(DeviceBusyError) as exc:
            mapper.remove(name, retries=3, retry_delay=0.02)
        assert exc.value.errno == errno.EBUSY
        retries = [r.getMessage() for r in caplog.records if "EBUSY, retry" in r.getMessage()]
        assert [m.split("retry ")[1].split(" in")[0] for m in retries] == \
            ["1 of 3", "2 of 3", "3 of 3"], retries
        assert isinstance(exc.value, errors.DmBusyError)
        assert mapper.info(name).open_count == 1
        assert node_devnum(name) == devnum
    finally:
        os.close(fd)
    # EBUSY that clears while remove() retries: the holder lets go when the
    # first retry is announced (an event, not a race against a timer)
    fd = os.open(os.path.join(dm.DEV_DIR, name), os.O_RDONLY)
    held = [fd]

    class CloseOnRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if held and "EBUSY, retry 1 of" in record.getMessage():
                os.close(held.pop())

    handler = CloseOnRetry()
    logging.getLogger("loopcore.dm").addHandler(handler)
    try:
        assert mapper.remove(name, retries=50, retry_delay=0.02) is True
    finally:
        logging.getLogger("loopcore.dm").removeHandler(handler)
        for left in held:
            os.close(left)
    assert not held, "remove() never retried"
    assert_nothing_left(mapper, name)


# --- many devices -------------------------------------------------------------------

def test_list_2000_devices(mapper):
    """BUFFER_FULL growth: 2000 devices with uuids do not fit 16 KiB."""
    count = 2000
    base = PREFIX + "many-"
    fresh = dm.DeviceMapper()
    made = []
    try:
        for i in range(count):
            info = fresh.create(f"{base}{i:04d}", uuid=f"LCT-MANY-{i:04d}")  # no table: fast
            made.append((info.name, info.devnum))
        listed = {d.name: d for d in fresh.list_devices() if d.name.startswith(base)}
        assert fresh._channel.out_size > 16 * 1024  # it grew
        assert len(listed) == count
        for name, devnum in made:
            assert listed[name].devnum == devnum
            assert listed[name].uuid == "LCT-MANY-" + name[-4:]
        lines = [ln for ln in dmsetup("ls").stdout.splitlines() if ln.startswith(base)]
        assert len(lines) == count
    finally:
        for name, _devnum in made:
            fresh.remove(name, retries=5, retry_delay=0.05)
        fresh.close()
    assert not [n for n in our_devices(mapper) if n.startswith(base)]


# --- differential: dmsetup in the same VM ------------------------------------------

@pytest.fixture
def three_devices(mapper, names, loops):
    a, b = loops(1 << 20), loops(1 << 20)
    made = []
    for tag, table, uuid in (
            ("dl", [dm.linear(0, 128, a, 8), dm.linear(128, 64, b)], None),
            ("ds", [dm.striped(0, 256, 16, [a, (b, 32)])], "LCT-DIFF-S"),
            ("dz", [dm.zero(0, 8), dm.error(8, 8)], None)):
        name = names(tag)
        mapper.create(name, uuid=uuid, table=table)
        made.append(name)
    mapper.suspend(made[2])
    mapper.load(made[2], [dm.zero(0, 32)])
    return made


def test_dmsetup_table_status_info_deps_agree(mapper, three_devices, capsys):
    for name in three_devices:
        assert dmsetup("table", name).stdout == str(mapper.table(name)) + "\n"
        assert dmsetup("status", name).stdout == str(mapper.status(name)) + "\n"
        assert dmsetup("table", "--inactive", name).stdout == \
            cli(capsys, "table", "--inactive", name)
        assert dmsetup("info", name).stdout == cli(capsys, "info", name)
        assert dmsetup("deps", name).stdout == cli(capsys, "deps", name)
        assert dmsetup("table", name).stdout == cli(capsys, "table", name)
        assert dmsetup("status", name).stdout == cli(capsys, "status", name)
        assert dm.Table.parse(dmsetup("table", name).stdout) == mapper.table(name)


def test_dmsetup_ls_and_targets_agree(mapper, three_devices, capsys):
    ours = cli(capsys, "ls").splitlines()
    theirs = dmsetup("ls").stdout.splitlines()
    assert sorted(ours) == sorted(theirs)
    assert cli(capsys, "targets") == dmsetup("targets").stdout


def test_dmsetup_sees_our_devices_and_we_see_theirs(mapper, names):
    name = names("theirs")
    dmsetup("create", name, "--uuid", "LCT-THEIRS", "--table", "0 16 zero")
    info = mapper.info(name)
    assert info.uuid == "LCT-THEIRS" and info.active and info.target_count == 1
    assert str(mapper.table(name)) == "0 16 zero "
    mapper.remove(name)
    assert dmsetup("info", name, check=False).returncode != 0


# --- the CLI --------------------------------------------------------------------------

def test_cli_lifecycle(mapper, names, capsys, tmp_path, monkeypatch):
    import io
    import json
    name = names("cli")
    cli(capsys, "create", name, "--table", "0 16 zero\n16 16 error")
    assert [t.target_type for t in mapper.table(name)] == ["zero", "error"]
    table_file = tmp_path / "t.txt"
    table_file.write_text("0 64 zero\n")
    cli(capsys, "load", name, str(table_file))
    assert cli(capsys, "table", "--inactive", name) == "0 64 zero \n"
    cli(capsys, "resume", name)
    listing = json.loads(cli(capsys, "ls", "--json"))
    assert any(d["name"] == name for d in listing)
    info = json.loads(cli(capsys, "info", "--json", name))[0]
    assert info["name"] == name and info["target_count"] == 1
    cli(capsys, "rename", name, "--setuuid", "LCT-CLI")
    assert mapper.info(name).uuid == "LCT-CLI"
    cli(capsys, "suspend", "--noflush", name)
    assert mapper.info(name).suspended
    cli(capsys, "resume", name)
    name2 = names("cli2")
    monkeypatch.setattr("sys.stdin", io.StringIO("0 8 zero\n"))
    cli(capsys, "create", name2)
    assert mapper.table(name2)[0].length == 8
    cli(capsys, "remove", name, name2)
    assert_nothing_left(mapper, name)
    assert_nothing_left(mapper, name2)


def test_cli_errors_one_line(mapper):
    """Through the real entry point: one stderr line, exit 1; usage errors exit 2."""
    import sys
    name = PREFIX + "missing"
    proc = subprocess.run([sys.executable, "-m", "loopcore", "dm", "info", name],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"loopcore: /dev/mapper/{name}: No such device-mapper device\n"
    proc = subprocess.run([sys.executable, "-m", "loopcore", "dm", "wait"],
                          capture_output=True, text=True)
    assert proc.returncode == 2


# --- keys: masked like dmsetup table, unless --showkeys ----------------------------

def read_direct(name: str, offset: int, length: int) -> bytes:
    """Read past the page cache, which outlives a table swap."""
    import mmap
    fd = os.open(os.path.join(dm.DEV_DIR, name), os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, length)
        assert os.preadv(fd, [buf], offset) == length
        return bytes(buf)
    finally:
        os.close(fd)


KEY = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"
KEY2 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


def test_crypt_key_masked_like_dmsetup(mapper, names, loops, capsys):
    a = loops(1 << 20)
    name = names("crypt")
    mapper.create(name, table=[dm.Target(0, 2048, "crypt",
                                         f"aes-xts-plain64 {KEY} 0 {dm.device_arg(a)} 0")])
    theirs = dmsetup("table", name).stdout
    assert KEY not in theirs and "0" * 64 in theirs  # dmsetup's own masking
    assert cli(capsys, "table", name) == theirs
    assert str(mapper.table(name)) + "\n" == theirs
    assert KEY not in cli(capsys, "table", "--json", name)
    assert KEY not in cli(capsys, "table", "--inactive", name)
    shown = dmsetup("table", "--showkeys", name).stdout
    assert KEY in shown
    assert cli(capsys, "table", "--showkeys", name) == shown
    assert str(mapper.table(name, showkeys=True)) + "\n" == shown
    # every device at once, as dmsetup prints it: only our devices' lines
    ours = [ln for ln in cli(capsys, "table").splitlines() if ln.startswith(PREFIX)]
    assert ours == [ln for ln in dmsetup("table").stdout.splitlines()
                    if ln.startswith(PREFIX)]
    assert not any(KEY in ln for ln in ours)
    # the key that was loaded is the one in use: the data round-trips
    data = pattern(3, 64 * S)
    write_dm(name, 0, data)
    assert read_direct(name, 0, 64 * S) == data
    assert backing_bytes(a, 0, 64 * S) != data  # encrypted on the loop device


@pytest.mark.parametrize("gap", ["  ", "\t"])
def test_crypt_key_after_two_spaces_or_a_tab(mapper, names, loops, gap):
    """The kernel splits on any whitespace run: the key after two spaces or
    a tab is the key, and loopcore's own text hides it too."""
    a = loops(1 << 20)
    name = names("crypt-gap")
    params = f"aes-xts-plain64{gap}{KEY} 0 {dm.device_arg(a)} 0"
    assert KEY not in str(dm.mask_keys([dm.Target(0, 2048, "crypt", params)]))
    mapper.create(name, table=[dm.Target(0, 2048, "crypt", params)])
    assert KEY not in str(mapper.table(name))
    assert KEY in str(mapper.table(name, showkeys=True))  # the key loaded is that one
    data = pattern(4, 8 * S)
    write_dm(name, 0, data)
    assert read_direct(name, 0, 8 * S) == data and backing_bytes(a, 0, 8 * S) != data


def test_crypt_reload_from_showkeys_table(mapper, names, loops):
    """A table read with showkeys loads again; a masked one is a different key."""
    a = loops(1 << 20)
    name = names("crypt-reload")
    line = f"0 2048 crypt aes-xts-plain64 {KEY} 0 {dm.device_arg(a)} 0"
    mapper.create(name, table=line)
    write_dm(name, 0, pattern(5, 8 * S))
    mapper.load(name, mapper.table(name, showkeys=True))
    mapper.resume(name)
    assert read_direct(name, 0, 8 * S) == pattern(5, 8 * S)
    mapper.load(name, mapper.table(name))  # the zero key
    mapper.resume(name)
    assert read_direct(name, 0, 8 * S) != pattern(5, 8 * S)


def test_integrity_keys_masked_like_dmsetup(mapper, names, loops, capsys):
    a = loops(8 << 20)
    name = names("integrity")
    mapper.create(name, table=[dm.Target(
        0, 8, "integrity",
        f"{dm.device_arg(a)} 0 - J 3 internal_hash:hmac(sha256):{KEY} "
        f"journal_mac:hmac(sha256):{KEY2} journal_crypt:ctr(aes):{KEY[:32]}")])
    theirs = dmsetup("table", name).stdout
    assert KEY not in theirs and KEY2 not in theirs and KEY[:32] not in theirs
    assert "internal_hash:hmac(sha256):" + "0" * 64 in theirs
    assert cli(capsys, "table", name) == theirs
    assert str(mapper.table(name)) + "\n" == theirs
    shown = dmsetup("table", "--showkeys", name).stdout
    assert KEY in shown and KEY2 in shown
    assert cli(capsys, "table", "--showkeys", name) == shown
    assert str(mapper.table(name, showkeys=True)) + "\n" == shown


# --- names: dmsetup's mangling, both ways -------------------------------------------

def kernel_names() -> list:
    """Names as the kernel stores them (dmsetup without unmangling)."""
    return [ln.split("\t")[0]
            for ln in dmsetup("ls", "--manglename", "none").stdout.splitlines()]


@pytest.mark.parametrize("tag, stored", [
    ("sp ace", "sp\\x20ace"),
    ("caf\u00e9", "caf\\xc3\\xa9"),
    ("new\nline", "new\\x0aline"),
])
def test_our_mangled_names_work_in_dmsetup(mapper, names, capsys, tag, stored):
    name = names(tag)
    mangled = name.replace(tag, stored)
    info = mapper.create(name, uuid=f"LCT {tag}", table="0 8 zero")
    ls = dmsetup("ls", check=False)              # used to fail for every device
    assert ls.returncode == 0, ls.stderr
    assert f"{name}\t({info.major}:{info.minor})" in ls.stdout
    assert mangled in kernel_names()
    assert info.name == name and info.kernel_name == mangled
    assert info.uuid == f"LCT {tag}"
    assert node_devnum(mangled) == info.devnum  # /dev/mapper/<kernel name>, as udev names it
    assert sorted(cli(capsys, "ls").splitlines()) == sorted(ls.stdout.splitlines())
    assert dmsetup("info", name).stdout == cli(capsys, "info", name)
    assert f"Name:              {name}\n" in dmsetup("info", name).stdout
    assert f"UUID: LCT {tag}\n" in dmsetup("info", name).stdout
    assert dmsetup("table", name).stdout == cli(capsys, "table", name)
    assert [d for d in mapper.list_devices() if d.name == name][0].kernel_name == mangled
    # renamed to and from a mangled name, on both sides
    renamed = name + "-renamed"
    mapper.rename(name, renamed)
    assert dmsetup("info", renamed).returncode == 0 and node_devnum(mangled) is None
    dmsetup("rename", renamed, name)
    assert mapper.info(name).devnum == info.devnum
    mapper.remove(name)
    assert node_devnum(mangled) is None
    assert dmsetup("info", name, check=False).returncode != 0


def test_dmsetup_mangled_names_work_here(mapper, names, capsys):
    name = names("their space")
    mangled = name.replace(" ", "\\x20")
    dmsetup("create", name, "--uuid", "LCT their uuid", "--table", "0 16 zero")
    assert mangled in kernel_names()
    listed = {d.name: d for d in mapper.list_devices()}
    assert name in listed and mangled not in listed
    assert listed[name].uuid == "LCT their uuid"
    assert f"{name}\t(" in cli(capsys, "ls")
    info = mapper.info(name)
    assert info.name == name and info.uuid == "LCT their uuid" and info.kernel_name == mangled
    assert cli(capsys, "info", name) == dmsetup("info", name).stdout
    assert str(mapper.table(name)) == "0 16 zero "
    cli(capsys, "remove", name)
    assert dmsetup("info", name, check=False).returncode != 0
    assert node_devnum(mangled) is None  # dmsetup's node went with the device


def test_premangled_name_is_kept_like_dmsetup(mapper):
    """auto mode passes a name that is already \\xNN-encoded through."""
    typed = PREFIX + "pre\\x20mangled"
    shown = PREFIX + "pre mangled"
    try:
        mapper.create(typed, table="0 8 zero")
        assert PREFIX + "pre\\x20mangled" in kernel_names()
        assert mapper.info(shown).name == shown
        assert mapper.info(typed).devnum == mapper.info(shown).devnum
        assert dmsetup("info", typed).returncode == 0
    finally:
        if shown in our_devices(mapper):
            mapper.remove(shown)


@pytest.mark.parametrize("bad", ["mix ed\\x20", "mix\\x20ed ", "twice\\x5cx20"])
def test_refused_names_refused_like_dmsetup(mapper, bad):
    name = PREFIX + bad
    before = kernel_names()
    with pytest.raises(ValueError):
        mapper.create(name, table="0 8 zero")
    assert dmsetup("create", name, "--table", "0 8 zero", check=False).returncode != 0
    assert kernel_names() == before


def test_raw_names_need_manglename_none(mapper, capsys):
    """A name stored unmangled (by old loopcore or `--manglename none`) breaks
    dmsetup's listing; loopcore lists it as stored and reaches it with "none"."""
    name = PREFIX + "raw name"
    raw = dm.DeviceMapper(name_mangling="none")
    try:
        raw.create(name, table="0 8 zero")
        assert dmsetup("ls", check=False).returncode != 0   # libdm refuses the name
        assert name in [d.name for d in mapper.list_devices()]
        with pytest.raises(OSError) as exc:
            mapper.info(name)                               # "raw\x20name": not there
        assert exc.value.errno == errno.ENXIO
        assert mapper.info(dm.KernelName(name)).name == name
        cli(capsys, "remove", "--manglename", "none", name)
        assert name not in kernel_names()
    finally:
        if name in [d.name for d in raw.list_devices()]:
            raw.remove(name)
        raw.close()

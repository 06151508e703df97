"""The loopcore CLI's loop commands: differential against losetup, every
subcommand and its errors (the contract every command follows is
tests/test_cli_contract.py's; dm and dmlog have test_cli_dm.py and
test_cli_dmlog.py).

Devices are compared one by one (other processes list their own devices
in the same `losetup -l` output), and only devices bound to files these
tests made are looked at.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
from typing import Dict, List

import pytest

import loopcore
from loopcore import cli
from loopcore.cli import arguments, columns

from cli_runner import loopcore_cmd, loopcore_redirected, one_line, run_main
from conftest import VARIANTS, attached, fresh_number, kernel_size, sysfs
from uevents import Uevents

MiB = 1 << 20
BLKROSET = 0x125D


def losetup(*args: str) -> bytes:
    return subprocess.run(["losetup", *args], capture_output=True, check=True).stdout


def losetup_columns() -> List[str]:
    """The columns the installed losetup knows, from its --help."""
    text = subprocess.run(["losetup", "--help"], capture_output=True, text=True).stdout
    section = text.split("Available output columns:")[1]
    return [line.split()[0] for line in section.splitlines()
            if line.strip() and not line.startswith("For more")]


def json_objects(output: bytes) -> Dict[str, bytes]:
    """The text of each device object in libsmartcols JSON, by name."""
    chunks = re.findall(rb'\{\n         "name": "([^"]+)",?(?:\n[^\n]*?)*?\n      \}', output)
    objs = re.findall(rb'(\{\n         "name": "[^"]+".*?\n      \})', output, re.S)
    assert len(chunks) == len(objs)
    return dict(zip((c.decode() for c in chunks), objs))


@pytest.fixture
def ro_device():
    """Devices a test made read-only with BLKROSET: made writable again before
    they are detached (the flag would stay with the device number)."""
    devices: List[loopcore.LoopDevice] = []
    yield devices
    for dev in devices:
        if not dev.closed:
            fcntl.ioctl(dev.fileno(), BLKROSET, struct.pack("i", 0))


# --- differential -------------------------------------------------------------------

@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_list_json_matches_losetup_per_device(make_image, capfdbinary, ro_device):
    images = [make_image(name=f'img {i} "q"\\.img' if i == 0 else None) for i in
              range(len(VARIANTS))]
    every = ",".join(losetup_columns())
    column_sets = [[], ["--output-all"], ["-O", every]] + \
        [["-O", c] for c in losetup_columns()] + [["-O", every.lower()], ["-O", "+BACK-INO"]]
    with attached(*zip(images, VARIANTS)) as devices:
        # read-only disk (BLKROSET) without LO_FLAGS_READ_ONLY: sysfs ro says 1.
        # BLKROSET outlives the binding: the fixture below resets it.
        ro_device.append(devices[0])
        fcntl.ioctl(devices[0].fileno(), BLKROSET, struct.pack("i", 1))
        # the real entry point once per device, in-process for the many column sets
        for dev in devices:
            assert loopcore_cmd("list", "--json", "--output-all", dev.path, check=True).stdout \
                == losetup("-l", "--json", "--output-all", dev.path)
        for dev in devices:
            for cols in column_sets:
                ours = run_main(capfdbinary, "list", "--json", *cols, dev.path)
                theirs = losetup("-l", "--json", *cols, dev.path)
                assert ours == theirs, (dev.path, cols)
                # tables: human, raw, no headings
                extras = ([], ["--raw"], ["-n"], ["--raw", "-n"]) if len(cols) != 2 \
                    or cols[1] == every else ([],)
                for extra in extras:
                    ours = run_main(capfdbinary, "list", *extra, *cols, dev.path)
                    assert ours == losetup("-l", *extra, *cols, dev.path), (dev.path, cols, extra)


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_list_all_matches_losetup_field_by_field(make_image):
    images = [make_image() for _ in VARIANTS]
    with attached(*zip(images, VARIANTS)) as devices:
        names = {d.path for d in devices}
        for cols in ([], ["--output-all"], ["-O", ",".join(losetup_columns())]):
            ours_raw = loopcore_cmd("list", "--json", *cols, check=True).stdout
            theirs_raw = losetup("-l", "--json", *cols)
            ours = json.loads(ours_raw)["loopdevices"]
            theirs = {d["name"]: d for d in json.loads(theirs_raw)["loopdevices"]}
            listed = [d["name"] for d in ours]
            assert listed == sorted(listed, key=lambda n: int(n[9:])), "not in number order"
            assert names <= set(listed)
            for obj in ours:
                if obj["name"] not in names:
                    continue
                other = theirs[obj["name"]]
                assert list(obj.items()) == list(other.items()), obj["name"]  # keys, order, values
                for key, value in obj.items():
                    assert type(value) is type(other[key]), key
            # the object texts, byte for byte, and libsmartcols' "},{" separators
            ours_objs, theirs_objs = json_objects(ours_raw), json_objects(theirs_raw)
            for name in names:
                assert ours_objs[name] == theirs_objs[name]
            assert ours_raw.startswith(b'{\n   "loopdevices": [\n      {\n')
            assert ours_raw.endswith(b"\n      }\n   ]\n}\n")
            assert ours_raw.count(b"},{\n") == len(ours) - 1
        # table: every line of ours appears in losetup's table of the same columns
        # only when widths agree, so compare cell by cell via --raw instead
        ours_rows = loopcore_cmd("list", "--raw", "--output-all", check=True).stdout.splitlines()
        theirs_rows = losetup("-l", "--raw", "--output-all").splitlines()
        assert ours_rows[0] == theirs_rows[0]
        for name in names:
            mine = [r for r in ours_rows if r.split(b" ")[0] == name.encode()]
            assert mine and mine == [r for r in theirs_rows if r.split(b" ")[0] == name.encode()]


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_empty_json_and_table_like_losetup(make_image):
    nobody = make_image()
    assert loopcore_cmd("find", "--json", str(nobody), check=True).stdout == \
        losetup("-l", "--json", "-j", str(nobody))
    assert loopcore_cmd("find", str(nobody), check=True).stdout == losetup("-j", str(nobody)) == b""
    assert columns.render_table(["NAME"], []) == ""


def test_every_losetup_column_is_known():
    assert list(columns.COLUMNS) == losetup_columns()


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_attach_options_via_cli(make_image):
    img = make_image(size=4 * MiB)
    out = loopcore_cmd("attach", "-r", "-o", "1KiB", "--sizelimit", "1M", "-b", "4096",
                       "--direct-io=off", "-P", str(img), check=True)
    dev = out.stdout.decode().strip()
    try:
        assert re.fullmatch(r"/dev/loop\d+", dev)
        got = json.loads(losetup("-l", "--json", "--output-all", dev))["loopdevices"][0]
        assert (got["back-file"], got["ro"], got["offset"], got["sizelimit"], got["log-sec"],
                got["dio"], got["partscan"], got["autoclear"]) == \
            (str(img), True, 1024, MiB, 4096, False, True, False)
    finally:
        out = loopcore_cmd("detach", dev)
    assert out.returncode == 0 and out.stdout == out.stderr == b""
    assert loopcore.find(img) == []

    # defaults: read-write, direct I/O where possible, 512-byte blocks
    dev = loopcore_cmd("attach", str(img), check=True).stdout.decode().strip()
    try:
        got = json.loads(losetup("-l", "--json", dev))["loopdevices"][0]
        assert (got["ro"], got["log-sec"], got["offset"]) == (False, 512, 0)
        assert got["dio"] == (sysfs(int(dev[9:]), "loop/dio") == "1")
    finally:
        loopcore_cmd("detach", dev, check=True)


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_attach_autoclear_detaches_when_the_cli_exits(make_image):
    img = make_image()
    with Uevents() as listener:  # the detach's 'change' uevent is queued
        dev = loopcore_cmd("attach", "--autoclear", str(img), check=True).stdout.decode().strip()
        assert re.fullmatch(r"/dev/loop\d+", dev)
        assert listener.wait_until(lambda: not loopcore.find(img)), "autoclear detached it"


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_find_matches_losetup_j(make_image):
    a = make_image()
    with attached((a, {}), (a, dict(offset=4096, size_limit=MiB)), (a, dict(read_only=True))):
        ours = loopcore_cmd("find", str(a), check=True).stdout.splitlines()
        assert ours == sorted(ours, key=lambda line: int(line.split(b":")[0][9:]))
        assert sorted(ours) == sorted(losetup("-j", str(a)).splitlines())
        assert len(ours) == 3
        assert loopcore_cmd("find", "-o", "4K", str(a), check=True).stdout == \
            losetup("-j", str(a), "-o", "4096")
        ours_json = loopcore_cmd("find", "--json", str(a), check=True).stdout
        theirs_json = losetup("-l", "--json", "-j", str(a))
        assert sorted(json_objects(ours_json).items()) == sorted(json_objects(theirs_json).items())
        ours_json = loopcore_cmd("find", "--json", "--output-all", str(a), check=True).stdout
        theirs_json = losetup("-l", "--json", "--output-all", "-j", str(a))
        assert sorted(json_objects(ours_json).items()) == sorted(json_objects(theirs_json).items())
        # deleted: losetup -j matches the " (deleted)" name, loopcore also the plain path
        a.unlink()
        deleted = f"{a} (deleted)"
        ours = loopcore_cmd("find", deleted, check=True).stdout.splitlines()
        assert sorted(ours) == sorted(losetup("-j", deleted).splitlines()) and len(ours) == 3
        assert loopcore_cmd("find", str(a), check=True).stdout.splitlines() == ours


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_info(make_image):
    img = make_image()
    with attached((img, dict(read_only=True, offset=4096, block_size=4096))) as (dev,):
        out = loopcore_cmd("info", dev.path, check=True).stdout.decode()
        assert out.startswith(f"{dev.path} (7:")
        assert f"backing file: {img}" in out and "offset:       4096" in out
        assert "read-only" in out and "block size:   4096" in out
        got = json.loads(loopcore_cmd("info", "--json", str(dev.number), check=True).stdout)
        st = os.stat(img)
        assert got["name"] == dev.path and got["back-file"] == str(img)
        assert got["back-ino"] == st.st_ino
        assert got["back-maj:min"] == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        assert (got["ro"], got["offset"], got["log-sec"]) == (True, 4096, 4096)
        assert got["size"] == kernel_size(dev.number) and got["partitions"] == []
        assert got["diskseq"] == int(sysfs(dev.number, "diskseq"))
        assert loopcore_cmd("info", f"loop{dev.number}", check=True).stdout.decode() == out


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_set_capacity(make_image):
    img = make_image(size=MiB)
    with attached((img, {})) as (dev,):
        os.truncate(img, 3 * MiB)
        assert kernel_size(dev.number) == MiB
        out = loopcore_cmd("set-capacity", dev.path, check=True)
        assert out.stdout == b""
        assert kernel_size(dev.number) == 3 * MiB


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_control_add_remove_get_free():
    n = fresh_number()
    out = loopcore_cmd("control", "add", str(n), check=True)
    try:
        assert out.stdout == f"/dev/loop{n}\n".encode()
        assert os.path.exists(f"/sys/block/loop{n}")
        info = json.loads(loopcore_cmd("info", "--json", f"/dev/loop{n}", check=True).stdout)
        assert info["bound"] is False and info["back-file"] is None
        assert loopcore_cmd("list", "--json", f"/dev/loop{n}", check=True).stdout == \
            losetup("-l", "--json", f"/dev/loop{n}")
        # the error paths of a device that exists but is not bound
        r = loopcore_cmd("detach", f"/dev/loop{n}")
        assert r.returncode == 1
        assert r.stderr == (f"loopcore: /dev/loop{n}: detach failed: "
                            "No such device or address\n").encode()
        r = loopcore_cmd("set-capacity", f"/dev/loop{n}")
        assert r.returncode == 1 and r.stderr.startswith(f"loopcore: /dev/loop{n}: ".encode())
        r = loopcore_cmd("control", "add", str(n))
        assert (r.returncode, r.stderr) == (1, f"loopcore: /dev/loop{n}: File exists\n".encode())
    finally:
        out = loopcore_cmd("control", "remove", f"loop{n}")
    assert out.returncode == 0, out.stderr
    assert not os.path.exists(f"/sys/block/loop{n}")
    r = loopcore_cmd("control", "remove", str(n))
    assert r.returncode == 1 and r.stderr.startswith(f"loopcore: /dev/loop{n}: ".encode())
    free = loopcore_cmd("control", "get-free", check=True).stdout.decode().strip()
    assert re.fullmatch(r"/dev/loop\d+", free)


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_backing_path_longer_than_a_page(tmp_path, monkeypatch):
    """sysfs cannot show such a path: list, info, find and detach --all still
    see the device, named by the 63 bytes of lo_file_name, marked cut."""
    from test_discovery import LO_NAME_SIZE, bound_to_unnamed, deep_image, set_lo_file_name
    with deep_image(tmp_path) as deep, attached((deep.fd, {})) as (dev,):
        set_lo_file_name(dev, deep.path.encode())  # as losetup attaching by path would
        want = deep.path[:LO_NAME_SIZE - 2] + "*"
        # losetup lists it too; ours is the same but for BACK-FILE, which
        # losetup 2.38 leaves empty (on Linux 2.6.37+ it reads only sysfs).
        ours = json.loads(loopcore_cmd("list", "--json", "--output-all", dev.path,
                                       check=True).stdout)["loopdevices"]
        theirs = json.loads(losetup("-l", "--json", "--output-all", dev.path))["loopdevices"]
        assert len(theirs) == 1 and theirs[0]["back-file"] in (None, want)
        assert ours == [dict(theirs[0], **{"back-file": want})]
        every = {d["name"]: d for d in json.loads(
            loopcore_cmd("list", "--json", check=True).stdout)["loopdevices"]}
        assert every[dev.path]["back-file"] == want
        assert dev.path in {d["name"] for d in json.loads(
            losetup("-l", "--json"))["loopdevices"]}
        # info
        got = json.loads(loopcore_cmd("info", "--json", dev.path, check=True).stdout)
        st = os.fstat(deep.fd)
        assert (got["bound"], got["back-file"], got["back-file-partial"], got["back-ino"]) == \
            (True, want, True, st.st_ino)
        text = loopcore_cmd("info", dev.path, check=True).stdout.decode()
        assert f"backing file: {want} (" in text and "not attached" not in text
        # find, through /dev/fd (no path to the image is short enough for stat)
        proc = subprocess.run([sys.executable, "-m", "loopcore", "find", f"/dev/fd/{deep.fd}"],
                              capture_output=True, pass_fds=(deep.fd,), timeout=60)
        assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
        assert proc.stdout.decode() == \
            f"{dev.path}: [{st.st_dev:04d}]:{st.st_ino} ({want})\n"
        # detach --all picks it: recorded, not done (other devices are not ours)
        picked: List[str] = []
        monkeypatch.setattr(loopcore.loop, "detach",
                            lambda dev, wait=None: picked.append(dev) or True)
        assert cli.main(["detach", "--all"]) == 0
        assert dev.path in picked
        monkeypatch.undo()
        # and detaching it by name works (once our own fd on it is closed too)
        with Uevents() as listener:  # the detach's 'change' uevent is queued
            loopcore_cmd("detach", dev.path, check=True)
            dev.close()
            assert listener.wait_until(lambda: not bound_to_unnamed(st)), \
                "loopcore detach unbound it"


# --- sizes ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("0", 0), ("4096", 4096), ("0x1000", 4096), ("010", 8), ("1K", 1024), ("1k", 1024),
    ("1KiB", 1024), ("1KB", 1000), ("1kb", 1000), ("2M", 2 * MiB), ("1MiB", MiB),
    ("1MB", 10 ** 6), ("1G", 1 << 30), ("1GiB", 1 << 30), ("1.5M", 3 * MiB // 2),
    ("0.5K", 512), ("1T", 1 << 40),
])
def test_parse_size(text, value):
    assert arguments.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "K", "1X", "1KiBx", "1.5", "abc", "1 K", "1e3",
                                  "99999999999999999999", "16E"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        arguments.parse_size(text)


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_detach_several_is_all_or_nothing(make_image):
    # as attach_many: a DEV that cannot be detached (not a loop device)
    # is found before any is detached
    img = make_image()
    with attached((img, {})) as (dev,):
        dev.close()  # keep it bound, let the CLI detach it
        r = loopcore_cmd("detach", dev.path, "/dev/null")
        assert r.returncode == 1
        assert one_line(r.stderr).startswith("loopcore: /dev/null: detach failed")
        assert [r.path for r in loopcore.find(img)] == [dev.path]
        loopcore.detach(dev.path)


# --- losetup's other attach forms and the partitions command ----------------------

@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_attach_dev_file_find_show_and_nooverlap(make_image):
    """``attach DEV FILE`` binds that device (made if missing), ``-f --show``
    are accepted, ``-L`` prints the device already over the same bytes
    (and does not detach it when its output is lost) and refuses an
    overlapping range."""
    img = make_image(size=4 * MiB)
    n = fresh_number()
    r = loopcore_cmd("attach", f"/dev/loop{n}", str(img), check=True)
    try:
        assert r.stdout == f"/dev/loop{n}\n".encode()
        assert [d.number for d in loopcore.find(img)] == [n]
        again = loopcore_cmd("attach", f"loop{n}", str(img))
        assert again.returncode == 1 and b"bound" in again.stderr
        reused = loopcore_cmd("attach", "-f", "--show", "-L", str(img), check=True)
        assert reused.stdout == f"/dev/loop{n}\n".encode()
        # a reused device is not ours: losing its printed name must not detach it
        lost = loopcore_redirected(["attach", "-L", str(img)], stdout="full")
        assert lost.returncode == cli.EXIT_FAILURE
        overlap = loopcore_cmd("attach", "-L", "-o", "1M", str(img))
        assert overlap.returncode == 1 and b"overlaps" in overlap.stderr
        assert [d.number for d in loopcore.find(img)] == [n]
        other = loopcore_cmd("attach", "-f", "--show", str(img), check=True).stdout
        loopcore_cmd("detach", other.decode().strip(), check=True)
    finally:
        loopcore_cmd("detach", str(n))
        loopcore_cmd("control", "remove", str(n))
    assert loopcore.find(img) == []
    assert loopcore_cmd("attach", str(n), "b", "c").returncode == 2  # DEV takes one FILE


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_partitions_command_adds_lists_and_removes(make_image):
    img = make_image(size=32 * MiB)
    subprocess.run(["sfdisk", "-q", str(img)], input="label: gpt\n,8M\n,8M,L,\n",
                   text=True, check=True)
    with attached((img, {})) as (dev,):
        listed = json.loads(loopcore_cmd("partitions", "list", "--json", dev.path,
                                         check=True).stdout)
        assert listed["label"] == "gpt"
        assert [(p["number"], p["start"], p["size"], p["node"]) for p in listed["partitions"]] \
            == [(1, MiB, 8 * MiB, f"{dev.path}p1"), (2, 9 * MiB, 8 * MiB, f"{dev.path}p2")]
        added = loopcore_cmd("partitions", "add", dev.path, check=True).stdout.decode().split()
        assert added == [f"{dev.path}p1", f"{dev.path}p2"]
        assert all(os.path.exists(f"/sys/block/loop{dev.number}/loop{dev.number}p{i}")
                   for i in (1, 2))
        removed = loopcore_cmd("partitions", "remove", dev.path,
                               check=True).stdout.decode().split()
        assert removed == added
        assert not os.path.exists(f"/sys/block/loop{dev.number}/loop{dev.number}p1")
    r = loopcore_cmd("partitions", "list", "/dev/null")
    assert r.returncode == 1 and r.stderr.startswith(b"loopcore: /dev/null")

"""The loopcore CLI: differential against losetup, every subcommand, every error path.

Devices are compared one by one (other processes list their own devices
in the same `losetup -l` output), and only devices bound to files these
tests made are looked at.
"""
from __future__ import annotations

import fcntl
import json
import os
import random
import re
import struct
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest

import loopcore
from loopcore import cli

from conftest import VARIANTS, attached, bound_under, kernel_size, sysfs
from uevents import UeventListener

MiB = 1 << 20
BLKROSET = 0x125D


def loopcore_cmd(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m loopcore ARGS`` (the real entry point), bytes out."""
    proc = subprocess.run([sys.executable, "-m", "loopcore", *args], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    if check:
        assert proc.returncode == 0, proc.stderr.decode()
    return proc


def run_main(capfdbinary, *args: str) -> bytes:
    """cli.main in this process (fast); stdout bytes; it must succeed."""
    assert cli.main(list(args)) == 0, capfdbinary.readouterr().err
    out, err = capfdbinary.readouterr()
    assert err == b""
    return out


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
    assert cli.render_table(["NAME"], []) == ""


def test_every_losetup_column_is_known():
    assert list(cli.COLUMNS) == losetup_columns()


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_attach_options_via_cli(make_image):
    img = make_image(size=4 * MiB)
    out = loopcore_cmd("attach", "-r", "-o", "1KiB", "--sizelimit", "1M", "-b", "4096",
                       "--direct-io", "off", "-P", str(img), check=True)
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
    with UeventListener() as listener:  # the detach's 'change' uevent is queued
        dev = loopcore_cmd("attach", "--autoclear", str(img), check=True).stdout.decode().strip()
        assert re.fullmatch(r"/dev/loop\d+", dev)
        listener.wait_until(lambda: not loopcore.find(img), "autoclear detached it")


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


def _free_high_number() -> int:
    for _ in range(100):
        n = random.randrange(30000, 40000)
        if not os.path.exists(f"/sys/block/loop{n}"):
            return n
    raise AssertionError("no free loop number")


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_control_add_remove_get_free():
    n = _free_high_number()
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
        monkeypatch.setattr(loopcore.loop, "detach", picked.append)
        assert cli.main(["detach", "--all"]) == 0
        assert dev.path in picked
        monkeypatch.undo()
        # and detaching it by name works (once our own fd on it is closed too)
        with UeventListener() as listener:  # the detach's 'change' uevent is queued
            loopcore_cmd("detach", dev.path, check=True)
            dev.close()
            listener.wait_until(lambda: not bound_to_unnamed(st), "loopcore detach unbound it")


# --- sizes ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("0", 0), ("4096", 4096), ("0x1000", 4096), ("010", 8), ("1K", 1024), ("1k", 1024),
    ("1KiB", 1024), ("1KB", 1000), ("1kb", 1000), ("2M", 2 * MiB), ("1MiB", MiB),
    ("1MB", 10 ** 6), ("1G", 1 << 30), ("1GiB", 1 << 30), ("1.5M", 3 * MiB // 2),
    ("0.5K", 512), ("1T", 1 << 40),
])
def test_parse_size(text, value):
    assert cli.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "K", "1X", "1KiBx", "1.5", "abc", "1 K", "1e3",
                                  "99999999999999999999", "16E"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        cli.parse_size(text)


# --- error paths -----------------------------------------------------------------------

def one_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert text.startswith("loopcore"), text
    return text.rstrip("\n")


USAGE_ERRORS = [
    [],
    ["frobnicate"],
    ["--bogus"],
    ["attach"],
    ["attach", "-o", "abc", "/x"],
    ["attach", "--sizelimit", "1Q", "/x"],
    ["attach", "-b", "", "/x"],
    ["attach", "--direct-io", "maybe", "/x"],
    ["attach", "/x", "/y"],                # DEV FILE, and /x is no loop device
    ["attach", "/dev/loop0", "/x", "/y"],
    ["detach"],
    ["detach", "--all", "/dev/loop0"],
    ["list", "--all", "/dev/loop0"],
    ["list", "--bogus"],
    ["find"],
    ["find", "-o", "x", "/x"],
    ["info"],
    ["set-capacity"],
    ["control"],
    ["control", "frob"],
    ["control", "add"],
    ["control", "remove"],
    ["control", "add", "abc"],
    ["control", "add", "-1"],
    ["control", "add", "2147483648"],      # past the C int LOOP_CTL_ADD takes
    ["control", "remove", "loop99999999999999999999"],
    ["control", "get-free", "3"],
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=lambda a: " ".join(a) or "<none>")
def test_usage_errors_exit_2(argv):
    r = loopcore_cmd(*argv)
    assert r.returncode == 2, r.stderr
    assert r.stdout == b""
    one_line(r.stderr)


def test_control_usage_errors_before_opening_loop_control(monkeypatch, capsys):
    """Usage errors come before /dev/loop-control is opened, so they read the
    same as root, as a user and in a container without the node."""
    def opened() -> None:
        raise AssertionError("/dev/loop-control opened before the arguments were checked")
    monkeypatch.setattr(loopcore.loop, "LoopControl", opened)
    for argv in (["control", "add"], ["control", "remove"], ["control", "get-free", "3"]):
        assert cli.main(argv) == cli.EXIT_USAGE, argv
        err = capsys.readouterr().err
        assert err.startswith("loopcore: control ") and err.count("\n") == 1, err


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_runtime_errors_exit_1(tmp_path, make_image):
    img = make_image(size=MiB)
    missing = tmp_path / "missing.img"
    cases: List[Tuple[List[str], str]] = [
        (["attach", str(missing)], f"loopcore: {missing}: No such file or directory"),
        (["attach", str(tmp_path)], f"loopcore: {tmp_path}: "),
        (["attach", "-b", "1000", str(img)], "block_size must be a power of two"),
        (["attach", "-o", "2M", str(img)], f"loopcore: {img}: offset 2097152 is "),
        (["detach", "/dev/null"], "loopcore: /dev/null: detach failed: not a loop device"),
        (["detach", str(missing)],
         f"loopcore: {missing}: detach failed: No such file or directory"),
        (["list", "/dev/null"], "loopcore: /dev/null: not a loop device"),
        (["list", str(missing)], f"loopcore: {missing}: No such file or directory"),
        (["list", "-O", "NAME,FOO"], "loopcore: unknown column: FOO"),
        (["list", "loop99999999"], "loopcore: loop99999999: no such loop device"),
        (["info", "/dev/null"], "loopcore: /dev/null: not a loop device"),
        (["info", "99999999"], "loopcore: 99999999: no such loop device"),
        (["set-capacity", "/dev/null"], "loopcore: /dev/null: not a loop device"),
        (["set-capacity", str(missing)], f"loopcore: {missing}: No such file or directory"),
        (["find", "", "--json"], "loopcore: backing path is empty"),
        (["control", "remove", "99999999"], "loopcore: /dev/loop99999999: "),
    ]
    for argv, message in cases:
        r = loopcore_cmd(*argv)
        assert r.returncode == 1, (argv, r.stderr)
        assert r.stdout == b"", argv
        line = one_line(r.stderr)
        assert line.startswith(message) or message in line, (argv, line)
    assert loopcore.find(img) == []


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_detach_several_continues_past_errors(make_image):
    img = make_image()
    with attached((img, {})) as (dev,):
        dev.close()  # keep it bound, let the CLI detach it
        r = loopcore_cmd("detach", "/dev/null", dev.path)
        assert r.returncode == 1
        assert one_line(r.stderr).startswith("loopcore: /dev/null: detach failed")
        assert loopcore.find(img) == []


# --- output that cannot be written ---------------------------------------------------------
# stdout closed (sys.stdout is None), full (ENOSPC) or a pipe nobody reads
# (EPIPE; Python ignores SIGPIPE), and stderr likewise: no traceback, no
# "Exception ignored" at exit, no hang.  attach and control add, which make
# what they print, undo it when they cannot print it.

# bash redirections of file descriptor {fd}; {pipe} is the write end of a pipe
# whose read end is closed.
REDIRECTS = {
    "keep": "",
    "full": "{fd}>/dev/full",
    "closed": "{fd}>&-",
    "broken-pipe": "{fd}>&{pipe}",
}
# How the one line on stderr names each failure of stdout.
STDOUT_REASONS = {"full": "No space left on device", "closed": "standard output is closed",
                  "broken-pipe": "Broken pipe"}


def loopcore_redirected(args: List[str], stdout: str = "keep",
                        stderr: str = "keep") -> subprocess.CompletedProcess:
    """``python -m loopcore ARGS`` through bash (dash takes one-digit fds
    only), stdin closed (no input) and stdout/stderr redirected as REDIRECTS
    names; what is kept is captured."""
    read_end, pipe = os.pipe()
    os.close(read_end)
    try:
        redirs = ["0<&-"] + [REDIRECTS[mode].format(fd=fd, pipe=pipe)
                             for fd, mode in ((1, stdout), (2, stderr))] + [f"{pipe}>&-"]
        return subprocess.run(
            ["bash", "-c", 'exec "$@" ' + " ".join(redirs), "bash",
             sys.executable, "-m", "loopcore", *args],
            capture_output=True, pass_fds=(pipe,), timeout=60)
    finally:
        os.close(pipe)


def assert_clean_stderr(stderr: bytes, context: object) -> List[str]:
    """At most one line, no traceback, nothing from the interpreter's exit."""
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text and "Exception ignored" not in text, (context, text)
    lines = text.splitlines()
    assert len(lines) <= 1 and text == "".join(f"{line}\n" for line in lines), (context, text)
    assert all(line.startswith("loopcore: ") for line in lines), (context, text)
    return lines


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("stderr", ["keep", "closed"])
@pytest.mark.parametrize("stdout", ["full", "closed", "broken-pipe"])
def test_attach_that_cannot_print_detaches(make_image, tmp_path, stdout, stderr):
    img = make_image()
    r = loopcore_redirected(["attach", str(img)], stdout=stdout, stderr=stderr)
    # Nobody learnt which device it was: it must not stay bound.
    assert bound_under(tmp_path) == {}
    assert r.returncode == 1, r.stderr
    lines = assert_clean_stderr(r.stderr, stdout)
    if stderr == "keep":
        assert len(lines) == 1
        assert re.fullmatch(r"loopcore: /dev/loop\d+: cannot print the device's name "
                            rf"\({STDOUT_REASONS[stdout]}\); detached it again", lines[0]), lines[0]
    else:
        assert lines == []


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("stdout", ["full", "closed", "broken-pipe"])
def test_control_add_that_cannot_print_removes(stdout):
    n = _free_high_number()
    try:
        r = loopcore_redirected(["control", "add", str(n)], stdout=stdout)
        assert not os.path.exists(f"/sys/block/loop{n}"), "the device it could not print stayed"
        assert r.returncode == 1
        assert assert_clean_stderr(r.stderr, stdout) == [
            f"loopcore: /dev/loop{n}: cannot print the device's name "
            f"({STDOUT_REASONS[stdout]}); removed it again"]
    finally:
        if os.path.exists(f"/sys/block/loop{n}"):
            with loopcore.LoopControl() as ctl:
                ctl.remove(n)



@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_every_subcommand_with_broken_stdout_or_stderr(make_image):
    """Each subcommand under each broken stream: the exit status it would
    have (1 where its output was lost), at most one line on stderr."""
    from concurrent.futures import ThreadPoolExecutor
    img = make_image()
    broken = ("full", "closed", "broken-pipe")
    with attached((img, {})) as (dev,):
        # (argv, writes to stdout, exit status with every stream fine)
        printing: List[Tuple[List[str], bool, int]] = [
            (["list"], True, 0), (["list", "--json", dev.path], True, 0),
            (["list", "--raw", "-n"], True, 0), (["find", str(img)], True, 0),
            (["find", "--json", str(img)], True, 0), (["info", dev.path], True, 0),
            (["info", "--json", dev.path], True, 0), (["control", "get-free"], True, 0),
            (["--help"], True, 0), (["--version"], True, 0), (["dm", "--help"], True, 0),
        ]
        silent: List[Tuple[List[str], bool, int]] = [
            (["set-capacity", dev.path], False, 0), (["detach", "/dev/null"], False, 1),
            (["list", "/dev/null"], False, 1), (["frobnicate"], False, 2),
        ]
        # stdout broken for every command; stderr broken for those that print
        # errors (and one that succeeds); both for a few.
        runs = [(argv, writes, status, out, "keep") for argv, writes, status in printing + silent
                for out in broken]
        runs += [(argv, writes, status, "keep", err) for argv, writes, status in
                 silent[1:] + printing[:1] for err in broken]
        runs += [(argv, writes, status, mode, mode) for argv, writes, status in
                 (printing[0], printing[8], silent[1]) for mode in broken]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda run: loopcore_redirected(
                run[0], stdout=run[3], stderr=run[4]), runs))
        for (argv, writes, status, out, err), r in zip(runs, results):
            context = (argv, out, err)
            lost = writes and out != "keep"
            assert r.returncode == (cli.EXIT_FAILURE if lost else status), (context, r.stderr)
            lines = assert_clean_stderr(r.stderr, context)
            if err == "keep" and lost and out != "broken-pipe":
                assert len(lines) == 1 and STDOUT_REASONS[out] in lines[0], (context, lines)
        assert loopcore.find(img)[0].number == dev.number  # still bound: nothing undid it


# --- extension hook ------------------------------------------------------------------------

EXTENSION = '''
def add_parser(subparsers):
    p = subparsers.add_parser("{name}", help="test extension")
    p.add_argument("--fail", choices=("oserror", "valueerror"))
    p.set_defaults(func=handler)

def handler(args):
    import errno
    if args.fail == "oserror":
        raise OSError(errno.EIO, "Input/output error", "/dev/ext0")
    if args.fail == "valueerror":
        raise ValueError("bad value for ext")
    print("extension ran")
    return 3
'''


@pytest.fixture
def extension_dir(tmp_path, monkeypatch):
    pkg = tmp_path / "lcext"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text(EXTENSION.format(name="ext-good"))
    (pkg / "broken.py").write_text("import lcext.not_there_either\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return pkg


def test_extension_subcommands(extension_dir, monkeypatch, capsys):
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES",
                        {"ext-good": "lcext.good", "ext-broken": "lcext.broken"})
    assert cli.main(["ext-good"]) == 3
    assert capsys.readouterr().out == "extension ran\n"
    assert cli.main(["ext-good", "--fail", "oserror"]) == 1
    assert capsys.readouterr().err == "loopcore: /dev/ext0: Input/output error\n"
    assert cli.main(["ext-good", "--fail", "valueerror"]) == 1
    assert capsys.readouterr().err == "loopcore: bad value for ext\n"
    # only the named extension is imported: the broken one is not touched
    # by a core subcommand or by another extension's (a usage error runs the
    # core handler without needing /dev/loop-control, so this holds anywhere)...
    assert cli.main(["control", "add"]) == cli.EXIT_USAGE
    capsys.readouterr()
    # ...but a module that fails to import is a bug, not a missing command
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser(["ext-broken"])
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser([])  # help lists every extension


def test_core_subcommands_do_not_import_extensions():
    import subprocess
    import sys
    code = ("import sys, loopcore.cli as c; c.main(['control', 'get-free']); "
            "print(sorted(m for m in sys.modules if m in ('loopcore.dm',)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[]"


def test_version_from_one_source():
    from importlib.metadata import version

    from loopcore._version import __version__
    assert loopcore.__version__ == __version__ == version("loopcore")
    for flag in ("--version", "-V"):
        proc = loopcore_cmd(flag)
        assert proc.returncode == 0
        assert proc.stdout.decode() == f"loopcore {__version__}\n"


# --- losetup's other attach forms and the partitions command ----------------------

@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_attach_dev_file_find_show_and_nooverlap(make_image):
    """``attach DEV FILE`` binds that device (made if missing), ``-f --show``
    are accepted, ``-L`` prints the device already over the same bytes
    (and does not detach it when its output is lost) and refuses an
    overlapping range."""
    img = make_image(size=4 * MiB)
    n = _free_high_number()
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
    assert loopcore_cmd("attach", "a", "b", "c").returncode == 2


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

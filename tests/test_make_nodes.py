"""A /dev without devtmpfs (a container's static tmpfs): the kernel makes
loopN but no /dev/loopN appears.  Without the opt-in that is one clear
FileNotFoundError naming the node and the way out; with make_nodes=True,
--make-nodes or LOOPCORE_MAKE_NODES=1 the nodes are made from sysfs, and
the partition nodes made are removed at detach.

Each case runs in a child process that unshares its mount namespace and
mounts a tmpfs on /dev holding only loop-control, so this process's /dev
is untouched; the child prints what it saw as JSON."""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Dict, Optional

import pytest

from conftest import run_child

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]

# Enter a private mount namespace with a bare tmpfs /dev (loop-control only).
_STATIC_DEV = """
import ctypes, grp, json, os, stat, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x20000, 0x4000, 1 << 18
if libc.unshare(CLONE_NEWNS) != 0:
    raise OSError(ctypes.get_errno(), "unshare")
if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
    raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
if libc.mount(b"tmpfs", b"/dev", b"tmpfs", 0, b"mode=0755") != 0:
    raise OSError(ctypes.get_errno(), "mount tmpfs /dev")
os.mknod("/dev/loop-control", stat.S_IFCHR | 0o600, os.makedev(10, 237))
os.mknod("/dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # for subprocess
import loopcore

def node(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return dict(block=stat.S_ISBLK(st.st_mode), mode=stat.S_IMODE(st.st_mode),
                gid=st.st_gid, rdev=[os.major(st.st_rdev), os.minor(st.st_rdev)])

def sysfs_dev(name):
    with open(f"/sys/class/block/{name}/dev") as f:
        return [int(x) for x in f.read().split(":")]

def failure(call):
    try:
        call()
    except OSError as e:
        return dict(type=type(e).__name__, errno=e.errno, filename=e.filename,
                    strerror=e.strerror, loopcore=isinstance(e, loopcore.Error))
    return None

img = sys.argv[1]
out = {}
"""

_DISK_GID = __import__("grp").getgrnam("disk").gr_gid


def in_static_dev(image: Path, code: str, env: Optional[Dict[str, str]] = None) -> dict:
    return run_child(_STATIC_DEV.replace("sys.argv[1]", repr(str(image)))
                     + code + "\nprint(json.dumps(out))\n", env=env)


@pytest.mark.parametrize("legacy", [None, True])
def test_missing_node_is_one_clear_error(image: Path, legacy: Optional[bool]) -> None:
    out = in_static_dev(image, f"""
out["error"] = failure(lambda: loopcore.attach(img, legacy={legacy!r}))
out["nodes"] = sorted(os.listdir("/dev"))
""")
    err = out["error"]
    assert err is not None and err["loopcore"], out
    assert err["type"] == "FileNotFoundError" and err["errno"] == errno.ENOENT
    assert err["filename"].startswith("/dev/loop") and err["filename"][9:].isdigit()
    number = err["filename"][9:]
    assert f"the kernel made loop{number}" in err["strerror"]
    for remedy in ("make_nodes=True", "--make-nodes", "LOOPCORE_MAKE_NODES=1"):
        assert remedy in err["strerror"]
    assert out["nodes"] == ["loop-control", "null"]  # nothing made without the opt-in


def test_make_nodes_makes_the_device_node(image: Path) -> None:
    out = in_static_dev(image, """
dev = loopcore.attach(img, make_nodes=True)
out["number"] = dev.number
out["node"] = node(dev.path)
out["sysfs"] = sysfs_dev(f"loop{dev.number}")
out["backing"] = dev.backing_file
out["released"] = dev.detach()
out["after"] = node(dev.path)
""")
    assert out["node"] == dict(block=True, mode=0o660, gid=_DISK_GID, rdev=out["sysfs"])
    assert out["backing"] == str(image)
    assert out["released"] is True
    assert out["after"] is not None  # the device outlives its binding; so does its node


def test_partition_nodes_are_made_and_removed_at_detach(image: Path) -> None:
    out = in_static_dev(image, """
from conftest import blkpg_partition
first = loopcore.attach(img, make_nodes=True)
number, path = first.number, first.path
first.close()
MiB = 1 << 20
blkpg_partition(path, 1, 1, 1 * MiB, 2 * MiB)
blkpg_partition(path, 1, 2, 3 * MiB, 2 * MiB)
try:
    dev = loopcore.open(number, make_nodes=True)
    out["p1"] = node(f"{path}p1")
    out["p2"] = node(f"{path}p2")
    out["sysfs"] = [sysfs_dev(f"loop{number}p1"), sysfs_dev(f"loop{number}p2")]
finally:
    blkpg_partition(path, 2, 1)
    blkpg_partition(path, 2, 2)
out["released"] = dev.detach()
out["after"] = [node(f"{path}p1"), node(f"{path}p2")]
""")
    for made, rdev in zip((out["p1"], out["p2"]), out["sysfs"]):
        assert made == dict(block=True, mode=0o660, gid=_DISK_GID, rdev=rdev)
    assert out["released"] is True
    assert out["after"] == [None, None]


def test_environment_variable_turns_it_on(image: Path) -> None:
    out = in_static_dev(image, """
dev = loopcore.attach(img)
out["node"] = node(dev.path)
dev.detach()
""", env={"LOOPCORE_MAKE_NODES": "1"})
    assert out["node"] is not None and out["node"]["block"]


def test_attach_many_makes_each_node(make_image) -> None:
    images = [make_image() for _ in range(3)]
    out = in_static_dev(images[0], f"""
devs = loopcore.attach_many({[str(p) for p in images]!r}, make_nodes=True)
out["nodes"] = [node(d.path) is not None for d in devs]
out["backing"] = [d.backing_file for d in devs]
loopcore.detach_many(devs)
""")
    assert out["nodes"] == [True] * 3
    assert out["backing"] == [str(p) for p in images]


def test_cli_make_nodes(image: Path) -> None:
    out = in_static_dev(image, """
def cli(*args):
    proc = subprocess.run([sys.executable, "-m", "loopcore", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr
out["plain"] = cli("attach", img)
out["made"] = cli("attach", "--make-nodes", img)
path = out["made"][1].strip()
out["node"] = node(path) if path else None
out["detach"] = cli("detach", path) if path else None
""")
    code, stdout, stderr = out["plain"]
    assert (code, stdout) == (1, "")
    assert stderr.count("\n") == 1 and "--make-nodes" in stderr
    code, stdout, stderr = out["made"]
    assert code == 0 and stdout.startswith("/dev/loop") and stderr == "", out
    assert out["node"]["block"]
    assert out["detach"] == [0, "", ""]


def test_chosen_device_made_with_its_node_or_refused_and_removed(image: Path,
                                                                 new_number: int) -> None:
    out = in_static_dev(image, f"""
out["error"] = failure(lambda: loopcore.attach(img, number={new_number}))
out["left"] = os.path.exists("/sys/block/loop{new_number}")
dev = loopcore.attach(img, number={new_number}, make_nodes=True)
out["node"] = node(dev.path)
dev.detach()
""")
    assert out["error"]["errno"] == errno.ENOENT
    # the node missing first: the LOOP_CONFIGURE probe's (GET_FREE's) or the chosen one
    assert out["error"]["filename"].startswith("/dev/loop")
    assert out["left"] is False  # the device it made for the failed attach is gone
    assert out["node"]["block"] and out["node"]["mode"] == 0o660

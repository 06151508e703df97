"""Helpers for the device-mapper VM tests (imported by conftest and tests)."""
from __future__ import annotations

import argparse
import errno
import mmap
import os
import subprocess
from pathlib import Path
from typing import Dict, Optional, Set, Tuple

import pytest

import loopcore
from loopcore import dm
from loopcore.cli import dm as dm_cli
from loopcore.cli import main

PREFIX = "lct-"
DMSETUP = "/sbin/dmsetup" if os.path.exists("/sbin/dmsetup") else "dmsetup"


class Loop:
    """A loop device the test attached, and its backing file."""

    def __init__(self, device: loopcore.LoopDevice, backing: Path) -> None:
        self.device = device
        self.backing = backing
        self.devnum = device.devnum
        self.path = device.path


def backing_bytes(loop: Loop, offset: int, length: int) -> bytes:
    """Bytes of a loop device's backing file, read from the file itself."""
    with open(loop.backing, "rb") as f:
        f.seek(offset)
        return f.read(length)


def write_dm(name: str, offset: int, data: bytes) -> None:
    fd = os.open(os.path.join(dm.DEV_DIR, name), os.O_WRONLY)
    try:
        assert os.pwrite(fd, data, offset) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_dm(name: str, offset: int, length: int) -> bytes:
    # The guest runs udev: on the change event of a resume its dm rules may
    # replace the /dev/mapper node loopcore made, which leaves it missing
    # for a moment: wait for udev's queue to drain, then open it again.
    path = os.path.join(dm.DEV_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        subprocess.run(["udevadm", "settle", "--timeout=60"], check=False)
        fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def dmsetup(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run dmsetup without udev (it then makes /dev/mapper nodes itself)."""
    env = dict(os.environ, DM_DISABLE_UDEV="1")
    return subprocess.run([DMSETUP, "--noudevsync", *args], capture_output=True, text=True,
                          env=env, check=check, stdin=subprocess.DEVNULL)


def cli(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run ``loopcore dm ARGV`` through the CLI contract; return its stdout."""
    parser = argparse.ArgumentParser(prog="loopcore")
    sub = parser.add_subparsers(dest="command")
    dm_cli.add_parser(sub)
    args = parser.parse_args(["dm", *argv])
    capsys.readouterr()
    assert args.func(args) == 0
    return capsys.readouterr().out


def enxio(exc_info: pytest.ExceptionInfo) -> bool:
    return exc_info.value.errno == errno.ENXIO


def node_devnum(name: str) -> Optional[int]:
    try:
        st = os.stat(os.path.join(dm.DEV_DIR, name))
    except FileNotFoundError:
        return None
    return st.st_rdev


def our_devices(mapper: dm.DeviceMapper) -> Dict[str, int]:
    return {d.name: d.devnum for d in mapper.list_devices() if d.name.startswith(PREFIX)}


# --- crash tests (tests/vm/test_crash_points_vm.py) -----------------------------------

def write_direct(name: str, offset: int, data: bytes) -> None:
    """Write ``data`` to dm device ``name`` with O_DIRECT, then fsync: once
    this returns the write is acknowledged (on the device, not in a cache
    of ours).  ``offset`` and ``len(data)`` are multiples of 4096."""
    fd = os.open(os.path.join(dm.DEV_DIR, name), os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    buf = mmap.mmap(-1, len(data))   # O_DIRECT wants an aligned buffer: an mmap is
    try:
        buf[:] = data
        assert os.pwritev(fd, [buf], offset) == len(data)
        os.fsync(fd)
    finally:
        buf.close()
        os.close(fd)


def read_direct(name: str, offset: int, length: int) -> bytes:
    """Read dm device ``name`` with O_DIRECT (no page cache of the reader's)."""
    fd = os.open(os.path.join(dm.DEV_DIR, name), os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    buf = mmap.mmap(-1, length)
    try:
        n = os.preadv(fd, [buf], offset)
        return bytes(buf[:n])
    finally:
        buf.close()
        os.close(fd)


def semaphores() -> Set[Tuple[str, str]]:
    """The SysV semaphore sets (key, semid): where libdevmapper's udev cookies
    live (loopcore sends cookies without one)."""
    with open("/proc/sysvipc/sem") as f:
        return {tuple(line.split()[:2]) for line in f.readlines()[1:]
                if line.strip()}


def udev_settle() -> None:
    """Wait until udev has handled every event queued so far."""
    subprocess.run(["udevadm", "settle", "--timeout=60"], check=False)


def loopcore_cli(capsys: pytest.CaptureFixture, *argv: str) -> Tuple[int, str, str]:
    """``loopcore ARGV`` through its entry point: (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err

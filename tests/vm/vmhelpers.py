"""Helpers for the device-mapper VM tests (imported by conftest and tests)."""
from __future__ import annotations

import argparse
import errno
import os
import subprocess
from pathlib import Path
from typing import Dict, Optional

import pytest

import loopcore
from loopcore import dm
from loopcore.cli import dm as dm_cli

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

"""The pure-Python contenders: what a careful user would write without loopcore.

They do the same syscalls as the C floor (fcntl.ioctl and os.open/os.read),
so the gap between them and the floor is the interpreter's, and the gap
between loopcore and them is what loopcore's C shim buys (or costs).
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
from typing import Dict, List, Optional

LOOP_CLR_FD = 0x4C01
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_DIRECT_IO = 16
# struct loop_config: fd, block_size, loop_info64 (232 bytes), 8 reserved u64
LOOP_CONFIG = struct.Struct("=II5Q4I64s64s32s2Q8Q")
_ZEROS_AFTER_FLAGS = (b"", b"", b"", 0, 0) + (0,) * 8

# What list_devices() reads for each bound device.
DEVICE_ATTRS = ("ro", "queue/logical_block_size", "size", "dev", "diskseq")
LOOP_ATTRS = ("offset", "sizelimit", "autoclear", "partscan", "dio")


class FcntlCycler:
    """attach+detach cycles with fcntl.ioctl: GET_FREE, open, LOOP_CONFIGURE,
    LOOP_CLR_FD, close.  The backing file is opened once, as in the C floor."""

    def __init__(self, backing: str, direct_io: bool) -> None:
        self.ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        self.backing = os.open(backing, os.O_RDWR | os.O_CLOEXEC)
        flags = LO_FLAGS_DIRECT_IO if direct_io else 0
        self.config = LOOP_CONFIG.pack(self.backing, 0, 0, 0, 0, 0, 0, 0, 0, 0, flags,
                                       *_ZEROS_AFTER_FLAGS)
        self.retries = 0

    def cycle(self) -> None:
        """One attach+detach; retries the races with a fresh GET_FREE."""
        for _ in range(1000):
            number = fcntl.ioctl(self.ctl, LOOP_CTL_GET_FREE)
            try:
                dev = os.open(f"/dev/loop{number}", os.O_RDWR | os.O_CLOEXEC)
            except OSError as e:
                if e.errno in (errno.ENXIO, errno.ENOENT):
                    self.retries += 1  # torn down by someone else
                    continue
                raise
            try:
                try:
                    fcntl.ioctl(dev, LOOP_CONFIGURE, self.config)
                except OSError as e:
                    if e.errno in (errno.EBUSY, errno.EAGAIN):
                        self.retries += 1  # taken after GET_FREE
                        continue
                    raise
                fcntl.ioctl(dev, LOOP_CLR_FD, 0)
                return
            finally:
                os.close(dev)
        raise OSError(errno.EBUSY, "no free loop device after 1000 attempts")

    def close(self) -> None:
        os.close(self.backing)
        os.close(self.ctl)


def _read(path: str) -> Optional[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 8192).rstrip(b"\n")
    except OSError:
        return None
    finally:
        os.close(fd)


def _loop_dirs() -> List[str]:
    return [e for e in os.listdir("/sys/block") if e.startswith("loop")]


def _describe(name: str, backing: bytes, st: Optional[os.stat_result]) -> Dict[str, object]:
    base = f"/sys/block/{name}/"
    device: Dict[str, object] = {"name": name, "backing_file": os.fsdecode(backing)}
    if st is not None:
        device["backing_dev"], device["backing_ino"] = st.st_dev, st.st_ino
    for attr in LOOP_ATTRS:
        device[attr] = _read(base + "loop/" + attr)
    for attr in DEVICE_ATTRS:
        device[attr] = _read(base + attr)
    return device


def sysfs_list() -> List[Dict[str, object]]:
    """Every bound loop device with the attributes list_devices() reports."""
    devices = []
    for name in _loop_dirs():
        backing = _read(f"/sys/block/{name}/loop/backing_file")
        if not backing:
            continue
        try:
            st: Optional[os.stat_result] = os.stat(backing)
        except OSError:
            st = None
        devices.append(_describe(name, backing, st))
    return devices


def sysfs_find(backing: str) -> List[Dict[str, object]]:
    """The loop devices bound to backing, matched by (st_dev, st_ino)."""
    want = os.stat(backing)
    found = []
    for name in _loop_dirs():
        path = _read(f"/sys/block/{name}/loop/backing_file")
        if not path:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_ino == want.st_ino and st.st_dev == want.st_dev:
            found.append(_describe(name, path, st))
    return found

"""Every read of /sys in loopcore, in one place.

The bulk scan of all loop devices is one C call (``lc_scan_loops``); what
is read here is the per-device remainder: a loop device's backing path,
its partitions, the kernel name behind a device number, read-ahead.
"""
from __future__ import annotations

import errno
import os
from typing import Dict, List, Optional, Tuple

__all__ = ["SYS_BLOCK", "dev_block_path", "block_name", "loop_backing_file",
           "loop_partition_numbers", "loop_partition", "read_ahead_sectors"]

SYS_BLOCK = "/sys/block"


def dev_block_path(devnum: int) -> str:
    """``/sys/dev/block/MAJ:MIN``: the device's sysfs directory, by number."""
    return f"/sys/dev/block/{os.major(devnum)}:{os.minor(devnum)}"


def block_name(devnum: int) -> Optional[str]:
    """The kernel's name for a block device (``loop3``, ``loop3p1``,
    ``dm-0``), None if there is no such device."""
    try:
        return os.path.basename(os.readlink(dev_block_path(devnum)))
    except OSError:
        return None


def loop_backing_file(number: int) -> Optional[str]:
    """``/sys/block/loopN/loop/backing_file`` without its newline; None if
    the device is unbound or gone.  Raises OSError(ENAMETOOLONG) for a path
    longer than sysfs shows (a page)."""
    try:
        fd = os.open(f"{SYS_BLOCK}/loop{number}/loop/backing_file", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        # ENODEV/ENXIO: the device is being removed while we look
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENODEV, errno.ENXIO):
            return None
        raise
    try:
        raw = os.read(fd, 65536)
    except OSError as e:
        if e.errno in (errno.ENODEV, errno.ENXIO):
            return None
        raise
    finally:
        os.close(fd)
    return os.fsdecode(raw[:-1] if raw.endswith(b"\n") else raw)


def loop_partition_numbers(number: int) -> Optional[List[int]]:
    """The M of each ``loopNpM`` the kernel has, sorted; None if there is
    no ``loopN``."""
    prefix = f"loop{number}p"
    try:
        names = os.listdir(f"{SYS_BLOCK}/loop{number}")
    except FileNotFoundError:
        return None
    return sorted(int(entry[len(prefix):]) for entry in names
                  if entry.startswith(prefix) and entry[len(prefix):].isdigit())


def loop_partition(number: int, pno: int) -> Optional[Tuple[int, int, int]]:
    """(start, size, dev_t) of ``loopNpM``, start and size in bytes (sysfs
    counts 512-byte sectors whatever the logical block size); None if the
    kernel has no such partition (or drops it while we read)."""
    base = f"{SYS_BLOCK}/loop{number}/loop{number}p{pno}"
    try:
        values = []
        for attr in ("start", "size", "dev"):
            with open(f"{base}/{attr}") as f:
                values.append(f.read().strip())
    except OSError:
        return None
    major, _, minor = values[2].partition(":")
    return int(values[0]) * 512, int(values[1]) * 512, os.makedev(int(major), int(minor))


def read_ahead_sectors(devnum: int) -> Optional[int]:
    """A block device's read-ahead in 512-byte sectors (``dmsetup info``)."""
    base = dev_block_path(devnum)
    for attr in ("bdi/read_ahead_kb", "queue/read_ahead_kb"):
        try:
            with open(f"{base}/{attr}") as f:
                return int(f.read().strip()) * 2
        except (OSError, ValueError):
            continue
    return None


# --- device-mapper's reads (dm/) ---


# --- the dirty-log server's reads (dmlog/) ---

def dm_slaves() -> Dict[str, List[Tuple[str, int]]]:
    """For every dm device (``dm-N``): the (kernel name, devnum) of each
    device its table holds (``/sys/block/dm-N/slaves``)."""
    out: Dict[str, List[Tuple[str, int]]] = {}
    try:
        names = [n for n in os.listdir(SYS_BLOCK) if n.startswith("dm-")]
    except OSError:
        return out
    for dm_name in sorted(names):
        held: List[Tuple[str, int]] = []
        base = f"{SYS_BLOCK}/{dm_name}/slaves"
        try:
            slaves = os.listdir(base)
        except OSError:
            slaves = []  # gone meanwhile
        for name in slaves:
            try:
                with open(f"{base}/{name}/dev") as f:
                    major, minor = f.read().strip().split(":")
                held.append((name, os.makedev(int(major), int(minor))))
            except (OSError, ValueError):
                continue
        out[dm_name] = held
    return out

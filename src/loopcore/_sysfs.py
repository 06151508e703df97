"""Every read of /sys (and /proc) in loopcore, in one place.

The bulk scan of all loop devices is one C call (``lc_scan_loops``); what
is read here is the per-device remainder: a loop device's backing path,
its partitions, the kernel name behind a device number (the one resolver
of a dev_t), read-ahead, the loop module's max_part, an fd's path; for
device-mapper the misc minor and the uevent sequence number; for the
dirty-log server a dm device's slaves.
"""
from __future__ import annotations

import errno
import os
from typing import Dict, List, Optional, Tuple

__all__ = ["SYS_BLOCK", "dev_block_path", "block_name", "loop_number", "loop_backing_file",
           "loop_partition_numbers", "loop_partition", "read_ahead_sectors", "loop_max_part",
           "fd_path", "misc_minor", "uevent_seqnum", "dm_slaves"]

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


def loop_number(devnum: int) -> Optional[int]:
    """N if ``devnum`` is the loop device ``/dev/loopN`` (a whole disk:
    ``loopNpM`` is a partition, not a loop device), else None."""
    name = block_name(devnum) or ""
    if name.startswith("loop") and name[4:].isdigit():
        return int(name[4:])
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



def loop_max_part() -> Optional[int]:
    """The loop module's ``max_part`` parameter (minors reserved per device
    for partitions, so a device's minor is N << bit_length(max_part));
    None where the module shows no parameters."""
    try:
        with open("/sys/module/loop/parameters/max_part", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def fd_path(fd: int) -> Optional[str]:
    """What ``/proc/self/fd/N`` names: the path an fd was opened by (as
    the kernel has it now), None if it has none or /proc is missing."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return target if target.startswith("/") else None

# --- device-mapper's reads (dm/) ---
# (a dm device's kernel name by number is block_name above: one resolver)

PROC_MISC = "/proc/misc"
UEVENT_SEQNUM = "/sys/kernel/uevent_seqnum"


def misc_minor(name: str) -> Optional[int]:
    """The minor of misc device ``name`` (``device-mapper``) in
    ``/proc/misc``, None if the kernel has none."""
    try:
        with open(PROC_MISC) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1] == name:
                    return int(parts[0])
    except FileNotFoundError:
        pass
    return None


def uevent_seqnum() -> int:
    """The sequence number of the kernel's last uevent (0 if unreadable)."""
    try:
        with open(UEVENT_SEQNUM, "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


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

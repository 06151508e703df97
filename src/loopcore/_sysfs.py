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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

__all__ = ["SYS_BLOCK", "dev_block_path", "block_name", "loop_number", "loop_backing_file",
           "loop_partition_numbers", "loop_listing_order", "loop_partition",
           "read_ahead_sectors", "loop_max_part",
           "fd_path", "loop_bound", "block_dev", "block_diskseq", "block_holders",
           "open_block_paths", "mounts_by_devnum", "misc_minor", "uevent_seqnum", "dm_slaves",
           "dm_name"]

SYS_BLOCK = "/sys/block"
# Where /sys/block/loopN points (a loop disk has no parent device): a
# loop device's files are read there, without the symlink, which costs
# kernfs more than the read itself (a detach burst's per-device checks).
LOOP_SYSFS_DIR = "/sys/devices/virtual/block/loop"


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
        fd = os.open(f"{LOOP_SYSFS_DIR}{number}/loop/backing_file", os.O_RDONLY | os.O_CLOEXEC)
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
        names = os.listdir(f"{LOOP_SYSFS_DIR}{number}")
    except FileNotFoundError:
        return None
    if prefix not in "/".join(names):  # most have none: one search, not a loop
        return []
    return sorted(int(entry[len(prefix):]) for entry in names
                  if entry.startswith(prefix) and entry[len(prefix):].isdigit())


def loop_listing_order() -> List[int]:
    """The loop device numbers in ``/sys/block``'s own (readdir) order,
    the order losetup lists devices in; empty without sysfs."""
    try:
        names = os.listdir(SYS_BLOCK)
    except OSError:
        return []
    return [int(name[4:]) for name in names if name.startswith("loop") and name[4:].isdigit()]


def loop_partition(number: int, pno: int) -> Optional[Tuple[int, int, int]]:
    """(start, size, dev_t) of ``loopNpM``, start and size in bytes (sysfs
    counts 512-byte sectors whatever the logical block size); None if the
    kernel has no such partition (or drops it while we read)."""
    base = f"{LOOP_SYSFS_DIR}{number}/loop{number}p{pno}"
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


def loop_bound(number: int) -> bool:
    """Whether ``loopN`` has a backing file: the kernel shows its
    ``loop/`` directory from bind to unbind (one access(), no read)."""
    return os.access(f"{LOOP_SYSFS_DIR}{number}/loop", os.F_OK)


def block_dev(name: str) -> Optional[int]:
    """The dev_t of block device ``name`` (``loop3``, ``loop3p1``) from
    ``/sys/class/block/NAME/dev``; None if there is no such device."""
    try:
        with open(f"/sys/class/block/{name}/dev") as f:
            major, _, minor = f.read().strip().partition(":")
        return os.makedev(int(major), int(minor))
    except (OSError, ValueError):
        return None


def block_diskseq(name: str) -> Optional[int]:
    """``/sys/class/block/NAME/diskseq`` (Linux 5.15+), None without it."""
    try:
        with open(f"/sys/class/block/{name}/diskseq") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def block_holders(name: str) -> List[str]:
    """The kernel names in ``/sys/class/block/NAME/holders`` (``dm-0``:
    device-mapper maps, md arrays built on the device), sorted."""
    try:
        return sorted(os.listdir(f"/sys/class/block/{name}/holders"))
    except OSError:
        return []


def open_block_paths() -> List[Tuple[int, str, str]]:
    """(pid, command name, path) for each fd of each process that names a
    path under ``/dev`` (``/proc/PID/fd``, as fuser and lsof read it);
    processes that end or hide meanwhile are left out."""
    found: List[Tuple[int, str, str]] = []
    try:
        pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return found
    for pid in sorted(pids):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        paths = set()
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("/dev/"):
                paths.add(target)
        if not paths:
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            comm = "?"
        found.extend((pid, comm, path) for path in sorted(paths))
    return found


def mounts_by_devnum() -> List[Tuple[int, str]]:
    """(dev_t, mount point) of each mount in ``/proc/self/mountinfo``, the
    octal escapes of the mount point undone."""
    found: List[Tuple[int, str]] = []
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split(b" ")
        if len(fields) < 5:
            continue
        major, _, minor = fields[2].partition(b":")
        try:
            devnum = os.makedev(int(major), int(minor))
        except ValueError:
            continue
        point = fields[4].decode("unicode_escape").encode("latin-1")
        found.append((devnum, os.fsdecode(point)))
    return found


# --- device-mapper's reads (dm/) ---
# (a dm device's kernel name by number is block_name above: one resolver)

def dm_name(devnum: int) -> Optional[str]:
    """The name of dm device ``devnum`` (its ``dm/name``), None if it is
    not a dm device or is gone."""
    try:
        with open(f"{dev_block_path(devnum)}/dm/name") as f:
            return f.read().rstrip("\n") or None
    except OSError:
        return None


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

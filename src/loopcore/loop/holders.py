"""Who holds a loop device, as ``fuser``/``lsof`` and ``lsblk`` would
show it: processes with the device or one of its partitions open, the
kernel's holders of them (``dm-0``: a device-mapper map), and their
mounts.  Read when a wait for a detach runs out, to say why."""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Tuple

from .. import _sysfs

__all__ = ["Holders", "holders"]


class Holders(NamedTuple):
    """What holds ``/dev/loopN`` (and its partitions) open."""

    #: (pid, command name, node) of each process with a node open
    processes: List[Tuple[int, str, str]]
    #: kernel names in the devices' ``holders/`` (``dm-0``)
    devices: List[str]
    #: (node, mount point) of each mount of the device or a partition
    mounts: List[Tuple[str, str]]

    def __str__(self) -> str:
        """One line: ``pid 1234 (sleep) has /dev/loop3 open, dm-0 holds
        it, /dev/loop3p1 is mounted on /mnt``."""
        parts = [f"pid {pid} ({comm}) has {node} open" for pid, comm, node in self.processes]
        parts += [f"{name} holds it" for name in self.devices]
        parts += [f"{node} is mounted on {point}" for node, point in self.mounts]
        return ", ".join(parts) or ("nobody visible from here holds it (a kernel user, "
                                    "or a process in another mount or PID namespace)")


def holders(number: int) -> Holders:
    """Who holds ``/dev/loopN`` and its partitions now."""
    names = [f"loop{number}"] + [f"loop{number}p{pno}"
                                 for pno in _sysfs.loop_partition_numbers(number) or ()]
    nodes = {f"/dev/{name}": name for name in names}
    by_devnum: Dict[int, str] = {}
    for name in names:
        devnum = _sysfs.block_dev(name)
        if devnum is not None:
            by_devnum[devnum] = f"/dev/{name}"
    processes = [(pid, comm, path) for pid, comm, path in _sysfs.open_block_paths()
                 if path in nodes]
    devices = sorted({holder for name in names for holder in _sysfs.block_holders(name)})
    mounts = [(by_devnum[devnum], point) for devnum, point in _sysfs.mounts_by_devnum()
              if devnum in by_devnum]
    return Holders(processes, devices, mounts)

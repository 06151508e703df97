"""Loop devices: attach, inspect, reconfigure, list and detach.

One file per job:

- ``info``: :class:`LoopInfo` (the one record of a device), the flag
  bits, the loop driver's constants;
- ``flags``: :class:`Flags`, the enum (imported on first use: a listing
  never imports :mod:`enum`);
- ``control``: ``/dev/loop-control`` (:class:`LoopControl`) and the
  process's shared control state (fd, locks, fork handling, the
  LOOP_CONFIGURE probe);
- ``backing``: the backing file, opened and checked once;
- ``device``: :class:`LoopDevice`, an attached device;
- ``locks``: the flock a device holds (:class:`DeviceLock`);
- ``partitions``: partitions registered with BLKPG (``add_partitions``);
- ``diskseq``: is it still the same disk (dev_t, diskseq);
- ``teardown``: ``LoopDevice.detach()``'s work (and whether the kernel
  deferred it, and the wait for it), and the quiet unbind of a device a
  failed attach bound;
- ``existing``: :func:`open`, :func:`detach` of devices that exist already;
- ``request``: :class:`AttachRequest`, an attach's arguments checked
  once (attach and attach_many share it);
- ``policy``: :func:`attach`, the attach policy, top to bottom, with
  ``binding`` (the one C call, lc_attach, and the one post-bind check),
  ``legacy`` (the pre-5.8 LOOP_SET_FD path) and ``reuse`` (losetup
  --nooverlap);
- ``burst``: :func:`attach_many`; ``detach_burst``: :func:`detach_many`
  (apart, so that detaching imports no attach code);
- ``discovery``: :func:`list_devices`, :func:`find`, partitions;
- ``holders``: who holds a device open (processes, sysfs holders,
  mounts), named when ``detach(wait=)`` runs out;
- ``nodes``: ``/dev`` nodes where no devtmpfs makes them
  (``make_nodes=True``, LOOPCORE_MAKE_NODES=1);
- ``partition_table``: partition tables read in the library (GPT, MBR),
  for kernels and devices that do not scan them;
- ``_calls``: -errno checking, EAGAIN retries, the EBUSY backoff, deadlines,
  every retry constant (read from there, not re-exported: tests shrink them
  in ``_calls``).

Each name below is imported from its module on first use
(:mod:`loopcore._lazy`): ``loopcore list`` reads no partition table code.
``partitions(n)`` (a bound device's partitions) is
``loopcore.loop.discovery.partitions``: ``loopcore.loop.partitions`` is the
BLKPG module.
"""
from __future__ import annotations

from .._lazy import export

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .backing import Backing as Backing
    from .burst import attach_many as attach_many
    from .control import FORCE_LEGACY_ENV as FORCE_LEGACY_ENV
    from .control import LoopControl as LoopControl
    from .control import kernel_supports_configure as kernel_supports_configure
    from .detach_burst import detach_many as detach_many
    from .device import LoopDevice as LoopDevice
    from .discovery import find as find
    from .discovery import list_devices as list_devices
    from .discovery import wait_for_partitions as wait_for_partitions
    from .existing import DeviceRef as DeviceRef
    from .existing import detach as detach
    from .existing import loop_number_of as loop_number_of
    from .existing import open as open
    from .info import LO_NAME_SIZE as LO_NAME_SIZE
    from .info import LOOP_MAJOR as LOOP_MAJOR
    from .info import MAX_BLOCK_SIZE as MAX_BLOCK_SIZE
    from .info import PAGE_SIZE as PAGE_SIZE
    from .info import Flags as Flags
    from .info import LoopInfo as LoopInfo
    from .info import device_path as device_path
    from .locks import LOCK_EXCLUSIVE as LOCK_EXCLUSIVE
    from .locks import LOCK_SHARED as LOCK_SHARED
    from .locks import DeviceLock as DeviceLock
    from .partition_table import Partition as Partition
    from .partition_table import PartitionTable as PartitionTable
    from .partition_table import read_partition_table as read_partition_table
    from .policy import attach as attach
    from .request import LockArg as LockArg

__all__ = export(__name__, {
    ".control": (
        "FORCE_LEGACY_ENV", "LoopControl", "kernel_supports_configure",
    ),
    ".locks": (
        "LOCK_EXCLUSIVE", "LOCK_SHARED", "DeviceLock",
    ),
    ".info": (
        "LO_NAME_SIZE", "LOOP_MAJOR", "MAX_BLOCK_SIZE", "PAGE_SIZE", "Flags", "LoopInfo",
        "device_path",
    ),
    ".backing": (
        "Backing",
    ),
    ".existing": (
        "DeviceRef", "detach", "loop_number_of", "open",
    ),
    ".request": (
        "LockArg",
    ),
    ".device": (
        "LoopDevice",
    ),
    ".partition_table": (
        "Partition", "PartitionTable", "read_partition_table",
    ),
    ".policy": (
        "attach",
    ),
    ".burst": (
        "attach_many",
    ),
    ".detach_burst": (
        "detach_many",
    ),
    ".discovery": (
        "find", "list_devices", "wait_for_partitions",
    ),
})

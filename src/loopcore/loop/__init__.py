"""Loop devices: attach, inspect, reconfigure, list and detach.

One file per job:

- ``info``: :class:`Flags`, :class:`LoopInfo` (the one record of a
  device), the loop driver's constants;
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
- ``burst``: :func:`attach_many`, :func:`detach_many`;
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
"""
from __future__ import annotations

from .backing import Backing
from .burst import attach_many, detach_many
from .control import FORCE_LEGACY_ENV, LoopControl, kernel_supports_configure
from .device import LoopDevice
from .discovery import find, list_devices, partitions, wait_for_partitions
from .existing import DeviceRef, detach, loop_number_of, open
from .info import (
    LO_NAME_SIZE,
    LOOP_MAJOR,
    MAX_BLOCK_SIZE,
    PAGE_SIZE,
    Flags,
    LoopInfo,
    device_path,
)
from .locks import LOCK_EXCLUSIVE, LOCK_SHARED, DeviceLock
from .partition_table import Partition, PartitionTable, read_partition_table
from .policy import attach
from .request import LockArg

__all__ = [
    "FORCE_LEGACY_ENV", "LOCK_EXCLUSIVE", "LOCK_SHARED",
    "LO_NAME_SIZE", "LOOP_MAJOR", "MAX_BLOCK_SIZE", "PAGE_SIZE",
    "Backing", "DeviceLock", "DeviceRef", "Flags", "LockArg", "LoopControl",
    "LoopDevice", "LoopInfo", "Partition", "PartitionTable",
    "attach", "attach_many", "detach", "detach_many", "device_path", "find",
    "kernel_supports_configure", "list_devices", "loop_number_of", "open", "partitions",
    "read_partition_table", "wait_for_partitions",
]

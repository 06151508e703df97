"""Loop devices: attach, inspect, reconfigure, list and detach.

One file per job:

- ``info``: :class:`Flags`, :class:`LoopInfo` (the one record of a
  device), the loop driver's constants;
- ``control``: ``/dev/loop-control`` (:class:`LoopControl`) and the
  process's shared control state (fd, locks, fork handling, the
  LOOP_CONFIGURE probe);
- ``backing``: the backing file, opened and checked once;
- ``device``: :class:`LoopDevice`, :func:`open`, :func:`detach`;
- ``policy``: :func:`attach`, the attach policy, top to bottom;
- ``discovery``: :func:`list_devices`, :func:`find`, partitions;
- ``_calls``: -errno checking, EAGAIN retries, every retry constant.
"""
from __future__ import annotations

from .._sysfs import loop_backing_file as sysfs_backing_file
from .._validate import check_number
from ._calls import (
    ATTACH_ATTEMPTS,
    ATTACH_SLEEP_BASE_US,
    ATTACH_SLEEP_SPAN_US,
    EAGAIN_ATTEMPTS,
    EAGAIN_SLEEP_S,
    REMOVE_ATTEMPTS,
    REMOVE_FIRST_SLEEP_S,
)
from .backing import Backing, BackingFile
from .control import FORCE_LEGACY_ENV, LoopControl, kernel_supports_configure
from .device import DeviceRef, LoopDevice, detach, loop_number_of, open
from .discovery import find, list_devices, partitions, wait_for_partitions
from .info import (
    LO_NAME_SIZE,
    LOOP_MAJOR,
    MAX_BLOCK_SIZE,
    PAGE_SIZE,
    Flags,
    LoopInfo,
    device_path,
)
from .policy import attach, bind

__all__ = [
    "ATTACH_ATTEMPTS", "ATTACH_SLEEP_BASE_US", "ATTACH_SLEEP_SPAN_US", "EAGAIN_ATTEMPTS",
    "EAGAIN_SLEEP_S", "REMOVE_ATTEMPTS", "REMOVE_FIRST_SLEEP_S", "FORCE_LEGACY_ENV",
    "LO_NAME_SIZE", "LOOP_MAJOR", "MAX_BLOCK_SIZE", "PAGE_SIZE",
    "Backing", "BackingFile", "DeviceRef", "Flags", "LoopControl", "LoopDevice", "LoopInfo",
    "attach", "bind", "check_number", "detach", "device_path", "find",
    "kernel_supports_configure", "list_devices", "loop_number_of", "open", "partitions",
    "sysfs_backing_file", "wait_for_partitions",
]

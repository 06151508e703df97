"""A typed builder for the ``mirror`` target (dm-raid1), with the kernel's
``core`` and ``disk`` dirty logs or a ``userspace`` one served by
:class:`~loopcore.dmlog.DirtyLogServer`.

The table line is::

    <start> <len> mirror <log type> <#log args> <log args...> <#legs> <dev> <offset>... \\
        [<#features> <features...>]

- ``core``: ``core <1|2> <region_size> [sync|nosync]``;
- ``disk``: ``disk <2|3> <log dev> <region_size> [sync|nosync]``;
- ``userspace``: ``userspace <N> <uuid> [integrated_flush] clustered-core
  <region_size> [sync|nosync]`` or ``... clustered-disk <log dev>
  <region_size> ...``; ``N`` counts every log argument, the uuid and the
  log type included.  ``integrated_flush`` (Linux 3.14+) goes right after
  the uuid: the kernel then sends marks inside FLUSH requests instead of
  separate MARK_REGION ones.
- features: ``handle_errors`` (lvm2's modern form of error handling;
  ``block_on_error`` in the log arguments is a pre-2.6.22 leftover) and
  ``keep_log``.

The region size (sectors) must be a power of two from 2 to the length:
dm-region-hash uses it as a shift, and the userspace log does not check it.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

from .. import dm, errors

__all__ = ["mirror", "LOG_TYPES"]

LOG_TYPES = ("core", "disk", "userspace")
_SYNC = (None, "sync", "nosync")

Leg = Union[dm.DeviceArg, Tuple[dm.DeviceArg, int]]


def _nonneg(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise errors.ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def mirror(start: int, length: int, legs: Sequence[Leg], region_size: int, *,
           log: str = "core", log_device: Optional[dm.DeviceArg] = None,
           uuid: Optional[str] = None, sync: Optional[str] = None,
           handle_errors: bool = False, keep_log: bool = False,
           integrated_flush: bool = False) -> dm.Target:
    """A ``mirror`` target over ``legs`` (devices, or (device, offset) pairs;
    the first is the default leg resyncs copy from).

    ``log``: ``"core"`` (in kernel memory), ``"disk"`` (on ``log_device``)
    or ``"userspace"`` (served by a dm-log-userspace server under ``uuid``,
    a clustered-disk log if ``log_device`` is given, else clustered-core).
    ``sync``: None (resync what the log does not know to be in sync),
    ``"sync"`` (resync everything) or ``"nosync"`` (trust that the legs are
    equal).  ``integrated_flush`` needs a userspace log.

    >>> mirror(0, 65536, [a, b], 1024, log="userspace", uuid="LVM-m1", log_device=c)
    ...     # 0 65536 mirror userspace 4 LVM-m1 clustered-disk 7:2 1024 2 7:0 0 7:1 0
    """
    _nonneg("start", start)
    _nonneg("length", length)
    _nonneg("region_size", region_size)
    if length < 1:
        raise errors.ValueError("a mirror needs a length of at least one sector")
    if region_size < 2 or region_size & (region_size - 1) or region_size > length:
        raise errors.ValueError(f"region_size must be a power of two from 2 to the length "
                                f"({length}), got {region_size}")
    if log not in LOG_TYPES:
        raise errors.ValueError(f"log must be one of {', '.join(LOG_TYPES)}, got {log!r}")
    if sync not in _SYNC:
        raise errors.ValueError(f"sync must be None, 'sync' or 'nosync', got {sync!r}")
    if not 2 <= len(legs) <= 8:
        # dm-raid1 takes at most DM_KCOPYD_MAX_REGIONS + 1 = 8 legs
        raise errors.ValueError(f"a mirror needs 2 to 8 legs, got {len(legs)}")
    if keep_log and not handle_errors:
        raise errors.ValueError("keep_log needs handle_errors (the kernel refuses it alone)")
    if integrated_flush and log != "userspace":
        raise errors.ValueError("integrated_flush needs a userspace log")
    tail = [str(region_size)] + ([sync] if sync else [])
    if log == "core":
        if log_device is not None:
            raise errors.ValueError("a core log has no log device")
        log_args = tail
    elif log == "disk":
        if log_device is None:
            raise errors.ValueError("a disk log needs log_device")
        log_args = [dm.device_arg(log_device)] + tail
    else:
        if not uuid or not isinstance(uuid, str) or len(uuid) > 128 \
                or any(c.isspace() or not c.isprintable() for c in uuid):
            raise errors.ValueError(f"a userspace log needs a uuid of 1 to 128 printable "
                                    f"characters without spaces, got {uuid!r}")
        kind = ["clustered-core"] if log_device is None \
            else ["clustered-disk", dm.device_arg(log_device)]
        log_args = [uuid] + (["integrated_flush"] if integrated_flush else []) + kind + tail
        # The kernel sends "<length> <args after the uuid>" to the server:
        # at most 332 bytes, and 331 so that the NUL-terminated copy it sends
        # when it reconnects to a restarted server fits too (else it retries
        # that reconnect forever).
        ctr = " ".join([str(length)] + kind + tail)
        if len(ctr) > 331:
            raise errors.ValueError(f"the log arguments are too long for dm-log-userspace "
                                    f"({len(ctr)} bytes, at most 331): name the log device "
                                    f"by its device number")
    parts = [log, str(len(log_args)), *log_args, str(len(legs))]
    for leg in legs:
        dev, offset = leg if isinstance(leg, tuple) else (leg, 0)
        parts += [dm.device_arg(dev), str(_nonneg("leg offset", offset))]
    features = (["handle_errors"] if handle_errors else []) + (["keep_log"] if keep_log else [])
    if features:
        parts += [str(len(features)), *features]
    return dm.Target(start, length, "mirror", " ".join(parts))

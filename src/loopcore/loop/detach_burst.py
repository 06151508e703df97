"""Detach bursts: :func:`detach_many` detaches many devices in one C loop
(write back, LOOP_CLR_FD, close, for each).  Apart from
:mod:`.burst` (attach_many) so that a process that only detaches, such as
``loopcore detach DEV...``, imports none of the attach machinery.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional  # at run time: get_type_hints

from .. import _c, _retry
from .._validate import check_timeout
from ..errors import TypeError, translate
from . import teardown
from .device import LoopDevice

__all__ = ["detach_many"]


@translate
def detach_many(devices: Iterable[LoopDevice], *, wait: Optional[float] = None) -> List[bool]:
    """Detach each of ``devices`` as :meth:`LoopDevice.detach` does, in
    one C loop (write back, LOOP_CLR_FD, close, for each).

    It goes on past a device that fails (which stays bound and open, as
    with detach()) and raises the first failure once all were tried.
    Devices with partitions (added, or found by open()) or a lock held
    take detach() itself.
    It returns, for each device in order, what :meth:`LoopDevice.detach`
    does: True where the kernel released the backing file at once, False
    where it deferred that to another opener's last close (lc_detach_many
    says which, so this costs nothing).  ``wait`` (seconds, for the whole
    burst) waits until every backing file is released, or raises
    TimeoutError naming who holds the first device still bound.
    """
    check_timeout(wait, "wait")
    deadline_ns = _retry.deadline_after(wait)
    devices = list(devices)
    released: Dict[int, bool] = {}  # id(device) -> released at once
    simple: List[LoopDevice] = []
    first_error: Optional[BaseException] = None
    for device in devices:
        if not isinstance(device, LoopDevice):
            raise TypeError(f"detach_many takes LoopDevices, not {type(device).__name__}")
        if device._partitions is not None or device.locked:  # partitions first
            try:
                released[id(device)] = device.detach()
            except Exception as e:  # noqa: BLE001 -- the first is raised below
                first_error = first_error or e
        else:
            simple.append(device)
    if simple:
        count = len(simple)
        fds = _c.ffi.new("int32_t[]", [device.fileno() for device in simple])
        rcs = _c.ffi.new("int32_t[]", count)
        _c.lib.lc_detach_many(fds, count, rcs)
        for i, device in enumerate(simple):
            if rcs[i] >= 0:  # 1: unbound at another opener's last close
                device._fd = -1
                released[id(device)] = rcs[i] == 0
                continue
            try:
                teardown.detach_failed(device, rcs[i])
                # retried: whether the kernel deferred it is not passed back
                released[id(device)] = teardown.after_unbind(device.number, device.diskseq, None)
            except Exception as e:  # noqa: BLE001 -- the first is raised below
                first_error = first_error or e
    if first_error is not None:
        raise first_error
    if wait is not None:
        for device in devices:
            if not released[id(device)]:
                released[id(device)] = teardown.after_unbind(
                    device.number, device.diskseq, wait, deadline_ns)
    return [released[id(device)] for device in devices]

"""Kernel uevents for tests that wait for the kernel: a detach, an
autoclear, partitions going away.

The kernel broadcasts every uevent on NETLINK_KOBJECT_UEVENT, multicast
group 1 (what udevd listens to; no udevd needed).  A loop device sends
``change`` when it is unbound, after its backing file is cleared, and each
partition ``remove`` as it goes.  Open the listener *before* the action, so
that its events are queued, then wait: ``wait_until`` checks the condition,
and again after every uevent, instead of sleeping.
"""
from __future__ import annotations

import select
import socket
import time
from typing import Callable, Dict, List

__all__ = ["UeventListener", "parse"]

NETLINK_KOBJECT_UEVENT = 15
_KERNEL_GROUP = 1
# Nothing that should happen takes this long; it only ends a test that
# would otherwise hang, and the condition is checked once more before failing.
HANG_GUARD_S = 30.0


def parse(message: bytes) -> Dict[str, str]:
    """A kernel uevent (``action@devpath\\0KEY=VALUE\\0...``) as a dict."""
    event: Dict[str, str] = {}
    for field in message.split(b"\0")[1:]:
        key, sep, value = field.partition(b"=")
        if sep:
            event[key.decode()] = value.decode(errors="replace")
    return event


class UeventListener:
    """A socket on the kernel's uevent broadcast; use as a context manager."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                   NETLINK_KOBJECT_UEVENT)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.bind((0, _KERNEL_GROUP))
        #: every event received so far, in order
        self.events: List[Dict[str, str]] = []

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Return once ``condition()`` holds, checking it now and after each
        uevent; fail if it still does not after the hang guard."""
        give_up = time.monotonic() + HANG_GUARD_S  # other devices' events come too
        while not condition():
            left = give_up - time.monotonic()
            if left <= 0 or not select.select([self._sock], [], [], left)[0]:
                assert condition(), f"{what}: still not so after {HANG_GUARD_S} s of uevents"
                return
            self.events.append(parse(self._sock.recv(1 << 16)))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> UeventListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

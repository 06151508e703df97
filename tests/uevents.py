"""Kernel uevents for tests: wait for the kernel to say something happened
instead of sleeping and hoping it did.

:class:`Uevents` listens on NETLINK_KOBJECT_UEVENT, multicast group 1 --
the kernel's own messages, no udevd needed (udevd re-sends them on group
2, after its rules ran).  A loop device sends ``change`` when it is bound
and when it is cleared (also an autoclear detach at the last close), and
each partition ``remove`` as it goes; a dm device ``remove`` when it goes.

    with Uevents() as events:
        ...                                      # start what should happen
        assert events.wait_until(lambda: not bound_under(tmp_path)), "detached"

checks the condition at once and then after each uevent, never sleeping.
Open the listener before the action: events sent before are not seen.
"""
from __future__ import annotations

import errno
import os
import select
import socket
import time
from typing import Callable, Dict, Iterable, Iterator, Optional

__all__ = ["Uevents", "NETLINK_KOBJECT_UEVENT", "KERNEL_GROUP", "HANG_GUARD_S",
           "wait_for_deferred_detaches"]

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1
# Nothing that should happen takes this long: a cap that ends a test which
# would otherwise hang (a broken kernel or test), not a guess at how long
# things take.
HANG_GUARD_S = 60.0
# A leak check's wait for unbinds another opener deferred (see
# wait_for_deferred_detaches): that opener is a scan or a racing attach of
# another process, holding the device for microseconds to milliseconds.
DEFERRED_DETACH_S = 5.0


class Uevents:
    """A socket receiving the kernel's uevents from when it was made."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                  NETLINK_KOBJECT_UEVENT)
        try:
            # a burst of attach/detach cycles sends many: room for them
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.sock.bind((0, KERNEL_GROUP))
        except BaseException:
            self.sock.close()
            raise
        self.lost = 0  # times the kernel dropped events (ENOBUFS): some were missed

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Uevents":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next(self, timeout: Optional[float]) -> Optional[Dict[str, str]]:
        """The next uevent ({"ACTION": "change", "DEVNAME": "loop3", ...}),
        {} if some were lost (ENOBUFS), None if none came within
        ``timeout`` seconds (None: wait for ever)."""
        if not select.select([self.sock], [], [], timeout)[0]:
            return None
        try:
            data = self.sock.recv(1 << 16)
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            self.lost += 1
            return {}
        fields = data.split(b"\0")
        event = {"HEADER": os.fsdecode(fields[0])}
        for field in fields[1:]:
            key, sep, value = field.partition(b"=")
            if sep:
                event[os.fsdecode(key)] = os.fsdecode(value)
        return event

    def events(self, timeout: float) -> Iterator[Dict[str, str]]:
        """Each uevent as it comes, until ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(deadline - time.monotonic(), 0))
            if event is None:
                return
            yield event

    def wait_until(self, condition: Callable[[], bool], timeout: float = HANG_GUARD_S) -> bool:
        """True once ``condition()`` holds: checked now and after each
        uevent; False if ``timeout`` seconds pass with it still false."""
        if condition():
            return True
        for _ in self.events(timeout):
            if condition():
                return True
        return condition()

    def wait_for(self, action: str, devnum: int, timeout: float = HANG_GUARD_S) -> bool:
        """True once the kernel sent ``action`` for block device ``devnum``
        (``os.makedev(major, minor)``); False if none came in ``timeout`` s."""
        want = {"ACTION": action, "SUBSYSTEM": "block", "MAJOR": str(os.major(devnum)),
                "MINOR": str(os.minor(devnum))}
        return any(all(event.get(k) == v for k, v in want.items())
                   for event in self.events(timeout))


def _autoclear(name: str) -> bool:
    try:
        with open(f"/sys/block/{name}/loop/autoclear") as f:
            return f.read().strip() == "1"
    except OSError:
        return False  # unbound, or gone


def wait_for_deferred_detaches(loop_names: Callable[[], Iterable[str]]) -> None:
    """Before a leak check: wait until none of the loop devices
    ``loop_names()`` names ("loop3") is an unbind another opener deferred.
    LOOP_CLR_FD while another process has the device open (a scan of the
    devices, another process's attach that got the same number from
    GET_FREE and lost the race) only sets AUTOCLEAR; the kernel unbinds at
    that opener's close.  Woken by uevents; after DEFERRED_DETACH_S what
    is still bound is the caller's to report."""
    def pending() -> bool:
        return any(_autoclear(name) for name in loop_names())

    if not pending():  # the usual case: no socket needed
        return
    with Uevents() as events:
        events.wait_until(lambda: not pending(), DEFERRED_DETACH_S)

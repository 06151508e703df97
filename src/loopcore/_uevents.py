"""Waiting for the kernel to change a device's state: the condition is
checked again after each kernel uevent (NETLINK_KOBJECT_UEVENT, group 1:
the kernel's own messages, no udevd needed), never on a guessed sleep.

Where no uevent socket can be had (another network namespace, a seccomp
filter) the wait polls with a doubling pause instead; with one, it also
checks at least every ``RECHECK_S`` seconds, since the kernel drops
events when the socket's buffer overflows.  A signal handler that raises
(Ctrl-C) ends the wait at once; one that returns does not (PEP 475).
"""
from __future__ import annotations

import errno
import select
import time
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

from . import _retry
from ._log import get_logger

if TYPE_CHECKING:
    import socket

__all__ = ["KernelUevents", "UeventSocket", "uevent_socket", "KERNEL_GROUP", "UDEV_GROUP"]

log = get_logger("uevents")

_S = TypeVar("_S", bound="UeventSocket")

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1  # the kernel's own uevents
UDEV_GROUP = 2    # udevd's, sent once its rules ran (libudev's monitor format)
# A lost event must not stall a wait: check this often regardless.
RECHECK_S = 1.0
# Without a socket: poll from 1 ms, doubling up to 100 ms.
POLL_FIRST_S = 0.001
POLL_MAX_S = 0.1


def uevent_socket(group: int, *, nonblocking: bool = False,
                  passcred: bool = False) -> Optional[socket.socket]:
    """A NETLINK_KOBJECT_UEVENT socket joined to ``group``; None (and a
    debug line) where none can be had: the caller then polls or does not
    wait.  ``passcred``: receive the sender's credentials (SO_PASSCRED)."""
    import socket  # here: a process that waits for no event does not import it

    kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | (socket.SOCK_NONBLOCK if nonblocking else 0)
    try:
        sock = socket.socket(socket.AF_NETLINK, kind, NETLINK_KOBJECT_UEVENT)
    except OSError as e:
        log.debug("no uevent socket (%s)", e)
        return None
    try:
        if passcred:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind((0, group))
    except OSError as e:
        sock.close()
        log.debug("uevent socket, group %d: %s", group, e)
        return None
    return sock


class UeventSocket:
    """A uevent group's socket from when this was made (None where none
    can be had), closed by :meth:`close` or leaving a ``with`` block."""

    def __init__(self, group: int, *, nonblocking: bool = False,
                 passcred: bool = False) -> None:
        self._sock = uevent_socket(group, nonblocking=nonblocking, passcred=passcred)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class KernelUevents(UeventSocket):
    """The kernel's uevents from when this was made (a context manager):
    make it before checking the condition the first time, so an event
    between the check and the wait is not missed."""

    def __init__(self) -> None:
        super().__init__(KERNEL_GROUP, nonblocking=True)

    def wait_until(self, condition: Callable[[], bool], deadline_ns: int) -> bool:
        """True once ``condition()`` holds (checked now, then after each
        uevent); False if ``deadline_ns`` (time.monotonic_ns(), 0: none)
        passes first."""
        pause = POLL_FIRST_S
        while True:
            if condition():
                return True
            left = _retry.seconds_left(deadline_ns)
            if left == 0:
                return False
            if self._sock is None:
                step = pause if left is None else min(pause, left)
                time.sleep(step)
                pause = min(pause * 2, POLL_MAX_S)
                continue
            step = RECHECK_S if left is None else min(RECHECK_S, left)
            if select.select([self._sock], [], [], step)[0]:
                self._drain()

    def _drain(self) -> None:
        """Read what came: any event is a reason to check again."""
        assert self._sock is not None
        while True:
            try:
                self._sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno != errno.ENOBUFS:  # overflowed: events lost; check anyway
                    raise

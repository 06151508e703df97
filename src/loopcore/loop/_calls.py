"""How the loop ioctls are called: -errno results turned into exceptions,
EAGAIN retried, EBUSY backed off, deadlines, and the retry constants of
every loop operation (in one place, so tests can shrink them: every user
reads them from this module when it needs them, never a copy).

The attach's own retry loop is in C (lc_attach), which gets its numbers
from here in each request: its tries run under the control lock, inside
one C call."""
from __future__ import annotations

import errno
import fcntl
import time
from typing import Callable, Optional

from .. import _retry
from ..errors import error_from_errno

__all__ = ["check", "retry_eagain", "retry_ebusy", "flock_wait"]

# Attach: systemd's 64 attempts with a random sleep below 10 ms + 240 ms *
# attempt/64; the C loop makes the first retry at once since a fresh
# GET_FREE usually names another device.  EAGAIN from the other loop
# ioctls (Linux 5.0+ may say it while the device is being set up or torn
# down): util-linux's 10 x 250 ms.
ATTACH_ATTEMPTS = 64
ATTACH_SLEEP_BASE_US = 10_000
ATTACH_SLEEP_SPAN_US = 240_000
EAGAIN_ATTEMPTS = 10
EAGAIN_SLEEP_S = 0.25
# LOOP_CTL_REMOVE of a device still being released: systemd's backoff.
REMOVE_ATTEMPTS = 8
REMOVE_FIRST_SLEEP_S = 0.005
# A lock wait with a timeout polls LOCK_NB (flock has no timeout of its
# own): 1 ms at first, doubling up to 50 ms between tries.
LOCK_POLL_FIRST_S = 0.001
LOCK_POLL_MAX_S = 0.05
# BLKPG_DEL_PARTITION of a partition someone has open for a moment (a
# udev or blkid probe): retried with the LOOP_CTL_REMOVE backoff above.
PARTITION_DEL_ATTEMPTS = 8
# attach(partscan=True): looks for the partitions' /dev nodes after the
# scan, with the same backoff (devtmpfs has them at the first look).
PARTITION_NODE_ATTEMPTS = 8
# detach(): how long to wait for a flock someone holds on the device (a
# udev or blkid probe holds one for milliseconds) before unbinding anyway.
DETACH_LOCK_WAIT_S = 10.0
# attach(reuse=True): how often a device picked for reuse may turn out
# unbound or rebound when opened (autoclear racing us) before giving up.
REUSE_ATTEMPTS = 8


def check(rc: int, filename: object = None, message: Optional[str] = None) -> int:
    """Raise the matching exception for a negative shim return value."""
    if rc < 0:
        raise error_from_errno(-rc, filename, message)  # type: ignore[arg-type]
    return rc


def retry_eagain(call: Callable[[], int]) -> int:
    """Run a loop ioctl wrapper, retrying EAGAIN (kernel >= 5.0 may say it)
    after a pause, and EINTR (a signal; its Python handler runs between
    tries and may raise) at once, within the same budget of tries."""
    for _ in range(EAGAIN_ATTEMPTS - 1):
        rc = call()
        if rc == -errno.EAGAIN:
            time.sleep(EAGAIN_SLEEP_S)
        elif rc != -errno.EINTR:
            return rc
    return call()


def retry_ebusy(call: Callable[[], int], tries: int, what: str = "") -> int:
    """:func:`loopcore._retry.retry_ebusy` with the loop devices' backoff
    (systemd's: REMOVE_FIRST_SLEEP_S, doubling), read at call time."""
    return _retry.retry_ebusy(call, tries, REMOVE_FIRST_SLEEP_S, what=what)


def flock_wait(fd: int, operation: int, deadline_ns: int) -> bool:
    """flock(fd, operation) (LOCK_SH or LOCK_EX); False if ``deadline_ns``
    (time.monotonic_ns(), 0 for none) passed first.

    Without a deadline it blocks (a signal handler that raises ends the
    wait, PEP 475); with one it polls LOCK_NB.  Other errors raise OSError.
    """
    if not deadline_ns:
        fcntl.flock(fd, operation)
        return True
    pause = LOCK_POLL_FIRST_S
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        left = _retry.seconds_left(deadline_ns)
        if not left:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, LOCK_POLL_MAX_S)

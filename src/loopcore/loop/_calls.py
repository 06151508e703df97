"""How the loop ioctls are called: -errno results turned into exceptions,
EAGAIN retried, and the retry constants of every loop operation (in one
place, so tests can shrink them)."""
from __future__ import annotations

import errno
import time
from typing import Callable, Optional

from ..errors import error_from_errno

__all__ = ["ATTACH_ATTEMPTS", "ATTACH_SLEEP_BASE_US", "ATTACH_SLEEP_SPAN_US",
           "EAGAIN_ATTEMPTS", "EAGAIN_SLEEP_S", "REMOVE_ATTEMPTS", "REMOVE_FIRST_SLEEP_S",
           "check", "retry_eagain"]

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


def check(rc: int, filename: object = None, message: Optional[str] = None) -> int:
    """Raise the matching exception for a negative shim return value."""
    if rc < 0:
        raise error_from_errno(-rc, filename, message)  # type: ignore[arg-type]
    return rc


def retry_eagain(call: Callable[[], int]) -> int:
    """Run a loop ioctl wrapper, retrying EAGAIN (kernel >= 5.0 may say it)."""
    for _ in range(EAGAIN_ATTEMPTS - 1):
        rc = call()
        if rc != -errno.EAGAIN:
            return rc
        time.sleep(EAGAIN_SLEEP_S)
    return call()

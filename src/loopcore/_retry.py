"""Retry and deadline arithmetic shared by every part of loopcore: one
backoff schedule, one way to turn a timeout into a deadline and back.

The policies (how many tries, how long a first pause) stay with each
system's constants (``loop/_calls.py``, ``dm/lifecycle.py``); the
attach's own retry loop runs in C (``lc_attach``) because it runs under
the control lock, inside one C call.
"""
from __future__ import annotations

import errno
import time

from ._log import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterator, Optional

__all__ = ["pauses", "retry_ebusy", "deadline_after", "seconds_left", "expired"]

log = get_logger("retry")


def pauses(tries: int, first: float, growth: float = 2.0) -> Iterator[float]:
    """The sleeps between ``tries`` tries: ``first``, then each ``growth``
    times the one before (2: systemd's doubling backoff; 1: libdevmapper's
    fixed pause)."""
    pause = first
    for _ in range(tries - 1):
        yield pause
        pause *= growth


def retry_ebusy(call: Callable[[], int], tries: int, first: float, *, growth: float = 2.0,
                what: str = "") -> int:
    """Run ``call`` (a shim call returning -errno) up to ``tries`` times
    while it says EBUSY, sleeping by :func:`pauses` between tries: for a
    device someone holds for a moment (a udev or blkid probe, a release
    still winding down).  The last try's result is returned as it is."""
    for pause in pauses(tries, first, growth):
        rc = call()
        if rc != -errno.EBUSY:
            return rc
        if what:
            log.debug("%s: EBUSY, retrying in %.3f s", what, pause)
        time.sleep(pause)
    return call()


def deadline_after(timeout: Optional[float]) -> int:
    """The deadline, in time.monotonic_ns(), ``timeout`` seconds from now;
    0 for None (no deadline).  Never 0 for a timeout, even 0 seconds."""
    if timeout is None:
        return 0
    return time.monotonic_ns() + int(timeout * 1e9) or 1


def seconds_left(deadline_ns: int) -> Optional[float]:
    """Seconds until ``deadline_ns`` (0 when it passed); None for no deadline."""
    if not deadline_ns:
        return None
    return max(deadline_ns - time.monotonic_ns(), 0) / 1e9


def expired(deadline_ns: int) -> bool:
    """Whether ``deadline_ns`` (0: none) has passed."""
    return bool(deadline_ns) and time.monotonic_ns() >= deadline_ns

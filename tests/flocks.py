"""Who waits for a flock, from /proc/locks: a test can wait until a child
is blocked on a lock (``-> FLOCK`` lines) rather than sleep and assume it."""
from __future__ import annotations

import os
import time
from typing import Set

__all__ = ["flock_waiters", "wait_for_flock_waiter"]


def flock_waiters(path: str) -> Set[int]:
    """The pids blocked in flock() on the file at ``path``."""
    inode = os.stat(path).st_ino
    pids = set()
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            # "1: -> FLOCK  ADVISORY  WRITE 1234 00:06:92 0 EOF"
            if len(fields) >= 7 and fields[1] == "->" and fields[2] == "FLOCK" \
                    and int(fields[6].rsplit(":", 1)[1]) == inode:
                pids.add(int(fields[5]))
    return pids


def wait_for_flock_waiter(pid: int, path: str, timeout: float = 30) -> bool:
    """True once process ``pid`` is blocked in flock() on ``path``; False
    if it is not within ``timeout`` seconds (a cap, not a guess).  The
    kernel offers no event for a process starting to wait, so this looks
    at /proc/locks every millisecond."""
    deadline = time.monotonic() + timeout
    while pid not in flock_waiters(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)
    return True

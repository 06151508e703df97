"""The log state in C memory, and the C request loop's table of logs.

A log's bitmaps and counters live in a ``struct lc_ulog_log`` (the shim's
``lc_ulog_loop.h``): :class:`~.log.DirtyLog` reads and writes them in
place (its bitmaps are memoryviews of the C buffers, its counters
:class:`CField` descriptors), and the C request loop answers the I/O
path's requests from the same memory.  One state, two readers: what
Python sees after the loop answered is what the loop left.

:class:`RequestTable` is the loop's list of logs and its batch buffers;
:class:`StateLock` keeps Python's side and the loop's apart while a loop
serves.
"""
from __future__ import annotations

import threading
from typing import Any, Optional, Tuple

from .. import _c

__all__ = ["CField", "new_state", "RequestTable", "StateLock"]


class CField:
    """A counter of the log's C state (``obj.c``), read and written as an
    attribute of the owner."""

    def __init__(self, field: str) -> None:
        self.field = field

    def __get__(self, obj: Any, objtype: Optional[type] = None) -> int:
        return int(getattr(obj.c, self.field))

    def __set__(self, obj: Any, value: int) -> None:
        setattr(obj.c, self.field, value)


def new_state(uuid: bytes, luid: int, region_count: int, bitmap_bytes: int,
              pending_bytes: int, page: int) -> Tuple[Any, memoryview, memoryview, memoryview]:
    """A zeroed ``struct lc_ulog_log`` for one log, and views of its
    clean, sync and pending bitmaps.  The views keep the C buffers alive;
    the struct points at them."""
    ffi = _c.ffi
    st = ffi.new("struct lc_ulog_log *")
    st.luid = luid
    st.uuid = uuid
    st.region_count = region_count
    st.bitmap_bytes = bitmap_bytes
    st.pending_bytes = pending_bytes
    st.page = page
    st.recovering = -1
    views = []
    for field, size in (("clean", bitmap_bytes), ("sync", bitmap_bytes),
                        ("pending", pending_bytes)):
        buf = ffi.new("uint8_t[]", max(size, 1))
        setattr(st, field, buf)
        views.append(memoryview(ffi.buffer(buf, size)))
    return st, views[0], views[1], views[2]


class StateLock:
    """The server's lock on the logs: a re-entrant lock between Python
    threads, and, while a C loop may be serving (``with_c``), the shim's
    lock on the log state taken at the outermost level."""

    def __init__(self, with_c: bool) -> None:
        self._rlock = threading.RLock()
        self._depth = 0
        self._with_c = with_c

    def __enter__(self) -> "StateLock":
        self._rlock.acquire()
        self._depth += 1
        if self._depth == 1 and self._with_c:
            _c.lib.lc_ulog_lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._with_c:
            _c.lib.lc_ulog_unlock()
        self._rlock.release()


class RequestTable:
    """The logs the C loop answers for (``struct lc_ulog_table``) and the
    buffers of its batches.  Logs are linked in and out under the server's
    :class:`StateLock`."""

    def __init__(self) -> None:
        ffi, lib = _c.ffi, _c.lib
        self.c = ffi.new("struct lc_ulog_table *")
        self._slots = ffi.new("uint8_t[]", lib.LC_ULOG_BATCH * lib.LC_ULOG_SLOT)
        self._replies = ffi.new("uint8_t[]", lib.LC_ULOG_BATCH * lib.LC_ULOG_REPLY_MAX)
        self.c.slots = self._slots
        self.c.replies = self._replies
        self._reply = ffi.new("uint8_t[]", lib.LC_ULOG_REPLY_MAX)
        self.event = ffi.new("struct lc_ulog_event *")

    def add(self, state: Any) -> None:
        """Answer for this log (its ``struct lc_ulog_log``)."""
        _c.lib.lc_ulog_add(self.c, state)

    def remove(self, state: Any) -> None:
        """No longer answer for this log (before its state is dropped)."""
        _c.lib.lc_ulog_remove(self.c, state)

    @property
    def answered(self) -> int:
        """Requests the C loop answered so far."""
        return int(self.c.answered)

    def answer(self, datagram: bytes, sender: int = 0) -> Optional[bytes]:
        """The C loop's reply to one datagram, or None if it is Python's
        (nothing changed then).  The caller holds the StateLock."""
        dgram = _c.ffi.from_buffer("uint8_t[]", datagram)
        n = _c.lib.lc_ulog_answer(self.c, dgram, len(datagram), sender, self._reply)
        return _c.ffi.buffer(self._reply, n)[:] if n else None

    def attach(self, sock_fd: int, wake_fd: int, netlink: bool, busy_poll_us: int,
               python_only: bool) -> None:
        """Serve ``sock_fd`` from now on (see :meth:`serve`)."""
        c = self.c
        c.sock_fd, c.wake_fd, c.netlink = sock_fd, wake_fd, netlink
        c.spin_ns = busy_poll_us * 1000
        c.busy_until_ns = 0
        c.python_only = python_only
        c.count = c.next = c.nreplies = 0
        c.drained = 1   # nothing received yet: poll first

    def serve(self) -> int:
        """Serve until something is Python's: ``LC_ULOG_*`` (``event``
        says more)."""
        return int(_c.lib.lc_ulog_serve(self.c, self.event))

    def datagram(self) -> Tuple[bytes, int]:
        """The datagram handed to Python and its sender's port."""
        ev = self.event
        return _c.ffi.buffer(ev.data, ev.len)[:], int(ev.sender)

"""The server's end of the wire: the one-instance lock file, the netlink
connector socket, and the serving loop with its wake-up.

The loop sleeps in ``poll`` on two fds: the socket and a pipe that
:meth:`Transport.wake` writes to (a pipe, not an eventfd: Python 3.9 has
no ``os.eventfd``), so a stop is seen at once and an idle server does not
wake at all.  The poll and the receive are one call into the shim
(``lc_dmlog_recv``): a request's round trip holds up the mirror's I/O, and
this keeps it at one C call and one ``sendto`` per datagram.

:meth:`Transport.serve_table` is the same loop with the C request loop
(:mod:`.cstate`, the shim's ``lc_ulog_serve``) answering the I/O path's
requests itself, in batches (``recvmmsg``/``sendmmsg``), and handing the
rest to the same handler.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from typing import Callable, Optional

from .. import _c, errors
from .._log import get_logger
from . import protocol as P
from .cstate import RequestTable

__all__ = ["Transport", "take_lock", "open_connector", "RCVBUF"]

_log = get_logger("dmlog")

#: Receive buffer asked for (SO_RCVBUFFORCE as root, else SO_RCVBUF).
RCVBUF = 8 << 20
_SO_RCVBUFFORCE = 33
#: the largest datagram received whole (the kernel sends at most 512 bytes)
_DATAGRAM_MAX = 65536

#: handle(datagram, sender port) -> the reply, or None to drop it
Handler = Callable[[bytes, int], Optional[bytes]]


def take_lock(path: str) -> int:
    """Hold the lock file ``path`` (flock, our pid written in it); its fd.
    EBUSY (a loopcore error naming the holder's pid) if another server
    holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise errors.error_from_errno(
            errno.EBUSY, path, f"another dm-log-userspace server is running "
                               f"(pid {holder or '?'})", dm=True) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def open_connector(rcvbuf: int) -> socket.socket:
    """A netlink connector socket in dm's group (CN_IDX_DM), with a receive
    buffer of ``rcvbuf`` bytes."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                             P.NETLINK_CONNECTOR)
    except OSError as exc:
        raise errors.converted(exc, dm=True) from None
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, 0))
        sock.setsockopt(P.SOL_NETLINK, P.NETLINK_ADD_MEMBERSHIP, P.CN_IDX_DM)
    except OSError as exc:
        sock.close()
        new = errors.converted(exc, dm=True)
        if isinstance(new, OSError) and exc.errno == errno.EPERM:
            new.strerror = "joining the dm-log-userspace group needs root (CAP_NET_ADMIN)"
        raise new from None
    return sock


def _receive_failed(errno_value: int) -> None:
    if errno_value == errno.ENOBUFS:
        _log.warning("receive buffer overrun: requests were lost (the "
                     "kernel resends them after 15 s)")
    else:
        _log.error("receive failed: %s", os.strerror(errno_value))
        time.sleep(0.1)  # do not spin on a persistent error


def _send_failed(errno_value: int) -> None:
    _log.error("sending a reply failed: %s (the kernel resends after 15 s)",
               os.strerror(errno_value))


class Transport:
    """The lock, the socket and the wake-up of one running server.

    ``sock``: serve this socket instead of a netlink one (a test's fake
    kernel: a datagram socketpair, every datagram counts as the kernel's;
    it is not closed here).  Raises (and holds nothing) if the lock or the
    socket cannot be had.
    """

    def __init__(self, *, lock_file: Optional[str], rcvbuf: int,
                 sock: Optional[socket.socket] = None) -> None:
        self.netlink = sock is None
        self._owned = sock is None
        self.lock_fd = -1
        self.sock: Optional[socket.socket] = None
        self._wake_fd = self._waker_fd = -1   # the pipe's read and write ends
        self._stopping = False
        try:
            if lock_file is not None:
                self.lock_fd = take_lock(lock_file)
            self.sock = open_connector(rcvbuf) if sock is None else sock
            self._wake_fd, self._waker_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except BaseException:
            self.close()
            raise

    def wake(self) -> None:
        """Make :meth:`serve` return at once (from any thread or a signal
        handler)."""
        self._stopping = True
        if self._waker_fd >= 0:
            try:
                os.write(self._waker_fd, b"\0")
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already

    def serve(self, handle: Handler, busy_poll_us: int = 0) -> None:
        """Answer datagrams with ``handle`` until :meth:`wake`.

        ``busy_poll_us``: after each answer, poll for the next request this
        long before sleeping: requests come in bursts (one kmirrord pass
        sends several), and a thread that never sleeps needs no wake-up
        (costly between virtual CPUs)."""
        sock = self.sock
        assert sock is not None
        # the shim's one call per datagram: poll on the socket and the
        # wake-up (unless busy-polling), then a receive that never blocks
        recv = _c.lib.lc_dmlog_recv
        buf = _c.ffi.new("char[]", _DATAGRAM_MAX)
        received = _c.ffi.buffer(buf)
        sender = _c.ffi.new("uint32_t *")
        sock_fd, wake_fd = sock.fileno(), self._wake_fd
        spin_ns = busy_poll_us * 1000
        monotonic_ns = time.monotonic_ns
        busy_until = 0
        while not self._stopping:
            n = recv(sock_fd, wake_fd, not busy_until, buf, _DATAGRAM_MAX, sender)
            if n < 0:
                if n == -errno.EAGAIN:
                    if busy_until and monotonic_ns() > busy_until:
                        busy_until = 0
                elif n == -errno.ECANCELED or self._stopping:
                    break
                elif n != -errno.EINTR:
                    _receive_failed(-n)
                continue
            self._answer(handle, received[:n], sender[0])
            if spin_ns:
                busy_until = monotonic_ns() + spin_ns

    def serve_table(self, table: RequestTable, handle: Handler, busy_poll_us: int = 0,
                    python_only: bool = False) -> None:
        """As :meth:`serve`, with the C request loop answering what it owns
        from ``table``'s logs; it hands everything else to ``handle`` (and
        ``python_only``: everything)."""
        sock = self.sock
        assert sock is not None
        table.attach(sock.fileno(), self._wake_fd, self.netlink, busy_poll_us, python_only)
        lib = _c.lib
        event = table.event
        while not self._stopping:
            kind = table.serve()
            if kind == lib.LC_ULOG_DATAGRAM:
                if event.err:
                    _send_failed(event.err)
                self._answer(handle, *table.datagram())
            elif kind == lib.LC_ULOG_STOP:
                break
            elif kind == lib.LC_ULOG_RECV_ERROR:
                _receive_failed(event.err)
            elif kind == lib.LC_ULOG_SEND_ERROR:
                _send_failed(event.err)
            # LC_ULOG_IDLE: a signal or the end of a busy poll: Python's
            # handlers run, and the loop goes to sleep

    def _answer(self, handle: Handler, datagram: bytes, sender: int) -> None:
        try:
            reply = handle(datagram, sender)
        except Exception:  # a bug must not stop the other logs' service
            _log.exception("internal error on a datagram; dropped")
            return
        if reply is not None:
            self._send(self.sock, reply)

    def _send(self, sock: Optional[socket.socket], reply: bytes) -> None:
        assert sock is not None
        try:
            if self.netlink:
                sock.sendto(reply, (0, 0))  # unicast to the kernel
            else:
                sock.send(reply)
        except OSError as exc:
            _send_failed(exc.errno or errno.EIO)

    def close(self) -> None:
        """Close the socket (unless it was given), the wake-up pipe and the
        lock.  Only once :meth:`serve` returned."""
        if self.sock is not None and self._owned:
            self.sock.close()
        self.sock = None
        for name in ("_wake_fd", "_waker_fd", "lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)

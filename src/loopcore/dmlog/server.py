"""``DirtyLogServer``: the dm-log-userspace server on the netlink connector.

The kernel sends each request to connector group ``CN_IDX_DM`` (7) and
matches the reply on the request's seq.  The server:

- subscribes with ``bind((0, 0))`` and ``NETLINK_ADD_MEMBERSHIP 7``.  (The
  uapi header's example binds with ``nl_groups = 7``, which is a *bit mask*
  and joins groups 1 to 3, not 7.)  Subscribing needs CAP_NET_ADMIN, and
  the kernel accepts replies only from a sender with CAP_SYS_ADMIN: run as
  root, in the initial network namespace (the connector lives there only);
- takes a large receive buffer: an overrun makes the kernel's broadcast
  fail with -ESRCH, which it takes for a lost server (it reconnects), and
  shows here as ENOBUFS from ``recv``, which is logged and survived;
- answers every request exactly once, keyed by (uuid, luid), from one
  thread (the kernel has several threads waiting at once, and replies may
  go back in any order);
- answers a request for a log it does not hold with -ESRCH padded to the
  request's fixed reply size: that is what makes the kernel reconnect by
  itself (it re-sends CTR and RESUME, then the request) after the server
  was killed and restarted.  Any other error would be final, and for
  IN_SYNC an error silently sends writes to the primary leg only;
- accepts a CTR for a log it holds with the same arguments (each blocked
  kernel thread reconnects on its own) and answers it without data; the
  CTR of a reconnect carries a NUL and has no room for the device string;
- drops datagrams that are not from the kernel (netlink port 0) or too
  short to answer, and answers malformed ones with -EINVAL; it keeps
  serving whatever comes.

Only one server may run per machine (two would both answer, and the
kernel takes whichever reply comes first): a lock file enforces it.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import socket
import struct
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from .. import errors
from .._log import get_logger
from . import protocol as P
from .disklog import LogStore
from .log import DirtyLog, LogArgs, LogView, RequestFailed, parse_ctr, resolve_device

__all__ = ["DirtyLogServer", "DEFAULT_LOCK_FILE", "DEFAULT_STATE_DIR", "RCVBUF"]

_log = get_logger("dmlog")

DEFAULT_LOCK_FILE = "/run/loopcore-dmlog.lock"
#: State files of clustered-core logs (tmpfs: they need to outlive the
#: server, not a reboot, as a core log does not either).
DEFAULT_STATE_DIR = "/run/loopcore-dmlog"
#: Receive buffer asked for (SO_RCVBUFFORCE as root, else SO_RCVBUF).
RCVBUF = 8 << 20
_SO_RCVBUFFORCE = 33
_U64 = struct.Struct("=Q")
_PAIR = struct.Struct("=qQ")
_SYNC = struct.Struct("=Qq")
_TIMEVAL = struct.Struct("@ll")  # struct timeval: native longs
#: How often (microseconds) the serving loop wakes to see whether stop()
#: was called.
_WAKE_US = 200_000

Key = Tuple[bytes, int]


def _u64s(data: bytes, what: str) -> Tuple[int, ...]:
    if len(data) % 8:
        raise RequestFailed(errno.EINVAL, f"{what}: payload of {len(data)} bytes is not "
                                          f"a list of u64")
    return struct.unpack(f"={len(data) // 8}Q", data)


def _one_u64(data: bytes, what: str) -> int:
    if len(data) != 8:
        raise RequestFailed(errno.EINVAL, f"{what}: payload of {len(data)} bytes, "
                                          f"expected a u64")
    value: int = _U64.unpack(data)[0]
    return value


class DirtyLogServer:
    """A single-node dm-log-userspace server.

    >>> with DirtyLogServer() as server:        # serving from a thread
    ...     ...                                  # create mirrors with a userspace log
    ...     print(server.logs)

    ``lock_file``: the one-instance lock (None: none).  ``state_dir``: where
    clustered-core logs keep their bitmap across a restart of the server
    (None: nowhere; a restarted server then resyncs them fully).  ``sock``:
    serve this socket instead of a netlink one (a test's fake kernel: a
    datagram socketpair; every datagram counts as the kernel's).
    ``busy_poll_us``: after each answer, poll for the next request this long
    before sleeping: a mirror's requests come in bursts, and a serving
    thread that is awake needs no wake-up (which costs milliseconds between
    the CPUs of a virtual machine without hardware virtualization).  Costs
    up to that much CPU time after each burst; 0 (the default) sleeps at
    once.
    """

    def __init__(self, *, lock_file: Optional[str] = DEFAULT_LOCK_FILE,
                 state_dir: Optional[str] = DEFAULT_STATE_DIR,
                 sock: Optional[socket.socket] = None, rcvbuf: int = RCVBUF,
                 busy_poll_us: int = 0) -> None:
        if not isinstance(busy_poll_us, int) or isinstance(busy_poll_us, bool) \
                or busy_poll_us < 0:
            raise errors.ValueError(f"busy_poll_us must be a non-negative int, "
                                    f"got {busy_poll_us!r}")
        self.lock_file = lock_file
        self.busy_poll_us = busy_poll_us
        self.state_dir = state_dir
        self.rcvbuf = rcvbuf
        self._given_sock = sock
        self._sock: Optional[socket.socket] = None
        self._lock_fd = -1
        self._logs: Dict[Key, DirtyLog] = {}
        self._mutex = threading.RLock()
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._unknown_reported: set[Key] = set()
        self.subscribed = threading.Event()
        self._handlers: Dict[int, Callable[[DirtyLog, P.Request], bytes]] = {
            P.RT.PRESUSPEND: self._presuspend,
            P.RT.POSTSUSPEND: self._postsuspend,
            P.RT.RESUME: self._resume,
            P.RT.GET_REGION_SIZE: lambda log, req: _U64.pack(log.args.region_size),
            P.RT.IS_CLEAN: lambda log, req: P.s64(log.is_clean(_one_u64(req.data, "IS_CLEAN"))),
            P.RT.IN_SYNC: lambda log, req: P.s64(log.in_sync(_one_u64(req.data, "IN_SYNC"))),
            P.RT.FLUSH: self._flush,
            P.RT.MARK_REGION: self._mark,
            P.RT.CLEAR_REGION: self._clear,
            P.RT.GET_RESYNC_WORK: lambda log, req: _PAIR.pack(*log.get_resync_work()),
            P.RT.SET_REGION_SYNC: self._set_region_sync,
            P.RT.GET_SYNC_COUNT: lambda log, req: _U64.pack(log.sync_count),
            P.RT.STATUS_INFO: lambda log, req: log.status_info().encode() + b"\0",
            P.RT.STATUS_TABLE: lambda log, req: log.status_table().encode() + b"\0",
            P.RT.IS_REMOTE_RECOVERING: lambda log, req: _PAIR.pack(
                *log.is_remote_recovering(_one_u64(req.data, "IS_REMOTE_RECOVERING"))),
        }

    # --- the view ----------------------------------------------------------------------

    @property
    def logs(self) -> Tuple[LogView, ...]:
        """A snapshot of the logs served: uuid, luid, type, region size and
        count, sync count, log device, state."""
        with self._mutex:
            return tuple(log.view() for log in self._logs.values())

    # --- dispatch ----------------------------------------------------------------------

    def handle_datagram(self, data: bytes, sender: int = 0) -> Optional[bytes]:
        """Answer one datagram: the reply to send, or None to drop it.
        ``sender`` is the netlink port it came from (0: the kernel)."""
        if sender != 0:
            _log.warning("datagram from netlink port %d dropped: not from the kernel", sender)
            return None
        try:
            req = P.parse_datagram(data)
        except P.ProtocolError as exc:
            if exc.request is None:
                _log.warning("malformed datagram dropped: %s", exc)
                return None
            _log.warning("malformed %s request (seq %d): %s: answered -EINVAL",
                         exc.request.type_name, exc.request.seq, exc)
            return P.build_reply(exc.request, -errno.EINVAL)
        with self._mutex:
            return self._dispatch(req)

    def _dispatch(self, req: P.Request) -> bytes:
        if not 1 <= req.version <= P.REQUEST_VERSION:
            _log.warning("%s request (seq %d) with protocol version %d (this server speaks "
                         "1 to %d): answered -EINVAL", req.type_name, req.seq, req.version,
                         P.REQUEST_VERSION)
            return P.build_reply(req, -errno.EINVAL)
        rtype = req.request_type
        if rtype == P.RT.CTR:
            return self._ctr(req)
        if rtype == P.RT.DTR:
            return self._dtr(req)
        handler = self._handlers.get(rtype)
        if handler is None:
            _log.warning("unknown request type %d (seq %d): answered -EINVAL", rtype, req.seq)
            return P.build_reply(req, -errno.EINVAL)
        log = self._logs.get(req.key)
        if log is None:
            # The kernel reconnects on -ESRCH (re-sends CTR and RESUME, then
            # this request); the padding keeps its reply capacity (see
            # protocol).  Reported once per log, not once per request.
            if req.key not in self._unknown_reported:
                self._unknown_reported.add(req.key)
                _log.info("%s for unknown log %s/%#x: -ESRCH (the kernel reconnects)",
                          req.type_name, req.uuid.decode("ascii", "replace"), req.luid)
            return P.build_reply(req, -errno.ESRCH)
        try:
            payload = handler(log, req)
        except RequestFailed as exc:
            _log.error("%s (seq %d): %s: answered -%s", req.type_name, req.seq, exc,
                       errno.errorcode.get(exc.errno, str(exc.errno)))
            return P.build_reply(req, -exc.errno)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s %s seq %d data %s -> %s", log.name, req.type_name, req.seq,
                       req.data.hex(), payload.hex())
        return P.build_reply(req, 0, payload)

    # --- constructor and destructor ------------------------------------------------------

    def _ctr(self, req: P.Request) -> bytes:
        name = f"{req.uuid.decode('ascii', 'replace')}/{req.luid:#x}"
        try:
            args = parse_ctr(req.data)
        except ValueError as exc:
            _log.error("bad CTR for %s: %s: answered -EINVAL", name, exc)
            return P.build_reply(req, -errno.EINVAL)
        existing = self._logs.get(req.key)
        if existing is not None:
            if existing.args.text == args.text:
                # each kernel thread blocked on a lost server reconnects on
                # its own: the second CTR is a duplicate, and the reconnect
                # CTR has no room for a reply
                _log.debug("%s: duplicate CTR accepted", name)
                return P.build_reply(req)
            _log.error("CTR for existing log %s with other arguments (%r, held: %r): "
                       "answered -EINVAL", name, args.text, existing.args.text)
            return P.build_reply(req, -errno.EINVAL)
        # The CTR of a table load carries the string without its NUL; the
        # one the kernel sends when it reconnects to a (restarted) server
        # carries the NUL and accepts no reply data.
        reconnect = req.data.endswith(b"\0")
        if len(req.data) >= P.MAX_PAYLOAD and not reconnect:
            _log.warning("%s: CTR string of %d bytes: its NUL-terminated copy will not fit "
                         "when the kernel reconnects after a restart of the server",
                         name, len(req.data))
        try:
            store = self._open_store(req, args, reconnect)
        except (OSError, ValueError) as exc:
            err = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EINVAL
            _log.error("CTR for %s: log device %s: %s: answered -%s", name, args.device,
                       exc, errno.errorcode.get(err, str(err)))
            return P.build_reply(req, -err)
        log = DirtyLog(req.uuid, req.luid, args, store=store, reconnected=reconnect)
        self._logs[req.key] = log
        self._unknown_reported.discard(req.key)
        where = f" on {store.path}" if store is not None and store.durable else ""
        if reconnect:
            _log.info("restart recovery: %s %s reconstructed on the kernel's reconnect%s, "
                      "%d regions of %d sectors", name, args.kind, where, log.region_count,
                      args.region_size)
        else:
            _log.info("log created: %s %s%s, %d regions of %d sectors%s", name, args.kind,
                      where, log.region_count, args.region_size,
                      "" if args.sync == "default" else f", {args.sync}")
        payload = b""
        if args.device is not None and req.version >= 2 and not reconnect:
            # the kernel then opens the log device itself (dm_get_device):
            # it shows in the mirror's deps and stays open while the table
            # lives; the reply must end in NUL and fit DM_NAME_LEN (128)
            dev = args.device.encode() + b"\0"
            if len(dev) <= 128:
                payload = dev
        return P.build_reply(req, 0, payload)

    def _open_store(self, req: P.Request, args: LogArgs, reconnect: bool) -> Optional[LogStore]:
        if args.device is not None:
            return LogStore(resolve_device(args.device), args.region_count, durable=True)
        if self.state_dir is None:
            return None
        path = self._state_path(req.key)
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            if not reconnect:
                # a new table: whatever a luid of the same value left is stale
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            return LogStore(path, args.region_count, durable=False, create=True)
        except (OSError, ValueError) as exc:
            _log.warning("no state file for core log %s/%#x (%s): a restart of the server "
                         "will resync it fully", req.uuid.decode("ascii", "replace"),
                         req.luid, exc)
            return None

    def _state_path(self, key: Key) -> str:
        assert self.state_dir is not None
        digest = hashlib.sha256(key[0]).hexdigest()[:24]
        return os.path.join(self.state_dir, f"core-{digest}-{key[1]:016x}.log")

    def _dtr(self, req: P.Request) -> bytes:
        log = self._logs.pop(req.key, None)
        self._unknown_reported.discard(req.key)
        if log is not None:
            # The kernel suspends a table (POSTSUSPEND wrote everything)
            # before it destroys it.  Nothing is written here: after a table
            # reload the old log's DTR comes when the new one already owns
            # the log device.
            log.close()
            if log.store is not None and not log.store.durable:
                try:
                    os.unlink(log.store.path)
                except OSError:
                    pass
            _log.info("log removed: %s", log.name)
        return P.build_reply(req)

    # --- the other requests ----------------------------------------------------------------

    def _presuspend(self, log: DirtyLog, req: P.Request) -> bytes:
        log.presuspend()
        return b""

    def _postsuspend(self, log: DirtyLog, req: P.Request) -> bytes:
        log.postsuspend()
        return b""

    def _resume(self, log: DirtyLog, req: P.Request) -> bytes:
        log.resume()
        return b""

    def _flush(self, log: DirtyLog, req: P.Request) -> bytes:
        log.flush(_u64s(req.data, "FLUSH"))
        return b""

    def _mark(self, log: DirtyLog, req: P.Request) -> bytes:
        log.mark(_u64s(req.data, "MARK_REGION"))
        return b""

    def _clear(self, log: DirtyLog, req: P.Request) -> bytes:
        log.clear(_u64s(req.data, "CLEAR_REGION"))
        return b""

    def _set_region_sync(self, log: DirtyLog, req: P.Request) -> bytes:
        if len(req.data) != _SYNC.size:
            raise RequestFailed(errno.EINVAL, f"SET_REGION_SYNC: payload of {len(req.data)} "
                                              f"bytes, expected 16")
        region, in_sync = _SYNC.unpack(req.data)
        log.set_region_sync(region, in_sync)
        return b""

    # --- lifetime ------------------------------------------------------------------------

    def _take_lock(self) -> None:
        if self.lock_file is None or self._lock_fd >= 0:
            return
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise errors.error_from_errno(
                errno.EBUSY, self.lock_file,
                f"another dm-log-userspace server is running (pid {holder or '?'})",
                dm=True) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _open_socket(self) -> socket.socket:
        if self._given_sock is not None:
            return self._given_sock
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                 P.NETLINK_CONNECTOR)
        except OSError as exc:
            raise errors.converted(exc, dm=True) from None
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, self.rcvbuf)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.bind((0, 0))
            sock.setsockopt(P.SOL_NETLINK, P.NETLINK_ADD_MEMBERSHIP, P.CN_IDX_DM)
        except OSError as exc:
            sock.close()
            new = errors.converted(exc, dm=True)
            if isinstance(new, OSError) and exc.errno == errno.EPERM:
                new.strerror = "joining the dm-log-userspace group needs root (CAP_NET_ADMIN)"
            raise new from None
        return sock

    def _setup(self) -> None:
        if self._sock is not None:
            raise errors.ValueError("the server is already running")
        self._take_lock()
        try:
            self._sock = self._open_socket()
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                  _TIMEVAL.pack(0, _WAKE_US))
        except BaseException:
            self._release()
            raise
        self._stopping = False
        self.subscribed.set()
        where = "the netlink connector (group 7)" if self._given_sock is None \
            else "the given socket"
        _log.info("listening on %s, pid %d", where, os.getpid())

    def start(self) -> "DirtyLogServer":
        """Serve from a background thread; returns once subscribed (requests
        sent from now on are received)."""
        self._setup()
        self._thread = threading.Thread(target=self._loop, name="loopcore-dmlog", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (from another thread or a
        signal handler)."""
        self._setup()
        try:
            self._loop()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Stop serving, write every disk log (and core state file), close
        everything and release the lock.  Idempotent."""
        self._stopping = True   # the loop sees it within its receive timeout
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            self._thread = None
            self._shutdown()

    def __enter__(self) -> "DirtyLogServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        sock = self._sock
        assert sock is not None
        netlink = self._given_sock is None
        # One blocking recvfrom and one sendto per request, nothing else (a
        # request's round trip holds up the mirror's I/O).  SO_RCVTIMEO (set
        # in _setup) bounds how long stop() waits for the loop to notice.
        recvfrom = sock.recvfrom
        handle = self.handle_datagram
        spin_ns = self.busy_poll_us * 1000
        monotonic_ns = time.monotonic_ns
        dontwait = socket.MSG_DONTWAIT
        busy_until = 0
        while not self._stopping:
            try:
                if busy_until:
                    # busy-poll for the next request for a while after an
                    # answer: requests come in bursts (one kmirrord pass
                    # sends several), and a thread that never sleeps needs
                    # no wake-up (costly between virtual CPUs)
                    try:
                        data, addr = recvfrom(65536, dontwait)
                    except BlockingIOError:
                        if monotonic_ns() > busy_until:
                            busy_until = 0
                        continue
                else:
                    data, addr = recvfrom(65536)
            except BlockingIOError:   # the receive timeout: look at _stopping
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    _log.warning("receive buffer overrun: requests were lost (the "
                                 "kernel resends them after 15 s)")
                    continue
                if exc.errno == errno.EINTR:
                    continue
                if self._stopping:
                    break
                _log.error("receive failed: %s", exc)
                time.sleep(0.1)  # do not spin on a persistent error
                continue
            sender = addr[0] if netlink and isinstance(addr, tuple) else 0
            try:
                reply = handle(data, sender)
            except Exception:  # a bug must not stop the other logs' service
                _log.exception("internal error on a datagram; dropped")
                continue
            if reply is not None:
                self._send(sock, reply, netlink)
            if spin_ns:
                busy_until = monotonic_ns() + spin_ns

    def _send(self, sock: socket.socket, reply: bytes, netlink: bool) -> None:
        try:
            if netlink:
                sock.sendto(reply, (0, 0))  # unicast to the kernel
            else:
                sock.send(reply)
        except OSError as exc:
            _log.error("sending a reply failed: %s (the kernel resends after 15 s)", exc)

    def persist_all(self) -> None:
        """Write every live log now (what :meth:`stop` does before closing)."""
        with self._mutex:
            for log in self._logs.values():
                if log.state == "resumed":
                    try:
                        log.persist_all()
                    except RequestFailed as exc:
                        _log.error("%s", exc)

    def _shutdown(self) -> None:
        self.persist_all()
        with self._mutex:
            for log in self._logs.values():
                log.close()
            count = len(self._logs)
            self._logs.clear()
        self._release()
        _log.info("stopped (%d log%s written)", count, "" if count == 1 else "s")

    def _release(self) -> None:
        self.subscribed.clear()
        if self._sock is not None and self._sock is not self._given_sock:
            self._sock.close()
        self._sock = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

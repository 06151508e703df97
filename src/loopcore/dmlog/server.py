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

What each request does is the request table's (:mod:`.requests`); the
lock, the socket and the serving loop are :mod:`.transport`'s; this module
holds the logs, makes and unmakes them (CTR, DTR) and answers errors.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from typing import Dict, Optional, Tuple

from .. import errors
from .._log import get_logger
from .._validate import check_int
from . import protocol as P
from .cstate import RequestTable, StateLock
from .ctr import parse_ctr
from .disklog import open_store, remove_state_file, state_path
from .log import DirtyLog, LogView, RequestFailed
from .requests import REQUESTS, error_padding
from .transport import RCVBUF, Transport

__all__ = ["DirtyLogServer", "DEFAULT_LOCK_FILE", "DEFAULT_STATE_DIR", "RCVBUF"]

_log = get_logger("dmlog")

DEFAULT_LOCK_FILE = "/run/loopcore-dmlog.lock"
#: State files of clustered-core logs (tmpfs: they need to outlive the
#: server, not a reboot, as a core log does not either).
DEFAULT_STATE_DIR = "/run/loopcore-dmlog"

Key = Tuple[bytes, int]
# CTR and DTR make and unmake logs: not rows of the request table (plain
# ints: an enum member's lookup costs more than the comparison, per request)
_CTR, _DTR = int(P.RT.CTR), int(P.RT.DTR)


def _error(req: P.Request, errno_value: int) -> bytes:
    """An error reply, padded to the type's fixed reply size (see protocol)."""
    return P.build_reply(req, -errno_value, error_padding(req.request_type))


def _errname(errno_value: int) -> str:
    return errno.errorcode.get(errno_value, str(errno_value))


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
                 busy_poll_us: int = 0, c_loop: bool = True) -> None:
        self.busy_poll_us = check_int("busy_poll_us", busy_poll_us)
        self.c_loop = bool(c_loop)
        self.lock_file = lock_file
        self.state_dir = state_dir
        self.rcvbuf = rcvbuf
        self._given_sock = sock
        self._transport: Optional[Transport] = None
        self._logs: Dict[Key, DirtyLog] = {}
        # the logs' state, between Python threads and the C loop
        self._mutex = StateLock(with_c=self.c_loop)
        self._table = RequestTable() if self.c_loop else None
        self._thread: Optional[threading.Thread] = None
        self._unknown_reported: set[Key] = set()
        self.subscribed = threading.Event()

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
            return _error(exc.request, errno.EINVAL)
        with self._mutex:
            return self._dispatch(req)

    def _answer_as_served(self, data: bytes, sender: int = 0) -> Optional[bytes]:
        """What the serving loop answers to one datagram: the C loop's reply
        where it owns the request, else :meth:`handle_datagram`'s (for the
        differential tests; the loop itself does this in C)."""
        with self._mutex:
            reply = self._table.answer(data, sender) if self._table is not None else None
            return reply if reply is not None else self.handle_datagram(data, sender)

    def _dispatch(self, req: P.Request) -> bytes:
        if not 1 <= req.version <= P.REQUEST_VERSION:
            _log.warning("%s request (seq %d) with protocol version %d (this server speaks "
                         "1 to %d): answered -EINVAL", req.type_name, req.seq, req.version,
                         P.REQUEST_VERSION)
            return _error(req, errno.EINVAL)
        rtype = req.request_type
        if rtype == _CTR:
            return self._ctr(req)
        if rtype == _DTR:
            return self._dtr(req)
        row = REQUESTS.get(rtype)
        if row is None:
            _log.warning("unknown request type %d (seq %d): answered -EINVAL", rtype, req.seq)
            return _error(req, errno.EINVAL)
        log = self._logs.get(req.key)
        if log is None:
            # The kernel reconnects on -ESRCH (re-sends CTR and RESUME, then
            # this request); the padding keeps its reply capacity (see
            # protocol).  Reported once per log, not once per request.
            if req.key not in self._unknown_reported:
                self._unknown_reported.add(req.key)
                _log.info("%s for unknown log %s/%#x: -ESRCH (the kernel reconnects)",
                          req.type_name, req.uuid.decode("ascii", "replace"), req.luid)
            return _error(req, errno.ESRCH)
        decode, operate, encode, _ = row
        try:
            payload = encode(operate(log, *decode(req.data)))
        except RequestFailed as exc:
            _log.error("%s (seq %d): %s: answered -%s", req.type_name, req.seq, exc,
                       _errname(exc.errno))
            return _error(req, exc.errno)
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
            return _error(req, errno.EINVAL)
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
            return _error(req, errno.EINVAL)
        # The CTR of a table load carries the string without its NUL; the
        # one the kernel sends when it reconnects to a (restarted) server
        # carries the NUL and accepts no reply data.
        reconnect = req.data.endswith(b"\0")
        if len(req.data) >= P.MAX_PAYLOAD and not reconnect:
            _log.warning("%s: CTR string of %d bytes: its NUL-terminated copy will not fit "
                         "when the kernel reconnects after a restart of the server",
                         name, len(req.data))
        try:
            store = open_store(args, req.key, self.state_dir, reconnect)
        except (OSError, ValueError) as exc:
            err = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EINVAL
            _log.error("CTR for %s: log device %s: %s: answered -%s", name, args.device,
                       exc, _errname(err))
            return _error(req, err)
        # kept only beside a store: SET_REGION_SYNC(0), which drops it, then
        # writes the store, and so is Python's, never the C loop's
        marker = state_path(self.state_dir, req.key, "synced") \
            if self.state_dir and store is not None else None
        log = DirtyLog(req.uuid, req.luid, args, store=store, reconnected=reconnect,
                       synced_marker=marker)
        if not reconnect:
            log.mark_synced(False)   # a new table: what a luid of the same value left is stale
        self._logs[req.key] = log
        if self._table is not None:
            self._table.add(log.c)
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
            # lives; the reply must end in NUL and fit DM_NAME_LEN
            dev = args.device.encode() + b"\0"
            if len(dev) <= P.CTR_REPLY_CAPACITY:
                payload = dev
        return P.build_reply(req, 0, payload)

    def _dtr(self, req: P.Request) -> bytes:
        log = self._logs.pop(req.key, None)
        self._unknown_reported.discard(req.key)
        if log is not None:
            if self._table is not None:
                self._table.remove(log.c)
            # The kernel suspends a table (POSTSUSPEND wrote everything)
            # before it destroys it.  Nothing is written here: after a table
            # reload the old log's DTR comes when the new one already owns
            # the log device.
            log.close()
            log.mark_synced(False)
            if log.store is not None and not log.store.durable:
                remove_state_file(log.store)
            _log.info("log removed: %s", log.name)
        return P.build_reply(req)

    # --- lifetime ------------------------------------------------------------------------

    def _setup(self) -> Transport:
        if self._transport is not None:
            raise errors.ValueError("the server is already running")
        self._transport = Transport(lock_file=self.lock_file, rcvbuf=self.rcvbuf,
                                    sock=self._given_sock)
        self.subscribed.set()
        where = "the given socket" if self._given_sock is not None \
            else "the netlink connector (group 7)"
        _log.info("listening on %s, pid %d", where, os.getpid())
        return self._transport

    def start(self) -> "DirtyLogServer":
        """Serve from a background thread; returns once subscribed (requests
        sent from now on are received)."""
        self._thread = threading.Thread(target=self._serve, name="loopcore-dmlog",
                                        args=(self._setup(),), daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (from another thread or a
        signal handler)."""
        transport = self._setup()
        try:
            self._serve(transport)
        finally:
            self._shutdown()

    def _serve(self, transport: Transport) -> None:
        if self._table is None:
            transport.serve(self.handle_datagram, self.busy_poll_us)
        else:
            # a verbose server logs every request: Python answers them all
            transport.serve_table(self._table, self.handle_datagram, self.busy_poll_us,
                                  python_only=_log.isEnabledFor(logging.DEBUG))

    def stop(self) -> None:
        """Stop serving, write every disk log (and core state file), close
        everything and release the lock.  Idempotent."""
        transport = self._transport
        if transport is not None:
            transport.wake()   # the serving loop returns at once
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            self._thread = None
            self._shutdown()

    def __enter__(self) -> "DirtyLogServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
                if self._table is not None:
                    self._table.remove(log.c)
                log.close()
            count = len(self._logs)
            self._logs.clear()
        self._release()
        _log.info("stopped (%d log%s written)", count, "" if count == 1 else "s")

    def _release(self) -> None:
        self.subscribed.clear()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

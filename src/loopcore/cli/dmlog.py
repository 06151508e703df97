"""``loopcore dmlog serve``: the dm-log-userspace server in the foreground.

``python -m loopcore.dmlog serve ...`` is the same command
(``loopcore.cli.main(["dmlog", ...])``), under the same rules as every
``loopcore`` command (:mod:`._rules`): usage errors exit 2, a failure is
one line on stderr and exit status 1.

Behaviour a supervisor can rely on:

- one line per significant event on stderr (log created, resumed from disk,
  resync finished, restart recovery, errors); ``-v`` adds every request;
- readiness: ``--pidfile PATH`` is written only once the server has joined
  the connector group (a script can wait for the file), and ``READY=1``
  goes to ``$NOTIFY_SOCKET`` (systemd ``Type=notify``) at the same moment;
- SIGTERM and SIGINT stop it after every log was written; exit status 0.
  Failing to start (another server holds the lock, no privileges) is one
  line on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from typing import Optional, TypeVar

from .._log import get_logger
from ..dmlog import DEFAULT_LOCK_FILE, DEFAULT_STATE_DIR, DirtyLogServer

__all__ = ["add_parser"]

_P = TypeVar("_P", bound=argparse.ArgumentParser)

_log = get_logger("dmlog")


def add_parser(subparsers: "argparse._SubParsersAction[_P]") -> None:
    """Add ``dmlog`` (with its ``serve`` subcommand) to ``subparsers``."""
    parser = subparsers.add_parser(
        "dmlog", help="dm-log-userspace server for dm-mirror",
        description="A single-node dm-log-userspace server: dirty logs for mirrors whose "
                    "table says 'mirror userspace ...'.")
    sub = parser.add_subparsers(dest="dmlog_command", metavar="COMMAND")
    sub.required = True
    serve_p = sub.add_parser("serve", help="serve in the foreground until SIGTERM/SIGINT",
                             description="Serve dm-log-userspace requests in the foreground; "
                                         "SIGTERM or SIGINT write every log and stop.")
    serve_p.add_argument("--pidfile", metavar="PATH",
                         help="write the pid here once subscribed (removed at exit)")
    serve_p.add_argument("--lock-file", metavar="PATH", default=DEFAULT_LOCK_FILE,
                         help=f"one server per machine (default {DEFAULT_LOCK_FILE})")
    serve_p.add_argument("--state-dir", metavar="DIR", default=DEFAULT_STATE_DIR,
                         help="where clustered-core logs survive a restart of the server "
                              f"(default {DEFAULT_STATE_DIR}; '' for nowhere)")
    serve_p.add_argument("--busy-poll-us", metavar="US", type=_microseconds, default=0,
                         help="after each answer, poll for the next request this long "
                              "instead of sleeping (lower latency, more CPU; default 0)")
    serve_p.add_argument("--reference-loop", action="store_true",
                         help="answer every request in Python (the reference the C "
                              "request loop is tested against; slower)")
    serve_p.add_argument("-v", "--verbose", action="store_true",
                         help="log every request, not only significant events")
    serve_p.set_defaults(func=serve)


def _microseconds(text: str) -> int:
    try:
        value = int(text, 10) if text.isascii() and text.isdigit() else -1
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a non-negative number of microseconds: {text!r}")
    return value


def notify(message: str) -> bool:
    """Send ``message`` (``READY=1`` ...) to systemd's ``$NOTIFY_SOCKET``;
    False if there is none or it failed (not an error: no supervisor)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), addr)
        return True
    except OSError as exc:
        _log.warning("could not notify %s: %s", path, exc)
        return False


def _stderr_logging(verbose: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("loopcore dmlog: %(message)s"))
    logger = logging.getLogger("loopcore.dmlog")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False  # LOOPCORE_DEBUG's handler would print each line twice
    return handler


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT; the exit status."""
    handler = _stderr_logging(bool(getattr(args, "verbose", False)))
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    # Blocked before the server thread starts, so that the thread inherits
    # the mask and this thread takes them in sigwait().
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    pidfile: Optional[str] = args.pidfile
    try:
        server = DirtyLogServer(lock_file=args.lock_file or None,
                                state_dir=args.state_dir or None,
                                busy_poll_us=args.busy_poll_us,
                                c_loop=not getattr(args, "reference_loop", False))
        server.start()
        try:
            if pidfile:
                tmp = f"{pidfile}.{os.getpid()}.tmp"
                with open(tmp, "w") as f:
                    f.write(f"{os.getpid()}\n")
                os.replace(tmp, pidfile)  # appears whole, never half written
            notify(f"READY=1\nMAINPID={os.getpid()}")
            signum = signal.sigwait(stop_signals)
            _log.info("%s: writing every log and stopping", signal.Signals(signum).name)
            notify("STOPPING=1")
        finally:
            server.stop()
            if pidfile:
                try:
                    os.unlink(pidfile)
                except OSError:
                    pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        logging.getLogger("loopcore.dmlog").removeHandler(handler)
    return 0


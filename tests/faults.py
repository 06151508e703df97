"""Fault injection for tests: fail chosen syscalls in a child process.

A forked child installs a seccomp filter whose matching calls go to a
supervisor (SECCOMP_RET_USER_NOTIF): this process, the parent.  The parent
fails the first ``times`` matches of each :class:`Fault` with its errno and
lets every later one through (SECCOMP_USER_NOTIF_FLAG_CONTINUE); every
call the filter does not match runs untouched, without a round trip.

    from faults import Fault, run_with_faults, LOOP_CONFIGURE, ALWAYS

    def code(ctx):
        loopcore.attach(image)                  # LOOP_CONFIGURE fails: EBUSY

    result = run_with_faults(code, [Fault("ioctl", request=LOOP_CONFIGURE,
                                          errno=errno.EBUSY, times=ALWAYS)],
                             watch=image.parent)
    result.error.type, result.error.errno       # 'DeviceBusyError', 16
    result.leaked_fds, result.bound             # {} {}
    result.stats[0].injected                    # how often it failed the call

The child is a fork of the caller (no interpreter start-up, loopcore
already imported).  It runs ``setup(ctx)`` without faults, then installs the
filter, sends the listener fd to the parent over a unix socketpair
(SCM_RIGHTS) and runs ``code(ctx)``; ``code`` and ``setup`` are callables or
source strings (exec'd with ``ctx`` in scope).  Afterwards it reports back
as JSON: what ``code`` raised (type, errno, filename, message), the fds it
left open that were not open before, the loop devices left bound to files
under ``watch``, and ``ctx.report``.  The child always ends with
``os._exit`` and never returns into the caller's stack; the parent kills it
(SIGKILL) at the end whatever happened, and every wait has a deadline, so a
child that hangs or dies costs at most ``timeout`` seconds.

``ctx.disarm()`` stops injecting (matching calls then pass), e.g. to check
and clean up after a failure; the child disarms itself before it collects
its report.  ``interrupt_after`` (seconds) makes a SIGALRM handler raise
:class:`Interrupted` in the child once that time is up: with a call that
fails with EINTR for ever, PEP 475 says retry as long as signal handlers
do not raise, so this is how such a retry loop is expected to end.

x86_64 and aarch64; needs root (or CAP_SYS_ADMIN) only for what the code
itself does: the filter is installed with PR_SET_NO_NEW_PRIVS.
"""
from __future__ import annotations

import array
import ctypes
import dataclasses
import errno as _errno
import fcntl
import json
import os
import platform
import re
import select
import signal
import socket
import struct
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Union

__all__ = [
    "Fault", "run_with_faults", "ChildResult", "ErrorInfo", "FaultStats", "Interrupted",
    "FaultToolError", "ONCE", "ALWAYS", "bound_under", "open_fds", "fast_retries",
    "dm_ioctl", "SYSCALLS",
]

ONCE = 1
ALWAYS: Optional[int] = None

# --- request numbers the loopcore tests fail -------------------------------------

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
BLKROGET = 0x125E
BLKFLSBUF = 0x1261
BLKSSZGET = 0x1268
BLKGETSIZE64 = 0x80081272
BLKGETDISKSEQ = 0x80081280


def dm_ioctl(nr: int) -> int:
    """_IOWR(0xfd, nr, struct dm_ioctl): the device-mapper ioctl request ``nr``."""
    return 0xC138FD00 | nr


DM_DEV_CREATE = dm_ioctl(3)
DM_DEV_REMOVE = dm_ioctl(4)
DM_DEV_SUSPEND = dm_ioctl(6)
DM_TABLE_LOAD = dm_ioctl(9)

# --- seccomp ---------------------------------------------------------------------

# syscall numbers: (x86_64, aarch64); None where the architecture has none
_SYSCALL_TABLE = {
    "read": (0, 63), "write": (1, 64), "open": (2, None), "close": (3, 57),
    "ioctl": (16, 29), "pread64": (17, 67), "pwrite64": (18, 68), "flock": (73, 32),
    "fsync": (74, 82), "fdatasync": (75, 83), "openat": (257, 56), "newfstatat": (262, 79),
    "statx": (332, 291), "sync_file_range": (277, 84), "seccomp": (317, 277),
}
_ARCHES = {"x86_64": (0, 0xC000003E), "aarch64": (1, 0xC00000B7)}  # (column, AUDIT_ARCH)
_MACHINE = platform.machine()
if _MACHINE not in _ARCHES:  # pragma: no cover - documented limit
    raise ImportError(f"faults: unsupported architecture {_MACHINE}")
_COLUMN, AUDIT_ARCH = _ARCHES[_MACHINE]
#: name -> syscall number on this machine
SYSCALLS: Dict[str, int] = {name: nrs[_COLUMN] for name, nrs in _SYSCALL_TABLE.items()
                            if nrs[_COLUMN] is not None}  # type: ignore[misc]
# where the path argument sits, for Fault(path=...)
_PATH_ARG = {"open": 0, "openat": 1, "newfstatat": 1, "statx": 1}

PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100    # _IOWR('!', 0, struct seccomp_notif)
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101    # _IOWR('!', 1, struct seccomp_notif_resp)
SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102  # _IOW('!', 2, __u64)
_NOTIF = struct.Struct("=QIIiIQ6Q")      # id, pid, flags, seccomp_data (nr, arch, ip, args)
_RESP = struct.Struct("=QqiI")           # id, val, error, flags
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
_OFF_NR, _OFF_ARCH, _OFF_ARG1_LO = 0, 4, 24  # seccomp_data offsets (little-endian)


class FaultToolError(RuntimeError):
    """The tool itself failed (setup raised, seccomp refused, the child
    died before it installed its filter ...): not a result of the test."""


class Interrupted(Exception):
    """Raised in the child by the SIGALRM handler ``interrupt_after`` arms."""


@dataclasses.dataclass
class Fault:
    """Fail a syscall: ``Fault("ioctl", request=LOOP_CONFIGURE, errno=EBUSY)``.

    ``syscall`` is a name from :data:`SYSCALLS` or a number.  ``request``
    matches only calls whose second argument (low 32 bits) equals it: the
    request of an ioctl, flock's operation.  ``path`` is a regular
    expression the path argument of open/openat/newfstatat/statx must match
    in full (read from the child's memory).  The first ``after`` matching
    calls pass (0: none; to fail part-way through a burst); the next
    ``times`` fail with ``errno`` (``ONCE`` = 1; ``ALWAYS`` (None) fails
    every one).  Later matches pass.
    """

    syscall: Union[str, int]
    request: Optional[int] = None
    errno: int = _errno.EIO
    times: Optional[int] = ONCE
    path: Optional[str] = None
    after: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.syscall, str) and self.syscall not in SYSCALLS:
            raise ValueError(f"unknown syscall {self.syscall!r} on {_MACHINE}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1, or ALWAYS (None)")
        if self.errno <= 0:
            raise ValueError("errno must be positive")
        if self.after < 0:
            raise ValueError("after must be >= 0")
        if self.path is not None and self.syscall not in _PATH_ARG:
            raise ValueError(f"path= works with {sorted(_PATH_ARG)}, not {self.syscall!r}")

    @property
    def nr(self) -> int:
        return SYSCALLS[self.syscall] if isinstance(self.syscall, str) else self.syscall


@dataclasses.dataclass
class FaultStats:
    """Per fault, calls seen while armed: ``injected`` failed, ``passed`` let through."""

    injected: int = 0
    passed: int = 0


@dataclasses.dataclass
class ErrorInfo:
    """What ``code`` raised."""

    type: str
    classes: List[str]  # the exception class and its bases
    errno: Optional[int]
    filename: Optional[str]
    filename2: Optional[str]
    strerror: Optional[str]
    message: str
    traceback: str

    @property
    def is_oserror(self) -> bool:
        return "OSError" in self.classes

    def __str__(self) -> str:
        return f"{self.type}({self.errno}, {self.strerror!r}, {self.filename!r}): {self.message}"


@dataclasses.dataclass
class ChildResult:
    """The child's report.  ``error`` is None when ``code`` returned.

    ``timed_out``: no report within ``timeout`` (a hang); ``crashed``: the
    child died without one (then ``output`` holds its stdout+stderr).
    ``bound``: {"/dev/loopN": backing} for files under ``watch`` when the
    child reported; ``leaked_fds``: {fd: target} open after ``code`` that
    were not open before it.
    """

    error: Optional[ErrorInfo] = None
    report: Dict[str, Any] = dataclasses.field(default_factory=dict)
    leaked_fds: Dict[int, str] = dataclasses.field(default_factory=dict)
    bound: Dict[str, str] = dataclasses.field(default_factory=dict)
    stats: List[FaultStats] = dataclasses.field(default_factory=list)
    timed_out: bool = False
    crashed: Optional[str] = None
    output: str = ""
    seconds: float = 0.0

    @property
    def finished(self) -> bool:
        """The child ran ``code`` to the end (returned or raised) and reported."""
        return not self.timed_out and self.crashed is None

    @property
    def injected(self) -> int:
        return sum(s.injected for s in self.stats)


# --- helpers usable in both processes ------------------------------------------------

def bound_under(directory: Union[str, "os.PathLike[str]"]) -> Dict[str, str]:
    """Loop devices bound to files under ``directory``: {"/dev/loopN": backing}."""
    prefix = os.path.join(os.fspath(directory), "")
    found = {}
    for entry in os.listdir("/sys/block"):
        if not (entry.startswith("loop") and entry[4:].isdigit()):
            continue
        try:
            with open(f"/sys/block/{entry}/loop/backing_file") as f:
                backing = f.read().rstrip("\n")
        except OSError:
            continue  # unbound, or going away
        if backing.startswith(prefix):
            found[f"/dev/{entry}"] = backing
    return found


def open_fds() -> Dict[int, str]:
    """This process's fds and what they point at."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue  # the fd listdir itself used
    return fds


def fast_retries() -> None:
    """Shrink loopcore.loop's retry policy, so an ALWAYS fault costs
    milliseconds instead of seconds: every ``*_ATTEMPTS`` to at most 8, every
    sleep (``*_SLEEP*``: ``_US`` microseconds, ``_S`` seconds) to at most 2 ms.
    A ONCE fault is still retried; ALWAYS still outlasts the retries.
    Call it in the child (``setup``)."""
    from loopcore.loop import _calls as loop  # every retry constant lives there
    for name, value in list(vars(loop).items()):
        if not name.isupper() or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if name.endswith("_ATTEMPTS"):
            setattr(loop, name, min(value, 8))
        elif "SLEEP" in name and name.endswith("_US"):
            setattr(loop, name, min(value, 2000))
        elif "SLEEP" in name and name.endswith("_S"):
            setattr(loop, name, min(value, 0.002))


def describe_error(exc: BaseException) -> Dict[str, Any]:
    def text(value: object) -> Optional[str]:
        return None if value is None else os.fsdecode(value) if isinstance(
            value, (str, bytes)) else str(value)
    is_os = isinstance(exc, OSError)
    return {
        "type": type(exc).__name__,
        "classes": [c.__name__ for c in type(exc).__mro__],
        "errno": exc.errno if is_os else None,  # type: ignore[union-attr]
        "filename": text(exc.filename) if is_os else None,  # type: ignore[union-attr]
        "filename2": text(exc.filename2) if is_os else None,  # type: ignore[union-attr]
        "strerror": exc.strerror if is_os else None,  # type: ignore[union-attr]
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


# --- the child -------------------------------------------------------------------------

class Context:
    """What ``setup`` and ``code`` get in the child.

    ``state``: anything, from ``setup`` to ``code``; ``report``: a JSON-able
    dict sent back as ``ChildResult.report``; ``disarm()``: stop injecting.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._armed = False
        self.state: Dict[str, Any] = {}
        self.report: Dict[str, Any] = {}

    def disarm(self) -> None:
        """Let every later matching call pass (waits for the parent's ack)."""
        if not self._armed:
            return
        _send(self._sock, {"op": "disarm"})
        reply = _recv(self._sock)[0]
        if reply is None or reply.get("op") != "disarmed":
            raise FaultToolError(f"supervisor did not ack disarm: {reply}")
        self._armed = False


Code = Union[str, Callable[[Context], Any]]


def _run(code: Code, ctx: Context, namespace: Dict[str, Any]) -> None:
    if isinstance(code, str):
        exec(compile(code, "<fault-code>", "exec"), namespace)
    else:
        code(ctx)


def _filter_program(faults: List[Fault]) -> bytes:
    """BPF: USER_NOTIF for (nr[, low 32 bits of arg1]) of each fault, else ALLOW."""
    matchers = []
    for f in faults:
        key = (f.nr, None if f.path is not None else f.request)
        if key not in matchers:
            matchers.append(key)
    # Instructions as (code, jt, jf, k); jumps to labels resolved below.
    prog: List[tuple] = [(BPF_LD_W_ABS, 0, 0, _OFF_ARCH), (BPF_JEQ_K, 0, "allow", AUDIT_ARCH),
                         (BPF_LD_W_ABS, 0, 0, _OFF_NR)]
    for nr, request in matchers:
        if request is None:
            prog.append((BPF_JEQ_K, "notify", 0, nr))
        else:
            prog.append((BPF_JEQ_K, 0, 3, nr))                      # skip to the next matcher
            prog.append((BPF_LD_W_ABS, 0, 0, _OFF_ARG1_LO))
            prog.append((BPF_JEQ_K, "notify", 0, request & 0xFFFFFFFF))
            prog.append((BPF_LD_W_ABS, 0, 0, _OFF_NR))
    labels = {"allow": len(prog), "notify": len(prog) + 1}
    prog.append((BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    prog.append((BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF))
    out = []
    for i, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise FaultToolError("too many faults for one BPF program")
        out.append(struct.pack("HBBI", code, jt, jf, k))
    return b"".join(out)


def _install_filter(faults: List[Fault]) -> int:
    """Install the filter in this (child) process; return the listener fd."""
    prog = ctypes.create_string_buffer(_filter_program(faults))
    count = len(prog.raw) // 8
    fprog = ctypes.create_string_buffer(struct.pack("HP", count, ctypes.addressof(prog)))
    libc = ctypes.CDLL(None, use_errno=True)
    ulong = ctypes.c_ulong
    libc.prctl.argtypes = [ctypes.c_int, ulong, ulong, ulong, ulong]
    libc.syscall.restype = ctypes.c_long
    libc.syscall.argtypes = [ctypes.c_long, ulong, ulong, ctypes.c_void_p]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    fd = libc.syscall(SYSCALLS["seccomp"], SECCOMP_SET_MODE_FILTER,
                      SECCOMP_FILTER_FLAG_NEW_LISTENER, ctypes.addressof(fprog))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER)")
    return int(fd)


def _child_main(sock: socket.socket, code: Code, setup: Optional[Code], faults: List[Fault],
                watch: Optional[str], interrupt_after: Optional[float]) -> None:
    sock.settimeout(60)  # a parent that stopped answering cannot hold us for ever
    ctx = Context(sock)
    namespace: Dict[str, Any] = {"ctx": ctx}
    try:
        if setup is not None:
            _run(setup, ctx, namespace)
        listener = _install_filter(faults)
        _send(sock, {"op": "listener"}, [listener])
        os.close(listener)
        ctx._armed = True
    except BaseException as exc:
        _send(sock, {"op": "setup_error", "error": describe_error(exc)})
        return
    before = open_fds()
    alarm = {"on": False}

    def on_alarm(signum: int, frame: object) -> None:
        if alarm["on"]:
            alarm["on"] = False
            raise Interrupted(f"interrupted after {interrupt_after} s (SIGALRM handler)")

    if interrupt_after:
        signal.signal(signal.SIGALRM, on_alarm)
        alarm["on"] = True
        signal.setitimer(signal.ITIMER_REAL, interrupt_after)
    error = None
    try:
        try:
            _run(code, ctx, namespace)
        finally:
            alarm["on"] = False
            if interrupt_after:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as exc:
        error = describe_error(exc)
    ctx.disarm()
    after = open_fds()
    leaked = {fd: target for fd, target in after.items() if before.get(fd) != target}
    _send(sock, {"op": "result", "error": error, "report": ctx.report,
                 "leaked_fds": leaked, "bound": bound_under(watch) if watch else {}})


# --- the parent ------------------------------------------------------------------------

_MAX_MSG = 1 << 20


def _send(sock: socket.socket, msg: Dict[str, Any], fds: Optional[List[int]] = None) -> None:
    data = json.dumps(msg, default=repr).encode()
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], anc)


def _recv(sock: socket.socket) -> tuple:
    """(message or None at EOF, [received fds])."""
    data, anc, flags, _ = sock.recvmsg(_MAX_MSG, socket.CMSG_SPACE(4 * 4))
    fds: List[int] = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(payload[: len(payload) - len(payload) % arr.itemsize])
            fds.extend(arr)
    if not data:
        return None, fds
    return json.loads(data), fds


def _read_cstring(pid: int, addr: int, limit: int = 4096) -> Optional[bytes]:
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        out = b""
        while len(out) < limit:
            chunk = 4096 - (addr + len(out)) % 4096  # up to the page end
            try:
                data = os.pread(fd, chunk, addr + len(out))
            except OSError:
                return None
            if not data:
                return None
            end = data.find(b"\0")
            if end >= 0:
                return out + data[:end]
            out += data
        return out
    finally:
        os.close(fd)


class _Supervisor:
    def __init__(self, faults: List[Fault]) -> None:
        self.faults = faults
        self.stats = [FaultStats() for _ in faults]
        self.left = [f.times for f in faults]
        self.to_pass = [f.after for f in faults]
        self.armed = True
        self.patterns = [re.compile(f.path) if f.path is not None else None for f in faults]

    def _matches(self, i: int, pid: int, nr: int, args: tuple, listener: int,
                 notif_id: int, paths: Dict[int, Optional[bytes]]) -> bool:
        f = self.faults[i]
        if f.nr != nr:
            return False
        if f.request is not None and (args[1] & 0xFFFFFFFF) != (f.request & 0xFFFFFFFF):
            return False
        pattern = self.patterns[i]
        if pattern is not None:
            where = _PATH_ARG[str(f.syscall)]
            if where not in paths:
                paths[where] = _read_cstring(pid, args[where])
                try:  # the memory we read was the caller's only if the id is still valid
                    fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID,
                                struct.pack("=Q", notif_id))
                except OSError:
                    paths[where] = None
            path = paths[where]
            if path is None or not pattern.fullmatch(os.fsdecode(path)):
                return False
        return True

    def handle(self, listener: int) -> None:
        buf = bytearray(_NOTIF.size)  # must be zeroed
        try:
            fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
        except OSError as exc:
            if exc.errno in (_errno.ENOENT, _errno.EINTR):
                return  # the caller was interrupted or died meanwhile
            raise
        notif_id, pid, _flags, nr, _arch, _ip, *args = _NOTIF.unpack(buf)
        err = 0
        if self.armed:
            paths: Dict[int, Optional[bytes]] = {}
            hits = [i for i in range(len(self.faults))
                    if self._matches(i, pid, nr, tuple(args), listener, notif_id, paths)]
            for i in hits:
                if self.to_pass[i] > 0:
                    self.to_pass[i] -= 1
                    continue
                if self.left[i] is None or self.left[i] > 0:  # type: ignore[operator]
                    if self.left[i] is not None:
                        self.left[i] -= 1  # type: ignore[operator]
                    self.stats[i].injected += 1
                    err = self.faults[i].errno
                    break
            else:
                for i in hits:
                    self.stats[i].passed += 1
        resp = _RESP.pack(notif_id, 0, -err, 0) if err else \
            _RESP.pack(notif_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        try:
            fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp)
        except OSError as exc:
            if exc.errno != _errno.ENOENT:  # interrupted by a signal, or dead
                raise


def run_with_faults(code: Code, faults: List[Fault], *, setup: Optional[Code] = None,
                    timeout: float = 10.0, watch: Union[str, "os.PathLike[str]", None] = None,
                    interrupt_after: Optional[float] = None) -> ChildResult:
    """Run ``code`` in a forked child while ``faults`` are injected.

    ``setup`` runs first in the child, without faults.  ``watch``: report
    loop devices left bound to files under this directory.  ``timeout``
    bounds the whole run (the child is killed then: ``timed_out``).
    ``interrupt_after``: raise :class:`Interrupted` in the child after
    this many seconds of ``code`` (from a SIGALRM handler).  Raises
    :class:`FaultToolError` if setup or the filter failed.
    """
    faults = list(faults)
    watch_dir = os.fspath(watch) if watch is not None else None
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    output = tempfile.TemporaryFile()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's stack
        status = 70
        try:
            parent_sock.close()
            os.dup2(output.fileno(), 1)
            os.dup2(output.fileno(), 2)
            _child_main(child_sock, code, setup, faults, watch_dir, interrupt_after)
            status = 0
        except BaseException:
            try:
                traceback.print_exc()
            except BaseException:
                pass
        finally:
            os._exit(status)
    child_sock.close()
    supervisor = _Supervisor(faults)
    result = ChildResult(stats=supervisor.stats)
    listener = -1
    setup_error = None
    try:
        poller = select.poll()
        poller.register(parent_sock, select.POLLIN)
        deadline = start + timeout
        done = False
        while not done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.timed_out = True
                break
            for fd, events in poller.poll(max(1, int(remaining * 1000))):
                if fd == listener:
                    if events & select.POLLIN:
                        supervisor.handle(listener)
                    elif events & (select.POLLHUP | select.POLLERR):
                        poller.unregister(listener)  # no task uses the filter any more
                    continue
                msg, fds = _recv(parent_sock)
                if msg is None:
                    result.crashed = "the child exited without a report"
                    done = True
                    break
                op = msg.get("op")
                if op == "listener":
                    listener = fds[0]
                    poller.register(listener, select.POLLIN)
                elif op == "disarm":
                    supervisor.armed = False
                    _send(parent_sock, {"op": "disarmed"})
                elif op == "setup_error":
                    setup_error = msg["error"]
                    done = True
                    break
                elif op == "result":
                    if msg["error"] is not None:
                        result.error = ErrorInfo(**msg["error"])
                    result.report = msg["report"]
                    result.leaked_fds = {int(k): v for k, v in msg["leaked_fds"].items()}
                    result.bound = msg["bound"]
                    done = True
                    break
    finally:
        # The end, whatever happened: kill, reap, close.  pid is our own
        # unreaped child, so the number cannot name another process.
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(pid, 0)
        if listener >= 0:
            os.close(listener)
        parent_sock.close()
        output.seek(0)
        result.output = output.read().decode(errors="replace")
        output.close()
    result.seconds = time.monotonic() - start
    if result.crashed is not None:
        result.crashed += f" (wait status {status})"
    if setup_error is not None:
        raise FaultToolError(f"setup or filter failed in the child: {setup_error['message']}\n"
                             f"{setup_error['traceback']}")
    return result

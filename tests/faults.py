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

Crash mode: ``run_until_crash(code, kill_at=k, ...)`` stops the child at
its k-th system call instead: the filter sends every call named in
``syscalls`` (default :data:`CRASH_SYSCALLS`, the calls that change or
reference state outside the process) to the parent, which counts those
``code`` makes (not ``setup``'s, nor the tool's own) and, at the k-th,
SIGKILLs the child without answering, so that call never runs.
``count_syscalls(code, ...)`` runs the same code uninterrupted and
returns the calls it made, so "every step" is k = 1 .. len(result.calls):

    n = len(count_syscalls(code, setup=setup, watch=d).calls)
    for k in range(1, n + 1):
        result = run_until_crash(code, k, setup=setup, watch=d)
        result.killed_at                    # Syscall: e.g. ioctl(5, LOOP_CONFIGURE)
        result.notes                        # what code sent by ctx.note(...) before
        result.bound                        # read by the parent after the reap

``ctx.note(value)`` sends a value to the parent at once (what the code has
acknowledged so far: it survives the kill).

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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from uevents import wait_for_deferred_detaches

__all__ = [
    "Fault", "run_with_faults", "ChildResult", "ErrorInfo", "FaultStats", "Interrupted",
    "FaultToolError", "ONCE", "ALWAYS", "bound_under", "open_fds", "fast_retries",
    "dm_ioctl", "SYSCALLS", "run_until_crash", "count_syscalls", "Syscall", "CRASH_SYSCALLS",
    "REQUEST_NAMES",
]

ONCE = 1
ALWAYS: Optional[int] = None

# --- request numbers the loopcore tests fail -------------------------------------

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_CHANGE_FD = 0x4C06
LOOP_SET_CAPACITY = 0x4C07
LOOP_SET_DIRECT_IO = 0x4C08
LOOP_SET_BLOCK_SIZE = 0x4C09
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_ADD = 0x4C80
LOOP_CTL_REMOVE = 0x4C81
LOOP_CTL_GET_FREE = 0x4C82
BLKRRPART = 0x125F
BLKPG = 0x1269
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
    "fcntl": (72, 25), "ftruncate": (77, 46), "rename": (82, None), "unlink": (87, None),
    "mknod": (133, None), "mknodat": (259, 33), "unlinkat": (263, 35),
    "fallocate": (285, 47), "renameat2": (316, 276), "sendto": (44, 206),
    "recvfrom": (45, 207), "sendmsg": (46, 211), "recvmsg": (47, 212),
    "pwritev": (296, 70), "pwritev2": (328, 287),
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
_NAMES = {nr: name for name, nr in SYSCALLS.items()}

#: What crash mode counts by default: every call of the child that can change
#: state outside the process (a device, a file, a lock, a node) or that
#: makes or drops a reference to one (open, close: the last close of an
#: autoclear loop device detaches it), or that answers someone (sendto,
#: sendmsg: a reply to the kernel).  A kill between two other calls leaves
#: the same state as a kill at the next of these, so stopping at each of
#: these is stopping at every distinct step.  Not counted: reads and
#: receives, stats, memory and signal calls, and among these the
#: read-only opens of /sys and /proc files and the closes, ioctls and
#: fcntls of such fds (they change nothing; their number grows with the
#: devices on the machine); never counted: any call on the tool's own
#: socket to the parent (the filter lets those through).
CRASH_SYSCALLS = tuple(name for name in (
    "open", "openat", "close", "ioctl", "flock", "fcntl", "write", "pwrite64", "fsync",
    "fdatasync", "sync_file_range", "ftruncate", "fallocate", "mknod", "mknodat",
    "unlink", "unlinkat", "rename", "renameat2", "sendto", "sendmsg") if name in SYSCALLS)

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
_OFF_NR, _OFF_ARCH, _OFF_ARG0_LO, _OFF_ARG1_LO = 0, 4, 16, 24  # seccomp_data (little-endian)


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
class Syscall:
    """One call crash mode counted: its name, first three arguments, and
    for open/openat the path (None if unreadable)."""

    name: str
    args: Tuple[int, ...]
    path: Optional[str] = None

    def __str__(self) -> str:
        if self.name in ("open", "openat"):
            return f"{self.name}({self.path!r})"
        if self.name == "ioctl":
            request = self.args[1] & 0xFFFFFFFF
            return f"ioctl({self.args[0]}, {REQUEST_NAMES.get(request, hex(request))})"
        if self.name in ("flock", "fcntl"):
            return f"{self.name}({self.args[0]}, {self.args[1]})"
        return f"{self.name}({self.args[0]})"


@dataclasses.dataclass
class ChildResult:
    """The child's report.  ``error`` is None when ``code`` returned.

    ``timed_out``: no report within ``timeout`` (a hang); ``crashed``: the
    child died without one (then ``output`` holds its stdout+stderr).
    ``bound``: {"/dev/loopN": backing} for files under ``watch`` when the
    child reported; ``leaked_fds``: {fd: target} open after ``code`` that
    were not open before it.  Crash mode (:func:`run_until_crash`) adds
    ``calls`` (the counted calls), ``killed_at`` (the call the child was
    killed at, or None) and ``notes`` (what ``ctx.note`` sent).
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
    calls: List[Syscall] = dataclasses.field(default_factory=list)
    killed_at: Optional[Syscall] = None
    notes: List[Any] = dataclasses.field(default_factory=list)

    @property
    def finished(self) -> bool:
        """The child ran ``code`` to the end (returned or raised) and reported."""
        return not self.timed_out and self.crashed is None and self.killed_at is None

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
    dict sent back as ``ChildResult.report``; ``note(value)``: send a value
    at once (kept even if the child is killed); ``disarm()``: stop
    injecting (crash mode: stop counting).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._armed = False
        self.state: Dict[str, Any] = {}
        self.report: Dict[str, Any] = {}

    def note(self, value: Any) -> None:
        """Send ``value`` (JSON-able) to the parent now: it lands in
        ``ChildResult.notes`` even if the child is killed right after, so
        a crash test can tell what the code had acknowledged by then."""
        _send(self._sock, {"op": "note", "value": value})

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


def _matchers(faults: List[Fault]) -> List[tuple]:
    """(nr, low 32 bits of arg1 or None) of each fault, without repeats."""
    matchers: List[tuple] = []
    for f in faults:
        key = (f.nr, None if f.path is not None else f.request)
        if key not in matchers:
            matchers.append(key)
    return matchers


def _filter_program(matchers: List[tuple], exempt_fd: Optional[int] = None) -> bytes:
    """BPF: USER_NOTIF for each (nr, low 32 bits of arg1 or None: any), else
    ALLOW; every call whose first argument is ``exempt_fd`` is ALLOWed."""
    # Instructions as (code, jt, jf, k); jumps to labels resolved below.
    prog: List[tuple] = [(BPF_LD_W_ABS, 0, 0, _OFF_ARCH), (BPF_JEQ_K, 0, "allow", AUDIT_ARCH)]
    if exempt_fd is not None:
        prog += [(BPF_LD_W_ABS, 0, 0, _OFF_ARG0_LO), (BPF_JEQ_K, "allow", 0, exempt_fd)]
    prog.append((BPF_LD_W_ABS, 0, 0, _OFF_NR))
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


def _install_filter(matchers: List[tuple], exempt_fd: Optional[int] = None) -> int:
    """Install the filter in this (child) process; return the listener fd."""
    prog = ctypes.create_string_buffer(_filter_program(matchers, exempt_fd))
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


def _child_main(sock: socket.socket, code: Code, setup: Optional[Code], matchers: List[tuple],
                watch: Optional[str], interrupt_after: Optional[float], crash: bool) -> None:
    sock.settimeout(60)  # a parent that stopped answering cannot hold us for ever
    ctx = Context(sock)
    namespace: Dict[str, Any] = {"ctx": ctx}
    try:
        if setup is not None:
            _run(setup, ctx, namespace)
        before = open_fds()
        # crash mode: the tool's own socket never stops (sendmsg may be counted)
        listener = _install_filter(matchers, sock.fileno() if crash else None)
        _send(sock, {"op": "listener"}, [listener])
        os.close(listener)
        ctx._armed = True
    except BaseException as exc:
        _send(sock, {"op": "setup_error", "error": describe_error(exc)})
        return
    alarm = {"on": False}

    def on_alarm(signum: int, frame: object) -> None:
        if alarm["on"]:
            alarm["on"] = False
            raise Interrupted(f"interrupted after {interrupt_after} s (SIGALRM handler)")

    if interrupt_after:
        signal.signal(signal.SIGALRM, on_alarm)
        alarm["on"] = True
        signal.setitimer(signal.ITIMER_REAL, interrupt_after)
    if crash:  # the parent counts the calls after this message, up to the disarm
        _send(sock, {"op": "start"})
    error = None
    try:
        try:
            _run(code, ctx, namespace)
        finally:
            alarm["on"] = False
            if interrupt_after:
                signal.setitimer(signal.ITIMER_REAL, 0)
            ctx.disarm()  # before describing an error: that reads source files
    except BaseException as exc:
        error = describe_error(exc)
    after = open_fds()
    leaked = {fd: target for fd, target in after.items() if before.get(fd) != target}
    if watch:
        wait_for_deferred_detaches(lambda: [dev[5:] for dev in bound_under(watch)])
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


def _receive_notification(listener: int) -> Optional[tuple]:
    """(id, pid, nr, args) of the next notification; None if its caller is gone."""
    buf = bytearray(_NOTIF.size)  # must be zeroed
    try:
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
    except OSError as exc:
        if exc.errno in (_errno.ENOENT, _errno.EINTR):
            return None  # the caller was interrupted or died meanwhile
        raise
    notif_id, pid, _flags, nr, _arch, _ip, *args = _NOTIF.unpack(buf)
    return notif_id, pid, nr, tuple(args)


def _answer(listener: int, notif_id: int, err: int = 0) -> None:
    """Fail the call with ``err``, or (0) let it run."""
    resp = _RESP.pack(notif_id, 0, -err, 0) if err else \
        _RESP.pack(notif_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
    try:
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp)
    except OSError as exc:
        if exc.errno != _errno.ENOENT:  # interrupted by a signal, or dead
            raise


def _path_of(pid: int, addr: int, listener: int, notif_id: int) -> Optional[bytes]:
    """The path string at ``addr`` in the caller, None if unreadable."""
    path = _read_cstring(pid, addr)
    try:  # the memory we read was the caller's only if the id is still valid
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, struct.pack("=Q", notif_id))
    except OSError:
        return None
    return path


class _Supervisor:
    """Fault mode: fail the matching calls as the faults say."""

    def __init__(self, faults: List[Fault]) -> None:
        self.faults = faults
        self.stats = [FaultStats() for _ in faults]
        self.left = [f.times for f in faults]
        self.to_pass = [f.after for f in faults]
        self.armed = True
        self.started = True  # fault mode acts from the filter on
        self.killed_at: Optional[Syscall] = None
        self.calls: List[Syscall] = []
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
                paths[where] = _path_of(pid, args[where], listener, notif_id)
            path = paths[where]
            if path is None or not pattern.fullmatch(os.fsdecode(path)):
                return False
        return True

    def handle(self, listener: int) -> None:
        notification = _receive_notification(listener)
        if notification is None:
            return
        notif_id, pid, nr, args = notification
        err = 0
        if self.armed:
            paths: Dict[int, Optional[bytes]] = {}
            hits = [i for i in range(len(self.faults))
                    if self._matches(i, pid, nr, args, listener, notif_id, paths)]
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
        _answer(listener, notif_id, err)


_AT_FDCWD = 0xFFFFFF9C  # -100, as the low 32 bits of an argument
_PSEUDO_FS = ("/sys/", "/proc/")


def _fd_target(pid: int, fd: int, listener: int, notif_id: int) -> Optional[str]:
    """What the caller's ``fd`` is open on (None: unknown)."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}" if fd != _AT_FDCWD else f"/proc/{pid}/cwd")
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, struct.pack("=Q", notif_id))
    except OSError:
        return None
    return target


def _opened_path(pid: int, name: str, args: tuple, listener: int,
                 notif_id: int) -> Optional[str]:
    """The path an open/openat names, made absolute (None if unreadable)."""
    raw = _path_of(pid, args[_PATH_ARG[name]], listener, notif_id)
    if raw is None:
        return None
    path = os.fsdecode(raw)
    if name == "openat" and not path.startswith("/"):
        base = _fd_target(pid, args[0] & 0xFFFFFFFF, listener, notif_id)
        path = path if base is None else os.path.join(base, path)
    return path


def _reads_a_pseudo_file(pid: int, name: str, args: tuple, path: Optional[str],
                         listener: int, notif_id: int) -> bool:
    """A read-only open of a /sys or /proc file (or directory), or a close,
    ioctl or fcntl of one: it changes nothing, so it is no step.  (How
    many there are depends on the machine: a look-up over every loop
    device reads a sysfs file per device.)"""
    if name in ("open", "openat"):
        flags = args[1] if name == "open" else args[2]
        return path is not None and path.startswith(_PSEUDO_FS) and \
            flags & os.O_ACCMODE == os.O_RDONLY
    if name in ("close", "ioctl", "fcntl"):
        target = _fd_target(pid, args[0] & 0xFFFFFFFF, listener, notif_id)
        return target is not None and target.startswith(_PSEUDO_FS)
    return False


class _Crasher:
    """Crash mode: count the calls from "start" to "disarm"; at the
    ``kill_at``-th, SIGKILL the child instead of answering (the call never
    runs)."""

    def __init__(self, pid: int, kill_at: Optional[int]) -> None:
        self.pid = pid
        self.kill_at = kill_at
        self.armed = True
        self.started = False
        self.stats: List[FaultStats] = []
        self.calls: List[Syscall] = []
        self.killed_at: Optional[Syscall] = None

    def handle(self, listener: int) -> None:
        notification = _receive_notification(listener)
        if notification is None:
            return
        notif_id, pid, nr, args = notification
        if self.started and self.armed and self.killed_at is None:
            name = _NAMES.get(nr, str(nr))
            path = None
            if name in ("open", "openat"):
                path = _opened_path(pid, name, args, listener, notif_id)
            if _reads_a_pseudo_file(pid, name, args, path, listener, notif_id):
                _answer(listener, notif_id)
                return
            call = Syscall(name, args[:3], path)
            self.calls.append(call)
            if self.kill_at is not None and len(self.calls) >= self.kill_at:
                self.killed_at = call
                os.kill(self.pid, signal.SIGKILL)  # our own unreaped child
                return
        _answer(listener, notif_id)


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
    return _run_child(code, setup, _matchers(faults), lambda pid: _Supervisor(faults),
                      timeout=timeout, watch=watch, interrupt_after=interrupt_after,
                      crash=False)


def run_until_crash(code: Code, kill_at: Optional[int], *, setup: Optional[Code] = None,
                    syscalls: Sequence[str] = CRASH_SYSCALLS, timeout: float = 10.0,
                    watch: Union[str, "os.PathLike[str]", None] = None) -> ChildResult:
    """Run ``code`` in a forked child and SIGKILL it at its ``kill_at``-th call.

    Counted are the calls of ``code`` whose names are in ``syscalls``
    (default :data:`CRASH_SYSCALLS`), from its start to its end, in every
    thread; ``setup`` runs first, uncounted.  The ``kill_at``-th call
    (1-based) never runs: the parent holds it and kills the child, so calls
    1 .. kill_at-1 ran.  ``kill_at=None`` kills nothing and only counts
    (:func:`count_syscalls`).

    The result: ``killed_at`` is the call the child was stopped at (None:
    ``code`` ended first and the result is a normal report); ``calls`` the
    counted calls in order, the last one the killed call; ``notes`` what
    the code sent with ``ctx.note`` before it died; ``bound``, when
    ``watch`` is given, the loop devices bound to files under it, read by
    the parent after the child was reaped (its fds are closed by then;
    another opener, such as udev probing, may still delay an autoclear
    unbind).  ``timed_out`` if neither the kill nor the end came within
    ``timeout`` seconds.  Raises :class:`FaultToolError` if setup or the
    filter failed.

    Every k of an operation: ``n = len(count_syscalls(code, ...).calls)``,
    then ``run_until_crash(code, k, ...)`` for k in 1..n.  The count is
    exact for code that makes the same calls each time; code with retries
    or timing-dependent paths may make a few more or fewer, then a k past
    the end finishes instead of crashing.
    """
    for name in syscalls:
        if name not in SYSCALLS:
            raise ValueError(f"unknown syscall {name!r} on {_MACHINE}")
    if kill_at is not None and kill_at < 1:
        raise ValueError("kill_at counts from 1")
    matchers = [(SYSCALLS[name], None) for name in dict.fromkeys(syscalls)]
    return _run_child(code, setup, matchers, lambda pid: _Crasher(pid, kill_at),
                      timeout=timeout, watch=watch, interrupt_after=None, crash=True)


def count_syscalls(code: Code, *, setup: Optional[Code] = None,
                   syscalls: Sequence[str] = CRASH_SYSCALLS, timeout: float = 10.0,
                   watch: Union[str, "os.PathLike[str]", None] = None) -> ChildResult:
    """Run ``code`` uninterrupted in a child, counting its calls as
    :func:`run_until_crash` does: ``len(result.calls)`` is the number of
    crash points, ``result.calls`` says what each is."""
    return run_until_crash(code, None, setup=setup, syscalls=syscalls, timeout=timeout,
                           watch=watch)


def _run_child(code: Code, setup: Optional[Code], matchers: List[tuple],
               make_supervisor: Callable[[int], Union[_Supervisor, _Crasher]], *,
               timeout: float, watch: Union[str, "os.PathLike[str]", None],
               interrupt_after: Optional[float], crash: bool) -> ChildResult:
    """Fork, run ``code`` under the filter of ``matchers``, supervise, report."""
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
            _child_main(child_sock, code, setup, matchers, watch_dir, interrupt_after, crash)
            status = 0
        except BaseException:
            try:
                traceback.print_exc()
            except BaseException:
                pass
        finally:
            os._exit(status)
    child_sock.close()
    supervisor = make_supervisor(pid)
    result = ChildResult(stats=supervisor.stats, calls=supervisor.calls)
    listener = -1
    setup_error = None
    state = {"done": False}

    def on_message(msg: Optional[Dict[str, Any]], fds: List[int]) -> None:
        nonlocal listener, setup_error
        op = None if msg is None else msg.get("op")
        if msg is None:
            result.crashed = "the child exited without a report"
            state["done"] = True
        elif op == "listener":
            listener = fds[0]
            poller.register(listener, select.POLLIN)
        elif op == "start":
            supervisor.started = True
        elif op == "note":
            result.notes.append(msg["value"])
        elif op == "disarm":
            supervisor.armed = False
            _send(parent_sock, {"op": "disarmed"})
        elif op == "setup_error":
            setup_error = msg["error"]
            state["done"] = True
        elif op == "result":
            if msg["error"] is not None:
                result.error = ErrorInfo(**msg["error"])
            result.report = msg["report"]
            result.leaked_fds = {int(k): v for k, v in msg["leaked_fds"].items()}
            result.bound = msg["bound"]
            state["done"] = True

    def pending_message() -> bool:
        return bool(select.select([parent_sock], [], [], 0)[0])

    try:
        poller = select.poll()
        poller.register(parent_sock, select.POLLIN)
        deadline = start + timeout
        while not state["done"]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.timed_out = True
                break
            for fd, events in poller.poll(max(1, int(remaining * 1000))):
                if fd == listener:
                    if events & select.POLLIN:
                        # Crash mode: a message the child sent before this
                        # call ("start", a note) is queued by now: take it first.
                        while crash and not state["done"] and pending_message():
                            on_message(*_recv(parent_sock))
                        if state["done"]:
                            break
                        supervisor.handle(listener)
                        if supervisor.killed_at is not None:
                            state["done"] = True
                            break
                    elif events & (select.POLLHUP | select.POLLERR):
                        poller.unregister(listener)  # no task uses the filter any more
                    continue
                on_message(*_recv(parent_sock))
                if state["done"]:
                    break
    finally:
        # The end, whatever happened: kill, reap, close.  pid is our own
        # unreaped child, so the number cannot name another process.
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(pid, 0)
        if supervisor.killed_at is not None:
            # The notes sent before the kill are still queued: keep them.
            parent_sock.setblocking(False)
            try:
                while True:
                    msg, fds = _recv(parent_sock)
                    if msg is None:
                        break
                    if msg.get("op") == "note":
                        result.notes.append(msg["value"])
            except (BlockingIOError, ConnectionResetError):
                pass
        if listener >= 0:
            os.close(listener)
        parent_sock.close()
        output.seek(0)
        result.output = output.read().decode(errors="replace")
        output.close()
    result.seconds = time.monotonic() - start
    if crash:
        result.killed_at = supervisor.killed_at
        if supervisor.killed_at is not None:
            result.crashed = None
        if watch_dir is not None:
            result.bound = bound_under(watch_dir)
    if result.crashed is not None:
        result.crashed += f" (wait status {status})"
    if setup_error is not None:
        raise FaultToolError(f"setup or filter failed in the child: {setup_error['message']}\n"
                             f"{setup_error['traceback']}")
    return result


#: request number -> name, for describing calls
REQUEST_NAMES: Dict[int, str] = {
    value: name for name, value in list(globals().items())
    if name.startswith(("LOOP_", "BLK", "DM_")) and isinstance(value, int)}

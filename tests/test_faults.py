"""Fault injection into every step of attach and detach (tests/faults.py).

Each case fails one syscall of attach or detach with one errno, once or
always, in a child process, and holds loopcore to its promise:

- attach ends in success (the device bound to the image and usable) or a
  typed error: an OSError subclass with errno and filename set, naming the
  right file; never OverflowError, AttributeError and the like;
- nothing stays bound to the test's image and no fd stays open;
- detach loses no data: a pattern written through the device is in the
  backing file after a successful detach; a detach that raises leaves the
  device bound and the LoopDevice usable (the pattern reads back through
  it), and a second detach, without faults, gets the pattern to the file.

EINTR for ever: PEP 475 says retry while signal handlers do not raise, so
those cases also arm a SIGALRM handler that raises ``faults.Interrupted``;
propagating it (with nothing left behind) is a pass, a hang is not.

Every case's outcome goes into a fault x step table, written at the end of
this module to build/fault-table.md.  Then kill -9 at random points of an
attach/detach loop: with autoclear nothing stays bound; without, what stays
is found by ``python -m loopcore find`` and removed by ``... detach``.
"""
from __future__ import annotations

import errno
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

import loopcore

import faults
from faults import ALWAYS, ONCE, ChildResult, Fault, bound_under, run_with_faults
from uevents import Uevents, wait_for_deferred_detaches

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]

ROOT = Path(__file__).resolve().parents[1]
TABLE_PATH = ROOT / "build" / "fault-table.md"
IMAGE_SIZE = 8 << 20
PATTERN_OFFSET = 1 << 20
PATTERN_SIZE = 64 << 10
CASE_TIMEOUT = 8.0          # a case that has not reported by then hangs
INTERRUPT_AFTER = 0.3       # EINTR-always cases: when the SIGALRM handler raises

LOCK_EX = 2


@dataclass(frozen=True)
class Step:
    phase: str               # "attach" or "detach"
    name: str
    syscall: str
    request: Optional[int] = None
    path: Optional[str] = None
    legacy: bool = False     # attach through LOOP_SET_FD + LOOP_SET_STATUS64
    # attach with an option whose outcome attach reads back (block_size):
    # without one it skips LOOP_GET_STATUS64, BLKSSZGET and BLKGETSIZE64
    read_settings: bool = False
    files: str = "device-or-image"  # which files an error may name
    must_reach: bool = True  # a case that never injects tests nothing

    def fault(self, err: int, times: Optional[int]) -> Fault:
        return Fault(self.syscall, request=self.request, path=self.path, errno=err, times=times)


STEPS = [
    Step("attach", "flock", "flock", request=LOCK_EX, files="control"),
    Step("attach", "LOOP_CTL_GET_FREE", "ioctl", request=faults.LOOP_CTL_GET_FREE,
         files="control"),
    Step("attach", "openat", "openat", path=r"/dev/loop[0-9]+"),
    Step("attach", "LOOP_CONFIGURE", "ioctl", request=faults.LOOP_CONFIGURE),
    Step("attach", "LOOP_SET_FD", "ioctl", request=faults.LOOP_SET_FD, legacy=True),
    Step("attach", "LOOP_SET_STATUS64", "ioctl", request=faults.LOOP_SET_STATUS64,
         legacy=True),
    Step("attach", "LOOP_GET_STATUS64", "ioctl", request=faults.LOOP_GET_STATUS64,
         read_settings=True),
    Step("attach", "BLKSSZGET", "ioctl", request=faults.BLKSSZGET, read_settings=True),
    Step("attach", "BLKGETSIZE64", "ioctl", request=faults.BLKGETSIZE64, read_settings=True),
    Step("attach", "BLKROGET", "ioctl", request=faults.BLKROGET),
    Step("attach", "BLKGETDISKSEQ", "ioctl", request=faults.BLKGETDISKSEQ),
    # the backing file's (the device's dev_t is computed once its layout
    # is known)
    Step("attach", "statx", "statx"),
    # The write-back before LOOP_CLR_FD: whichever of these detach uses
    # (test_detach_writes_back_through_a_flush_call checks it uses one).
    Step("detach", "fsync", "fsync", files="device", must_reach=False),
    Step("detach", "BLKFLSBUF", "ioctl", request=faults.BLKFLSBUF, files="device",
         must_reach=False),
    Step("detach", "sync_file_range", "sync_file_range", files="device", must_reach=False),
    Step("detach", "LOOP_CLR_FD", "ioctl", request=faults.LOOP_CLR_FD, files="device"),
]
ERRNOS = [errno.EBUSY, errno.EAGAIN, errno.ENXIO, errno.EINTR, errno.EIO, errno.ENOMEM]
MODES = {"once": ONCE, "always": ALWAYS}

CASES = [pytest.param(step, err, mode, id=f"{step.phase}-{step.name}-{errno.errorcode[err]}-{mode}")
         for step in STEPS for err in ERRNOS for mode in MODES]

# (phase, step name, errno, mode) -> (table cell, problems); filled by the cases
OUTCOMES: Dict[Tuple[str, str, int, str], Tuple[str, List[str]]] = {}
KILL_SUMMARY: Dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def fault_table():
    """Write build/fault-table.md from whatever cases ran, pass or fail."""
    start = time.monotonic()
    yield
    if OUTCOMES or KILL_SUMMARY:
        TABLE_PATH.parent.mkdir(parents=True, exist_ok=True)
        TABLE_PATH.write_text(render_table(time.monotonic() - start))


# --- the child's side -------------------------------------------------------------

def _common_setup(image: Path):
    def setup(ctx):
        faults.fast_retries()
        loopcore.kernel_supports_configure()
        warm = loopcore.attach(image)  # opens the shared control fd before the fd census
        warm.detach()
    return setup


def _attach_code(image: Path, legacy: bool, read_settings: bool = False):
    def code(ctx):
        dev = loopcore.attach(image, legacy=legacy, block_size=512 if read_settings else 0)
        ctx.disarm()
        ctx.report["attached"] = dev.path
        try:
            ctx.report["backing"] = dev.backing_file
            ctx.report["diskseq"] = dev.diskseq
            ctx.report["size"] = dev.info().size_bytes
        finally:
            dev.detach()
    return code


def _detach_setup(image: Path, pattern: bytes):
    common = _common_setup(image)

    def setup(ctx):
        common(ctx)
        dev = loopcore.attach(image)
        ctx.state["dev"] = dev
        ctx.report["device"] = dev.path
        # Buffered, through another fd: loopcore's fd keeps the device open,
        # so closing this one leaves the pattern dirty in the page cache.
        fd = os.open(dev.path, os.O_RDWR)
        try:
            assert os.pwrite(fd, pattern, PATTERN_OFFSET) == len(pattern)
        finally:
            os.close(fd)
    return setup


def _detach_code(pattern: bytes):
    def code(ctx):
        dev = ctx.state["dev"]
        try:
            dev.detach()
        except BaseException:
            ctx.disarm()
            after = ctx.report["after_error"] = {"closed": dev.closed}
            after["bound"] = loopcore._sysfs.loop_backing_file(dev.number)
            try:
                after["reads_pattern"] = os.pread(dev.fileno(), len(pattern),
                                                  PATTERN_OFFSET) == pattern
                after["info_size"] = dev.info().size_bytes
            except Exception as exc:
                after["unusable"] = repr(exc)
            try:
                dev.detach()
                after["redetach"] = "ok"
            except Exception as exc:
                after["redetach"] = repr(exc)
            raise
        ctx.report["detached"] = True
    return code


# --- the parent's side --------------------------------------------------------------

def _cleanup(directory: Path) -> Dict[str, str]:
    """Detach (with losetup, not the code under test) whatever is bound under
    ``directory`` (this test's own files only); return what was."""
    wait_for_deferred_detaches(lambda: [dev[5:] for dev in bound_under(directory)])
    left = bound_under(directory)
    for dev in left:
        subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)
    return left


def _file_has(image: Path, pattern: bytes) -> bool:
    with open(image, "rb") as f:
        f.seek(PATTERN_OFFSET)
        return f.read(len(pattern)) == pattern


def _name(err: Optional[int]) -> str:
    return errno.errorcode.get(err, str(err)) if err is not None else "-"


def _check_error(result: ChildResult, step: Step, err: int, mode: str, image: Path,
                 problems: List[str]) -> str:
    """Problems with the typed-error rule; returns the cell text for the error."""
    e = result.error
    assert e is not None
    if e.type == "Interrupted":
        if not (err == errno.EINTR and mode == "always"):
            problems.append(f"interrupted by the test's SIGALRM handler: {e.message}")
        return "interrupted (handler ran)"
    cell = e.type if e.errno == err else f"{e.type} {_name(e.errno)}"
    if not e.is_oserror:
        problems.append(f"untyped error {e}\n{e.traceback}")
        return cell
    if not isinstance(e.errno, int):
        problems.append(f"errno not set: {e}")
    if not e.filename:
        problems.append(f"filename not set: {e}")
        return cell
    device = result.report.get("device")
    right = {
        "control": e.filename == "/dev/loop-control",
        "device-or-image": e.filename == str(image) or bool(
            re.fullmatch(r"/dev/loop[0-9]+", e.filename)),
        "device": e.filename == device,
    }[step.files]
    if not right:
        problems.append(f"error names {e.filename!r}, not the {step.files} "
                        f"({'/dev/loop-control' if step.files == 'control' else device or image})")
    return cell


def _judge(result: ChildResult, step: Step, err: int, mode: str, image: Path,
           pattern: Optional[bytes], left_after: Dict[str, str]) -> Tuple[str, List[str]]:
    problems: List[str] = []
    if result.timed_out:
        problems.append(f"hang: no report within {CASE_TIMEOUT} s"
                        + (" (the SIGALRM handler never ran)" if err == errno.EINTR else ""))
        cell = "hang"
    elif result.crashed:
        problems.append(f"child crashed: {result.crashed}\n{result.output}")
        cell = "crash"
    else:
        stats = result.stats[0]
        if step.must_reach and stats.injected == 0:
            problems.append("the fault was never injected: the step was not reached")
        if result.error is None:
            if stats.injected == 0:
                cell = "ok, not reached"
            elif stats.passed:
                cell = "retried, ok"
            else:
                cell = "ok, error ignored"
            if step.phase == "attach" and result.report.get("backing") != str(image):
                problems.append(f"attached, but bound to {result.report.get('backing')!r}")
        else:
            cell = _check_error(result, step, err, mode, image, problems)
            if step.phase == "attach" and "attached" in result.report:
                problems.append("attach returned, then using the device failed")
        if result.leaked_fds:
            problems.append(f"fds left open: {result.leaked_fds}")
        if result.bound:
            problems.append(f"left bound (seen in the child): {result.bound}")
    if step.phase == "detach" and not result.timed_out and not result.crashed:
        cell = _judge_detach(result, image, pattern, cell, problems)
    if left_after:
        problems.append(f"left bound after the child ended: {left_after}")
    return ("✗ " + cell if problems else cell), problems


def _judge_detach(result: ChildResult, image: Path, pattern: Optional[bytes], cell: str,
                  problems: List[str]) -> str:
    assert pattern is not None
    in_file = _file_has(image, pattern)
    if result.error is None:
        if not in_file:
            problems.append("detach succeeded but the pattern is not in the backing file: "
                            "data lost")
        return cell
    after = result.report.get("after_error", {})
    device = result.report.get("device")
    if after.get("bound") != str(image):
        problems.append(f"detach raised but {device} is no longer bound "
                        f"(backing now {after.get('bound')!r})")
        cell += ", unbound"
    if after.get("closed"):
        problems.append("detach raised but closed the LoopDevice: it cannot be retried")
        cell += ", closed"
    elif not after.get("reads_pattern"):
        problems.append(f"device not usable after the failed detach: {after}")
    if after.get("redetach") != "ok" and not after.get("closed"):
        problems.append(f"second detach (no faults) failed: {after.get('redetach')}")
    if not in_file:
        problems.append("the pattern never reached the backing file: data lost")
        cell += ", data lost"
    if not problems:
        cell += ", kept bound"
    return cell


@pytest.mark.parametrize("step, err, mode", CASES)
def test_fault(tmp_path: Path, step: Step, err: int, mode: str):
    image = tmp_path / "image.img"
    with open(image, "wb") as f:
        f.truncate(IMAGE_SIZE)
    pattern = None
    if step.phase == "attach":
        setup, code = _common_setup(image), _attach_code(image, step.legacy, step.read_settings)
    else:
        pattern = os.urandom(PATTERN_SIZE)
        setup, code = _detach_setup(image, pattern), _detach_code(pattern)
    interrupt = INTERRUPT_AFTER if (err == errno.EINTR and mode == "always") else None
    try:
        result = run_with_faults(code, [step.fault(err, MODES[mode])], setup=setup,
                                 timeout=CASE_TIMEOUT, watch=tmp_path, interrupt_after=interrupt)
    finally:
        left = _cleanup(tmp_path)
    cell, problems = _judge(result, step, err, mode, image, pattern, left)
    OUTCOMES[(step.phase, step.name, err, mode)] = (cell, problems)
    assert not problems, "\n".join(
        problems + [f"error: {result.error}", f"report: {result.report}",
                    f"faults: {result.stats}", f"{result.seconds:.3f} s"])


def test_an_unbind_another_opener_deferred_is_waited_for_by_the_leak_checks(tmp_path: Path):
    """The leak checks' premise: a detach while another process has the
    device open (a scan, or another attach that got the same number from
    GET_FREE) leaves it bound with AUTOCLEAR until that close, which is no
    leak; wait_for_deferred_detaches waits for exactly that."""
    image = tmp_path / "image.img"
    with open(image, "wb") as f:
        f.truncate(IMAGE_SIZE)
    dev = loopcore.attach(image)
    holder = subprocess.Popen([sys.executable, "-c", "import os, sys; fd = os.open(sys.argv[1], "
                               "os.O_RDONLY); print(flush=True); sys.stdin.read()", dev.path],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "\n"  # it has it open
        assert dev.detach() is False  # deferred to the holder's close
        assert bound_under(tmp_path) == {dev.path: str(image)}
        with open(f"/sys/block/loop{dev.number}/loop/autoclear") as f:
            assert f.read().strip() == "1"
    finally:
        holder.communicate("")  # it closes the device and exits
    wait_for_deferred_detaches(lambda: [d[5:] for d in bound_under(tmp_path)])
    assert bound_under(tmp_path) == {}


def test_lc_attach_returns_after_each_backoff_sleep(tmp_path: Path):
    """lc_attach comes back after each backoff sleep (-EINTR, the attempt
    to resume from): a signal whose handler ran while its loop was between
    syscalls is then acted on one sleep later, not after every attempt."""
    image = tmp_path / "image.img"
    with open(image, "wb") as f:
        f.truncate(IMAGE_SIZE)

    def code(ctx):
        from loopcore import _c
        from loopcore.loop.control import control
        req = _c.ffi.new("struct lc_attach_req *")
        result = _c.ffi.new("struct lc_attach_result *")
        req.backing_fd, req.number, req.max_attempts = -1, -1, 4
        req.sleep_base_us = 100
        calls = []
        while len(calls) < 8:
            rc = _c.lib.lc_attach(control.fd(), req, os.fsencode(str(image)), result)
            calls.append([-rc, int(result.failed_step), int(result.attempts)])
            if rc != -errno.EINTR:
                break
            req.first_attempt = result.attempts
        ctx.report["calls"] = calls

    result = run_with_faults(code, [Fault("ioctl", request=faults.LOOP_CONFIGURE,
                                          errno=errno.EBUSY, times=ALWAYS)],
                             setup=_common_setup(image), timeout=CASE_TIMEOUT, watch=tmp_path)
    assert result.error is None, result.error
    backoff, bind = loopcore._c.lib.LC_STEP_BACKOFF, loopcore._c.lib.LC_STEP_BIND
    # attempt 1 fails and retries at once (a fresh GET_FREE); 2 and 3 sleep
    # first, each in a call of its own; 4, the last, has nothing to wait for
    assert result.report["calls"] == [[errno.EINTR, backoff, 2], [errno.EINTR, backoff, 3],
                                      [errno.EBUSY, bind, 4]]
    assert not result.bound and not result.leaked_fds


def test_detach_writes_back_through_a_flush_call(tmp_path: Path):
    """The flush steps above may go unreached one by one (detach uses one
    of them); together they must be: detach writes back before unbinding."""
    image = tmp_path / "image.img"
    with open(image, "wb") as f:
        f.truncate(IMAGE_SIZE)
    pattern = os.urandom(PATTERN_SIZE)
    flushes = [s for s in STEPS if s.phase == "detach" and not s.must_reach]
    try:
        result = run_with_faults(_detach_code(pattern),
                                 [s.fault(errno.EIO, ALWAYS) for s in flushes],
                                 setup=_detach_setup(image, pattern), timeout=CASE_TIMEOUT,
                                 watch=tmp_path)
    finally:
        left = _cleanup(tmp_path)
    used = {s.name: st.injected for s, st in zip(flushes, result.stats)}
    assert result.finished, result
    assert sum(used.values()) > 0, f"detach called none of {[s.name for s in flushes]}"
    assert result.error is not None and result.error.is_oserror, result.error
    assert not left and _file_has(image, pattern)


# --- the tool itself ------------------------------------------------------------------

def test_tool_once_always_paths_disarm_and_leaks(tmp_path: Path):
    victim, other = tmp_path / "victim", tmp_path / "other"
    victim.write_bytes(b"v")
    other.write_bytes(b"o")

    def code(ctx):
        seen = ctx.report
        fd = os.open(other, os.O_RDWR)  # openat, but not the victim's path: passes
        for _ in range(3):
            try:
                os.fsync(fd)
                seen.setdefault("fsync", []).append("ok")
            except OSError as exc:
                seen.setdefault("fsync", []).append(exc.errno)
        os.close(fd)
        for _ in range(2):
            try:
                os.close(os.open(victim, os.O_RDONLY))
                seen.setdefault("open", []).append("ok")
            except OSError as exc:
                seen.setdefault("open", []).append(exc.errno)
        ctx.disarm()
        os.close(os.open(victim, os.O_RDONLY))
        seen["after_disarm"] = "ok"
        seen["leaked"] = os.open(other, os.O_RDONLY)  # left open on purpose
        raise KeyError("untyped")

    result = run_with_faults(code, [
        Fault("fsync", errno=errno.EIO, times=ONCE),
        Fault("openat", path=re.escape(str(victim)), errno=errno.EACCES, times=ALWAYS),
    ], timeout=10)
    assert result.finished, result
    assert result.report["fsync"] == [errno.EIO, "ok", "ok"]
    assert result.report["open"] == [errno.EACCES, errno.EACCES]
    assert result.report["after_disarm"] == "ok"
    assert [(s.injected, s.passed) for s in result.stats] == [(1, 2), (2, 0)]
    assert result.error is not None and result.error.type == "KeyError"
    assert not result.error.is_oserror
    assert result.leaked_fds == {result.report["leaked"]: str(other)}


def test_tool_survives_hanging_crashing_and_failing_children():
    hung = run_with_faults("while True:\n    pass", [], timeout=0.5)
    assert hung.timed_out and not hung.finished
    crashed = run_with_faults("import os\nos._exit(3)", [], timeout=10)
    assert crashed.crashed and "wait status" in crashed.crashed
    with pytest.raises(faults.FaultToolError, match="ZeroDivisionError"):
        run_with_faults("pass", [], setup="1 / 0", timeout=10)
    with pytest.raises(ValueError):
        Fault("no_such_syscall")


# --- kill -9 ----------------------------------------------------------------------------

KILL_TRIALS = 60
KILL_BATCH = 10             # leftovers are found and removed every so many trials
KILL_MAX_TICKS = 8          # a kill lands in one of the first so many attaches and detaches


def _attach_loop(image: Path, autoclear: bool) -> Tuple[int, int]:
    """Fork a child that attaches and detaches ``image`` until killed (30 s
    at most); returns (pid, fd that reads one byte each time it finished an
    attach or a detach)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # never return into pytest
        try:
            os.close(r)
            os.set_blocking(w, False)  # a full pipe must not stop the loop

            def tick() -> None:
                try:
                    os.write(w, b"t")
                except BlockingIOError:
                    pass

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                device = loopcore.attach(image, autoclear=autoclear)
                tick()
                device.detach()
                tick()
        finally:
            os._exit(0)
    os.close(w)
    return pid, r


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loopcore", *args], capture_output=True,
                          text=True, timeout=60)


def _remove_leftovers_with_cli(image: Path, tmp_path: Path) -> int:
    bound = {dev for dev, backing in bound_under(tmp_path).items() if backing == str(image)}
    if not bound:
        return 0
    found = _cli("find", str(image))
    assert found.returncode == 0, found.stderr
    listed = set(re.findall(r"^(/dev/loop[0-9]+): ", found.stdout, re.M))
    assert listed == bound, f"`loopcore find` listed {listed}, bound: {bound}\n{found.stdout}"
    gone = _cli("detach", *sorted(bound))
    assert gone.returncode == 0, gone.stderr
    left = bound_under(tmp_path)
    assert not left, f"still bound after `loopcore detach`: {left}"
    return len(bound)


@pytest.mark.parametrize("autoclear", [True, False], ids=["autoclear", "no-autoclear"])
def test_kill_9_during_attach(tmp_path: Path, autoclear: bool):
    image = tmp_path / "kill.img"
    with open(image, "wb") as f:
        f.truncate(IMAGE_SIZE)
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    leftovers = removed = 0
    seen: Set[str] = set()  # devices left bound by earlier trials of this batch
    try:
        for trial in range(KILL_TRIALS):
            # The kill follows the child's n-th finished attach (n odd) or
            # detach (n even) as soon as this process wakes up: wherever the
            # child is by then in the next detach or attach.
            ticks = rng.randint(1, KILL_MAX_TICKS)
            with Uevents() as events:
                pid, progress = _attach_loop(image, autoclear)
                try:
                    seen_ticks = 0
                    while seen_ticks < ticks and select.select([progress], [], [], 20)[0]:
                        seen_ticks += len(os.read(progress, ticks - seen_ticks))
                finally:
                    os.kill(pid, signal.SIGKILL)  # our own unreaped child
                    _, status = os.waitpid(pid, 0)
                    os.close(progress)
                assert seen_ticks == ticks, \
                    f"trial {trial}: the attach loop stalled (status {status})"
                assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
                    f"trial {trial}: the attach loop ended before the kill (status {status})"
                if autoclear:
                    # the autoclear detach at the last close sends "change"
                    events.wait_until(lambda: not bound_under(tmp_path))
                    left = bound_under(tmp_path)
                    assert not left, f"trial {trial} (seed {seed}): autoclear left {left} bound"
                    continue
            now = set(bound_under(tmp_path))
            leftovers += len(now - seen)
            seen = now
            if trial % KILL_BATCH == KILL_BATCH - 1:
                removed += _remove_leftovers_with_cli(image, tmp_path)
                seen = set()
        removed += _remove_leftovers_with_cli(image, tmp_path)
    finally:
        _cleanup(tmp_path)
    assert removed == leftovers
    KILL_SUMMARY["autoclear" if autoclear else "no-autoclear"] = (
        f"{KILL_TRIALS} kills, nothing left bound" if autoclear else
        f"{KILL_TRIALS} kills, {leftovers} left bound, all found by `loopcore find` "
        f"and removed by `loopcore detach`")


# --- the table ----------------------------------------------------------------------------

def render_table(seconds: float) -> str:
    columns = [(err, mode) for err in ERRNOS for mode in MODES]
    lines = [
        "# Fault injection: attach and detach",
        "",
        f"`tests/test_faults.py` on Linux {os.uname().release} ({os.uname().machine}), "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {seconds:.0f} s.  Each cell: one syscall of "
        "attach/detach failed with the errno, the first time (once) or every time "
        "(always), in a child under a seccomp user-notification filter.",
        "",
        "Outcomes: `retried, ok` (the call failed, loopcore retried, the attach or detach "
        "succeeded); `ok, error ignored` (succeeded without retrying that call); "
        "`ok, not reached` (this detach does not make that call); an exception name (a "
        "typed OSError with errno and filename, naming the right file; the errno is "
        "added when it differs from the injected one); `kept bound` (detach raised, the "
        "device stayed bound and usable, a second detach wrote the data back); "
        "`interrupted (handler ran)` (EINTR for ever: the retry loop let the test's "
        "SIGALRM handler raise); `hang` (no result in time).  **✗** marks a case that "
        "breaks a rule (nothing bound, no fd open, typed error, no data lost).",
        "",
        "| step | " + " | ".join(f"{_name(e)} {m}" for e, m in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for step in STEPS:
        cells = [OUTCOMES.get((step.phase, step.name, e, m), ("not run", []))[0]
                 for e, m in columns]
        lines.append(f"| {step.phase} {step.name} | " + " | ".join(cells) + " |")
    failing = [(k, v[1]) for k, v in OUTCOMES.items() if v[1]]
    lines += ["", f"{len(OUTCOMES)} cases, {len(failing)} breaking a rule."]
    if failing:
        lines += ["", "## Cases breaking a rule", ""]
        for (phase, name, err, mode), problems in failing:
            first = "; ".join(p.splitlines()[0] for p in problems)
            lines.append(f"- `{phase}-{name}-{_name(err)}-{mode}`: {first}")
    if KILL_SUMMARY:
        lines += ["", "## kill -9 during attach/detach loops", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(KILL_SUMMARY.items())]
    return "\n".join(lines) + "\n"

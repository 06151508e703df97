"""A crash at every step: SIGKILL at each system call of an operation.

For each operation -- ``attach`` (plain, autoclear, partscan, lock, reuse,
number, and autoclear+partscan+lock), ``attach_many`` of 10 (with and
without autoclear), ``detach`` (plain, of a locked device, of one with
partitions added), ``detach_many`` of 10, ``add_partitions`` -- the
operation runs once in a forked child to count its calls (N, the calls
in ``faults.CRASH_SYSCALLS``: those that change or reference state
outside the process), then once per k, the child SIGKILLed at its k-th
call (tests/faults.py, crash mode: the call is held by the seccomp
supervisor and never runs).  After each kill, once the child is reaped:

- autoclear: nothing stays bound to the test's files (waited for with
  the kernel's uevents, since another opener can delay the last close);
- otherwise every device left bound is in ``loopcore list`` and
  ``loopcore find FILE``, its flock is free (it died with the child),
  and ``loopcore detach`` removes it, after which nothing is bound and
  no partition of it is left;
- acknowledged data is not lost: the pattern written through the
  devices before the operation (detach, detach_many, add_partitions) or
  after it, once the child noted the write returned (attach,
  attach_many), is in the backing files after the clean-up.

The command line runs in this process (``loopcore.cli.main``, the entry
point ``python -m loopcore`` runs): hundreds of points cannot each start
an interpreter.  ``make test`` tries every k of an operation of up to
SAMPLED_POINTS calls, else SAMPLED_POINTS of them spread from the first
to the last; ``LOOPCORE_CRASH_ALL=1`` tries every k of every operation
(some 400 points, about 6 minutes on a busy 2-CPU machine).  The figures
per operation go to build/crash-points.md.

Also the tool's own tests, and the regressions the crash points found.
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import re
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

import pytest

import loopcore
from loopcore import cli

from faults import CRASH_SYSCALLS, Syscall, bound_under, count_syscalls, run_until_crash
from partition_images import gpt_image
from uevents import Uevents

# --- the tool --------------------------------------------------------------------------


def _file_steps(path: Path):
    def code(ctx):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # openat
        os.write(fd, b"one")                                              # write
        ctx.note("one")
        os.write(fd, b"two")                                              # write
        ctx.note("two")
        os.close(fd)                                                      # close
    return code


def test_count_sees_codes_calls_only_in_order(tmp_path: Path):
    target = tmp_path / "steps"
    setup_file = tmp_path / "setup"
    result = count_syscalls(_file_steps(target),
                            setup=lambda ctx: setup_file.write_bytes(b"uncounted"))
    assert result.finished and result.error is None, result.output
    assert [c.name for c in result.calls] == ["openat", "write", "write", "close"]
    assert result.calls[0].path == str(target)
    assert str(result.calls[0]) == f"openat({str(target)!r})"
    assert result.killed_at is None
    assert result.notes == ["one", "two"]
    assert target.read_bytes() == b"onetwo"


@pytest.mark.parametrize("kill_at, written, notes", [
    (1, None, []), (2, b"", []), (3, b"one", ["one"]), (4, b"onetwo", ["one", "two"])])
def test_the_kth_call_never_runs_and_the_notes_before_it_arrive(
        tmp_path: Path, kill_at: int, written, notes):
    target = tmp_path / "steps"
    result = run_until_crash(_file_steps(target), kill_at)
    assert result.killed_at is not None and not result.finished
    assert isinstance(result.killed_at, Syscall)
    assert result.killed_at == result.calls[-1] and len(result.calls) == kill_at
    assert result.killed_at.name == ["openat", "write", "write", "close"][kill_at - 1]
    assert result.notes == notes
    assert result.crashed is None and not result.timed_out
    if written is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == written


def test_past_the_last_call_the_code_finishes(tmp_path: Path):
    result = run_until_crash(_file_steps(tmp_path / "steps"), 5)
    assert result.finished and result.killed_at is None and len(result.calls) == 4


def test_a_chosen_set_of_calls(tmp_path: Path):
    result = count_syscalls(_file_steps(tmp_path / "steps"), syscalls=["write"])
    assert [c.name for c in result.calls] == ["write", "write"]
    killed = run_until_crash(_file_steps(tmp_path / "steps2"), 2, syscalls=["write"])
    assert killed.killed_at is not None and killed.killed_at.name == "write"
    assert (tmp_path / "steps2").read_bytes() == b"one"


def test_reading_sys_and_proc_is_no_step(tmp_path: Path):
    target = tmp_path / "written"

    def code(ctx):
        with open("/proc/self/status", "rb") as f:  # openat, ioctl (isatty), close
            f.read()
        os.listdir("/sys/block")                    # openat of a directory, close
        target.write_bytes(b"x")                    # openat, ioctl, write, close: steps

    counted = count_syscalls(code)
    assert counted.finished, counted.output
    assert [c.name for c in counted.calls] == ["openat", "ioctl", "write", "close"]
    assert counted.calls[0].path == str(target)


def test_bad_arguments():
    with pytest.raises(ValueError):
        run_until_crash("pass", 0)
    with pytest.raises(ValueError):
        count_syscalls("pass", syscalls=["no_such_call"])
    assert "ioctl" in CRASH_SYSCALLS and "recvmsg" not in CRASH_SYSCALLS


def test_a_reply_is_a_step_the_tools_own_channel_is_not():
    """sendto on the code's socket is counted (and held at the kill);
    ctx.note's sendmsg on the tool's socket is neither counted nor held."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        def code(ctx):
            ctx.note("before")
            theirs.send(b"reply")  # sendto
            ctx.note("after")

        counted = count_syscalls(code)
        assert [c.name for c in counted.calls] == ["sendto"], counted.calls
        assert counted.notes == ["before", "after"] and mine.recv(16) == b"reply"
        killed = run_until_crash(code, 1)
        assert killed.killed_at is not None and killed.killed_at.name == "sendto"
        assert killed.notes == ["before"]
        mine.setblocking(False)
        with pytest.raises(BlockingIOError):
            mine.recv(16)  # the reply never went
    finally:
        mine.close()
        theirs.close()


# --- every step of each operation -----------------------------------------------------

CRASH_ALL = os.environ.get("LOOPCORE_CRASH_ALL") == "1"
#: without LOOPCORE_CRASH_ALL: every k up to this many, then a spread of this many
SAMPLED_POINTS = 8
IMAGE_SIZE = 8 << 20
PATTERN_OFFSET = 6 << 20        # past the partitions below
PATTERN_SIZE = 4096
BURST = 10
GPT_ENTRIES = [(0, 2048, 4095), (1, 4096, 6143), (2, 8192, 10239)]  # (index, first, last)
CASE_TIMEOUT = 30.0
DETACH_WAIT_S = "30"


@dataclass(frozen=True)
class Operation:
    """One operation under test.  ``setup(images, pattern)`` and
    ``code(images, pattern)`` make the child's callables; ``autoclear``:
    nothing may stay bound after a kill; ``acked``: where the pattern is
    written and acknowledged ("setup": before the operation, through every
    device setup attached; "note": by the code after the operation, through
    the devices it made, once it sent the note "acked"; None: no data)."""

    name: str
    setup: Optional[Callable[..., Callable]]
    code: Callable[..., Callable]
    images: int = 1
    autoclear: bool = False
    acked: Optional[str] = None
    number: bool = False


def _write(ctx, devices, pattern: bytes) -> None:
    """Write the pattern through each device; acknowledged when pwrite
    returns (in the page cache, not yet in the file: a kill must not lose
    it, the last close writes it back)."""
    for dev in devices:
        os.pwrite(dev.fileno(), pattern, PATTERN_OFFSET)


def _attach_op(**options) -> Callable[..., Callable]:
    def make(images, pattern, number=None):
        def code(ctx):
            opts = dict(options, number=number) if number is not None else options
            dev = loopcore.attach(str(images[0]), **opts)
            _write(ctx, [dev], pattern)
            ctx.note("acked")  # the write returned: it is in the page cache
            dev.close()        # autoclear: the detach
        return code
    return make


def _attach_many_op(**options) -> Callable[..., Callable]:
    def make(images, pattern, number=None):
        def code(ctx):
            devices = loopcore.attach_many([str(i) for i in images], **options)
            _write(ctx, [devices[0], devices[-1]], pattern)
            ctx.note("acked")
            for dev in devices:
                dev.close()
        return code
    return make


def _setup_attached(*, many: bool = False, partitions: bool = False, **options):
    """A child setup: attach the images (no autoclear), write the pattern
    (acknowledged: pwrite returned; it is in the page cache, not yet in
    the file), maybe add partitions; note the devices."""
    def make(images, pattern, number=None):
        def setup(ctx):
            if many:
                devices = loopcore.attach_many([str(i) for i in images], **options)
            else:
                devices = [loopcore.attach(str(images[0]), **options)]
            if pattern:
                _write(ctx, devices, pattern)
            if partitions:
                for dev in devices:
                    dev.add_partitions()
            ctx.state["devices"] = devices
            ctx.note({"devices": [d.path for d in devices]})
        return setup
    return make


def _detach_op(images, pattern, number=None):
    return lambda ctx: ctx.state["devices"][0].detach()


def _detach_many_op(images, pattern, number=None):
    return lambda ctx: loopcore.detach_many(ctx.state["devices"])


def _add_partitions_op(images, pattern, number=None):
    return lambda ctx: ctx.state["devices"][0].add_partitions()


def _reuse_setup(images, pattern, number=None):
    def setup(ctx):
        dev = loopcore.attach(str(images[0]))
        ctx.note({"devices": [dev.path]})
        dev.close()  # bound, not autoclear: attach(reuse=True) finds it
    return setup


OPERATIONS = [
    Operation("attach", None, _attach_op(), acked="note"),
    Operation("attach-autoclear", None, _attach_op(autoclear=True), autoclear=True,
              acked="note"),
    Operation("attach-partscan", None, _attach_op(partscan=True), acked="note"),
    Operation("attach-lock", None, _attach_op(lock=True), acked="note"),
    Operation("attach-reuse", _reuse_setup, _attach_op(reuse=True), acked="note"),
    Operation("attach-number", None, _attach_op(), acked="note", number=True),
    Operation("attach-autoclear-partscan-lock", None,
              _attach_op(autoclear=True, partscan=True, lock=True), autoclear=True,
              acked="note"),
    Operation("attach_many", None, _attach_many_op(), images=BURST, acked="note"),
    Operation("attach_many-autoclear", None, _attach_many_op(autoclear=True), images=BURST,
              autoclear=True, acked="note"),
    Operation("detach", _setup_attached(), _detach_op, acked="setup"),
    Operation("detach-lock", _setup_attached(lock=True), _detach_op, acked="setup"),
    Operation("detach-partitions", _setup_attached(partitions=True), _detach_op,
              acked="setup"),
    Operation("detach_many", _setup_attached(many=True), _detach_many_op, images=BURST,
              acked="setup"),
    Operation("add_partitions", _setup_attached(), _add_partitions_op, acked="setup"),
]

#: per operation: crash points tried, kills, runs that ended first, leftovers, violations
SUMMARY: Dict[str, Dict[str, int]] = {}
ROOT = Path(__file__).resolve().parents[1]
SUMMARY_PATH = ROOT / "build" / "crash-points.md"


@pytest.fixture(scope="module", autouse=True)
def crash_summary():
    """After the module: the figures per operation, in build/crash-points.md."""
    yield
    if not SUMMARY:
        return
    mode = "every k (LOOPCORE_CRASH_ALL=1)" if CRASH_ALL else \
        f"a spread of {SAMPLED_POINTS} k per operation"
    lines = [
        "# Crash at every step (host)", "",
        f"`tests/test_crash_points.py` on Linux {os.uname().release}, {mode}.  The child "
        "is SIGKILLed at its k-th counted call (faults.CRASH_SYSCALLS); `calls`: "
        "counted in an uninterrupted run; `ended`: runs that finished before the k-th "
        "call (a shorter path that time); `leftovers`: devices left bound, every one "
        "found by `loopcore list`/`find` and removed by `loopcore detach`.", "",
        "| operation | calls | points tried | killed | ended | leftovers | violations |",
        "|---|---|---|---|---|---|---|"]
    for name, st in SUMMARY.items():
        lines.append(f"| {name} | {st['calls']} | {st['points']} | {st['killed']} | "
                     f"{st['ended']} | {st['leftovers']} | {st['violations']} |")
    total = {k: sum(st[k] for st in SUMMARY.values()) for k in
             ("points", "killed", "ended", "leftovers", "violations")}
    lines.append(f"| **total** | | {total['points']} | {total['killed']} | {total['ended']} "
                 f"| {total['leftovers']} | {total['violations']} |")
    SUMMARY_PATH.parent.mkdir(exist_ok=True)
    SUMMARY_PATH.write_text("\n".join(lines) + "\n")


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def _cli(*args: str) -> CliResult:
    """The command line's entry point, ``loopcore.cli.main`` (what
    ``python -m loopcore`` runs), in this process: hundreds of crash
    points cannot each pay for interpreter start-ups.  Its stdout and
    stderr are taken at the fd level."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved = os.dup(1), os.dup(2)
        saved_streams = sys.stdout, sys.stderr
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), write_through=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), write_through=True)
        try:
            returncode = cli.main(list(args))
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.close()
                except OSError:
                    pass
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        result = CliResult(returncode, out.read().decode(), err.read().decode())
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _partitions_of(device: str) -> List[str]:
    name = os.path.basename(device)
    try:
        return sorted(e for e in os.listdir(f"/sys/block/{name}") if e.startswith(name + "p"))
    except FileNotFoundError:
        return []


def _partition_nodes(device: str) -> List[str]:
    name = os.path.basename(device)
    return sorted(f"/dev/{e}" for e in os.listdir("/dev")
                  if e.startswith(name + "p") and e[len(name) + 1:].isdigit())


def _lock_free(device: str) -> bool:
    """Nobody holds a flock on the device (the killed child's died with it)."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _ours(device: str, tmp_path: Path) -> bool:
    """The device is unbound or bound to a file of this test."""
    name = os.path.basename(device)
    try:
        backing = Path(f"/sys/block/{name}/loop/backing_file").read_text().rstrip("\n")
    except OSError:
        return True
    return backing.startswith(os.path.join(str(tmp_path), ""))


def _clean_up_after_kill(tmp_path: Path, images: List[Path]) -> Tuple[Set[str], List[str]]:
    """Find every device left bound to ``images`` with `loopcore list` and
    `loopcore find`, remove them with `loopcore detach`; returns (the
    leftovers, what went wrong)."""
    problems: List[str] = []
    left = bound_under(tmp_path)
    if not left:
        return set(), problems
    for dev in left:
        if not _lock_free(dev):
            problems.append(f"{dev}: its flock is still held after the kill")
    listed = _cli("list", "--json", "-O", "NAME,BACK-FILE")
    if listed.returncode != 0:
        problems.append(f"`loopcore list` failed: {listed.stderr.strip()}")
    else:
        entries = json.loads(listed.stdout or '{"loopdevices": []}')["loopdevices"]
        in_list = {e["name"] for e in entries
                   if (e["back-file"] or "").startswith(os.path.join(str(tmp_path), ""))}
        if not set(left) <= in_list:
            problems.append(f"`loopcore list` misses {sorted(set(left) - in_list)}")
    # `find` for two of the files (each is one look-up; `list` saw them all)
    for image in sorted({Path(b) for b in left.values()})[:2]:
        found = _cli("find", str(image))
        shown = set(re.findall(r"^(/dev/loop[0-9]+): ", found.stdout, re.M))
        want = {dev for dev, backing in left.items() if backing == str(image)}
        if found.returncode != 0 or shown != want:
            problems.append(f"`loopcore find {image.name}` showed {sorted(shown)}, "
                            f"bound: {sorted(want)} ({found.stderr.strip()})")
    gone = _cli("detach", f"--wait={DETACH_WAIT_S}", *sorted(left))
    if gone.returncode != 0:
        problems.append(f"`loopcore detach` failed: {gone.stderr.strip()}")
    still = bound_under(tmp_path)
    if still:
        problems.append(f"still bound after `loopcore detach`: {still}")
        for dev in still:  # leave nothing for the next crash point
            _cli("detach", f"--wait={DETACH_WAIT_S}", dev)
    return set(left), problems


def _crash_points(n: int) -> List[int]:
    if CRASH_ALL or n <= SAMPLED_POINTS:
        return list(range(1, n + 1))
    # the first and last call and an even spread between
    step = (n - 1) / (SAMPLED_POINTS - 1)
    return sorted({round(1 + i * step) for i in range(SAMPLED_POINTS)})


def _free_number() -> int:
    """A loop device number nobody uses now (attach(number=) makes it)."""
    taken = {int(e[4:]) for e in os.listdir("/sys/block") if e[4:].isdigit()}
    return next(n for n in range(4000 + os.getpid() % 1000, 1 << 20) if n not in taken)


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("op", OPERATIONS, ids=[op.name for op in OPERATIONS])
def test_crash_at_every_step(tmp_path: Path, op: Operation):
    images = []
    for i in range(op.images):
        image = tmp_path / f"{i}.img"
        image.write_bytes(gpt_image(IMAGE_SIZE, GPT_ENTRIES))
        images.append(image)
    number = _free_number() if op.number else None
    kw = {} if number is None else {"number": number}

    def case(pattern: bytes):
        setup = op.setup(images, pattern, **kw) if op.setup is not None else None
        return setup, op.code(images, pattern, **kw)

    setup, code = case(b"")
    counted = count_syscalls(code, setup=setup, watch=tmp_path, timeout=CASE_TIMEOUT)
    assert counted.finished and counted.error is None, (counted.error, counted.output)
    n = len(counted.calls)
    _clean_up_after_kill(tmp_path, images)
    _remove_made_device(number)
    stats = SUMMARY.setdefault(op.name, dict.fromkeys(
        ("calls", "points", "killed", "ended", "leftovers", "violations"), 0))
    stats["calls"] = n
    violations: List[str] = []
    try:
        for k in _crash_points(n):
            pattern = os.urandom(PATTERN_SIZE)
            setup, code = case(pattern)
            with Uevents() as events:
                result = run_until_crash(code, k, setup=setup, watch=tmp_path,
                                         timeout=CASE_TIMEOUT)
                where = f"k={k}/{n} at {result.killed_at}"
                stats["points"] += 1
                if result.killed_at is None:  # took a shorter path this time
                    stats["ended"] += 1
                    if result.timed_out or result.error is not None:
                        violations.append(f"{where}: {result.error or 'hang'} "
                                          f"{result.output[-500:]}")
                else:
                    stats["killed"] += 1
                if op.autoclear:
                    # the autoclear detach at the last close sends "change"
                    events.wait_until(lambda: not bound_under(tmp_path))
                    if bound_under(tmp_path):
                        violations.append(f"{where}: autoclear left {bound_under(tmp_path)}")
            devices = set(bound_under(tmp_path))
            for note in result.notes:
                if isinstance(note, dict):
                    devices.update(note["devices"])
            left, problems = _clean_up_after_kill(tmp_path, images)
            stats["leftovers"] += len(left)
            violations += [f"{where}: {p}" for p in problems]
            for dev in sorted(devices):
                parts = _partitions_of(dev) or _partition_nodes(dev)
                if parts and _ours(dev, tmp_path):
                    violations.append(f"{where}: {dev} still has partitions {parts}")
            acked = op.acked == "setup" or (op.acked == "note" and "acked" in result.notes)
            if acked:
                for image in (images if op.acked == "setup" else [images[0], images[-1]]):
                    with open(image, "rb") as f:
                        if os.pread(f.fileno(), PATTERN_SIZE, PATTERN_OFFSET) != pattern:
                            violations.append(f"{where}: acknowledged data lost in "
                                              f"{image.name}")
            _remove_made_device(number)
    finally:
        for dev in bound_under(tmp_path):
            _cli("detach", f"--wait={DETACH_WAIT_S}", dev)
        _remove_made_device(number)
        stats["violations"] = len(violations)
    assert not violations, "\n".join(violations)


def _remove_made_device(number: Optional[int]) -> None:
    """attach(number=N) made loopN; a kill before its own clean-up leaves
    it unbound (not a leftover: nothing is bound): remove it."""
    if number is None or not os.path.exists(f"/sys/block/loop{number}"):
        return
    with loopcore.LoopControl() as ctl:
        try:
            ctl.remove(number)
        except OSError:
            pass  # bound (reported above) or going away


# --- regressions found by the crash points ---------------------------------------------

@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_detach_by_path_removes_partitions_a_killed_process_added(tmp_path: Path):
    """A process killed after add_partitions() and before its detach leaves
    BLKPG's partitions on a device without partscan; LOOP_CLR_FD keeps
    them (the kernel drops only a partscan device's), and they survived
    even the device's next bind.  `loopcore detach` (loopcore.detach by
    path or number) deletes them first."""
    image = tmp_path / "gpt.img"
    image.write_bytes(gpt_image(IMAGE_SIZE, GPT_ENTRIES))

    def code(ctx):
        dev = loopcore.attach(str(image))
        ctx.note(dev.path)
        dev.add_partitions()
        ctx.note("added")
        os.kill(os.getpid(), signal.SIGKILL)

    result = run_until_crash(code, None, watch=tmp_path, timeout=CASE_TIMEOUT)
    assert result.notes[-1:] == ["added"] and not result.finished, result.output
    device = result.notes[0]
    try:
        assert len(_partitions_of(device)) == len(GPT_ENTRIES)
        gone = _cli("detach", device)
        assert gone.returncode == 0, gone.stderr
        assert not bound_under(tmp_path)
        assert not _partitions_of(device) or not _ours(device, tmp_path)
    finally:
        for dev in bound_under(tmp_path):
            loopcore.detach(dev)

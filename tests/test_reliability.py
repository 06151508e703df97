"""Regression tests for failures a careful user can cause: write-back that
fails on detach, special files that would block, signals while attach
waits, integers too large for C, errors that name the wrong file, the
name the kernel records for an fd, block sizes above the page size."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

import loopcore
from loopcore import LoopControl, LoopError
from loopcore.loop import PAGE_SIZE, _calls
from loopcore.loop.control import CONTROL_PATH, control

from conftest import bound_backing, bound_under, force_detach, kernel_status, run_child, sysfs
from flocks import wait_for_flock_waiter

pytestmark = pytest.mark.root

MiB = 1 << 20


# --- 1. detach must not lose data when write-back fails ----------------------

@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs: a 64 MiB sparse image on it fills up when written."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "lctest", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        force_detach(set(bound_under(mnt)))
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_detach_keeps_device_bound_when_write_back_fails(small_tmpfs: Path):
    image = small_tmpfs / "big.img"
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    dev = loopcore.attach(image)
    try:
        # A writer that does not fsync: its data sits in the device's page
        # cache, and the backing file system has room for a quarter of it.
        fd = os.open(dev.path, os.O_WRONLY)
        try:
            chunk = b"\xa5" * MiB
            for _ in range(64):
                os.write(fd, chunk)
        finally:
            os.close(fd)
        with pytest.raises(OSError) as e:
            dev.detach()
        assert e.value.errno in (errno.ENOSPC, errno.EIO)
        assert e.value.filename == dev.path
        assert "stays bound" in str(e.value)
        # still bound, and the object still usable
        assert bound_backing(dev.number) == str(image)
        assert not dev.closed
        assert dev.info().backing_file == str(image)
        # Room made: the caller writes again, and now detach goes through.
        subprocess.run(["mount", "-o", "remount,size=128m", str(small_tmpfs)], check=True)
        fd = os.open(dev.path, os.O_WRONLY)
        try:
            os.write(fd, b"after" * 1000)
        finally:
            os.close(fd)
        dev.detach()
        assert dev.closed and bound_backing(dev.number) != str(image)
        with open(image, "rb") as f:
            assert f.read(5000) == b"after" * 1000
    finally:
        if not dev.closed:
            dev.close()


def test_detach_writes_back_what_a_writer_left_in_the_cache(image: Path):
    with loopcore.attach(image, direct_io=False) as dev:
        fd = os.open(dev.path, os.O_WRONLY)
        os.pwrite(fd, b"kept" * 1024, 4096)
        os.close(fd)
    with open(image, "rb") as f:
        f.seek(4096)
        assert f.read(4096) == b"kept" * 1024


# --- 2. no special file can make attach block ---------------------------------

@pytest.mark.parametrize("read_only", [True, False], ids=["ro", "rw"])
def test_fifo_is_refused_without_blocking(tmp_path: Path, read_only: bool):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = run_child(f"""
import json, loopcore
try:
    loopcore.attach({str(fifo)!r}, read_only={read_only})
    print(json.dumps({{"raised": None}}))
except OSError as e:
    print(json.dumps({{"raised": type(e).__name__, "errno": e.errno, "filename": e.filename}}))
""", timeout=30)
    assert result == {"raised": "LoopError", "errno": errno.EINVAL, "filename": str(fifo)}
    assert not bound_under(tmp_path)


def test_cli_attach_fifo_read_only_does_not_hang(tmp_path: Path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "loopcore", "attach", "-r", str(fifo)],
                          capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"loopcore: {fifo}: ") and "Traceback" not in proc.stderr
    assert not bound_under(tmp_path)


def test_character_device_is_refused(tmp_path: Path):
    with pytest.raises(LoopError) as e:
        loopcore.attach("/dev/null", read_only=True)
    assert e.value.errno == errno.EINVAL and e.value.filename == "/dev/null"


# --- 3. signals and the control lock ------------------------------------------

HOLD_LOCK = """
import fcntl, os, sys
fd = os.open("/dev/loop-control", os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()  # held until told (or killed)
"""


@pytest.fixture
def hold_control_lock() -> Iterator:
    """Start a process holding the /dev/loop-control lock until a line
    is written to its stdin (or it is killed at the end of the test)."""
    procs = []

    def hold() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        procs.append(proc)
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def test_signal_handler_does_not_interrupt_attach(image: Path, hold_control_lock):
    """Signal handlers that return run while attach waits for the control
    lock, and the wait goes on: the lock is let go only after the third."""
    fired = []
    holder = hold_control_lock()

    def on_alarm(*_: object) -> None:
        fired.append(1)
        if len(fired) == 3:
            holder.stdin.write("release\n")
            holder.stdin.flush()

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
        with loopcore.attach(image, timeout=60) as dev:
            signal.setitimer(signal.ITIMER_REAL, 0)
            assert bound_backing(dev.number) == str(image)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert holder.wait(10) == 0
    assert len(fired) >= 3  # the handlers ran while attach waited


def test_ctrl_c_interrupts_a_waiting_attach_at_once(image: Path, hold_control_lock):
    hold_control_lock()
    child = subprocess.Popen(
        [sys.executable, "-c", f"""
import loopcore, sys
print("go", flush=True)
try:
    loopcore.attach({str(image)!r})
except KeyboardInterrupt:
    sys.exit(42)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "go\n"
        assert wait_for_flock_waiter(child.pid, CONTROL_PATH)  # now it waits for the lock
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=120) == 42  # a hang guard, not a time bound
    finally:
        child.kill()
        child.wait()
    assert not bound_under(image.parent)


def test_attach_timeout_while_another_holds_the_lock(image: Path, hold_control_lock):
    hold_control_lock()
    with pytest.raises(TimeoutError) as e:
        loopcore.attach(image, timeout=0.3)
    assert e.value.errno == errno.ETIMEDOUT and e.value.filename == "/dev/loop-control"
    assert not bound_under(image.parent)


@pytest.mark.parametrize("timeout, error", [(-1, ValueError), (float("nan"), ValueError),
                                            ("1", TypeError), (True, TypeError)])
def test_attach_timeout_is_checked(tmp_path: Path, timeout: object, error: type):
    with pytest.raises(error, match="timeout"):
        loopcore.attach(tmp_path / "missing.img", timeout=timeout)  # type: ignore[arg-type]


def test_attach_timeout_that_suffices(image: Path):
    with loopcore.attach(image, timeout=30) as dev:
        assert bound_backing(dev.number) == str(image)


# --- 5. integers too large for C are ValueErrors -------------------------------

def test_huge_numbers_are_value_errors(image: Path):
    with LoopControl() as ctl:
        with pytest.raises(ValueError):
            ctl.add(1 << 40)
        with pytest.raises(ValueError):
            ctl.remove(1 << 40)
    for fd in (1 << 40, -1):
        with pytest.raises(ValueError):
            loopcore.attach(fd)
    with pytest.raises(ValueError):
        loopcore.open(1 << 40)
    with pytest.raises(ValueError):
        loopcore.attach(image, size_limit=1 << 64)
    with loopcore.attach(image) as dev:
        with pytest.raises(ValueError):
            dev.set_block_size(1 << 40)


def test_cli_huge_device_number_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "loopcore", "control", "add", "99999999999"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


# --- 8, 9. errors and the kernel name the right file -------------------------

def test_closed_fd_names_the_fd(image: Path):
    fd = os.open(image, os.O_RDWR)
    os.close(fd)
    with pytest.raises(OSError) as e:
        loopcore.attach(fd)
    assert e.value.errno == errno.EBADF
    assert e.value.filename == f"fd {fd}"


def test_attach_by_fd_records_the_real_path(image: Path):
    fd = os.open(image, os.O_RDWR)
    try:
        with loopcore.attach(fd) as dev:
            # lo_file_name holds 63 bytes: the path's start, as losetup stores
            assert kernel_status(dev.number)["file_name"] == str(image)[:63]
            listed = subprocess.run(["losetup", "-l", "-n", "-O", "BACK-FILE", dev.path],
                                    capture_output=True, text=True, check=True).stdout
            assert listed.strip() == str(image)
    finally:
        os.close(fd)


def test_attach_by_file_object_records_an_absolute_path(image: Path, monkeypatch):
    monkeypatch.chdir(image.parent)
    with open(image.name, "r+b") as f, loopcore.attach(f) as dev:
        assert kernel_status(dev.number)["file_name"] == str(image)[:63]


# --- 10. block sizes above the page size, where the kernel takes them ----------

def _kernel_takes_block_size(size: int, image: Path) -> bool:
    """Ask losetup: it passes the size straight to the kernel."""
    proc = subprocess.run(["losetup", "-f", "--show", "-b", str(size), str(image)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return False
    device = proc.stdout.strip()
    subprocess.run(["losetup", "-d", device], check=True)
    return True


@pytest.mark.parametrize("block_size", [8192, 65536])
def test_block_size_above_page_size(image: Path, block_size: int):
    assert block_size > PAGE_SIZE
    if _kernel_takes_block_size(block_size, image):
        with loopcore.attach(image, block_size=block_size) as dev:
            assert int(sysfs(dev.number, "queue/logical_block_size") or 0) == block_size
            assert dev.info().block_size == block_size
            dev.set_block_size(512)
            dev.set_block_size(block_size)
            assert int(sysfs(dev.number, "queue/logical_block_size") or 0) == block_size
    else:  # an older kernel: a ValueError that says why, nothing bound
        with pytest.raises(ValueError, match="page size"):
            loopcore.attach(image, block_size=block_size)
    assert not bound_under(image.parent)


def test_ctrl_c_interrupts_the_ebusy_backoff_at_once(image: Path):
    """Every LOOP_CONFIGURE says EBUSY, so attach sleeps between attempts
    (up to 250 ms each, about 8 s in all); a signal handler that raises
    must end it at once, not when the C loop gives up."""
    import faults

    def code(ctx: faults.Context) -> None:
        loopcore.attach(str(image))

    result = faults.run_with_faults(
        code, [faults.Fault("ioctl", request=faults.LOOP_CONFIGURE, errno=errno.EBUSY,
                            times=faults.ALWAYS)],
        # probe and open the control fd before the faults
        setup=lambda ctx: (loopcore.kernel_supports_configure(), control.fd()),
        watch=image.parent, interrupt_after=0.5, timeout=30)
    assert result.error is not None and result.error.type == "Interrupted", result
    # ended part-way through the backoff, not after every attempt it allows
    assert 0 < result.injected < _calls.ATTACH_ATTEMPTS, result
    assert not result.bound and not result.leaked_fds

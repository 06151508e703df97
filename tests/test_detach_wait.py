"""detach() says whether the kernel released the backing file or deferred
it (another process holds the device open: LOOP_CLR_FD then only marks
it autoclear), and detach(wait=) waits for the release, or raises a
TimeoutError naming who holds the device.

The other opener is a child process holding the device open until the
test closes its stdin; every wait is for an event (its output, a kernel
uevent), never a sleep."""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

import loopcore
from loopcore.loop import holders, teardown

from cli_runner import loopcore_cmd
from conftest import bound_backing
from uevents import Uevents

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]

_HOLD = ("import os, sys\n"
         "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
         "print('open', flush=True)\n"
         "sys.stdin.readline()\n")


class Holder:
    """A child process with a device open until :meth:`release`."""

    def __init__(self, path: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _HOLD, path], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "open"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()  # EOF: it exits, closing the device
        self.proc.wait(timeout=60)


@contextlib.contextmanager
def held(path: str) -> Iterator[Holder]:
    holder = Holder(path)
    try:
        yield holder
    finally:
        holder.release()


def unbound_after(number: int, action: Callable[[], None]) -> bool:
    """Run ``action``, then wait (for uevents) until ``loopN`` is unbound."""
    with Uevents() as events:
        action()
        return events.wait_until(lambda: bound_backing(number) is None)


def test_detach_unbinds_at_once_without_other_openers(image: Path) -> None:
    device = loopcore.attach(image)
    assert device.detach() is True
    assert bound_backing(device.number) is None


def test_context_manager_and_module_detach_still_work(image: Path) -> None:
    with loopcore.attach(image) as device:
        pass
    assert bound_backing(device.number) is None
    device = loopcore.attach(image)
    device.close()
    assert loopcore.detach(device.number) is True
    assert bound_backing(device.number) is None


def test_detach_with_another_opener_is_deferred_until_it_closes(image: Path) -> None:
    device = loopcore.attach(image)
    with held(device.path) as holder:
        assert device.detach() is False
        assert device.closed
        assert bound_backing(device.number) == str(image)  # still bound: deferred
        assert unbound_after(device.number, holder.release)


def test_wait_returns_once_the_holder_closes(image: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    device = loopcore.attach(image)
    holder = Holder(device.path)
    seen_bound = []

    class ReleasingWhileWaiting(teardown.KernelUevents):
        """The holder closes once the wait has begun (its listener is open)."""

        def wait_until(self, condition: Callable[[], bool], deadline_ns: int) -> bool:
            seen_bound.append(not condition())
            holder.release()
            return super().wait_until(condition, deadline_ns)

    monkeypatch.setattr(teardown, "KernelUevents", ReleasingWhileWaiting)
    try:
        assert device.detach(wait=60) is True
    finally:
        holder.release()
    assert seen_bound == [True]  # it did wait: bound when the wait began
    assert bound_backing(device.number) is None


def test_wait_times_out_naming_the_holder(image: Path) -> None:
    device = loopcore.attach(image)
    with held(device.path) as holder:
        with pytest.raises(loopcore.errors.TimeoutError) as caught:
            device.detach(wait=0.05)
        err = caught.value
        assert isinstance(err, TimeoutError) and isinstance(err, loopcore.Error)
        assert err.errno == errno.ETIMEDOUT
        assert err.filename == device.path
        assert f"pid {holder.pid} (python" in str(err)
        assert f"has {device.path} open" in str(err)
        assert device.closed  # the detach itself was done
        assert unbound_after(device.number, holder.release)


def test_module_detach_waits_too(image: Path) -> None:
    device = loopcore.attach(image)
    device.close()
    with held(device.path) as holder:
        with pytest.raises(loopcore.errors.TimeoutError, match=f"pid {holder.pid} "):
            loopcore.detach(device.path, wait=0)
        assert unbound_after(device.number, holder.release)


@pytest.mark.parametrize("wait, error", [(-1, ValueError), (float("nan"), ValueError),
                                         ("1", TypeError), (True, TypeError)])
def test_bad_wait_is_refused_before_any_syscall(image: Path, wait: object,
                                                error: type) -> None:
    device = loopcore.attach(image)
    try:
        with pytest.raises(error):
            device.detach(wait=wait)  # type: ignore[arg-type]
        assert bound_backing(device.number) == str(image)
        with pytest.raises(error):
            loopcore.detach(device.number, wait=wait)  # type: ignore[arg-type]
        assert bound_backing(device.number) == str(image)
    finally:
        device.detach()


def test_holders_names_processes_and_dm_style_holders(image: Path) -> None:
    device = loopcore.attach(image)
    try:
        with held(device.path) as holder:
            found = holders.holders(device.number)
            assert (holder.pid, found.processes[0][1], device.path) in found.processes
            assert found.devices == [] and found.mounts == []
        assert f"pid {holder.pid} " not in str(holders.holders(device.number))
    finally:
        device.detach()


def test_holders_of_nobody_says_so(image: Path) -> None:
    with loopcore.attach(image) as device:
        found = holders.holders(device.number)
        mine = [p for p in found.processes if p[0] != os.getpid()]
        assert not mine and not found.devices and not found.mounts


def _cli_detach(device: str, *extra: str) -> "subprocess.CompletedProcess[bytes]":
    return loopcore_cmd("detach", *extra, device)


def test_cli_detach_reports_a_deferred_detach_on_stderr(image: Path) -> None:
    device = loopcore.attach(image)
    device.close()
    with held(device.path) as holder:
        proc = _cli_detach(device.path)
        assert proc.returncode == 0
        assert proc.stdout == b""
        assert b"still open elsewhere" in proc.stderr
        assert proc.stderr.count(b"\n") == 1
        assert unbound_after(device.number, holder.release)


def test_cli_detach_wait_fails_naming_the_holder(image: Path) -> None:
    device = loopcore.attach(image)
    device.close()
    with held(device.path) as holder:
        proc = _cli_detach(device.path, "--wait=0")
        assert proc.returncode == 1
        assert proc.stdout == b""
        assert f"pid {holder.pid} (".encode() in proc.stderr
        assert unbound_after(device.number, holder.release)


def test_cli_detach_wait_without_holder_is_quiet(image: Path) -> None:
    device = loopcore.attach(image)
    device.close()
    proc = _cli_detach(device.path, "--wait")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert bound_backing(device.number) is None


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "1e400"])
def test_cli_detach_wait_bad_value_is_a_usage_error(image: Path, value: str) -> None:
    device = loopcore.attach(image)
    try:
        proc = _cli_detach(device.path, f"--wait={value}")
        assert proc.returncode == 2
        assert bound_backing(device.number) == str(image)
    finally:
        device.detach()


def test_ctrl_c_ends_the_wait_and_closes_its_socket(image: Path) -> None:
    """A handler that raises (Ctrl-C's) ends the wait at once; the uevent
    socket is closed (no_leaks checks the fds).  The alarm only delivers
    the signal while the wait is on; nothing here measures time."""
    device = loopcore.attach(image)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with held(device.path) as holder:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(KeyboardInterrupt):
                device.detach(wait=3600)
            signal.setitimer(signal.ITIMER_REAL, 0)
            assert device.closed  # the detach itself was done
            assert unbound_after(device.number, holder.release)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_timeout_names_the_mount_point(image: Path, tmp_path: Path) -> None:
    subprocess.run(["mkfs.ext2", "-q", "-F", str(image)], check=True)
    point = tmp_path / "mnt with space"
    point.mkdir()
    device = loopcore.attach(image)
    subprocess.run(["mount", device.path, str(point)], check=True)
    try:
        with pytest.raises(loopcore.errors.TimeoutError) as caught:
            device.detach(wait=0)
        assert f"{device.path} is mounted on {point}" in str(caught.value)
        assert holders.holders(device.number).mounts == [(device.path, str(point))]
    finally:
        with Uevents() as events:
            subprocess.run(["umount", str(point)], check=True)
            assert events.wait_until(lambda: bound_backing(device.number) is None)


def test_detach_many_waits_and_names_the_holder(make_image) -> None:
    devices = loopcore.attach_many([make_image() for _ in range(3)])
    with held(devices[1].path) as holder:
        with pytest.raises(loopcore.errors.TimeoutError) as caught:
            loopcore.detach_many(devices, wait=0)
        assert caught.value.filename == devices[1].path
        assert f"pid {holder.pid} (" in str(caught.value)
        assert all(device.closed for device in devices)
        assert bound_backing(devices[0].number) is None
        assert unbound_after(devices[1].number, holder.release)


def test_detach_many_wait_returns_with_all_released(make_image) -> None:
    devices = loopcore.attach_many([make_image() for _ in range(3)])
    loopcore.detach_many(devices, wait=30)
    assert [bound_backing(d.number) for d in devices] == [None] * 3
    with pytest.raises(ValueError):
        loopcore.detach_many([], wait=-1)

"""attach(partscan=True) and the device lock around partition changes
(issue 18, items 1 and 3), on the host where no udevd runs.

The bind goes without LO_FLAGS_PARTSCAN and LOOP_SET_STATUS64 turns it on
afterwards, under the device's exclusive flock (udev skips a device locked
so): the kernel scans the table once.  detach() takes the device's lock
exclusively before LOOP_CLR_FD on a device with partitions, waiting
(bounded) for a probe's shared one.
The VM tests (tests/vm/test_udev_storm_vm.py) count the events where udevd
runs.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

import loopcore
from loopcore import _sysfs
from loopcore.loop import _calls

from conftest import BLKPG_ADD_PARTITION, blkpg_partition, bound_backing, kernel_parses_gpt
from loop_helpers import flock_from_child, needs_sfdisk, sfdisk
from uevents import HANG_GUARD_S, Uevents

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]


def test_partscan_attach_sets_the_flag_and_leaves_no_lock(image: Path):
    with loopcore.attach(image, partscan=True) as dev:
        assert dev.info().partscan
        assert dev.locked is None
        # the lock taken for the scan is gone: udev may probe now
        assert flock_from_child(dev.path, fcntl.LOCK_EX)
        dev.detach()


def test_partscan_attach_with_lock_keeps_it(image: Path):
    with loopcore.attach(image, partscan=True, lock=True) as dev:
        assert dev.info().partscan
        assert dev.locked == "exclusive"
        assert not flock_from_child(dev.path, fcntl.LOCK_SH)
        dev.detach()


def test_partscan_attach_with_shared_lock(image: Path):
    with loopcore.attach(image, partscan=True, lock="shared") as dev:
        assert dev.info().partscan and dev.locked == "shared"
        assert flock_from_child(dev.path, fcntl.LOCK_SH)
        assert not flock_from_child(dev.path, fcntl.LOCK_EX)
        dev.detach()


def test_attach_many_partscan(make_image: Callable[..., Path]):
    devices = loopcore.attach_many([make_image() for _ in range(3)], partscan=True)
    try:
        for dev in devices:
            assert dev.info().partscan
            assert flock_from_child(dev.path, fcntl.LOCK_EX)
    finally:
        loopcore.detach_many(devices)


def test_without_partscan_the_flag_stays_off(image: Path):
    with loopcore.attach(image) as dev:
        assert not dev.info().partscan
        dev.detach()


@needs_sfdisk
@pytest.mark.skipif(not kernel_parses_gpt(), reason="this kernel has no GPT parser "
                    "(tests/vm/test_udev_storm_vm.py runs this where it has)")
def test_partitions_present_on_return_and_announced_once(make_image: Callable[..., Path]):
    image = make_image(16 << 20)
    sfdisk(str(image), "label: gpt\n,6M\n,6M\n")
    rounds = 10
    windows = []
    log: List[Dict[str, str]] = []
    with Uevents() as events:
        for _ in range(rounds):
            start = _sysfs.uevent_seqnum()
            dev = loopcore.attach(image, partscan=True)
            names = [f"loop{dev.number}p{pno}" for pno in (1, 2)]
            assert all(os.path.exists(f"/dev/{name}") for name in names)
            end = _sysfs.uevent_seqnum()
            dev.detach()
            windows.append((names, start, end))
        last = _sysfs.uevent_seqnum()
        for event in events.events(HANG_GUARD_S):
            log.append(event)
            if int(event.get("SEQNUM", "0")) >= last:
                break
        assert not events.lost
    assert log and int(log[-1].get("SEQNUM", "0")) >= last, "the kernel fell silent"
    # each partition: added once, never removed, between attach and detach
    for names, start, end in windows:
        for name in names:
            actions = [e["ACTION"] for e in log if e.get("DEVNAME") == name
                       and start < int(e["SEQNUM"]) <= end]
            assert actions == ["add"], (name, actions)


@contextlib.contextmanager
def probe_lock(path: str) -> Iterator[Callable[[], None]]:
    """Another process holds flock LOCK_SH on ``path`` (as udev's probe
    does) until the function yielded is called, or the block ends."""
    code = ("import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)\n"
            "fcntl.flock(fd, fcntl.LOCK_SH)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, path], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)

    def release() -> None:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=30)  # exited: its lock is gone

    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield release
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_detach_waits_for_a_probes_shared_lock(image: Path, monkeypatch, caplog):
    dev = loopcore.attach(image, partscan=True)
    waited = []
    real_wait = _calls.flock_wait

    with probe_lock(dev.path) as release:
        def wait(fd: int, operation: int, deadline_ns: int) -> bool:
            # the probe ends while detach waits for its lock
            waited.append(operation)
            release()
            return real_wait(fd, operation, deadline_ns)

        monkeypatch.setattr(_calls, "flock_wait", wait)
        with caplog.at_level(logging.WARNING, logger="loopcore"):
            dev.detach()
    assert waited == [fcntl.LOCK_EX]
    assert bound_backing(dev.number) is None
    assert "still locked" not in caplog.text


def test_detach_goes_on_past_a_lock_held_too_long(image: Path, monkeypatch, caplog):
    monkeypatch.setattr(_calls, "DETACH_LOCK_WAIT_S", 0.01)
    dev = loopcore.attach(image, partscan=True)
    with Uevents() as events:
        with probe_lock(dev.path):
            with caplog.at_level(logging.WARNING, logger="loopcore"):
                dev.detach()
            assert dev.closed
        # the holder had the device open: the unbind waited for its close
        assert events.wait_until(lambda: bound_backing(dev.number) is None)
    assert "still locked" in caplog.text



def test_detach_deletes_a_scanned_devices_partitions_retrying_a_probes_hold(
        image: Path, monkeypatch):
    """A probe (blkid -p) holding a partition open makes LOOP_CLR_FD's own
    deletion fail and leave it behind; detach deletes them first, under
    the lock, retrying BLKPG's EBUSY until the probe is gone."""
    dev = loopcore.attach(image, partscan=True)
    blkpg_partition(dev.path, BLKPG_ADD_PARTITION, 1, 1 << 20, 1 << 20)
    part = f"{dev.path}p1"
    code = ("import os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "print('open', flush=True)\n"
            "sys.stdin.readline()\n")
    probe = subprocess.Popen([sys.executable, "-c", code, part], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    tries: List[int] = []
    real_retry = _calls.retry_ebusy

    def retry(call: Callable[[], int], attempts: int, what: str = "") -> int:
        def once() -> int:
            rc = call()
            tries.append(rc)
            if rc < 0 and probe.poll() is None:  # the probe ends
                assert probe.stdin is not None
                probe.stdin.write("\n")
                probe.stdin.flush()
                probe.wait(timeout=30)
            return rc
        return real_retry(once, attempts, what)

    try:
        assert probe.stdout is not None and probe.stdout.readline().strip() == "open"
        monkeypatch.setattr(_calls, "retry_ebusy", retry)
        dev.detach()
    finally:
        probe.kill()
        probe.wait(timeout=30)
    assert tries[0] < 0 and tries[-1] == 0, tries  # EBUSY, then deleted
    assert bound_backing(dev.number) is None  # unbound at once, not deferred
    assert not os.path.exists(f"/sys/block/loop{dev.number}/loop{dev.number}p1")

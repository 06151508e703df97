"""Device locks (``lock()``, ``attach(lock=...)``): systemd's block device
locking convention, seen from other processes."""
from __future__ import annotations

import errno
import fcntl
import subprocess
import sys
from pathlib import Path

import pytest

import loopcore

from conftest import (
    bound_backing,
    bound_under,
)
from loop_helpers import flock_from_child, held_by_child, leak_checked, root

# Polls a loop device as udev would on its uevent: open, and once it is
# bound flock(LOCK_SH|LOCK_NB).  Says "refused" at the first refusal, then
# "got" when it gets the lock -- "got while locked" if the test had not yet
# said (on stdin) that it is about to unlock.
WATCHER = r"""
import fcntl, os, select, sys
path = sys.argv[1]
told = refused = False

def hear():
    global told
    if not told and select.select([sys.stdin], [], [], 0)[0]:
        told = sys.stdin.readline().strip() == "unlocking"

print("ready", flush=True)
while True:
    hear()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        continue
    try:
        try:
            fcntl.ioctl(fd, 0x4C05, bytes(232))  # LOOP_GET_STATUS64: bound?
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # what udev does
        except BlockingIOError:
            if not refused:
                refused = True
                print("refused", flush=True)
            continue
        hear()  # the test writes before it unlocks: a lock got after is known
        print("got" if told else "got while locked", flush=True)
        break
    finally:
        os.close(fd)
"""


@root
@leak_checked
class TestLocks:
    def test_lock_is_systemds_convention(self, image: Path):
        with loopcore.attach(image) as dev:
            assert dev.locked is None and flock_from_child(dev.path, fcntl.LOCK_SH)
            with dev.lock() as lock:
                assert dev.locked == loopcore.loop.LOCK_EXCLUSIVE == lock.mode
                assert not flock_from_child(dev.path, fcntl.LOCK_SH)  # udev backs off
            assert dev.locked is None and flock_from_child(dev.path, fcntl.LOCK_EX)
            with dev.lock(exclusive=False):
                assert flock_from_child(dev.path, fcntl.LOCK_SH)  # others may probe
                assert not flock_from_child(dev.path, fcntl.LOCK_EX)
            assert flock_from_child(dev.path, fcntl.LOCK_EX)

    def test_nested_locks_convert_and_restore(self, image: Path):
        with loopcore.attach(image) as dev:
            with dev.lock():
                with dev.lock(exclusive=False):
                    assert dev.locked == "shared"
                    assert flock_from_child(dev.path, fcntl.LOCK_SH)
                assert dev.locked == "exclusive"
                assert not flock_from_child(dev.path, fcntl.LOCK_SH)
            assert dev.locked is None
            outer = dev.lock()
            dev.unlock()
            assert dev.locked is None and flock_from_child(dev.path, fcntl.LOCK_EX)
            outer.release()  # after unlock(): nothing to do
            assert dev.locked is None

    def test_lock_timeout(self, image: Path):
        with loopcore.attach(image) as dev:
            with held_by_child(dev.path, fcntl.LOCK_SH):
                with pytest.raises(TimeoutError) as e:
                    dev.lock(timeout=0.2)
                assert e.value.errno == errno.ETIMEDOUT and e.value.filename == dev.path
                assert isinstance(e.value, loopcore.Error) and dev.locked is None
                assert flock_from_child(dev.path, fcntl.LOCK_SH)  # nothing of ours held
                with dev.lock(exclusive=False, timeout=0.2):  # shared goes with shared
                    assert dev.locked == "shared"
            with dev.lock(timeout=0):
                assert dev.locked == "exclusive"

    def test_bad_lock_arguments(self, image: Path):
        with pytest.raises(ValueError):
            loopcore.attach(image, lock="please")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            loopcore.attach(image, lock=1)  # type: ignore[arg-type]
        with loopcore.attach(image) as dev:
            with pytest.raises(ValueError):
                dev.lock(timeout=-1)

    @pytest.mark.parametrize("legacy", [False, True], ids=["configure", "legacy"])
    def test_attach_lock_is_taken_before_the_bind(self, image: Path, tmp_path: Path,
                                                  new_number: int, legacy: bool):
        # A watcher polls the device as udev would on its uevent: open, and
        # flock(LOCK_SH|LOCK_NB) once it is bound.  It must never get the
        # lock while attach() holds it -- from the bind on -- only after
        # unlock().
        with loopcore.LoopControl() as ctl:
            ctl.add(new_number)
        path = f"/dev/loop{new_number}"
        watcher = subprocess.Popen([sys.executable, "-c", WATCHER, path],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert watcher.stdin is not None and watcher.stdout is not None
        try:
            assert watcher.stdout.readline().strip() == "ready"
            dev = loopcore.attach(image, number=new_number, lock=True, legacy=legacy)
            try:
                assert dev.locked == "exclusive"
                # bound, and the probe was turned away (not let in first)
                assert watcher.stdout.readline().strip() == "refused"
                watcher.stdin.write("unlocking\n")
                watcher.stdin.flush()
                dev.unlock()
                assert watcher.stdout.readline().strip() == "got"
            finally:
                dev.detach()
        finally:
            watcher.kill()
            watcher.wait(timeout=30)

    def test_attach_shared_lock_and_detach(self, image: Path, tmp_path: Path):
        dev = loopcore.attach(image, lock="shared")
        try:
            assert dev.locked == "shared"
            assert flock_from_child(dev.path, fcntl.LOCK_SH)
            assert not flock_from_child(dev.path, fcntl.LOCK_EX)
        finally:
            dev.detach()
        # the lock fd went first, so LOOP_CLR_FD detached at once
        assert dev.locked is None and not bound_under(tmp_path)

    def test_attach_lock_waits_for_the_devices_lock(self, image: Path, new_number: int):
        with loopcore.LoopControl() as ctl:
            ctl.add(new_number)
        with held_by_child(f"/dev/loop{new_number}", fcntl.LOCK_EX):
            with pytest.raises(TimeoutError) as e:
                loopcore.attach(image, number=new_number, lock=True, timeout=0.3)
            assert e.value.filename == f"/dev/loop{new_number}"
            assert bound_backing(new_number) is None  # waited before binding
        with loopcore.attach(image, number=new_number, lock=True, timeout=5) as dev:
            assert dev.locked == "exclusive"

    def test_reuse_with_lock(self, image: Path):
        with loopcore.attach(image) as first:
            with loopcore.attach(image, reuse=True, lock=True) as again:
                assert again.number == first.number and again.locked == "exclusive"
                assert not flock_from_child(first.path, fcntl.LOCK_SH)
            assert flock_from_child(first.path, fcntl.LOCK_EX)  # closing dropped it

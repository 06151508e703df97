"""Concurrent attach/detach from threads and processes, and a process
killed while it holds an autoclear device."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List

import pytest

import loopcore

from conftest import bound_backing, bound_under
from flocks import wait_for_flock_waiter
from uevents import Uevents

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]

THREADS = 8
CYCLES = 50


def test_threads_never_share_a_device(make_image):
    images = [make_image(size=1 << 20) for _ in range(THREADS)]
    holders: Dict[int, int] = {}       # device number -> thread index
    guard = threading.Lock()
    errors: List[BaseException] = []
    done = [0] * THREADS

    def worker(index: int) -> None:
        try:
            for _ in range(CYCLES):
                with loopcore.attach(images[index]) as dev:
                    with guard:
                        assert dev.number not in holders, \
                            f"{dev.path} handed to threads {holders[dev.number]} and {index}"
                        holders[dev.number] = index
                    # the kernel agrees the device is ours
                    assert bound_backing(dev.number) == str(images[index])
                    with guard:
                        del holders[dev.number]
                done[index] += 1
        except BaseException as e:  # reported below, with the thread's index
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert done == [CYCLES] * THREADS
    assert not bound_under(images[0].parent)


CYCLER = """
import json, sys
import loopcore
n = 0
for _ in range({cycles}):
    with loopcore.attach({image!r}) as dev:
        assert dev.info().backing_file == {image!r}
        n += 1
print(json.dumps(n))
"""


def test_processes_attach_at_once(make_image):
    images = [make_image(size=1 << 20) for _ in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", CYCLER.format(cycles=40, image=str(img))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for img in images]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
        assert out.strip() == "40"
    assert not bound_under(images[0].parent)


HOLDER = """
import loopcore, signal
dev = loopcore.attach({image!r}, autoclear=True)
print(dev.number, flush=True)
signal.pause()  # until killed
"""


def test_sigkill_with_autoclear_device_leaves_nothing_bound(image: Path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(image=str(image))],
                            stdout=subprocess.PIPE, text=True)
    try:
        number = int(proc.stdout.readline())
        assert bound_backing(number) == str(image)
        with Uevents() as events:  # the autoclear detach sends "change"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert events.wait_until(lambda: bound_backing(number) != str(image))
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_forked_child_gets_its_own_control_lock(image: Path):
    # After fork the child must not share the parent's open file description
    # of /dev/loop-control, or the parent's flock would not exclude it.
    import fcntl

    from loopcore.loop.control import CONTROL_PATH, control
    loopcore.attach(image).detach()  # the parent's control fd is open
    control_fd = control.fd()
    fcntl.flock(control_fd, fcntl.LOCK_EX)  # as if the parent were mid-attach
    try:
        pid = os.fork()
        if pid == 0:  # child: must wait for the parent's lock
            code = 0
            try:
                loopcore.attach(image).detach()
            except BaseException:
                code = 1
            os._exit(code)
        assert wait_for_flock_waiter(pid, CONTROL_PATH), "the child never waited for the lock"
        assert os.waitpid(pid, os.WNOHANG) == (0, 0), "child attached under the parent's lock"
    finally:
        fcntl.flock(control_fd, fcntl.LOCK_UN)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

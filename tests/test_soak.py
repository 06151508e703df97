"""The soak (benchmarks/soak.py), short form: worker processes doing random
loop-device work, some killed with SIGKILL inside an operation, the
invariants checked after every round; any violation fails.  Its length is
LOOPCORE_SOAK_SECONDS (60 by default); the long form is ``benchmarks/soak
--procs N --minutes M``.  Also: the checker itself reports each kind of
violation it is there to find."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import loopcore

from conftest import bound_under

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
try:
    from benchmarks import soak, soak_worker
finally:
    sys.path.remove(str(ROOT))

pytestmark = [pytest.mark.root]

SECONDS = float(os.environ.get("LOOPCORE_SOAK_SECONDS", "60"))
PROCS = 3


def test_soak_short_form(tmp_path):
    totals = soak.run(PROCS, SECONDS, directory=str(tmp_path))
    assert totals.violations == []
    assert totals.kills >= 1  # the first round always kills one
    assert totals.invariant_checks >= totals.rounds + totals.kills
    assert totals.acknowledged_writes > 0
    if SECONDS >= 30:  # time enough for every kind at least once
        assert set(soak.OPS) <= set(totals.operations), totals.operations
    assert not bound_under(tmp_path)
    assert not list(tmp_path.iterdir())  # removed, since nothing was found


def _files(root: Path, wid: int) -> list:
    soak.worker_dir(root, wid).mkdir()
    paths = []
    for index in range(soak_worker.FILES_PER_WORKER):
        path = soak.backing_path(root, wid, index)
        with open(path, "wb") as f:
            f.truncate(1 << 20)
        paths.append(path)
    return paths


def test_the_checker_reports_each_violation(tmp_path):
    """A killed worker's autoclear device still bound, its acknowledged write
    missing from the file, a device bound to a live worker's file that it
    does not hold, a live worker's fds above its start: each one a
    violation; a plain leftover is cleaned with the command line."""
    checker = soak.Soak(tmp_path, procs=0, seed=1, ops_per_round=1, kill_probability=0)
    checker.release_wait = 0.2  # how long an autoclear device may take to go
    dead = _files(tmp_path, 0)
    devices = []
    try:
        leftover = loopcore.attach(dead[0])  # not autoclear: what a kill leaves
        leftover.close()
        devices.append(loopcore.attach(dead[1], autoclear=True))  # still open
        (soak.worker_dir(tmp_path, 0) / "journal").write_text("2 8192 7\n")
        checker.clean_up_after(0)
        assert checker.totals.leftovers_cleaned >= 1
        assert not loopcore.find(dead[0])
        found = checker.totals.violations
        assert any("autoclear device of killed worker 0" in v for v in found), found
        assert any("acknowledged write 7 at 8192 of f2" in v for v in found), found
        checker.totals.violations = []

        live_files = _files(tmp_path, 1)
        live = soak.Live(1, proc=None, baseline=5)
        live.report = {"fds": 6, "held": {}, "counts": {}}
        checker.workers[1] = live
        devices.append(loopcore.attach(live_files[0]))
        checker.check()
        found = checker.totals.violations
        assert any("held by no live worker" in v for v in found), found
        assert any("worker 1: 6 fds, expected 5 + 0 held" in v for v in found), found
    finally:
        loopcore.detach_many([d for d in devices if not d.closed])
        for number in bound_under(tmp_path):
            loopcore.detach(number)
    assert not bound_under(tmp_path)


KILLED_BUILDER = """
import sys, loopcore
dev = loopcore.attach(sys.argv[1])
dev.add_partitions()
print(dev.path, flush=True)
sys.stdin.readline()
"""


def _partitions(number: int) -> list:
    return sorted(p for p in os.listdir(f"/sys/block/loop{number}")
                  if p.startswith(f"loop{number}p"))


def test_loopcore_detach_deletes_a_killed_builders_partitions(tmp_path):
    """Found by the soak: a builder killed after add_partitions() leaves its
    device bound with BLKPG partitions; ``loopcore detach DEV`` must leave
    nothing (without partscan the kernel keeps such partitions past
    LOOP_CLR_FD: they stayed on the unbound device)."""
    image = tmp_path / "mbr.img"
    with open(image, "wb") as f:
        f.write(soak_worker.mbr())
        f.truncate(8 << 20)
    child = subprocess.Popen([sys.executable, "-c", KILLED_BUILDER, str(image)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        node = child.stdout.readline().strip()
    finally:
        child.kill()
        child.wait()
    assert node.startswith("/dev/loop"), node
    number = int(node[len("/dev/loop"):])
    try:
        assert _partitions(number) == [f"loop{number}p1", f"loop{number}p2"]
        proc = subprocess.run([sys.executable, "-m", "loopcore", "detach", node],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert not loopcore.find(image)
        assert _partitions(number) == []
    finally:
        for leftover in bound_under(tmp_path):
            loopcore.detach(leftover)

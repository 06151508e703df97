"""detach() and detach(wait=) where udevd runs, under a probe loop (the
builders' complaint: the device still bound after detach returned), and
make_nodes with the kernel's own partition scan (the guest's kernel parses
GPT; the host's does not).

The counts (deferred detaches out of the iterations) are recorded as junit
properties, in the report scripts/vm-tests keeps."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

import loopcore

from uevents import Uevents

ITERATIONS = 30
MiB = 1 << 20

# blkid -p opens every loop device; udevadm trigger makes udevd probe them too.
_PROBE_LOOP = ("while :; do for d in /dev/loop[0-9]*; do blkid -p \"$d\" >/dev/null 2>&1; "
               "done; udevadm trigger --action=change --subsystem-match=block "
               "--sysname-match='loop*' >/dev/null 2>&1; done")


def bound(number: int) -> bool:
    return os.path.exists(f"/sys/block/loop{number}/loop")


@pytest.fixture
def probe_loop() -> Iterator[None]:
    proc = subprocess.Popen(["sh", "-c", _PROBE_LOOP], start_new_session=True)
    try:
        yield
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=60)


def test_detach_reports_deferral_truthfully_under_probes(tmp_path: Path, probe_loop: None,
                                                         record_testsuite_property) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * (8 * MiB))
    deferred = 0
    for _ in range(ITERATIONS):
        device = loopcore.attach(image)
        with open(device.path, "r+b") as f:
            f.write(b"x" * 4096)
        with Uevents() as events:
            if device.detach():
                assert not bound(device.number)  # True means unbound, now
            else:
                deferred += 1  # the prober's close unbinds it
                number = device.number
                assert events.wait_until(lambda: not bound(number))  # noqa: B023
    record_testsuite_property("detach_deferred", f"{deferred}/{ITERATIONS}")


def test_detach_wait_returns_unbound_under_probes(tmp_path: Path, probe_loop: None,
                                                  record_testsuite_property) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * (8 * MiB))
    still_bound = 0
    for _ in range(ITERATIONS):
        device = loopcore.attach(image)
        assert device.detach(wait=30) is True
        still_bound += bound(device.number)
    record_testsuite_property("bound_after_detach_wait", f"{still_bound}/{ITERATIONS}")
    assert still_bound == 0


_STATIC_DEV_PARTSCAN = """
import ctypes, json, os, stat, sys
libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(0x20000) == 0
assert libc.mount(b"none", b"/", None, 0x4000 | (1 << 18), None) == 0
assert libc.mount(b"tmpfs", b"/dev", b"tmpfs", 0, b"mode=0755") == 0
os.mknod("/dev/loop-control", stat.S_IFCHR | 0o600, os.makedev(10, 237))
import loopcore
out = {}
try:
    loopcore.attach(sys.argv[1], partscan=True)
except FileNotFoundError as e:
    out["error"] = [e.errno, e.filename]
dev = loopcore.attach(sys.argv[1], partscan=True, make_nodes=True)
out["nodes"] = sorted(n for n in os.listdir("/dev") if n.startswith(f"loop{dev.number}"))
out["number"] = dev.number
out["released"] = dev.detach()
out["after"] = sorted(n for n in os.listdir("/dev") if n.startswith(f"loop{dev.number}"))
print(json.dumps(out))
"""


def test_make_nodes_with_the_kernels_partition_scan(tmp_path: Path) -> None:
    image = tmp_path / "gpt.img"
    image.write_bytes(b"\0" * (32 * MiB))
    subprocess.run(["sfdisk", "--quiet", str(image)], check=True, text=True,
                   input="label: gpt\nsize=8MiB\nsize=8MiB\n")
    proc = subprocess.run([sys.executable, "-c", _STATIC_DEV_PARTSCAN, str(image)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["error"][0] == 2
    n = out["number"]
    assert out["nodes"] == [f"loop{n}", f"loop{n}p1", f"loop{n}p2"]
    assert out["released"] is True
    assert out["after"] == [f"loop{n}"]



def test_timeout_names_a_dm_holder(tmp_path: Path, mapper, names) -> None:
    from loopcore import dm
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * (8 * MiB))
    device = loopcore.attach(image)
    number = device.number
    name = names("holder")
    info = mapper.create(name, table=[dm.linear(0, 64, device.path, 0)])
    kname = f"dm-{info.minor}"
    try:
        with pytest.raises(loopcore.errors.TimeoutError) as caught:
            device.detach(wait=0)
        assert f"{kname} holds it" in str(caught.value)
    finally:
        with Uevents() as events:
            mapper.remove(name)
            assert events.wait_until(lambda: not bound(number))

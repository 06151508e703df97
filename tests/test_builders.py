"""What image builders need around loop devices, against the real kernel:
a chosen device (``number=``), reuse without overlap (``reuse=True``),
device locks (``lock()``, ``attach(lock=...)``), diskseq-safe reopening
and partitions registered by the library (``add_partitions()``) from
tables made by sfdisk, compared with what sfdisk, partx and the kernel
say.  The parser tests at the end need no root: they read image files."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import random
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

import loopcore
from loopcore.loop import partition_table
from loopcore.loop.partition_table import Partition, PartitionTable, read_partition_table

import faults
from conftest import (
    BLKPG_ADD_PARTITION,
    BLKPG_DEL_PARTITION,
    blkpg_partition,
    bound_backing,
    bound_under,
    force_detach,
    kernel_status,
    sysfs,
)

MiB = 1 << 20
root = pytest.mark.root
leak_checked = pytest.mark.usefixtures("no_leaks")
needs_sfdisk = pytest.mark.skipif(not any(
    os.path.exists(os.path.join(d, "sfdisk")) for d in ("/sbin", "/usr/sbin", "/usr/bin")),
    reason="needs sfdisk (Debian: fdisk)")


# --- helpers ----------------------------------------------------------------------

def fresh_number() -> int:
    """A loop device number nobody has: tests that make /dev/loopN never
    touch a device they did not create."""
    while True:
        number = random.randint(200_000, 900_000)
        if not os.path.exists(f"/sys/block/loop{number}"):
            return number


@pytest.fixture
def new_number(tmp_path: Path) -> Iterator[int]:
    """A number with no device behind it; whatever the test made there is
    detached (if bound to the test's files) and removed afterwards."""
    number = fresh_number()
    yield number
    backing = bound_backing(number)
    if backing and backing.startswith(str(tmp_path)):
        force_detach({number})
    if os.path.exists(f"/sys/block/loop{number}"):
        with loopcore.LoopControl() as ctl:
            with contextlib.suppress(OSError):
                ctl.remove(number)


def partitions_in_sysfs(number: int) -> Dict[int, Tuple[int, int]]:
    """{M: (start, size)} in bytes, as the kernel has registered loopNpM."""
    found = {}
    base = Path(f"/sys/block/loop{number}")
    for entry in base.iterdir():
        name = entry.name
        if name.startswith(f"loop{number}p"):
            start = int((entry / "start").read_text()) * 512
            size = int((entry / "size").read_text()) * 512
            found[int(name[len(f"loop{number}p"):])] = (start, size)
    return found


def flock_from_child(path: str, operation: int) -> bool:
    """Whether another process can take flock ``operation`` | LOCK_NB on
    ``path`` (what udev tries before it probes a device)."""
    code = ("import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)\n"
            "try:\n"
            "    fcntl.flock(fd, int(sys.argv[2]) | fcntl.LOCK_NB)\n"
            "except BlockingIOError:\n"
            "    sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code, path, str(operation)], timeout=30)
    assert proc.returncode in (0, 3), proc
    return proc.returncode == 0


@contextlib.contextmanager
def held_by_child(path: str, operation: int) -> Iterator[None]:
    """Another process holds flock ``operation`` on ``path`` until exit."""
    code = ("import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)\n"
            "fcntl.flock(fd, int(sys.argv[2]))\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, path, str(operation)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.kill()
        proc.wait(timeout=30)


def sfdisk(target: str, script: str) -> None:
    proc = subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", target],
                          input=script, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr


def sfdisk_json(target: str) -> Dict[str, object]:
    proc = subprocess.run(["sfdisk", "--json", target], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["partitiontable"]  # type: ignore[no-any-return]


def sfdisk_view(target: str) -> Tuple[str, int, Dict[int, Tuple[int, int, str]]]:
    """sfdisk's own reading of a table: (label, sector size, {number:
    (start, size, type)}), bytes, the type lower case without zeros in
    front (sfdisk prints MBR type 0x05 as "5")."""
    table = sfdisk_json(target)
    size = int(table["sectorsize"])  # type: ignore[call-overload]
    parts = {}
    for entry in table["partitions"]:  # type: ignore[attr-defined]
        node = entry["node"]
        number = int(node[len(node.rstrip("0123456789")):])
        parts[number] = (entry["start"] * size, entry["size"] * size,
                         entry["type"].lower().lstrip("0") or "0")
    return str(table["label"]), size, parts


def partx_view(device: str) -> Dict[int, Tuple[int, int]]:
    """``partx --show`` of a device: {number: (start, size)} in bytes
    (partx counts 512-byte sectors)."""
    proc = subprocess.run(["partx", "--show", "--noheadings", "-o", "NR,START,SECTORS",
                           device], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    view = {}
    for line in proc.stdout.split("\n"):
        if line.strip():
            nr, start, sectors = (int(f) for f in line.split())
            view[nr] = (start * 512, sectors * 512)
    return view


def ours(table: Optional[PartitionTable]) -> Dict[int, Tuple[int, int, str]]:
    assert table is not None
    return {p.number: (p.start, p.size, p.type.lower().lstrip("0") or "0")
            for p in table.partitions}


# Layouts in sfdisk's script syntax, sizes in the table's sectors.
GPT = ("label: gpt\n"
       "start=2048, size=4096, name=esp, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n"
       "start=6144, size=8192, name=root\n"
       "start=14336, size=8192, name=home\n")
GPT_SPARSE = ("label: gpt\n"       # slots 1 and 4 only: numbers are slots
              "IMG1 : start=2048, size=2048\n"
              "IMG4 : start=8192, size=4096\n")
DOS = ("label: dos\n"
       "label-id: 0x0badcafe\n"
       "start=2048, size=6144, type=83, bootable\n"
       "start=8192, size=8192, type=82\n")
DOS_LOGICAL = ("label: dos\n"
               "label-id: 0x12345678\n"
               "start=2048, size=4096, type=83\n"
               "start=8192, size=20480, type=5\n"
               "start=30720, size=2048, type=c\n"
               "start=10240, size=2048, type=83\n"
               "start=14336, size=4096, type=82\n"
               "start=20480, size=6144, type=83\n")
GPT_4K = ("label: gpt\n"
          "start=256, size=512, name=one\n"
          "start=768, size=1024, name=two\n")
DOS_LOGICAL_4K = ("label: dos\n"
                  "label-id: 0x4b4b4b4b\n"
                  "start=256, size=512, type=83\n"
                  "start=1024, size=2048, type=5\n"
                  "start=1280, size=512, type=83\n"
                  "start=2048, size=512, type=83\n")

LAYOUTS = {
    "gpt": (GPT, 512),
    "gpt-sparse-slots": (GPT_SPARSE, 512),
    "dos": (DOS, 512),
    "dos-extended-logical": (DOS_LOGICAL, 512),
    "gpt-4096": (GPT_4K, 4096),
    "dos-extended-logical-4096": (DOS_LOGICAL_4K, 4096),
}


def make_table(make_image, layout: str, size: int = 32 * MiB) -> Tuple[Path, int]:
    """An image partitioned by sfdisk: for 512-byte sectors the file itself,
    for 4096 through a loop device with 4096-byte sectors (this sfdisk has
    no --sector-size), detached again.  Returns (image, sector size)."""
    script, sector_size = LAYOUTS[layout]
    img = make_image(size=size)
    if sector_size == 512:
        sfdisk(str(img), script.replace("IMG", str(img)))
    else:
        with loopcore.attach(img, block_size=sector_size) as dev:
            sfdisk(dev.path, script.replace("IMG", dev.path + "p"))
    return img, sector_size


# --- a chosen device --------------------------------------------------------------

@root
@leak_checked
class TestChosenDevice:
    def test_attach_makes_the_missing_device_and_binds_it(self, image: Path, new_number: int):
        assert not os.path.exists(f"/dev/loop{new_number}")
        with loopcore.attach(image, number=new_number, offset=4096, size_limit=MiB) as dev:
            assert dev.number == new_number and dev.path == f"/dev/loop{new_number}"
            assert stat.S_ISBLK(os.stat(dev.path).st_mode)
            assert bound_backing(new_number) == str(image)
            status = kernel_status(new_number)
            assert (status["offset"], status["sizelimit"]) == (4096, MiB)
        assert bound_backing(new_number) is None

    @pytest.mark.parametrize("legacy", [False, True], ids=["configure", "legacy"])
    def test_attach_binds_an_existing_unbound_device(self, image: Path, new_number: int,
                                                     legacy: bool):
        with loopcore.LoopControl() as ctl:
            ctl.add(new_number)
        with loopcore.attach(image, number=new_number, legacy=legacy, partscan=True) as dev:
            assert dev.number == new_number
            assert bound_backing(new_number) == str(image)
            assert sysfs(new_number, "loop/partscan") == "1"

    def test_a_bound_device_is_a_typed_busy_error_at_once(self, make_image, new_number: int):
        first, second = make_image(), make_image()
        with loopcore.attach(first, number=new_number):
            start = time.monotonic()
            with pytest.raises(loopcore.LoopBusyError) as e:
                loopcore.attach(second, number=new_number)
            assert time.monotonic() - start < 1.0  # no retry loop for a bound device
            assert e.value.errno == errno.EBUSY
            assert e.value.filename == f"/dev/loop{new_number}"
            assert isinstance(e.value, loopcore.DeviceBusyError)
            assert bound_backing(new_number) == str(first)  # untouched
        assert str(second) not in bound_under(second.parent).values()

    def test_bad_numbers_are_refused_before_any_syscall(self, image: Path):
        with pytest.raises(ValueError):
            loopcore.attach(image, number=-1)
        with pytest.raises(ValueError):
            loopcore.attach(image, number=1 << 31)
        with pytest.raises(TypeError):
            loopcore.attach(image, number="3")  # type: ignore[arg-type]

    def test_a_device_made_for_a_failed_attach_is_removed(self, image: Path, new_number: int):
        # The kernel refuses the bind (injected EIO): the device LOOP_CTL_ADD
        # made for it goes again, nothing stays bound, no fd stays open.
        result = faults.run_with_faults(
            f"loopcore.attach({str(image)!r}, number={new_number})",
            [faults.Fault("ioctl", request=faults.LOOP_CONFIGURE, errno=errno.EIO,
                          times=faults.ALWAYS)],
            setup="import loopcore\nfrom loopcore.loop.control import control\n"
                  "control.fd()  # open before the fd census",
            watch=image.parent)
        assert result.finished, result.output
        assert result.error is not None and result.error.errno == errno.EIO, result.error
        assert not result.bound and not result.leaked_fds
        assert not os.path.exists(f"/sys/block/loop{new_number}")


# --- reuse without overlap --------------------------------------------------------

@root
@leak_checked
class TestReuse:
    def test_the_device_over_the_same_bytes_is_returned(self, image: Path, tmp_path: Path):
        link = tmp_path / "same-inode.img"
        os.link(image, link)  # another name: (st_dev, st_ino) decides
        with loopcore.attach(image, offset=MiB, size_limit=2 * MiB) as first:
            with loopcore.attach(link, offset=MiB, size_limit=2 * MiB, reuse=True) as again:
                assert again.number == first.number and again.reused
                assert not first.reused
                assert again.diskseq == first.diskseq
                assert len(bound_under(tmp_path)) == 1
            # leaving the reused device's block closed it, no more
            assert bound_backing(first.number) == str(image)

    def test_nothing_bound_means_a_new_device(self, image: Path, tmp_path: Path):
        with loopcore.attach(image, reuse=True) as dev:
            assert not dev.reused and bound_backing(dev.number) == str(image)
        assert not bound_under(tmp_path)

    def test_disjoint_ranges_of_one_file_get_their_own_devices(self, image: Path,
                                                               tmp_path: Path):
        with loopcore.attach(image, size_limit=MiB) as low, \
                loopcore.attach(image, offset=MiB, size_limit=MiB, reuse=True) as high:
            assert low.number != high.number and not high.reused
            assert len(bound_under(tmp_path)) == 2

    @pytest.mark.parametrize("existing, requested", [
        ((0, 2 * MiB), (MiB, 2 * MiB)),   # the tail overlaps
        ((MiB, 0), (0, 2 * MiB)),         # an existing device to the end of the file
        ((0, 0), (4096, 0)),              # both to the end, other offsets
        ((0, 4 * MiB), (0, 2 * MiB)),     # same start, other size limit
    ])
    def test_an_overlapping_other_range_is_a_typed_error(self, image: Path, tmp_path: Path,
                                                         existing, requested):
        with loopcore.attach(image, offset=existing[0], size_limit=existing[1]) as first:
            with pytest.raises(loopcore.LoopOverlapError) as e:
                loopcore.attach(image, offset=requested[0], size_limit=requested[1],
                                reuse=True)
            assert e.value.errno == errno.EBUSY
            assert isinstance(e.value, loopcore.LoopBusyError)
            assert e.value.filename == str(image) and e.value.filename2 == first.path
            assert list(bound_under(tmp_path)) == [first.number]

    def test_read_only_compatibility(self, image: Path, tmp_path: Path):
        with loopcore.attach(image, read_only=True) as ro:
            with pytest.raises(PermissionError) as e:
                loopcore.attach(image, reuse=True)
            assert e.value.errno == errno.EROFS and isinstance(e.value, loopcore.Error)
            with loopcore.attach(image, read_only=True, reuse=True) as shared:
                assert shared.number == ro.number
        with loopcore.attach(image) as rw:
            # a read-only user may share a writable device (util-linux does),
            # through a read-only fd
            with loopcore.attach(image, read_only=True, reuse=True) as shared:
                assert shared.number == rw.number
                assert fcntl.fcntl(shared.fileno(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        assert not bound_under(tmp_path)

    def test_another_block_size_is_a_conflict(self, image: Path):
        with loopcore.attach(image, block_size=4096) as first:
            with pytest.raises(loopcore.LoopOverlapError):
                loopcore.attach(image, block_size=512, reuse=True)
            with loopcore.attach(image, block_size=4096, reuse=True) as same:
                assert same.number == first.number
            with loopcore.attach(image, reuse=True) as any_size:
                assert any_size.number == first.number

    def test_reuse_with_a_chosen_number(self, image: Path, new_number: int):
        with loopcore.attach(image, number=new_number) as first:
            with loopcore.attach(image, number=new_number, reuse=True) as same:
                assert same.number == first.number and same.reused
            other = fresh_number()
            with pytest.raises(loopcore.LoopOverlapError):
                loopcore.attach(image, number=other, reuse=True)
            assert not os.path.exists(f"/sys/block/loop{other}")

    def test_concurrent_reusers_share_one_device(self, image: Path, tmp_path: Path):
        # Every process decides and binds under the control lock: one binds,
        # the others find its device.  Without the lock several would bind.
        code = ("import sys, loopcore\n"
                "loopcore.kernel_supports_configure()\n"
                "print('ready', flush=True)\n"
                "sys.stdin.readline()\n"
                "dev = loopcore.attach(sys.argv[1], reuse=True, autoclear=True)\n"
                "print(dev.number, flush=True)\n"
                "sys.stdin.readline()\n"
                "dev.close()\n")
        procs = [subprocess.Popen([sys.executable, "-c", code, str(image)], text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                 for _ in range(6)]
        try:
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            numbers = {int(proc.stdout.readline()) for proc in procs}  # type: ignore[union-attr]
            assert len(numbers) == 1
            assert list(bound_under(tmp_path)) == list(numbers)
        finally:
            for proc in procs:
                with contextlib.suppress(OSError):
                    proc.communicate("done\n", timeout=30)
        deadline = time.monotonic() + 5
        while bound_under(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.01)  # autoclear: the last close detaches
        assert not bound_under(tmp_path)


# --- device locks -----------------------------------------------------------------

WATCHER = r"""
import fcntl, json, os, sys, time
path, stop = sys.argv[1], sys.argv[2]
first_bound, got = None, []
print("ready", flush=True)
while not os.path.exists(stop):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        continue
    try:
        try:
            fcntl.ioctl(fd, 0x4C05, bytes(232))  # LOOP_GET_STATUS64: bound?
        except OSError:
            continue
        now = time.monotonic()
        first_bound = first_bound or now
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # what udev does
            got.append(now)
        except BlockingIOError:
            pass
    finally:
        os.close(fd)
print(json.dumps({"first_bound": first_bound, "got": got}))
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
                start = time.monotonic()
                with pytest.raises(TimeoutError) as e:
                    dev.lock(timeout=0.2)
                assert 0.2 <= time.monotonic() - start < 2
                assert e.value.errno == errno.ETIMEDOUT and e.value.filename == dev.path
                assert isinstance(e.value, loopcore.Error) and dev.locked is None
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
        stop = tmp_path / "stop"
        watcher = subprocess.Popen([sys.executable, "-c", WATCHER, path, str(stop)],
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert watcher.stdout is not None and watcher.stdout.readline().strip() == "ready"
            dev = loopcore.attach(image, number=new_number, lock=True, legacy=legacy)
            try:
                assert dev.locked == "exclusive"
                time.sleep(0.3)
                unlocked_at = time.monotonic()
                dev.unlock()
                time.sleep(0.3)
                stop.touch()
                seen = json.loads(watcher.communicate(timeout=30)[0].splitlines()[-1])
            finally:
                dev.detach()
        finally:
            stop.touch()
            watcher.kill()
            watcher.wait(timeout=30)
        assert seen["first_bound"] is not None and seen["first_bound"] < unlocked_at
        assert seen["got"], "the watcher never got the lock, even after unlock()"
        assert min(seen["got"]) > unlocked_at, "a probe got in while attach held the lock"

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


# --- diskseq ----------------------------------------------------------------------

@root
@leak_checked
class TestDiskseq:
    @pytest.mark.parametrize("options", [
        {}, {"legacy": True}, {"offset": 4096, "size_limit": MiB}, {"partscan": True},
        {"lock": True}, {"block_size": 4096},
    ], ids=lambda o: ",".join(o) or "plain")
    def test_open_with_the_devices_diskseq(self, image: Path, options):
        with loopcore.attach(image, **options) as dev:
            assert dev.diskseq is not None
            again = loopcore.open(dev.path, diskseq=dev.diskseq)
            try:
                assert again.diskseq == dev.diskseq and again.number == dev.number
            finally:
                again.close()

    def test_a_detached_and_reused_device_is_refused(self, make_image, new_number: int):
        first, second = make_image(), make_image()
        with loopcore.attach(first, number=new_number) as dev:
            old = dev.diskseq
        assert old is not None
        with pytest.raises(loopcore.DiskseqMismatchError) as e:
            loopcore.open(new_number, diskseq=old)  # detached: unbound now
        assert e.value.errno == errno.ESTALE and isinstance(e.value, loopcore.LoopError)
        assert e.value.filename == f"/dev/loop{new_number}"
        with loopcore.attach(second, number=new_number) as reused:
            assert reused.diskseq is not None and reused.diskseq > old
            with pytest.raises(loopcore.DiskseqMismatchError):
                loopcore.open(f"/dev/loop{new_number}", diskseq=old)
            with pytest.raises(loopcore.DiskseqMismatchError):
                loopcore.detach(new_number, diskseq=old)
            assert bound_backing(new_number) == str(second)  # not detached
            loopcore.open(new_number, diskseq=reused.diskseq).close()

    def test_methods_that_reopen_check_it(self, image: Path, new_number: int):
        with loopcore.LoopControl() as ctl:
            ctl.add(new_number)
        stale = loopcore.open(new_number)  # unbound; then someone binds it
        try:
            with loopcore.attach(image, number=new_number):
                with pytest.raises(loopcore.DiskseqMismatchError):
                    stale.lock()
                assert stale.locked is None
                with pytest.raises(loopcore.DiskseqMismatchError):
                    stale.add_partitions()
                with pytest.raises(loopcore.DiskseqMismatchError):
                    stale.remove_partitions()
        finally:
            stale.close()

    def test_bad_diskseq_arguments(self, image: Path):
        with loopcore.attach(image) as dev:
            with pytest.raises(ValueError):
                loopcore.open(dev.path, diskseq=0)
            with pytest.raises(TypeError):
                loopcore.open(dev.path, diskseq="1")  # type: ignore[arg-type]


# --- partitions without the kernel's parsers --------------------------------------

@root
@leak_checked
@needs_sfdisk
class TestPartitions:
    @pytest.mark.parametrize("layout", list(LAYOUTS))
    def test_add_and_remove_match_sfdisk_partx_and_the_kernel(self, make_image, layout: str):
        img, sector_size = make_table(make_image, layout)
        with loopcore.attach(img, block_size=sector_size) as dev:
            table = dev.partition_table()
            assert table is not None and table.sector_size == sector_size
            label, sfdisk_sector, sfdisk_parts = sfdisk_view(dev.path)
            assert (table.label, table.sector_size) == (label, sfdisk_sector)
            assert ours(table) == sfdisk_parts
            assert {p.number: (p.start, p.size) for p in table.partitions} == partx_view(dev.path)

            paths = dev.add_partitions()
            numbers = sorted(sfdisk_parts)
            assert paths == [f"{dev.path}p{n}" for n in numbers]
            assert dev.added_partitions == set(numbers)
            # the kernel registered what a kernel with the parser would:
            # an extended partition as its first sector (at least 1 KiB)
            assert partitions_in_sysfs(dev.number) == {
                p.number: (p.start, min(p.size, max(sector_size, 1024)) if p.extended
                           else p.size) for p in table.partitions}
            for part, path in zip(table.partitions, paths):
                st = os.stat(path)
                assert stat.S_ISBLK(st.st_mode)
                assert f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" == Path(
                    f"/sys/block/loop{dev.number}/loop{dev.number}p{part.number}/dev"
                ).read_text().strip()
                if not part.extended:  # the bytes go where the table says
                    tag = f"partition {part.number} of {layout}".encode()
                    with open(path, "r+b") as f:
                        f.write(tag)
                    with open(img, "rb") as f:
                        f.seek(part.start)
                        assert f.read(len(tag)) == tag
            assert dev.add_partitions() == paths  # again: nothing changes

            removed = dev.remove_partitions()
            assert removed == paths
            assert partitions_in_sysfs(dev.number) == {}
            assert not any(os.path.exists(p) for p in paths)
            assert dev.added_partitions == set()

    def test_backup_gpt_when_the_primary_is_damaged(self, make_image):
        img, _ = make_table(make_image, "gpt")
        expected = ours(read_partition_table(img))
        with open(img, "r+b") as f:  # the primary header and its entry array
            f.seek(512)
            f.write(bytes(33 * 512))
        table = read_partition_table(img)
        assert table is not None and table.backup and ours(table) == expected
        with loopcore.attach(img) as dev:
            assert partx_view(dev.path) == {n: v[:2] for n, v in expected.items()}
            dev.add_partitions()
            assert partitions_in_sysfs(dev.number) == {n: v[:2] for n, v in expected.items()}
            size = os.path.getsize(img)
            with open(img, "r+b") as f:  # now the backup too
                f.seek(size - 512)
                f.write(bytes(512))
        with loopcore.attach(img) as dev:
            with pytest.raises(loopcore.PartitionTableError) as e:
                dev.add_partitions()
            assert e.value.errno == errno.EINVAL and "no valid GPT" in str(e.value)
            assert partitions_in_sysfs(dev.number) == {}

    def test_a_table_for_other_sectors_is_explained(self, make_image):
        img, _ = make_table(make_image, "gpt-4096")
        with loopcore.attach(img) as dev:  # 512-byte sectors
            with pytest.raises(loopcore.PartitionTableError) as e:
                dev.add_partitions()
            assert "block_size=4096" in str(e.value)
            assert partitions_in_sysfs(dev.number) == {}

    def test_no_table_adds_nothing(self, image: Path):
        with loopcore.attach(image) as dev:
            assert dev.partition_table() is None
            assert dev.add_partitions() == [] and dev.remove_partitions() == []

    def test_detach_deletes_what_was_added(self, make_image):
        # Without partscan the kernel keeps BLKPG partitions past LOOP_CLR_FD.
        img, _ = make_table(make_image, "dos-extended-logical")
        dev = loopcore.attach(img)
        try:
            paths = dev.add_partitions()
            number = dev.number
        finally:
            dev.detach()
        assert not any(os.path.exists(p) for p in paths)
        assert not [e for e in os.listdir(f"/sys/block/loop{number}")
                    if e.startswith(f"loop{number}p")]

    def test_a_partition_in_use_is_a_busy_error_and_nothing_is_lost(self, make_image):
        img, _ = make_table(make_image, "gpt")
        with loopcore.attach(img) as dev:
            paths = dev.add_partitions()
            holder = os.open(paths[0], os.O_RDONLY)
            try:
                with pytest.raises(loopcore.LoopBusyError) as e:
                    dev.remove_partitions()
                assert e.value.errno == errno.EBUSY and e.value.filename == paths[0]
                assert sorted(partitions_in_sysfs(dev.number)) == [1]  # the others went
                assert dev.added_partitions == {1}
                with pytest.raises(loopcore.LoopBusyError):
                    dev.detach()
                assert bound_backing(dev.number) == str(img)  # still bound, usable
            finally:
                os.close(holder)
            assert dev.remove_partitions() == [paths[0]]

    def test_a_changed_table_is_brought_up_to_date(self, make_image):
        img, _ = make_table(make_image, "gpt")
        with loopcore.attach(img) as dev:
            dev.add_partitions()
            with dev.lock():  # as a partitioning tool should
                sfdisk(dev.path, "label: gpt\nstart=2048, size=4096\nstart=16384, size=2048\n")
            paths = dev.add_partitions()
            assert paths == [f"{dev.path}p1", f"{dev.path}p2"]
            assert partitions_in_sysfs(dev.number) == {1: (MiB, 2 * MiB),
                                                       2: (8 * MiB, MiB)}
            assert not os.path.exists(f"{dev.path}p3")

    def test_missing_and_stale_nodes_are_made(self, make_image):
        img, _ = make_table(make_image, "dos")
        with loopcore.attach(img) as dev:
            paths = dev.add_partitions()
            os.unlink(paths[0])  # as if devtmpfs had not made it
            os.unlink(paths[1])
            os.mknod(paths[1], stat.S_IFBLK | 0o600, os.makedev(1, 3))  # a stale node
            assert dev.add_partitions() == paths
            for path, pno in zip(paths, (1, 2)):
                st = os.stat(path)
                dev_attr = Path(f"/sys/block/loop{dev.number}/loop{dev.number}p{pno}/dev")
                assert f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" == \
                    dev_attr.read_text().strip()
            dev.remove_partitions()
            assert not any(os.path.exists(p) for p in paths)  # ours removed too

    def test_partitions_the_kernel_scanned_are_left_alone(self, make_image, caplog):
        # partscan on a kernel with the parser: the kernel registers the
        # partitions at bind.  This host has no parser, so they are put
        # there the way the kernel would (BLKPG, from outside loopcore).
        img, _ = make_table(make_image, "gpt")
        table = read_partition_table(img)
        assert table is not None
        with loopcore.attach(img, partscan=True) as dev:
            for p in table.partitions:
                blkpg_partition(dev.path, BLKPG_ADD_PARTITION, p.number, p.start, p.size)
            before = partitions_in_sysfs(dev.number)
            with caplog.at_level(logging.INFO, logger="loopcore"):
                paths = dev.add_partitions()
                assert dev.remove_partitions() == []
            assert paths == [f"{dev.path}p{p.number}" for p in table.partitions]
            assert dev.added_partitions == set()
            assert partitions_in_sysfs(dev.number) == before
            messages = [r.getMessage() for r in caplog.records]
            assert any("scanned the partition table itself" in m for m in messages), messages
            assert any("kernel's own" in m for m in messages), messages
            for p in table.partitions:
                blkpg_partition(dev.path, BLKPG_DEL_PARTITION, p.number)

    def test_partscan_without_a_parser_gets_them_added(self, make_image):
        img, _ = make_table(make_image, "gpt")
        with loopcore.attach(img, partscan=True) as dev:
            if partitions_in_sysfs(dev.number):
                pytest.skip("this kernel parses GPT itself")
            assert len(dev.add_partitions()) == 3
            assert dev.added_partitions == {1, 2, 3}
            assert len(dev.remove_partitions()) == 3


# --- the parser without a device (no root) ----------------------------------------

def _gpt_image(tmp_path: Path, entries: List[Tuple[int, int]], *, sector: int = 512,
               size: int = 8 * MiB, count: int = 128) -> Path:
    """A GPT made here (not by sfdisk): (first LBA, last LBA) per entry."""
    last_lba = size // sector - 1
    array_sectors = (count * 128 + sector - 1) // sector
    array = bytearray(count * 128)
    for i, (first, last) in enumerate(entries):
        struct.pack_into("<16s16sQQQ72s", array, i * 128, b"\x01" * 16,
                         bytes([i + 1]) * 16, first, last, 0, "p".encode("utf-16-le"))

    def header(my_lba: int, alternate: int, entries_lba: int) -> bytes:
        raw = bytearray(struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0,
                                    my_lba, alternate, 2 + array_sectors,
                                    last_lba - 1 - array_sectors, b"\x02" * 16, entries_lba,
                                    count, 128, zlib.crc32(array)))
        struct.pack_into("<I", raw, 16, zlib.crc32(raw[:92]))
        return bytes(raw)

    image = bytearray(size)
    image[446:462] = struct.pack("<B3sB3sII", 0, b"", 0xEE, b"", 1, last_lba)
    image[510:512] = b"\x55\xaa"
    image[sector:sector + 92] = header(1, last_lba, 2)
    image[2 * sector:2 * sector + len(array)] = array
    backup_array = (last_lba - array_sectors) * sector
    image[backup_array:backup_array + len(array)] = array
    image[last_lba * sector:last_lba * sector + 92] = header(last_lba, 1, last_lba - array_sectors)
    path = tmp_path / "gpt.img"
    path.write_bytes(bytes(image))
    return path


def _mbr(entries: List[Tuple[int, int, int, int]], sig: int = 0x11223344) -> bytes:
    sector = bytearray(512)
    struct.pack_into("<I", sector, 440, sig)
    for i, (boot, ptype, start, count) in enumerate(entries):
        struct.pack_into("<B3sB3sII", sector, 446 + 16 * i, boot, b"", ptype, b"", start, count)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


class TestParser:
    def test_gpt_slots_names_and_guids(self, tmp_path: Path):
        path = _gpt_image(tmp_path, [(2048, 4095), (0, 0), (4096, 8191)])
        table = read_partition_table(path)
        assert table is not None and table.label == "gpt" and not table.backup
        # slot 2 is unused only if its type GUID is zero: here all three
        # have one, and the empty range 0-0 is a 1-sector partition
        assert [p.number for p in table.partitions] == [1, 2, 3]
        assert table.partitions[0] == Partition(
            1, 2048 * 512, 2048 * 512, "01010101-0101-0101-0101-010101010101",
            "01010101-0101-0101-0101-010101010101", "p", 0, False, 512)

    def test_gpt_bad_crc_falls_back_to_the_backup(self, tmp_path: Path):
        path = _gpt_image(tmp_path, [(2048, 4095)])
        with open(path, "r+b") as f:
            f.seek(512 + 24)  # my_lba: the header CRC no longer matches
            f.write(b"\x07")
        table = read_partition_table(path)
        assert table is not None and table.backup
        assert [(p.start, p.size) for p in table.partitions] == [(MiB, MiB)]

    def test_gpt_entries_outside_the_disk_are_skipped(self, tmp_path: Path):
        path = _gpt_image(tmp_path, [(2048, 4095), (4096, 1 << 40), (9000, 8000)])
        table = read_partition_table(path)
        assert table is not None and [p.number for p in table.partitions] == [1]

    def test_gpt_4096(self, tmp_path: Path):
        path = _gpt_image(tmp_path, [(256, 511)], sector=4096)
        table = read_partition_table(path, sector_size=4096)
        assert table is not None and table.partitions[0].start == MiB
        with pytest.raises(loopcore.PartitionTableError):
            read_partition_table(path)

    def test_mbr_chain_cycles_and_garbage_end(self, tmp_path: Path):
        image = bytearray(8 * MiB)
        image[0:512] = _mbr([(0x80, 0x83, 2048, 2048), (0, 0x05, 4096, 8192)])
        # first EBR: a logical, then a link back to itself (a cycle)
        image[4096 * 512:4097 * 512] = _mbr([(0, 0x83, 64, 128), (0, 0x05, 0, 8192),
                                            (0, 0x83, 100000, 1), (0, 0x83, 1, 1 << 30)])
        path = tmp_path / "mbr.img"
        path.write_bytes(bytes(image))
        table = read_partition_table(path)
        assert table is not None and table.label == "dos" and table.id == "0x11223344"
        parts = {p.number: p for p in table.partitions}
        assert sorted(parts) == [1, 2, 5]  # the garbage 3rd/4th EBR entries dropped
        assert parts[1].attributes == 0x80 and parts[1].uuid == "11223344-01"
        assert parts[2].extended and parts[2].kernel_size == 1024
        assert (parts[5].start, parts[5].size) == ((4096 + 64) * 512, 128 * 512)

    def test_not_a_table(self, tmp_path: Path):
        path = tmp_path / "fat.img"
        boot = bytearray(_mbr([(0x80, 0x83, 1, 10)]))
        boot[446] = 0x3C  # a boot indicator no table has: a FAT boot sector
        path.write_bytes(bytes(boot) + bytes(MiB))
        assert read_partition_table(path) is None
        (tmp_path / "zero.img").write_bytes(bytes(MiB))
        assert read_partition_table(tmp_path / "zero.img") is None

    def test_mbr_partitions_past_the_end_are_cut_or_dropped(self, tmp_path: Path):
        path = tmp_path / "short.img"
        path.write_bytes(_mbr([(0, 0x83, 1024, 4096), (0, 0x83, 1 << 20, 8)]) + bytes(MiB))
        table = read_partition_table(path)
        assert table is not None
        assert [(p.number, p.start, p.size) for p in table.partitions] == [
            (1, 1024 * 512, MiB + 512 - 1024 * 512)]

    @needs_sfdisk
    @pytest.mark.parametrize("layout", [k for k, v in LAYOUTS.items() if v[1] == 512])
    def test_images_agree_with_sfdisk(self, tmp_path: Path, layout: str):
        img = tmp_path / "t.img"
        img.write_bytes(b"")
        os.truncate(img, 32 * MiB)
        sfdisk(str(img), LAYOUTS[layout][0].replace("IMG", str(img)))
        table = read_partition_table(img)
        label, _, parts = sfdisk_view(str(img))
        assert table is not None and table.label == label and ours(table) == parts

    def test_partition_path_and_module_surface(self):
        assert partition_table.partition_path(3, 12) == "/dev/loop3p12"
        assert loopcore.PartitionTable is PartitionTable

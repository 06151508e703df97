"""Discovery: list_devices, find, partitions, against sysfs, ioctls and losetup.

Only devices bound to files these tests made are reasoned about: other
processes attach and detach on the same machine at the same time.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import subprocess
from pathlib import Path
from typing import Iterator, List, NamedTuple

import pytest

import loopcore
from loopcore import Flags, _c
from loopcore.loop import discovery

import faults
from conftest import (
    BLKPG_ADD_PARTITION,
    LOOP_GET_STATUS64,
    LOOP_INFO64,
    VARIANTS,
    attached,
    blkpg_partition,
    force_detach,
    fresh_number,
    kernel_parses_gpt,
    kernel_size,
    kernel_status,
    sysfs,
)
from uevents import Uevents

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]

MiB = 1 << 20





def losetup_j(*args: str) -> List[str]:
    out = subprocess.run(["losetup", "-j", *args], capture_output=True, text=True, check=True)
    return sorted(line.split(":", 1)[0] for line in out.stdout.splitlines())


def expected_info(number: int) -> loopcore.LoopInfo:
    """The kernel's view, read without loopcore: sysfs plus raw GET_STATUS64."""
    status = kernel_status(number)
    flags = Flags(0)
    for attr, bit in (("ro", Flags.READ_ONLY), ("loop/autoclear", Flags.AUTOCLEAR),
                      ("loop/partscan", Flags.PARTSCAN), ("loop/dio", Flags.DIRECT_IO)):
        if sysfs(number, attr) == "1":
            flags |= bit
    seq = sysfs(number, "diskseq")
    major, minor = (int(x) for x in (sysfs(number, "dev") or "0:0").split(":"))
    return loopcore.LoopInfo(
        number=number, path=f"/dev/loop{number}",
        backing_file=sysfs(number, "loop/backing_file"),
        backing_devnum=status["device"], backing_inode=status["inode"],
        offset=int(sysfs(number, "loop/offset")), size_limit=int(sysfs(number, "loop/sizelimit")),
        flags=flags, block_size=int(sysfs(number, "queue/logical_block_size")),
        size_bytes=kernel_size(number), diskseq=int(seq) if seq is not None else None,
        major=major, minor=minor)


def test_list_devices_matches_kernel(make_image):
    images = [make_image(size=8 * MiB) for _ in VARIANTS]
    with attached(*zip(images, VARIANTS)) as devices:
        listed = {info.number: info for info in loopcore.list_devices()}
        for dev, image, options in zip(devices, images, VARIANTS):
            info = listed[dev.number]
            assert info == expected_info(dev.number), options
            assert info.backing_file == str(image)
            st = os.stat(image)
            assert (info.backing_devnum, info.backing_inode) == (st.st_dev, st.st_ino)
            # And what the device itself says through ioctls.
            direct = dev.info()
            for field in ("backing_file", "backing_devnum", "backing_inode", "offset",
                          "size_limit", "flags", "block_size", "size_bytes", "diskseq"):
                assert getattr(info, field) == getattr(direct, field), (field, options)
            assert info.read_only == options.get("read_only", False)
            assert info.autoclear == options.get("autoclear", False)
            assert info.partscan == options.get("partscan", False)
            assert info.offset == options.get("offset", 0)
            assert info.size_limit == options.get("size_limit", 0)


def test_list_devices_sorted_bound_and_unbound(image):
    with loopcore.LoopControl() as ctl:
        with attached((image, {})) as (dev,):
            bound = loopcore.list_devices()
            numbers = [i.number for i in bound]
            assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
            assert all(i.backing_file is not None for i in bound)
            assert dev.number in numbers
            every = loopcore.list_devices(include_unbound=True)
            assert [i.number for i in every] == sorted(i.number for i in every)
            in_sysfs = {int(n[4:]) for n in os.listdir("/sys/block") if n[4:].isdigit()
                        and n.startswith("loop")}
            # Devices come and go meanwhile; ours is there, and the sets overlap hugely.
            assert dev.number in {i.number for i in every}
            assert len(in_sysfs & {i.number for i in every}) >= len(in_sysfs) // 2
            unbound = [i for i in every if i.backing_file is None]
            for info in unbound:
                assert info.flags & ~Flags.READ_ONLY == Flags(0)
                assert (info.offset, info.size_limit, info.backing_inode) == (0, 0, 0)
        # a fresh device we made ourselves is certainly unbound
        number = fresh_number()
        ctl.add(number)
        try:
            info = {i.number: i for i in loopcore.list_devices(include_unbound=True)}[number]
            assert info.backing_file is None and info.path == f"/dev/loop{number}"
            assert info.block_size == 512
            assert number not in {i.number for i in loopcore.list_devices()}
        finally:
            ctl.remove(number)


def test_small_buffer_grows(make_image, monkeypatch):
    with attached(*[(make_image(name=f"grow-{'x' * 100}-{i}.img"), {}) for i in range(3)]):
        expected = loopcore.list_devices()
        monkeypatch.setattr(discovery, "_buffer_size", 80)  # room for one record, no name
        again = loopcore.list_devices()
        assert discovery._buffer_size > 80
    ours = {i.number for i in expected if "grow-" in (i.backing_file or "")}
    assert len(ours) == 3
    assert [i for i in again if i.number in ours] == [i for i in expected if i.number in ours]


def test_device_without_dev_node_is_reported(image):
    with attached((image, {})) as (dev,):
        node, hidden = dev.path, f"/dev/.loopcore-test-hidden-loop{dev.number}"
        os.rename(node, hidden)
        try:
            info = {i.number: i for i in loopcore.list_devices()}.get(dev.number)
            assert info is not None, "a device without a /dev node was skipped"
            assert info.backing_file == str(image) and info.path == node
            # No node, no LOOP_GET_STATUS64: dev/ino unknown, path fallback in find().
            assert (info.backing_devnum, info.backing_inode) == (0, 0)
            assert [i.number for i in loopcore.find(image)] == [dev.number]
            rec = [r for r in discovery.scan() if r.number == dev.number][0]
            assert not rec.has_node and rec.status_errno == errno.ENOENT
        finally:
            os.rename(hidden, node)


def test_find_matches_losetup_j(make_image):
    a, b = make_image(), make_image()
    with attached((a, {}), (a, dict(offset=4096, read_only=True)), (b, {})) as (d1, d2, d3):
        found = [i.path for i in loopcore.find(a)]
        assert found == sorted([d1.path, d2.path], key=lambda p: int(p[9:]))
        assert sorted(found) == losetup_j(str(a))
        assert [i.path for i in loopcore.find(b)] == [d3.path] == losetup_j(str(b))
        # offset filter, as losetup -j FILE -o N
        assert [i.path for i in loopcore.find(a, offset=4096)] == [d2.path] \
            == losetup_j(str(a), "-o", "4096")
        assert [i.path for i in loopcore.find(a, offset=0)] == [d1.path] \
            == losetup_j(str(a), "-o", "0")
        assert loopcore.find(a, offset=512) == [] and losetup_j(str(a), "-o", "512") == []
        # relative paths and symlinks resolve to the same file
        link = a.parent / "link.img"
        link.symlink_to(a)
        assert [i.path for i in loopcore.find(link)] == found
        assert losetup_j(str(link)) == sorted(found)
        cwd = os.getcwd()
        os.chdir(a.parent)
        try:
            assert [i.path for i in loopcore.find(a.name)] == found
        finally:
            os.chdir(cwd)
        # a file nobody uses, and one that does not exist
        other = make_image()
        assert loopcore.find(other) == [] and losetup_j(str(other)) == []
        assert loopcore.find(a.parent / "nope.img") == []


def test_find_deleted_backing_file(make_image):
    img = make_image()
    with attached((img, {}), (img, dict(offset=1024))) as (d1, d2):
        img.unlink()
        listed = {i.number: i for i in loopcore.list_devices()}
        assert listed[d1.number].backing_file == f"{img} (deleted)"
        found = loopcore.find(img)
        assert [i.number for i in found] == sorted([d1.number, d2.number])
        assert [i.number for i in loopcore.find(img, offset=1024)] == [d2.number]
        # losetup -j matches the sysfs name literally: the " (deleted)" form
        deleted_name = f"{img} (deleted)"
        assert [i.path for i in loopcore.find(deleted_name)] == losetup_j(deleted_name) \
            == sorted([d1.path, d2.path], key=lambda p: int(p[9:]))
        # ...and finds nothing for the plain path, where loopcore falls back by design
        assert losetup_j(str(img)) == []
        # a new file at the old path is a different file: (dev, ino) decide
        img.write_bytes(b"\0" * MiB)
        assert loopcore.find(img) == [] and losetup_j(str(img)) == []


def test_find_bad_arguments(image):
    with pytest.raises(ValueError):
        loopcore.find("")
    with pytest.raises(ValueError):
        loopcore.find(image, offset=-1)


def _gpt_image(make_image) -> Path:
    img = make_image(size=16 * MiB)
    table = "label: gpt\nstart=2048, size=12288\nstart=14336, size=12288\n"
    subprocess.run(["sfdisk", "--quiet", str(img)], input=table, text=True, check=True,
                   stdout=subprocess.DEVNULL)
    with open(img, "r+b") as f:
        for start, text in ((2048 * 512, b"first partition"), (14336 * 512, b"second partition")):
            f.seek(start)
            f.write(text)
    return img


def test_gpt_partitions_found_and_readable(make_image):
    img = _gpt_image(make_image)
    listener = Uevents()  # opened first: the detach's uevents are queued
    with attached((img, dict(partscan=True))) as (dev,):
        if not kernel_parses_gpt():
            # This host's kernel has no GPT parser: add them as partx would.
            assert dev.partitions() == []
            blkpg_partition(dev.path, BLKPG_ADD_PARTITION, 1, 2048 * 512, 12288 * 512)
            blkpg_partition(dev.path, BLKPG_ADD_PARTITION, 2, 14336 * 512, 12288 * 512)
        parts = dev.wait_for_partitions(2, timeout=5.0)
        expected = [f"{dev.path}p1", f"{dev.path}p2"]
        assert parts == expected == dev.partitions() == discovery.partitions(dev.number)
        for part, text in zip(parts, (b"first partition", b"second partition")):
            with open(part, "rb") as f:
                assert f.read(len(text)) == text
                assert f.seek(0, os.SEEK_END) == 12288 * 512
        assert loopcore.find(img)[0].partscan
    # Detaching removes the partitions with the device's binding (each
    # partition's 'remove' uevent tells when).
    part1 = f"/sys/block/loop{dev.number}/loop{dev.number}p1"
    with listener:
        assert listener.wait_until(lambda: not os.path.exists(part1)), \
            "partitions went with the detach"


def test_partitions_without_partscan_and_timeouts(image):
    with attached((image, {})) as (dev,):
        assert dev.partitions() == []
        assert dev.wait_for_partitions(0, timeout=0) == []
        with pytest.raises(TimeoutError) as exc:
            dev.wait_for_partitions(1, timeout=0.2)
        assert exc.value.errno == errno.ETIMEDOUT and exc.value.filename == dev.path
        with pytest.raises(ValueError):
            dev.wait_for_partitions(-1)
    number = fresh_number()
    with pytest.raises(OSError) as exc2:
        discovery.partitions(number)
    assert exc2.value.errno == errno.ENODEV and exc2.value.filename == f"/dev/loop{number}"
    with pytest.raises(ValueError):
        discovery.partitions(-1)


BLKROSET = 0x125D


def set_disk_ro(dev: loopcore.LoopDevice, ro: bool) -> None:
    """BLKROSET: the disk read-only without LO_FLAGS_READ_ONLY."""
    import fcntl
    import struct
    fcntl.ioctl(dev.fileno(), BLKROSET, struct.pack("i", 1 if ro else 0))


@contextlib.contextmanager
def reset_ro(dev: loopcore.LoopDevice) -> Iterator[None]:
    """BLKROSET stays with the device number after detach: undo it first."""
    try:
        yield
    finally:
        set_disk_ro(dev, False)


def test_ioctl_sysfs_and_no_node_paths_agree(make_image):
    """The default scan reads ioctls on /dev/loopN; the sysfs files must say the same."""
    images = [make_image() for _ in VARIANTS]
    with attached(*zip(images, VARIANTS)) as devices, reset_ro(devices[0]):
        set_disk_ro(devices[0], True)  # ro in sysfs, not in lo_flags
        ours = {d.number for d in devices}
        fast = {r.number: r for r in discovery.scan() if r.number in ours}
        slow = {r.number: r for r in discovery.scan(sysfs=True) if r.number in ours}
        bare = {r.number: r for r in discovery.scan(backing_status=False) if r.number in ours}
        assert set(fast) == set(slow) == set(bare) == ours
        from_sysfs = _c.lib.LC_SCAN_FROM_SYSFS
        status_bits = _c.lib.LC_SCAN_HAS_STATUS | _c.lib.LC_SCAN_HAS_NODE
        for n in ours:
            assert not fast[n].scan_flags & from_sysfs
            assert slow[n].scan_flags & from_sysfs and bare[n].scan_flags & from_sysfs
            assert fast[n] == slow[n]._replace(scan_flags=slow[n].scan_flags & ~from_sysfs)
            assert bare[n]._replace(scan_flags=bare[n].scan_flags & ~from_sysfs) == \
                fast[n]._replace(scan_flags=fast[n].scan_flags & ~status_bits,
                                 backing_devnum=0, backing_inode=0)
        info = {i.number: i for i in loopcore.list_devices()}[devices[0].number]
        assert info.read_only and sysfs(devices[0].number, "ro") == "1"
        assert not kernel_status(devices[0].number)["flags"] & Flags.READ_ONLY


# --- a backing path longer than a page -------------------------------------------------
# sysfs shows at most a page: past that, reading loop/backing_file fails with
# ENAMETOOLONG, and the device must still be reported, by the 64-byte
# lo_file_name that LOOP_GET_STATUS64 gives.

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
LOOP_SET_STATUS64 = 0x4C04
LO_NAME_SIZE = 64


class DeepImage(NamedTuple):
    fd: int        # O_RDWR on the image
    dir_fd: int    # its directory
    path: str      # its absolute path, longer than a page (no path syscall takes it)
    name: str      # its name in dir_fd


def bound_to_unnamed(st: os.stat_result) -> List[int]:
    """Devices bound to the file ``st`` describes among those whose sysfs
    name cannot be read (conftest's leak checks, which go by that name,
    cannot see them); by raw GET_STATUS64, without loopcore."""
    found = []
    for entry in os.listdir("/sys/block"):
        if not entry.startswith("loop") or not entry[4:].isdigit():
            continue
        try:
            Path(f"/sys/block/{entry}/loop/backing_file").read_bytes()
            continue
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG:
                continue
        try:
            status = kernel_status(int(entry[4:]))
        except OSError:
            continue
        if (status["device"], status["inode"]) == (st.st_dev, st.st_ino):
            found.append(int(entry[4:]))
    return found


@contextlib.contextmanager
def deep_image(base: Path, size: int = MiB) -> Iterator[DeepImage]:
    """An image under ``base`` whose absolute path is longer than a page.

    Made with mkdirat/openat relative to directory fds, since no path-based
    call takes a name that long (PATH_MAX is a page too).  Afterwards the
    fds are closed, and a device still bound to the image is detached and
    fails the test; pytest removes the tree with the rest of tmp_path.
    """
    component = "d" * 250
    fds: List[int] = []
    path = str(base)
    leaked: List[int] = []
    try:
        fds.append(os.open(base, os.O_RDONLY | os.O_DIRECTORY))
        while len(path) <= PAGE_SIZE + 100:
            os.mkdir(component, dir_fd=fds[-1])
            fds.append(os.open(component, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
            os.close(fds.pop(-2))
            path += "/" + component
        fds.append(os.open("deep.img", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600,
                           dir_fd=fds[-1]))
        os.ftruncate(fds[-1], size)
        yield DeepImage(fds[-1], fds[-2], path + "/deep.img", "deep.img")
    finally:
        if len(fds) == 2:
            leaked = bound_to_unnamed(os.fstat(fds[-1]))
            force_detach(set(leaked))
        for fd in fds:
            os.close(fd)
    assert not leaked, f"devices left bound to the deep image: {leaked}"


def set_lo_file_name(dev: loopcore.LoopDevice, name: bytes) -> None:
    """Put ``name`` in lo_file_name (LOOP_SET_STATUS64, the rest as it was),
    as a tool attaching by path does; the kernel keeps 63 bytes and a NUL."""
    fields = list(LOOP_INFO64.unpack(fcntl.ioctl(dev.fileno(), LOOP_GET_STATUS64,
                                                 bytes(LOOP_INFO64.size))))
    fields[9] = name[:LO_NAME_SIZE - 1]  # lo_file_name
    fcntl.ioctl(dev.fileno(), LOOP_SET_STATUS64, LOOP_INFO64.pack(*fields))


def lo_file_name_marked(number: int) -> str:
    """lo_file_name, read with a raw ioctl; a full one (63 bytes, perhaps cut)
    has its last byte replaced by '*', the mark util-linux gives it."""
    name = str(kernel_status(number)["file_name"])
    return name[:LO_NAME_SIZE - 2] + "*" if len(name.encode()) >= LO_NAME_SIZE - 1 else name


def test_backing_path_longer_than_a_page_is_listed(tmp_path):
    with deep_image(tmp_path) as deep, attached((deep.fd, {})) as (dev,):
        assert len(deep.path) > PAGE_SIZE
        with pytest.raises(OSError) as exc:  # what the kernel does: no name in sysfs
            Path(f"/sys/block/loop{dev.number}/loop/backing_file").read_bytes()
        assert exc.value.errno == errno.ENAMETOOLONG
        st = os.fstat(deep.fd)
        # As attached (loopcore's lo_file_name for an fd), then as a tool that
        # attached by path would leave it: the first 63 bytes.
        for lo_file_name in (None, deep.path.encode()):
            if lo_file_name is not None:
                set_lo_file_name(dev, lo_file_name)
            want = lo_file_name_marked(dev.number)
            for include_unbound in (False, True):
                listed = {i.number: i for i in loopcore.list_devices(
                    include_unbound=include_unbound)}
                assert dev.number in listed, "a bound device vanished from the list"
                info = listed[dev.number]
                assert info.backing_file == want
                assert (info.backing_devnum, info.backing_inode) == (st.st_dev, st.st_ino)
                assert (info.offset, info.size_limit, info.size_bytes) == (0, 0, MiB)
            # every way of scanning has it, and says the name is not the full path
            fast, slow, bare = ({r.number: r for r in records}[dev.number] for records in (
                discovery.scan(), discovery.scan(sysfs=True),
                discovery.scan(backing_status=False)))
            assert fast.backing_partial and slow.backing_partial and bare.backing_partial
            assert fast.bound and slow.bound and bare.bound
            assert fast.backing_file == slow.backing_file == want
            # and the device itself says the same, instead of ENAMETOOLONG
            assert dev.backing_file == dev.info().backing_file == want
            assert bare.backing_file == ""  # no /dev/loopN asked: nothing is known
        assert want == deep.path[:LO_NAME_SIZE - 2] + "*"
        # find: by (st_dev, st_ino), through a name that works for stat()
        for name in (f"/proc/self/fd/{deep.fd}", f"/dev/fd/{deep.fd}"):
            assert [i.number for i in loopcore.find(name)] == [dev.number], name
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fchdir(deep.dir_fd)
            assert [i.number for i in loopcore.find(deep.name)] == [dev.number]
        finally:
            os.fchdir(cwd)
            os.close(cwd)



# --- the walk: which devices are bound ------------------------------------------

def test_a_device_bound_to_an_empty_file_is_listed(make_image):
    # size 0, like every unbound device: the walk must not tell them apart by size
    empty = make_image(size=0)
    with attached((empty, {})) as (dev,):
        for records in (discovery.scan(), discovery.scan(sysfs=True),
                        discovery.scan(backing_status=False), loopcore.list_devices()):
            info = {i.number: i for i in records}[dev.number]
            assert info.bound and info.backing_file == str(empty)
            assert info.size_bytes == 0
        assert [i.number for i in loopcore.find(empty)] == [dev.number]


def _listed_in_child(number: int, fault: faults.Fault, **scan: bool) -> faults.ChildResult:
    def code(ctx: faults.Context) -> None:
        bound = {i.number for i in discovery.scan(**scan)}
        every = {i.number: i.backing_file for i in discovery.scan(include_unbound=True, **scan)}
        ctx.report.update(bound=number in bound, every=every.get(number, "missing"))
    return faults.run_with_faults(code, [fault])


@pytest.mark.parametrize("where", ["backing_file", "GET_STATUS64", "sysfs attributes"])
def test_a_device_detached_during_the_walk_is_skipped(image, where):
    # Detached after the walk's look at loopN/loop: the kernel answers
    # ENOENT (backing_file and the loop/ attributes went with loop/) or
    # ENXIO (LOOP_GET_STATUS64 of an unbound device).  Not an error, not
    # listed as bound with a name it no longer has; unbound with
    # include_unbound.
    with attached((image, {})) as (dev,):
        scan = {}
        if where == "backing_file":
            fault = faults.Fault("openat", path=rf"(.*/)?loop{dev.number}/loop/backing_file",
                                 errno=errno.ENOENT, times=faults.ALWAYS)
        elif where == "GET_STATUS64":
            fault = faults.Fault("ioctl", request=faults.LOOP_GET_STATUS64,
                                 errno=errno.ENXIO, times=faults.ALWAYS)
        else:  # no /dev/loopN asked: the attributes come from sysfs
            scan = {"backing_status": False}
            fault = faults.Fault("openat", path="loop/offset", errno=errno.ENOENT,
                                 times=faults.ALWAYS)
        result = _listed_in_child(dev.number, fault, **scan)
        assert result.error is None, result.error
        assert result.stats[0].injected > 0
        assert result.report == {"bound": False, "every": None}  # unbound, still there
        # and without the fault it is bound, so the fault is what hid it
        assert loopcore.find(image)[0].number == dev.number

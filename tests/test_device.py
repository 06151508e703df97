"""LoopDevice methods, loopcore.open/detach and LoopControl."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import loopcore
from loopcore import Flags

from conftest import (
    BLKPG_ADD_PARTITION,
    blkpg_partition,
    bound_backing,
    kernel_size,
    kernel_status,
    sysfs,
)
from uevents import wait_for_deferred_detaches

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]

MiB = 1 << 20


def test_set_capacity_after_growth(make_image):
    img = make_image(size=MiB)
    with loopcore.attach(img) as dev:
        assert kernel_size(dev.number) == MiB
        os.truncate(img, 3 * MiB)
        dev.set_capacity()
        assert kernel_size(dev.number) == 3 * MiB == int(sysfs(dev.number, "size")) * 512


def test_set_block_size(image: Path):
    with loopcore.attach(image) as dev:
        dev.set_block_size(2048)
        assert sysfs(dev.number, "queue/logical_block_size") == "2048"
        with pytest.raises(ValueError):
            dev.set_block_size(3000)
        assert sysfs(dev.number, "queue/logical_block_size") == "2048"


def test_set_direct_io(image: Path):
    with loopcore.attach(image, direct_io=False) as dev:
        dev.set_direct_io(True)
        assert sysfs(dev.number, "loop/dio") == "1"
        dev.set_direct_io(False)
        assert sysfs(dev.number, "loop/dio") == "0"


def test_set_direct_io_refused_for_unaligned_offset(image: Path):
    with loopcore.attach(image, offset=100, direct_io=False) as dev:
        with pytest.raises(loopcore.LoopError) as e:
            dev.set_direct_io(True)
        assert e.value.errno == errno.EINVAL and e.value.filename == dev.path
        assert sysfs(dev.number, "loop/dio") == "0"


def test_set_autoclear(image: Path):
    dev = loopcore.attach(image)
    n = dev.number
    try:
        dev.set_autoclear(True)
        assert sysfs(n, "loop/autoclear") == "1"
        dev.set_autoclear(False)
        assert sysfs(n, "loop/autoclear") == "0"
        dev.set_autoclear(True)
    finally:
        dev.close()  # autoclear: the last close detaches
    # ... or another process's close, if one had it open meanwhile (a scan)
    wait_for_deferred_detaches(lambda: [f"loop{n}"] if bound_backing(n) == str(image) else [])
    assert bound_backing(n) != str(image)


def test_change_fd_on_read_only_device(make_image):
    first = make_image(size=MiB, data=b"first")
    second = make_image(size=MiB, data=b"second")
    with loopcore.attach(first, read_only=True) as dev:
        dev.change_fd(second)
        assert bound_backing(dev.number) == str(second)
        with open(dev.path, "rb") as disk:
            assert disk.read(6) == b"second"


def test_change_fd_needs_read_only_and_same_size(make_image):
    first = make_image(size=MiB)
    other_size = make_image(size=2 * MiB)
    with loopcore.attach(first) as dev:
        with pytest.raises(ValueError, match="read-only"):
            dev.change_fd(other_size)
    with loopcore.attach(first, read_only=True) as dev:
        with pytest.raises(ValueError, match="device"):
            dev.change_fd(other_size)
        assert bound_backing(dev.number) == str(first)


def test_fileno_and_close(image: Path):
    dev = loopcore.attach(image)
    n = dev.number
    try:
        assert os.readlink(f"/proc/self/fd/{dev.fileno()}") == dev.path
        dev.close()
        assert dev.closed
        with pytest.raises(ValueError):
            dev.fileno()
        with pytest.raises(ValueError):
            dev.info()
        # close() does not detach
        assert bound_backing(n) == str(image)
    finally:
        loopcore.detach(n)
    assert bound_backing(n) != str(image)


def test_context_manager_detaches_on_exception(image: Path):
    with pytest.raises(RuntimeError):
        with loopcore.attach(image) as dev:
            n = dev.number
            raise RuntimeError("boom")
    assert bound_backing(n) != str(image)
    assert dev.closed


def test_detach_twice_is_a_value_error(image: Path):
    dev = loopcore.attach(image)
    dev.detach()
    with pytest.raises(ValueError):
        dev.detach()


def test_detach_keeps_written_data(make_image):
    img = make_image(size=MiB)
    dev = loopcore.attach(img)
    fd = os.open(dev.path, os.O_RDWR)
    os.pwrite(fd, b"W" * 4096, 8192)
    os.close(fd)  # not the last close: loopcore still holds the device open
    dev.detach()
    assert img.read_bytes()[8192:8192 + 4096] == b"W" * 4096


def test_open_existing_by_path_and_number(image: Path):
    with loopcore.attach(image, read_only=True, offset=512) as dev:
        for ref in (dev.path, dev.number, Path(dev.path)):
            other = loopcore.open(ref)
            try:
                assert other.number == dev.number and other.devnum == dev.devnum
                assert other.diskseq == dev.diskseq
                info = other.info()
                assert info.offset == 512 and info.read_only
                assert info.backing_file == str(image)
            finally:
                other.close()
        assert bound_backing(dev.number) == str(image)


def test_open_unbound_device(image: Path):
    with loopcore.LoopControl() as ctl:
        n = ctl.get_free()
    dev = loopcore.open(n)
    try:
        assert dev.backing_file is None
        with pytest.raises(loopcore.LoopError) as e:
            dev.info()
        assert e.value.errno == errno.ENXIO
    finally:
        dev.close()


def test_module_detach(image: Path):
    dev = loopcore.attach(image)
    n = dev.number
    dev.close()
    loopcore.detach(dev.path)
    assert bound_backing(n) is None or bound_backing(n) != str(image)
    with pytest.raises(loopcore.LoopError) as e:
        loopcore.detach(n)
    assert e.value.errno == errno.ENXIO and e.value.filename == f"/dev/loop{n}"


@pytest.mark.parametrize("path", ["/dev/null", "/etc/hostname", "/dev/vda", "/dev/loop-control"])
def test_open_not_a_loop_device(path: str):
    if not os.path.exists(path):
        pytest.skip(f"{path} not on this machine")
    with pytest.raises(loopcore.NotALoopDeviceError) as e:
        loopcore.open(path)
    assert e.value.filename == path and isinstance(e.value, OSError)


@pytest.mark.parametrize("ref, error", [
    (True, TypeError), (3.0, TypeError), (None, TypeError), (-1, ValueError), (1 << 31, ValueError),
])
def test_open_refuses_a_bad_reference_before_any_syscall(ref: object, error: type):
    with pytest.raises(error) as e:
        loopcore.open(ref)  # type: ignore[arg-type]
    assert isinstance(e.value, loopcore.Error)
    with pytest.raises(error):
        loopcore.detach(ref)  # type: ignore[arg-type]


def test_open_missing_path(tmp_path: Path):
    with pytest.raises(FileNotFoundError) as e:
        loopcore.open(tmp_path / "nope")
    assert e.value.filename == str(tmp_path / "nope")


def test_open_partition_is_not_a_loop_device(make_image):
    img = make_image(size=4 * MiB)
    with loopcore.attach(img, partscan=True) as dev:
        blkpg_partition(dev.path, BLKPG_ADD_PARTITION, 1, MiB, MiB)
        part = f"{dev.path}p1"
        assert os.path.exists(part)  # devtmpfs made the node
        with pytest.raises(loopcore.NotALoopDeviceError) as e:
            loopcore.open(part)
        assert e.value.filename == part


def _unused_number() -> int:
    present = {int(d[4:]) for d in os.listdir("/sys/block") if d.startswith("loop")}
    n = 4000
    while n in present:
        n += 1
    return n


def test_loop_control_add_remove():
    n = _unused_number()
    with loopcore.LoopControl() as ctl:
        assert ctl.add(n) == n
        try:
            assert os.path.isdir(f"/sys/block/loop{n}")
            with pytest.raises(FileExistsError) as e:
                ctl.add(n)
            assert e.value.filename == f"/dev/loop{n}"
        finally:
            ctl.remove(n)
        assert not os.path.exists(f"/sys/block/loop{n}")
        with pytest.raises(loopcore.LoopError) as e:
            ctl.remove(n)
        assert e.value.errno == errno.ENODEV


def test_loop_control_remove_bound_device_is_busy(image: Path, monkeypatch):
    from loopcore import loop
    monkeypatch.setattr(loop._calls, "REMOVE_ATTEMPTS", 2)
    with loopcore.attach(image) as dev, loopcore.LoopControl() as ctl:
        with pytest.raises(loopcore.DeviceBusyError) as e:
            ctl.remove(dev.number)
        assert e.value.errno == errno.EBUSY
        assert bound_backing(dev.number) == str(image)


def test_loop_control_get_free_is_unbound():
    with loopcore.LoopControl() as ctl:
        n = ctl.get_free()
        assert ctl.fileno() >= 0
    assert bound_backing(n) is None
    with pytest.raises(ValueError):
        loopcore.LoopControl().add(-1)


def test_kernel_status_flags_round_trip(image: Path):
    with loopcore.attach(image, read_only=True, autoclear=True, partscan=True) as dev:
        flags = Flags(kernel_status(dev.number)["flags"])
        assert flags & ~Flags.DIRECT_IO == Flags.READ_ONLY | Flags.AUTOCLEAR | Flags.PARTSCAN

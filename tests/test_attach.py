"""attach() and its options, checked against the kernel's own view."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import loopcore
from loopcore import Flags

from conftest import bound_backing, kernel_size, kernel_status, sysfs

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]

MiB = 1 << 20


def test_flag_values_match_linux_loop_h():
    assert (Flags.READ_ONLY, Flags.AUTOCLEAR, Flags.PARTSCAN, Flags.DIRECT_IO) == (1, 4, 8, 16)


def test_this_kernel_has_loop_configure():
    assert loopcore.kernel_supports_configure() is True


def test_attach_path_defaults(image: Path):
    with loopcore.attach(image) as dev:
        n = dev.number
        assert dev.path == f"/dev/loop{n}"
        assert bound_backing(n) == str(image)
        assert os.stat(dev.path).st_rdev == dev.devnum
        assert sysfs(n, "dev") == f"{os.major(dev.devnum)}:{os.minor(dev.devnum)}"
        assert dev.diskseq == int(sysfs(n, "diskseq"))
        assert sysfs(n, "ro") == "0"
        assert sysfs(n, "loop/offset") == "0" and sysfs(n, "loop/sizelimit") == "0"
        assert sysfs(n, "loop/autoclear") == "0" and sysfs(n, "loop/partscan") == "0"
        # direct_io=True by default; ext4/tmpfs here allow O_DIRECT.
        assert sysfs(n, "loop/dio") == "1"
        assert kernel_size(n) == 8 * MiB
        assert dev.backing_file == str(image)
    assert bound_backing(n) != str(image)


def test_attach_fd_and_file_object(image: Path):
    fd = os.open(image, os.O_RDWR)
    try:
        with loopcore.attach(fd) as dev:
            assert bound_backing(dev.number) == str(image)
        os.fstat(fd)  # the caller's fd is left open
    finally:
        os.close(fd)
    with open(image, "r+b") as f:
        with loopcore.attach(f) as dev:
            assert bound_backing(dev.number) == str(image)
        assert not f.closed


def test_info_matches_kernel(image: Path):
    with loopcore.attach(image, offset=MiB, size_limit=2 * MiB, block_size=4096,
                         autoclear=True, partscan=True) as dev:
        info = dev.info()
        status = kernel_status(dev.number)
        st = os.stat(image)
        assert info.number == dev.number and info.path == dev.path
        assert info.backing_file == str(image)
        assert info.backing_devnum == st.st_dev == status["device"]
        assert info.backing_inode == st.st_ino == status["inode"]
        assert info.offset == MiB == int(sysfs(dev.number, "loop/offset"))
        assert info.size_limit == 2 * MiB == int(sysfs(dev.number, "loop/sizelimit"))
        assert info.flags == status["flags"]
        assert info.flags & (Flags.AUTOCLEAR | Flags.PARTSCAN) == Flags.AUTOCLEAR | Flags.PARTSCAN
        assert info.block_size == 4096 == int(sysfs(dev.number, "queue/logical_block_size"))
        assert info.size_bytes == 2 * MiB == kernel_size(dev.number)
        assert info.diskseq == int(sysfs(dev.number, "diskseq"))
        assert info.autoclear and info.partscan and not info.read_only


def test_data_lands_at_offset(make_image):
    img = make_image(size=4 * MiB)
    with loopcore.attach(img, offset=MiB, size_limit=MiB) as dev:
        with open(dev.path, "r+b", buffering=0) as disk:
            disk.write(b"A" * 4096)
            disk.seek(MiB - 4096)
            disk.write(b"Z" * 4096)
            assert disk.seek(0, os.SEEK_END) == MiB
    data = img.read_bytes()
    assert data[MiB:MiB + 4096] == b"A" * 4096
    assert data[2 * MiB - 4096:2 * MiB] == b"Z" * 4096
    assert data.count(b"A") == 4096 and data.count(b"Z") == 4096


def test_reads_see_file_contents(image: Path):
    expected = image.read_bytes()
    with loopcore.attach(image, read_only=True, offset=4096) as dev:
        with open(dev.path, "rb") as disk:
            assert disk.read() == expected[4096:]


def test_read_only_refuses_writes(image: Path):
    before = image.read_bytes()
    with loopcore.attach(image, read_only=True) as dev:
        assert sysfs(dev.number, "ro") == "1"
        assert kernel_status(dev.number)["flags"] & Flags.READ_ONLY
        with pytest.raises(OSError):
            fd = os.open(dev.path, os.O_WRONLY)
            try:
                os.write(fd, b"x" * 512)
                os.fsync(fd)
            finally:
                os.close(fd)
    assert image.read_bytes() == before


def test_autoclear_detaches_on_last_close(image: Path):
    dev = loopcore.attach(image, autoclear=True)
    n = dev.number
    assert sysfs(n, "loop/autoclear") == "1"
    dev.close()
    assert bound_backing(n) != str(image)


def test_partscan_flag(image: Path):
    with loopcore.attach(image, partscan=True) as dev:
        assert sysfs(dev.number, "loop/partscan") == "1"


def test_direct_io_off(image: Path):
    with loopcore.attach(image, direct_io=False) as dev:
        assert sysfs(dev.number, "loop/dio") == "0"
        assert not dev.info().direct_io


def test_direct_io_falls_back_to_buffered_when_offset_forbids_it(image: Path):
    # An offset that is not sector aligned rules direct I/O out: the attach
    # succeeds buffered and info() says so.
    with loopcore.attach(image, offset=100) as dev:
        assert sysfs(dev.number, "loop/dio") == "0"
        assert not dev.info().direct_io
        assert int(sysfs(dev.number, "loop/offset")) == 100


@pytest.mark.parametrize("block_size", [512, 1024, 2048, 4096])
def test_block_size(image: Path, block_size: int):
    with loopcore.attach(image, block_size=block_size) as dev:
        assert int(sysfs(dev.number, "queue/logical_block_size")) == block_size
        assert dev.info().block_size == block_size


def test_size_limit_and_unaligned_file(make_image):
    img = make_image(size=3 * MiB + 1000)
    with loopcore.attach(img) as dev:
        assert kernel_size(dev.number) == (3 * MiB + 1000) // 512 * 512
    with loopcore.attach(img, size_limit=MiB + 512) as dev:
        assert kernel_size(dev.number) == MiB + 512


def test_long_backing_path_is_reported_whole(tmp_path: Path):
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    img = deep / "image.img"
    img.write_bytes(b"\0" * MiB)
    with loopcore.attach(img) as dev:
        assert dev.backing_file == str(img) == bound_backing(dev.number)
        assert dev.info().backing_file == str(img)
        # the kernel's lo_file_name holds only the first 63 bytes
        assert kernel_status(dev.number)["file_name"] == str(img)[:63]


def test_attach_block_device_backing(image: Path):
    with loopcore.attach(image) as lower:
        with loopcore.attach(lower.path, read_only=True) as upper:
            assert bound_backing(upper.number) == lower.path
            assert kernel_size(upper.number) == 8 * MiB


def test_many_attaches_get_distinct_devices(make_image):
    devices = [loopcore.attach(make_image(size=MiB)) for _ in range(6)]
    try:
        assert len({d.number for d in devices}) == 6
        for d in devices:
            assert bound_backing(d.number).startswith(str(make_image(size=0, name="x").parent))
    finally:
        for d in devices:
            d.detach()


def test_device_node_is_block_device(image: Path):
    with loopcore.attach(image) as dev:
        assert stat.S_ISBLK(os.stat(dev.path).st_mode)
        assert os.major(dev.devnum) == 7


BLKROSET = 0x125D


def test_stale_setro_policy_is_cleared_on_read_write_attach(make_image):
    # blockdev --setro on a device survives its detach; the next read-write
    # attach of that number must not come out read-only.
    import fcntl
    import struct
    img = make_image(size=1 << 20)
    first = loopcore.attach(img)
    number = first.number
    fcntl.ioctl(first.fileno(), BLKROSET, struct.pack("i", 1))
    first.detach()
    held = []
    try:
        for _ in range(20):  # GET_FREE hands out the lowest free number
            dev = loopcore.attach(img)
            held.append(dev)
            if dev.number == number:
                break
        else:
            pytest.skip("could not get the same device number back")
        assert sysfs(number, "ro") == "0"
        with open(dev.path, "r+b", buffering=0) as disk:
            disk.write(b"w" * 512)
    finally:
        for dev in held:
            dev.detach()

"""Every failure a caller can cause: its exception type, errno and filename,
and that nothing is left behind (the no_leaks fixture checks fds and
devices after each test)."""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

import loopcore

from conftest import bound_under

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]

MiB = 1 << 20


@pytest.mark.parametrize("kwargs, match", [
    ({"offset": -1}, "offset"),
    ({"size_limit": -512}, "size_limit"),
    ({"offset": 1 << 63}, "offset"),
    ({"block_size": 1000}, "block_size"),
    ({"block_size": 256}, "block_size"),
    ({"block_size": 131072}, "block_size"),  # above any kernel's limit (64 KiB)
])
def test_invalid_arguments_raise_before_any_syscall(tmp_path: Path, kwargs, match):
    # The backing path does not exist: a ValueError (not FileNotFoundError)
    # proves validation came before the first syscall.
    with pytest.raises(ValueError, match=match):
        loopcore.attach(tmp_path / "does-not-exist.img", **kwargs)


@pytest.mark.parametrize("kwargs", [{"offset": "1"}, {"block_size": 512.0}, {"size_limit": None}])
def test_wrong_argument_types(tmp_path: Path, kwargs):
    with pytest.raises(TypeError):
        loopcore.attach(tmp_path / "does-not-exist.img", **kwargs)


@pytest.mark.parametrize("backing", [3.5, True, None, object()])
def test_wrong_backing_types(backing):
    with pytest.raises(TypeError):
        loopcore.attach(backing)


def test_offset_past_end(make_image):
    img = make_image(size=MiB)
    for offset in (MiB, MiB + 512):
        with pytest.raises(ValueError, match="past the end"):
            loopcore.attach(img, offset=offset)


def test_missing_backing_file(tmp_path: Path):
    missing = tmp_path / "missing.img"
    with pytest.raises(FileNotFoundError) as e:
        loopcore.attach(missing)
    assert e.value.errno == errno.ENOENT and e.value.filename == str(missing)


def test_directory_backing(tmp_path: Path):
    with pytest.raises(IsADirectoryError) as e:
        loopcore.attach(tmp_path)
    assert e.value.filename == str(tmp_path)
    with pytest.raises(loopcore.LoopError) as e:
        loopcore.attach(tmp_path, read_only=True)
    assert e.value.errno == errno.EINVAL and e.value.filename == str(tmp_path)


def test_character_device_backing():
    with pytest.raises(loopcore.LoopError) as e:
        loopcore.attach("/dev/zero")
    assert e.value.errno == errno.EINVAL and e.value.filename == "/dev/zero"


def test_read_only_fd_for_read_write_attach(image: Path):
    fd = os.open(image, os.O_RDONLY)
    try:
        with pytest.raises(PermissionError) as e:
            loopcore.attach(fd)
        assert e.value.filename == str(image)  # the real path, not /proc/self/fd/N
        with loopcore.attach(fd, read_only=True) as dev:  # fine when asked for
            assert dev.info().read_only
    finally:
        os.close(fd)


def test_read_only_file_object_for_read_write_attach(image: Path):
    with open(image, "rb") as f:
        with pytest.raises(PermissionError) as e:
            loopcore.attach(f)
        assert e.value.filename == str(image)


def test_immutable_file_read_write(image: Path):
    if subprocess.run(["chattr", "+i", str(image)], capture_output=True).returncode != 0:
        pytest.skip("file system without the immutable attribute")
    try:
        with pytest.raises(PermissionError) as e:
            loopcore.attach(image)
        assert e.value.errno == errno.EPERM and e.value.filename == str(image)
    finally:
        subprocess.run(["chattr", "-i", str(image)], check=True)


@pytest.fixture
def read_only_mount(tmp_path: Path):
    """A tmpfs holding one image, remounted read-only."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "disk.img").write_bytes(b"\0" * MiB)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield mnt / "disk.img"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_read_write_attach_on_read_only_file_system(read_only_mount: Path):
    with pytest.raises(OSError) as e:
        loopcore.attach(read_only_mount)
    assert e.value.errno == errno.EROFS and e.value.filename == str(read_only_mount)
    assert not bound_under(read_only_mount.parent)
    with loopcore.attach(read_only_mount, read_only=True) as dev:
        assert dev.info().read_only


def test_errors_are_oserrors_with_errno_and_filename():
    for cls in (loopcore.LoopError, loopcore.DeviceBusyError, loopcore.NoFreeDeviceError,
                loopcore.NotALoopDeviceError):
        assert issubclass(cls, OSError)
    e = loopcore.DeviceBusyError(errno.EBUSY, "busy", "/dev/loop0")
    assert (e.errno, e.filename) == (errno.EBUSY, "/dev/loop0")
    assert str(e) == "[Errno 16] busy: '/dev/loop0'"


def test_error_from_errno_prefers_builtin_subclasses():
    from loopcore.errors import error_from_errno
    # the builtin subclass, as loopcore's member of the family
    for err, builtin in ((errno.ENOENT, FileNotFoundError), (errno.EACCES, PermissionError)):
        e = error_from_errno(err, "x")
        assert isinstance(e, builtin) and isinstance(e, loopcore.Error)
        assert type(e).__name__ == builtin.__name__
    assert type(error_from_errno(errno.EBUSY, "x")) is loopcore.LoopBusyError
    assert isinstance(error_from_errno(errno.EBUSY, "x"), loopcore.DeviceBusyError)
    assert type(error_from_errno(errno.ENXIO, 3)) is loopcore.LoopError
    assert error_from_errno(errno.ENXIO, 3).filename == "/dev/loop3"


@pytest.mark.parametrize("ref", [-1, True, 2.0, None])
def test_bad_device_references(ref):
    with pytest.raises((ValueError, TypeError)):
        loopcore.detach(ref)

"""attach_many / detach_many: real devices, all or nothing, faults part-way."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable, List

import pytest

import loopcore
from loopcore.loop import _calls
from loopcore.loop.control import control

import faults
from conftest import bound_backing, bound_under, kernel_size, kernel_status, open_fds

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]


def _images(make_image: Callable[..., Path], count: int) -> List[Path]:
    return [make_image(size=1 << 20) for _ in range(count)]


def _setup(ctx: faults.Context) -> None:
    # probe LOOP_CONFIGURE and open the control fd before the faults
    loopcore.kernel_supports_configure()
    control.fd()


def test_attach_many_binds_each_file_in_order(make_image: Callable[..., Path]):
    images = _images(make_image, 6)
    devices = loopcore.attach_many([str(p) for p in images], direct_io=False)
    try:
        assert [bound_backing(d.number) for d in devices] == [str(p) for p in images]
        assert len({d.number for d in devices}) == len(images)
        for dev in devices:
            assert os.stat(dev.path).st_rdev == dev.devnum  # computed or read, the same
            assert dev.diskseq is None or dev.diskseq == dev.info().diskseq
            assert not dev.info().flags & loopcore.Flags.READ_ONLY
    finally:
        loopcore.detach_many(devices)
    assert all(d.closed for d in devices)
    assert not bound_under(images[0].parent)


def test_a_failure_in_a_later_chunk_undoes_the_earlier_ones(
        make_image: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from loopcore.loop import burst
    monkeypatch.setattr(burst, "CHUNK", 2)
    images = [str(p) for p in _images(make_image, 5)]
    devices = loopcore.attach_many(images)
    try:
        assert [bound_backing(d.number) for d in devices] == images
    finally:
        loopcore.detach_many(devices)
    with pytest.raises(FileNotFoundError):
        loopcore.attach_many(images[:4] + [str(tmp_path / "missing.img")])
    assert not bound_under(tmp_path)


def test_attach_many_takes_the_options_and_fds(make_image: Callable[..., Path]):
    images = _images(make_image, 3)
    with open(images[0], "rb") as f:
        devices = loopcore.attach_many([f, images[1], os.fsencode(images[2])], read_only=True,
                                       block_size=4096, partscan=True)
        try:
            for dev, image in zip(devices, images):
                info = dev.info()
                assert info.backing_file == str(image)
                assert info.block_size == 4096
                assert info.flags & loopcore.Flags.READ_ONLY
                assert info.flags & loopcore.Flags.PARTSCAN
        finally:
            loopcore.detach_many(devices)


@pytest.mark.parametrize("legacy", [False, True], ids=["configure", "one-by-one"])
def test_attach_many_applies_offset_and_size_limit_to_every_file(
        make_image: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, legacy: bool):
    images = _images(make_image, 3)  # 1 MiB each
    if legacy:
        monkeypatch.setattr(control, "_force_legacy", True)
    devices = loopcore.attach_many(images, offset=64 << 10, size_limit=256 << 10)
    try:
        for dev, image in zip(devices, images):
            assert bound_backing(dev.number) == str(image)
            status = kernel_status(dev.number)
            assert (status["offset"], status["sizelimit"]) == (64 << 10, 256 << 10)
            assert kernel_size(dev.number) == 256 << 10
    finally:
        loopcore.detach_many(devices)
    # an offset past the end of one file: nothing bound, before any bind
    small = make_image(size=32 << 10)
    with pytest.raises(loopcore.errors.ValueError, match="past the end"):
        loopcore.attach_many(images + [small], offset=64 << 10)
    assert not bound_under(images[0].parent)


def test_attach_many_of_nothing_and_bad_arguments(make_image: Callable[..., Path]):
    assert loopcore.attach_many([]) == []
    image = str(make_image())
    with pytest.raises(loopcore.errors.TypeError):
        loopcore.attach_many(image)  # one path, not a list of them
    with pytest.raises(loopcore.errors.ValueError):
        loopcore.attach_many([image], block_size=1000)
    with pytest.raises(loopcore.errors.TypeError):
        loopcore.attach_many([image], timeout="soon")  # type: ignore[arg-type]
    with pytest.raises(loopcore.errors.TypeError):
        loopcore.attach_many([image], offset=1.5)  # type: ignore[arg-type]
    with pytest.raises(loopcore.errors.ValueError):
        loopcore.attach_many([image], size_limit=-1)
    assert not bound_under(Path(image).parent)


def test_a_missing_file_binds_nothing(make_image: Callable[..., Path], tmp_path: Path):
    images = [str(p) for p in _images(make_image, 3)]
    with pytest.raises(FileNotFoundError) as e:
        loopcore.attach_many(images[:2] + [str(tmp_path / "missing.img")] + images[2:])
    assert isinstance(e.value, loopcore.Error) and e.value.filename.endswith("missing.img")
    assert not bound_under(tmp_path)


def test_a_directory_part_way_binds_nothing(make_image: Callable[..., Path], tmp_path: Path):
    images = [str(p) for p in _images(make_image, 2)]
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        loopcore.attach_many(images + [str(tmp_path / "dir")])
    assert not bound_under(tmp_path)


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOMEM, errno.EBUSY])
def test_a_bind_failing_part_way_undoes_the_burst(make_image: Callable[..., Path],
                                                  tmp_path: Path, err: int):
    """The 4th LOOP_CONFIGURE fails (EBUSY: always, so the retries run
    out): the three bound before it are detached again, no fd stays open."""
    images = [str(p) for p in _images(make_image, 6)]

    def code(ctx: faults.Context) -> None:
        faults.fast_retries()
        loopcore.attach_many(images)

    result = faults.run_with_faults(
        code, [faults.Fault("ioctl", request=faults.LOOP_CONFIGURE, errno=err, after=3,
                            times=faults.ALWAYS if err == errno.EBUSY else faults.ONCE)],
        setup=_setup, watch=tmp_path, timeout=30)
    assert result.finished, result
    assert result.injected >= 1
    assert result.error is not None and result.error.errno == err, result.error
    assert result.error.filename == images[3]
    assert not result.bound and not result.leaked_fds, result


def test_a_read_back_failing_part_way_undoes_the_burst(make_image: Callable[..., Path],
                                                       tmp_path: Path):
    images = [str(p) for p in _images(make_image, 5)]

    def code(ctx: faults.Context) -> None:
        loopcore.attach_many(images)

    result = faults.run_with_faults(
        code, [faults.Fault("ioctl", request=faults.BLKROGET, errno=errno.EIO, after=2)],
        setup=_setup, watch=tmp_path, timeout=30)
    assert result.finished and result.injected == 1, result
    assert result.error is not None and result.error.errno == errno.EIO
    assert not result.bound and not result.leaked_fds, result


def test_ctrl_c_part_way_leaves_nothing_bound(make_image: Callable[..., Path],
                                              tmp_path: Path):
    """After two binds every LOOP_CONFIGURE says EBUSY, so the C loop backs
    off; a signal handler that raises (Ctrl-C) ends the burst at once and
    the two bound devices are detached again."""
    images = [str(p) for p in _images(make_image, 5)]

    def code(ctx: faults.Context) -> None:
        loopcore.attach_many(images)

    result = faults.run_with_faults(
        code, [faults.Fault("ioctl", request=faults.LOOP_CONFIGURE, errno=errno.EBUSY,
                            after=2, times=faults.ALWAYS)],
        setup=_setup, watch=tmp_path, interrupt_after=0.5, timeout=30)
    assert result.error is not None and result.error.type == "Interrupted", result
    # ended part-way through the backoff, not after every attempt it allows
    assert 0 < result.injected < _calls.ATTACH_ATTEMPTS, result
    assert not result.bound and not result.leaked_fds, result


def test_eintr_from_the_lock_wait_is_retried(make_image: Callable[..., Path], tmp_path: Path):
    """A signal whose handler returns does not end the burst (PEP 475)."""
    images = [str(p) for p in _images(make_image, 3)]

    def code(ctx: faults.Context) -> None:
        devices = loopcore.attach_many(images)
        ctx.disarm()
        ctx.report["bound"] = [bound_backing(d.number) for d in devices]
        loopcore.detach_many(devices)

    result = faults.run_with_faults(
        code, [faults.Fault("flock", request=2, errno=errno.EINTR, times=3)],  # LOCK_EX
        setup=_setup, watch=tmp_path, timeout=30)
    assert result.error is None, result.error
    assert result.report["bound"] == images
    assert not result.bound and not result.leaked_fds, result


def test_the_legacy_path_binds_one_by_one(make_image: Callable[..., Path],
                                          monkeypatch: pytest.MonkeyPatch):
    images = [str(p) for p in _images(make_image, 3)]
    monkeypatch.setattr(control, "_force_legacy", True)
    devices = loopcore.attach_many(images)
    try:
        assert [bound_backing(d.number) for d in devices] == images
    finally:
        loopcore.detach_many(devices)


def test_the_legacy_path_undoes_a_failure(make_image: Callable[..., Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch):
    images = [str(p) for p in _images(make_image, 2)]
    monkeypatch.setattr(control, "_force_legacy", True)
    with pytest.raises(FileNotFoundError):
        loopcore.attach_many(images + [str(tmp_path / "missing.img")])
    assert not bound_under(tmp_path)


def test_detach_many_goes_on_past_a_failure(make_image: Callable[..., Path], tmp_path: Path):
    """The 2nd LOOP_CLR_FD fails: the others are detached, that one stays
    bound and open (as with detach()), and the error is raised."""
    images = [str(p) for p in _images(make_image, 4)]

    def setup(ctx: faults.Context) -> None:
        _setup(ctx)
        ctx.report["devices"] = loopcore.attach_many(images)

    def code(ctx: faults.Context) -> None:
        devices = ctx.report.pop("devices")
        try:
            loopcore.detach_many(devices)
        finally:
            ctx.disarm()
            ctx.report["closed"] = [d.closed for d in devices]
            ctx.report["still_bound"] = [bound_backing(d.number) for d in devices
                                         if not d.closed]
            for d in devices:
                if not d.closed:
                    d.detach()

    result = faults.run_with_faults(
        code, [faults.Fault("ioctl", request=faults.LOOP_CLR_FD, errno=errno.EIO, after=1)],
        setup=setup, watch=tmp_path, timeout=30)
    assert result.error is not None and result.error.errno == errno.EIO, result
    assert result.report["closed"] == [True, False, True, True]
    assert result.report["still_bound"] == [images[1]]
    assert not result.bound and not result.leaked_fds, result


def test_detach_many_takes_locked_devices_and_refuses_others(make_image: Callable[..., Path]):
    image = make_image()
    locked = loopcore.attach(image, lock=True)
    plain = loopcore.attach(make_image())
    with pytest.raises(loopcore.errors.TypeError):
        loopcore.detach_many([plain, "/dev/loop0"])  # type: ignore[list-item]
    loopcore.detach_many([locked, plain])
    assert locked.closed and plain.closed and locked.locked is None
    assert not bound_under(image.parent)


def test_attach_many_leaves_no_fd_when_the_check_fails(make_image: Callable[..., Path],
                                                       tmp_path: Path):
    """A caller's fd opened read-only for a read-write burst: refused
    before any bind, nothing left open."""
    images = _images(make_image, 2)
    before = open_fds()
    with open(images[1], "rb") as f:
        with pytest.raises(PermissionError):
            loopcore.attach_many([images[0], f])
    assert open_fds() == before
    assert not bound_under(tmp_path)

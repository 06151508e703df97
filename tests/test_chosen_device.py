"""A chosen device (``attach(number=...)``), against the real kernel."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

import loopcore

import faults
from conftest import (
    bound_backing,
    bound_under,
    kernel_status,
    sysfs,
)
from loop_helpers import MiB, leak_checked, root


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
            with pytest.raises(loopcore.LoopBusyError) as e:
                loopcore.attach(second, number=new_number)
            # one try: no retry loop for a device that is bound
            assert "the device is bound" in str(e.value), e.value
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

"""diskseq-safe reopening: ``open(..., diskseq=)``, ``detach(..., diskseq=)``
and the methods that open the node again."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

import loopcore

from conftest import (
    bound_backing,
)
from loop_helpers import MiB, leak_checked, root


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

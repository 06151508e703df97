"""Reuse without overlap (``attach(reuse=True)``), against the real kernel."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

import loopcore

from conftest import (
    bound_backing,
    bound_under,
    fresh_number,
)
from loop_helpers import MiB, leak_checked, root
from uevents import Uevents, wait_for_deferred_detaches


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
        # a detach another process's open deferred is still bound (and
        # reusable) until that close: wait for it
        wait_for_deferred_detaches(lambda: [f"loop{n}" for n in bound_under(tmp_path)])
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
        listener = Uevents()  # before the last close: its 'change' is queued
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
        with listener:  # autoclear: the last close detaches
            assert listener.wait_until(lambda: not bound_under(tmp_path)), "autoclear detached it"
